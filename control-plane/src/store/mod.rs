//! Counter stores: sliding windows, exact logs or slotted counters (`slotted.rs`), in Redis or
//! in memory.
//!
//! A decision names every counter that applies to a request: each window of the tier budget
//! and, when an endpoint rule matches, each window of that rule. A request has a cost, the
//! units it takes from each of them (its endpoint rule's `cost`, else 1). The store admits the
//! request only if every enforced counter has room for that cost and then records it, with
//! its weight, in all of them, and in each shadow counter that has room for it, atomically:
//! one Lua script in Redis, one critical section in memory. A denied request records nothing, and an admitted one is recorded once, even when
//! its call reaches Redis twice (see `redis.rs`). A shadow counter never refuses a request and
//! never holds more than its limit.

mod breaker;
mod clock;
pub mod connection;
pub mod keys;
pub mod leases;
mod memory;
mod nonce;
mod redis;
pub mod slotted;
pub mod usage;

use std::sync::Arc;

use async_trait::async_trait;

pub use self::breaker::{Breaker, BreakerState};
pub use self::clock::{Clock, ManualClock, MonotonicClock};
pub use self::leases::{LeaseOutcome, LeaseRef, LeaseStore};
pub use self::memory::{DEFAULT_MAX_IDENTITIES, MemoryStore};
pub use self::redis::{MAX_SCRIPT_ARGS, RedisStore, RedisStoreOptions, ScriptCall, replay_horizon};
pub use self::usage::{Adjustment, Change};

/// One sliding-window counter taking part in a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSpec {
    /// Full storage key (see [`keys`]).
    pub key: String,
    pub limit: u64,
    pub window_us: u64,
    /// A shadow counter does not take part in admission: when the request is admitted it is
    /// recorded here only if this counter has room, so it never exceeds its limit.
    pub shadow: bool,
    /// How the window is counted.
    pub algorithm: Algorithm,
}

/// How a counter keeps its window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// Every admitted request is an entry (a sorted set on Redis): exact, memory grows with
    /// the limit.
    #[default]
    Exact,
    /// One count per slot of `slot_us` (the window a whole multiple of it): memory bounded by
    /// the number of slots, whatever the limit; never admits more than the limit in any
    /// window, may deny early in the oldest slot.
    Slotted { slot_us: u64 },
}

/// State of one counter after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterState {
    /// Units inside the window after the decision (the current request's cost included when
    /// it was recorded here): the sum of the recorded requests' weights.
    pub count: u64,
    /// The counter had no room for this request's cost (before recording): an enforced one
    /// refused it, a shadow one would have.
    pub full: bool,
    /// Time (µs on the store's clock, Unix epoch) at which, from the level after the
    /// decision, the counter has room for the request's cost again: the entry whose leaving
    /// frees enough units leaves the window. When it has room for it already, when its oldest
    /// entry expires. Equals `now_us` for an empty counter.
    pub free_at_us: u64,
}

/// Result of a check against the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub admitted: bool,
    /// The store's clock at the decision (Redis `TIME`, or the monotonic clock in memory).
    pub now_us: u64,
    /// One entry per requested counter, in order.
    pub counters: Vec<CounterState>,
}

/// Why a store call failed. `Clone`: a failed batch fails each of its members with the same
/// error, so the Redis error is shared rather than copied into text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("counter store unavailable (circuit open)")]
    CircuitOpen,
    #[error("counter store timed out after {0} ms")]
    Timeout(u64),
    /// Redis cannot serve (connection lost, loading, busy, read-only replica, cluster
    /// reconfiguring): counts towards the circuit breaker.
    #[error("counter store error: {0}")]
    Backend(#[source] Arc<::redis::RedisError>),
    /// Redis is up and answered the call with an error: the call was wrong, not Redis.
    #[error("counter store refused the call: {0}")]
    Refused(#[source] Arc<::redis::RedisError>),
    #[error("counter store returned an unexpected reply: {0}")]
    Protocol(String),
    /// The Redis address cannot work (no URL, several URLs for a single server).
    #[error("counter store address: {0}")]
    Address(&'static str),
    /// The in-memory store tracks as many identities as it may (the number given) and the
    /// call would have added one. Not an outage: the request is refused whatever `fail_open`
    /// says, since admitting it would hand out a budget nobody counts.
    #[error("in-memory counter store full ({0} identities): new identity refused")]
    Full(usize),
}

impl StoreError {
    pub(crate) fn backend(err: ::redis::RedisError) -> Self {
        StoreError::Backend(Arc::new(err))
    }
}

#[async_trait]
pub trait CounterStore: Send + Sync {
    /// Admits a request of `cost` units (at least 1; 0 is read as 1) iff every enforced
    /// counter holds at most `limit − cost` units in its window, recording it with that
    /// weight, when admitted, in every enforced counter and in every shadow counter with room
    /// for it. `shard` is the identity whose counters these are: every counter of one call
    /// belongs to it.
    async fn check_and_record_weighted(
        &self,
        shard: &str,
        counters: &[CounterSpec],
        cost: u64,
    ) -> Result<Outcome, StoreError>;

    /// [`check_and_record_weighted`](Self::check_and_record_weighted) of a request of cost 1.
    async fn check_and_record(
        &self,
        shard: &str,
        counters: &[CounterSpec],
    ) -> Result<Outcome, StoreError> {
        self.check_and_record_weighted(shard, counters, 1).await
    }

    /// [`check_and_record_weighted`](Self::check_and_record_weighted) for several requests,
    /// with one result per call in order. Calls are applied in order, so two calls on the
    /// same counters see each other. Backends override it to save round trips.
    async fn check_and_record_many_weighted(
        &self,
        calls: &[(&str, &[CounterSpec], u64)],
    ) -> Vec<Result<Outcome, StoreError>> {
        let mut results = Vec::with_capacity(calls.len());
        for (shard, counters, cost) in calls {
            results.push(self.check_and_record_weighted(shard, counters, *cost).await);
        }
        results
    }

    /// [`check_and_record_many_weighted`](Self::check_and_record_many_weighted) of requests
    /// of cost 1.
    async fn check_and_record_many(
        &self,
        calls: &[(&str, &[CounterSpec])],
    ) -> Vec<Result<Outcome, StoreError>> {
        let weighted: Vec<(&str, &[CounterSpec], u64)> = calls
            .iter()
            .map(|(shard, counters)| (*shard, *counters, 1))
            .collect();
        self.check_and_record_many_weighted(&weighted).await
    }

    /// Reports the counters without recording anything (`admitted` says whether a request
    /// would pass now).
    async fn peek(&self, shard: &str, counters: &[CounterSpec]) -> Result<Outcome, StoreError>;

    /// Whether the backend is reachable (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Short backend name for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Circuit-breaker state, for backends that have one.
    fn breaker_state(&self) -> Option<BreakerState> {
        None
    }

    /// How many times the circuit breaker has opened since start.
    fn breaker_opened_total(&self) -> u64 {
        0
    }

    /// Identities tracked, for backends that keep them in this process.
    fn identities(&self) -> Option<u64> {
        None
    }

    /// The backend's concurrency leases (a tier's `max_concurrent`), in the same place as its
    /// counters; `None` for a backend that keeps none.
    fn leases(&self) -> Option<&dyn LeaseStore> {
        None
    }

    /// Applies `adjustment` to `counters` (all of identity `shard`) once: a second call with
    /// the same `once` within [`usage::remember_us`] of the windows changes nothing. Returns
    /// the units charged, or released (the weight, when at least one counter still held the
    /// entry); 0 when it was applied before.
    async fn adjust(
        &self,
        shard: &str,
        counters: &[CounterSpec],
        adjustment: &Adjustment,
    ) -> Result<u64, StoreError> {
        let _ = (shard, counters, adjustment);
        Err(StoreError::Protocol(format!(
            "the {} store takes no charges or releases",
            self.backend()
        )))
    }

    /// [`adjust`](Self::adjust) for several adjustments, one result per call in order.
    /// Backends override it to save round trips.
    async fn adjust_many(
        &self,
        calls: &[(&str, &[CounterSpec], &Adjustment)],
    ) -> Vec<Result<u64, StoreError>> {
        let mut results = Vec::with_capacity(calls.len());
        for (shard, counters, adjustment) in calls {
            results.push(self.adjust(shard, counters, adjustment).await);
        }
        results
    }
}

/// Units that must leave a counter holding `count` for `cost` more to fit under `limit`; 1
/// when they fit already (the oldest entry then sets `free_at`). Shared by the in-memory
/// counters so the rule is written once on the Rust side (`sliding_window.lua` has its own).
pub(crate) fn must_leave(count: u64, limit: u64, cost: u64) -> u64 {
    count.saturating_add(cost).saturating_sub(limit).max(1)
}
