//! Rotating the decision secret: the control plane accepts `RATE_LIMIT_DECISION_SECRET_PREVIOUS`
//! next to the current secret, so filters still sending the old one keep being answered while
//! their configurations roll out. Each stage of the rotation is run through real Envoys with
//! the release `.wasm`; a filter left behind gets 401, which it counts in its own stat
//! (`unauthorized`: a misconfiguration, not an outage) and then follows its `fail_open`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rl_tests::fixtures;
use rl_tests::{
    ControlPlane, ControlPlaneBuilder, Envoy, EnvoyBuilder, Upstream, client_from,
    control_plane_bin, get,
};
use serde_json::json;

const OLD: &str = "old-decision-secret-0123456789";
const NEW: &str = "new-decision-secret-9876543210-longer";
const CURRENT_VAR: &str = "RATE_LIMIT_DECISION_SECRET";
const PREVIOUS_VAR: &str = "RATE_LIMIT_DECISION_SECRET_PREVIOUS";

const UNAUTHORIZED: &str = "wasmcustom.rate_limit_filter.unauthorized";
const ERRORS: &str = "wasmcustom.rate_limit_filter.control_plane_errors";
const PATH: &str = "/api/v1/request";

fn client() -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 81)))
}

/// A control plane requiring `current`, and accepting `previous` too when given.
fn control_plane(current: &str, previous: Option<&str>) -> ControlPlane {
    let mut cp =
        ControlPlaneBuilder::new(control_plane_bin!(), &fixtures::one_tier(1000, 60).yaml())
            .env(CURRENT_VAR, current);
    if let Some(previous) = previous {
        cp = cp.env(PREVIOUS_VAR, previous);
    }
    cp.start()
}

/// An Envoy whose filter sends `secret`.
fn envoy(cp: &ControlPlane, upstream: &Upstream, secret: &str, fail_open: bool) -> Envoy {
    EnvoyBuilder::new(cp.addr(), upstream.addr())
        .plugin("decision_secret", json!(secret))
        .plugin("fail_open", json!(fail_open))
        .concurrency(1)
        .start()
}

/// `rate_limit_decision_secret_previous_total` of `cp`: calls let in by the previous secret.
async fn previous_secret_calls(cp: &ControlPlane) -> u64 {
    let text = client()
        .get(cp.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("rate_limit_decision_secret_previous_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate_limit_decision_secret_previous_total in\n{text}"))
}

/// Every one of `n` requests through `envoy` was decided by the control plane.
async fn assert_rate_limited(envoy: &Envoy, n: usize, stage: &str) {
    for _ in 0..n {
        let reply = get(&client(), &envoy.url(PATH), &[]).await;
        assert_eq!(reply.status, 200, "{stage}: {reply:#?}\n{}", envoy.log());
        assert!(reply.has_rate_limit_headers(), "{stage}: {reply:#?}");
    }
    assert_eq!(envoy.stat(UNAUTHORIZED), Some(0), "{stage}");
    assert_eq!(envoy.stat(ERRORS), Some(0), "{stage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_of_a_rotation_answers_every_filter_in_service() {
    let upstream = Upstream::start();
    // (control plane's current, previous; the filters' secrets in service at that stage)
    let stages: [(&str, Option<&str>, &[&str]); 3] = [
        ("before: every filter sends the old secret", None, &[OLD]),
        // The control plane learns the new secret first, keeping the old one...
        (
            "during: filter configurations roll out one by one",
            Some(OLD),
            &[OLD, NEW],
        ),
        // ...and forgets the old one once no filter sends it.
        ("after: every filter sends the new secret", None, &[NEW]),
    ];
    const REQUESTS: usize = 3;
    for (i, (stage, previous, secrets)) in stages.iter().enumerate() {
        let current = if i == 0 { OLD } else { NEW };
        let cp = control_plane(current, *previous);
        let mut by_previous = 0;
        for secret in *secrets {
            for fail_open in [true, false] {
                let envoy = envoy(&cp, &upstream, secret, fail_open);
                assert_rate_limited(&envoy, REQUESTS, stage).await;
                if Some(*secret) == *previous {
                    by_previous += REQUESTS as u64;
                }
                // What tells the operator when the old secret can go.
                assert_eq!(previous_secret_calls(&cp).await, by_previous, "{stage}");
            }
        }
        assert!(
            !cp.output.text().contains(OLD) && !cp.output.text().contains(NEW),
            "a secret was logged:\n{}",
            cp.output.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_left_behind_is_refused_and_counts_it_as_unauthorized() {
    const REQUESTS: u64 = 3;
    let upstream = Upstream::start();
    let cp = control_plane(NEW, None);
    for (fail_open, status, policy) in [(true, 200, "failed_open"), (false, 503, "failed_closed")] {
        let envoy = envoy(&cp, &upstream, OLD, fail_open);
        for _ in 0..REQUESTS {
            let reply = get(&client(), &envoy.url(PATH), &[]).await;
            assert_eq!(reply.status, status, "{reply:#?}");
            assert!(!reply.has_rate_limit_headers(), "{reply:#?}");
            if !fail_open {
                assert_eq!(reply.json()["error"]["code"], "rate_limit_unavailable");
            }
        }
        assert_eq!(envoy.stat(UNAUTHORIZED), Some(REQUESTS));
        assert_eq!(
            envoy.stat(ERRORS),
            Some(0),
            "a misconfiguration, not an outage"
        );
        assert_eq!(
            envoy.stat(&format!("wasmcustom.rate_limit_filter.{policy}")),
            Some(REQUESTS)
        );
        let log = envoy.log();
        assert!(
            log.contains("decision call answered HTTP 401") && !log.contains(OLD),
            "{log}"
        );
    }
}

#[tokio::test]
async fn the_control_plane_accepts_the_previous_secret_and_nothing_else() {
    let cp = control_plane(NEW, Some(OLD));
    let body = json!({"ip": "10.9.9.9", "method": "GET", "path": "/"});
    let url = cp.url(rl_wire::DECISION_PATH);
    let batch_url = cp.url(rl_wire::BATCH_DECISION_PATH);
    let batch = json!({"requests": [body.clone()]});
    let cases: [(Option<String>, u16); 8] = [
        (Some(NEW.into()), 200),
        (Some(OLD.into()), 200),
        (None, 401),
        (Some(String::new()), 401),
        (Some("nope".into()), 401),
        // A prefix or an extension of either secret is a different secret.
        (Some(NEW[..NEW.len() - 1].into()), 401),
        (Some(format!("{OLD}x")), 401),
        (Some(format!("x{NEW}")), 401),
    ];
    for (presented, want) in cases {
        for (url, body) in [(&url, &body), (&batch_url, &batch)] {
            let mut request = client().post(url).json(body);
            if let Some(secret) = &presented {
                request = request.header(rl_wire::DECISION_SECRET_HEADER, secret.as_str());
            }
            let response = request.send().await.expect("decision call");
            assert_eq!(response.status(), want, "{url} with {presented:?}");
        }
    }
    // One single and one batch call carried the previous secret.
    assert_eq!(previous_secret_calls(&cp).await, 2);
}

#[test]
fn a_previous_secret_without_a_current_one_refuses_to_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("rate_limit_config.yaml");
    std::fs::write(&config, fixtures::one_tier(10, 60).yaml()).expect("write config");
    let config = config.to_string_lossy().to_string();
    let mut proc = ControlPlane::spawn_raw(
        control_plane_bin!(),
        &["--config", &config, "--listen", "127.0.0.1:0"],
        &[(PREVIOUS_VAR, OLD)],
    );
    assert_eq!(
        proc.wait_exit(Duration::from_secs(20)),
        Some(1),
        "{}",
        proc.output.text()
    );
    let text = proc.output.text();
    assert!(
        text.contains(PREVIOUS_VAR) && text.contains(CURRENT_VAR),
        "the error names both variables:\n{text}"
    );
    assert!(!text.contains(OLD), "the secret is never printed:\n{text}");
}
