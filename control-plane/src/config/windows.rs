//! The windows a tier and its endpoint rules count in, read from the document in either form
//! (shorthand or `limits`), with the field each came from, whether it is shadowed, and the
//! policy name clients see it under.
//!
//! Validation ([`super::validate`]) checks them by the field they came from; compilation
//! ([`super::CompiledConfig`]) turns them into what decisions count.

use std::fmt::Write;

use super::schema::{CounterAlgorithm, EndpointRule, TierConfig, WindowConfig};
use super::slots;
use crate::store::Algorithm;

/// One window as the document gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WrittenWindow {
    /// Field path of the window (`tiers[0].limits[1]`, `tiers[0].requests_per_window`,
    /// `tiers[0].endpoints./x`, `tiers[0].endpoints./x.limits[0]`).
    pub path: String,
    pub limit: u64,
    pub seconds: u64,
    /// Shadowed by the top level, the tier or the rule.
    pub shadow: bool,
    /// The window's own `algorithm`, else its tier's, else exact.
    pub algorithm: CounterAlgorithm,
    /// `precision_ms` as written (only a `limits` window has one).
    pub precision_ms: Option<u64>,
}

impl WrittenWindow {
    /// Whether this window, enforced, makes `other` useless: it is at least as long and
    /// allows no more requests, so it is full whenever `other` is.
    pub fn dominates(&self, other: &WrittenWindow) -> bool {
        !self.shadow && self.seconds >= other.seconds && self.limit <= other.limit
    }

    /// How its counters keep it; a slotted window's slot is the written `precision_ms`, else
    /// the default ([`slots::default_precision_ms`]).
    pub fn counter_algorithm(&self) -> Algorithm {
        match self.algorithm {
            CounterAlgorithm::ExactLog => Algorithm::Exact,
            CounterAlgorithm::Slotted => Algorithm::Slotted {
                slot_us: slots::precision_ms(self.seconds, self.precision_ms).saturating_mul(1_000),
            },
        }
    }
}

/// The tier's own windows, in document order (empty for an unlimited tier). `at` is the
/// tier's path (`tiers[0]`), `shadow_all` the top-level `shadow`.
pub(crate) fn tier_windows(at: &str, shadow_all: bool, tier: &TierConfig) -> Vec<WrittenWindow> {
    let shadow = shadow_all || tier.shadow;
    if tier.unlimited {
        return Vec::new();
    }
    match (&tier.limits, tier.requests_per_window) {
        (Some(limits), _) => listed(&format!("{at}.limits"), limits, shadow, tier.algorithm),
        (None, Some(limit)) => vec![WrittenWindow {
            path: format!("{at}.requests_per_window"),
            limit,
            seconds: tier.window_size_seconds,
            shadow,
            algorithm: tier.algorithm.unwrap_or_default(),
            precision_ms: None,
        }],
        (None, None) => Vec::new(),
    }
}

/// The windows of the endpoint rule `pattern` of `tier`, in document order.
pub(crate) fn rule_windows(
    at: &str,
    shadow_all: bool,
    tier: &TierConfig,
    pattern: &str,
    rule: &EndpointRule,
) -> Vec<WrittenWindow> {
    let path = format!("{at}.endpoints.{pattern}");
    let shadow = shadow_all || tier.shadow;
    match rule {
        EndpointRule::Limit(limit) => vec![WrittenWindow {
            path,
            limit: *limit,
            seconds: tier.window_size_seconds,
            shadow,
            algorithm: tier.algorithm.unwrap_or_default(),
            precision_ms: None,
        }],
        EndpointRule::Rule(rule) => listed(
            &format!("{path}.limits"),
            &rule.limits,
            shadow || rule.shadow,
            tier.algorithm,
        ),
    }
}

/// The algorithm of a `limits` window: its own, else its tier's, else exact.
pub(crate) fn window_algorithm(
    window: &WindowConfig,
    tier: Option<CounterAlgorithm>,
) -> CounterAlgorithm {
    window.algorithm.or(tier).unwrap_or_default()
}

fn listed(
    at: &str,
    limits: &[WindowConfig],
    shadow: bool,
    tier_algorithm: Option<CounterAlgorithm>,
) -> Vec<WrittenWindow> {
    limits
        .iter()
        .enumerate()
        .map(|(i, w)| WrittenWindow {
            path: format!("{at}[{i}]"),
            limit: w.limit,
            seconds: w.window_seconds,
            shadow,
            algorithm: window_algorithm(w, tier_algorithm),
            precision_ms: w.precision_ms,
        })
        .collect()
}

/// The name of a window in the `RateLimit-Policy` field: `<tier>-<W>s` for a tier window,
/// `<tier>-<pattern>-<W>s` for a rule window (`free-60s`, `free-/api/v1/search-1s`).
///
/// Unique per (counter, window) within a configuration: tier names are unique and hold no
/// `-`, a rule pattern starts with `/` (which no window length does), and a counter has one
/// window per length. ASCII only: every byte of a pattern outside printable ASCII, and `%`
/// itself, is percent-encoded (`%C3%A9`, `%25`), which keeps two patterns apart in their
/// names too.
pub fn policy_name(tier: &str, rule: Option<&str>, seconds: u64) -> String {
    let mut name = String::with_capacity(tier.len() + rule.map_or(0, str::len) + 8);
    name.push_str(tier);
    name.push('-');
    if let Some(pattern) = rule {
        for byte in pattern.bytes() {
            if byte.is_ascii_graphic() && byte != b'%' {
                name.push(char::from(byte));
            } else {
                let _ = write!(name, "%{byte:02X}");
            }
        }
        name.push('-');
    }
    let _ = write!(name, "{seconds}s");
    name
}

#[cfg(test)]
mod tests;
