//! After the response: the handle an admitted request gets when its endpoint rule takes
//! charges (`max_charge`) or counts only some responses (`count_statuses`), and what a charge
//! or a release coming back with it does.
//!
//! The handle names what the control plane needs to find the request's counters again (the
//! identity, the tier and the rule) and, for a release, the entry it recorded (the store's
//! time of the admission and its weight), with a random name that makes each adjustment apply
//! once. It comes back from the filter, so it is trusted for nothing else: the counters are
//! derived again from the configuration in force (keys built by `store::keys`, so only the
//! rate-limit namespace is ever touched), a charge is cut to the rule's `max_charge`, a
//! release takes back only an entry of the rule's `cost` and only from the rule's windows, and
//! a handle whose tier or rule the configuration no longer has is ignored. Handles are plain
//! data, not signed: any replica can read any other's, and the usage endpoint is behind the
//! decision secret like the decision endpoints, whose callers can already count requests
//! against any identity.

use rl_wire::{MAX_USAGE_HANDLE_BYTES, Usage};
use serde::{Deserialize, Serialize};

use crate::config::{CompiledConfig, EndpointLimits, Tier};

/// Version tag of the handle's layout.
const VERSION: &str = "u1";

/// What a usage handle says, as a JSON array (`[version, recorded_us, cost, once, tier, rule,
/// identity]`): compact, and any identity or rule text fits without an escaping scheme of our
/// own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle(
    String,
    /// The store's time of the admission (µs).
    pub u64,
    /// The units the request took from each counter.
    pub u64,
    /// 32 hex digits, unique per admitted request.
    pub String,
    /// Tier name.
    pub String,
    /// Endpoint rule pattern.
    pub String,
    /// Identity (the counters' shard).
    pub String,
);

impl Handle {
    pub fn new(recorded_us: u64, cost: u64, tier: &str, rule: &str, identity: &str) -> Self {
        Handle(
            VERSION.to_string(),
            recorded_us,
            cost,
            format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
            tier.to_string(),
            rule.to_string(),
            identity.to_string(),
        )
    }

    pub fn recorded_us(&self) -> u64 {
        self.1
    }

    pub fn cost(&self) -> u64 {
        self.2
    }

    /// The name of this request's charge or release (`kind`: `c`, `r`) in the store.
    pub fn once(&self, kind: char) -> String {
        format!("{}{kind}", self.3)
    }

    pub fn identity(&self) -> &str {
        &self.6
    }

    /// `None` when it would be longer than the filter may send back.
    pub fn encode(&self) -> Option<String> {
        serde_json::to_string(self)
            .ok()
            .filter(|text| text.len() <= MAX_USAGE_HANDLE_BYTES)
    }

    /// A handle this control plane could have handed out; `None` for anything else.
    pub fn parse(text: &str) -> Option<Handle> {
        if text.len() > MAX_USAGE_HANDLE_BYTES {
            return None;
        }
        let handle: Handle = serde_json::from_str(text).ok()?;
        let once_ok = handle.3.len() == 32 && handle.3.bytes().all(|b| b.is_ascii_hexdigit());
        let once_ok = once_ok && !handle.3.bytes().any(|b| b.is_ascii_uppercase());
        (handle.0 == VERSION && once_ok && handle.2 >= 1 && !handle.6.is_empty()).then_some(handle)
    }

    /// The tier and rule the handle names, in `cfg`; `None` when `cfg` has them no more.
    pub fn resolve<'a>(
        &self,
        cfg: &'a CompiledConfig,
    ) -> Option<(&'a Tier, &'a str, &'a EndpointLimits)> {
        let tier = cfg.tier(cfg.tier_by_name(&self.4)?);
        let (pattern, limits) = tier.rules.entries().find(|(p, _)| *p == self.5)?;
        Some((tier, pattern, limits))
    }
}

/// Whether requests matching `limits` get a usage handle.
pub fn takes_usage(limits: &EndpointLimits) -> bool {
    limits.max_charge.is_some() || !limits.count_statuses.is_empty()
}

/// The `usage` of an admitted request recorded at `recorded_us` (store time) under `rule` of
/// `tier`; `None` when the rule takes none or the handle would be too long.
pub fn usage_for(
    tier: &str,
    rule: &str,
    limits: &EndpointLimits,
    identity: &str,
    recorded_us: u64,
) -> Option<Usage> {
    if !takes_usage(limits) {
        return None;
    }
    let handle = Handle::new(recorded_us, limits.cost, tier, rule, identity).encode()?;
    Some(Usage {
        handle,
        max_charge: limits.max_charge,
        count_statuses: limits.count_statuses.clone(),
    })
}

#[cfg(test)]
mod tests;
