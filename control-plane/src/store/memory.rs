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
mod tests;
