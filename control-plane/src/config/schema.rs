//! The configuration document (`rate_limit_config.yaml`, or the JSON body of a config PUT).
//!
//! Field names are part of the product contract (docs/PRODUCT.md §4); unknown fields are rejected so a
//! typo is an error rather than a silently ignored setting.

use std::collections::BTreeMap;

use std::fmt;

use serde::de::{self, MapAccess, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

fn default_true() -> bool {
    true
}

fn default_window() -> u64 {
    60
}

fn default_cost() -> u64 {
    1
}

fn is_default_cost(cost: &u64) -> bool {
    *cost == 1
}

fn default_user_claim() -> String {
    "sub".to_string()
}

/// A /64 is what one subscriber line, one cloud instance or one LAN usually gets.
pub const DEFAULT_IPV6_PREFIX_LENGTH: u8 = 64;

fn default_ipv6_prefix_length() -> u8 {
    DEFAULT_IPV6_PREFIX_LENGTH
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
    /// Every window of every tier is shadowed: counted and reported, never refusing a request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
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
    /// How calls of Envoy's rate-limit service protocol (gRPC, `RATE_LIMIT_GRPC_LISTEN`) are
    /// read; unset: the defaults of [`RateLimitServiceConfig`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_service: Option<RateLimitServiceConfig>,
}

/// The `domain` Envoy's rate-limit filter must send, unless configured otherwise.
pub const DEFAULT_RATE_LIMIT_DOMAIN: &str = "rate_limit";

fn default_domain() -> String {
    DEFAULT_RATE_LIMIT_DOMAIN.to_string()
}

/// Envoy's rate-limit service protocol: the domain a call must name and which descriptor
/// entries carry which evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitServiceConfig {
    /// A call naming another domain is refused (`INVALID_ARGUMENT`).
    #[serde(default = "default_domain")]
    pub domain: String,
    #[serde(default)]
    pub descriptor_keys: DescriptorKeys,
}

impl Default for RateLimitServiceConfig {
    fn default() -> Self {
        Self {
            domain: default_domain(),
            descriptor_keys: DescriptorKeys::default(),
        }
    }
}

/// The descriptor entry key that carries each piece of evidence. Entries with other keys are
/// ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DescriptorKeys {
    /// The client IP (Envoy's `remote_address` action).
    pub ip: String,
    /// The API key (a `request_headers` action on the API key header).
    pub api_key: String,
    /// The `Authorization` header (a bearer JWT).
    pub authorization: String,
    /// The request path (query string dropped before deciding).
    pub path: String,
    /// The request method.
    pub method: String,
}

impl Default for DescriptorKeys {
    fn default() -> Self {
        Self {
            ip: "remote_address".into(),
            api_key: "x-api-key".into(),
            authorization: "authorization".into(),
            path: ":path".into(),
            method: ":method".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// `^[a-z0-9_]+$`
    pub name: String,
    /// Shorthand for one tier window of `window_size_seconds`: the identity's budget across
    /// all endpoints. Exclusive with `limits`; one of them is required unless `unlimited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_window: Option<u64>,
    /// The tier's windows, each an identity's budget across all endpoints: a request needs
    /// room in every one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Vec<WindowConfig>>,
    /// No tier windows; endpoint rules still apply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unlimited: bool,
    /// 1–86400: the window of `requests_per_window` and of shorthand endpoint rules.
    #[serde(default = "default_window")]
    pub window_size_seconds: u64,
    /// How the windows of this tier and of its endpoint rules are counted, unless a window
    /// says otherwise; unset: `exact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<CounterAlgorithm>,
    /// Per-(identity, endpoint) limits: an exact normalised path or a `prefix/*` pattern.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<String, EndpointRule>,
    /// Every window of this tier (its own and its rules') is shadowed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Most requests of one identity of this tier in flight at once (1–100000); unset: no
    /// concurrency limit. Each admitted request holds a lease until its response ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
}

/// One sliding window: at most `limit` requests in any `window_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    pub limit: u64,
    /// 1–86400.
    pub window_seconds: u64,
    /// How this window is counted; unset: the tier's `algorithm`, else `exact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<CounterAlgorithm>,
    /// The slot of a slotted window, in ms: the window must be a whole number of slots,
    /// 10 to 120 of them. Unset: the window / 60 when that is a whole number of ms, else the
    /// nearest slot that divides it. Only for `algorithm: slotted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision_ms: Option<u64>,
}

/// How a window's counters keep it. Both never admit more than the limit in any window of
/// its length; they differ in memory and in what they deny.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum CounterAlgorithm {
    /// One entry per admitted request in the window: admits a request iff fewer than the
    /// limit were admitted in the window before it; memory grows with the limit.
    #[default]
    #[serde(rename = "exact")]
    ExactLog,
    /// One count per slot of `precision_ms`, the oldest slot that still overlaps the window
    /// counted whole: memory bounded by the number of slots whatever the limit; may deny
    /// early in the oldest slot, and its Retry-After is at most one slot later.
    #[serde(rename = "slotted")]
    Slotted,
}

/// An endpoint rule: `/path: 50` (shorthand: one window of the tier's
/// `window_size_seconds`) or `/path: {limits: [...], shadow: true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EndpointRule {
    Limit(u64),
    Rule(RuleConfig),
}

/// The object form of an endpoint rule. An object, so that later per-rule settings have a
/// place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The rule's windows, counted per (identity, rule) in addition to the tier's.
    pub limits: Vec<WindowConfig>,
    /// The rule's windows are shadowed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// Units a matching request takes from every window that applies to it (the rule's and
    /// its tier's): at least 1, and no more than any of those windows' limits. Default 1.
    #[serde(default = "default_cost", skip_serializing_if = "is_default_cost")]
    #[schema(default = 1, minimum = 1)]
    pub cost: u64,
    /// Most units one response may charge after the fact (the upstream's charge header,
    /// added to every window of the rule and of its tier; it may take them over their limit).
    /// Absent: the rule takes no charges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_charge: Option<u64>,
    /// Response statuses that count: a matching request takes its cost from the rule's
    /// windows at admission and gives it back after any other status, or when its stream ends
    /// without a response (e.g. `[401, 403]` counts failed logins). Empty: every request
    /// counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub count_statuses: Vec<u16>,
}

/// Read by the type of the value, not by trying each form in turn (what `untagged` does): an
/// error inside the object form then keeps its field path
/// (`tiers[0].endpoints./x.limits[0].window_seconds: missing field`).
impl<'de> Deserialize<'de> for EndpointRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RuleVisitor;

        impl<'de> Visitor<'de> for RuleVisitor {
            type Value = EndpointRule;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a limit (a non-negative integer) or a rule {limits: [...]}")
            }

            fn visit_u64<E: de::Error>(self, limit: u64) -> Result<EndpointRule, E> {
                Ok(EndpointRule::Limit(limit))
            }

            fn visit_i64<E: de::Error>(self, limit: i64) -> Result<EndpointRule, E> {
                u64::try_from(limit)
                    .map(EndpointRule::Limit)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(limit), &self))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EndpointRule, A::Error> {
                RuleConfig::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(EndpointRule::Rule)
            }
        }

        deserializer.deserialize_any(RuleVisitor)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
