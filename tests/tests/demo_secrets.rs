//! The demo secrets this repository ships (the sample configuration's HS256 secret and API
//! keys, the admin key of scripts/run-stack.sh and docker-compose.yml) are public: the
//! control plane names each one loudly when it runs with it, and `RATE_LIMIT_STRICT=1`
//! (or `--strict`) refuses them, at start, in a PUT and in a file reload.
//!
//! The demo values are read from the shipped files, so the test follows them if they change.

use std::path::Path;
use std::time::Duration;

use control_plane::config::{RateLimitConfig, parse_yaml};
use rl_tests::admin::{Admin, eventually};
use rl_tests::fixtures::{Config, Jwt, Tier, sample_config, sample_config_path};
use rl_tests::{ControlPlane, ControlPlaneBuilder, RedisServer, control_plane_bin, repo_root};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "demo-secrets-test-admin-key-0123";
const OWN_SECRET: &str = "an-operator-chosen-hs256-secret-0123456789";

fn shipped(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The default of `RATE_LIMIT_ADMIN_API_KEY` in a shipped script or compose file
/// (`${RATE_LIMIT_ADMIN_API_KEY:-<default>}`).
fn admin_key_default(rel: &str) -> String {
    let text = shipped(rel);
    let start = text
        .find("${RATE_LIMIT_ADMIN_API_KEY:-")
        .unwrap_or_else(|| panic!("{rel} sets no default admin key"))
        + "${RATE_LIMIT_ADMIN_API_KEY:-".len();
    let end = text[start..].find('}').expect("closing brace") + start;
    text[start..end].to_string()
}

/// The demo admin key, the same in the local stack and the compose demo.
fn demo_admin_key() -> String {
    let script = admin_key_default("scripts/run-stack.sh");
    assert_eq!(
        script,
        admin_key_default("docker-compose.yml"),
        "one demo admin key"
    );
    script
}

fn sample() -> RateLimitConfig {
    parse_yaml(&sample_config()).expect("the sample parses")
}

fn demo_hs256_secret() -> String {
    sample()
        .jwt
        .and_then(|j| j.hs256_secret)
        .expect("the sample ships an HS256 secret")
}

/// A configuration without any demo material.
fn clean() -> Config {
    Config::new()
        .tier(Tier::new("free", 100))
        .tier(Tier::new("premium", 1000))
        .jwt(Jwt::hs256(OWN_SECRET))
}

/// The JSON log lines of a demo-secret warning, by field.
fn demo_warnings(output: &str) -> Vec<Value> {
    output
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "demo_secret")
        .collect()
}

fn warned_fields(output: &str) -> Vec<String> {
    demo_warnings(output)
        .iter()
        .filter_map(|v| v["field"].as_str().map(str::to_string))
        .collect()
}

/// The fields the sample's demo material sits in.
fn sample_demo_fields() -> Vec<String> {
    let sample = sample();
    let mut fields = vec!["jwt.hs256_secret".to_string()];
    for (i, key) in sample.api_keys.iter().enumerate() {
        let field = if key.key.is_some() {
            "key"
        } else {
            "key_sha256"
        };
        fields.push(format!("api_keys[{i}].{field}"));
    }
    assert!(fields.len() >= 4, "the sample ships demo API keys");
    fields
}

#[test]
fn the_shipped_demo_secrets_are_named_loudly_at_start() {
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), "")
        .config_file(&sample_config_path())
        .env("RATE_LIMIT_ADMIN_API_KEY", &demo_admin_key())
        .start();
    let mut want = sample_demo_fields();
    want.push("RATE_LIMIT_ADMIN_API_KEY".to_string());
    for field in &want {
        cp.output.expect_line(
            Duration::from_secs(10),
            &format!("a demo-secret warning for {field}"),
            |l| {
                serde_json::from_str::<Value>(l)
                    .is_ok_and(|v| v["event"] == "demo_secret" && v["field"] == field.as_str())
            },
        );
    }
    let text = cp.output.text();
    for warning in demo_warnings(&text) {
        assert_eq!(warning["level"], "WARN", "{warning}");
        let message = warning["message"].as_str().unwrap_or_default();
        assert!(message.contains("RATE_LIMIT_STRICT"), "{warning}");
    }
    // The warning names the field, never the secret.
    assert!(!text.contains(&demo_hs256_secret()));
    assert!(!text.contains(&demo_admin_key()));
}

#[tokio::test]
async fn a_change_that_brings_a_demo_secret_in_is_named() {
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), &clean().yaml())
        .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .start();
    let admin = Admin::new(ADMIN_KEY);
    assert_eq!(admin.config(&cp).await.status, 200);
    assert!(warned_fields(&cp.output.text()).is_empty());

    let mut doc = admin.config(&cp).await.body["config"].clone();
    doc["jwt"]["hs256_secret"] = json!(demo_hs256_secret());
    let put = admin.put_config(&cp, &doc, None).await;
    assert_eq!(put.status, 200, "{put:?}");
    cp.output.expect_line(
        Duration::from_secs(10),
        "a demo-secret warning after the PUT",
        |l| l.contains("demo_secret") && l.contains("jwt.hs256_secret"),
    );
}

fn spawn_strict(config: &Path, admin_key: &str, via_flag: bool) -> (Option<i32>, String) {
    let path = config.to_string_lossy().to_string();
    let mut args = vec!["--config", path.as_str(), "--listen", "127.0.0.1:0"];
    let mut env = vec![("RATE_LIMIT_ADMIN_API_KEY", admin_key)];
    if via_flag {
        args.push("--strict");
    } else {
        env.push(("RATE_LIMIT_STRICT", "1"));
    }
    let mut proc = ControlPlane::spawn_raw(control_plane_bin!(), &args, &env);
    let code = proc.wait_exit(Duration::from_secs(20));
    if code.is_none() {
        proc.kill9();
    }
    (code, proc.output.text())
}

#[test]
fn strict_mode_refuses_to_start_with_a_demo_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clean_file = dir.path().join("clean.yaml");
    std::fs::write(&clean_file, clean().yaml()).expect("write config");

    for via_flag in [false, true] {
        // The sample configuration.
        let (code, text) = spawn_strict(&sample_config_path(), ADMIN_KEY, via_flag);
        assert_eq!(code, Some(1), "strict start with the sample:\n{text}");
        assert!(text.contains("jwt.hs256_secret"), "{text}");
        assert!(text.contains("RATE_LIMIT_STRICT"), "{text}");
        // A clean file, with the demo admin key.
        let (code, text) = spawn_strict(&clean_file, &demo_admin_key(), via_flag);
        assert_eq!(
            code,
            Some(1),
            "strict start with the demo admin key:\n{text}"
        );
        assert!(text.contains("RATE_LIMIT_ADMIN_API_KEY"), "{text}");
    }

    // Each demo API key alone is refused too.
    let sample = sample();
    for (i, key) in sample.api_keys.iter().enumerate() {
        let digest = key
            .key_sha256
            .as_deref()
            .expect("the sample stores digests");
        let one = clean().api_key_digest("demo", "premium", digest);
        let file = dir.path().join(format!("key{i}.yaml"));
        std::fs::write(&file, one.yaml()).expect("write config");
        let (code, text) = spawn_strict(&file, ADMIN_KEY, false);
        assert_eq!(code, Some(1), "demo key {}:\n{text}", key.id);
        assert!(text.contains("api_keys[0].key_sha256"), "{text}");
    }

    // Without demo material strict mode starts.
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), &clean().yaml())
        .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .env("RATE_LIMIT_STRICT", "1")
        .start();
    assert!(cp.pid().is_some());
}

#[tokio::test]
async fn strict_mode_refuses_a_demo_secret_in_a_put_and_in_the_file() {
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), &clean().yaml())
        .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .env("RATE_LIMIT_STRICT", "1")
        .start();
    let admin = Admin::new(ADMIN_KEY);
    let before = admin.config(&cp).await;

    let mut doc = before.body["config"].clone();
    doc["jwt"]["hs256_secret"] = json!(demo_hs256_secret());
    let put = admin.put_config(&cp, &doc, None).await;
    assert_eq!(put.status, 400, "{put:?}");
    assert_eq!(put.code(), "invalid_config");
    assert_eq!(put.body["error"]["field"], "jwt.hs256_secret");
    assert!(
        put.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("RATE_LIMIT_STRICT")),
        "{put:?}"
    );

    // The sample (demo keys and secret) written over the file: rejected, logged.
    std::fs::write(cp.config_path(), sample_config()).expect("write config");
    let line = cp
        .output
        .expect_line(Duration::from_secs(15), "the file rejected", |l| {
            l.contains("configuration file rejected")
        });
    assert!(line.contains("RATE_LIMIT_STRICT"), "{line}");
    eventually(Duration::from_secs(5), "config unchanged", async || {
        admin.config(&cp).await.version() == before.version()
    })
    .await;
    assert_eq!(
        admin.config(&cp).await.body["config"],
        before.body["config"],
        "the running configuration is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_replica_does_not_adopt_a_demo_secret_from_redis() {
    let redis = RedisServer::start();
    let start = |strict: bool| {
        let mut cp = ControlPlaneBuilder::new(control_plane_bin!(), &clean().yaml())
            .redis(redis.url())
            .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY);
        if strict {
            cp = cp.env("RATE_LIMIT_STRICT", "1");
        }
        cp.start()
    };
    let (lax, strict) = (start(false), start(true));
    let admin = Admin::new(ADMIN_KEY);
    let before = admin.config(&strict).await;

    let mut doc = admin.config(&lax).await.body["config"].clone();
    doc["jwt"]["hs256_secret"] = json!(demo_hs256_secret());
    let put = admin.put_config(&lax, &doc, None).await;
    assert_eq!(put.status, 200, "{put:?}");
    let line = strict.output.expect_line(
        Duration::from_secs(15),
        "the stored version rejected",
        |l| l.contains("stored configuration rejected"),
    );
    assert!(
        line.contains("jwt.hs256_secret") && line.contains("RATE_LIMIT_STRICT"),
        "{line}"
    );
    let after = admin.config(&strict).await;
    assert_eq!(
        (after.version(), &after.body["config"]),
        (before.version(), &before.body["config"]),
        "the strict replica keeps its configuration"
    );
}
