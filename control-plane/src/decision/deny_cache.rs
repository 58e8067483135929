//! The deny-until cache: which counters are full, so a request that needs one of them is
//! refused without a store call.
//!
//! Keyed by counter (the storage key names identity, window and rule), never by identity: a
//! full endpoint rule refuses that endpoint only. A request has a cost (its endpoint rule's,
//! else [`REQUEST_COST`]), and what the cache knows of a counter is per cost: a counter with
//! room for 1 unit may have none for 5, and the moment 5 units are free is later than the
//! moment 1 is. A counter that is full for a request of some cost stays full for it until
//! the moment the store named for that cost (`free_at_us`): its level can only fall as
//! entries leave the window, or rise by what other requests record, which keeps it full
//! longer, never shorter. What a counter's level rose by makes its "room" knowledge for every
//! other cost stale: a request recorded in a counter drops what the cache knew of it for
//! other costs. That moment is
//! kept on the control plane's own clock, as the store's remaining time added to the local
//! time taken before the call (Redis time is never compared with the host's clock), so the
//! local deadline is never later than the true one.
//!
//! To answer exactly as the store would (the binding window and Retry-After depend on every
//! full enforced window of the request), the cache also knows counters that had room ("room"
//! entries), and answers only when it knows the state of every enforced counter of the
//! request, one of them full. A counter fills only by a request this process sends to the
//! store, whose outcome the cache learns; what another replica records is not seen, so every
//! piece of knowledge is trusted for at most [`KNOWLEDGE_US`] after it was learnt.
//!
//! Dropped on a configuration change (entries hold the configuration they were learnt under),
//! on a store error (the store may have lost or be about to lose its data), and bounded in
//! size: at the cap, knowledge past its horizon is swept out, then new counters are refused.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::CompiledConfig;
use crate::store::{CounterSpec, CounterState, Outcome};

/// What a request consumes of a counter unless its endpoint rule gives it a `cost`.
pub const REQUEST_COST: u64 = 1;

/// Default largest number of counters the cache knows.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// How long a piece of knowledge is trusted after it was learnt (µs on the local clock):
/// bounds what another replica's requests, or a store that lost its data without an error,
/// can make stale.
pub const KNOWLEDGE_US: u64 = 1_000_000;

/// Shortest gap between two sweeps of a full cache, so a cache kept full by live entries does
/// not cost a whole scan per decision.
const SWEEP_GAP_US: u64 = 100_000;

/// The time until a counter that is full now has room again, in whole milliseconds rounded
/// down (never longer than true); `None` when under a millisecond.
pub fn deny_for_ms(free_at_us: u64, now_us: u64) -> Option<u64> {
    Some(free_at_us.saturating_sub(now_us) / 1_000).filter(|&ms| ms > 0)
}

/// Whether a counter in state `state` after a decision has no room for the next request of
/// `cost`.
fn full_after(spec: &CounterSpec, state: &CounterState, admitted: bool, cost: u64) -> bool {
    if admitted {
        // Recorded: the request's own weight is in `count`.
        state.count.saturating_add(cost) > spec.limit
    } else {
        // Nothing recorded: `full` says this request (of `cost`) found no room.
        state.full
    }
}

#[derive(Debug, Clone, Copy)]
struct Full {
    /// When the counter has room again, on the store's clock (what the answer's Reset names).
    free_at_store_us: u64,
    /// The same moment on the local clock.
    until_us: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The cost of the requests this entry speaks for.
    cost: u64,
    limit: u64,
    window_us: u64,
    /// The store's clock at the observation: an older outcome never overwrites a newer one.
    seen_store_us: u64,
    /// Local time after which this entry says nothing.
    known_until_us: u64,
    /// `None`: the counter had room.
    full: Option<Full>,
}

impl Entry {
    fn valid(&self, now_us: u64) -> bool {
        now_us < self.known_until_us
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// The configuration the entries were learnt under (held, so its address is not reused).
    config: Option<Arc<CompiledConfig>>,
    /// Per counter, what is known for each cost seen (one entry per cost).
    entries: HashMap<String, Vec<Entry>>,
    /// Local time before which a full cache is not swept again.
    next_sweep_us: u64,
}

impl Inner {
    fn follows(&self, cfg: &Arc<CompiledConfig>) -> bool {
        self.config.as_ref().is_some_and(|c| Arc::ptr_eq(c, cfg))
    }

    /// Room for one more entry: at the cap, sweep out what is past its horizon (at most once
    /// per [`SWEEP_GAP_US`]).
    fn has_room(&mut self, capacity: usize, now_us: u64) -> bool {
        if self.entries.len() < capacity {
            return true;
        }
        if now_us < self.next_sweep_us {
            return false;
        }
        self.entries.retain(|_, known| {
            known.retain(|e| e.valid(now_us));
            !known.is_empty()
        });
        self.next_sweep_us = now_us.saturating_add(SWEEP_GAP_US);
        self.entries.len() < capacity
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct DenyCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl DenyCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Forgets every counter (a store error).
    pub fn clear(&self) {
        self.inner.lock().entries.clear();
    }

    /// Counters known now.
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The outcome the store would give now for a request of `cost` needing `specs` under
    /// `cfg`, if the cache knows it is a denial: every enforced counter known for this cost,
    /// at least one full. Shadow counters take no part in a denial's answer and are reported
    /// with room. `now_us` is the local clock. A change of configuration empties the cache
    /// first.
    pub fn lookup(
        &self,
        cfg: &Arc<CompiledConfig>,
        specs: &[CounterSpec],
        cost: u64,
        now_us: u64,
    ) -> Option<Outcome> {
        let mut inner = self.inner.lock();
        if !inner.follows(cfg) {
            inner.entries.clear();
            inner.config = Some(cfg.clone());
            return None;
        }
        if inner.entries.is_empty() {
            return None;
        }
        let mut known = Vec::with_capacity(specs.len());
        // The full counter that is free last: its remaining time places "now" on the store's
        // clock.
        let mut last: Option<Full> = None;
        for spec in specs {
            if spec.shadow {
                known.push(None);
                continue;
            }
            let entry = inner
                .entries
                .get(&spec.key)?
                .iter()
                .find(|e| e.cost == cost)?;
            if !entry.valid(now_us)
                || entry.limit != spec.limit
                || entry.window_us != spec.window_us
            {
                return None;
            }
            let full = entry.full.filter(|f| now_us < f.until_us);
            if let Some(f) = full
                && last.is_none_or(|l| f.free_at_store_us > l.free_at_store_us)
            {
                last = Some(f);
            }
            known.push(full);
        }
        drop(inner);
        let last = last?;
        let store_now_us = last.free_at_store_us.saturating_sub(last.until_us - now_us);
        let counters = specs
            .iter()
            .zip(known)
            .map(|(spec, full)| match full {
                Some(f) => CounterState {
                    count: spec.limit,
                    full: true,
                    free_at_us: f.free_at_store_us,
                },
                None => CounterState {
                    count: 0,
                    full: false,
                    free_at_us: store_now_us,
                },
            })
            .collect();
        Some(Outcome {
            admitted: false,
            now_us: store_now_us,
            counters,
        })
    }

    /// Learns the state of every enforced counter of a request of `cost` from the store's
    /// `outcome`, decided under `cfg`; `started_us` is the local clock read before the store
    /// call. Counters with room are learnt only alongside a full one (they matter only then),
    /// or when already known.
    pub fn learn(
        &self,
        cfg: &Arc<CompiledConfig>,
        specs: &[CounterSpec],
        cost: u64,
        outcome: &Outcome,
        started_us: u64,
    ) {
        if specs.len() != outcome.counters.len() {
            return;
        }
        let observed = |spec: &CounterSpec, state: &CounterState| -> Option<Full> {
            let full = full_after(spec, state, outcome.admitted, cost);
            // A full counter whose moment of room is not ahead is not cacheable (malformed).
            (full && state.free_at_us > outcome.now_us).then(|| Full {
                free_at_store_us: state.free_at_us,
                until_us: started_us.saturating_add(state.free_at_us - outcome.now_us),
            })
        };
        let any_full = specs
            .iter()
            .zip(&outcome.counters)
            .any(|(spec, state)| !spec.shadow && full_after(spec, state, outcome.admitted, cost));
        let mut inner = self.inner.lock();
        if !inner.follows(cfg) {
            return;
        }
        for (spec, state) in specs.iter().zip(&outcome.counters) {
            if spec.shadow {
                continue;
            }
            let full = full_after(spec, state, outcome.admitted, cost);
            // Recorded here: the level rose, so what is known for other costs may be stale.
            let recorded = outcome.admitted && !state.full;
            let entry = Entry {
                cost,
                limit: spec.limit,
                window_us: spec.window_us,
                seen_store_us: outcome.now_us,
                known_until_us: started_us.saturating_add(KNOWLEDGE_US),
                full: observed(spec, state),
            };
            let cacheable = !full || entry.full.is_some();
            if let Some(known) = inner.entries.get_mut(&spec.key) {
                if recorded {
                    known.retain(|e| e.cost == cost);
                }
                match known.iter().position(|e| e.cost == cost) {
                    // Full but not cacheable: what was known no longer holds.
                    Some(i) if !cacheable => {
                        known.remove(i);
                    }
                    Some(i) if outcome.now_us >= known[i].seen_store_us => known[i] = entry,
                    // An older outcome never overwrites a newer one.
                    Some(_) => {}
                    None if cacheable && any_full => known.push(entry),
                    None => {}
                }
                if known.is_empty() {
                    inner.entries.remove(&spec.key);
                }
                continue;
            }
            if cacheable && any_full && inner.has_room(self.capacity, started_us) {
                inner.entries.insert(spec.key.clone(), vec![entry]);
            }
        }
    }
}

#[cfg(test)]
mod tests;
