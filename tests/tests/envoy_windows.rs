//! Several windows per limit and shadow mode through a real Envoy with the compiled filter
//! and Redis: a burst window and a longer one on one tier (the burst binds first, then the
//! long one), an endpoint rule of two windows, `Retry-After` when every full window must
//! have room, the status endpoint showing every window, and a shadow window switched on and
//! then enforced by live PUTs (metrics, log line and headers in between).
//!
//! The IETF `RateLimit-Policy` / `RateLimit` fields are read back here as structured fields
//! (`sfv`) from what the real control plane counted, for one window and for several.
//!
//! Burst windows are 2 s long and the waits are for conditions (a window seen empty through
//! the status endpoint), with deadlines, never fixed sleeps.

#[path = "support/structured_fields.rs"]
mod structured_fields;

#[path = "support/denials.rs"]
mod denials;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use denials::{denial, described};
use rl_tests::admin::{Admin, eventually};
use rl_tests::fixtures::{Config, Rule, Tier};
use rl_tests::{Reply, Stack, StackBuilder, client_from, control_plane_bin, get};
use serde_json::{Value, json};
use structured_fields::{Member, list, member};

const ADMIN_KEY: &str = "windows-admin-key-0123456789";

fn from(last: u8) -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

fn stack(config: &Config) -> Stack {
    StackBuilder::new(control_plane_bin!(), &config.yaml())
        .with_redis()
        .control_plane_env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .start()
}

/// The counters of `identifier` from the status endpoint, by policy name.
async fn windows_of(stack: &Stack, identifier: &str) -> Vec<Value> {
    let report = Admin::new(ADMIN_KEY)
        .get(
            &stack.control_plane,
            &format!("/api/v1/rate-limit/status/{identifier}"),
        )
        .await;
    assert_eq!(report.status, 200, "{report:?}");
    report.body["counters"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// How many requests `policy` of `identifier` counts now.
async fn count_of(stack: &Stack, identifier: &str, policy: &str) -> u64 {
    Admin::new(ADMIN_KEY)
        .window_count(&stack.control_plane, identifier, policy)
        .await
}

/// Waits (at most 5 s) until the window `policy` of `identifier` is empty again.
async fn until_empty(stack: &Stack, identifier: &str, policy: &str) {
    eventually(
        Duration::from_secs(5),
        &format!("{policy} of {identifier} empties"),
        async || count_of(stack, identifier, policy).await == 0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_burst_window_binds_first_then_the_long_one() {
    // 3 per 2 s and 5 per minute.
    let stack = stack(&Config::new().tier(Tier::windows("free", &[(3, 2), (5, 60)])));
    let client = from(41);
    let url = stack.url("/api/v1/request");
    // The burst has the least remaining from the first request on (2 left against 4).
    for remaining in [2, 1, 0] {
        let reply = get(&client, &url, &[]).await;
        assert_eq!(reply.status, 200, "{reply:#?}");
        assert_eq!(described(&reply), (3, remaining), "{reply:#?}");
        assert_eq!(reply.header("retry-after"), None);
    }
    let retry_after = denial(&get(&client, &url, &[]).await, 3, 2, "/api/v1/request");
    assert!((1..=2).contains(&retry_after), "{retry_after}");

    // The status endpoint shows both windows, and the refused request in neither (the
    // burst's entries may have begun to leave it by now).
    let windows = windows_of(&stack, "ip:127.0.0.41").await;
    let seen: Vec<(&str, &str, u64, u64)> = windows
        .iter()
        .map(|c| {
            (
                c["counter"].as_str().unwrap_or_default(),
                c["policy"].as_str().unwrap_or_default(),
                c["limit"].as_u64().unwrap_or_default(),
                c["window_seconds"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("tier_budget", "free-2s", 3, 2),
            ("tier_budget", "free-60s", 5, 60)
        ],
        "{windows:?}"
    );
    assert!(windows[0]["count"].as_u64().is_some_and(|n| n <= 3));
    assert_eq!(windows[1]["count"], 3, "{windows:?}");

    // Once the burst has emptied, the minute has the least remaining and binds.
    until_empty(&stack, "ip:127.0.0.41", "free-2s").await;
    for remaining in [1, 0] {
        let reply = get(&client, &url, &[]).await;
        assert_eq!(reply.status, 200, "{reply:#?}");
        assert_eq!(described(&reply), (5, remaining), "{reply:#?}");
    }
    let retry_after = denial(&get(&client, &url, &[]).await, 5, 60, "/api/v1/request");
    assert!(
        (50..=60).contains(&retry_after),
        "until the first request leaves the minute: {retry_after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_rule_of_two_windows_binds_under_the_tier_budget() {
    let stack = stack(
        &Config::new().tier(
            Tier::new("free", 100)
                .window(60)
                .rule("/api/v1/search", Rule::new(&[(2, 2), (3, 60)])),
        ),
    );
    let client = from(42);
    let search = stack.url("/api/v1/search?q=x");
    for remaining in [1, 0] {
        let reply = get(&client, &search, &[]).await;
        assert_eq!(reply.status, 200, "{reply:#?}");
        assert_eq!(described(&reply), (2, remaining), "{reply:#?}");
    }
    denial(&get(&client, &search, &[]).await, 2, 2, "/api/v1/search");
    // Other paths are limited by the tier alone: 100 − 2 − 1.
    let other = get(&client, &stack.url("/api/v1/request"), &[]).await;
    assert_eq!(other.status, 200);
    assert_eq!(described(&other), (100, 97));
    // The status endpoint lists the tier's window, then the rule's two.
    let policies: Vec<Value> = windows_of(&stack, "ip:127.0.0.42")
        .await
        .iter()
        .map(|c| json!([c["counter"], c["policy"], c["shadow"]]))
        .collect();
    assert_eq!(
        policies,
        [
            json!(["tier_budget", "free-60s", false]),
            json!(["/api/v1/search", "free-/api/v1/search-2s", false]),
            json!(["/api/v1/search", "free-/api/v1/search-60s", false]),
        ]
    );

    until_empty(&stack, "ip:127.0.0.42", "free-/api/v1/search-2s").await;
    let reply = get(&client, &search, &[]).await;
    assert_eq!(reply.status, 200, "{reply:#?}");
    assert_eq!(
        described(&reply),
        (3, 0),
        "the rule's minute has the least remaining"
    );
    let retry_after = denial(&get(&client, &search, &[]).await, 3, 60, "/api/v1/search");
    assert!(retry_after > 2, "{retry_after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_waits_until_every_full_window_has_room() {
    // 2 per 2 s and 3 per 6 s.
    let stack = stack(&Config::new().tier(Tier::windows("free", &[(2, 2), (3, 6)])));
    let client = from(43);
    let url = stack.url("/api/v1/request");
    assert_eq!(get(&client, &url, &[]).await.status, 200);
    until_empty(&stack, "ip:127.0.0.43", "free-2s").await;
    // Two more: the burst is full again, and so are the six seconds (the first request is
    // still in them).
    for _ in 0..2 {
        assert_eq!(get(&client, &url, &[]).await.status, 200);
    }
    let denied = get(&client, &url, &[]).await;
    // Both full: the lower limit is described, and Retry-After waits for the longer window
    // (the first request leaves it 6 s after it came, more than the burst's 2 s).
    let retry_after = denial(&denied, 2, 2, "/api/v1/request");
    assert!(
        (3..=6).contains(&retry_after),
        "every full window must have room: {retry_after}"
    );
}

/// The `shadow_throttled_requests` of the JSON metrics.
async fn shadow_throttled(stack: &Stack) -> u64 {
    let m = Admin::new(ADMIN_KEY)
        .get(&stack.control_plane, "/api/v1/rate-limit/metrics")
        .await;
    m.body["shadow_throttled_requests"]
        .as_u64()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_window_switched_on_and_then_enforced_live() {
    let stack = stack(&Config::new().tier(Tier::new("free", 100).window(60)));
    let admin = Admin::new(ADMIN_KEY);
    let cp = &stack.control_plane;
    let client = from(44);
    let url = stack.url("/api/v1/export/report");
    let rule = |shadow: bool| {
        Config::new().tier(
            Tier::new("free", 100)
                .window(60)
                .rule("/api/v1/export/*", Rule::new(&[(2, 60)]).shadow(shadow)),
        )
    };

    // A new limit, tried in shadow mode: PUT live.
    let put = admin.put_yaml(cp, &rule(true).yaml()).await;
    assert_eq!(put.status, 200, "{put:?}");
    for remaining in [1, 0] {
        let reply = get(&client, &url, &[]).await;
        assert_eq!(reply.status, 200, "{reply:#?}");
        assert_eq!(described(&reply), (2, remaining));
    }
    // Full: the requests pass, with the headers the enforced limit would send and no
    // Retry-After.
    for _ in 0..2 {
        let reply = get(&client, &url, &[]).await;
        assert_eq!(
            reply.status, 200,
            "a shadow window refuses nothing: {reply:#?}"
        );
        assert_eq!(described(&reply), (2, 0), "{reply:#?}");
        assert_eq!(reply.header("retry-after"), None, "{reply:#?}");
        assert!(reply.num("x-ratelimit-reset") > 1_700_000_000);
    }
    eventually(
        Duration::from_secs(10),
        "shadow_throttled_requests",
        async || shadow_throttled(&stack).await == 2,
    )
    .await;
    let m = admin.get(cp, "/api/v1/rate-limit/metrics").await.body;
    assert_eq!(
        (
            &m["allowed_requests"],
            &m["throttled_requests"],
            &m["total_requests"]
        ),
        (&json!(4), &json!(0), &json!(4)),
        "would-be denials are admitted: {m}"
    );
    assert_eq!(m["shadow_by_policy"]["free-/api/v1/export/*-60s"], 2, "{m}");
    let text = client_from(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .get(cp.url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("scrape body");
    assert!(
        text.contains(r#"rate_limit_requests_total{tier="free",endpoint="/api/v1/export/*",decision="shadow_throttled"} 2"#),
        "{text}"
    );
    let line = cp.output.expect_line(
        Duration::from_secs(10),
        "the shadow denial's log line",
        |line| {
            serde_json::from_str::<Value>(line).is_ok_and(|v| {
                v["event"] == "rate_limit_exceeded"
                    && v["shadow"] == true
                    && v["identifier"] == "ip:127.0.0.44"
            })
        },
    );
    let line: Value = serde_json::from_str(&line).expect("JSON log line");
    assert_eq!(
        (&line["policy"], &line["endpoint"], &line["limit"]),
        (
            &json!("free-/api/v1/export/*-60s"),
            &json!("/api/v1/export/*"),
            &json!(2)
        ),
        "{line}"
    );
    // The shadow window held no more than its limit.
    assert_eq!(
        count_of(&stack, "ip:127.0.0.44", "free-/api/v1/export/*-60s").await,
        2
    );

    // Enforced by another PUT: the same window, already full, now refuses.
    let put = admin.put_yaml(cp, &rule(false).yaml()).await;
    assert_eq!(put.status, 200, "{put:?}");
    let retry_after = denial(&get(&client, &url, &[]).await, 2, 60, "/api/v1/export/*");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Other paths only see the tier: 100 − 4 admitted − 1.
    let other = get(&client, &stack.url("/api/v1/request"), &[]).await;
    assert_eq!((other.status, described(&other)), (200, (100, 95)));
    assert_eq!(shadow_throttled(&stack).await, 2);
}

/// The List field `name` of `reply` (every line of it), parsed as a client parses it.
fn ietf_field(reply: &Reply, name: &str) -> Vec<Member> {
    list(reply.headers.get_all(name).iter().map(|v| v.as_bytes()))
}

fn policies(windows: &[(&str, i64, i64)]) -> Vec<Member> {
    windows
        .iter()
        .map(|(name, q, w)| member(name, &[("q", *q), ("w", *w)]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ietf_fields_describe_what_the_control_plane_counted() {
    // A tier of a burst and a minute, and a rule of its own on searches.
    let stack = stack(&Config::new().tier(
        Tier::windows("free", &[(3, 2), (100, 60)]).rule("/api/v1/search", Rule::new(&[(30, 60)])),
    ));
    let client = from(45);
    let tier_windows = [("free-2s", 3, 2), ("free-60s", 100, 60)];
    let all_windows = [
        ("free-2s", 3, 2),
        ("free-60s", 100, 60),
        ("free-/api/v1/search-60s", 30, 60),
    ];

    // A path without a rule: the tier's two windows; the burst binds (2 left against 99).
    let reply = get(&client, &stack.url("/api/v1/request"), &[]).await;
    assert_eq!(reply.status, 200, "{reply:#?}");
    assert_eq!(
        ietf_field(&reply, "ratelimit-policy"),
        policies(&tier_windows)
    );
    let binding = ietf_field(&reply, "ratelimit");
    assert_eq!(binding.len(), 1, "{binding:?}");
    assert_eq!(binding[0].0, "free-2s", "{binding:?}");
    assert_eq!(binding[0].1[0], ("r".to_string(), 2), "{binding:?}");

    // A search: the rule's window too, in order after the tier's.
    let search = stack.url("/api/v1/search");
    let reply = get(&client, &search, &[]).await;
    assert_eq!(reply.status, 200, "{reply:#?}");
    assert_eq!(
        ietf_field(&reply, "ratelimit-policy"),
        policies(&all_windows)
    );
    let binding = ietf_field(&reply, "ratelimit");
    assert_eq!(
        binding
            .iter()
            .map(|m| (m.0.as_str(), m.1[0].1))
            .collect::<Vec<_>>(),
        [("free-2s", 1)],
        "{reply:#?}"
    );
    // The X-RateLimit-* set describes the same window.
    assert_eq!(described(&reply), (3, 1), "{reply:#?}");

    let reply = get(&client, &search, &[]).await;
    assert_eq!(reply.status, 200, "{reply:#?}");
    // The burst is full: the 429 names it, and its `t` is the Retry-After.
    let reply = get(&client, &search, &[]).await;
    let retry_after = denial(&reply, 3, 2, "/api/v1/search");
    assert_eq!(
        ietf_field(&reply, "ratelimit-policy"),
        policies(&all_windows)
    );
    assert_eq!(
        ietf_field(&reply, "ratelimit"),
        [member("free-2s", &[("r", 0), ("t", retry_after as i64)])],
        "{reply:#?}"
    );

    // The status endpoint agrees: every window counted the allowed requests only.
    let counted: Vec<(String, u64)> = windows_of(&stack, "ip:127.0.0.45")
        .await
        .iter()
        .map(|c| {
            (
                c["policy"].as_str().unwrap_or_default().to_string(),
                c["count"].as_u64().unwrap_or_default(),
            )
        })
        .filter(|(policy, _)| policy != "free-2s")
        .collect();
    assert_eq!(
        counted,
        [
            ("free-60s".to_string(), 3),
            ("free-/api/v1/search-60s".to_string(), 2)
        ]
    );
}
