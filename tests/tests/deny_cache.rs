//! The control plane's deny-until cache, through the real process and a real redis-server: a
//! full counter answers the next identical decisions without a Redis call, the identity's
//! other endpoint is still decided by Redis, a configuration change drops the cache; and the
//! filter's own denials reported in a batch reach the metrics, bounded.

use std::time::Instant;

use rl_tests::admin::Admin;
use rl_tests::fixtures::{Config, Tier};
use rl_tests::{ControlPlane, ControlPlaneBuilder, RedisServer, control_plane_bin};
use rl_wire::{DecisionResponse, Verdict};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "deny-cache-admin-key-0123456789";

/// `free`: 100 a minute, `/api/v1/search` `search` a minute.
fn config(search: u64) -> String {
    Config::new()
        .tier(
            Tier::new("free", 100)
                .window(60)
                .endpoint("/api/v1/search", search),
        )
        .yaml()
}

fn start(redis: &RedisServer) -> ControlPlane {
    ControlPlaneBuilder::new(control_plane_bin!(), &config(2))
        .redis(redis.url())
        .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .start()
}

async fn decide(cp: &ControlPlane, ip: &str, path: &str) -> DecisionResponse {
    let body = json!({"ip": ip, "method": "GET", "path": path});
    let response = reqwest::Client::new()
        .post(cp.url("/internal/v1/decision"))
        .json(&body)
        .send()
        .await
        .expect("decision call");
    assert_eq!(response.status(), 200);
    response.json().await.expect("decision answer")
}

/// Script calls Redis has served (`INFO commandstats`: every decision is one EVALSHA).
fn evalsha_calls(redis: &RedisServer) -> u64 {
    let mut conn = redis.connection();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .expect("INFO commandstats");
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

async fn metrics(admin: &Admin, cp: &ControlPlane) -> Value {
    let reply = admin.get(cp, "/api/v1/rate-limit/metrics").await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body
}

async fn prometheus(cp: &ControlPlane) -> String {
    reqwest::get(cp.url("/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("scrape body")
}

fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_counter_is_denied_without_redis_until_the_configuration_changes() {
    let redis = RedisServer::start();
    let cp = start(&redis);
    let admin = Admin::new(ADMIN_KEY);
    let ip = "192.0.2.10";
    for _ in 0..2 {
        assert_eq!(
            decide(&cp, ip, "/api/v1/search").await.verdict,
            Verdict::Allow
        );
    }

    // The rule is full for a minute: the next decisions come from the cache. Knowledge is
    // trusted for a second at most, so one refreshing call per second started is allowed.
    let before = evalsha_calls(&redis);
    let started = Instant::now();
    let denials = 20u64;
    for _ in 0..denials {
        let denied = decide(&cp, ip, "/api/v1/search").await;
        assert_eq!(denied.verdict, Verdict::Deny);
        let counter = denied.counter.expect("the binding window");
        assert_eq!(counter.endpoint, "/api/v1/search");
        assert_eq!(counter.policy.as_deref(), Some("free-/api/v1/search-60s"));
        let deny_for = denied
            .deny_for_ms
            .expect("a cacheable denial carries deny_for_ms");
        assert!((1..=60_000).contains(&deny_for), "{deny_for}");
        assert!(
            deny_for / 1_000 <= counter.retry_after.expect("Retry-After"),
            "deny_for_ms never says longer than Retry-After"
        );
    }
    let refreshes = 1 + started.elapsed().as_secs();
    let store_calls = evalsha_calls(&redis) - before;
    assert!(
        store_calls <= refreshes,
        "{store_calls} Redis calls for {denials} denials of a full counter"
    );

    // The identity's other endpoint is not denied by the full rule: Redis decides it.
    let before_other = evalsha_calls(&redis);
    assert_eq!(decide(&cp, ip, "/other").await.verdict, Verdict::Allow);
    assert_eq!(evalsha_calls(&redis), before_other + 1);

    let m = metrics(&admin, &cp).await;
    assert_eq!(m["throttled_requests"], denials);
    assert_eq!(m["by_endpoint"]["/api/v1/search"], denials);
    assert_eq!(m["by_policy"]["free-/api/v1/search-60s"], denials);
    let hits = m["deny_cache_hits"].as_u64().expect("deny_cache_hits");
    assert_eq!(
        hits + store_calls,
        denials,
        "every denial came from the cache or from Redis"
    );
    let text = prometheus(&cp).await;
    assert_eq!(
        series(&text, "rate_limit_deny_cache_hits_total"),
        Some(hits as f64),
        "{text}"
    );
    assert_eq!(
        series(
            &text,
            "rate_limit_throttled_total{tier=\"free\",endpoint=\"/api/v1/search\"}"
        ),
        Some(denials as f64)
    );

    // A change of configuration drops the cache: the raised limit admits at once, decided by
    // Redis.
    let put = admin.put_yaml(&cp, &config(3)).await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    let before_change = evalsha_calls(&redis);
    assert_eq!(
        decide(&cp, ip, "/api/v1/search").await.verdict,
        Verdict::Allow
    );
    assert_eq!(evalsha_calls(&redis), before_change + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filters_own_denials_count_as_throttled_and_bad_entries_are_ignored() {
    let redis = RedisServer::start();
    let cp = start(&redis);
    let admin = Admin::new(ADMIN_KEY);
    let report = json!({
        "requests": [],
        "local_denials": [
            {"tier": "free", "endpoint": "/api/v1/search", "policy": "free-/api/v1/search-60s", "count": 5},
            {"tier": "free", "endpoint": "/elsewhere", "policy": "free-60s", "count": 2},
            {"tier": "gold", "endpoint": "/api/v1/search", "policy": "free-60s", "count": 7},
            {"tier": "free", "endpoint": "/x", "policy": "made-up", "count": 7},
            {"tier": "free", "endpoint": "/x", "count": 7},
            {"tier": "free", "endpoint": "/api/v1/search", "policy": "free-60s", "count": u64::MAX}
        ]
    });
    let response = reqwest::Client::new()
        .post(cp.url("/internal/v1/decisions"))
        .json(&report)
        .send()
        .await
        .expect("batch call");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("batch answer");
    assert_eq!(body["responses"], json!([]));
    let m = metrics(&admin, &cp).await;
    // 5 + 2, then the per-call bound caps the last entry.
    let capped = 1_000_000u64;
    assert_eq!(m["throttled_requests"], capped);
    assert_eq!(m["by_tier"]["free"], capped);
    assert_eq!(m["by_endpoint"]["/api/v1/search"], capped - 2);
    assert_eq!(m["by_endpoint"]["other"], 2);
    assert_eq!(m["by_policy"]["free-/api/v1/search-60s"], 5);
    assert_eq!(m["by_policy"]["free-60s"], capped - 5);
    assert_eq!(m["deny_cache_hits"], 0);
    assert!(m["by_tier"].get("gold").is_none());
}
