//! The control plane misbehaving behind a real Envoy: stalled (the filter's `timeout_ms` cuts
//! the wait), slow under concurrency (the worker's calls leave in batches, and every request
//! still gets exactly its own decision), and answering garbage, to single and batch calls.
//! Envoy keeps serving through all of it.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use rl_tests::fake_control_plane::{Answer, FAKE_TIER};
use rl_tests::fixtures;
use rl_tests::{
    Envoy, EnvoyBuilder, FakeControlPlane, Reply, StackBuilder, Upstream, client_from,
    control_plane_bin, get,
};
use serde_json::json;
use tokio::task::JoinSet;

/// A budget no test here exhausts unless it says so.
const LIMIT: u64 = 1000;

const ERRORS: &str = "wasmcustom.rate_limit_filter.control_plane_errors";
const BATCH_CALLS: &str = "wasmcustom.rate_limit_filter.batch_calls";
const PATH: &str = "/api/v1/request";

fn client() -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 71)))
}

/// What a request gets when the control plane could not answer: passed without
/// `X-RateLimit-*` (fail open) or the filter's own 503.
fn assert_failed_per_policy(reply: &Reply, fail_open: bool) {
    assert!(!reply.has_rate_limit_headers(), "{reply:#?}");
    if fail_open {
        assert_eq!(reply.status, 200, "{reply:#?}");
    } else {
        assert_eq!(reply.status, 503, "{reply:#?}");
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(reply.json()["error"]["code"], "rate_limit_unavailable");
    }
}

/// `n` requests at once; the replies with how long each took.
async fn burst(url: &str, n: usize) -> Vec<(Reply, Duration)> {
    let mut set = JoinSet::new();
    for _ in 0..n {
        let url = url.to_string();
        set.spawn(async move {
            let started = Instant::now();
            let reply = get(&client(), &url, &[]).await;
            (reply, started.elapsed())
        });
    }
    let mut replies = Vec::with_capacity(n);
    while let Some(result) = set.join_next().await {
        replies.push(result.expect("request task"));
    }
    replies
}

/// Waits until `stat` reaches `at_least` (the filter counts on Envoy's worker threads).
async fn wait_for_stat(envoy: &Envoy, stat: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = envoy.stat(stat).unwrap_or(0);
        if value >= at_least {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{stat} stayed at {value}, expected {at_least}:\n{}",
            envoy.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

// ---------------------------------------------------------------------------------------------
// A stalled control plane: alive, connected, silent

async fn stalled_control_plane(fail_open: bool) {
    const TIMEOUT: Duration = Duration::from_secs(2);
    // How late Envoy may be on a busy machine (a request's timeout restarting behind a batch
    // would add a whole TIMEOUT). The lower bound is exact: nothing can answer before the
    // timeout while the control plane is stopped.
    const SLACK: Duration = Duration::from_millis(1500);
    let mut stack = StackBuilder::new(control_plane_bin!(), &fixtures::one_tier(LIMIT, 60).yaml())
        .plugin("fail_open", json!(fail_open))
        .plugin("timeout_ms", json!(TIMEOUT.as_millis() as u64))
        // One worker: the later requests queue behind the batch of the earlier ones.
        .concurrency(1)
        .start();
    let url = stack.url(PATH);
    assert!(get(&client(), &url, &[]).await.has_rate_limit_headers());

    stack.control_plane.suspend();
    let mut alone = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let reply = get(&client(), &url, &[]).await;
        let waited = started.elapsed();
        assert_failed_per_policy(&reply, fail_open);
        assert!(
            waited >= TIMEOUT - Duration::from_millis(50) && waited < TIMEOUT + SLACK,
            "answered after {waited:?} with timeout_ms {TIMEOUT:?}"
        );
        alone.push(waited);
    }
    assert!(stack.envoy.stat(ERRORS).unwrap_or(0) >= 3);

    // Many at once: the singles and the batch they queue into are cut off alike. Then more
    // while that batch is in flight: they queue behind it, and still wait no longer than
    // their own timeout, not the batch's plus theirs.
    let url_for_burst = url.clone();
    let first = tokio::spawn(async move { burst(&url_for_burst, 8).await });
    wait_for_stat(&stack.envoy, BATCH_CALLS, 1).await;
    let behind = burst(&url, 4).await;
    let first = first.await.expect("burst");
    let mut worst = [Duration::ZERO; 2];
    for (i, replies) in [first, behind].iter().enumerate() {
        for (reply, waited) in replies {
            assert_failed_per_policy(reply, fail_open);
            assert!(waited < &(TIMEOUT + SLACK), "answered after {waited:?}");
            worst[i] = worst[i].max(*waited);
        }
    }
    assert!(stack.envoy.stat(ERRORS).unwrap_or(0) >= 15);
    println!(
        "stalled control plane, timeout_ms {}: alone answered after {alone:?}; 8 at once, \
         worst {:?}; 4 more behind their batch, worst {:?}",
        TIMEOUT.as_millis(),
        worst[0],
        worst[1]
    );

    stack.control_plane.resume();
    wait_until_limited(&url).await;
    assert!(stack.envoy.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_control_plane_is_cut_off_at_timeout_ms_fail_open() {
    stalled_control_plane(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_control_plane_is_cut_off_at_timeout_ms_fail_closed() {
    stalled_control_plane(false).await;
}

// ---------------------------------------------------------------------------------------------
// Batching under concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_control_plane_gets_batches_and_every_request_its_own_decision() {
    const LIMIT: u64 = 20;
    const REQUESTS: usize = 30;
    let stack = StackBuilder::new(control_plane_bin!(), &fixtures::one_tier(LIMIT, 60).yaml())
        // One worker: every request goes through the same filter VM.
        .concurrency(1)
        // Long enough that no call times out while the control plane is held.
        .plugin("timeout_ms", json!(30_000))
        .start();
    let url = stack.url(PATH);
    let first = get(&client(), &url, &[]).await;
    assert_eq!(first.num("x-ratelimit-remaining"), LIMIT - 1, "{first:#?}");
    let calls_before = stack
        .envoy
        .stat("cluster.rate_limit_control_plane.upstream_rq_total")
        .expect("control-plane cluster stats");
    assert_eq!(stack.envoy.stat(BATCH_CALLS), Some(0));

    // The control plane answers nothing until the worker has queued requests behind its
    // single calls and sent them as a batch.
    stack.control_plane.suspend();
    let url_for_burst = url.clone();
    let replies = tokio::spawn(async move { burst(&url_for_burst, REQUESTS).await });
    wait_for_stat(&stack.envoy, BATCH_CALLS, 1).await;
    stack.control_plane.resume();
    let replies = replies.await.expect("burst");

    // Exactly the budget passed, each request with its own count: batching changed nothing
    // a client sees.
    let mut remaining: Vec<u64> = replies
        .iter()
        .filter(|(reply, _)| reply.status == 200)
        .map(|(reply, _)| reply.num("x-ratelimit-remaining"))
        .collect();
    remaining.sort_unstable();
    assert_eq!(
        remaining,
        (0..LIMIT - 1).collect::<Vec<_>>(),
        "{replies:#?}"
    );
    let denied = replies.iter().filter(|(r, _)| r.status == 429).count();
    assert_eq!(denied, REQUESTS + 1 - LIMIT as usize, "{replies:#?}");

    let batches = stack.envoy.stat(BATCH_CALLS).unwrap_or(0);
    assert!(batches >= 1);
    let calls = stack
        .envoy
        .stat("cluster.rate_limit_control_plane.upstream_rq_total")
        .unwrap_or(0)
        - calls_before;
    assert!(
        calls < REQUESTS as u64,
        "{REQUESTS} requests made {calls} control-plane calls ({batches} batches)"
    );
    println!(
        "{REQUESTS} concurrent requests: {calls} control-plane calls, {batches} of them batches"
    );
    assert_eq!(stack.envoy.stat(ERRORS), Some(0));
}

// ---------------------------------------------------------------------------------------------
// Garbage answers

fn envoy_for(fake: &FakeControlPlane, upstream: &Upstream, fail_open: bool) -> Envoy {
    EnvoyBuilder::new(fake.addr(), upstream.addr())
        .plugin("fail_open", json!(fail_open))
        .concurrency(1)
        .start()
}

/// After the garbage, a control plane that answers properly is heard again: the VM is alive.
async fn still_serving(envoy: &mut Envoy, fake: &FakeControlPlane) {
    fake.set_answer(Answer::Allow);
    let reply = get(&client(), &envoy.url(PATH), &[]).await;
    assert_eq!(reply.status, 200, "{reply:#?}");
    assert_eq!(
        reply.header("x-ratelimit-tier"),
        Some(FAKE_TIER),
        "{reply:#?}"
    );
    assert!(envoy.is_running());
    assert!(!envoy.log().contains("panicked"), "{}", envoy.log());
}

async fn garbage_answer(fail_open: bool) {
    let fake = FakeControlPlane::start(Answer::Garbage);
    let upstream = Upstream::start();
    let mut envoy = envoy_for(&fake, &upstream, fail_open);
    for _ in 0..3 {
        let reply = get(&client(), &envoy.url(PATH), &[]).await;
        assert_failed_per_policy(&reply, fail_open);
    }
    assert_eq!(fake.singles(), 3, "each request asked the control plane");
    assert_eq!(envoy.stat(ERRORS), Some(3));
    let policy = if fail_open {
        "failed_open"
    } else {
        "failed_closed"
    };
    assert_eq!(
        envoy.stat(&format!("wasmcustom.rate_limit_filter.{policy}")),
        Some(3)
    );
    still_serving(&mut envoy, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_answer_passes_the_request_when_fail_open() {
    garbage_answer(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_answer_is_a_503_when_fail_closed() {
    garbage_answer(false).await;
}

async fn garbage_batch_answer(fail_open: bool) {
    const REQUESTS: usize = 10;
    let fake = FakeControlPlane::start(Answer::Garbage);
    let upstream = Upstream::start();
    let mut envoy = envoy_for(&fake, &upstream, fail_open);
    fake.hold();
    let url = envoy.url(PATH);
    let replies = tokio::spawn(async move { burst(&url, REQUESTS).await });
    wait_for_stat(&envoy, BATCH_CALLS, 1).await;
    fake.release();
    for (reply, _) in replies.await.expect("burst") {
        assert_failed_per_policy(&reply, fail_open);
    }
    assert!(fake.batches() >= 1 && fake.batched_requests() >= 1);
    assert_eq!(
        fake.singles() + fake.batched_requests(),
        REQUESTS as u64,
        "each request asked once"
    );
    assert_eq!(envoy.stat(ERRORS), Some(REQUESTS as u64));
    still_serving(&mut envoy, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_batch_answer_passes_its_members_when_fail_open() {
    garbage_batch_answer(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_batch_answer_is_a_503_for_its_members_when_fail_closed() {
    garbage_batch_answer(false).await;
}

// ---------------------------------------------------------------------------------------------
// The Envoy these tests run

#[test]
fn the_test_envoy_is_the_shipped_configuration_with_test_addresses() {
    let upstream: std::net::SocketAddr = "127.0.0.1:4001".parse().unwrap();
    let control_planes: [std::net::SocketAddr; 2] = [
        "127.0.0.1:4002".parse().unwrap(),
        "127.0.0.1:4003".parse().unwrap(),
    ];
    let wasm = std::path::Path::new("/tmp/under-test.wasm");
    let builder = EnvoyBuilder::new(control_planes[0], upstream)
        .add_control_plane(control_planes[1])
        .plugin("fail_open", json!(false));
    let test: serde_json::Value =
        serde_json::from_str(&builder.bootstrap(wasm)).expect("bootstrap is JSON");
    let mut shipped = rl_tests::envoy::shipped_config();

    // Only the parts a test owns differ.
    let socket = |v: &serde_json::Value, p: &str| v.pointer(p).cloned().unwrap_or_default();
    let loopback = json!({"address": "127.0.0.1", "port_value": 0});
    assert_eq!(socket(&test, "/admin/address/socket_address"), loopback);
    let listener = "/static_resources/listeners/0";
    assert_eq!(
        socket(&test, &format!("{listener}/address/socket_address")),
        loopback
    );
    let wasm_filter = format!("{listener}/filter_chains/0/filters/0/typed_config/http_filters/0");
    let config = format!("{wasm_filter}/typed_config/config");
    assert_eq!(
        test.pointer(&format!("{config}/vm_config/code/local/filename")),
        Some(&json!("/tmp/under-test.wasm"))
    );
    let plugin: serde_json::Value = serde_json::from_str(
        test.pointer(&format!("{config}/configuration/value"))
            .and_then(serde_json::Value::as_str)
            .expect("plugin configuration"),
    )
    .expect("plugin configuration is JSON");
    let mut expected_plugin = rl_tests::envoy::shipped_plugin_config();
    expected_plugin["timeout_ms"] = json!(3000);
    expected_plugin["fail_open"] = json!(false);
    assert_eq!(plugin, expected_plugin);
    let endpoints = |cluster: usize| {
        test.pointer(&format!(
            "/static_resources/clusters/{cluster}/load_assignment/endpoints/0/lb_endpoints"
        ))
        .and_then(serde_json::Value::as_array)
        .expect("endpoints")
        .iter()
        .map(|e| {
            let s = &e["endpoint"]["address"]["socket_address"];
            format!("{}:{}", s["address"].as_str().unwrap(), s["port_value"])
        })
        .collect::<Vec<_>>()
    };
    assert_eq!(endpoints(0), ["127.0.0.1:4001"]);
    assert_eq!(endpoints(1), ["127.0.0.1:4002", "127.0.0.1:4003"]);

    // Everything else is the shipped file, value for value.
    let mut localized = test.clone();
    for pointer in [
        "/admin/address/socket_address".to_string(),
        format!("{listener}/address/socket_address"),
        format!("{config}/vm_config/code/local/filename"),
        format!("{config}/configuration/value"),
        "/static_resources/clusters/0/load_assignment/endpoints/0/lb_endpoints".to_string(),
        "/static_resources/clusters/1/load_assignment/endpoints/0/lb_endpoints".to_string(),
    ] {
        *localized.pointer_mut(&pointer).expect("present") = json!(null);
        *shipped
            .pointer_mut(&pointer)
            .expect("present in envoy/envoy.yaml") = json!(null);
    }
    assert_eq!(localized, shipped);
    assert_eq!(
        test.pointer(&format!(
            "{listener}/filter_chains/0/filters/0/typed_config/use_remote_address"
        )),
        Some(&json!(true))
    );
}
