//! Configuration versions between replicas sharing one Redis: a change is never silently
//! lost, and a stale write cannot undo a newer one.
//!
//! - Versions stay ordered when Redis loses its data (`FLUSHALL` here; a restart without
//!   persistence, eviction or a failover to a lagging replica do the same): a PUT after the
//!   loss is applied everywhere, and a replica republishes what Redis lost.
//! - A file content any replica has published is never published again (a replica whose
//!   copy of the file lags cannot undo a newer PUT).
//! - `GET` gives the version as an `ETag`; a `PUT` with `If-Match` gets 412 on a conflict.
//! - A redacted placeholder in a PUT is resolved against the newest stored configuration,
//!   and gets 409 when there is nothing to resolve it against.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use rl_tests::admin::{Admin, eventually};
use rl_tests::fixtures::{Config, Jwt, Tier, sha256_hex};
use rl_tests::{
    ControlPlane, ControlPlaneBuilder, EnvoyBuilder, RedisServer, Upstream, client_from,
    control_plane_bin, get,
};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "config-versions-admin-key-0123";
const PARTNER_KEY: &str = "partner-secret-key-000123";
const ROTATED_PARTNER_KEY: &str = "partner-rotated-key-000456";
const JWT_SECRET: &str = "config-versions-hs256-secret-0123456789";
/// Where the configuration lives in Redis (docs/OPERATIONS.md).
const CONFIG_KEY: &str = "rl:{config}";

/// `free` (the default) with `limit` per minute; `premium` 100 with the partner's key.
fn config(limit: u64) -> Config {
    Config::new()
        .tier(Tier::new("free", limit).window(60))
        .tier(Tier::new("premium", 100).window(60))
        .api_key("partner", "premium", PARTNER_KEY)
        .jwt(Jwt::hs256(JWT_SECRET))
}

fn replica(redis: &RedisServer, yaml: &str, poll_seconds: u64) -> ControlPlane {
    ControlPlaneBuilder::new(control_plane_bin!(), yaml)
        .redis(redis.url())
        .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .env("RATE_LIMIT_CONFIG_POLL_SECONDS", &poll_seconds.to_string())
        .start()
}

fn replica_with_file(redis: &RedisServer, file: &Path, poll_seconds: u64) -> ControlPlane {
    ControlPlaneBuilder::new(control_plane_bin!(), "")
        .config_file(file)
        .redis(redis.url())
        .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .env("RATE_LIMIT_CONFIG_POLL_SECONDS", &poll_seconds.to_string())
        .start()
}

fn from(last: u8) -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

/// The running document with the free tier's limit changed (secrets still redacted).
async fn with_free_limit(admin: &Admin, cp: &ControlPlane, limit: u64) -> Value {
    let mut doc = admin.config(cp).await.body["config"].clone();
    doc["tiers"][0]["requests_per_window"] = json!(limit);
    doc
}

/// (version, free tier's limit) a replica serves.
async fn serving(admin: &Admin, cp: &ControlPlane) -> (u64, Value) {
    let doc = admin.config(cp).await;
    (
        doc.version(),
        doc.body["config"]["tiers"][0]["requests_per_window"].clone(),
    )
}

async fn wait_serving(admin: &Admin, cp: &ControlPlane, name: &str, want: (u64, u64)) {
    let took = eventually(
        Duration::from_secs(30),
        &format!(
            "replica {name} serving version {} (limit {})",
            want.0, want.1
        ),
        async || serving(admin, cp).await == (want.0, json!(want.1)),
    )
    .await;
    eprintln!("replica {name} served version {} after {took:?}", want.0);
}

fn redis_version(redis: &RedisServer) -> Option<u64> {
    redis::cmd("HGET")
        .arg(CONFIG_KEY)
        .arg("version")
        .query(&mut redis.connection())
        .expect("HGET")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_after_redis_lost_its_data_is_applied_on_every_replica() {
    let redis = RedisServer::start();
    let yaml = config(5).yaml();
    let (a, b) = (replica(&redis, &yaml, 1), replica(&redis, &yaml, 1));
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(a.addr(), upstream.addr())
        .add_control_plane(b.addr())
        .start();
    let admin = Admin::new(ADMIN_KEY);

    let first = admin
        .put_config(&a, &with_free_limit(&admin, &a, 20).await, None)
        .await;
    assert_eq!(first.status, 200, "{first:?}");
    wait_serving(&admin, &b, "B", (first.version(), 20)).await;

    let _: () = redis::cmd("FLUSHALL")
        .query(&mut redis.connection())
        .expect("FLUSHALL");
    let second = admin
        .put_config(&b, &with_free_limit(&admin, &b, 3).await, None)
        .await;
    assert_eq!(second.status, 200, "{second:?}");
    assert!(
        second.version() > first.version(),
        "versions stay ordered across the loss: {} after {}",
        second.version(),
        first.version()
    );
    // A 200 means the document is live on the replica that answered.
    assert_eq!(
        serving(&admin, &b).await,
        (second.version(), json!(3)),
        "the replica that answered 200 serves the PUT"
    );
    wait_serving(&admin, &a, "A", (second.version(), 3)).await;

    // Through Envoy (round robin over A and B) the new limit holds.
    let client = from(41);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(&client, &envoy.url("/x"), &[]).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_republishes_the_version_redis_lost() {
    let redis = RedisServer::start();
    let yaml = config(5).yaml();
    let (a, b) = (replica(&redis, &yaml, 1), replica(&redis, &yaml, 1));
    let admin = Admin::new(ADMIN_KEY);
    let put = admin
        .put_config(&a, &with_free_limit(&admin, &a, 7).await, None)
        .await;
    assert_eq!(put.status, 200, "{put:?}");
    wait_serving(&admin, &b, "B", (put.version(), 7)).await;

    let _: () = redis::cmd("FLUSHALL")
        .query(&mut redis.connection())
        .expect("FLUSHALL");
    let took = eventually(
        Duration::from_secs(30),
        "a replica republishing the lost version",
        async || redis_version(&redis) == Some(put.version()),
    )
    .await;
    eprintln!("republished {took:?} after the flush");

    // A replica starting now with the same file finds the PUT, not an empty store: it
    // neither publishes its (older) file nor serves it.
    let c = replica(&redis, &yaml, 1);
    assert_eq!(serving(&admin, &c).await, (put.version(), json!(7)));
    for (name, cp) in [("A", &a), ("B", &b)] {
        assert_eq!(
            serving(&admin, cp).await,
            (put.version(), json!(7)),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_gives_the_version_as_an_etag_and_if_match_guards_a_put() {
    let redis = RedisServer::start();
    let yaml = config(5).yaml();
    let (a, b) = (replica(&redis, &yaml, 1), replica(&redis, &yaml, 1));
    let admin = Admin::new(ADMIN_KEY);

    let read = admin.config(&a).await;
    let v = read.version();
    assert_eq!(read.etag.as_deref(), Some(format!("\"{v}\"").as_str()));
    wait_serving(&admin, &b, "B", (v, 5)).await;

    // Read on A, written on B: the version is the shared one.
    let mut doc = read.body["config"].clone();
    doc["tiers"][0]["requests_per_window"] = json!(6);
    let tag = format!("\"{v}\"");
    let written = admin.put_config(&b, &doc, Some(&tag)).await;
    assert_eq!(written.status, 200, "{written:?}");
    assert_eq!(written.version(), v + 1);
    assert_eq!(
        written.etag.as_deref(),
        Some(format!("\"{}\"", v + 1).as_str())
    );

    // The same stale read again, on the other replica: refused, nothing changes.
    doc["tiers"][0]["requests_per_window"] = json!(7);
    let stale = admin.put_config(&a, &doc, Some(&tag)).await;
    assert_eq!(stale.status, 412, "{stale:?}");
    assert_eq!(stale.code(), "version_conflict");
    assert_eq!(
        stale.etag.as_deref(),
        Some(format!("\"{}\"", v + 1).as_str()),
        "a 412 names the current version"
    );
    for cp in [&a, &b] {
        eventually(Duration::from_secs(10), "both at v+1", async || {
            serving(&admin, cp).await == (v + 1, json!(6))
        })
        .await;
    }

    // A weak tag never matches; a list matches when one of its tags does; `*` matches any
    // version; an unquoted tag is not an entity tag.
    let current = format!("\"{}\"", v + 1);
    let weak = format!("W/{current}");
    let refused = admin.put_config(&a, &doc, Some(&weak)).await;
    assert_eq!(refused.status, 412, "{refused:?}");
    let list = format!("\"{}\", {current}", v + 100);
    let listed = admin.put_config(&a, &doc, Some(&list)).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(listed.version(), v + 2);
    doc["tiers"][0]["requests_per_window"] = json!(8);
    let any = admin.put_config(&a, &doc, Some("*")).await;
    assert_eq!((any.status, any.version()), (200, v + 3), "{any:?}");
    let unquoted = admin.put_config(&a, &doc, Some(&(v + 3).to_string())).await;
    assert_eq!(unquoted.status, 400, "{unquoted:?}");
    assert_eq!(unquoted.code(), "invalid_if_match");

    // Without If-Match a PUT stays unconditional.
    doc["tiers"][0]["requests_per_window"] = json!(9);
    let plain = admin.put_config(&b, &doc, None).await;
    assert_eq!((plain.status, plain.version()), (200, v + 4), "{plain:?}");
}

#[tokio::test]
async fn if_match_guards_a_put_without_redis_too() {
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), &config(5).yaml())
        .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .start();
    let admin = Admin::new(ADMIN_KEY);
    let read = admin.config(&cp).await;
    let tag = read.etag.clone().expect("an ETag");
    let doc = with_free_limit(&admin, &cp, 6).await;
    assert_eq!(admin.put_config(&cp, &doc, Some(&tag)).await.status, 200);
    let stale = admin.put_config(&cp, &doc, Some(&tag)).await;
    assert_eq!((stale.status, stale.code()), (412, "version_conflict"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_any_replica_published_is_never_published_again() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (file_a, file_b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    for file in [&file_a, &file_b] {
        std::fs::write(file, config(5).yaml()).expect("write config");
    }
    let a = replica_with_file(&redis, &file_a, 1);
    let b = replica_with_file(&redis, &file_b, 1);
    let admin = Admin::new(ADMIN_KEY);

    // The new file reaches A first (ConfigMaps reach pods up to a minute apart).
    std::fs::write(&file_a, config(6).yaml()).expect("write config");
    let published = eventually(
        Duration::from_secs(10),
        "A publishing its file",
        async || serving(&admin, &a).await.1 == json!(6),
    )
    .await;
    eprintln!("A published its new file after {published:?}");
    let v_file = admin.config(&a).await.version();
    wait_serving(&admin, &b, "B", (v_file, 6)).await;

    // Then an operator changes the limit through the API.
    let put = admin
        .put_config(&a, &with_free_limit(&admin, &a, 9).await, None)
        .await;
    assert_eq!(put.status, 200, "{put:?}");
    wait_serving(&admin, &b, "B", (put.version(), 9)).await;

    // Now B's copy of the file catches up with what A published before the PUT.
    std::fs::write(&file_b, config(6).yaml()).expect("write config");
    let lines_before = b.output.lines().len();
    eventually(
        Duration::from_secs(15),
        "B reading its file (a log line, or a new version)",
        async || {
            let read = b.output.lines()[lines_before..]
                .iter()
                .any(|l| l.contains("already published"));
            read || serving(&admin, &b).await.0 != put.version()
        },
    )
    .await;
    for (name, cp) in [("A", &a), ("B", &b)] {
        assert_eq!(
            serving(&admin, cp).await,
            (put.version(), json!(9)),
            "replica {name}: a file published before the PUT must not undo it"
        );
    }
}

/// Writes a version into Redis behind the replicas' backs (no notification), as another
/// replica would have written it.
fn store_behind_the_back(redis: &RedisServer, version: u64, doc: &Value) {
    let text = doc.to_string();
    let _: () = redis::cmd("HSET")
        .arg(CONFIG_KEY)
        .arg("version")
        .arg(version)
        .arg("document")
        .arg(&text)
        .arg("sha256")
        .arg(sha256_hex(&text))
        .arg("source")
        .arg("api")
        .arg("updated_at")
        .arg("2030-01-01T00:00:00Z")
        .query(&mut redis.connection())
        .expect("HSET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_is_resolved_against_the_newest_stored_configuration() {
    let redis = RedisServer::start();
    // A long poll: this replica does not notice the version written behind its back.
    let cp = replica(&redis, &config(5).yaml(), 3600);
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(cp.addr(), upstream.addr()).start();
    let admin = Admin::new(ADMIN_KEY);
    let stale = admin.config(&cp).await;

    // Another replica rotated the partner's key (the newest version, in Redis).
    let mut rotated = stale.body["config"].clone();
    rotated["api_keys"][0]["key"] = json!(ROTATED_PARTNER_KEY);
    rotated["jwt"]["hs256_secret"] = json!(JWT_SECRET);
    store_behind_the_back(&redis, stale.version() + 1, &rotated);

    // An admin sends back what this (stale) replica showed, placeholders included.
    let mut doc = stale.body["config"].clone();
    doc["tiers"][0]["requests_per_window"] = json!(4);
    let put = admin.put_config(&cp, &doc, None).await;
    assert_eq!(put.status, 200, "{put:?}");
    assert_eq!(put.version(), stale.version() + 2);

    // The placeholder took the newest secret: the rotated key is the partner's now.
    let tier_of = async |key: &str| {
        get(&from(42), &envoy.url("/x"), &[("x-api-key", key)])
            .await
            .header("x-ratelimit-tier")
            .map(str::to_string)
    };
    assert_eq!(
        tier_of(ROTATED_PARTNER_KEY).await.as_deref(),
        Some("premium")
    );
    assert_eq!(
        tier_of(PARTNER_KEY).await.as_deref(),
        Some("free"),
        "the replaced key is unknown"
    );

    // Nothing to resolve a placeholder against: 409, nothing changes.
    let mut ghost = admin.config(&cp).await.body["config"].clone();
    ghost["api_keys"][0]["id"] = json!("someone-else");
    let refused = admin.put_config(&cp, &ghost, None).await;
    assert_eq!(refused.status, 409, "{refused:?}");
    assert_eq!(refused.code(), "unresolved_placeholder");
    assert_eq!(refused.body["error"]["field"], "api_keys[0].key");
    let mut no_secret = admin.config(&cp).await.body["config"].clone();
    no_secret["jwt"] = json!({"hs256_secret": "***REDACTED***", "user_claim": "sub"});
    no_secret["api_keys"] = json!([]);
    let mut without_jwt = admin.config(&cp).await.body["config"].clone();
    without_jwt.as_object_mut().expect("object").remove("jwt");
    let cleared = admin.put_config(&cp, &without_jwt, None).await;
    assert_eq!(cleared.status, 200, "{cleared:?}");
    let refused = admin.put_config(&cp, &no_secret, None).await;
    assert_eq!(refused.status, 409, "{refused:?}");
    assert_eq!(refused.body["error"]["field"], "jwt.hs256_secret");
    assert_eq!(admin.config(&cp).await.version(), cleared.version());
}

#[tokio::test]
async fn a_file_an_earlier_release_recorded_is_not_published_again() {
    // Earlier releases kept the last published file's digest in the hash (`file_sha256`).
    let redis = RedisServer::start();
    let yaml = config(5).yaml();
    let put =
        serde_json::to_value(control_plane::config::parse_yaml(&config(8).yaml()).expect("valid"))
            .expect("JSON");
    store_behind_the_back(&redis, 4, &put);
    let _: () = redis::cmd("HSET")
        .arg(CONFIG_KEY)
        .arg("file_sha256")
        .arg(sha256_hex(&yaml))
        .query(&mut redis.connection())
        .expect("HSET");
    let cp = replica(&redis, &yaml, 1);
    let admin = Admin::new(ADMIN_KEY);
    assert_eq!(serving(&admin, &cp).await, (4, json!(8)));
}

#[tokio::test]
async fn the_openapi_document_shows_etag_if_match_and_the_new_statuses() {
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), &config(5).yaml()).start();
    let doc: Value = from(43)
        .get(cp.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("JSON");
    let config = &doc["paths"]["/api/v1/rate-limit/config"];
    assert!(config["get"]["responses"]["200"]["headers"]["ETag"].is_object());
    let put = &config["put"];
    let params = put["parameters"].as_array().expect("PUT parameters");
    assert!(
        params
            .iter()
            .any(|p| p["name"] == "If-Match" && p["in"] == "header"),
        "{params:?}"
    );
    for status in ["200", "409", "412"] {
        assert!(put["responses"][status].is_object(), "PUT {status}");
    }
    assert!(put["responses"]["412"]["headers"]["ETag"].is_object());
}
