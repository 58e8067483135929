//! The concurrency leases of one worker's requests (a tier's `max_concurrent`): which request
//! holds which, when each is due for renewal, which ended and must be released, and the lease
//! calls that carry renewals and releases to the control plane ([`rl_wire::LEASES_PATH`]),
//! batched, from the root context's tick.
//!
//! A lease is renewed a third of its life after it was last renewed, so two renewals may fail
//! before it expires; a request's lease is released as soon as the request ends, response
//! complete or stream reset alike. A release that cannot be delivered is tried again on later
//! ticks, [`MAX_RELEASE_ATTEMPTS`] times in all, then left to expire on its own. Renewals are
//! not retried: the next one is due a third of a lease later.

use std::collections::BTreeMap;

use rl_wire::{Lease, LeasesRequest, MAX_LEASES_PER_CALL};

/// The tick period while leases are held and nothing else needs the tick sooner.
pub const LEASE_TICK_MS: u32 = 500;

/// Sends of one release before it is left to expire.
pub const MAX_RELEASE_ATTEMPTS: u8 = 3;

/// Largest answer read from a lease call (two counts).
pub const MAX_LEASES_RESPONSE_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    id: String,
    ttl_ms: u64,
    /// Host time (Unix ms) at which to renew; `None` until the first tick sees the lease.
    renew_at_ms: Option<u64>,
}

/// A release waiting to go, with how many times it went already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    id: String,
    attempts: u8,
}

/// The leases of one engine, by the serial of the request holding each.
#[derive(Debug, Default)]
pub struct LeaseBook {
    held: BTreeMap<u64, Held>,
    releases: Vec<Release>,
    /// Releases in lease calls in flight, by token (put back if the call fails).
    in_flight: BTreeMap<u32, Vec<Release>>,
}

impl LeaseBook {
    /// Nothing held and nothing to release: the tick is not needed for leases.
    pub fn is_idle(&self) -> bool {
        self.held.is_empty() && self.releases.is_empty()
    }

    /// How many leases requests of this worker hold.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// How many releases wait for a lease call.
    pub fn pending_releases(&self) -> usize {
        self.releases.len()
    }

    /// The request `serial` was admitted holding `lease`.
    pub fn hold(&mut self, serial: u64, lease: &Lease) {
        self.held.insert(
            serial,
            Held {
                id: lease.id.clone(),
                ttl_ms: lease.ttl_ms,
                renew_at_ms: None,
            },
        );
    }

    /// `lease` belongs to no live request (its stream ended before the answer came): release
    /// it.
    pub fn orphan(&mut self, lease: &Lease) {
        self.releases.push(Release {
            id: lease.id.clone(),
            attempts: 0,
        });
    }

    /// The request `serial` ended; true when it held a lease, now waiting for release.
    pub fn end(&mut self, serial: u64) -> bool {
        let Some(held) = self.held.remove(&serial) else {
            return false;
        };
        self.releases.push(Release {
            id: held.id,
            attempts: 0,
        });
        true
    }

    /// The lease call due at `now_ms`, if any: every waiting release and every renewal due,
    /// at most [`MAX_LEASES_PER_CALL`] ids (releases first; the rest go on a later tick).
    /// Returns its body and the releases it carries (hand them to [`sent`](Self::sent)).
    pub fn due(&mut self, now_ms: u64) -> Option<(Vec<u8>, Vec<Release>)> {
        let take = self.releases.len().min(MAX_LEASES_PER_CALL);
        let releases: Vec<Release> = self.releases.drain(..take).collect();
        let mut renew = Vec::new();
        for held in self.held.values_mut() {
            let period = (held.ttl_ms / 3).max(1);
            match held.renew_at_ms {
                None => held.renew_at_ms = Some(now_ms.saturating_add(period)),
                Some(at) if now_ms >= at && releases.len() + renew.len() < MAX_LEASES_PER_CALL => {
                    renew.push(held.id.clone());
                    held.renew_at_ms = Some(now_ms.saturating_add(period));
                }
                Some(_) => {}
            }
        }
        if releases.is_empty() && renew.is_empty() {
            return None;
        }
        let request = LeasesRequest {
            renew,
            release: releases.iter().map(|r| r.id.clone()).collect(),
        };
        let body = serde_json::to_vec(&request).ok()?;
        Some((body, releases))
    }

    /// The lease call carrying `releases` was dispatched as `token`; `None`: the host refused
    /// it (the releases wait for another try).
    pub fn sent(&mut self, token: Option<u32>, releases: Vec<Release>) {
        match token {
            Some(token) => {
                self.in_flight.insert(token, releases);
            }
            None => self.retry(releases),
        }
    }

    /// Whether `token` is a lease call of this book.
    pub fn is_call(&self, token: u32) -> bool {
        self.in_flight.contains_key(&token)
    }

    /// Lease call `token` ended: `delivered` when the control plane took it (200).
    pub fn answered(&mut self, token: u32, delivered: bool) {
        let Some(releases) = self.in_flight.remove(&token) else {
            return;
        };
        if !delivered {
            self.retry(releases);
        }
    }

    fn retry(&mut self, releases: Vec<Release>) {
        self.releases.extend(
            releases
                .into_iter()
                .map(|r| Release {
                    id: r.id,
                    attempts: r.attempts.saturating_add(1),
                })
                .filter(|r| r.attempts < MAX_RELEASE_ATTEMPTS),
        );
    }
}

#[cfg(test)]
mod tests;
