//! Requests the filter denied itself (from an earlier answer's `deny_for_ms`), reported with
//! its next batch call: checked against the configuration in force and bounded before they
//! reach the metrics, so a broken or hostile filter can neither invent series nor overflow
//! counters.

use rl_wire::LocalDenials;

use crate::config::CompiledConfig;
use crate::metrics::Metrics;
use crate::rules::normalize_path;

/// Entries of one call looked at; the rest are ignored.
pub const MAX_ENTRIES_PER_CALL: usize = 256;

/// Requests one call may report in all; counts beyond are ignored. A filter's local denials
/// last at most a second per cached answer, so a real report stays far below.
pub const MAX_COUNT_PER_CALL: u64 = 1_000_000;

/// A report entry resolved against the configuration: the labels a decision here would have
/// used.
#[derive(Debug, PartialEq, Eq)]
pub struct Resolved<'a> {
    pub tier: &'a str,
    /// The endpoint rule the request matched (`None`: no rule, `other`).
    pub rule: Option<&'a str>,
    pub policy: &'a str,
}

/// The labels of `entry` under `cfg`: its tier and policy must be configured (the policy a
/// window of that tier or of one of its rules); its endpoint is the denial's binding counter's
/// (a rule pattern, or the request path for a tier window), from which the rule the request
/// matched follows. `None` for an entry naming anything else.
pub fn resolve<'a>(cfg: &'a CompiledConfig, entry: &LocalDenials) -> Option<Resolved<'a>> {
    let tier = cfg.tier(cfg.tier_by_name(entry.tier.as_deref()?)?);
    let policy = entry.policy.as_deref()?;
    let rule_windows = tier.rules.entries().flat_map(|(_, windows)| windows);
    let policy = tier
        .windows
        .iter()
        .chain(rule_windows)
        .find(|w| w.policy == policy)?
        .policy
        .as_str();
    let rule = match tier.rules.patterns().find(|&p| p == entry.endpoint) {
        Some(pattern) => Some(pattern),
        None => tier
            .rules
            .longest_match(&normalize_path(&entry.endpoint))
            .map(|(pattern, _)| pattern),
    };
    Some(Resolved {
        tier: tier.name.as_str(),
        rule,
        policy,
    })
}

/// Counts every valid entry of one call as throttled decisions, within the per-call bounds;
/// returns how many requests were counted.
pub fn count(metrics: &Metrics, cfg: &CompiledConfig, entries: &[LocalDenials]) -> u64 {
    let mut budget = MAX_COUNT_PER_CALL;
    for entry in entries.iter().take(MAX_ENTRIES_PER_CALL) {
        let Some(resolved) = resolve(cfg, entry) else {
            continue;
        };
        let n = entry.count.min(budget);
        metrics.observe_local_denials(resolved.tier, resolved.rule, resolved.policy, n);
        budget -= n;
        if budget == 0 {
            break;
        }
    }
    MAX_COUNT_PER_CALL - budget
}

#[cfg(test)]
mod tests;
