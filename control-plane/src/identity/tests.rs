use super::*;
use crate::config::parse_yaml;

fn config() -> CompiledConfig {
    let yaml = r#"
default_tier: free
tiers:
  - name: free
    requests_per_window: 10
  - name: premium
    requests_per_window: 100
api_keys:
  - id: alice
    tier: premium
    key: "alice-secret-key-0001"
jwt:
  hs256_secret: "test-secret-test-secret-test-secret"
  tier_claim: plan
"#;
    CompiledConfig::compile(parse_yaml(yaml).unwrap()).unwrap()
}

#[test]
fn registered_key_wins_with_its_tier() {
    let cfg = config();
    let ip = parse_client_ip("10.0.0.1");
    let id = resolve(
        &cfg,
        ip,
        Some("alice-secret-key-0001"),
        Some(&token("bob", "free")),
    );
    assert_eq!(id.id, "key:alice");
    assert_eq!(cfg.tier(id.tier).name, "premium");
    assert_eq!(id.source, IdentitySource::ApiKey);
}

#[test]
fn unknown_key_is_counted_as_the_ip_under_the_default_tier() {
    let cfg = config();
    let ip = parse_client_ip("10.0.0.1");
    for key in [Some("guess"), Some(""), None] {
        let id = resolve(&cfg, ip, key, None);
        assert_eq!(id.id, "ip:10.0.0.1");
        assert_eq!(id.tier, cfg.default_tier());
    }
}

fn token(sub: &str, plan: &str) -> String {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = serde_json::json!({"sub": sub, "plan": plan, "exp": exp});
    let key = EncodingKey::from_secret(b"test-secret-test-secret-test-secret").unwrap();
    format!(
        "Bearer {}",
        encode(&Header::default(), &claims, &key).unwrap()
    )
}

#[test]
fn a_verified_token_names_the_user_and_its_existing_tier() {
    let cfg = config();
    let ip = parse_client_ip("10.0.0.1");
    let id = resolve(&cfg, ip, None, Some(&token("bob", "premium")));
    assert_eq!(id.id, "user:bob");
    assert_eq!(cfg.tier(id.tier).name, "premium");
    assert_eq!(id.source, IdentitySource::Jwt);
    // A tier that does not exist: still the user, under the default tier.
    let id = resolve(&cfg, ip, None, Some(&token("bob", "platinum")));
    assert_eq!((id.id.as_str(), id.tier), ("user:bob", cfg.default_tier()));
    // An unknown key does not hide a valid token.
    let id = resolve(&cfg, ip, Some("guess"), Some(&token("bob", "premium")));
    assert_eq!(id.id, "user:bob");
}

#[test]
fn a_bad_token_is_counted_as_the_ip() {
    let cfg = config();
    let ip = parse_client_ip("10.0.0.1");
    let mut forged = token("bob", "premium");
    forged.push('x');
    let id = resolve(&cfg, ip, None, Some(&forged));
    assert_eq!(
        (id.id.as_str(), id.tier),
        ("ip:10.0.0.1", cfg.default_tier())
    );
}

#[test]
fn client_ips_are_canonical_and_bounded() {
    assert_eq!(
        ip_identifier(parse_client_ip("::ffff:1.2.3.4")),
        "ip:1.2.3.4"
    );
    assert_eq!(
        ip_identifier(parse_client_ip("2001:DB8::1")),
        "ip:2001:db8::1"
    );
    assert_eq!(ip_identifier(parse_client_ip("")), "ip:unknown");
    assert_eq!(ip_identifier(parse_client_ip("1.2.3.4:80")), "ip:unknown");
    assert_eq!(
        ip_identifier(parse_client_ip(&"1".repeat(100))),
        "ip:unknown"
    );
}
