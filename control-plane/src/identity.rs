//! Who is asking: turns the filter's evidence into an identifier and a tier.
//!
//! Order: a registered API key, then (with the tiers issue) a verified JWT, then the client
//! IP. Evidence that proves nothing — an unknown key, a malformed header — never mints a
//! fresh budget: such requests are counted as their client IP under the default tier.

use std::net::IpAddr;

use crate::config::{CompiledConfig, TierId};

/// Where an identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    ApiKey,
    ClientIp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `key:<id>` or `ip:<address>` (never a raw key).
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

pub fn resolve(cfg: &CompiledConfig, ip: Option<IpAddr>, api_key: Option<&str>) -> Identity {
    if let Some((id, tier)) = api_key.and_then(|k| cfg.lookup_api_key(k.as_bytes())) {
        return Identity {
            id: format!("key:{id}"),
            tier,
            source: IdentitySource::ApiKey,
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
"#;
        CompiledConfig::compile(parse_yaml(yaml).unwrap()).unwrap()
    }

    #[test]
    fn registered_key_wins_with_its_tier() {
        let cfg = config();
        let ip = parse_client_ip("10.0.0.1");
        let id = resolve(&cfg, ip, Some("alice-secret-key-0001"));
        assert_eq!(id.id, "key:alice");
        assert_eq!(cfg.tier(id.tier).name, "premium");
        assert_eq!(id.source, IdentitySource::ApiKey);
    }

    #[test]
    fn unknown_key_is_counted_as_the_ip_under_the_default_tier() {
        let cfg = config();
        let ip = parse_client_ip("10.0.0.1");
        for key in [Some("guess"), Some(""), None] {
            let id = resolve(&cfg, ip, key);
            assert_eq!(id.id, "ip:10.0.0.1");
            assert_eq!(id.tier, cfg.default_tier());
        }
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
