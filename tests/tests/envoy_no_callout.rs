//! The plugin's `benchmark_no_callout` (a benchmarking aid: the load benchmark's floor of what
//! the Wasm runtime costs) in a real Envoy with the release `.wasm`: every request is forwarded
//! with the fixed `X-RateLimit-*` headers, also many at once, and not one call reaches the
//! control plane. The same stand-in control plane, behind an Envoy with the plugin's defaults,
//! is asked for every request, so its counts are seen to move.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rate_limit_filter::engine::NO_CALLOUT_HEADERS;
use rl_tests::fake_control_plane::{Answer, FAKE_TIER};
use rl_tests::{Envoy, EnvoyBuilder, FakeControlPlane, Reply, Upstream, client_from, get};
use serde_json::json;
use tokio::task::JoinSet;

const PATH: &str = "/api/v1/request";
const KEY: (&str, &str) = ("x-api-key", "0123456789abcdef");
/// Envoy's count of requests it sent to the control-plane cluster.
const CALLS_SENT: &str = "cluster.rate_limit_control_plane.upstream_rq_total";

fn client() -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 81)))
}

/// `n` requests at once.
async fn burst(url: &str, n: usize) -> Vec<Reply> {
    let mut set = JoinSet::new();
    for _ in 0..n {
        let url = url.to_string();
        set.spawn(async move { get(&client(), &url, &[KEY]).await });
    }
    let mut replies = Vec::with_capacity(n);
    while let Some(result) = set.join_next().await {
        replies.push(result.expect("request task"));
    }
    replies
}

fn assert_fixed_headers(reply: &Reply) {
    assert_eq!(reply.status, 200, "{reply:#?}");
    for (name, value) in NO_CALLOUT_HEADERS {
        assert_eq!(reply.header(name), Some(value), "{name}: {reply:#?}");
    }
}

fn assert_no_call_left_envoy(envoy: &Envoy, fake: &FakeControlPlane) {
    assert_eq!(fake.singles(), 0, "single decision calls received");
    assert_eq!(fake.batches(), 0, "batch decision calls received");
    assert_eq!(envoy.stat(CALLS_SENT), Some(0), "{}", envoy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_callout_every_request_passes_with_fixed_headers_and_none_is_asked() {
    let fake = FakeControlPlane::start(Answer::Allow);
    let upstream = Upstream::start();
    let mut envoy = EnvoyBuilder::new(fake.addr(), upstream.addr())
        .plugin("benchmark_no_callout", json!(true))
        .start();
    envoy.expect_log_line(
        Duration::from_secs(10),
        "warning that nothing is checked",
        |line| line.contains("benchmark_no_callout is on"),
    );

    for _ in 0..5 {
        assert_fixed_headers(&get(&client(), &envoy.url(PATH), &[KEY]).await);
    }
    // Many at once: under load the filter would coalesce calls into batches; here none leaves.
    let replies = burst(&envoy.url(PATH), 200).await;
    assert_eq!(replies.len(), 200);
    replies.iter().for_each(assert_fixed_headers);
    assert_no_call_left_envoy(&envoy, &fake);
    for stat in [
        "allowed",
        "failed_open",
        "control_plane_errors",
        "batch_calls",
    ] {
        assert_eq!(
            envoy.stat(&format!("wasmcustom.rate_limit_filter.{stat}")),
            Some(0),
            "{stat}"
        );
    }
    assert!(envoy.is_running());
    assert!(!envoy.log().contains("panicked"), "{}", envoy.log());

    // The same control plane behind an Envoy with the plugin's defaults hears every request.
    let asking = EnvoyBuilder::new(fake.addr(), upstream.addr()).start();
    let replies = burst(&asking.url(PATH), 20).await;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{reply:#?}");
        assert_eq!(
            reply.header("x-ratelimit-tier"),
            Some(FAKE_TIER),
            "{reply:#?}"
        );
    }
    assert_eq!(fake.singles() + fake.batched_requests(), 20);
    assert!(asking.stat(CALLS_SENT).is_some_and(|n| n >= 1));
    // ...while the first Envoy still has sent nothing.
    assert_eq!(envoy.stat(CALLS_SENT), Some(0));
}
