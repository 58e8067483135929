//! The answer to the filter from the store's outcome: the binding window, `policies`,
//! Retry-After and Reset, and whether a shadow window would have refused the request.

use rl_wire::{CounterReport, DecisionResponse, PolicyReport, Verdict};

use super::deny_cache::deny_for_ms;
use super::{Applied, ShadowDenial, bare, rfc3339};
use crate::config::Tier;
use crate::store::{CounterState, Outcome};

/// Longest path echoed back as the 429's `endpoint` (rules are shown whole): the client's
/// own path is only a hint there, and echoing kilobytes of it would bloat every denial.
pub(super) const MAX_ECHOED_PATH: usize = 256;

pub(super) fn bounded(path: &str) -> &str {
    if path.len() <= MAX_ECHOED_PATH {
        return path;
    }
    let mut end = MAX_ECHOED_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

pub(super) fn ceil_secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// A window with its state after the decision.
pub(super) type Judged<'a, 'b> = (&'b Applied<'a>, &'b CounterState);

fn remaining(applied: &Applied<'_>, state: &CounterState) -> u64 {
    applied.spec.limit.saturating_sub(state.count)
}

/// The window the answer describes among `candidates`: the least remaining, ties to the
/// lower limit, then to the longer wait; the first in configuration order after that.
pub(super) fn binding<'a, 'b>(candidates: &[Judged<'a, 'b>]) -> Option<Judged<'a, 'b>> {
    candidates.iter().copied().min_by_key(|&(a, s)| {
        (
            remaining(a, s),
            a.spec.limit,
            std::cmp::Reverse(s.free_at_us),
        )
    })
}

/// [`binding`] among windows that all refused the request: each has no room for it, whatever
/// units it has left below its cost (a denial reports none left), so the lower limit decides,
/// then the longer wait. The deny-until cache, which knows a full counter's moment of room
/// and not its count, answers by the same rule.
fn binding_when_full<'a, 'b>(candidates: &[Judged<'a, 'b>]) -> Option<Judged<'a, 'b>> {
    candidates
        .iter()
        .copied()
        .min_by_key(|&(a, s)| (a.spec.limit, std::cmp::Reverse(s.free_at_us)))
}

/// When every one of `full` has room again (µs on the store's clock), after `now_us`.
fn all_free_at(full: &[Judged<'_, '_>], now_us: u64) -> u64 {
    // A full counter's entries are inside the window, so it is after now; the floor only
    // keeps a malformed store answer from producing a wait of zero.
    full.iter()
        .map(|(_, s)| s.free_at_us)
        .max()
        .unwrap_or(now_us)
        .max(now_us + 1)
}

/// Builds the answer from the store's outcome, and says whether a shadowed window would have
/// refused an admitted request.
///
/// Allowed: the headers describe the window with the least remaining (shadowed ones
/// included: the headers are what enforced limits would send); ties go to the lower limit,
/// then to the longer wait. Denied: among the full enforced windows, the lowest limit is
/// the one described (ties to the longer wait; with requests of cost 1 this is the same rule,
/// every full window having none left), and `Retry-After`/`X-RateLimit-Reset` give the moment
/// every full enforced window has room again, so a client that waits that long is not denied
/// again by another.
pub(super) fn answer(
    tier: &Tier,
    applied: &[Applied<'_>],
    outcome: &Outcome,
    path: &str,
) -> (DecisionResponse, Option<ShadowDenial>) {
    let judged: Vec<Judged<'_, '_>> = applied.iter().zip(outcome.counters.iter()).collect();
    let full = |shadow: bool| -> Vec<Judged<'_, '_>> {
        judged
            .iter()
            .copied()
            .filter(|(a, s)| s.full && a.spec.shadow == shadow)
            .collect()
    };
    let candidates = if outcome.admitted {
        judged.clone()
    } else {
        full(false)
    };
    let chosen = if outcome.admitted {
        binding(&candidates)
    } else {
        binding_when_full(&candidates)
    };
    let Some((bound, state)) = chosen else {
        // The store reported no counter, or a denial without a full enforced counter: cannot
        // happen for a non-empty request; answer conservatively without headers rather than
        // inventing figures.
        let verdict = if outcome.admitted {
            Verdict::FailedOpen
        } else {
            Verdict::Unavailable
        };
        return (bare(verdict), None);
    };
    let endpoint = |a: &Applied<'_>| a.rule.unwrap_or_else(|| bounded(path)).to_string();
    let policies = applied
        .iter()
        .map(|a| PolicyReport {
            name: a.window.policy.clone(),
            limit: a.spec.limit,
            window: a.window.length.as_secs(),
        })
        .collect();
    let window = bound.window.length.as_secs();
    if outcome.admitted {
        let full_shadow = full(true);
        let shadow_denial = binding(&full_shadow).map(|(a, _)| ShadowDenial {
            policy: a.window.policy.clone(),
            limit: a.spec.limit,
            window: a.window.length.as_secs(),
            endpoint: endpoint(a),
            retry_after: ceil_secs(all_free_at(&full_shadow, outcome.now_us) - outcome.now_us),
        });
        let response = DecisionResponse {
            verdict: Verdict::Allow,
            tier: Some(tier.name.clone()),
            counter: Some(CounterReport {
                limit: bound.spec.limit,
                remaining: remaining(bound, state),
                reset: ceil_secs(state.free_at_us),
                retry_after: None,
                window,
                endpoint: endpoint(bound),
                reset_at: None,
                policy: Some(bound.window.policy.clone()),
                reset_after: Some(ceil_secs(state.free_at_us.saturating_sub(outcome.now_us))),
                // Only a 429's message reads it: not worth a look at the rules per request.
                units: false,
            }),
            policies,
            shadow_denied: shadow_denial.is_some(),
            deny_for_ms: None,
            lease: None,
            usage: None,
        };
        return (response, shadow_denial);
    }
    // Both headers round this one instant up: Retry-After from now, Reset to a Unix second.
    let free_at = all_free_at(&candidates, outcome.now_us);
    let retry_after = ceil_secs(free_at - outcome.now_us);
    let reset = ceil_secs(free_at);
    let response = DecisionResponse {
        verdict: Verdict::Deny,
        tier: Some(tier.name.clone()),
        counter: Some(CounterReport {
            limit: bound.spec.limit,
            remaining: 0,
            reset,
            retry_after: Some(retry_after),
            window,
            endpoint: endpoint(bound),
            reset_at: Some(rfc3339(reset)),
            policy: Some(bound.window.policy.clone()),
            reset_after: Some(retry_after),
            units: counts_units(tier, bound.rule),
        }),
        policies,
        shadow_denied: false,
        // The binding counter is enforced and full for this request: it stays so until its
        // moment of room.
        deny_for_ms: deny_for_ms(state.free_at_us, outcome.now_us),
        lease: None,
        usage: None,
    };
    (response, None)
}

/// Whether a window of `rule` (or the tier's budget, for `None`) counts units rather than
/// requests: the rule's requests weigh more than one or take charges; a budget does when any
/// of the tier's rules does, since those units land in it too.
fn counts_units(tier: &Tier, rule: Option<&str>) -> bool {
    let mut rules = tier.rules.entries();
    match rule {
        Some(pattern) => rules.any(|(p, limits)| p == pattern && limits.weighs()),
        None => rules.any(|(_, limits)| limits.weighs()),
    }
}

#[cfg(test)]
mod tests;
