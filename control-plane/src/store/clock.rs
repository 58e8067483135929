//! The control plane's one clock: every local timing (the in-memory store's windows, the
//! circuit breaker's cooldown, the rate of store-error log lines) reads an injected [`Clock`],
//! so tests drive time by hand instead of sleeping.
//!
//! Production runs on [`MonotonicClock`]: it must not notice jumps of the host's wall clock
//! (NTP steps, manual changes), so it is monotonic, anchored to the wall clock once at start
//! so its readings are still comparable to Unix time for the `X-RateLimit-Reset` header.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Source of "now" in microseconds on a Unix-epoch scale; never goes backwards.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_us(&self) -> u64;
}

/// Production clock: `Instant` elapsed since start, added to the wall-clock reading taken at
/// start.
#[derive(Debug)]
pub struct MonotonicClock {
    anchor: Instant,
    anchor_unix_us: u64,
}

impl MonotonicClock {
    pub fn new() -> Self {
        let anchor_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Self {
            anchor: Instant::now(),
            anchor_unix_us,
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_us(&self) -> u64 {
        self.anchor_unix_us + self.anchor.elapsed().as_micros() as u64
    }
}

/// Clock set by hand, for tests and deterministic benchmarks.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(start_us: u64) -> Self {
        Self(AtomicU64::new(start_us))
    }

    pub fn set(&self, now_us: u64) {
        self.0.store(now_us, Ordering::SeqCst);
    }

    pub fn advance(&self, by_us: u64) {
        self.0.fetch_add(by_us, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests;
