//! Rate-limit configurations for the tests: a few named ones and a small builder for the
//! rest, so a test says which limits it runs under instead of pasting YAML.
//!
//! ```
//! use rl_tests::fixtures::{Config, Tier, one_tier};
//! // The 100-per-minute tier most tests run under.
//! let simple = one_tier(100, 60).yaml();
//! // Anything else, field by field.
//! let keyed = Config::new()
//!     .fail_open(false)
//!     .tier(Tier::new("free", 5).window(60).endpoint("/api/v1/request", 2))
//!     .tier(Tier::new("premium", 100))
//!     .api_key("partner", "premium", "partner-key-0001")
//!     .whitelist("key:partner")
//!     .yaml();
//! // Several windows: a burst of 10 per second and 100 per minute, a rule of its own
//! // windows, and a rule tried in shadow mode.
//! let windowed = Config::new()
//!     .tier(
//!         Tier::windows("free", &[(10, 1), (100, 60)])
//!             .rule("/api/v1/search", Rule::new(&[(2, 1), (30, 60)]))
//!             .rule("/api/v1/new", Rule::new(&[(5, 60)]).shadow(true)),
//!     )
//!     .yaml();
//! # assert!(simple.contains("requests_per_window: 100"));
//! # assert!(keyed.contains("fail_open: false"));
//! # assert!(windowed.contains("- {limit: 10, window_seconds: 1}"));
//! ```
//!
//! The YAML is written by hand here, not serialised by the control plane's own types, so a
//! renamed or mistyped field in the product shows up as a refused test configuration.

use std::fmt::Write;

/// A whole configuration document. Fields left unset are left out of the YAML, so the
/// control plane's defaults apply (`enabled: true`, `fail_open: true`).
#[derive(Clone, Debug)]
pub struct Config {
    enabled: Option<bool>,
    default_tier: String,
    fail_open: Option<bool>,
    shadow: Option<bool>,
    tiers: Vec<Tier>,
    api_keys: Vec<ApiKey>,
    jwt: Option<Jwt>,
    whitelist: Vec<String>,
    ipv6_prefix_length: Option<u8>,
}

#[derive(Clone, Debug)]
struct ApiKey {
    id: String,
    tier: String,
    /// `key` (the raw key) or `key_sha256` (its hex digest).
    field: &'static str,
    value: String,
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

impl Config {
    /// Default tier `free`, no tier yet.
    pub fn new() -> Config {
        Config {
            enabled: None,
            default_tier: "free".to_string(),
            fail_open: None,
            shadow: None,
            tiers: Vec::new(),
            api_keys: Vec::new(),
            jwt: None,
            whitelist: Vec::new(),
            ipv6_prefix_length: None,
        }
    }

    pub fn default_tier(mut self, name: &str) -> Self {
        self.default_tier = name.to_string();
        self
    }

    /// `enabled: false` admits everything without headers.
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = Some(on);
        self
    }

    /// What decides while the counter store is down (the document's `fail_open`).
    pub fn fail_open(mut self, on: bool) -> Self {
        self.fail_open = Some(on);
        self
    }

    /// `shadow` at the top of the document: every window counted, none enforced.
    pub fn shadow(mut self, on: bool) -> Self {
        self.shadow = Some(on);
        self
    }

    pub fn tier(mut self, tier: Tier) -> Self {
        self.tiers.push(tier);
        self
    }

    /// Changes the tier called `name` (panics if there is none: a mistake in the test).
    pub fn edit_tier(mut self, name: &str, edit: impl FnOnce(Tier) -> Tier) -> Self {
        let i = self
            .tiers
            .iter()
            .position(|t| t.name == name)
            .unwrap_or_else(|| panic!("fixture has no tier {name:?}"));
        let tier = self.tiers.remove(i);
        self.tiers.insert(i, edit(tier));
        self
    }

    /// A registered API key, written in the file as is (`key:`).
    pub fn api_key(mut self, id: &str, tier: &str, key: &str) -> Self {
        self.api_keys.push(ApiKey {
            id: id.to_string(),
            tier: tier.to_string(),
            field: "key",
            value: key.to_string(),
        });
        self
    }

    /// A registered API key, written in the file as its SHA-256 (`key_sha256:`).
    pub fn api_key_sha256(mut self, id: &str, tier: &str, key: &str) -> Self {
        self.api_keys.push(ApiKey {
            id: id.to_string(),
            tier: tier.to_string(),
            field: "key_sha256",
            value: sha256_hex(key),
        });
        self
    }

    /// A registered API key given by its hex SHA-256 (`key_sha256:`), e.g. one copied from
    /// a shipped file.
    pub fn api_key_digest(mut self, id: &str, tier: &str, sha256_hex: &str) -> Self {
        self.api_keys.push(ApiKey {
            id: id.to_string(),
            tier: tier.to_string(),
            field: "key_sha256",
            value: sha256_hex.to_string(),
        });
        self
    }

    pub fn jwt(mut self, jwt: Jwt) -> Self {
        self.jwt = Some(jwt);
        self
    }

    /// One whitelist entry: an address, a CIDR range or an identifier (`key:<id>`, ...).
    pub fn whitelist(mut self, entry: &str) -> Self {
        self.whitelist.push(entry.to_string());
        self
    }

    /// How many leading bits of an IPv6 client address make one identity (the document's
    /// `ipv6_prefix_length`; unset: the control plane's default).
    pub fn ipv6_prefix_length(mut self, bits: u8) -> Self {
        self.ipv6_prefix_length = Some(bits);
        self
    }

    /// The document as the control plane reads it from its file.
    pub fn yaml(&self) -> String {
        let mut y = String::new();
        if let Some(enabled) = self.enabled {
            line(&mut y, 0, &format!("enabled: {enabled}"));
        }
        line(&mut y, 0, &format!("default_tier: {}", self.default_tier));
        if let Some(fail_open) = self.fail_open {
            line(&mut y, 0, &format!("fail_open: {fail_open}"));
        }
        if let Some(shadow) = self.shadow {
            line(&mut y, 0, &format!("shadow: {shadow}"));
        }
        if let Some(bits) = self.ipv6_prefix_length {
            line(&mut y, 0, &format!("ipv6_prefix_length: {bits}"));
        }
        line(&mut y, 0, "tiers:");
        for tier in &self.tiers {
            tier.write(&mut y);
        }
        if !self.api_keys.is_empty() {
            line(&mut y, 0, "api_keys:");
            for key in &self.api_keys {
                line(&mut y, 2, &format!("- id: {}", quoted(&key.id)));
                line(&mut y, 4, &format!("tier: {}", key.tier));
                line(&mut y, 4, &format!("{}: {}", key.field, quoted(&key.value)));
            }
        }
        if let Some(jwt) = &self.jwt {
            jwt.write(&mut y);
        }
        if !self.whitelist.is_empty() {
            line(&mut y, 0, "whitelist:");
            for entry in &self.whitelist {
                line(&mut y, 2, &format!("- {}", quoted(entry)));
            }
        }
        y
    }
}

/// One tier. The window is left out (60 s by default) unless set.
#[derive(Clone, Debug)]
pub struct Tier {
    name: String,
    requests_per_window: Option<u64>,
    limits: Option<Vec<(u64, u64)>>,
    unlimited: bool,
    window: Option<u64>,
    shadow: Option<bool>,
    endpoints: Vec<(String, Endpoint)>,
    max_concurrent: Option<u64>,
}

/// An endpoint rule as the document writes it.
#[derive(Clone, Debug)]
enum Endpoint {
    /// `/path: 50`
    Limit(u64),
    /// `/path: {limits: [...], shadow: ...}`
    Rule(Rule),
}

/// The object form of an endpoint rule: its own windows, and `shadow` and `cost` when set.
#[derive(Clone, Debug)]
pub struct Rule {
    limits: Vec<(u64, u64)>,
    shadow: Option<bool>,
    cost: Option<u64>,
    max_charge: Option<u64>,
    count_statuses: Vec<u16>,
}

impl Rule {
    /// A rule of these `(limit, window_seconds)` windows.
    pub fn new(limits: &[(u64, u64)]) -> Rule {
        Rule {
            limits: limits.to_vec(),
            shadow: None,
            cost: None,
            max_charge: None,
            count_statuses: Vec::new(),
        }
    }

    /// The rule's `max_charge`: most units one response may charge after the fact.
    pub fn max_charge(mut self, units: u64) -> Self {
        self.max_charge = Some(units);
        self
    }

    /// The rule's `count_statuses`: the response statuses that keep their unit.
    pub fn count_statuses(mut self, statuses: &[u16]) -> Self {
        self.count_statuses = statuses.to_vec();
        self
    }

    /// The rule's `shadow`.
    pub fn shadow(mut self, on: bool) -> Self {
        self.shadow = Some(on);
        self
    }

    /// The rule's `cost`: units a matching request takes from every window that applies.
    pub fn cost(mut self, units: u64) -> Self {
        self.cost = Some(units);
        self
    }
}

impl Tier {
    /// A tier whose budget is `requests_per_window` requests per window.
    pub fn new(name: &str, requests_per_window: u64) -> Tier {
        Tier {
            name: name.to_string(),
            requests_per_window: Some(requests_per_window),
            limits: None,
            unlimited: false,
            window: None,
            shadow: None,
            endpoints: Vec::new(),
            max_concurrent: None,
        }
    }

    /// A tier of several windows (`limits`), each `(limit, window_seconds)`.
    pub fn windows(name: &str, limits: &[(u64, u64)]) -> Tier {
        Tier {
            requests_per_window: None,
            limits: Some(limits.to_vec()),
            ..Tier::new(name, 0)
        }
    }

    /// A tier without a budget (`unlimited: true`); endpoint limits still apply.
    pub fn unlimited(name: &str) -> Tier {
        Tier {
            requests_per_window: None,
            unlimited: true,
            ..Tier::new(name, 0)
        }
    }

    pub fn window(mut self, seconds: u64) -> Self {
        self.window = Some(seconds);
        self
    }

    /// Back to one window, `requests_per_window` (drops `limits`).
    pub fn requests_per_window(mut self, limit: u64) -> Self {
        self.requests_per_window = Some(limit);
        self.limits = None;
        self
    }

    /// The tier's windows, `limits` (drops `requests_per_window`).
    pub fn limits(mut self, limits: &[(u64, u64)]) -> Self {
        self.limits = Some(limits.to_vec());
        self.requests_per_window = None;
        self
    }

    /// The tier's `shadow`.
    pub fn shadow(mut self, on: bool) -> Self {
        self.shadow = Some(on);
        self
    }

    /// The tier's `max_concurrent`: most requests of one identity in flight.
    pub fn max_concurrent(mut self, max: u64) -> Self {
        self.max_concurrent = Some(max);
        self
    }

    /// A per-endpoint limit in shorthand (one window of the tier's window size): an exact
    /// normalised path or a `prefix/*` rule. Setting a pattern again replaces its rule.
    pub fn endpoint(self, pattern: &str, limit: u64) -> Self {
        self.set_endpoint(pattern, Endpoint::Limit(limit))
    }

    /// An endpoint rule in object form.
    pub fn rule(self, pattern: &str, rule: Rule) -> Self {
        self.set_endpoint(pattern, Endpoint::Rule(rule))
    }

    fn set_endpoint(mut self, pattern: &str, endpoint: Endpoint) -> Self {
        match self.endpoints.iter_mut().find(|(p, _)| p == pattern) {
            Some(entry) => entry.1 = endpoint,
            None => self.endpoints.push((pattern.to_string(), endpoint)),
        }
        self
    }

    fn write(&self, y: &mut String) {
        line(y, 2, &format!("- name: {}", self.name));
        if let Some(limit) = self.requests_per_window {
            line(y, 4, &format!("requests_per_window: {limit}"));
        }
        if let Some(limits) = &self.limits {
            line(y, 4, "limits:");
            write_windows(y, 6, limits);
        }
        if self.unlimited {
            line(y, 4, "unlimited: true");
        }
        if let Some(window) = self.window {
            line(y, 4, &format!("window_size_seconds: {window}"));
        }
        if let Some(shadow) = self.shadow {
            line(y, 4, &format!("shadow: {shadow}"));
        }
        if let Some(max) = self.max_concurrent {
            line(y, 4, &format!("max_concurrent: {max}"));
        }
        if !self.endpoints.is_empty() {
            line(y, 4, "endpoints:");
            for (pattern, endpoint) in &self.endpoints {
                match endpoint {
                    Endpoint::Limit(limit) => {
                        line(y, 6, &format!("{}: {limit}", quoted(pattern)));
                    }
                    Endpoint::Rule(rule) => {
                        line(y, 6, &format!("{}:", quoted(pattern)));
                        line(y, 8, "limits:");
                        write_windows(y, 10, &rule.limits);
                        if let Some(shadow) = rule.shadow {
                            line(y, 8, &format!("shadow: {shadow}"));
                        }
                        if let Some(cost) = rule.cost {
                            line(y, 8, &format!("cost: {cost}"));
                        }
                        if let Some(max) = rule.max_charge {
                            line(y, 8, &format!("max_charge: {max}"));
                        }
                        if !rule.count_statuses.is_empty() {
                            let list: Vec<String> =
                                rule.count_statuses.iter().map(u16::to_string).collect();
                            line(y, 8, &format!("count_statuses: [{}]", list.join(", ")));
                        }
                    }
                }
            }
        }
    }
}

fn write_windows(y: &mut String, indent: usize, limits: &[(u64, u64)]) {
    if limits.is_empty() {
        line(y, indent, "[]");
    }
    for (limit, seconds) in limits {
        line(
            y,
            indent,
            &format!("- {{limit: {limit}, window_seconds: {seconds}}}"),
        );
    }
}

/// The `jwt` section.
#[derive(Clone, Debug, Default)]
pub struct Jwt {
    hs256_secret: Option<String>,
    rs256_public_key_pem: Option<String>,
    tier_claim: Option<String>,
}

impl Jwt {
    /// Tokens signed with this HS256 secret are verified.
    pub fn hs256(secret: &str) -> Jwt {
        Jwt {
            hs256_secret: Some(secret.to_string()),
            ..Jwt::default()
        }
    }

    /// Tokens signed with the private half of this RS256 key (PEM) are verified too.
    pub fn rs256_public_key(mut self, pem: &str) -> Self {
        self.rs256_public_key_pem = Some(pem.to_string());
        self
    }

    /// The claim that names a token's tier.
    pub fn tier_claim(mut self, claim: &str) -> Self {
        self.tier_claim = Some(claim.to_string());
        self
    }

    fn write(&self, y: &mut String) {
        line(y, 0, "jwt:");
        if let Some(secret) = &self.hs256_secret {
            line(y, 2, &format!("hs256_secret: {}", quoted(secret)));
        }
        if let Some(pem) = &self.rs256_public_key_pem {
            line(y, 2, "rs256_public_key_pem: |");
            for pem_line in pem.lines() {
                line(y, 4, pem_line);
            }
        }
        if let Some(claim) = &self.tier_claim {
            line(y, 2, &format!("tier_claim: {}", quoted(claim)));
        }
    }
}

fn line(y: &mut String, indent: usize, text: &str) {
    let _ = writeln!(y, "{:indent$}{text}", "");
}

/// A YAML double-quoted scalar (a JSON string is one).
fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// Hex SHA-256 of `text`, as `key_sha256` takes it.
pub fn sha256_hex(text: &str) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(text.as_bytes());
    digest.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

// ---------------------------------------------------------------------------------------------
// Named configurations

/// One tier, `free`, the default: `limit` requests per `window` seconds, no endpoint rule.
pub fn one_tier(limit: u64, window: u64) -> Config {
    Config::new().tier(Tier::new("free", limit).window(window))
}

/// Two tiers over one 60 s window, `free` (the default) and `premium`, and the API key
/// `key` registered on `premium` under the id `key_id`.
pub fn free_and_premium(free: u64, premium: u64, key_id: &str, key: &str) -> Config {
    Config::new()
        .tier(Tier::new("free", free).window(60))
        .tier(Tier::new("premium", premium).window(60))
        .api_key(key_id, "premium", key)
}

/// The raw keys and secrets of [`tiers_with_keys`].
pub mod tiered {
    /// `free-key`, a key on the `free` tier (100 per minute).
    pub const FREE_KEY: &str = "free-key-0123456789";
    /// `premium-key`, a key on the `premium` tier (1000 per minute), registered by its hash.
    pub const PREMIUM_KEY: &str = "premium-key-0123456789";
    /// `unlimited-key`, a key on the `unlimited` tier.
    pub const UNLIMITED_KEY: &str = "unlimited-key-0123456789";
    /// Verifies HS256 tokens.
    pub const HS256_SECRET: &str = "integration-test-hs256-secret-0123456789";
    /// Signs RS256 tokens; its public half is in the configuration.
    pub const RSA_PRIVATE_PEM: &str = include_str!("../fixtures/jwt-test-rs256-private.pem");
    pub const RSA_PUBLIC_PEM: &str = include_str!("../fixtures/jwt-test-rs256-public.pem");
}

/// Three tiers and a key on each, and JWTs (HS256 and RS256) whose `tier` claim picks a tier:
///
/// - `free` (default): 100 per 60 s;
/// - `premium`: 1000 per 60 s; `/api/v1/request` 50, `/api/v1/health` 999 (one below the
///   budget: a rule at the budget could never bind),
///   `/api/v1/admin/*` 3;
/// - `unlimited`: no budget (1 s window).
///
/// The keys and secrets are in [`tiered`].
pub fn tiers_with_keys() -> Config {
    Config::new()
        .tier(Tier::new("free", 100).window(60))
        .tier(
            Tier::new("premium", 1000)
                .window(60)
                .endpoint("/api/v1/request", 50)
                .endpoint("/api/v1/health", 999)
                .endpoint("/api/v1/admin/*", 3),
        )
        .tier(Tier::unlimited("unlimited").window(1))
        .api_key("free-key", "free", tiered::FREE_KEY)
        .api_key_sha256("premium-key", "premium", tiered::PREMIUM_KEY)
        .api_key("unlimited-key", "unlimited", tiered::UNLIMITED_KEY)
        .jwt(
            Jwt::hs256(tiered::HS256_SECRET)
                .rs256_public_key(tiered::RSA_PUBLIC_PEM)
                .tier_claim("tier"),
        )
}

/// Path of the sample configuration shipped at the repository root.
pub fn sample_config_path() -> std::path::PathBuf {
    crate::repo_root().join("rate_limit_config.yaml")
}

/// The sample configuration shipped at the repository root.
pub fn sample_config() -> String {
    let path = sample_config_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests;
