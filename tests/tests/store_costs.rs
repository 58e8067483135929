//! Requests that cost more than one unit, on every counter store (memory, Redis, Redis
//! Cluster): an exact log's entries carry their weight and its count is their sum, a slotted
//! counter adds the cost to its slot; admission needs room for the whole cost in every
//! enforced window, atomically; `free_at` is when the cost fits again; a shadow counter
//! records only with room for the cost; a weighted log converts to slots without losing a
//! unit; batches apply each request's own cost in order; random timelines of costs, on exact
//! and slotted windows, match an independent weighted oracle.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use control_plane::store::{Algorithm, Clock, CounterSpec, CounterStore, ManualClock, keys};
use proptest::prelude::*;
use rl_tests::backends::Backend;
use rl_tests::test_with_all_stores;

const S: u64 = 1_000_000;

test_with_all_stores!(
    an_exact_log_counts_weights_and_frees_the_cost,
    a_slotted_counter_adds_the_cost_to_its_slot,
    a_request_needs_room_for_its_cost_in_every_window,
    a_shadow_counter_records_only_with_room_for_the_cost,
    a_weighted_log_becomes_slots_without_losing_a_unit,
    a_batch_applies_each_cost_in_order,
);

fn exact(key: String, limit: u64, window_s: u64) -> CounterSpec {
    CounterSpec {
        key,
        limit,
        window_us: window_s * S,
        shadow: false,
        algorithm: Algorithm::Exact,
    }
}

fn slotted(key: String, limit: u64, window_s: u64) -> CounterSpec {
    CounterSpec {
        algorithm: Algorithm::Slotted { slot_us: S },
        ..exact(key, limit, window_s)
    }
}

/// A manual clock at the start of a real-time second (Unix-epoch instants, as in production).
fn clock() -> Arc<ManualClock> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64;
    Arc::new(ManualClock::new(now.div_ceil(S) * S))
}

/// (admitted, count and free_at of each counter, full of each counter).
async fn call(
    store: &dyn CounterStore,
    id: &str,
    counters: &[CounterSpec],
    cost: u64,
) -> (bool, Vec<(u64, u64)>, Vec<bool>) {
    let out = store
        .check_and_record_weighted(id, counters, cost)
        .await
        .expect("store");
    (
        out.admitted,
        out.counters
            .iter()
            .map(|c| (c.count, c.free_at_us))
            .collect(),
        out.counters.iter().map(|c| c.full).collect(),
    )
}

/// Four requests of 5 fill a log of 20; the fifth waits for the first one's 5 units, a
/// request of 7 for the first two, and a request of 1 is refused as well (no unit left).
async fn an_exact_log_counts_weights_and_frees_the_cost(backend: &Backend) {
    let clock = clock();
    let store = backend.store_with_clock(clock.clone());
    let id = "ip:10.20.0.1";
    let c = [exact(keys::budget_key(id, 10, Algorithm::Exact), 20, 10)];
    let t0 = clock.now_us();
    for i in 0..4u64 {
        clock.set(t0 + i * S);
        let (admitted, states, _) = call(store.as_ref(), id, &c, 5).await;
        assert!(admitted, "{}: request {i}", backend.name());
        // Until the last one, 5 more fit: the oldest entry is what leaves next; then the
        // next request of 5 waits for the first one's units.
        assert_eq!(
            states[0],
            (5 * (i + 1), t0 + 10 * S),
            "{}: request {i}",
            backend.name()
        );
    }
    clock.set(t0 + 4 * S);
    let (admitted, states, full) = call(store.as_ref(), id, &c, 5).await;
    assert!(!admitted, "{}", backend.name());
    assert_eq!(
        (states[0], full[0]),
        ((20, t0 + 10 * S), true),
        "{}",
        backend.name()
    );
    let (admitted, states, _) = call(store.as_ref(), id, &c, 7).await;
    assert!(!admitted, "{}", backend.name());
    assert_eq!(
        states[0],
        (20, t0 + 11 * S),
        "{}: 7 units: two entries",
        backend.name()
    );
    let (admitted, states, _) = call(store.as_ref(), id, &c, 1).await;
    assert!(!admitted, "{}", backend.name());
    assert_eq!(states[0], (20, t0 + 10 * S), "{}", backend.name());
    // The first entry leaves: its 5 units are free, and a request of 5 fills them again.
    clock.set(t0 + 10 * S - 1);
    assert!(
        !call(store.as_ref(), id, &c, 5).await.0,
        "{}",
        backend.name()
    );
    clock.set(t0 + 10 * S);
    let (admitted, states, _) = call(store.as_ref(), id, &c, 5).await;
    assert!(admitted, "{}", backend.name());
    assert_eq!(states[0], (20, t0 + 11 * S), "{}", backend.name());
    // Once every weighted entry has left, the log counts requests of 1 as before.
    clock.set(t0 + 20 * S);
    for n in 1..=20 {
        let (admitted, states, _) = call(store.as_ref(), id, &c, 1).await;
        assert!(admitted, "{}: request {n}", backend.name());
        assert_eq!(states[0].0, n, "{}", backend.name());
    }
    assert!(
        !call(store.as_ref(), id, &c, 1).await.0,
        "{}",
        backend.name()
    );
}

async fn a_slotted_counter_adds_the_cost_to_its_slot(backend: &Backend) {
    let clock = clock();
    let store = backend.store_with_clock(clock.clone());
    let id = "ip:10.20.0.2";
    let c = [slotted(
        keys::budget_key(id, 10, Algorithm::Slotted { slot_us: S }),
        20,
        10,
    )];
    let t0 = clock.now_us();
    for i in 0..4u64 {
        clock.set(t0 + i * S + 200_000);
        let (admitted, states, _) = call(store.as_ref(), id, &c, 5).await;
        assert!(admitted, "{}: request {i}", backend.name());
        // Slot 0 leaves at its end plus the window.
        assert_eq!(states[0], (5 * (i + 1), t0 + 11 * S), "{}", backend.name());
    }
    clock.set(t0 + 4 * S);
    let (admitted, states, full) = call(store.as_ref(), id, &c, 5).await;
    assert!(!admitted, "{}", backend.name());
    assert_eq!(
        (states[0], full[0]),
        ((20, t0 + 11 * S), true),
        "{}",
        backend.name()
    );
    // 6 units must leave: slots 0 and 1.
    let (_, states, _) = call(store.as_ref(), id, &c, 6).await;
    assert_eq!(states[0], (20, t0 + 12 * S), "{}", backend.name());
    clock.set(t0 + 11 * S);
    let (admitted, states, _) = call(store.as_ref(), id, &c, 5).await;
    assert!(admitted, "{}", backend.name());
    assert_eq!(states[0].0, 20, "{}", backend.name());
}

/// A budget of 12 and a rule of 20, both taken 5 at a time: the third request finds the
/// budget without room for 5 and records in neither; requests of 1 use the last 2 units.
async fn a_request_needs_room_for_its_cost_in_every_window(backend: &Backend) {
    let clock = clock();
    let store = backend.store_with_clock(clock.clone());
    let id = "ip:10.20.0.3";
    let budget = exact(keys::budget_key(id, 60, Algorithm::Exact), 12, 60);
    let rule = slotted(
        keys::rule_key(id, 120, Algorithm::Slotted { slot_us: S }, "/export"),
        20,
        120,
    );
    let both = [budget.clone(), rule.clone()];
    for n in 1..=2 {
        let (admitted, states, _) = call(store.as_ref(), id, &both, 5).await;
        assert!(admitted, "{}", backend.name());
        assert_eq!(
            (states[0].0, states[1].0),
            (5 * n, 5 * n),
            "{}",
            backend.name()
        );
    }
    let (admitted, states, full) = call(store.as_ref(), id, &both, 5).await;
    assert!(!admitted, "{}", backend.name());
    assert_eq!(
        (states[0].0, states[1].0),
        (10, 10),
        "{}: nothing recorded",
        backend.name()
    );
    assert_eq!(full, [true, false], "{}", backend.name());
    let alone = [budget];
    for n in [11, 12] {
        let (admitted, states, _) = call(store.as_ref(), id, &alone, 1).await;
        assert!(admitted, "{}", backend.name());
        assert_eq!(states[0].0, n, "{}", backend.name());
    }
    assert!(
        !call(store.as_ref(), id, &alone, 1).await.0,
        "{}",
        backend.name()
    );
}

async fn a_shadow_counter_records_only_with_room_for_the_cost(backend: &Backend) {
    let clock = clock();
    let store = backend.store_with_clock(clock.clone());
    let id = "ip:10.20.0.4";
    let enforced = exact(keys::budget_key(id, 60, Algorithm::Exact), 100, 60);
    let shadow = CounterSpec {
        shadow: true,
        ..exact(keys::rule_key(id, 60, Algorithm::Exact, "/x"), 7, 60)
    };
    let c = [enforced, shadow];
    let (admitted, states, full) = call(store.as_ref(), id, &c, 5).await;
    assert!(admitted, "{}", backend.name());
    assert_eq!(
        (states[0].0, states[1].0, full[1]),
        (5, 5, false),
        "{}",
        backend.name()
    );
    // 2 units left in the shadow window: admitted, not recorded there.
    let (admitted, states, full) = call(store.as_ref(), id, &c, 5).await;
    assert!(admitted, "{}", backend.name());
    assert_eq!(
        (states[0].0, states[1].0, full[1]),
        (10, 5, true),
        "{}",
        backend.name()
    );
    // A request of 2 still fits it.
    let (_, states, full) = call(store.as_ref(), id, &c, 2).await;
    assert_eq!(
        (states[0].0, states[1].0, full[1]),
        (12, 7, false),
        "{}",
        backend.name()
    );
}

async fn a_weighted_log_becomes_slots_without_losing_a_unit(backend: &Backend) {
    let clock = clock();
    let store = backend.store_with_clock(clock.clone());
    let id = "ip:10.20.0.5";
    let log = [exact(keys::budget_key(id, 60, Algorithm::Exact), 30, 60)];
    assert!(call(store.as_ref(), id, &log, 5).await.0);
    clock.advance(S);
    assert!(call(store.as_ref(), id, &log, 1).await.0);
    clock.advance(S);
    assert!(call(store.as_ref(), id, &log, 7).await.0);
    let slots = [slotted(
        keys::budget_key(id, 60, Algorithm::Slotted { slot_us: S }),
        30,
        60,
    )];
    let (admitted, states, _) = call(store.as_ref(), id, &slots, 4).await;
    assert!(admitted, "{}", backend.name());
    assert_eq!(
        states[0].0,
        17,
        "{}: 5 + 1 + 7 carried over, 4 added",
        backend.name()
    );
}

async fn a_batch_applies_each_cost_in_order(backend: &Backend) {
    let clock = clock();
    let store = backend.store_with_clock(clock.clone());
    let id = "ip:10.20.0.6";
    let c: &[CounterSpec] = &[exact(keys::budget_key(id, 60, Algorithm::Exact), 11, 60)];
    let calls: Vec<(&str, &[CounterSpec], u64)> =
        vec![(id, c, 5), (id, c, 5), (id, c, 5), (id, c, 1)];
    let results = store.check_and_record_many_weighted(&calls).await;
    let seen: Vec<(bool, u64)> = results
        .into_iter()
        .map(|r| {
            let out = r.expect("store");
            (out.admitted, out.counters[0].count)
        })
        .collect();
    assert_eq!(
        seen,
        [(true, 5), (true, 10), (false, 10), (true, 11)],
        "{}",
        backend.name()
    );
}

// ---- Against a weighted oracle ----

/// One window as the rules say, written from them alone: entries (timestamp, weight). Exact:
/// an entry counts while in (t − W, t]. Slotted (slots of g): an entry counts while its slot
/// is at or after the slot of t − W, so it leaves at (slot + 1)·g + W. A request of `cost` at
/// t fits iff the weights counted plus `cost` are at most the limit; `free_at` is when
/// enough weight has left for `cost` to fit (when the oldest entry leaves if it fits
/// already, t when empty).
#[derive(Debug, Clone)]
struct Model {
    limit: u64,
    window: u64,
    shadow: bool,
    /// The slot of a slotted window (µs); `None` for an exact log.
    slot: Option<u64>,
    entries: Vec<(u64, u64)>,
}

impl Model {
    /// When an entry recorded at `ts` stops being counted.
    fn leaves(&self, ts: u64) -> u64 {
        match self.slot {
            None => ts + self.window,
            Some(g) => (ts / g + 1) * g + self.window,
        }
    }

    fn live(&self, t: u64) -> impl Iterator<Item = &(u64, u64)> {
        self.entries
            .iter()
            .filter(move |(ts, _)| self.leaves(*ts) > t)
    }

    fn units(&self, t: u64) -> u64 {
        self.live(t).map(|(_, w)| w).sum()
    }

    fn free_at(&self, t: u64, cost: u64) -> u64 {
        let total = self.units(t);
        if total == 0 {
            return t;
        }
        let must = (total + cost).saturating_sub(self.limit).max(1);
        let mut left = 0;
        let mut last = t;
        for (ts, w) in self.live(t) {
            left += w;
            last = self.leaves(*ts);
            if left >= must {
                break;
            }
        }
        last
    }
}

/// What the oracle answers for a request of `cost` at `t`, recording it when admitted:
/// (admitted, (count, free_at, full) per counter).
fn oracle(models: &mut [Model], t: u64, cost: u64) -> (bool, Vec<(u64, u64, bool)>) {
    let full: Vec<bool> = models.iter().map(|m| m.units(t) + cost > m.limit).collect();
    let admitted = models.iter().zip(&full).all(|(m, &f)| m.shadow || !f);
    if admitted {
        for (m, &f) in models.iter_mut().zip(&full) {
            if !f {
                m.entries.push((t, cost));
            }
        }
    }
    let states = models
        .iter()
        .zip(&full)
        .map(|(m, &f)| (m.units(t), m.free_at(t, cost), f))
        .collect();
    (admitted, states)
}

#[derive(Debug, Clone)]
struct WeightedTimeline {
    /// (limit, window in s, shadow, slotted) of each counter.
    windows: Vec<(u64, u64, bool, bool)>,
    /// (gap before the request in µs, its cost).
    requests: Vec<(u64, u64)>,
}

fn weighted_timeline() -> impl Strategy<Value = WeightedTimeline> {
    let window = (
        1u64..=12,
        prop_oneof![Just(1u64), Just(2), Just(5)],
        prop::bool::weighted(0.2),
        prop::bool::ANY,
    );
    let gap = prop_oneof![
        3 => Just(0u64),
        4 => 0u64..3 * S,
        1 => Just(S),
        1 => Just(2 * S),
    ];
    (
        prop::collection::vec(window, 1..=3),
        prop::collection::vec((gap, 1u64..=6), 1..40),
    )
        .prop_map(|(windows, requests)| WeightedTimeline { windows, requests })
}

fn weighted_timelines_match_the_oracle(backend: &Backend) {
    use proptest::test_runner::{Config, TestRunner};
    use std::cell::Cell;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _entered = rt.enter();
    let clock = clock();
    let store = backend.store_with_clock(clock.clone());
    let case = Cell::new(0u64);
    let mut runner = TestRunner::new(Config {
        cases: 96,
        ..Config::default()
    });
    runner
        .run(&weighted_timeline(), |tl| {
            case.set(case.get() + 1);
            let id = format!("ip:10.31.{}.1", case.get());
            // Counters of one length would share a key: one counter per distinct length.
            let mut windows = tl.windows.clone();
            windows.sort_by_key(|w| w.1);
            windows.dedup_by_key(|w| w.1);
            // A slotted window of W has 10 slots of W / 10.
            let algorithm_of = |seconds: u64, slotted: bool| {
                if slotted {
                    Algorithm::Slotted {
                        slot_us: seconds * S / 10,
                    }
                } else {
                    Algorithm::Exact
                }
            };
            let specs: Vec<CounterSpec> = windows
                .iter()
                .map(|&(limit, seconds, shadow, slotted)| {
                    let algorithm = algorithm_of(seconds, slotted);
                    CounterSpec {
                        shadow,
                        algorithm,
                        ..exact(keys::budget_key(&id, seconds, algorithm), limit, seconds)
                    }
                })
                .collect();
            let mut models: Vec<Model> = windows
                .iter()
                .map(|&(limit, seconds, shadow, slotted)| Model {
                    limit,
                    window: seconds * S,
                    shadow,
                    slot: slotted.then_some(seconds * S / 10),
                    entries: Vec::new(),
                })
                .collect();
            // Far from the previous case's instants.
            clock.advance(100 * S);
            for (i, &(gap, cost)) in tl.requests.iter().enumerate() {
                clock.advance(gap);
                let t = clock.now_us();
                let out = rt
                    .block_on(store.check_and_record_weighted(&id, &specs, cost))
                    .map_err(|e| TestCaseError::fail(format!("store: {e}")))?;
                let (admitted, states) = oracle(&mut models, t, cost);
                let got: Vec<(u64, u64, bool)> = out
                    .counters
                    .iter()
                    .map(|c| (c.count, c.free_at_us, c.full))
                    .collect();
                prop_assert_eq!(out.admitted, admitted, "request {} (cost {})", i, cost);
                prop_assert_eq!(got, states, "request {} (cost {})", i, cost);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
}

test_with_all_stores!(blocking: weighted_timelines_match_the_oracle);

// ---- What only Redis has ----

/// A weighted call sent twice (a client that lost the reply) records its units once; in
/// Redis the log holds one entry per request, carrying its weight, and the sum beside them,
/// which goes once no heavier entry is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_redis_a_weighted_request_is_one_entry_recorded_once() {
    use control_plane::store::{RedisStore, RedisStoreOptions};
    let redis = rl_tests::RedisServer::start();
    let clock = clock();
    let store = RedisStore::new(
        &redis.url(),
        RedisStoreOptions {
            timeout: Duration::from_secs(2),
            clock: Some(clock.clone() as Arc<dyn Clock>),
            ..RedisStoreOptions::default()
        },
    )
    .expect("store");
    let id = "key:weighted";
    let c = [exact(keys::budget_key(id, 10, Algorithm::Exact), 20, 10)];
    let call = store.weighted_call(id, &c, 5);
    let first = store.send(&call).await.expect("first send");
    let again = store.send(&call).await.expect("second send");
    assert!(first.admitted && again.admitted);
    assert_eq!(
        (first.counters[0].count, again.counters[0].count),
        (5, 5),
        "the replay counts the first send's units"
    );
    let mut conn = redis.connection();
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&c[0].key)
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .expect("ZRANGE");
    assert_eq!(members.len(), 2, "one entry and the sum: {members:?}");
    assert!(members[0].ends_with("*5"), "{members:?}");
    assert_eq!(members[1], "#");
    // A request of 1 beside it: an entry without a weight; the sum counts both.
    clock.advance(S);
    let out = store
        .check_and_record_weighted(id, &c, 1)
        .await
        .expect("store");
    assert_eq!(out.counters[0].count, 6);
    // Once the heavy entry has left, the sum goes and the log is as before costs existed.
    clock.advance(9 * S);
    let out = store
        .check_and_record_weighted(id, &c, 1)
        .await
        .expect("store");
    assert_eq!(out.counters[0].count, 2);
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&c[0].key)
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .expect("ZRANGE");
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(
        members.iter().all(|m| !m.contains('*') && m != "#"),
        "{members:?}"
    );
}
