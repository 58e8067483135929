//! Failure modes and hostile input through a real Envoy: the control plane or Redis down,
//! bad plugin configuration, malformed headers. Envoy keeps serving in every case.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use rl_tests::envoy::{self, EnvoyBuilder};
use rl_tests::fixtures::one_tier;
use rl_tests::{Reply, StackBuilder, Upstream, client_from, control_plane_bin, get, send};
use serde_json::json;

/// 1000 per minute; `fail_open` is the control plane's choice while Redis is down.
fn config(fail_open: bool) -> String {
    one_tier(1000, 60).fail_open(fail_open).yaml()
}

fn client() -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 61)))
}

fn assert_unavailable(reply: &Reply) {
    assert_eq!(reply.status, 503, "{reply:#?}");
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(!reply.has_rate_limit_headers(), "{reply:#?}");
    assert_eq!(reply.json()["error"]["code"], "rate_limit_unavailable");
}

fn assert_passed_unchecked(reply: &Reply) {
    assert_eq!(reply.status, 200, "{reply:#?}");
    assert!(!reply.has_rate_limit_headers(), "{reply:#?}");
}

async fn wait_until_limited(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let reply = get(&client(), url, &[]).await;
        if reply.status == 200 && reply.has_rate_limit_headers() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("rate limiting did not resume at {url}");
}

async fn control_plane_outage(fail_open: bool) {
    let mut stack = StackBuilder::new(control_plane_bin!(), &config(true))
        .plugin("fail_open", json!(fail_open))
        .plugin("timeout_ms", json!(300))
        .start();
    let url = stack.url("/api/v1/request");
    assert!(get(&client(), &url, &[]).await.has_rate_limit_headers());

    stack.control_plane.kill9();
    for _ in 0..5 {
        let reply = get(&client(), &url, &[]).await;
        if fail_open {
            assert_passed_unchecked(&reply);
        } else {
            assert_unavailable(&reply);
        }
    }
    let errors = stack
        .envoy
        .stat("wasmcustom.rate_limit_filter.control_plane_errors");
    assert!(errors.unwrap_or(0) >= 5, "filter stats: {errors:?}");

    stack.control_plane.restart();
    wait_until_limited(&url).await;
    assert!(stack.envoy.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_down_with_fail_open_passes_without_headers() {
    control_plane_outage(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_down_with_fail_closed_answers_503() {
    control_plane_outage(false).await;
}

async fn redis_outage(control_plane_fail_open: bool) {
    let mut stack = StackBuilder::new(control_plane_bin!(), &config(control_plane_fail_open))
        .with_redis()
        // The filter fails closed: what clients see below is the control plane's choice.
        .plugin("fail_open", json!(false))
        .start();
    let url = stack.url("/api/v1/request");
    assert!(get(&client(), &url, &[]).await.has_rate_limit_headers());

    stack.redis().stop();
    for _ in 0..5 {
        let reply = get(&client(), &url, &[]).await;
        if control_plane_fail_open {
            assert_passed_unchecked(&reply);
        } else {
            assert_unavailable(&reply);
        }
    }
    stack.redis().restart();
    wait_until_limited(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_control_plane_fail_open_admits() {
    redis_outage(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_control_plane_fail_closed_answers_503() {
    redis_outage(false).await;
}

#[test]
fn malformed_plugin_configs_stop_envoy_with_a_clear_line() {
    let upstream = Upstream::start();
    let cp = upstream.addr(); // never called: Envoy must refuse to start first
    let cases = [
        (json!({"timeout_ms": 100}), "cluster"),
        (
            json!({"cluster": "rate_limit_control_plane", "timeout_ms": 0}),
            "timeout_ms",
        ),
        (
            json!({"cluster": "rate_limit_control_plane", "trusted_proxies": ["10.0.0.300/8"]}),
            "trusted_proxies",
        ),
        (
            json!({"cluster": "rate_limit_control_plane", "fail_opne": true}),
            "fail_opne",
        ),
        (json!("not an object"), "object"),
    ];
    for (config, field) in cases {
        let result = EnvoyBuilder::new(cp, upstream.addr())
            .plugin_raw(config.clone())
            .try_start();
        let Err(log) = result else {
            panic!("Envoy accepted {config}");
        };
        assert!(
            log.contains("invalid plugin configuration") && log.contains(field),
            "{config}: {log}"
        );
    }
}

#[test]
fn every_shipped_envoy_config_validates_with_the_real_filter() {
    let wasm = rl_tests::prereq::filter_wasm();
    let root = rl_tests::repo_root();
    let shipped = std::fs::read_dir(root.join("envoy"))
        .expect("envoy/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect::<Vec<_>>();
    assert!(!shipped.is_empty());
    for path in shipped {
        // Shipped configs name the .wasm relative to the repository root (the compose file
        // mounts it elsewhere); point them at the artifact under test.
        let text = std::fs::read_to_string(&path).expect("read config");
        let text = text
            .replace(
                "target/wasm32-wasip1/release/rate_limit_filter.wasm",
                &wasm.display().to_string(),
            )
            .replace(
                "/etc/envoy/rate_limit_filter.wasm",
                &wasm.display().to_string(),
            );
        if text.contains("envoy.filters.http.ratelimit") {
            // The native way in (envoy.native-ratelimit.yaml): Envoy's own filter, no wasm.
            assert!(
                !text.contains("envoy.filters.http.wasm"),
                "{}: one rate limiter per config",
                path.display()
            );
        } else {
            assert!(
                text.contains(&wasm.display().to_string()),
                "{} loads no filter",
                path.display()
            );
            assert!(
                text.contains("failure_policy: FAIL_RELOAD"),
                "{}",
                path.display()
            );
        }
        assert!(
            text.contains("use_remote_address: true"),
            "{}",
            path.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("envoy.yaml");
        std::fs::write(&copy, text).unwrap();
        let (ok, output) = envoy::validate(&copy);
        assert!(ok, "{} does not validate:\n{output}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_headers_crash_nothing() {
    let stack = StackBuilder::new(control_plane_bin!(), &config(true))
        .plugin("trusted_proxies", json!(["127.0.0.0/8"]))
        .start();
    let url = stack.url("/api/v1/request");
    let c = client();
    let big = "k".repeat(60 * 1024);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "x-forwarded-for",
            b"garbage, , ,,, not-an-ip, 999.1.1.1".to_vec(),
        ),
        ("x-forwarded-for", b"[::1]:80, 1.2.3.4:5".to_vec()),
        ("x-forwarded-for", vec![b'1'; 8000]),
        ("x-real-ip", b"\xff\xfe".to_vec()),
        ("x-api-key", b"\xff\xfe\xfd invalid utf-8".to_vec()),
        ("x-api-key", big.as_bytes().to_vec()),
        ("authorization", b"Bearer \xc3\x28".to_vec()),
        ("authorization", vec![b'"'; 8000]),
    ];
    for (name, value) in &cases {
        let reply = send(&c, "GET", &url, &[(name, value.as_slice())]).await;
        // Envoy may refuse oversized headers itself (431); anything else is judged normally.
        assert!(
            [200, 431].contains(&reply.status),
            "{name}: {} {:?}",
            reply.status,
            reply.body
        );
        // The next ordinary request is still rate limited: no VM died.
        let next = get(&c, &url, &[]).await;
        assert_eq!(next.status, 200, "after {name}");
        assert!(next.has_rate_limit_headers(), "after {name}: {next:#?}");
    }
    let paths = [
        "/api/v1/../../etc/passwd",
        "/%ff%fe",
        "/a?b=%00",
        "//////",
        "/\u{00e9}",
    ];
    for path in paths {
        let reply = get(&c, &stack.url(path), &[]).await;
        assert!(reply.status < 500, "{path}: {reply:#?}");
    }
    assert!(
        !stack.envoy.log().contains("panicked"),
        "{}",
        stack.envoy.log()
    );
}
