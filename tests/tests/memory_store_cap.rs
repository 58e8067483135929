//! The in-memory store's cap on identities, through a real Envoy: at the cap a new identity is
//! refused (503, whatever `fail_open` says), live identities keep their counts, the refusal is
//! counted, and identities whose entries have all expired make room again.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use rl_tests::fixtures::one_tier;
use rl_tests::{Reply, Stack, StackBuilder, client_from, control_plane_bin, get, get_json};

const CAP: u8 = 3;
const BUDGET: u64 = 5;
/// Seconds; short, so the test can wait for the first identities to expire.
const WINDOW: u64 = 2;

async fn from(stack: &Stack, last: u8) -> Reply {
    let client = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)));
    get(&client, &stack.url("/api/v1/request"), &[]).await
}

async fn prometheus(stack: &Stack) -> String {
    let url = stack.control_plane.url("/metrics");
    reqwest::get(&url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_default()
}

/// The value of an unlabelled Prometheus sample.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_new_identities_are_refused_and_live_ones_keep_their_counts() {
    // The file's fail_open is true (the default): a full store must still not admit.
    let stack = StackBuilder::new(control_plane_bin!(), &one_tier(BUDGET, WINDOW).yaml())
        .control_plane_env("RATE_LIMIT_MEMORY_MAX_IDENTITIES", &CAP.to_string())
        .start();
    for last in 1..=CAP {
        let reply = from(&stack, 100 + last).await;
        assert_eq!(reply.status, 200, "identity {last}: {reply:?}");
        assert_eq!(reply.num("x-ratelimit-remaining"), BUDGET - 1);
    }
    let refused = from(&stack, 110).await;
    assert_eq!(refused.status, 503, "one identity too many: {refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    assert_eq!(refused.json()["error"]["code"], "rate_limit_unavailable");
    assert!(!refused.has_rate_limit_headers(), "{refused:?}");
    // The tracked identities were not evicted to make room: their counts go on.
    let again = from(&stack, 101).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.num("x-ratelimit-remaining"), BUDGET - 2);

    let metrics = get_json(
        &reqwest::Client::new(),
        &stack.control_plane.url("/api/v1/rate-limit/metrics"),
    )
    .await;
    assert_eq!(metrics["store_full_refusals"], 1, "{metrics}");
    assert_eq!(metrics["unavailable_requests"], 1, "{metrics}");
    assert_eq!(
        metrics["redis_errors"], 0,
        "a full store is not a store error"
    );
    let text = prometheus(&stack).await;
    assert_eq!(
        sample(&text, "rate_limit_store_full_refusals_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "rate_limit_memory_identities"),
        Some(f64::from(CAP)),
        "{text}"
    );

    // Once the first identities' entries have left the window they no longer count, and a
    // new identity gets in: no restart, no wait for the periodic clean-up.
    let deadline = Instant::now() + Duration::from_secs(WINDOW * 5);
    loop {
        let reply = from(&stack, 110).await;
        if reply.status == 200 {
            assert_eq!(reply.num("x-ratelimit-remaining"), BUDGET - 1);
            break;
        }
        assert_eq!(reply.status, 503, "{reply:?}");
        assert!(
            Instant::now() < deadline,
            "a new identity is still refused {} s after the others expired",
            WINDOW * 5
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
