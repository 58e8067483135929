//! Both deny caches at once, through a real Envoy with the release `.wasm`, the control plane
//! and Redis: once an identity is over its limit, the filter answers its identical requests
//! itself and the control plane answers from its cache, so Redis sees fewer calls than there
//! were requests, while every request is still counted once in the control plane's totals
//! (the filter's own denials arrive with its next call).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rl_tests::admin::{Admin, eventually};
use rl_tests::fixtures::{Config, Tier};
use rl_tests::{RedisServer, StackBuilder, client_from, control_plane_bin, get};
use serde_json::Value;

const ADMIN_KEY: &str = "deny-caches-admin-key-0123456789";

fn from(last: u8) -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

/// Script calls Redis has served (`INFO commandstats`), not counting those that failed (a
/// script not loaded yet answers NOSCRIPT and is sent again).
fn script_calls(redis: &RedisServer) -> u64 {
    let mut conn = redis.connection();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .expect("INFO commandstats");
    let field = |stats: &str, name: &str| -> u64 {
        stats
            .split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or(0)
    };
    info.lines()
        .filter_map(|line| {
            line.strip_prefix("cmdstat_evalsha:")
                .or_else(|| line.strip_prefix("cmdstat_eval:"))
        })
        .map(|stats| {
            field(stats, "calls") - field(stats, "failed_calls") - field(stats, "rejected_calls")
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_requests_spare_redis_and_every_request_is_counted_once() {
    let mut stack = StackBuilder::new(
        control_plane_bin!(),
        &Config::new().tier(Tier::new("free", 3).window(60)).yaml(),
    )
    .with_redis()
    .control_plane_env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
    // One worker: the filter's own denials are reported by the worker that made them, with
    // its next call.
    .concurrency(1)
    .start();
    let url = stack.url("/api/v1/request");
    let before = script_calls(stack.redis());

    let abuser = from(95);
    for _ in 0..3 {
        assert_eq!(get(&abuser, &url, &[]).await.status, 200);
    }
    let mut denials = Vec::new();
    for _ in 0..9 {
        denials.push(get(&abuser, &url, &[]).await);
    }
    for reply in &denials {
        assert_eq!(reply.status, 429, "{reply:#?}");
        assert_eq!(reply.num("x-ratelimit-remaining"), 0, "{reply:#?}");
        assert!(reply.num("retry-after") >= 1, "{reply:#?}");
        assert_eq!(
            reply.json()["error"]["details"]["limit"],
            3,
            "the same answer, whoever gave it"
        );
    }
    let local = stack
        .envoy
        .stat("wasmcustom.rate_limit_filter.local_denied")
        .expect("the local_denied stat is defined");
    assert!(
        (1..=8).contains(&local),
        "the first denial comes from the control plane, then the filter answers: {local}"
    );

    // Another client's request carries the filter's report.
    assert_eq!(get(&from(96), &url, &[]).await.status, 200);
    let admin = Admin::new(ADMIN_KEY);
    let cp = &stack.control_plane;
    let mut last = Value::Null;
    eventually(
        Duration::from_secs(5),
        "the filter's own denials reach the control plane's totals",
        async || {
            last = admin.get(cp, "/api/v1/rate-limit/metrics").await.body;
            last["total_requests"] == 13
        },
    )
    .await;
    assert_eq!(last["allowed_requests"], 4, "{last}");
    assert_eq!(last["throttled_requests"], 9, "{last}");
    let cache_hits = last["deny_cache_hits"].as_u64().unwrap_or(0);

    // Redis decided only what neither cache could: every allowed request, and the denials the
    // caches did not answer.
    let calls = script_calls(stack.redis()) - before;
    assert_eq!(
        calls + local + cache_hits,
        13,
        "{calls} script calls for 13 requests ({local} answered by the filter, {cache_hits} by \
         the control plane's cache)"
    );
    assert!(calls >= 4, "the allowed requests went to Redis: {calls}");
}
