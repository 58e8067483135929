//! Concurrency leases: how many requests of one identity are in flight (a tier's
//! `max_concurrent`).
//!
//! A slot is a lease with an expiry. Taking one admits a request iff fewer than `max` unexpired
//! leases are held; the filter renews it while the request is in flight and releases it when
//! the request ends. A lease nobody renews (its Envoy died, a release was lost) expires on its
//! own, so a slot is never lost for longer than one lease. Unlike a window's count, the number
//! of leases can shrink at any moment (a release), so a full lease set says nothing about the
//! future: concurrency refusals are never cached.
//!
//! In Redis an identity's leases are one sorted set (member = lease id, score = expiry in µs on
//! Redis's clock) under the identity's hash tag, changed by `leases.lua`; in memory a map per
//! key, on the store's clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{Clock, StoreError};

/// A lease the filter holds: its set (the identity's lease key) and its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseRef {
    pub key: String,
    pub id: String,
}

/// What taking a lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseOutcome {
    pub granted: bool,
    /// Unexpired leases of the set after the call (the new one included when granted).
    pub held: u64,
}

#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes lease `id` in the set `key`, lasting `ttl_us`, iff fewer than `max` unexpired
    /// leases are held there.
    async fn acquire(
        &self,
        key: &str,
        max: u64,
        id: &str,
        ttl_us: u64,
    ) -> Result<LeaseOutcome, StoreError>;

    /// Pushes the expiry of each unexpired lease of `leases` to `ttl_us` from now; an expired
    /// or released lease stays gone (its slot may have been taken since). Returns how many
    /// were renewed.
    async fn renew(&self, leases: &[LeaseRef], ttl_us: u64) -> Result<u64, StoreError>;

    /// Drops `leases`; returns how many were still held.
    async fn release(&self, leases: &[LeaseRef]) -> Result<u64, StoreError>;
}

/// Sets of leases in this process.
#[derive(Debug)]
pub struct MemoryLeases {
    clock: Arc<dyn Clock>,
    sets: Mutex<HashMap<String, HashMap<String, u64>>>,
    /// Acquisitions since the last sweep of every set.
    since_sweep: AtomicU64,
}

/// Every this many acquisitions the expired leases of every set are dropped, so sets of
/// identities that never come back do not stay.
const SWEEP_EVERY: u64 = 1024;

impl MemoryLeases {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            sets: Mutex::new(HashMap::new()),
            since_sweep: AtomicU64::new(0),
        }
    }

    /// Sets with at least one lease, expired or not (for tests and operations).
    pub fn set_count(&self) -> usize {
        self.sets.lock().len()
    }

    fn sweep(sets: &mut HashMap<String, HashMap<String, u64>>, now_us: u64) {
        sets.retain(|_, set| {
            set.retain(|_, expiry| *expiry > now_us);
            !set.is_empty()
        });
    }
}

#[async_trait]
impl LeaseStore for MemoryLeases {
    async fn acquire(
        &self,
        key: &str,
        max: u64,
        id: &str,
        ttl_us: u64,
    ) -> Result<LeaseOutcome, StoreError> {
        let now = self.clock.now_us();
        let mut sets = self.sets.lock();
        if self.since_sweep.fetch_add(1, Ordering::Relaxed) + 1 >= SWEEP_EVERY {
            self.since_sweep.store(0, Ordering::Relaxed);
            Self::sweep(&mut sets, now);
        }
        let set = sets.entry(key.to_string()).or_default();
        set.retain(|_, expiry| *expiry > now);
        let held = set.len() as u64;
        if held >= max {
            if set.is_empty() {
                sets.remove(key);
            }
            return Ok(LeaseOutcome {
                granted: false,
                held,
            });
        }
        set.insert(id.to_string(), now.saturating_add(ttl_us));
        Ok(LeaseOutcome {
            granted: true,
            held: set.len() as u64,
        })
    }

    async fn renew(&self, leases: &[LeaseRef], ttl_us: u64) -> Result<u64, StoreError> {
        let now = self.clock.now_us();
        let mut sets = self.sets.lock();
        let mut renewed = 0;
        for lease in leases {
            if let Some(expiry) = sets
                .get_mut(&lease.key)
                .and_then(|set| set.get_mut(&lease.id))
                .filter(|expiry| **expiry > now)
            {
                *expiry = now.saturating_add(ttl_us);
                renewed += 1;
            }
        }
        Ok(renewed)
    }

    async fn release(&self, leases: &[LeaseRef]) -> Result<u64, StoreError> {
        let now = self.clock.now_us();
        let mut sets = self.sets.lock();
        let mut released = 0;
        for lease in leases {
            let Some(set) = sets.get_mut(&lease.key) else {
                continue;
            };
            if set.remove(&lease.id).is_some_and(|expiry| expiry > now) {
                released += 1;
            }
            if set.is_empty() {
                sets.remove(&lease.key);
            }
        }
        Ok(released)
    }
}

#[cfg(test)]
mod tests;
