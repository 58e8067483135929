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
    let id = |raw: &str| ip_identifier(parse_client_ip(raw), 128);
    assert_eq!(id("::ffff:1.2.3.4"), "ip:1.2.3.4");
    assert_eq!(id("2001:DB8::1"), "ip:2001:db8::1");
    assert_eq!(id(""), "ip:unknown");
    assert_eq!(id("1.2.3.4:80"), "ip:unknown");
    assert_eq!(id(&"1".repeat(100)), "ip:unknown");
}

#[test]
fn ipv6_clients_are_their_network() {
    let id = |raw: &str, bits| ip_identifier(parse_client_ip(raw), bits);
    for raw in [
        "2001:db8:1:2::1",
        "2001:DB8:1:2:ffff:ffff:ffff:ffff",
        "2001:db8:1:2:aaaa::",
    ] {
        assert_eq!(id(raw, 64), "ip:2001:db8:1:2::/64", "{raw}");
    }
    assert_eq!(id("2001:db8:1:3::1", 64), "ip:2001:db8:1:3::/64");
    assert_eq!(id("2001:db8:1:2::1", 48), "ip:2001:db8:1::/48");
    assert_eq!(id("2001:db8:1:2::1", 56), "ip:2001:db8:1::/56");
    assert_eq!(id("2001:db8:1:2ff::1", 56), "ip:2001:db8:1:200::/56");
    assert_eq!(id("2001:db8:1:2::1", 32), "ip:2001:db8::/32");
    assert_eq!(id("2001:db8:1:2::1", 127), "ip:2001:db8:1:2::/127");
    // The edges of the mask: no bits kept, one bit kept.
    assert_eq!(id("2001:db8:1:2::1", 0), "ip:::/0");
    assert_eq!(id("8001:db8::1", 1), "ip:8000::/1");
    assert_eq!(id("2001:db8:1:2::1", 128), "ip:2001:db8:1:2::1");
    // IPv4, also written IPv4-mapped, is never grouped.
    assert_eq!(id("198.51.100.7", 64), "ip:198.51.100.7");
    assert_eq!(id("::ffff:198.51.100.7", 64), "ip:198.51.100.7");
    assert_eq!(id("::1", 64), "ip:::/64");
    // Out of range (validation prevents it): each address on its own.
    assert_eq!(id("2001:db8::1", 200), "ip:2001:db8::1");
}

#[test]
fn resolve_groups_by_the_configured_length() {
    let mut doc = config().source().clone();
    let ip = parse_client_ip("2001:db8:aa:bb:1::9");
    assert_eq!(
        resolve(&config(), ip, None, None).id,
        "ip:2001:db8:aa:bb::/64",
        "default /64"
    );
    doc.ipv6_prefix_length = 48;
    let cfg = CompiledConfig::compile(doc).unwrap();
    let who = resolve(&cfg, ip, None, None);
    assert_eq!(who.id, "ip:2001:db8:aa::/48");
    assert_eq!(who.source, IdentitySource::ClientIp);
    assert_eq!(who.tier, cfg.default_tier());
}
