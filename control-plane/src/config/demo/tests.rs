use super::*;
use crate::config::parse_yaml;

/// The shipped sample, whose secrets are the demo ones.
const SAMPLE: &str = include_str!("../../../../rate_limit_config.yaml");

fn sample() -> RateLimitConfig {
    parse_yaml(SAMPLE).expect("the sample parses")
}

#[test]
fn every_secret_of_the_shipped_sample_is_recognised() {
    let found = demo_secrets(&sample());
    let fields: Vec<&str> = found.iter().map(|s| s.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "api_keys[0].key_sha256",
            "api_keys[1].key_sha256",
            "api_keys[2].key_sha256",
            "jwt.hs256_secret",
        ]
    );
}

/// The raw demo keys the sample's comment hands out (`demo-…-0001`).
fn raw_demo_keys() -> Vec<String> {
    let keys: Vec<String> = SAMPLE
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '.' | ':'))
        .filter(|w| w.starts_with("demo-") && w.ends_with("-0001"))
        .map(str::to_string)
        .collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    keys
}

#[test]
fn a_demo_key_given_in_clear_is_recognised_too() {
    let mut cfg = sample();
    for (entry, raw) in cfg.api_keys.iter_mut().zip(raw_demo_keys()) {
        entry.key_sha256 = None;
        entry.key = Some(raw);
    }
    let found = demo_secrets(&cfg);
    assert_eq!(found.len(), 4, "{found:?}");
    assert_eq!(found[0].field, "api_keys[0].key");
}

#[test]
fn other_secrets_are_not_flagged() {
    let mut cfg = sample();
    cfg.api_keys.truncate(1);
    cfg.api_keys[0].key_sha256 = Some("ab".repeat(32));
    if let Some(jwt) = &mut cfg.jwt {
        jwt.hs256_secret = Some("an-operator-chosen-secret-0123456789abcdef".into());
    }
    assert!(demo_secrets(&cfg).is_empty());
    // A malformed entry is not a key at all.
    cfg.api_keys[0].key_sha256 = Some("not hex".into());
    assert!(demo_secrets(&cfg).is_empty());
}

#[test]
fn the_demo_admin_key_is_recognised_by_its_digest() {
    let script = include_str!("../../../../scripts/run-stack.sh");
    let start = script
        .find("${RATE_LIMIT_ADMIN_API_KEY:-")
        .expect("run-stack.sh sets a default admin key")
        + "${RATE_LIMIT_ADMIN_API_KEY:-".len();
    let end = start + script[start..].find('}').expect("closing brace");
    let digest: [u8; 32] = Sha256::digest(&script.as_bytes()[start..end]).into();
    let found = demo_admin_key(&digest).expect("the demo admin key");
    assert_eq!(found.field, "RATE_LIMIT_ADMIN_API_KEY");
    let other: [u8; 32] = Sha256::digest(b"an operator's own admin key").into();
    assert!(demo_admin_key(&other).is_none());
}

#[test]
fn messages_name_the_field_and_strict_mode_never_the_secret() {
    let secret = sample().jwt.and_then(|j| j.hs256_secret).expect("secret");
    for found in demo_secrets(&sample()) {
        let warning = found.warning();
        let refusal = found.refusal().to_string();
        for text in [&warning, &refusal] {
            assert!(text.contains(&found.field), "{text}");
            assert!(text.contains(STRICT_VARIABLE), "{text}");
            assert!(!text.contains(&secret), "{text}");
        }
        assert_eq!(found.refusal().path(), found.field);
    }
}
