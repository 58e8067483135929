//! Who is asking: turns the filter's evidence into an identifier and a tier.
//!
//! Order: a registered API key, then a verified JWT, then the client IP. Evidence that proves
//! nothing — an unknown key, a forged or expired token, a malformed header — never mints a
//! fresh budget: such requests are counted as their client IP under the default tier.

use std::net::IpAddr;

use crate::config::{CompiledConfig, TierId};

/// Where an identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    ApiKey,
    Jwt,
    ClientIp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `key:<id>`, `user:<sub>` or `ip:<address>` (never a raw key or token).
    pub id: String,
    pub tier: TierId,
    pub source: IdentitySource,
}

/// Longest textual IP the filter can send (an IPv6 address with an IPv4 tail is 45 chars).
const MAX_IP_LEN: usize = 64;

/// Parses the filter's client IP; IPv4-mapped IPv6 addresses become IPv4 so one client has
/// one identifier whichever way it connected.
pub fn parse_client_ip(raw: &str) -> Option<IpAddr> {
    if raw.len() > MAX_IP_LEN {
        return None;
    }
    raw.trim()
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

/// `ip:<address>`; clients without a usable address share `ip:unknown`.
pub fn ip_identifier(ip: Option<IpAddr>) -> String {
    match ip {
        Some(ip) => format!("ip:{ip}"),
        None => "ip:unknown".to_string(),
    }
}

pub fn resolve(
    cfg: &CompiledConfig,
    ip: Option<IpAddr>,
    api_key: Option<&str>,
    authorization: Option<&str>,
) -> Identity {
    if let Some((id, tier)) = api_key.and_then(|k| cfg.lookup_api_key(k.as_bytes())) {
        return Identity {
            id: format!("key:{id}"),
            tier,
            source: IdentitySource::ApiKey,
        };
    }
    let verified = authorization
        .zip(cfg.jwt())
        .and_then(|(a, jwt)| jwt.verify(a));
    if let Some(token) = verified {
        // A tier claim naming no configured tier is ignored, not an error: the token is
        // still a verified user, limited under the default tier.
        let tier = token
            .tier
            .as_deref()
            .and_then(|name| cfg.tier_by_name(name))
            .unwrap_or_else(|| cfg.default_tier());
        return Identity {
            id: format!("user:{}", token.user),
            tier,
            source: IdentitySource::Jwt,
        };
    }
    Identity {
        id: ip_identifier(ip),
        tier: cfg.default_tier(),
        source: IdentitySource::ClientIp,
    }
}

#[cfg(test)]
mod tests {
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
}
