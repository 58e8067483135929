use super::*;
use crate::config::parse_yaml;

const DOC: &str = r#"
default_tier: free
tiers:
  - name: free
    requests_per_window: 10
api_keys:
  - id: a
    tier: free
    key: "clear-secret-key-000001"
  - id: b
    tier: free
    key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
jwt:
  hs256_secret: "0123456789abcdef0123456789abcdef"
"#;

#[test]
fn redaction_hides_secrets_and_keeps_the_rest() {
    let cfg = parse_yaml(DOC).unwrap();
    let shown = redacted(&cfg);
    let text = serde_json::to_string(&shown).unwrap();
    assert!(!text.contains("clear-secret-key-000001"));
    assert!(!text.contains("0123456789abcdef0123456789abcdef"));
    assert!(text.contains("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"));
    assert_eq!(shown.api_keys[0].key.as_deref(), Some(REDACTED));
}

#[test]
fn placeholders_sent_back_keep_the_stored_secrets() {
    let cfg = parse_yaml(DOC).unwrap();
    let mut incoming = redacted(&cfg);
    restore_secrets(&mut incoming, &cfg).unwrap();
    assert_eq!(incoming, cfg);
}

#[test]
fn a_placeholder_without_a_stored_secret_is_an_error() {
    let cfg = parse_yaml(DOC).unwrap();
    let mut incoming = redacted(&cfg);
    incoming.api_keys[0].id = "new".into();
    let err = restore_secrets(&mut incoming, &cfg).unwrap_err();
    assert_eq!(err.path(), "api_keys[0].key");
    let mut incoming = redacted(&cfg);
    let mut without_jwt = cfg.clone();
    without_jwt.jwt = None;
    let err = restore_secrets(&mut incoming, &without_jwt).unwrap_err();
    assert_eq!(err.path(), "jwt.hs256_secret");
}
