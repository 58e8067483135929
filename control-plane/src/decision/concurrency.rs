//! Concurrency limits (a tier's `max_concurrent`): the lease a request takes, the handle the
//! filter gets for it, and the 429 of a full tier.
//!
//! Order: a request of such a tier takes its lease first, then is checked against its
//! windows; a request the windows refuse (or the store fails) gives its lease back at once.
//! So a request refused for concurrency is never counted in a window, and a request refused
//! by a window holds no slot once answered (for the length of one store call it did, which
//! may refuse another request of the same identity arriving in that instant: the price of
//! keeping the windows' script untouched). Requests whose windows are known full from the
//! deny-until cache never take a lease.

use rl_wire::{CounterReport, DecisionResponse, MAX_LEASE_ID_BYTES, Verdict};

use super::answer::bounded;
use super::rfc3339;
use crate::config::Tier;
use crate::store::{LeaseRef, keys};

/// How long a lease lasts without a renewal unless configured otherwise
/// (`RATE_LIMIT_LEASE_SECONDS`): above Envoy's default route timeout (15 s), and the filter
/// renews it while the request is in flight anyway.
pub const DEFAULT_LEASE_SECONDS: u64 = 30;
/// Shortest lease: the filter renews a lease after a third of its life, on a tick of 500 ms.
pub const MIN_LEASE_SECONDS: u64 = 3;
/// Longest lease: how long an Envoy that died may keep slots taken.
pub const MAX_LEASE_SECONDS: u64 = 3600;

/// Separates the lease's id from its set's key in a handle (in neither of them).
const SEPARATOR: char = '|';

/// A fresh lease id: 128 random bits, so ids of different replicas never meet.
pub(super) fn new_lease_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// The lease an identity's request takes.
pub(super) fn lease_for(identity: &str) -> LeaseRef {
    LeaseRef {
        key: keys::lease_key(identity),
        id: new_lease_id(),
    }
}

/// What the filter holds for a lease: `<id>|<key>`, so a renewal or release names its set
/// without the control plane remembering anything.
pub(super) fn handle(lease: &LeaseRef) -> String {
    format!("{}{SEPARATOR}{}", lease.id, lease.key)
}

/// The lease a handle names; `None` when it is not one this control plane hands out.
pub fn parse_handle(handle: &str) -> Option<LeaseRef> {
    if handle.len() > MAX_LEASE_ID_BYTES {
        return None;
    }
    let (id, key) = handle.split_once(SEPARATOR)?;
    let valid_id = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (valid_id && keys::is_lease_key(key)).then(|| LeaseRef {
        key: key.to_string(),
        id: id.to_string(),
    })
}

/// The 429 of a tier whose identity has `max` requests in flight: `Retry-After: 1`, the
/// limit in `X-RateLimit-Limit`, window 0 (no window: a concurrency limit) and no policies
/// (no `RateLimit` / `RateLimit-Policy` fields). Never cacheable (`deny_for_ms` absent): a
/// slot can be released at any moment.
pub(super) fn denied(tier: &Tier, max: u64, path: &str, now_unix: u64) -> DecisionResponse {
    let reset = now_unix.saturating_add(1);
    DecisionResponse {
        verdict: Verdict::Deny,
        tier: Some(tier.name.clone()),
        counter: Some(CounterReport {
            limit: max,
            remaining: 0,
            reset,
            retry_after: Some(1),
            window: 0,
            endpoint: bounded(path).to_string(),
            reset_at: Some(rfc3339(reset)),
            policy: None,
            reset_after: Some(1),
            units: false,
        }),
        policies: Vec::new(),
        shadow_denied: false,
        deny_for_ms: None,
        lease: None,
        usage: None,
    }
}

#[cfg(test)]
mod tests;
