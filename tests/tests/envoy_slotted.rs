//! Slotted counters through a real Envoy with the release `.wasm`, the control plane and
//! Redis: a slotted window limits like any window (the request over the limit is a 429 whose
//! headers and Retry-After describe the window), keeps one small hash in Redis, shows its
//! algorithm and slot in the status endpoint, and a window switched live from the exact log to
//! slots keeps what the log had counted.

use std::net::{IpAddr, Ipv4Addr};

use rl_tests::admin::Admin;
use rl_tests::{Reply, Stack, StackBuilder, client_from, control_plane_bin, get};
use serde_json::Value;

const ADMIN_KEY: &str = "slotted-admin-key-0123456789";

fn from(last: u8) -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

/// One tier `free`: `limit` per `window` seconds, counted by `algorithm` (with `precision`
/// ms when slotted).
fn config(limit: u64, window: u64, algorithm: &str, precision: Option<u64>) -> String {
    let precision = precision.map_or(String::new(), |g| format!(", precision_ms: {g}"));
    format!(
        "default_tier: free\n\
         tiers:\n\
         - name: free\n\
         \x20 limits:\n\
         \x20 - {{limit: {limit}, window_seconds: {window}, algorithm: {algorithm}{precision}}}\n"
    )
}

fn stack(yaml: &str) -> Stack {
    StackBuilder::new(control_plane_bin!(), yaml)
        .with_redis()
        .control_plane_env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .start()
}

fn redis_query<T: redis::FromRedisValue>(stack: &mut Stack, args: &[&str]) -> T {
    let mut conn = stack.redis().connection();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut conn)
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")))
}

async fn status(stack: &Stack, identifier: &str) -> Value {
    let reply = Admin::new(ADMIN_KEY)
        .get(
            &stack.control_plane,
            &format!("/api/v1/rate-limit/status/{identifier}"),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

fn assert_admitted(reply: &Reply, remaining: u64) {
    assert_eq!(reply.status, 200, "{reply:#?}");
    assert_eq!(reply.num("x-ratelimit-remaining"), remaining, "{reply:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slotted_window_limits_through_envoy_in_one_small_hash() {
    let mut stack = stack(&config(5, 60, "slotted", Some(1_000)));
    let client = from(91);
    let url = stack.url("/api/v1/request");
    for remaining in (0..5).rev() {
        assert_admitted(&get(&client, &url, &[]).await, remaining);
    }
    let denied = get(&client, &url, &[]).await;
    assert_eq!(denied.status, 429, "{denied:#?}");
    assert_eq!(denied.num("x-ratelimit-limit"), 5, "{denied:#?}");
    let retry_after = denied.num("retry-after");
    // The first request's slot leaves the window at most one slot (1 s) after the request
    // itself would have.
    assert!((59..=61).contains(&retry_after), "{retry_after}");
    assert_eq!(
        denied.json()["error"]["details"]["retry_after_seconds"],
        retry_after,
        "{denied:#?}"
    );

    // In Redis: one hash, named for its window and slot, small.
    let key = "rl:{ip:127.0.0.91}:b:60s1000";
    let kind: String = redis_query(&mut stack, &["TYPE", key]);
    assert_eq!(kind, "hash");
    let bytes: u64 = redis_query(&mut stack, &["MEMORY", "USAGE", key, "SAMPLES", "0"]);
    assert!(bytes <= 2_048, "{bytes} bytes");
    let exact_log: u64 = redis_query(&mut stack, &["EXISTS", "rl:{ip:127.0.0.91}:b:60"]);
    assert_eq!(exact_log, 0, "no exact log beside it");

    // The status endpoint names the algorithm and the slot.
    let report = status(&stack, "ip:127.0.0.91").await;
    let counter = &report["counters"][0];
    assert_eq!(counter["algorithm"], "slotted", "{report}");
    assert_eq!(counter["precision_ms"], 1_000, "{report}");
    assert_eq!(counter["count"], 5, "{report}");
    assert_eq!(counter["remaining"], 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_switched_live_from_the_exact_log_to_slots_keeps_its_count() {
    let mut stack = stack(&config(5, 60, "exact", None));
    let client = from(92);
    let url = stack.url("/api/v1/request");
    for remaining in [4, 3, 2] {
        assert_admitted(&get(&client, &url, &[]).await, remaining);
    }
    let put = Admin::new(ADMIN_KEY)
        .put_yaml(&stack.control_plane, &config(5, 60, "slotted", None))
        .await;
    assert_eq!(put.status, 200, "{put:?}");

    // The three requests the log counted are counted by the slots: two more pass, not five.
    for remaining in [1, 0] {
        assert_admitted(&get(&client, &url, &[]).await, remaining);
    }
    let denied = get(&client, &url, &[]).await;
    assert_eq!(denied.status, 429, "{denied:#?}");
    let log: u64 = redis_query(&mut stack, &["EXISTS", "rl:{ip:127.0.0.92}:b:60"]);
    assert_eq!(log, 0, "the log was taken over and deleted");
    let kind: String = redis_query(&mut stack, &["TYPE", "rl:{ip:127.0.0.92}:b:60s1000"]);
    assert_eq!(kind, "hash");
}
