//! The control-plane binary's concurrency leases over HTTP, in memory and on a real
//! redis-server: a decision takes a lease, the excess is refused (window 0, `Retry-After` 1,
//! no `deny_for_ms`), `POST /internal/v1/leases` renews and releases with the decision secret,
//! and bad lease calls get 400 / 401.

use rl_tests::fixtures::{Config, Tier};
use rl_tests::{ControlPlane, ControlPlaneBuilder, RedisServer, control_plane_bin};
use serde_json::{Value, json};

const SECRET: &str = "lease-test-decision-secret-0123";

fn config() -> String {
    Config::new()
        .tier(Tier::new("free", 100).max_concurrent(2))
        .yaml()
}

async fn post(cp: &ControlPlane, path: &str, body: &Value, secret: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(cp.url(path)).json(body);
    if let Some(secret) = secret {
        request = request.header(rl_wire::DECISION_SECRET_HEADER, secret);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn decide(cp: &ControlPlane) -> Value {
    let (status, body) = post(
        cp,
        rl_wire::DECISION_PATH,
        &json!({"ip": "10.1.2.3", "method": "GET", "path": "/api/v1/request"}),
        Some(SECRET),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn leases_over_http(cp: &ControlPlane) {
    let first = decide(cp).await;
    let second = decide(cp).await;
    for answer in [&first, &second] {
        assert_eq!(answer["verdict"], "allow", "{answer}");
        assert_eq!(answer["lease"]["ttl_ms"], 30_000, "the default lease");
    }
    let refused = decide(cp).await;
    assert_eq!(refused["verdict"], "deny", "{refused}");
    assert_eq!(refused["counter"]["window"], 0);
    assert_eq!(refused["counter"]["limit"], 2);
    assert_eq!(refused["counter"]["retry_after"], 1);
    assert!(refused.get("deny_for_ms").is_none(), "{refused}");
    assert!(refused.get("lease").is_none(), "{refused}");

    let id = |answer: &Value| {
        answer["lease"]["id"]
            .as_str()
            .expect("lease id")
            .to_string()
    };
    let call = json!({"renew": [id(&second)], "release": [id(&first), "forged|rl:{x}:c"]});
    // The lease endpoint wants the decision secret too.
    let (status, body) = post(cp, rl_wire::LEASES_PATH, &call, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = post(cp, rl_wire::LEASES_PATH, &call, Some(SECRET)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"renewed": 1, "released": 1}));
    // The freed slot is taken again; then the tier is full again.
    assert_eq!(decide(cp).await["verdict"], "allow");
    assert_eq!(decide(cp).await["verdict"], "deny");

    // Bad calls: not an object, too many ids.
    let (status, body) = post(cp, rl_wire::LEASES_PATH, &json!([1]), Some(SECRET)).await;
    assert_eq!(status, 400, "{body}");
    let many: Vec<String> = (0..=rl_wire::MAX_LEASES_PER_CALL)
        .map(|i| format!("id-{i}"))
        .collect();
    let (status, body) = post(
        cp,
        rl_wire::LEASES_PATH,
        &json!({"release": many}),
        Some(SECRET),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");
}

#[tokio::test]
async fn leases_in_memory() {
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), &config())
        .env("RATE_LIMIT_DECISION_SECRET", SECRET)
        .start();
    leases_over_http(&cp).await;
}

#[tokio::test]
async fn leases_on_redis() {
    let redis = RedisServer::start();
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), &config())
        .env("RATE_LIMIT_DECISION_SECRET", SECRET)
        .redis(redis.url())
        .start();
    leases_over_http(&cp).await;
}

#[test]
fn a_lease_seconds_setting_out_of_bounds_is_refused_at_start() {
    let sample = rl_tests::fixtures::sample_config_path()
        .to_string_lossy()
        .to_string();
    for (value, accepted) in [("2", false), ("3601", false), ("3", true)] {
        let mut proc = ControlPlane::spawn_raw(
            control_plane_bin!(),
            &[
                "--lease-seconds",
                value,
                "--config",
                &sample,
                "--listen",
                "127.0.0.1:0",
            ],
            &[],
        );
        if accepted {
            let listening = proc.output.wait_for(
                std::time::Duration::from_secs(20),
                || true,
                |line| line.contains("\"listening\"").then_some(()),
            );
            assert!(listening.is_some(), "{}", proc.output.text());
        } else {
            assert_eq!(
                proc.wait_exit(std::time::Duration::from_secs(20)),
                Some(2),
                "--lease-seconds {value} is a usage error"
            );
            assert!(
                proc.output.text().contains("lease-seconds"),
                "{}",
                proc.output.text()
            );
        }
    }
}
