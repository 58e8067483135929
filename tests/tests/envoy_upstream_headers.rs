//! An upstream with a rate limiter of its own, behind a real Envoy with the release `.wasm`:
//! its `X-RateLimit-*` headers never reach clients beside ours (ours replace them; where we
//! send none or only `X-RateLimit-Tier`, the others are removed), while its `RateLimit` /
//! `RateLimit-Policy` fields (Lists intermediaries append to) keep its members in front of
//! ours and its `Retry-After` passes untouched. The upstream is the demo upstream's `/api/v1/own-limits`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use demo_upstream::OWN_LIMIT_HEADERS;
use rl_tests::fixtures::{self, Config, Tier, tiered};
use rl_tests::{Reply, StackBuilder, client_from, control_plane_bin, get};

const OWN_LIMITS: &str = "/api/v1/own-limits";

fn from(last: u8) -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

/// The `X-RateLimit-*` headers of a reply, by lowercase name (every line of each).
fn x_ratelimit(reply: &Reply) -> BTreeMap<String, Vec<String>> {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &reply.headers {
        if name.as_str().starts_with("x-ratelimit-") {
            found
                .entry(name.as_str().to_string())
                .or_default()
                .push(value.to_str().unwrap_or("<not ASCII>").to_string());
        }
    }
    found
}

/// Every line the upstream sent under `name`, in order.
fn upstream_lines(name: &str) -> Vec<&'static str> {
    OWN_LIMIT_HEADERS
        .iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .collect()
}

fn lines<'a>(reply: &'a Reply, name: &str) -> Vec<&'a str> {
    reply
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("<not ASCII>"))
        .collect()
}

/// The upstream's `RateLimit`, `RateLimit-Policy` (both lines, in order) and `Retry-After`
/// arrived as it sent them, and nothing was added to them.
fn assert_upstream_fields_untouched(reply: &Reply) {
    assert_upstream_fields_first(reply, None);
}

/// The upstream's `RateLimit` and `RateLimit-Policy` lines arrived as it sent them and in
/// front, followed by ours when `ours` gives them (each our one line's expected start); its
/// `Retry-After` is untouched.
fn assert_upstream_fields_first(reply: &Reply, ours: Option<(&str, &str)>) {
    let (our_ratelimit, our_policy) = ours.unzip();
    for (name, ours) in [
        ("ratelimit", our_ratelimit),
        ("ratelimit-policy", our_policy),
        ("retry-after", None),
    ] {
        let upstream = upstream_lines(name);
        let found = lines(reply, name);
        assert_eq!(
            found.len(),
            upstream.len() + usize::from(ours.is_some()),
            "{name}: {reply:#?}"
        );
        assert_eq!(found[..upstream.len()], upstream, "{name}: {reply:#?}");
        if let Some(start) = ours {
            assert!(
                found[upstream.len()].starts_with(start),
                "{name}: {reply:#?}"
            );
        }
    }
}

/// Our four headers, with the values the control plane gave, and nothing else of the family.
fn assert_ours_only(reply: &Reply, limit: u64, tier: &str) {
    let found = x_ratelimit(reply);
    let names: Vec<&str> = found.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "x-ratelimit-tier"
        ],
        "{reply:#?}"
    );
    assert!(found.values().all(|v| v.len() == 1), "{reply:#?}");
    assert_eq!(reply.num("x-ratelimit-limit"), limit, "{reply:#?}");
    assert!(reply.num("x-ratelimit-remaining") < limit, "{reply:#?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let reset = reply.num("x-ratelimit-reset");
    assert!(
        reset >= now.saturating_sub(5) && reset <= now + 120,
        "our reset, not the upstream's: {reply:#?}"
    );
    assert_eq!(reply.header("x-ratelimit-tier"), Some(tier), "{reply:#?}");
}

fn assert_no_x_ratelimit(reply: &Reply) {
    assert_eq!(x_ratelimit(reply), BTreeMap::new(), "{reply:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstreams_own_rate_limit_headers_never_reach_clients_beside_ours() {
    let whitelisted = 62;
    let config = fixtures::tiers_with_keys().whitelist(&format!("127.0.0.{whitelisted}"));
    let stack = StackBuilder::new(control_plane_bin!(), &config.yaml()).start();
    let url = |query: &str| stack.url(&format!("{OWN_LIMITS}{query}"));

    // Rate limited (free tier, by IP): our four replace the upstream's, whatever its status;
    // its other X-RateLimit-* header goes.
    for (query, status) in [("", 200), ("?status=503", 503), ("?status=429", 429)] {
        let reply = get(&from(61), &url(query), &[]).await;
        assert_eq!(reply.status, status, "{reply:#?}");
        assert_ours_only(&reply, 100, "free");
        let remaining = reply.num("x-ratelimit-remaining");
        assert_upstream_fields_first(
            &reply,
            Some((
                &format!("\"free-60s\";r={remaining};t="),
                "\"free-60s\";q=100;w=60",
            )),
        );
    }

    // An unlimited tier without endpoint rule: only X-RateLimit-Tier is ours to send.
    let reply = get(&from(63), &url(""), &[("x-api-key", tiered::UNLIMITED_KEY)]).await;
    assert_eq!(reply.status, 200, "{reply:#?}");
    assert_eq!(
        x_ratelimit(&reply),
        BTreeMap::from([(
            "x-ratelimit-tier".to_string(),
            vec!["unlimited".to_string()]
        )]),
        "{reply:#?}"
    );
    assert_upstream_fields_untouched(&reply);

    // Whitelisted: no X-RateLimit-* at all, also on the upstream's own 429.
    for (query, status) in [("", 200), ("?status=429", 429)] {
        let reply = get(&from(whitelisted), &url(query), &[]).await;
        assert_eq!(reply.status, status, "{reply:#?}");
        assert_no_x_ratelimit(&reply);
        assert_upstream_fields_untouched(&reply);
    }
    assert_eq!(
        stack.envoy.stat("wasmcustom.rate_limit_filter.whitelisted"),
        Some(2)
    );

    // Our own 429 keeps every header we put on it (the filter sees its local reply's
    // headers too, and removes nothing there).
    let premium = [("x-api-key", tiered::PREMIUM_KEY)];
    let admin_path = stack.url("/api/v1/admin/users");
    for _ in 0..3 {
        assert_eq!(get(&from(64), &admin_path, &premium).await.status, 200);
    }
    let denied = get(&from(64), &admin_path, &premium).await;
    assert_eq!(denied.status, 429, "{denied:#?}");
    assert_ours_only(&denied, 3, "premium");
    assert!(denied.num("retry-after") >= 1, "{denied:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rate_limiting_disabled_no_x_ratelimit_header_passes() {
    let config = Config::new()
        .enabled(false)
        .tier(Tier::new("free", 100).window(60));
    let stack = StackBuilder::new(control_plane_bin!(), &config.yaml()).start();
    for query in ["", "?status=503"] {
        let reply = get(&from(65), &stack.url(&format!("{OWN_LIMITS}{query}")), &[]).await;
        assert_no_x_ratelimit(&reply);
        assert_upstream_fields_untouched(&reply);
    }
    assert_eq!(
        stack.envoy.stat("wasmcustom.rate_limit_filter.disabled"),
        Some(2)
    );
}

/// Sends requests, one at a time, until the filter stat `stat` has grown past `before`;
/// returns the reply that made it grow.
async fn first_failed_open(stack: &rl_tests::Stack, stat: &str, before: u64) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = get(&from(66), &stack.url(OWN_LIMITS), &[]).await;
        if stack.envoy.stat(stat).unwrap_or(0) > before {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "{stat} did not grow: {reply:#?}\n{}",
            stack.envoy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_open_requests_get_no_x_ratelimit_header_from_the_upstream() {
    const FAILED_OPEN: &str = "wasmcustom.rate_limit_filter.failed_open";
    const ERRORS: &str = "wasmcustom.rate_limit_filter.control_plane_errors";
    let mut stack = StackBuilder::new(control_plane_bin!(), &fixtures::one_tier(100, 60).yaml())
        .with_redis()
        .start();
    let reply = get(&from(66), &stack.url(OWN_LIMITS), &[]).await;
    assert_ours_only(&reply, 100, "free");

    // The control plane's store fails: it answers `failed_open`.
    stack.redis().kill9();
    let reply = first_failed_open(&stack, FAILED_OPEN, 0).await;
    assert_eq!(reply.status, 200);
    assert_no_x_ratelimit(&reply);
    assert_upstream_fields_untouched(&reply);
    assert_eq!(
        stack.envoy.stat(ERRORS),
        Some(0),
        "the control plane answered"
    );

    // The control plane itself is gone: the filter's own fail_open.
    let before = stack.envoy.stat(FAILED_OPEN).unwrap_or(0);
    stack.control_plane.stop();
    let reply = first_failed_open(&stack, FAILED_OPEN, before).await;
    assert_eq!(reply.status, 200);
    assert_no_x_ratelimit(&reply);
    assert_upstream_fields_untouched(&reply);
    assert!(stack.envoy.stat(ERRORS).unwrap_or(0) >= 1);
}
