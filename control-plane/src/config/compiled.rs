//! The validated configuration in the shape the hot path wants: tiers by index, rule sets,
//! hashed API keys and whitelist sets. Built once per config version, then shared read-only.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ConfigError;
use super::schema::{EndpointRule, RateLimitConfig, RateLimitServiceConfig};
use super::validate::key_digest;
use super::whitelist::{self, Whitelist};
use super::windows::{WrittenWindow, policy_name, rule_windows, tier_windows};
use crate::jwt::JwtVerifier;
use crate::rules::RuleSet;
use crate::store::Algorithm;

/// Index of a tier in [`CompiledConfig::tiers`] (config order). Only meaningful for the
/// `CompiledConfig` that produced it.
pub type TierId = usize;

#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    /// The identity's budgets across all endpoints, one per window, in configuration order;
    /// empty for an unlimited tier.
    pub windows: Vec<Window>,
    /// The endpoint rules, each with its windows (counted per identity and rule, together
    /// with the tier's) and its cost.
    pub rules: RuleSet<EndpointLimits>,
    pub description: Option<String>,
    /// Most requests of one identity in flight at once (leases); `None`: no such limit.
    pub max_concurrent: Option<u64>,
}

/// What one endpoint rule counts: its windows, in configuration order, and the units a
/// matching request takes from them and from its tier's windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointLimits {
    pub windows: Vec<Window>,
    /// At least 1 and within every window's limit (validated).
    pub cost: u64,
    /// Most units one response may charge; `None`: no charges.
    pub max_charge: Option<u64>,
    /// Statuses whose responses keep the cost taken at admission (empty: all do). The rule's
    /// counters can then shrink before their reset, so no deny cache keeps them.
    pub count_statuses: Vec<u16>,
}

impl EndpointLimits {
    /// A request takes more than one unit, or its response may charge more.
    pub fn weighs(&self) -> bool {
        self.cost > 1 || self.max_charge.is_some()
    }
}

impl<'a> IntoIterator for &'a EndpointLimits {
    type Item = &'a Window;
    type IntoIter = std::slice::Iter<'a, Window>;

    fn into_iter(self) -> Self::IntoIter {
        self.windows.iter()
    }
}

/// One window of a tier or of an endpoint rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub limit: u64,
    pub length: Duration,
    /// Counted and reported like any window, but a full one never refuses a request.
    pub shadow: bool,
    /// Its name in the `RateLimit-Policy` field ([`policy_name`]).
    pub policy: String,
    /// How its counters keep the window.
    pub algorithm: Algorithm,
}

impl Window {
    fn compile(tier: &str, rule: Option<&str>, written: WrittenWindow) -> Window {
        let algorithm = written.counter_algorithm();
        Window {
            limit: written.limit,
            length: Duration::from_secs(written.seconds),
            shadow: written.shadow,
            policy: policy_name(tier, rule, written.seconds),
            algorithm,
        }
    }
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
    /// `rate_limit_service`, defaults filled in.
    rate_limit_service: RateLimitServiceConfig,
}

impl CompiledConfig {
    /// Validates `cfg` (see [`RateLimitConfig::validate`]) and builds the lookup structures.
    pub fn compile(cfg: RateLimitConfig) -> Result<CompiledConfig, ConfigError> {
        cfg.validate()?;

        let tiers: Vec<Tier> = cfg
            .tiers
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let at = format!("tiers[{i}]");
                let windows = tier_windows(&at, cfg.shadow, t)
                    .into_iter()
                    .map(|w| Window::compile(&t.name, None, w))
                    .collect();
                let rules = t.endpoints.iter().map(|(pattern, rule)| {
                    let windows = rule_windows(&at, cfg.shadow, t, pattern, rule)
                        .into_iter()
                        .map(|w| Window::compile(&t.name, Some(pattern), w))
                        .collect();
                    let (cost, max_charge, count_statuses) = match rule {
                        EndpointRule::Limit(_) => (1, None, Vec::new()),
                        EndpointRule::Rule(rule) => (
                            rule.cost.max(1),
                            rule.max_charge,
                            rule.count_statuses.clone(),
                        ),
                    };
                    (
                        pattern.clone(),
                        EndpointLimits {
                            windows,
                            cost,
                            max_charge,
                            count_statuses,
                        },
                    )
                });
                Tier {
                    name: t.name.clone(),
                    windows,
                    rules: RuleSet::new(rules),
                    description: t.description.clone(),
                    max_concurrent: t.max_concurrent,
                }
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

        let rate_limit_service = cfg.rate_limit_service.clone().unwrap_or_default();
        Ok(CompiledConfig {
            source: cfg,
            tiers,
            tier_ids,
            default_tier,
            api_keys,
            whitelist: list,
            jwt,
            rate_limit_service,
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

    /// How calls of Envoy's rate-limit service protocol are read.
    pub fn rate_limit_service(&self) -> &RateLimitServiceConfig {
        &self.rate_limit_service
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

    /// Leading bits of an IPv6 client address that make one identity (128: none grouped).
    pub fn ipv6_prefix_length(&self) -> u8 {
        self.source.ipv6_prefix_length
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
    /// as IPs, `ip:<network>/<len>` as ranges) or the identity (`key:<id>`, `user:<sub>`,
    /// `ip:<addr>`, or an IPv6 group `ip:<network>/<len>` inside a whitelisted range) is
    /// whitelisted. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) match their IPv4 entries.
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
mod tests;
