//! US1 (docs/PRODUCT.md §2) through a real Envoy with the compiled filter: 100 requests pass, the 101st gets the
//! contract's 429, headers on every response, windows expire, concurrency is exact.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rl_tests::fixtures::one_tier;
use rl_tests::{Reply, StackBuilder, client_from, control_plane_bin, get};

/// 100 requests per minute.
fn config() -> String {
    one_tier(100, 60).yaml()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn assert_headers(reply: &Reply, limit: u64, remaining: u64, tier: &str) {
    assert_eq!(reply.num("x-ratelimit-limit"), limit, "{reply:#?}");
    assert_eq!(reply.num("x-ratelimit-remaining"), remaining, "{reply:#?}");
    assert_eq!(reply.header("x-ratelimit-tier"), Some(tier), "{reply:#?}");
    let reset = reply.num("x-ratelimit-reset");
    let now = unix_now();
    assert!(
        reset > now && reset <= now + 61,
        "reset {reset} vs now {now}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_pass_then_429_with_the_contract_body() {
    let stack = StackBuilder::new(control_plane_bin!(), &config())
        .with_redis()
        .start();
    let client = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    let started = std::time::Instant::now();
    let mut resets = Vec::new();
    for i in 0..100u64 {
        // Every tenth request hits the endpoint that fails upstream: headers still there.
        let path = if i % 10 == 9 {
            "/api/v1/error"
        } else {
            "/api/v1/request"
        };
        let reply = get(&client, &stack.url(path), &[]).await;
        let want = if path == "/api/v1/error" { 500 } else { 200 };
        assert_eq!(reply.status, want, "request {} {reply:#?}", i + 1);
        assert_headers(&reply, 100, 99 - i, "free");
        resets.push(reply.num("x-ratelimit-reset"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    // The reset is when the first request leaves the window: the same for all of them.
    assert!(resets.iter().all(|&r| r == resets[0]), "{resets:?}");

    let denied = get(&client, &stack.url("/api/v1/request"), &[]).await;
    assert_eq!(denied.status, 429, "{denied:#?}");
    assert_headers(&denied, 100, 0, "free");
    let retry_after = denied.num("retry-after");
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(denied.header("content-type"), Some("application/json"));
    let body = denied.json();
    let error = &body["error"];
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    let details = &error["details"];
    assert_eq!(details["limit"], 100);
    assert_eq!(details["window_size"], 60);
    assert_eq!(details["retry_after_seconds"], retry_after);
    assert_eq!(details["tier"], "free");
    assert_eq!(details["endpoint"], "/api/v1/request");
    let reset_at = details["reset_at"].as_str().expect("reset_at");
    assert!(
        reset_at.ends_with('Z') && reset_at.contains('T'),
        "{reset_at}"
    );
    assert_eq!(denied.num("x-ratelimit-reset"), resets[0]);

    // Another client is untouched.
    let other = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
    let reply = get(&other, &stack.url("/api/v1/request"), &[]).await;
    assert_eq!(reply.status, 200);
    assert_headers(&reply, 100, 99, "free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitted_again_after_a_two_second_window() {
    let stack = StackBuilder::new(control_plane_bin!(), &one_tier(2, 2).yaml())
        .with_redis()
        .start();
    let client = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)));
    let url = stack.url("/api/v1/request");
    assert_eq!(get(&client, &url, &[]).await.status, 200);
    assert_eq!(get(&client, &url, &[]).await.status, 200);
    let denied = get(&client, &url, &[]).await;
    assert_eq!(denied.status, 429);
    let retry_after = denied.num("retry-after");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    tokio::time::sleep(Duration::from_millis(retry_after * 1000 + 100)).await;
    let again = get(&client, &url, &[]).await;
    assert_eq!(again.status, 200, "{again:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_concurrent_requests_admit_exactly_one_hundred() {
    let stack = StackBuilder::new(control_plane_bin!(), &config())
        .with_redis()
        .start();
    let client = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5)));
    let url = stack.url("/api/v1/request");
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { get(&client, &url, &[]).await.status })
        })
        .collect();
    let (mut ok, mut limited, mut other) = (0, 0, 0);
    for task in tasks {
        match task.await.expect("task") {
            200 => ok += 1,
            429 => limited += 1,
            _ => other += 1,
        }
    }
    assert_eq!((ok, limited, other), (100, 200, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_config_admits_without_headers() {
    let stack = StackBuilder::new(
        control_plane_bin!(),
        &one_tier(100, 60).enabled(false).yaml(),
    )
    .start();
    let client = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)));
    for _ in 0..3 {
        let reply = get(&client, &stack.url("/api/v1/request"), &[]).await;
        assert_eq!(reply.status, 200);
        assert!(!reply.has_rate_limit_headers(), "{reply:#?}");
    }
}
