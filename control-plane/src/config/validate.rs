//! Semantic validation of a parsed document (docs/PRODUCT.md §4, docs/CONFIGURATION.md). Every error names its field path;
//! [`RateLimitConfig::validate`] reports the first one in document order, which is the order
//! of the fields in the schema: `default_tier`, `tiers`, `whitelist`, `ipv6_prefix_length`,
//! `api_keys`, `jwt`; within a tier: its name, its windows, `window_size_seconds`, its
//! endpoint rules (each with its windows), `description`.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use super::error::ConfigError;
use super::schema::{
    ApiKeyConfig, CounterAlgorithm, EndpointRule, JwtConfig, RateLimitConfig,
    RateLimitServiceConfig, TierConfig, WindowConfig,
};
use super::slots;
use super::whitelist;
use super::windows::{self, WrittenWindow};
use crate::rules::check_rule_pattern;

pub(crate) const MAX_TIER_NAME_CHARS: usize = 64;
pub(crate) const MAX_WINDOW_SECONDS: u64 = 86_400;
pub(crate) const MAX_DESCRIPTION_CHARS: usize = 1024;
pub(crate) const MAX_KEY_ID_CHARS: usize = 64;
/// Coarser grouping would put whole providers' customers into one identity.
pub(crate) const MIN_IPV6_PREFIX_LENGTH: u8 = 32;
/// Shorter keys are guessable by brute force through the data plane.
pub(crate) const MIN_KEY_CHARS: usize = 16;
pub(crate) const MAX_KEY_BYTES: usize = 1024;
/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash output; a shorter secret
/// can be brute-forced offline from a single captured token.
pub(crate) const MIN_HS256_SECRET_BYTES: usize = 32;
/// The largest limit an exact sliding log accepts per window. The log keeps one entry per
/// admitted request in the window, so a saturated counter's memory grows with its limit:
/// about 128 MiB in Redis at this bound (docs/OPERATIONS.md, "Redis memory").
pub const MAX_EXACT_LOG_LIMIT: u64 = 1_000_000;

/// The largest limit a slotted counter accepts per window. Its memory does not grow with the
/// limit; counts are kept as 32-bit values.
pub const MAX_SLOTTED_LIMIT: u64 = u32::MAX as u64;

/// Each algorithm bounds the limits it accepts by what a saturated counter costs.
impl CounterAlgorithm {
    /// The largest limit per window a counter of this algorithm accepts.
    pub const fn max_limit(self) -> u64 {
        match self {
            CounterAlgorithm::ExactLog => MAX_EXACT_LOG_LIMIT,
            CounterAlgorithm::Slotted => MAX_SLOTTED_LIMIT,
        }
    }

    /// Checks one limit: > 0 and within the algorithm's bound.
    fn check(self, path: &str, limit: u64) -> Result {
        if limit == 0 {
            return Err(ConfigError::invalid(path, "must be > 0"));
        }
        let max = self.max_limit();
        if limit > max {
            let why = match self {
                CounterAlgorithm::ExactLog => format!(
                    "the exact sliding log, got {limit} (its memory grows with the limit; see \
                     docs/OPERATIONS.md; a slotted window, algorithm: slotted, accepts up to \
                     {MAX_SLOTTED_LIMIT})"
                ),
                CounterAlgorithm::Slotted => format!("a slotted window, got {limit}"),
            };
            return Err(ConfigError::invalid(
                path,
                format!("must be at most {max} per window for {why}"),
            ));
        }
        Ok(())
    }
}

type Result<T = ()> = std::result::Result<T, ConfigError>;

impl RateLimitConfig {
    /// Checks every rule of the configuration file format; returns the first error found, in
    /// document order. Messages never quote secrets (`key`, `hs256_secret`).
    pub fn validate(&self) -> Result {
        if self.tiers.is_empty() {
            return Err(ConfigError::invalid(
                "tiers",
                "at least one tier is required",
            ));
        }
        if !self.tiers.iter().any(|t| t.name == self.default_tier) {
            return Err(ConfigError::invalid(
                "default_tier",
                unknown_tier(&self.default_tier, &self.tiers),
            ));
        }
        let mut names = HashSet::new();
        for (i, tier) in self.tiers.iter().enumerate() {
            validate_tier(&format!("tiers[{i}]"), self.shadow, tier, &mut names)?;
        }
        for (i, entry) in self.whitelist.iter().enumerate() {
            whitelist::parse_entry(entry)
                .map_err(|message| ConfigError::invalid(format!("whitelist[{i}]"), message))?;
        }
        if !(MIN_IPV6_PREFIX_LENGTH..=128).contains(&self.ipv6_prefix_length) {
            return Err(ConfigError::invalid(
                "ipv6_prefix_length",
                format!(
                    "must be between {MIN_IPV6_PREFIX_LENGTH} and 128, got {}",
                    self.ipv6_prefix_length
                ),
            ));
        }
        validate_api_keys(&self.api_keys, &self.tiers)?;
        if let Some(jwt) = &self.jwt {
            validate_jwt(jwt)?;
        }
        if let Some(service) = &self.rate_limit_service {
            validate_rate_limit_service(service)?;
        }
        Ok(())
    }
}

fn validate_rate_limit_service(service: &RateLimitServiceConfig) -> Result {
    if service.domain.is_empty() {
        return Err(ConfigError::invalid(
            "rate_limit_service.domain",
            "must not be empty",
        ));
    }
    let keys = &service.descriptor_keys;
    let named = [
        ("ip", &keys.ip),
        ("api_key", &keys.api_key),
        ("authorization", &keys.authorization),
        ("path", &keys.path),
        ("method", &keys.method),
    ];
    let mut seen = HashSet::new();
    for (field, key) in named {
        let at = format!("rate_limit_service.descriptor_keys.{field}");
        if key.is_empty() {
            return Err(ConfigError::invalid(at, "must not be empty"));
        }
        if !seen.insert(key.as_str()) {
            return Err(ConfigError::invalid(
                at,
                format!("{key:?} already carries other evidence: each key names one"),
            ));
        }
    }
    Ok(())
}

fn unknown_tier(name: &str, tiers: &[TierConfig]) -> String {
    let known: Vec<&str> = tiers.iter().map(|t| t.name.as_str()).collect();
    format!(
        "unknown tier {name:?} (configured tiers: {})",
        known.join(", ")
    )
}

fn validate_tier<'a>(
    at: &str,
    shadow_all: bool,
    tier: &'a TierConfig,
    names: &mut HashSet<&'a str>,
) -> Result {
    let name = &tier.name;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(ConfigError::invalid(
            format!("{at}.name"),
            format!("{name:?} must match ^[a-z0-9_]+$"),
        ));
    }
    if name.len() > MAX_TIER_NAME_CHARS {
        return Err(ConfigError::invalid(
            format!("{at}.name"),
            format!("must be at most {MAX_TIER_NAME_CHARS} characters"),
        ));
    }
    if !names.insert(name) {
        return Err(ConfigError::invalid(
            format!("{at}.name"),
            format!("duplicate tier name {name:?}"),
        ));
    }
    // The shorthand windows (`requests_per_window`, `/path: limit`) take the tier's.
    let algorithm = tier.algorithm.unwrap_or_default();
    match (tier.requests_per_window, &tier.limits, tier.unlimited) {
        (Some(_), _, true) => {
            return Err(ConfigError::invalid(
                at,
                "requests_per_window and unlimited: true are mutually exclusive; set one",
            ));
        }
        (Some(_), Some(_), false) => {
            return Err(ConfigError::invalid(
                format!("{at}.limits"),
                "cannot be set together with requests_per_window (its shorthand for one \
                 window); list every window in limits",
            ));
        }
        (None, Some(_), true) => {
            return Err(ConfigError::invalid(
                format!("{at}.limits"),
                "an unlimited: true tier has no tier windows; remove limits or unlimited",
            ));
        }
        (None, None, false) => {
            return Err(ConfigError::invalid(
                format!("{at}.requests_per_window"),
                "required unless limits or unlimited: true",
            ));
        }
        (Some(budget), None, false) => {
            algorithm.check(&format!("{at}.requests_per_window"), budget)?;
        }
        (None, Some(limits), false) => {
            check_windows(&format!("{at}.limits"), limits, tier.algorithm)?
        }
        (None, None, true) => {}
    }
    check_window_seconds(
        &format!("{at}.window_size_seconds"),
        tier.window_size_seconds,
    )?;
    let tier_windows = windows::tier_windows(at, shadow_all, tier);
    check_dead(&tier_windows, &[])?;
    for (pattern, rule) in &tier.endpoints {
        let path = format!("{at}.endpoints.{pattern}");
        check_rule_pattern(pattern).map_err(|message| ConfigError::invalid(&path, message))?;
        match rule {
            EndpointRule::Limit(limit) => algorithm.check(&path, *limit)?,
            EndpointRule::Rule(rule) => {
                check_windows(&format!("{path}.limits"), &rule.limits, tier.algorithm)?
            }
        }
        let own = windows::rule_windows(at, shadow_all, tier, pattern, rule);
        check_dead(&own, &tier_windows)?;
        if let EndpointRule::Rule(rule) = rule {
            check_cost(
                &format!("{path}.cost"),
                rule.cost,
                own.iter().chain(&tier_windows),
            )?;
            check_max_charge(&format!("{path}.max_charge"), rule.max_charge)?;
            check_count_statuses(&format!("{path}.count_statuses"), &rule.count_statuses)?;
        }
    }
    if let Some(max) = tier.max_concurrent
        && !(1..=MAX_CONCURRENT).contains(&max)
    {
        return Err(ConfigError::invalid(
            format!("{at}.max_concurrent"),
            format!("must be between 1 and {MAX_CONCURRENT}, got {max}"),
        ));
    }
    if let Some(description) = &tier.description
        && description.chars().count() > MAX_DESCRIPTION_CHARS
    {
        return Err(ConfigError::invalid(
            format!("{at}.description"),
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Largest `max_concurrent`: each slot held is a lease entry in the store.
pub const MAX_CONCURRENT: u64 = 100_000;

fn check_window_seconds(path: &str, seconds: u64) -> Result {
    if !(1..=MAX_WINDOW_SECONDS).contains(&seconds) {
        return Err(ConfigError::invalid(
            path,
            format!("must be between 1 and {MAX_WINDOW_SECONDS}, got {seconds}"),
        ));
    }
    Ok(())
}

/// A `limits` list at `at` of a tier whose `algorithm` is `tier_algorithm`: at least one
/// window, each limit in the bound of the window's algorithm, each length in bounds, no two
/// of the same length (one counter has one window per length: its policy name carries the
/// length), each `precision_ms` on a slotted window only and valid for its length.
fn check_windows(
    at: &str,
    limits: &[WindowConfig],
    tier_algorithm: Option<CounterAlgorithm>,
) -> Result {
    if limits.is_empty() {
        return Err(ConfigError::invalid(at, "must list at least one window"));
    }
    for (i, window) in limits.iter().enumerate() {
        let algorithm = windows::window_algorithm(window, tier_algorithm);
        algorithm.check(&format!("{at}[{i}].limit"), window.limit)?;
        check_window_seconds(&format!("{at}[{i}].window_seconds"), window.window_seconds)?;
        if let Some(first) = limits[..i]
            .iter()
            .position(|w| w.window_seconds == window.window_seconds)
        {
            return Err(ConfigError::invalid(
                format!("{at}[{i}].window_seconds"),
                format!(
                    "{at}[{first}] has a window of {} s already; one window per length",
                    window.window_seconds
                ),
            ));
        }
        if let Some(precision) = window.precision_ms {
            let path = format!("{at}[{i}].precision_ms");
            match algorithm {
                CounterAlgorithm::Slotted => {
                    slots::check_precision(window.window_seconds, precision)
                        .map_err(|message| ConfigError::invalid(&path, message))?
                }
                CounterAlgorithm::ExactLog => {
                    return Err(ConfigError::invalid(
                        &path,
                        "only a slotted window has a precision, and this one is exact: set \
                         algorithm: slotted (on the window or its tier) or remove precision_ms",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Rejects a window of `own` that can never bind: another enforced window that applies to
/// the same requests (of `own`, or of `enclosing`, the tier's windows when `own` are a
/// rule's) is at least as long and allows no more requests, so it is full whenever this one
/// is, and this one never refuses nor is the one described.
fn check_dead(own: &[WrittenWindow], enclosing: &[WrittenWindow]) -> Result {
    for (i, window) in own.iter().enumerate() {
        let others = own
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, w)| w)
            .chain(enclosing);
        if let Some(other) = others.into_iter().find(|other| other.dominates(window)) {
            return Err(ConfigError::invalid(
                &window.path,
                format!(
                    "{} per {} s can never bind: {} ({} per {} s) is at least as long and \
                     allows no more; give this window a lower limit or a longer window, or \
                     remove it",
                    window.limit, window.seconds, other.path, other.limit, other.seconds
                ),
            ));
        }
    }
    Ok(())
}

/// A rule's `cost` at `at`: at least 1, and no more than the limit of any window it is taken
/// from (`windows`: the rule's and its tier's, shadow ones included, since a request costing
/// more than a window holds could never pass once that window is enforced).
fn check_cost<'w>(
    at: &str,
    cost: u64,
    windows: impl IntoIterator<Item = &'w WrittenWindow>,
) -> Result {
    if cost == 0 {
        return Err(ConfigError::invalid(at, "must be at least 1"));
    }
    if let Some(window) = windows.into_iter().find(|w| cost > w.limit) {
        return Err(ConfigError::invalid(
            at,
            format!(
                "{cost} is more than {} allows ({} per {} s): a request of this cost could \
                 never pass; lower the cost or raise that limit",
                window.path, window.limit, window.seconds
            ),
        ));
    }
    Ok(())
}

/// Largest `max_charge`: far above any window's limit, low enough that sums of charges stay
/// exact in the Redis script's doubles.
pub const MAX_CHARGE: u64 = 1_000_000_000_000;

/// A rule's `max_charge` at `at`: a positive integer up to [`MAX_CHARGE`].
fn check_max_charge(at: &str, max_charge: Option<u64>) -> Result {
    match max_charge {
        Some(0) => Err(ConfigError::invalid(
            at,
            "must be at least 1 (leave it out for a rule that takes no charges)",
        )),
        Some(max) if max > MAX_CHARGE => Err(ConfigError::invalid(
            at,
            format!("must be at most {MAX_CHARGE}, got {max}"),
        )),
        _ => Ok(()),
    }
}

/// A rule's `count_statuses` at `at`: HTTP statuses (100–599), each once.
fn check_count_statuses(at: &str, statuses: &[u16]) -> Result {
    let mut seen = HashSet::new();
    for (i, &status) in statuses.iter().enumerate() {
        if !(100..=599).contains(&status) {
            return Err(ConfigError::invalid(
                format!("{at}[{i}]"),
                format!("must be an HTTP status from 100 to 599, got {status}"),
            ));
        }
        if !seen.insert(status) {
            return Err(ConfigError::invalid(
                format!("{at}[{i}]"),
                format!("{status} is listed twice"),
            ));
        }
    }
    Ok(())
}

fn validate_api_keys(keys: &[ApiKeyConfig], tiers: &[TierConfig]) -> Result {
    let mut ids: HashSet<&str> = HashSet::new();
    let mut digests: HashMap<[u8; 32], usize> = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        let at = format!("api_keys[{i}]");
        let id = key.id.as_str();
        let id_ok = (1..=MAX_KEY_ID_CHARS).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !id_ok {
            return Err(ConfigError::invalid(
                format!("{at}.id"),
                format!("{id:?} must match ^[A-Za-z0-9._-]{{1,{MAX_KEY_ID_CHARS}}}$"),
            ));
        }
        if !ids.insert(id) {
            return Err(ConfigError::invalid(
                format!("{at}.id"),
                format!("duplicate API key id {id:?}"),
            ));
        }
        if !tiers.iter().any(|t| t.name == key.tier) {
            return Err(ConfigError::invalid(
                format!("{at}.tier"),
                unknown_tier(&key.tier, tiers),
            ));
        }
        let (field, digest) = key_digest(&at, key)?;
        if let Some(&first) = digests.get(&digest) {
            return Err(ConfigError::invalid(
                format!("{at}.{field}"),
                format!(
                    "same key as api_keys[{first}] (id {:?}); every key must be distinct",
                    keys[first].id
                ),
            ));
        }
        digests.insert(digest, i);
    }
    Ok(())
}

/// Checks the key material of one entry and returns the field that holds it and its SHA-256.
pub(crate) fn key_digest(at: &str, key: &ApiKeyConfig) -> Result<(&'static str, [u8; 32])> {
    match (&key.key, &key.key_sha256) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            at,
            "key and key_sha256 are mutually exclusive; set one",
        )),
        (None, None) => Err(ConfigError::invalid(
            at,
            "one of key or key_sha256 is required",
        )),
        (Some(raw), None) => {
            let path = || format!("{at}.key");
            if raw.len() > MAX_KEY_BYTES {
                return Err(ConfigError::invalid(
                    path(),
                    format!("must be at most {MAX_KEY_BYTES} bytes"),
                ));
            }
            if raw.chars().count() < MIN_KEY_CHARS {
                return Err(ConfigError::invalid(
                    path(),
                    format!(
                        "must be at least {MIN_KEY_CHARS} characters: short keys are guessable"
                    ),
                ));
            }
            Ok(("key", Sha256::digest(raw.as_bytes()).into()))
        }
        (None, Some(hex_digest)) => {
            let mut digest = [0u8; 32];
            let decoded = if hex_digest.len() == 64 {
                hex::decode_to_slice(hex_digest, &mut digest).ok()
            } else {
                None
            };
            if decoded.is_none() {
                return Err(ConfigError::invalid(
                    format!("{at}.key_sha256"),
                    "must be 64 hexadecimal characters (the SHA-256 of the key)",
                ));
            }
            if digest == <[u8; 32]>::from(Sha256::digest(b"")) {
                return Err(ConfigError::invalid(
                    format!("{at}.key_sha256"),
                    "is the SHA-256 of the empty string, not of a key",
                ));
            }
            Ok(("key_sha256", digest))
        }
    }
}

fn validate_jwt(jwt: &JwtConfig) -> Result {
    if jwt.hs256_secret.is_none() && jwt.rs256_public_key_pem.is_none() {
        return Err(ConfigError::invalid(
            "jwt",
            "at least one of hs256_secret or rs256_public_key_pem is required",
        ));
    }
    if let Some(secret) = &jwt.hs256_secret
        && secret.len() < MIN_HS256_SECRET_BYTES
    {
        return Err(ConfigError::invalid(
            "jwt.hs256_secret",
            format!(
                "must be at least {MIN_HS256_SECRET_BYTES} bytes: shorter HS256 secrets can be \
                 brute-forced offline from a single token"
            ),
        ));
    }
    if let Some(pem) = &jwt.rs256_public_key_pem {
        check_public_key_pem(pem)
            .map_err(|message| ConfigError::invalid("jwt.rs256_public_key_pem", message))?;
    }
    let non_empty = [
        ("jwt.user_claim", Some(&jwt.user_claim)),
        ("jwt.tier_claim", jwt.tier_claim.as_ref()),
        ("jwt.issuer", jwt.issuer.as_ref()),
        ("jwt.audience", jwt.audience.as_ref()),
    ];
    for (path, value) in non_empty {
        if value.is_some_and(|v| v.trim().is_empty()) {
            return Err(ConfigError::invalid(path, "must not be empty"));
        }
    }
    Ok(())
}

/// Shape check only; the JWT library parses the key itself.
fn check_public_key_pem(pem: &str) -> std::result::Result<(), String> {
    let pem = pem.trim();
    if pem.contains("PRIVATE KEY") {
        return Err(
            "is a private key; configure the public key (never put the private key here)".into(),
        );
    }
    for label in ["PUBLIC KEY", "RSA PUBLIC KEY"] {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        if let Some(body) = pem
            .strip_prefix(begin.as_str())
            .and_then(|rest| rest.strip_suffix(end.as_str()))
        {
            if body.trim().is_empty() {
                return Err("the PEM block is empty".into());
            }
            return Ok(());
        }
    }
    Err(
        "must be a PEM public key block (-----BEGIN PUBLIC KEY----- or \
         -----BEGIN RSA PUBLIC KEY-----)"
            .into(),
    )
}

#[cfg(test)]
mod tests;
