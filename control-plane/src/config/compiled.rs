//! The validated configuration in the shape the hot path wants: tiers by index, rule sets,
//! hashed API keys and whitelist sets. Built once per config version, then shared read-only.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ConfigError;
use super::schema::RateLimitConfig;
use super::validate::key_digest;
use super::whitelist::{self, Whitelist};
use crate::jwt::JwtVerifier;
use crate::rules::RuleSet;

/// Index of a tier in [`CompiledConfig::tiers`] (config order). Only meaningful for the
/// `CompiledConfig` that produced it.
pub type TierId = usize;

#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    /// The identity's budget across all endpoints; `None` = unlimited.
    pub budget: Option<u64>,
    pub window: Duration,
    pub rules: RuleSet,
    pub description: Option<String>,
}

struct ApiKeyEntry {
    digest: [u8; 32],
    id: String,
    tier: TierId,
}

/// Immutable, validated configuration with cheap lookups.
pub struct CompiledConfig {
    source: RateLimitConfig,
    tiers: Vec<Tier>,
    tier_ids: HashMap<String, TierId>,
    default_tier: TierId,
    api_keys: HashMap<[u8; 32], ApiKeyEntry>,
    whitelist: Whitelist,
    jwt: Option<JwtVerifier>,
}

impl CompiledConfig {
    /// Validates `cfg` (see [`RateLimitConfig::validate`]) and builds the lookup structures.
    pub fn compile(cfg: RateLimitConfig) -> Result<CompiledConfig, ConfigError> {
        cfg.validate()?;

        let tiers: Vec<Tier> = cfg
            .tiers
            .iter()
            .map(|t| Tier {
                name: t.name.clone(),
                budget: if t.unlimited {
                    None
                } else {
                    t.requests_per_window
                },
                window: Duration::from_secs(t.window_size_seconds),
                rules: RuleSet::new(t.endpoints.iter().map(|(p, &l)| (p.clone(), l))),
                description: t.description.clone(),
            })
            .collect();
        let tier_ids: HashMap<String, TierId> = tiers
            .iter()
            .enumerate()
            .map(|(id, t)| (t.name.clone(), id))
            .collect();
        let tier_id = |path: String, name: &str| {
            tier_ids
                .get(name)
                .copied()
                .ok_or_else(|| ConfigError::invalid(path, format!("unknown tier {name:?}")))
        };
        let default_tier = tier_id("default_tier".into(), &cfg.default_tier)?;

        let mut api_keys = HashMap::with_capacity(cfg.api_keys.len());
        for (i, key) in cfg.api_keys.iter().enumerate() {
            let at = format!("api_keys[{i}]");
            let (_, digest) = key_digest(&at, key)?;
            let tier = tier_id(format!("{at}.tier"), &key.tier)?;
            api_keys.insert(
                digest,
                ApiKeyEntry {
                    digest,
                    id: key.id.clone(),
                    tier,
                },
            );
        }

        let mut list = Whitelist::default();
        for (i, entry) in cfg.whitelist.iter().enumerate() {
            let entry = whitelist::parse_entry(entry)
                .map_err(|message| ConfigError::invalid(format!("whitelist[{i}]"), message))?;
            list.insert(entry);
        }

        let jwt = match &cfg.jwt {
            Some(jwt) => Some(
                JwtVerifier::new(jwt)
                    .map_err(|(path, message)| ConfigError::invalid(path, message))?,
            ),
            None => None,
        };

        Ok(CompiledConfig {
            source: cfg,
            tiers,
            tier_ids,
            default_tier,
            api_keys,
            whitelist: list,
            jwt,
        })
    }

    /// Tier of the registered key with this id (for the status endpoint).
    pub fn tier_of_key_id(&self, id: &str) -> Option<TierId> {
        self.api_keys
            .values()
            .find(|entry| entry.id == id)
            .map(|entry| entry.tier)
    }

    /// The JWT verifier, when the configuration has a `jwt` section.
    pub fn jwt(&self) -> Option<&JwtVerifier> {
        self.jwt.as_ref()
    }

    /// The document this was compiled from (secrets included: redact before showing it).
    pub fn source(&self) -> &RateLimitConfig {
        &self.source
    }

    pub fn enabled(&self) -> bool {
        self.source.enabled
    }

    pub fn fail_open(&self) -> bool {
        self.source.fail_open
    }

    pub fn default_tier(&self) -> TierId {
        self.default_tier
    }

    /// Panics if `id` did not come from this configuration.
    pub fn tier(&self, id: TierId) -> &Tier {
        &self.tiers[id]
    }

    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    pub fn tier_by_name(&self, name: &str) -> Option<TierId> {
        self.tier_ids.get(name).copied()
    }

    /// Registered API key lookup: returns the key's id and tier.
    ///
    /// The presented key is hashed first, so the map is keyed by digests and never holds a
    /// raw key; timing of the map lookup depends only on the digest, which reveals nothing
    /// usable about the key. The final constant-time comparison keeps the match decision
    /// itself free of early exits.
    pub fn lookup_api_key(&self, presented: &[u8]) -> Option<(&str, TierId)> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let entry = self.api_keys.get(&digest)?;
        if bool::from(entry.digest.ct_eq(&digest)) {
            Some((entry.id.as_str(), entry.tier))
        } else {
            None
        }
    }

    /// True when the client IP is in a whitelisted IP or CIDR range (`ip:<addr>` entries count
    /// as IPs) or the identity (`key:<id>`, `user:<sub>`, `ip:<addr>`) is whitelisted.
    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) match their IPv4 entries.
    pub fn is_whitelisted(&self, ip: Option<IpAddr>, identity: &str) -> bool {
        ip.is_some_and(|ip| self.whitelist.contains_ip(ip))
            || self.whitelist.contains_identity(identity)
    }
}

/// Written by hand so that debug output never shows API keys or the JWT secret.
impl fmt::Debug for CompiledConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledConfig")
            .field("enabled", &self.source.enabled)
            .field("fail_open", &self.source.fail_open)
            .field("default_tier", &self.default_tier)
            .field("tiers", &self.tiers)
            .field("api_keys", &self.api_keys.len())
            .field("whitelist", &self.whitelist)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_yaml;
    use crate::config::test_support::SAMPLE;

    fn sample() -> CompiledConfig {
        CompiledConfig::compile(parse_yaml(SAMPLE).unwrap()).unwrap()
    }

    #[test]
    fn compiled_config_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<CompiledConfig>();
    }

    #[test]
    fn sample_compiles_into_tiers() {
        let c = sample();
        assert!(c.enabled());
        assert!(c.fail_open());
        assert_eq!(c.tiers().len(), 4);
        assert_eq!(c.tier(c.default_tier()).name, "free");
        let free = c.tier(c.default_tier());
        assert_eq!(free.budget, Some(100));
        assert_eq!(free.window, Duration::from_secs(60));
        assert_eq!(
            free.description.as_deref(),
            Some("Unauthenticated and free users")
        );
        assert_eq!(
            free.rules.longest_match("/api/v1/admin/users"),
            Some(("/api/v1/admin/*", 10))
        );
        assert_eq!(free.rules.longest_match("/api/v1/other"), None);
        let unlimited = c.tier_by_name("unlimited").unwrap();
        assert_eq!(c.tier(unlimited).budget, None);
        assert_eq!(
            c.tier(unlimited).rules.longest_match("/api/v1/expensive"),
            Some(("/api/v1/expensive", 5000))
        );
        assert_eq!(
            c.tier(c.tier_by_name("enterprise").unwrap())
                .window
                .as_secs(),
            3600
        );
        assert_eq!(c.tier_by_name("gold"), None);
        assert_eq!(c.source().default_tier, "free");
    }

    #[test]
    fn compile_validates_first() {
        let mut cfg = parse_yaml(SAMPLE).unwrap();
        cfg.tiers[1].requests_per_window = Some(0);
        let e = CompiledConfig::compile(cfg).unwrap_err();
        assert_eq!(e.path(), "tiers[1].requests_per_window");
    }

    #[test]
    fn api_key_lookup_by_raw_key() {
        let c = sample();
        let (id, tier) = c.lookup_api_key(b"ops-monitor-key-0123456789").unwrap();
        assert_eq!(id, "ops-monitor");
        assert_eq!(c.tier(tier).name, "unlimited");
    }

    #[test]
    fn api_key_lookup_by_digest_upper_and_lower_hex() {
        // The sample's key_sha256 is SHA-256("test") in upper-case hex.
        let c = sample();
        let (id, tier) = c.lookup_api_key(b"test").unwrap();
        assert_eq!(id, "acme-prod");
        assert_eq!(c.tier(tier).name, "premium");

        let mut cfg = parse_yaml(SAMPLE).unwrap();
        cfg.api_keys[1].key_sha256 = Some(hex::encode(Sha256::digest(b"test")));
        let c = CompiledConfig::compile(cfg).unwrap();
        assert_eq!(
            c.lookup_api_key(b"test").map(|(id, _)| id),
            Some("acme-prod")
        );
    }

    #[test]
    fn unknown_api_keys_are_not_found() {
        let c = sample();
        assert_eq!(c.lookup_api_key(b"nope"), None);
        assert_eq!(c.lookup_api_key(b""), None);
        assert_eq!(c.lookup_api_key(b"ops-monitor-key-012345678"), None);
        assert_eq!(c.lookup_api_key(b"ops-monitor-key-0123456789 "), None);
        // The id is not the key.
        assert_eq!(c.lookup_api_key(b"ops-monitor"), None);
    }

    #[test]
    fn whitelist_by_ip() {
        let c = sample();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(c.is_whitelisted(ip("127.0.0.1"), "ip:127.0.0.1"));
        assert!(c.is_whitelisted(ip("127.0.0.1"), "user:bob"));
        assert!(!c.is_whitelisted(ip("127.0.0.2"), "ip:127.0.0.2"));
        // An IPv4 client seen through a dual-stack listener.
        assert!(c.is_whitelisted(ip("::ffff:127.0.0.1"), "ip:::ffff:127.0.0.1"));
        assert!(!c.is_whitelisted(None, "ip:127.0.0.2"));
        assert!(c.is_whitelisted(None, "ip:127.0.0.1"));
    }

    #[test]
    fn whitelist_by_cidr() {
        let c = sample();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(c.is_whitelisted(ip("10.255.1.2"), "ip:10.255.1.2"));
        assert!(!c.is_whitelisted(ip("11.0.0.1"), "ip:11.0.0.1"));
        assert!(c.is_whitelisted(ip("2001:db8:ffff::1"), "ip:2001:db8:ffff::1"));
        assert!(!c.is_whitelisted(ip("2001:db9::1"), "ip:2001:db9::1"));
    }

    #[test]
    fn whitelist_by_ip_form() {
        let c = sample();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(c.is_whitelisted(ip("192.0.2.7"), "key:someone"));
        assert!(c.is_whitelisted(None, "ip:192.0.2.7"));
        assert!(!c.is_whitelisted(ip("192.0.2.8"), "ip:192.0.2.8"));
    }

    #[test]
    fn whitelist_by_key_and_user() {
        let c = sample();
        let other = Some("198.51.100.1".parse::<IpAddr>().unwrap());
        assert!(c.is_whitelisted(other, "key:ops-monitor"));
        assert!(c.is_whitelisted(None, "user:healthchecker"));
        assert!(!c.is_whitelisted(other, "user:ops-monitor"));
        assert!(!c.is_whitelisted(other, "key:healthchecker"));
        assert!(!c.is_whitelisted(other, "key:acme-prod"));
        assert!(!c.is_whitelisted(other, "healthchecker"));
        assert!(!c.is_whitelisted(other, ""));
    }

    #[test]
    fn debug_output_has_no_secrets() {
        let shown = format!("{:?}", sample());
        assert!(!shown.contains("ops-monitor-key-0123456789"), "{shown}");
        assert!(
            !shown.contains("0123456789abcdef0123456789abcdef"),
            "{shown}"
        );
        assert!(!shown.contains("9F86D081"), "{shown}");
    }
}
