//! How often slotted counters deny a request that the exact rule would admit.
//!
//! One identity sends Poisson traffic at a share of its limit (50 % … 300 %) for many windows.
//! The slotted counter (the control plane's in-memory store, on a manual clock) decides each
//! request; every denial is then judged by the exact rule against the slotted counter's own
//! history: with fewer than `limit` admitted requests in (t − W, t], the exact rule would have
//! admitted it, and the denial is false. The same arrivals also go through an exact counter
//! (its own history) for its denial rate, as a reference. Deterministic for a seed: the
//! figures vary with the seed only, and the report gives their median and spread.

use std::collections::VecDeque;
use std::sync::Arc;

use control_plane::store::{Algorithm, CounterSpec, CounterStore, ManualClock, MemoryStore};
use serde::Serialize;

const SECOND_US: u64 = 1_000_000;

/// One configuration of the measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scenario {
    pub limit: u64,
    pub window_seconds: u64,
    /// W / g: the number of slots in the window.
    pub slots: u64,
    /// The offered rate as a share of the limit per window (1.0 = `limit` per window).
    pub load: f64,
}

impl Scenario {
    fn window_us(&self) -> u64 {
        self.window_seconds * SECOND_US
    }

    fn slot_us(&self) -> u64 {
        self.window_us() / self.slots
    }
}

/// What one run counted, after its first window (the counters start empty, so the first
/// window is not typical).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub requests: u64,
    /// Denied by the slotted counter.
    pub slotted_denied: u64,
    /// Of those, admitted by the exact rule on the slotted counter's history.
    pub false_denied: u64,
    /// Denied by an exact counter fed the same arrivals (its own history).
    pub exact_denied: u64,
    /// The most requests the slotted counter admitted in any window (t − W, t] ending at a
    /// request: never above the limit.
    pub max_admitted_in_window: u64,
}

impl Tally {
    pub fn share(part: u64, whole: u64) -> f64 {
        if whole == 0 {
            0.0
        } else {
            part as f64 / whole as f64
        }
    }
}

/// The exact rule's judgement on a history: how many of `admitted` (ascending times) lie in
/// (t − W, t], after dropping those that left it for good (`admitted` is trimmed in place).
pub fn in_window(admitted: &mut VecDeque<u64>, t_us: u64, window_us: u64) -> u64 {
    while admitted.front().is_some_and(|&a| a + window_us <= t_us) {
        admitted.pop_front();
    }
    admitted.len() as u64
}

/// Poisson arrival times (µs) from `start_us`, `rate_per_us` on average, until `end_us`.
pub fn arrivals(seed: u64, start_us: u64, end_us: u64, rate_per_us: f64) -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut times = Vec::new();
    let mut t = start_us as f64;
    loop {
        // Exponential gaps; 1 − u is in (0, 1], so the logarithm is finite.
        t += -(1.0 - rng.f64()).ln() / rate_per_us;
        if t >= end_us as f64 {
            return times;
        }
        times.push(t as u64);
    }
}

/// Runs `scenario` for `windows` windows of traffic from `seed`.
pub async fn run(scenario: Scenario, seed: u64, windows: u64) -> Result<Tally, String> {
    let window_us = scenario.window_us();
    if scenario.slots == 0 || !window_us.is_multiple_of(scenario.slots) {
        return Err(format!(
            "{scenario:?}: the window is not a whole number of slots"
        ));
    }
    // A start inside a slot, not on its boundary, different for each seed.
    let start_us = 1_800_000_000 * SECOND_US + seed % scenario.slot_us();
    let end_us = start_us + windows * window_us;
    let rate = scenario.load * scenario.limit as f64 / window_us as f64;
    let clock = Arc::new(ManualClock::new(start_us));
    let slotted_store = MemoryStore::with_clock(clock.clone());
    let exact_store = MemoryStore::with_clock(clock.clone());
    let spec = |key: &str, algorithm| {
        [CounterSpec {
            key: key.into(),
            limit: scenario.limit,
            window_us,
            shadow: false,
            algorithm,
        }]
    };
    let slotted = spec(
        "rl:{sim}:b:slotted",
        Algorithm::Slotted {
            slot_us: scenario.slot_us(),
        },
    );
    let exact = spec("rl:{sim}:b:exact", Algorithm::Exact);
    let mut history: VecDeque<u64> = VecDeque::new();
    let mut tally = Tally::default();
    for t in arrivals(seed, start_us, end_us, rate) {
        clock.set(t);
        let by_slots = slotted_store
            .check_and_record("sim", &slotted)
            .await
            .map_err(|e| e.to_string())?;
        let by_log = exact_store
            .check_and_record("sim", &exact)
            .await
            .map_err(|e| e.to_string())?;
        let before = in_window(&mut history, t, window_us);
        if by_slots.admitted {
            history.push_back(t);
            tally.max_admitted_in_window = tally.max_admitted_in_window.max(before + 1);
        }
        if t < start_us + window_us {
            continue;
        }
        tally.requests += 1;
        if !by_slots.admitted {
            tally.slotted_denied += 1;
            if before < scenario.limit {
                tally.false_denied += 1;
            }
        }
        if !by_log.admitted {
            tally.exact_denied += 1;
        }
    }
    Ok(tally)
}

#[cfg(test)]
mod tests;
