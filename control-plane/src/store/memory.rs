//! In-memory counter store: the default when no Redis URL is configured.
//!
//! Same semantics as the Redis script: per counter, a log of admitted timestamps with their
//! weights (exact) or counts per slot (slotted, `slotted.rs`), trimmed to the window on every
//! access; a request takes its cost in units; shadow counters record only when they have room
//! for it. An exact log whose window becomes slotted is
//! converted into slot counts, as in Redis. The map is sharded by identity so concurrent identities do
//! not contend on one lock, while all counters of one identity share a shard, which makes a
//! multi-counter decision one critical section.
//!
//! The number of identities is capped (`--memory-max-identities`): every new identity costs
//! memory, and a client that can change its identity at will (many source addresses) could
//! otherwise grow the map without bound. At the cap a new identity is refused with
//! [`StoreError::Full`]; an identity being tracked is never dropped to make room, because
//! forgetting its counts would admit it again (over-admission). Identities whose every entry
//! has left the window do not count: at the cap they are swept out before anyone is refused.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::leases::{LeaseStore, MemoryLeases};
use super::slotted::Slots;
use super::usage::{self, Adjustment, Change};
use super::{
    Algorithm, Clock, CounterSpec, CounterState, CounterStore, MonotonicClock, Outcome, StoreError,
    keys,
};

const SHARDS: usize = 64;

/// Identities tracked at most unless configured otherwise (`--memory-max-identities`).
pub const DEFAULT_MAX_IDENTITIES: usize = 1_000_000;

#[derive(Debug, Default)]
struct Log {
    /// Admitted requests, oldest first: timestamp and weight (the request's cost). Never
    /// more entries than the largest limit it was checked against, because nothing is
    /// recorded without room (shadow or enforced) and every weight is at least 1.
    entries: VecDeque<(u64, u64)>,
    /// The sum of the entries' weights.
    total: u64,
    window_us: u64,
}

impl Log {
    /// Drops entries at or before `now - window`: the window is `(now - W, now]`.
    fn trim(&mut self, now_us: u64, window_us: u64) {
        self.window_us = window_us;
        let horizon = now_us.saturating_sub(window_us);
        while let Some(&(ts, weight)) = self.entries.front() {
            if ts > horizon {
                break;
            }
            self.total = self.total.saturating_sub(weight);
            self.entries.pop_front();
        }
    }

    fn record(&mut self, now_us: u64, cost: u64) {
        self.entries.push_back((now_us, cost));
        self.total = self.total.saturating_add(cost);
    }

    /// When the entry whose leaving frees room for `cost` units leaves (the oldest one's when
    /// there is room; the newest one's when the log can never hold `cost`).
    fn free_at(&self, now_us: u64, limit: u64, cost: u64) -> u64 {
        let must = super::must_leave(self.total, limit, cost);
        let mut left = 0u64;
        let mut last = None;
        for &(ts, weight) in &self.entries {
            left = left.saturating_add(weight);
            last = Some(ts);
            if left >= must {
                break;
            }
        }
        last.map_or(now_us, |ts| ts + self.window_us)
    }

    /// Removes one entry of `weight` recorded at `recorded_us` (call [`trim`](Self::trim)
    /// first: an entry that left is not found). Returns whether there was one.
    fn release(&mut self, recorded_us: u64, weight: u64) -> bool {
        let Some(i) = self
            .entries
            .iter()
            .position(|&(ts, w)| ts == recorded_us && w == weight)
        else {
            return false;
        };
        self.entries.remove(i);
        self.total = self.total.saturating_sub(weight);
        true
    }

    /// When the newest entry leaves the window (0 for an empty log).
    fn expires_at(&self) -> u64 {
        self.entries
            .back()
            .map_or(0, |&(newest, _)| newest.saturating_add(self.window_us))
    }
}

/// One counter, in the structure its key names.
#[derive(Debug)]
enum Counter {
    Exact(Log),
    Slotted(Slots),
}

impl Counter {
    fn new(spec: &CounterSpec) -> Self {
        match spec.algorithm {
            Algorithm::Exact => Counter::Exact(Log {
                entries: VecDeque::new(),
                total: 0,
                window_us: spec.window_us,
            }),
            Algorithm::Slotted { slot_us } => Counter::Slotted(Slots::new(spec.window_us, slot_us)),
        }
    }

    /// Whether this counter has the structure `algorithm` asks for. Keys name the structure
    /// (`keys.rs`), so a mismatch only comes from a caller's own key names.
    fn is(&self, algorithm: Algorithm) -> bool {
        match (self, algorithm) {
            (Counter::Exact(_), Algorithm::Exact) => true,
            (Counter::Slotted(slots), Algorithm::Slotted { slot_us }) => {
                slots.slot_us() == slot_us.max(1)
            }
            _ => false,
        }
    }

    fn trim(&mut self, now_us: u64, window_us: u64) {
        match self {
            Counter::Exact(log) => log.trim(now_us, window_us),
            Counter::Slotted(slots) => slots.trim(now_us, window_us),
        }
    }

    fn count(&self) -> u64 {
        match self {
            Counter::Exact(log) => log.total,
            Counter::Slotted(slots) => slots.count(),
        }
    }

    fn record(&mut self, now_us: u64, window_us: u64, cost: u64) {
        match self {
            Counter::Exact(log) => {
                log.window_us = window_us;
                log.record(now_us, cost);
            }
            Counter::Slotted(slots) => slots.record(now_us, cost),
        }
    }

    fn release(&mut self, recorded_us: u64, weight: u64) -> bool {
        match self {
            Counter::Exact(log) => log.release(recorded_us, weight),
            Counter::Slotted(slots) => slots.release(recorded_us, weight),
        }
    }

    fn free_at(&self, now_us: u64, limit: u64, cost: u64) -> u64 {
        match self {
            Counter::Exact(log) => log.free_at(now_us, limit, cost),
            Counter::Slotted(slots) => slots.free_at(now_us, limit, cost),
        }
    }

    fn expires_at(&self) -> u64 {
        match self {
            Counter::Exact(log) => log.expires_at(),
            Counter::Slotted(slots) => slots.expires_at(),
        }
    }
}

/// One identity's counters, by storage key.
type Counters = HashMap<String, Counter>;

/// When the last entry of any of these counters leaves its window: the identity's end.
fn expires_at(counters: &Counters) -> u64 {
    counters
        .values()
        .map(Counter::expires_at)
        .max()
        .unwrap_or(0)
}

/// Gives each slotted counter of `specs` that does not exist yet the entries of the exact log
/// of the same window (the key `keys::exact_counterpart` names), counted by slot, and drops
/// the log: switching a window from exact to slotted loses no request. A counter whose
/// structure is not the one its spec asks for (a caller's own key names) is rebuilt: from a
/// log, converted; from slots, empty.
fn convert(counters: &mut Counters, specs: &[CounterSpec], now_us: u64) {
    for spec in specs {
        let rebuilt = match counters.get(&spec.key) {
            Some(counter) if counter.is(spec.algorithm) => continue,
            Some(_) => match (counters.remove(&spec.key), spec.algorithm) {
                (Some(Counter::Exact(log)), Algorithm::Slotted { slot_us }) => Counter::Slotted(
                    Slots::from_log(log.entries, now_us, spec.window_us, slot_us),
                ),
                _ => Counter::new(spec),
            },
            None => {
                let Algorithm::Slotted { slot_us } = spec.algorithm else {
                    continue;
                };
                let Some(exact) = keys::exact_counterpart(&spec.key) else {
                    continue;
                };
                // A log this call also counts as such stays what it is.
                if specs.iter().any(|s| s.key == exact)
                    || !matches!(counters.get(&exact), Some(Counter::Exact(_)))
                {
                    continue;
                }
                let Some(Counter::Exact(log)) = counters.remove(&exact) else {
                    continue;
                };
                Counter::Slotted(Slots::from_log(
                    log.entries,
                    now_us,
                    spec.window_us,
                    slot_us,
                ))
            }
        };
        counters.insert(spec.key.clone(), rebuilt);
    }
}

/// Identity → its counters.
type Shard = HashMap<String, Counters>;

/// What one attempt of a call found.
enum Attempt {
    Done(Outcome),
    /// The call would have started tracking a new identity, and the store is at its cap.
    Full,
}

pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
    max_identities: usize,
    /// Identities in the shards (kept with every insert and removal, under the shard lock).
    identities: AtomicUsize,
    /// No tracked identity ends before this time (on `clock`): a lower bound, so until then a
    /// sweep would free nothing and the cap is not worth a sweep.
    earliest_end_us: AtomicU64,
    /// One sweep at a time.
    sweeping: Mutex<()>,
    /// Concurrency leases, on the same clock (not counted as identities: each expires).
    leases: MemoryLeases,
    /// Adjustments applied (their `once`), until when they are remembered (on `clock`), and
    /// the size at which the forgotten ones are swept out next.
    adjusted: Mutex<(HashMap<String, u64>, usize)>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::with_clock(Arc::new(MonotonicClock::new()))
    }

    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self::with_max_identities(clock, DEFAULT_MAX_IDENTITIES)
    }

    /// A store that tracks at most `max_identities` identities at a time (at least one).
    pub fn with_max_identities(clock: Arc<dyn Clock>, max_identities: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            leases: MemoryLeases::new(clock.clone()),
            clock,
            max_identities: max_identities.max(1),
            identities: AtomicUsize::new(0),
            earliest_end_us: AtomicU64::new(u64::MAX),
            sweeping: Mutex::new(()),
            adjusted: Mutex::new((HashMap::new(), ADJUSTED_SWEEP_AT)),
        }
    }

    fn shard(&self, identity: &str) -> &Mutex<Shard> {
        let index = self.hasher.hash_one(identity) as usize % SHARDS;
        &self.shards[index]
    }

    /// Removes counters whose every entry has left the window, and identities left without
    /// counters. Run periodically, and at the cap before a new identity is refused; returns
    /// how many counters were removed.
    pub fn evict_expired(&self) -> usize {
        let _one_at_a_time = self.sweeping.lock();
        self.sweep()
    }

    /// [`evict_expired`](Self::evict_expired) when a tracked identity may have ended. A
    /// sweep another call has just finished counts: it is not repeated.
    fn evict_if_due(&self) {
        let _one_at_a_time = self.sweeping.lock();
        if self.clock.now_us() >= self.earliest_end_us.load(Ordering::Relaxed) {
            self.sweep();
        }
    }

    /// The sweep itself; the caller holds `sweeping`.
    fn sweep(&self) -> usize {
        let now = self.clock.now_us();
        // From here on calls note the ends they see; the sweep adds those of what it keeps.
        self.earliest_end_us.store(u64::MAX, Ordering::Relaxed);
        let mut earliest = u64::MAX;
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            let before = map.len();
            map.retain(|_, counters| {
                let count = counters.len();
                counters.retain(|_, counter| counter.expires_at() > now);
                removed += count - counters.len();
                let end = expires_at(counters);
                if end > now {
                    earliest = earliest.min(end);
                }
                end > now
            });
            self.identities
                .fetch_sub(before - map.len(), Ordering::Relaxed);
        }
        self.note_end(earliest);
        removed
    }

    /// Number of live counters (for tests and metrics).
    pub fn counter_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().values().map(HashMap::len).sum::<usize>())
            .sum()
    }

    /// Number of identities tracked, at most the cap.
    pub fn identity_count(&self) -> usize {
        self.identities.load(Ordering::Relaxed)
    }

    /// Lowers the earliest possible end of a tracked identity to `end_us` if it is earlier.
    /// The plain load first keeps the common case (nothing earlier) free of shared writes.
    fn note_end(&self, end_us: u64) {
        if end_us < self.earliest_end_us.load(Ordering::Relaxed) {
            self.earliest_end_us.fetch_min(end_us, Ordering::Relaxed);
        }
    }

    /// Takes one of the cap's places for a new identity.
    fn reserve_identity(&self) -> bool {
        self.identities
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_identities).then_some(n + 1)
            })
            .is_ok()
    }

    fn run(
        &self,
        identity: &str,
        counters: &[CounterSpec],
        record: bool,
        cost: u64,
    ) -> Result<Outcome, StoreError> {
        let cost = cost.max(1);
        if let Attempt::Done(outcome) = self.attempt(identity, counters, record, cost) {
            return Ok(outcome);
        }
        // At the cap. Identities that have ended do not count: sweep them out if one may
        // have (the earliest end has passed), then try once more.
        if self.clock.now_us() >= self.earliest_end_us.load(Ordering::Relaxed) {
            self.evict_if_due();
            if let Attempt::Done(outcome) = self.attempt(identity, counters, record, cost) {
                return Ok(outcome);
            }
        }
        Err(StoreError::Full(self.max_identities))
    }

    fn attempt(
        &self,
        identity: &str,
        counters: &[CounterSpec],
        record: bool,
        cost: u64,
    ) -> Attempt {
        let now = self.clock.now_us();
        let mut map = self.shard(identity).lock();
        let mut logs = map.get_mut(identity);
        if let Some(logs) = logs.as_deref_mut() {
            convert(logs, counters, now);
        }
        let mut admitted = true;
        let mut full = Vec::with_capacity(counters.len());
        for spec in counters {
            let no_room = match logs.as_deref_mut().and_then(|logs| logs.get_mut(&spec.key)) {
                Some(counter) => {
                    counter.trim(now, spec.window_us);
                    counter.count().saturating_add(cost) > spec.limit
                }
                None => cost > spec.limit,
            };
            admitted &= spec.shadow || !no_room;
            full.push(no_room);
        }
        // Admitted: every enforced counter has room and records; a shadow one records only
        // when it has room.
        let record = admitted && record;
        let records_any = record && full.iter().any(|&no_room| !no_room);
        if logs.is_none() && records_any {
            if !self.reserve_identity() {
                return Attempt::Full;
            }
            logs = Some(map.entry(identity.to_string()).or_default());
        }
        let Some(logs) = logs else {
            // Not tracked, and this call records nothing: every counter is empty.
            let states = counters
                .iter()
                .zip(&full)
                .map(|(_, &no_room)| CounterState {
                    count: 0,
                    free_at_us: now,
                    full: no_room,
                })
                .collect();
            return Attempt::Done(Outcome {
                admitted,
                now_us: now,
                counters: states,
            });
        };
        let mut states = Vec::with_capacity(counters.len());
        for (spec, &no_room) in counters.iter().zip(&full) {
            if record && !no_room {
                // Look up before inserting: cloning the key for every admitted request would
                // allocate on the hot path.
                match logs.get_mut(&spec.key) {
                    Some(counter) => counter.record(now, spec.window_us, cost),
                    None => {
                        let mut counter = Counter::new(spec);
                        counter.record(now, spec.window_us, cost);
                        logs.insert(spec.key.clone(), counter);
                    }
                }
            }
            states.push(match logs.get(&spec.key) {
                Some(counter) => CounterState {
                    count: counter.count(),
                    free_at_us: counter.free_at(now, spec.limit, cost),
                    full: no_room,
                },
                None => CounterState {
                    count: 0,
                    free_at_us: now,
                    full: no_room,
                },
            });
        }
        // Recording moves the identity's end later; a shortened window moves it earlier.
        self.note_end(expires_at(logs));
        Attempt::Done(Outcome {
            admitted,
            now_us: now,
            counters: states,
        })
    }
}

impl MemoryStore {
    /// Whether `once` is new (and now remembered until `until_us`); forgotten entries are
    /// swept out when the record has grown.
    fn first_time(&self, once: &str, now_us: u64, until_us: u64) -> bool {
        let mut guard = self.adjusted.lock();
        let (adjusted, sweep_at) = &mut *guard;
        if adjusted.get(once).is_some_and(|&until| until > now_us) {
            return false;
        }
        if adjusted.len() >= *sweep_at {
            adjusted.retain(|_, &mut until| until > now_us);
            // Twice what is left: sweeps stay proportional to the inserts between them.
            *sweep_at = (adjusted.len() * 2).max(ADJUSTED_SWEEP_AT);
        }
        adjusted.insert(once.to_string(), until_us);
        true
    }

    fn adjust_now(
        &self,
        identity: &str,
        counters: &[CounterSpec],
        adjustment: &Adjustment,
    ) -> Result<u64, StoreError> {
        let now = self.clock.now_us();
        let until = now.saturating_add(usage::remember_us(counters.iter().map(|c| c.window_us)));
        let mut map = self.shard(identity).lock();
        match adjustment.change {
            Change::Charge { units } => {
                if units == 0 || counters.is_empty() {
                    return Ok(0);
                }
                if !map.contains_key(identity) {
                    if !self.reserve_identity() {
                        return Err(StoreError::Full(self.max_identities));
                    }
                    map.insert(identity.to_string(), Counters::new());
                }
                if !self.first_time(&adjustment.once, now, until) {
                    return Ok(0);
                }
                let Some(logs) = map.get_mut(identity) else {
                    return Ok(0);
                };
                convert(logs, counters, now);
                for spec in counters {
                    let counter = logs
                        .entry(spec.key.clone())
                        .or_insert_with(|| Counter::new(spec));
                    counter.trim(now, spec.window_us);
                    counter.record(now, spec.window_us, units);
                }
                self.note_end(expires_at(logs));
                Ok(units)
            }
            Change::Release {
                recorded_us,
                weight,
            } => {
                if !self.first_time(&adjustment.once, now, until) {
                    return Ok(0);
                }
                let Some(logs) = map.get_mut(identity) else {
                    return Ok(0);
                };
                let mut released = false;
                for spec in counters {
                    if let Some(counter) = logs.get_mut(&spec.key)
                        && counter.is(spec.algorithm)
                    {
                        counter.trim(now, spec.window_us);
                        released |= counter.release(recorded_us, weight);
                    }
                }
                Ok(if released { weight } else { 0 })
            }
        }
    }
}

/// Remembered adjustments past which forgotten ones are swept out (at least).
const ADJUSTED_SWEEP_AT: usize = 4096;

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl CounterStore for MemoryStore {
    async fn check_and_record_weighted(
        &self,
        shard: &str,
        counters: &[CounterSpec],
        cost: u64,
    ) -> Result<Outcome, StoreError> {
        self.run(shard, counters, true, cost)
    }

    async fn peek(&self, shard: &str, counters: &[CounterSpec]) -> Result<Outcome, StoreError> {
        self.run(shard, counters, false, 1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }

    fn identities(&self) -> Option<u64> {
        Some(self.identity_count() as u64)
    }

    fn leases(&self) -> Option<&dyn LeaseStore> {
        Some(&self.leases)
    }

    async fn adjust(
        &self,
        shard: &str,
        counters: &[CounterSpec],
        adjustment: &Adjustment,
    ) -> Result<u64, StoreError> {
        self.adjust_now(shard, counters, adjustment)
    }
}

#[cfg(test)]
mod tests;
