//! Circuit breaker in front of the Redis store.
//!
//! While Redis is down every call would otherwise wait for its timeout; after `threshold`
//! consecutive failures the breaker opens and calls fail at once for `cooldown`. Then a single
//! probe call is let through (half-open): success closes the breaker, failure re-opens it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::Clock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown_us: u64,
    clock: Arc<dyn Clock>,
    consecutive_failures: AtomicU32,
    /// Time on `clock` until which calls are refused; 0 when closed.
    open_until_us: AtomicU64,
    probe_in_flight: AtomicBool,
    opened_total: AtomicU64,
}

/// Permission to call the backend; report the call's result with [`Permit::record`]. A probe
/// permit dropped without a result (its caller was cancelled) frees the probe slot, so a
/// cancelled probe cannot leave the circuit open for good.
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Permit<'_> {
    pub fn record(mut self, ok: bool) {
        self.breaker.record(self.probe, ok);
        self.probe = false;
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.probe_in_flight.store(false, Ordering::Release);
        }
    }
}

impl Breaker {
    /// `clock` times the cooldown (production: the monotonic clock).
    pub fn new(threshold: u32, cooldown: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown_us: cooldown.as_micros() as u64,
            clock,
            consecutive_failures: AtomicU32::new(0),
            open_until_us: AtomicU64::new(0),
            probe_in_flight: AtomicBool::new(false),
            opened_total: AtomicU64::new(0),
        }
    }

    fn now_us(&self) -> u64 {
        self.clock.now_us()
    }

    /// `None` while the circuit is open (fail fast).
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let until = self.open_until_us.load(Ordering::Acquire);
        if until == 0 {
            return Some(Permit {
                breaker: self,
                probe: false,
            });
        }
        if self.now_us() < until {
            return None;
        }
        // Cooldown over: exactly one caller probes.
        self.probe_in_flight
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Permit {
                breaker: self,
                probe: true,
            })
    }

    fn record(&self, probe: bool, ok: bool) {
        if ok {
            self.consecutive_failures.store(0, Ordering::Release);
            if self.open_until_us.load(Ordering::Acquire) != 0 {
                self.open_until_us.store(0, Ordering::Release);
            }
        } else {
            let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
            if probe || failures >= self.threshold {
                // At least 1: 0 means "closed".
                let until = self.now_us().saturating_add(self.cooldown_us).max(1);
                let was = self.open_until_us.swap(until, Ordering::AcqRel);
                if was == 0 {
                    self.opened_total.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if probe {
            self.probe_in_flight.store(false, Ordering::Release);
        }
    }

    pub fn state(&self) -> BreakerState {
        let until = self.open_until_us.load(Ordering::Acquire);
        if until == 0 {
            BreakerState::Closed
        } else if self.now_us() < until {
            BreakerState::Open
        } else {
            BreakerState::HalfOpen
        }
    }

    /// How many times the circuit has opened since start.
    pub fn opened_total(&self) -> u64 {
        self.opened_total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
