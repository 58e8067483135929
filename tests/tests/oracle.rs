//! The stores against an independent exact sliding-window oracle.
//!
//! The oracle below is written from the specification alone (a request at t is admitted iff
//! fewer than `limit` admitted requests of a counter have timestamps in (t − W, t]; a request
//! needs room in every counter that applies and is then recorded in all of them) and shares
//! no code with the product. Random timelines — including bursts in one microsecond and
//! requests exactly W apart — go through the in-memory store on a manual clock and through
//! the real Lua script in a real redis-server at the same instants.

use std::sync::Arc;

use control_plane::store::{
    CounterSpec, CounterStore, ManualClock, MemoryStore, Outcome, RedisStore, RedisStoreOptions,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rl_tests::RedisServer;

/// One counter of the oracle: the admitted timestamps.
struct OracleCounter {
    limit: usize,
    window: u64,
    admitted: Vec<u64>,
}

impl OracleCounter {
    fn in_window(&self, t: u64) -> Vec<u64> {
        let mut inside: Vec<u64> = self
            .admitted
            .iter()
            .copied()
            .filter(|&a| a <= t && t - a < self.window)
            .collect();
        inside.sort_unstable();
        inside
    }
}

/// Expected result of one request: admitted, and per counter (count, free_at).
fn oracle_step(counters: &mut [&mut OracleCounter], t: u64) -> (bool, Vec<(u64, u64)>) {
    let admitted = counters.iter().all(|c| c.in_window(t).len() < c.limit);
    if admitted {
        for c in counters.iter_mut() {
            c.admitted.push(t);
        }
    }
    let states = counters
        .iter()
        .map(|c| {
            let inside = c.in_window(t);
            let count = inside.len();
            // The moment the counter has room again (or its oldest entry leaves).
            let index = count.saturating_sub(c.limit);
            let free_at = inside.get(index).map_or(t, |&ts| ts + c.window);
            (count as u64, free_at)
        })
        .collect();
    (admitted, states)
}

#[derive(Debug, Clone)]
struct Timeline {
    budget: usize,
    rule: usize,
    /// (gap before the request in µs, whether the endpoint rule applies too)
    steps: Vec<(u64, bool)>,
}

const WINDOW: u64 = 10_000_000;

fn gap() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(0u64),
        1 => Just(1),
        2 => Just(WINDOW - 1),
        2 => Just(WINDOW),
        1 => Just(WINDOW + 1),
        4 => 0..WINDOW / 3,
        1 => 0..3 * WINDOW,
    ]
}

fn timeline() -> impl Strategy<Value = Timeline> {
    (1usize..=5)
        .prop_flat_map(|budget| {
            (
                Just(budget),
                1usize..=budget,
                prop::collection::vec((gap(), any::<bool>()), 1..40),
            )
        })
        .prop_map(|(budget, rule, steps)| Timeline {
            budget,
            rule,
            steps,
        })
}

/// Replays a timeline through `decide` and compares each answer with the oracle.
fn check_timeline(
    tl: &Timeline,
    start: u64,
    mut decide: impl FnMut(&[CounterSpec], u64) -> Outcome,
    key_prefix: &str,
) -> Result<(), TestCaseError> {
    let budget_key = format!("rl:{{{key_prefix}}}:b");
    let rule_key = format!("rl:{{{key_prefix}}}:e:/r");
    let mut budget = OracleCounter {
        limit: tl.budget,
        window: WINDOW,
        admitted: vec![],
    };
    let mut rule = OracleCounter {
        limit: tl.rule,
        window: WINDOW,
        admitted: vec![],
    };
    let mut t = start;
    for (i, &(gap, with_rule)) in tl.steps.iter().enumerate() {
        t += gap;
        let mut specs = vec![CounterSpec {
            key: budget_key.clone(),
            limit: tl.budget as u64,
            window_us: WINDOW,
        }];
        let (want_admit, want_states) = if with_rule {
            specs.push(CounterSpec {
                key: rule_key.clone(),
                limit: tl.rule as u64,
                window_us: WINDOW,
            });
            oracle_step(&mut [&mut budget, &mut rule], t)
        } else {
            oracle_step(&mut [&mut budget], t)
        };
        let got = decide(&specs, t);
        prop_assert_eq!(got.now_us, t, "step {}", i);
        prop_assert_eq!(got.admitted, want_admit, "step {} at t={}", i, t - start);
        let got_states: Vec<(u64, u64)> = got
            .counters
            .iter()
            .map(|c| (c.count, c.free_at_us))
            .collect();
        prop_assert_eq!(got_states, want_states, "step {}", i);
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn memory_store_matches_the_oracle() {
    let rt = runtime();
    let mut runner = TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    });
    runner
        .run(&timeline(), |tl| {
            let start = 1_700_000_000_000_000;
            let clock = Arc::new(ManualClock::new(start));
            let store = MemoryStore::with_clock(clock.clone());
            check_timeline(
                &tl,
                start,
                |specs, t| {
                    clock.set(t);
                    rt.block_on(store.check_and_record("id", specs))
                        .expect("memory store")
                },
                "id",
            )
        })
        .unwrap();
}

#[test]
fn redis_script_matches_the_oracle_at_the_same_instants() {
    let redis = RedisServer::start();
    let rt = runtime();
    let _entered = rt.enter();
    let store = RedisStore::new(&redis.url(), RedisStoreOptions::default()).expect("store");
    let mut runner = TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&timeline(), |tl| {
            let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Real "now" as the start keeps the keys' TTLs (set from the window) far from
            // firing while a case runs.
            let start = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64;
            let prefix = format!("oracle-{case}");
            check_timeline(
                &tl,
                start,
                |specs, t| {
                    rt.block_on(store.check_and_record_at(specs, t))
                        .expect("redis store")
                },
                &prefix,
            )
        })
        .unwrap();
}

/// With Redis's own clock: the oracle judges the timestamps the script reports.
#[test]
fn redis_with_server_time_matches_the_oracle() {
    let redis = RedisServer::start();
    let rt = runtime();
    let _entered = rt.enter();
    let store = RedisStore::new(&redis.url(), RedisStoreOptions::default()).expect("store");
    let window = 40_000u64; // 40 ms: short enough that sleeps cross the boundary often
    for case in 0..25u64 {
        let limit = (case % 4 + 1) as usize;
        let spec = CounterSpec {
            key: format!("rl:{{live-{case}}}:b"),
            limit: limit as u64,
            window_us: window,
        };
        let mut oracle = OracleCounter {
            limit,
            window,
            admitted: vec![],
        };
        let mut rng = fastrand_like(case);
        let mut last = 0;
        for step in 0..30 {
            std::thread::sleep(std::time::Duration::from_micros(rng() % 25_000));
            let got = rt
                .block_on(store.check_and_record("live", std::slice::from_ref(&spec)))
                .expect("redis store");
            assert!(got.now_us >= last, "Redis time went backwards");
            last = got.now_us;
            let (want, states) = oracle_step(&mut [&mut oracle], got.now_us);
            assert_eq!(got.admitted, want, "case {case} step {step}");
            assert_eq!(
                got.counters[0].count, states[0].0,
                "case {case} step {step}"
            );
            assert_eq!(
                got.counters[0].free_at_us, states[0].1,
                "case {case} step {step}"
            );
        }
    }
}

/// A tiny deterministic generator (xorshift) so failures replay.
fn fastrand_like(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
