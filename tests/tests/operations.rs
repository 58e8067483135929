//! Operating the service live (US4 in docs/PRODUCT.md): metrics (JSON, Prometheus, Envoy stats), the admin
//! config API with propagation between replicas, file reload, status, logs, OpenAPI.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use rl_tests::admin::eventually;
use rl_tests::envoy::{EnvoyBuilder, admin_get};
use rl_tests::fixtures::{Config, Jwt, Tier};
use rl_tests::{
    ControlPlane, ControlPlaneBuilder, RedisServer, StackBuilder, Upstream, client_from,
    control_plane_bin, get, get_json,
};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "test-admin-key-0123456789";

const PARTNER_KEY: &str = "partner-secret-key-000123";
const JWT_SECRET: &str = "operations-test-hs256-secret-0123456789";

/// `free` (default): `limit` per minute, `/api/v1/request` `endpoint_limit`; `premium`: 100;
/// the partner's key on `premium`, whitelisted by its id; HS256 tokens.
fn config_with(limit: u64, endpoint_limit: u64) -> String {
    Config::new()
        .tier(
            Tier::new("free", limit)
                .window(60)
                .endpoint("/api/v1/request", endpoint_limit),
        )
        .tier(Tier::new("premium", 100))
        .api_key("partner", "premium", PARTNER_KEY)
        .jwt(Jwt::hs256(JWT_SECRET))
        .whitelist("key:partner")
        .yaml()
}

/// Five per minute, four of them on `/api/v1/request`.
fn config() -> String {
    config_with(5, 4)
}

fn from(last: u8) -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

fn admin() -> reqwest::Client {
    from(1)
}

async fn admin_json(cp: &ControlPlane, path: &str) -> (u16, Value) {
    let response = admin()
        .get(cp.url(path))
        .header("x-api-key", ADMIN_KEY)
        .send()
        .await
        .expect("admin call");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn put_config(cp: &ControlPlane, body: &Value) -> (u16, Value) {
    let response = admin()
        .put(cp.url("/api/v1/rate-limit/config"))
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .json(body)
        .send()
        .await
        .expect("admin call");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn prometheus_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reflect_the_traffic_sent_within_seconds() {
    let stack = StackBuilder::new(control_plane_bin!(), &config())
        .with_redis()
        .control_plane_env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .start();
    let client = from(91);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            get(&client, &stack.url("/api/v1/request"), &[])
                .await
                .status,
        );
    }
    for _ in 0..2 {
        let key = [("x-api-key", PARTNER_KEY)];
        statuses.push(get(&client, &stack.url("/other"), &key).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429, 429, 429, 200, 200]);
    let sent = Instant::now();

    let cp = &stack.control_plane;
    let took = eventually(Duration::from_secs(10), "JSON metrics", async || {
        let (_, m) = admin_json(cp, "/api/v1/rate-limit/metrics").await;
        m["throttled_requests"] == 4
    })
    .await;
    eprintln!("JSON metrics showed the throttling {took:?} after it happened");
    let (status, m) = admin_json(cp, "/api/v1/rate-limit/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(m["total_requests"], 8);
    assert_eq!(m["allowed_requests"], 4);
    assert_eq!(m["throttled_requests"], 4);
    assert_eq!(m["shadow_throttled_requests"], 0);
    assert_eq!(m["whitelisted_requests"], 2);
    assert!((m["throttle_rate"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    assert_eq!(m["by_tier"]["free"], 4);
    assert_eq!(m["by_tier"]["premium"], 0);
    assert_eq!(m["by_endpoint"]["/api/v1/request"], 4);
    assert_eq!(m["by_endpoint"]["other"], 0);
    // Every window of the configuration, by policy name: the rule's bound every time.
    assert_eq!(
        m["by_policy"],
        json!({"free-60s": 0, "free-/api/v1/request-60s": 4, "premium-60s": 0})
    );
    assert_eq!(m["redis_errors"], 0);
    assert!(m["p95_check_latency_ms"].as_f64().unwrap() > 0.0);
    assert!(m["avg_check_latency_ms"].as_f64().unwrap() > 0.0);
    assert!(m["timestamp"].as_str().unwrap().ends_with('Z'));

    let text = client_from(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .get(cp.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let local = stack
        .envoy
        .stat("wasmcustom.rate_limit_filter.local_denied")
        .unwrap_or(0);
    assert!(
        local <= 3,
        "the first denial is the control plane's: {local}"
    );
    let series = [
        (
            r#"rate_limit_requests_total{tier="free",endpoint="/api/v1/request",decision="allowed"}"#,
            4.0,
        ),
        (
            r#"rate_limit_requests_total{tier="free",endpoint="/api/v1/request",decision="throttled"}"#,
            4.0,
        ),
        (
            r#"rate_limit_requests_total{tier="none",endpoint="other",decision="whitelisted"}"#,
            2.0,
        ),
        (
            r#"rate_limit_throttled_total{tier="free",endpoint="/api/v1/request"}"#,
            4.0,
        ),
        (
            r#"rate_limit_policy_throttled_total{tier="free",policy="free-/api/v1/request-60s",decision="throttled"}"#,
            4.0,
        ),
        // Timed are the decisions the control plane made: the filter answered some denials
        // itself from its deny cache (reported, so counted above, but not timed).
        (
            "rate_limit_check_duration_seconds_count",
            10.0 - local as f64,
        ),
        ("rate_limit_circuit_breaker_open", 0.0),
    ];
    for (name, want) in series {
        assert_eq!(
            prometheus_value(&text, name),
            Some(want),
            "{name} in\n{text}"
        );
    }
    assert!(!text.contains("127.0.0.91"), "identities are never labels");

    // The filter's own Envoy stats, in both formats.
    let envoy = &stack.envoy;
    eventually(Duration::from_secs(10), "Envoy stats", async || {
        envoy.stat("wasmcustom.rate_limit_filter.denied") == Some(4)
    })
    .await;
    assert_eq!(envoy.stat("wasmcustom.rate_limit_filter.allowed"), Some(4));
    assert_eq!(
        envoy.stat("wasmcustom.rate_limit_filter.whitelisted"),
        Some(2)
    );
    let prom = admin_get(envoy.admin(), "/stats/prometheus").unwrap_or_default();
    assert!(
        prom.lines().any(|l| l.contains("rate_limit_filter")
            && l.contains("denied")
            && l.trim_end().ends_with(" 4")),
        "{prom}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "SC-007: within 10 s"
    );
}

#[tokio::test]
async fn admin_endpoints_need_the_key_and_are_disabled_without_one() {
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), &config())
        .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .start();
    let url = cp.url("/api/v1/rate-limit/config");
    let c = admin();
    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("no key", c.get(&url)),
        ("wrong key", c.get(&url).header("x-api-key", "nope")),
        (
            "wrong bearer",
            c.get(&url).header("authorization", "Bearer nope"),
        ),
        (
            "key as basic",
            c.get(&url)
                .header("authorization", format!("Basic {ADMIN_KEY}")),
        ),
        (
            "key in query",
            c.get(format!("{url}?api_key={ADMIN_KEY}&x-api-key={ADMIN_KEY}")),
        ),
        (
            "longer key",
            c.get(&url).header("x-api-key", format!("{ADMIN_KEY}x")),
        ),
        ("put without key", c.put(&url).json(&json!({}))),
        (
            "status without key",
            c.get(cp.url("/api/v1/rate-limit/status/ip:1.2.3.4")),
        ),
    ];
    for (name, request) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{name}");
    }
    let (status, _) = admin_json(&cp, "/api/v1/rate-limit/config").await;
    assert_eq!(status, 200);

    let disabled = ControlPlaneBuilder::new(control_plane_bin!(), &config()).start();
    let response = admin()
        .get(disabled.url("/api/v1/rate-limit/config"))
        .header("x-api-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "admin_disabled");
    assert!(
        disabled
            .output
            .text()
            .contains("RATE_LIMIT_ADMIN_API_KEY is not set")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_applies_at_once_keeps_recorded_entries_and_rejects_bad_documents() {
    let stack = StackBuilder::new(control_plane_bin!(), &config_with(100, 99))
        .with_redis()
        .control_plane_env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .start();
    let cp = &stack.control_plane;
    let client = from(92);
    for _ in 0..60 {
        assert_eq!(get(&client, &stack.url("/x"), &[]).await.status, 200);
    }

    let (status, doc) = admin_json(cp, "/api/v1/rate-limit/config").await;
    assert_eq!(status, 200);
    let text = doc.to_string();
    assert!(!text.contains(PARTNER_KEY), "{text}");
    assert!(!text.contains(JWT_SECRET), "{text}");
    let version = doc["version"].as_u64().unwrap();

    // Lower the free tier to 50: the client at 60 is throttled at once.
    let mut lowered = doc["config"].clone();
    lowered["tiers"][0]["requests_per_window"] = json!(50);
    lowered["tiers"][0]["endpoints"] = json!({"/api/v1/request": 49});
    let (status, applied) = put_config(cp, &lowered).await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["version"], version + 1);
    assert_eq!(applied["source"], "api");
    let denied = get(&client, &stack.url("/x"), &[]).await;
    assert_eq!(denied.status, 429);
    assert_eq!(denied.num("x-ratelimit-limit"), 50);
    // Redacted placeholders kept the stored secrets: the partner key still works.
    let keyed = get(&from(93), &stack.url("/x"), &[("x-api-key", PARTNER_KEY)]).await;
    assert_eq!(keyed.status, 200);
    assert!(
        !keyed.has_rate_limit_headers(),
        "still whitelisted by key id"
    );

    // Invalid documents: 400 naming the field, nothing changes.
    let mut bad = lowered.clone();
    bad["tiers"][1]["window_size_seconds"] = json!(0);
    let mut unknown = lowered.clone();
    unknown["tiers"][0]["requests_per_windw"] = json!(1);
    let mut deep = String::new();
    for _ in 0..200 {
        deep.push_str("{\"a\":");
    }
    let cases = [(bad, "tiers[1].window_size_seconds"), (unknown, "tiers[0]")];
    for (body, field) in cases {
        let (status, error) = put_config(cp, &body).await;
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["error"]["code"], "invalid_config");
        assert!(
            error["error"]["field"].as_str().unwrap().starts_with(field),
            "{error}"
        );
    }
    // A placeholder with no stored secret to stand for: 409 naming it.
    let mut placeholder = lowered.clone();
    placeholder["api_keys"][0]["id"] = json!("someone-else");
    let (status, error) = put_config(cp, &placeholder).await;
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["error"]["code"], "unresolved_placeholder");
    assert_eq!(error["error"]["field"], "api_keys[0].key");
    for raw in [deep.into_bytes(), b"not json".to_vec(), vec![0xff, 0xfe]] {
        let response = admin()
            .put(cp.url("/api/v1/rate-limit/config"))
            .header("x-api-key", ADMIN_KEY)
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }
    let huge = vec![b' '; 2 * 1024 * 1024];
    let response = admin()
        .put(cp.url("/api/v1/rate-limit/config"))
        .header("x-api-key", ADMIN_KEY)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let (_, after) = admin_json(cp, "/api/v1/rate-limit/config").await;
    assert_eq!(
        after["version"],
        version + 1,
        "rejected documents changed nothing"
    );
    assert_eq!(
        get(&client, &stack.url("/x"), &[]).await.status,
        429,
        "old config still enforced"
    );

    // YAML is accepted too.
    let yaml = Config::new().tier(Tier::new("free", 1000)).yaml();
    let response = admin()
        .put(cp.url("/api/v1/rate-limit/config"))
        .header("x-api-key", ADMIN_KEY)
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Live at once in the control plane; the filter may answer a request it saw denied in the
    // last second itself until that second is over (its deny cache).
    eventually(
        Duration::from_secs(3),
        "the raised limit admits",
        async || get(&client, &stack.url("/x"), &[]).await.status == 200,
    )
    .await;
}

#[tokio::test]
async fn with_redis_down_the_admin_api_changes_nothing_and_says_so() {
    let mut redis = RedisServer::start();
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), &config())
        .redis(redis.url())
        .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .env("RATE_LIMIT_REDIS_TIMEOUT_MS", "200")
        .start();
    let (_, doc) = admin_json(&cp, "/api/v1/rate-limit/config").await;
    redis.stop();
    let mut changed = doc["config"].clone();
    changed["tiers"][0]["requests_per_window"] = json!(7);
    let (status, error) = put_config(&cp, &changed).await;
    assert_eq!(status, 503, "{error}");
    assert_eq!(error["error"]["code"], "config_store_unavailable");
    let (status, error) = admin_json(&cp, "/api/v1/rate-limit/status/ip:10.1.1.1").await;
    assert_eq!(status, 503, "{error}");
    let (_, after) = admin_json(&cp, "/api/v1/rate-limit/config").await;
    assert_eq!(after["version"], doc["version"]);
    assert_eq!(after["config"]["tiers"][0]["requests_per_window"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_on_one_replica_reaches_the_other() {
    let redis = RedisServer::start();
    let start = || {
        ControlPlaneBuilder::new(control_plane_bin!(), &config())
            .redis(redis.url())
            .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
            .env("RATE_LIMIT_CONFIG_POLL_SECONDS", "2")
            .start()
    };
    let (a, b) = (start(), start());
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(a.addr(), upstream.addr())
        .add_control_plane(b.addr())
        .start();

    let (_, doc) = admin_json(&a, "/api/v1/rate-limit/config").await;
    let mut changed = doc["config"].clone();
    changed["tiers"][0]["requests_per_window"] = json!(2);
    changed["tiers"][0]["endpoints"] = json!({});
    let (status, applied) = put_config(&a, &changed).await;
    assert_eq!(status, 200, "{applied}");
    let version = applied["version"].as_u64().unwrap();

    let took = eventually(
        Duration::from_secs(10),
        "replica B adopting the PUT",
        async || {
            let (_, doc) = admin_json(&b, "/api/v1/rate-limit/config").await;
            doc["version"].as_u64() == Some(version)
        },
    )
    .await;
    eprintln!("replica B adopted version {version} after {took:?}");
    // Through Envoy (round robin over A and B), the new limit holds for everyone.
    let client = from(94);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(&client, &envoy.url("/x"), &[]).await.status);
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429, 429]);
    drop(envoy);
}

#[tokio::test]
async fn the_periodic_check_alone_propagates_a_change() {
    let redis = RedisServer::start();
    let start = || {
        ControlPlaneBuilder::new(control_plane_bin!(), &config())
            .redis(redis.url())
            .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
            .env("RATE_LIMIT_CONFIG_POLL_SECONDS", "1")
            .start()
    };
    let (a, b) = (start(), start());
    // Write a version behind the replicas' backs: no pub/sub message is sent for it.
    let mut conn = redis.connection();
    let (_, doc) = admin_json(&a, "/api/v1/rate-limit/config").await;
    let mut changed = doc["config"].clone();
    changed["api_keys"][0]["key"] = json!(PARTNER_KEY);
    changed["jwt"]["hs256_secret"] = json!(JWT_SECRET);
    changed["tiers"][0]["requests_per_window"] = json!(3);
    changed["tiers"][0]["endpoints"] = json!({});
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg("rl:{config}")
        .arg("document")
        .arg(changed.to_string())
        .arg("sha256")
        .arg("manual")
        .arg("source")
        .arg("api")
        .ignore()
        .cmd("HINCRBY")
        .arg("rl:{config}")
        .arg("version")
        .arg(1)
        .ignore()
        .query(&mut conn)
        .unwrap();
    let want = doc["version"].as_u64().unwrap() + 1;
    for cp in [&a, &b] {
        eventually(
            Duration::from_secs(10),
            "the poll adopting the version",
            async || {
                let (_, doc) = admin_json(cp, "/api/v1/rate-limit/config").await;
                doc["version"].as_u64() == Some(want)
            },
        )
        .await;
    }
}

async fn configured_limit(cp: &ControlPlane) -> Value {
    let (_, doc) = admin_json(cp, "/api/v1/rate-limit/config").await;
    doc["config"]["tiers"][0]["requests_per_window"].clone()
}

/// `limit` per minute, `/api/v1/request` 1.
fn config_with_limit(limit: u64) -> String {
    config_with(limit, 1)
}

#[tokio::test]
async fn file_changes_are_picked_up_in_every_way_they_happen() {
    let dir = tempfile::tempdir().unwrap();
    // The Kubernetes ConfigMap layout: the path goes through a symlinked directory.
    let v1 = dir.path().join("v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("rate_limit_config.yaml"), config_with_limit(5)).unwrap();
    let current = dir.path().join("current");
    std::os::unix::fs::symlink(&v1, &current).unwrap();
    let path = current.join("rate_limit_config.yaml");
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), "")
        .config_file(&path)
        .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        // Long poll: the watcher must do the work.
        .env("RATE_LIMIT_CONFIG_POLL_SECONDS", "3600")
        .start();
    assert_eq!(configured_limit(&cp).await, 5);

    // 1. Written in place.
    std::fs::write(&path, config_with_limit(6)).unwrap();
    eventually(Duration::from_secs(10), "in-place write", async || {
        configured_limit(&cp).await == 6
    })
    .await;

    // 2. A new file renamed onto the path.
    let tmp = v1.join(".tmp-config");
    std::fs::write(&tmp, config_with_limit(7)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    eventually(Duration::from_secs(10), "atomic rename", async || {
        configured_limit(&cp).await == 7
    })
    .await;

    // 3. The directory symlink swapped to a new directory.
    let v2 = dir.path().join("v2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("rate_limit_config.yaml"), config_with_limit(8)).unwrap();
    let next = dir.path().join("current.new");
    std::os::unix::fs::symlink(&v2, &next).unwrap();
    std::fs::rename(&next, &current).unwrap();
    eventually(Duration::from_secs(10), "symlink swap", async || {
        configured_limit(&cp).await == 8
    })
    .await;

    // 4. A broken file is logged and ignored.
    std::fs::write(v2.join("rate_limit_config.yaml"), "tiers: [oops").unwrap();
    eventually(Duration::from_secs(10), "rejection logged", async || {
        cp.output.text().contains("configuration file rejected")
    })
    .await;
    let invalid = config_with_limit(0);
    std::fs::write(v2.join("rate_limit_config.yaml"), invalid).unwrap();
    eventually(Duration::from_secs(10), "second rejection", async || {
        cp.output
            .text()
            .matches("configuration file rejected")
            .count()
            >= 2
    })
    .await;
    assert_eq!(
        configured_limit(&cp).await,
        8,
        "the last good config stays live"
    );
    assert!(cp.output.text().contains("tiers[0].requests_per_window"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_counters_per_identifier() {
    let stack = StackBuilder::new(control_plane_bin!(), &config())
        .with_redis()
        .control_plane_env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .start();
    let cp = &stack.control_plane;
    for _ in 0..3 {
        get(&from(95), &stack.url("/api/v1/request"), &[]).await;
    }
    let (status, report) = admin_json(cp, "/api/v1/rate-limit/status/ip:127.0.0.95").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["identifier"], "ip:127.0.0.95");
    assert_eq!(report["tier"], "free");
    assert_eq!(report["whitelisted"], false);
    let counters = report["counters"].as_array().unwrap();
    assert_eq!(counters.len(), 2);
    assert_eq!(counters[0]["counter"], "tier_budget");
    assert_eq!(counters[0]["count"], 3);
    assert_eq!(counters[0]["remaining"], 2);
    assert!(counters[0]["reset"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(counters[1]["counter"], "/api/v1/request");
    assert_eq!(counters[1]["count"], 3);
    assert_eq!(
        (&counters[0]["policy"], &counters[1]["policy"]),
        (&json!("free-60s"), &json!("free-/api/v1/request-60s"))
    );
    assert_eq!(counters[1]["shadow"], false);
    assert_eq!(counters[1]["window_seconds"], 60);
    assert_eq!(counters[1]["algorithm"], "exact");
    assert!(counters[1].get("precision_ms").is_none(), "{report}");
    // Looking recorded nothing.
    let (_, again) = admin_json(cp, "/api/v1/rate-limit/status/ip:127.0.0.95").await;
    assert_eq!(again["counters"][0]["count"], 3);
    // A registered key without traffic is known; it is whitelisted here.
    let (status, key) = admin_json(cp, "/api/v1/rate-limit/status/key:partner").await;
    assert_eq!(status, 200);
    assert_eq!(
        (key["tier"].as_str(), key["whitelisted"].as_bool()),
        (Some("premium"), Some(true))
    );
    // Judged under another tier on request; an unknown tier is refused.
    let (status, as_premium) =
        admin_json(cp, "/api/v1/rate-limit/status/ip:127.0.0.95?tier=premium").await;
    assert_eq!(status, 200);
    assert_eq!(as_premium["tier"], "premium");
    assert_eq!(as_premium["counters"][0]["limit"], 100);
    assert_eq!(
        as_premium["counters"][0]["count"], 3,
        "the same budget counter"
    );
    let (status, _) = admin_json(cp, "/api/v1/rate-limit/status/ip:127.0.0.95?tier=nope").await;
    assert_eq!(status, 400);
    // Unknown, and malformed.
    let (status, _) = admin_json(cp, "/api/v1/rate-limit/status/ip:10.9.9.9").await;
    assert_eq!(status, 404);
    let (status, _) = admin_json(cp, "/api/v1/rate-limit/status/user:nobody").await;
    assert_eq!(status, 404);
    for bad in ["nope", "ip:not-an-ip", "host:x", "key:"] {
        let (status, _) = admin_json(cp, &format!("/api/v1/rate-limit/status/{bad}")).await;
        assert_eq!(status, 400, "{bad}");
    }
}

/// A window's `algorithm` and `precision_ms` through the admin API: a PUT keeps them as
/// written, GET shows them (and nothing where none was written), a bad one is refused with
/// its field, and the status names every window's algorithm and slot.
#[tokio::test]
async fn window_algorithms_round_trip_through_put_and_get() {
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), &config())
        .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .start();
    let tier = json!({
        "name": "free",
        "algorithm": "slotted",
        "limits": [
            {"limit": 10, "window_seconds": 1, "algorithm": "exact"},
            {"limit": 5000000, "window_seconds": 60, "precision_ms": 500},
            {"limit": 90000000, "window_seconds": 3600}
        ],
        "endpoints": {
            "/api/v1/request": 4,
            "/api/v1/search": {"limits": [{"limit": 3, "window_seconds": 10, "algorithm": "exact"}]}
        }
    });
    let doc = json!({"default_tier": "free", "tiers": [tier], "api_keys": [
        {"id": "acme", "tier": "free", "key": "acme-key-0123456789"}
    ]});
    let (status, put) = put_config(&cp, &doc).await;
    assert_eq!(status, 200, "{put}");
    let (status, got) = admin_json(&cp, "/api/v1/rate-limit/config").await;
    assert_eq!(status, 200, "{got}");
    let shown = &got["config"]["tiers"][0];
    for field in ["name", "algorithm", "limits", "endpoints"] {
        assert_eq!(shown[field], tier[field], "{field}: {got}");
    }
    // GET, then PUT of what it showed: the same document again.
    let mut again = got["config"].clone();
    again["api_keys"][0]["key"] = json!("acme-key-0123456789");
    let (status, put) = put_config(&cp, &again).await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["config"]["tiers"], got["config"]["tiers"]);

    // Every window's algorithm in the status, the slot of the slotted ones (1 h: 60 s).
    let (status, report) = admin_json(&cp, "/api/v1/rate-limit/status/key:acme").await;
    assert_eq!(status, 200, "{report}");
    let seen: Vec<(Value, Value, Value)> = report["counters"]
        .as_array()
        .expect("counters")
        .iter()
        .map(|c| {
            (
                c["policy"].clone(),
                c["algorithm"].clone(),
                c.get("precision_ms").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (json!("free-1s"), json!("exact"), Value::Null),
            (json!("free-60s"), json!("slotted"), json!(500)),
            (json!("free-3600s"), json!("slotted"), json!(60000)),
            (
                json!("free-/api/v1/request-60s"),
                json!("slotted"),
                json!(1000)
            ),
            (
                json!("free-/api/v1/search-10s"),
                json!("exact"),
                Value::Null
            ),
        ],
        "{report}"
    );

    // Refused with the field; the running configuration stays.
    for (window, field, words) in [
        (
            json!({"limit": 100, "window_seconds": 60, "algorithm": "slotted", "precision_ms": 7}),
            "tiers[0].limits[0].precision_ms",
            "60000 / 7 is not a whole number",
        ),
        (
            json!({"limit": 100, "window_seconds": 60, "algorithm": "slotted", "precision_ms": 100}),
            "tiers[0].limits[0].precision_ms",
            "10 to 120 slots, got 600 slots",
        ),
        (
            json!({"limit": 100, "window_seconds": 60, "precision_ms": 1000}),
            "tiers[0].limits[0].precision_ms",
            "this one is exact",
        ),
        (
            json!({"limit": 4294967296u64, "window_seconds": 60, "algorithm": "slotted"}),
            "tiers[0].limits[0].limit",
            "at most 4294967295 per window for a slotted window",
        ),
        (
            json!({"limit": 100, "window_seconds": 60, "algorithm": "sliding"}),
            "tiers[0].limits[0].algorithm",
            "unknown variant `sliding`",
        ),
    ] {
        let bad = json!({"default_tier": "free", "tiers": [{"name": "free", "limits": [window]}]});
        let (status, body) = put_config(&cp, &bad).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{message}");
    }
    let (_, still) = admin_json(&cp, "/api/v1/rate-limit/config").await;
    assert_eq!(still["config"]["tiers"], got["config"]["tiers"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_violations_and_config_changes_but_no_secret() {
    let token_secret = JWT_SECRET;
    let stack = StackBuilder::new(control_plane_bin!(), &config())
        .control_plane_env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .start();
    let cp = &stack.control_plane;
    let raw_key = PARTNER_KEY;
    let bogus_key = "bogus-key-that-must-not-be-logged";
    let token = {
        use jsonwebtoken::{EncodingKey, Header, encode};
        let claims = json!({"sub": "alice", "exp": 4_000_000_000u64});
        let key = EncodingKey::from_secret(token_secret.as_bytes()).unwrap();
        encode(&Header::default(), &claims, &key).unwrap()
    };
    let bearer = format!("Bearer {token}");
    let client = from(96);
    for _ in 0..7 {
        get(
            &client,
            &stack.url("/api/v1/request"),
            &[("x-api-key", bogus_key)],
        )
        .await;
        get(
            &client,
            &stack.url("/api/v1/request"),
            &[("x-api-key", raw_key)],
        )
        .await;
        get(
            &client,
            &stack.url("/api/v1/request"),
            &[("authorization", &bearer)],
        )
        .await;
    }
    let (_, doc) = admin_json(cp, "/api/v1/rate-limit/config").await;
    let (status, _) = put_config(cp, &doc["config"]).await;
    assert_eq!(status, 200);
    let mut changed = doc["config"].clone();
    changed["tiers"][1]["requests_per_window"] = json!(101);
    let (status, _) = put_config(cp, &changed).await;
    assert_eq!(status, 200);

    // The lines that could carry a secret: the denials of the bogus key's client and of the
    // token's user, and the change made with the admin key. Wait for each (the control plane
    // writes its log in the background) before looking for secrets.
    let mut violations = Vec::new();
    for identifier in ["ip:127.0.0.96", "user:alice"] {
        violations.push(log_line(cp, &format!("deny line of {identifier}"), |v| {
            v["event"] == "rate_limit_exceeded" && v["identifier"] == identifier
        }));
    }
    for violation in &violations {
        for field in ["identifier", "endpoint", "tier", "limit", "timestamp"] {
            assert!(
                !violation[field].is_null(),
                "{field} missing in {violation}"
            );
        }
    }
    let change = log_line(cp, "configuration change by the API", |v| {
        v["message"] == "configuration applied" && v["source"] == "api"
    });
    assert!(change["version"].as_u64().is_some(), "{change}");
    // Envoy logs warnings only and writes no line for these requests: its log is included
    // in case one ever does.
    let everything = format!("{}\n{}", cp.output.text(), stack.envoy.log());
    for secret in [raw_key, bogus_key, token.as_str(), token_secret, ADMIN_KEY] {
        assert!(
            !everything.contains(secret),
            "a secret reached the logs: {secret}"
        );
    }
}

/// The first JSON log line of `cp` for which `pred` holds, waiting for it up to 10 s.
fn log_line(cp: &ControlPlane, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let line = cp
        .output
        .expect_line(Duration::from_secs(10), what, |line| {
            serde_json::from_str::<Value>(line).is_ok_and(|v| pred(&v))
        });
    serde_json::from_str(&line).expect("a JSON log line")
}

#[tokio::test]
async fn the_openapi_document_lists_every_endpoint_and_describes_the_metrics() {
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), &config()).start();
    let doc: Value = admin()
        .get(cp.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .expect("OpenAPI parses as JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/internal/v1/decision", "post"),
        ("/internal/v1/decisions", "post"),
        ("/internal/v1/leases", "post"),
        ("/api/v1/rate-limit/config", "get"),
        ("/api/v1/rate-limit/config", "put"),
        ("/api/v1/rate-limit/status/{identifier}", "get"),
        ("/api/v1/rate-limit/metrics", "get"),
        ("/metrics", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/api/v1/openapi.json", "get"),
        ("/{proxied_path}", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let proxied = &paths["/{proxied_path}"]["get"]["responses"];
    assert!(proxied["429"]["headers"]["Retry-After"].is_object());
    assert!(proxied["200"]["headers"]["X-RateLimit-Remaining"].is_object());
    for (status, header) in [
        ("200", "RateLimit-Policy"),
        ("200", "RateLimit"),
        ("429", "RateLimit-Policy"),
        ("429", "RateLimit"),
    ] {
        assert!(
            proxied[status]["headers"][header].is_object(),
            "{header} on {status}"
        );
    }
    // The decision's windows, and every window in the status report.
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [
        ("DecisionResponse", "policies"),
        ("DecisionResponse", "shadow_denied"),
        ("CounterReport", "policy"),
        ("CounterReport", "reset_after"),
        ("PolicyReport", "name"),
        ("CounterStatus", "policy"),
        ("CounterStatus", "shadow"),
        ("CounterStatus", "algorithm"),
        ("CounterStatus", "precision_ms"),
        ("TierConfig", "algorithm"),
        ("WindowConfig", "algorithm"),
        ("WindowConfig", "precision_ms"),
        ("MetricsSnapshot", "shadow_throttled_requests"),
        ("MetricsSnapshot", "by_policy"),
        ("MetricsSnapshot", "deny_cache_hits"),
        ("DecisionResponse", "deny_for_ms"),
        ("BatchDecisionRequest", "local_denials"),
        ("LocalDenials", "count"),
    ] {
        assert!(
            schemas[schema]["properties"][field].is_object(),
            "{schema}.{field} missing"
        );
    }

    // A live metrics response satisfies the documented schema.
    let schema = &doc["components"]["schemas"]["MetricsSnapshot"];
    let live = get_json(&admin(), &cp.url("/api/v1/rate-limit/metrics")).await;
    check_schema(&live, schema, &doc, "metrics");
    let error_schema = &doc["components"]["schemas"]["RateLimitExceeded"];
    assert!(error_schema["properties"]["error"].is_object());
}

/// Checks `value` against the subset of JSON Schema utoipa emits (type, properties,
/// required, additionalProperties, $ref).
fn check_schema(value: &Value, schema: &Value, doc: &Value, at: &str) {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap();
        return check_schema(value, &doc["components"]["schemas"][name], doc, at);
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let matches = |t: &str| match t {
        "object" => value.is_object(),
        "string" => value.is_string(),
        "integer" => value.is_u64() || value.is_i64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "null" => value.is_null(),
        _ => true,
    };
    assert!(
        types.is_empty() || types.iter().any(|t| matches(t)),
        "{at}: {value} is not {types:?}"
    );
    if let Some(required) = schema["required"].as_array() {
        for field in required.iter().filter_map(Value::as_str) {
            assert!(
                value.get(field).is_some(),
                "{at}: required field {field} missing"
            );
        }
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), value.as_object()) {
        for (key, v) in obj {
            match props.get(key) {
                Some(sub) => check_schema(v, sub, doc, &format!("{at}.{key}")),
                None => assert!(
                    schema.get("additionalProperties").is_some(),
                    "{at}: undocumented field {key}"
                ),
            }
        }
    }
    if let (Some(extra), Some(obj)) = (schema.get("additionalProperties"), value.as_object())
        && extra.is_object()
        && schema["properties"].is_null()
    {
        for (key, v) in obj {
            check_schema(v, extra, doc, &format!("{at}.{key}"));
        }
    }
}
