//! In-memory counter store: the default when no Redis URL is configured.
//!
//! Same semantics as the Redis script: one log of admitted timestamps per counter, trimmed
//! to the window on every access. The map is sharded by identity so concurrent identities do
//! not contend on one lock, while all counters of one identity share a shard, which makes a
//! multi-counter decision one critical section.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{Clock, CounterSpec, CounterState, CounterStore, MonotonicClock, Outcome, StoreError};

const SHARDS: usize = 64;

#[derive(Debug, Default)]
struct Log {
    /// Admitted timestamps, oldest first. Never longer than the largest limit it was checked
    /// against, because nothing is recorded once it is full.
    entries: VecDeque<u64>,
    window_us: u64,
}

impl Log {
    /// Drops entries at or before `now - window`: the window is `(now - W, now]`.
    fn trim(&mut self, now_us: u64, window_us: u64) {
        self.window_us = window_us;
        let horizon = now_us.saturating_sub(window_us);
        while self.entries.front().is_some_and(|&ts| ts <= horizon) {
            self.entries.pop_front();
        }
    }

    fn free_at(&self, now_us: u64, limit: u64) -> u64 {
        let index = super::free_index(self.entries.len() as u64, limit) as usize;
        self.entries
            .get(index)
            .map_or(now_us, |&ts| ts + self.window_us)
    }
}

type Shard = HashMap<String, Log>;

pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::with_clock(Arc::new(MonotonicClock::new()))
    }

    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            clock,
        }
    }

    fn shard(&self, identity: &str) -> &Mutex<Shard> {
        let index = self.hasher.hash_one(identity) as usize % SHARDS;
        &self.shards[index]
    }

    /// Removes counters whose every entry has left the window. Run periodically; returns how
    /// many were removed.
    pub fn evict_expired(&self) -> usize {
        let now = self.clock.now_us();
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            let before = map.len();
            map.retain(|_, log| {
                log.entries
                    .back()
                    .is_some_and(|&newest| newest > now.saturating_sub(log.window_us))
            });
            removed += before - map.len();
        }
        removed
    }

    /// Number of live counters (for tests and metrics).
    pub fn counter_count(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    fn run(&self, shard: &str, counters: &[CounterSpec], record: bool) -> Outcome {
        let now = self.clock.now_us();
        let mut map = self.shard(shard).lock();
        let mut admitted = true;
        for spec in counters {
            if let Some(log) = map.get_mut(&spec.key) {
                log.trim(now, spec.window_us);
                if log.entries.len() as u64 >= spec.limit {
                    admitted = false;
                }
            } else if spec.limit == 0 {
                admitted = false;
            }
        }
        let mut states = Vec::with_capacity(counters.len());
        for spec in counters {
            if admitted && record {
                // Look up before inserting: cloning the key for every admitted request would
                // allocate on the hot path.
                match map.get_mut(&spec.key) {
                    Some(log) => {
                        log.window_us = spec.window_us;
                        log.entries.push_back(now);
                    }
                    None => {
                        let log = Log {
                            entries: VecDeque::from([now]),
                            window_us: spec.window_us,
                        };
                        map.insert(spec.key.clone(), log);
                    }
                }
            }
            states.push(match map.get(&spec.key) {
                Some(log) => CounterState {
                    count: log.entries.len() as u64,
                    free_at_us: log.free_at(now, spec.limit),
                },
                None => CounterState {
                    count: 0,
                    free_at_us: now,
                },
            });
        }
        Outcome {
            admitted,
            now_us: now,
            counters: states,
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl CounterStore for MemoryStore {
    async fn check_and_record(
        &self,
        shard: &str,
        counters: &[CounterSpec],
    ) -> Result<Outcome, StoreError> {
        Ok(self.run(shard, counters, true))
    }

    async fn peek(&self, shard: &str, counters: &[CounterSpec]) -> Result<Outcome, StoreError> {
        Ok(self.run(shard, counters, false))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ManualClock;

    fn spec(key: &str, limit: u64, window_us: u64) -> CounterSpec {
        CounterSpec {
            key: key.into(),
            limit,
            window_us,
        }
    }

    fn store() -> (Arc<ManualClock>, MemoryStore) {
        let clock = Arc::new(ManualClock::new(1_000_000_000));
        (clock.clone(), MemoryStore::with_clock(clock))
    }

    #[tokio::test]
    async fn admits_up_to_the_limit_then_denies_without_recording() {
        let (_clock, store) = store();
        let c = [spec("a", 3, 1_000_000)];
        for expected in 1..=3 {
            let out = store.check_and_record("id", &c).await.unwrap();
            assert!(out.admitted);
            assert_eq!(out.counters[0].count, expected);
        }
        let out = store.check_and_record("id", &c).await.unwrap();
        assert!(!out.admitted);
        assert_eq!(out.counters[0].count, 3);
    }

    #[tokio::test]
    async fn entry_leaves_exactly_when_it_is_window_old() {
        let (clock, store) = store();
        let c = [spec("a", 1, 1_000)];
        let t0 = clock.now_us();
        assert!(store.check_and_record("id", &c).await.unwrap().admitted);
        clock.set(t0 + 999);
        let out = store.check_and_record("id", &c).await.unwrap();
        assert!(!out.admitted);
        assert_eq!(out.counters[0].free_at_us, t0 + 1_000);
        clock.set(t0 + 1_000);
        assert!(store.check_and_record("id", &c).await.unwrap().admitted);
    }

    #[tokio::test]
    async fn a_full_counter_blocks_the_others_and_nothing_is_recorded() {
        let (_clock, store) = store();
        let budget = spec("b", 10, 1_000_000);
        let rule = spec("r", 1, 1_000_000);
        assert!(
            store
                .check_and_record("id", &[budget.clone(), rule.clone()])
                .await
                .unwrap()
                .admitted
        );
        let out = store
            .check_and_record("id", &[budget.clone(), rule])
            .await
            .unwrap();
        assert!(!out.admitted);
        assert_eq!(
            out.counters[0].count, 1,
            "the budget was not charged for the denial"
        );
        let out = store.peek("id", &[budget]).await.unwrap();
        assert_eq!(out.counters[0].count, 1);
    }

    #[tokio::test]
    async fn same_instant_requests_are_distinct_entries() {
        let (_clock, store) = store();
        let c = [spec("a", 5, 1_000_000)];
        for _ in 0..5 {
            assert!(store.check_and_record("id", &c).await.unwrap().admitted);
        }
        assert!(!store.check_and_record("id", &c).await.unwrap().admitted);
    }

    #[tokio::test]
    async fn a_lowered_limit_judges_existing_entries() {
        let (clock, store) = store();
        let t0 = clock.now_us();
        for i in 0..6 {
            clock.set(t0 + i);
            assert!(
                store
                    .check_and_record("id", &[spec("a", 10, 1_000)])
                    .await
                    .unwrap()
                    .admitted
            );
        }
        let out = store
            .check_and_record("id", &[spec("a", 4, 1_000)])
            .await
            .unwrap();
        assert!(!out.admitted);
        // 6 entries, limit 4: room again once entries 0..=2 have left, i.e. when entry 2 leaves.
        assert_eq!(out.counters[0].free_at_us, t0 + 2 + 1_000);
    }

    #[tokio::test]
    async fn expired_counters_are_evicted() {
        let (clock, store) = store();
        store
            .check_and_record("x", &[spec("a", 5, 1_000)])
            .await
            .unwrap();
        store
            .check_and_record("y", &[spec("b", 5, 5_000)])
            .await
            .unwrap();
        assert_eq!(store.counter_count(), 2);
        clock.advance(1_000);
        assert_eq!(store.evict_expired(), 1);
        assert_eq!(store.counter_count(), 1);
        clock.advance(4_000);
        assert_eq!(store.evict_expired(), 1);
        assert_eq!(store.counter_count(), 0);
    }

    #[tokio::test]
    async fn peek_does_not_create_or_record() {
        let (_clock, store) = store();
        let out = store.peek("id", &[spec("a", 1, 1_000)]).await.unwrap();
        assert!(out.admitted);
        assert_eq!(out.counters[0].count, 0);
        assert_eq!(store.counter_count(), 0);
    }
}
