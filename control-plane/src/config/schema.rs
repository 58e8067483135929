//! The configuration document (`rate_limit_config.yaml`, or the JSON body of a config PUT).
//!
//! Field names are part of the product contract (docs/PRODUCT.md §4); unknown fields are rejected so a
//! typo is an error rather than a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

fn default_true() -> bool {
    true
}

fn default_window() -> u64 {
    60
}

fn default_user_claim() -> String {
    "sub".to_string()
}

/// A /64 is what one subscriber line, one cloud instance or one LAN usually gets.
pub const DEFAULT_IPV6_PREFIX_LENGTH: u8 = 64;

fn default_ipv6_prefix_length() -> u8 {
    DEFAULT_IPV6_PREFIX_LENGTH
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `false` admits everything without headers.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Tier for requests without a registered API key or verified JWT.
    pub default_tier: String,
    /// What the control plane decides when the counter store fails: `true` admits (and counts
    /// the error), `false` answers "store unavailable" (the filter responds 503).
    #[serde(default = "default_true")]
    pub fail_open: bool,
    pub tiers: Vec<TierConfig>,
    /// IPs, CIDR ranges and identifiers (`ip:<addr>`, `key:<id>`, `user:<sub>`) that bypass
    /// every check.
    #[serde(default)]
    pub whitelist: Vec<String>,
    /// Leading bits of an IPv6 client address that make one identity, `ip:<network>/<len>`:
    /// a client holding a whole network cannot mint budgets by rotating its source address.
    /// 32–128; 128 counts every address on its own. IPv4 addresses are never grouped.
    #[serde(default = "default_ipv6_prefix_length")]
    pub ipv6_prefix_length: u8,
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// `^[a-z0-9_]+$`
    pub name: String,
    /// The identity's budget across all endpoints; required unless `unlimited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_window: Option<u64>,
    /// No tier budget; endpoint overrides still apply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unlimited: bool,
    /// 1–86400.
    #[serde(default = "default_window")]
    pub window_size_seconds: u64,
    /// Per-(identity, endpoint) limits: an exact normalised path or a `prefix/*` pattern.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Public identifier of the key: appears as `key:<id>` in logs, status and Redis keys.
    pub id: String,
    pub tier: String,
    /// The key itself (a secret: redacted by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Hex SHA-256 of the key; preferred, so the file holds no secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Shared secret for HS256 tokens (a secret: redacted by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs256_secret: Option<String>,
    /// PEM public key for RS256 tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rs256_public_key_pem: Option<String>,
    /// Claim holding the user id (`user:<value>`).
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Claim naming the tier; ignored when it names no configured tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}
