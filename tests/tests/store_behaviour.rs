//! Every counter store (memory, Redis, Redis Cluster) under concurrency, at exact window
//! boundaries, in batches and after a lowered limit; then what only Redis has: key expiry,
//! the script cache, the circuit breaker.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control_plane::store::{
    Algorithm, Clock, CounterSpec, CounterStore, ManualClock, RedisStore, RedisStoreOptions,
    StoreError, keys,
};
use rl_tests::backends::{Backend, BackendKind};
use rl_tests::test_with_all_stores;

fn spec(key: &str, limit: u64, window: Duration) -> CounterSpec {
    CounterSpec {
        key: key.into(),
        limit,
        window_us: window.as_micros() as u64,
        shadow: false,
        algorithm: Algorithm::Exact,
    }
}

/// A shadow counter: counted while it has room, never refusing.
fn shadow(key: &str, limit: u64, window: Duration) -> CounterSpec {
    CounterSpec {
        shadow: true,
        algorithm: Algorithm::Exact,
        ..spec(key, limit, window)
    }
}

/// A manual clock starting at the real time: instants on the Unix-epoch scale, as in
/// production.
fn clock_at_now() -> Arc<ManualClock> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64;
    Arc::new(ManualClock::new(now))
}

test_with_all_stores!(
    concurrent_decisions_admit_exactly_the_limit,
    identities_are_independent,
    admitted_again_exactly_when_the_oldest_entry_leaves,
    a_lowered_limit_frees_the_counter_only_when_enough_entries_left,
    batched_calls_are_counted_in_order,
    peek_records_nothing,
    several_windows_are_checked_and_recorded_together,
    a_denied_request_records_nothing_in_any_window,
    concurrent_decisions_respect_every_window,
    shadow_counters_never_refuse_and_record_only_with_room,
    concurrent_shadow_counters_stay_at_their_limit,
);

// ---- Slotted counters ----

test_with_all_stores!(
    a_slotted_counter_counts_its_oldest_slot_whole,
    a_slotted_counter_is_free_at_most_a_slot_later_than_the_exact_log,
    a_decision_mixing_exact_and_slotted_counters_is_atomic,
    concurrent_decisions_admit_exactly_a_slotted_limit,
    an_exact_log_becomes_slots_and_slots_do_not_become_a_log,
    peek_reports_a_slotted_counter_without_recording,
    the_largest_slotted_limit_is_counted,
);

const SLOT: u64 = 1_000_000;

/// A slotted counter (slots of `slot_us`).
fn slotted(key: &str, limit: u64, window: Duration, slot_us: u64) -> CounterSpec {
    CounterSpec {
        algorithm: Algorithm::Slotted { slot_us },
        ..spec(key, limit, window)
    }
}

/// A manual clock at the start of a real-time slot of 1 s.
fn clock_at_a_slot_start() -> Arc<ManualClock> {
    let clock = clock_at_now();
    clock.set(clock.now_us().div_ceil(SLOT) * SLOT);
    clock
}

/// Three requests in 10 s within the first second; four and a half seconds later the first
/// has left the exact window, but its slot is still counted whole: refused until the slot
/// leaves, exactly at its end plus the window.
async fn a_slotted_counter_counts_its_oldest_slot_whole(backend: &Backend) {
    let clock = clock_at_a_slot_start();
    let store = backend.store_with_clock(clock.clone());
    let id = "ip:10.9.0.1";
    let c = [slotted(
        &keys::budget_key(id, 10, Algorithm::Slotted { slot_us: SLOT }),
        3,
        Duration::from_secs(10),
        SLOT,
    )];
    let t0 = clock.now_us();
    for (i, at) in [t0 + 200_000, t0 + 5_000_000, t0 + 9_900_000]
        .into_iter()
        .enumerate()
    {
        clock.set(at);
        let out = store.check_and_record(id, &c).await.expect("store");
        assert!(out.admitted, "{}: request {i}", backend.name());
        assert_eq!(out.counters[0].count, i as u64 + 1);
        assert_eq!(
            out.counters[0].free_at_us,
            t0 + SLOT + 10_000_000,
            "{}: the first slot leaves first",
            backend.name()
        );
    }
    // The exact log would admit here (t0 + 0.2 s has left (t − 10 s, t]).
    clock.set(t0 + 10_500_000);
    let out = store.check_and_record(id, &c).await.expect("store");
    assert!(!out.admitted, "{}", backend.name());
    assert_eq!(
        (out.counters[0].count, out.counters[0].full),
        (3, true),
        "{}",
        backend.name()
    );
    assert_eq!(out.counters[0].free_at_us, t0 + 11_000_000);
    clock.set(t0 + 10_999_999);
    assert!(
        !store
            .check_and_record(id, &c)
            .await
            .expect("store")
            .admitted
    );
    clock.set(t0 + 11_000_000);
    let out = store.check_and_record(id, &c).await.expect("store");
    assert!(
        out.admitted,
        "{}: room when the slot leaves",
        backend.name()
    );
    assert_eq!(out.counters[0].count, 3);
    // Slots 5 and 9 are next to leave, then the one just recorded (slot 11).
    assert_eq!(out.counters[0].free_at_us, t0 + 6 * SLOT + 10_000_000);
    clock.set(t0 + 21_999_999);
    assert_eq!(
        store.peek(id, &c).await.expect("peek").counters[0].count,
        1,
        "{}",
        backend.name()
    );
    clock.set(t0 + 22_000_000);
    let out = store.peek(id, &c).await.expect("peek");
    assert_eq!(
        (out.counters[0].count, out.counters[0].free_at_us),
        (0, t0 + 22_000_000),
        "{}: empty",
        backend.name()
    );
}

/// The same full counter, exact and slotted: room again at most one slot later (exactly one
/// when its oldest request opened its slot), never earlier.
async fn a_slotted_counter_is_free_at_most_a_slot_later_than_the_exact_log(backend: &Backend) {
    let clock = clock_at_a_slot_start();
    let store = backend.store_with_clock(clock.clone());
    let window = Duration::from_secs(10);
    let t0 = clock.now_us();
    for (n, first) in [(0u64, 0u64), (1, 1), (2, 400_000), (3, SLOT - 1)] {
        let id = format!("ip:10.9.1.{n}");
        let slotted_key = keys::budget_key(&id, 10, Algorithm::Slotted { slot_us: SLOT });
        let exact_key = keys::rule_key(&id, 10, Algorithm::Exact, "/x");
        let c = [
            slotted(&slotted_key, 2, window, SLOT),
            spec(&exact_key, 2, window),
        ];
        let start = t0 + n * 20_000_000;
        for at in [start + first, start + SLOT - 1] {
            clock.set(at);
            assert!(
                store
                    .check_and_record(&id, &c)
                    .await
                    .expect("store")
                    .admitted
            );
        }
        clock.set(start + 5 * SLOT);
        let out = store.check_and_record(&id, &c).await.expect("store");
        assert!(!out.admitted);
        let (slotted_free, exact_free) = (out.counters[0].free_at_us, out.counters[1].free_at_us);
        assert_eq!(exact_free, start + first + 10_000_000);
        assert_eq!(
            slotted_free,
            start + SLOT + 10_000_000,
            "{}",
            backend.name()
        );
        assert!(slotted_free >= exact_free && slotted_free - exact_free <= SLOT);
        assert_eq!(slotted_free - exact_free == SLOT, first == 0);
    }
}

/// A request needing an exact burst window, a slotted long window and a shadow slotted rule
/// window: a denial by either enforced counter records nothing anywhere; the shadow counter
/// records only while it has room.
async fn a_decision_mixing_exact_and_slotted_counters_is_atomic(backend: &Backend) {
    let clock = clock_at_a_slot_start();
    let store = backend.store_with_clock(clock.clone());
    let id = "ip:10.9.2.1";
    let long = Algorithm::Slotted { slot_us: SLOT };
    let c = [
        spec(
            &keys::budget_key(id, 1, Algorithm::Exact),
            2,
            Duration::from_secs(1),
        ),
        slotted(
            &keys::budget_key(id, 60, long),
            3,
            Duration::from_secs(60),
            SLOT,
        ),
        CounterSpec {
            shadow: true,
            ..slotted(
                &keys::rule_key(id, 60, long, "/x"),
                1,
                Duration::from_secs(60),
                SLOT,
            )
        },
    ];
    let counts = |out: &control_plane::store::Outcome| -> Vec<u64> {
        out.counters.iter().map(|c| c.count).collect()
    };
    let call = async || store.check_and_record(id, &c).await.expect("store");
    let t0 = clock.now_us();
    let first = call().await;
    assert!(first.admitted);
    assert_eq!(counts(&first), [1, 1, 1], "{}", backend.name());
    let second = call().await;
    assert!(second.admitted, "a full shadow counter refuses nothing");
    assert_eq!(counts(&second), [2, 2, 1], "{}", backend.name());
    assert!(second.counters[2].full);
    // The exact window is full: nothing recorded in the slotted ones.
    let third = call().await;
    assert!(!third.admitted);
    assert_eq!(counts(&third), [2, 2, 1], "{}", backend.name());
    assert_eq!(
        third.counters.iter().map(|c| c.full).collect::<Vec<_>>(),
        [true, false, true]
    );
    clock.set(t0 + SLOT);
    let fourth = call().await;
    assert!(fourth.admitted);
    assert_eq!(counts(&fourth), [1, 3, 1], "{}", backend.name());
    // The slotted window is full: nothing recorded in the exact one.
    clock.set(t0 + SLOT + 500_000);
    let fifth = call().await;
    assert!(!fifth.admitted);
    assert_eq!(counts(&fifth), [1, 3, 1], "{}", backend.name());
    assert_eq!(
        fifth.counters.iter().map(|c| c.full).collect::<Vec<_>>(),
        [false, true, true]
    );
    // The slotted window names when it has room; the exact one when its entry leaves.
    assert_eq!(fifth.counters[1].free_at_us, t0 + SLOT + 60_000_000);
    assert_eq!(fifth.counters[0].free_at_us, t0 + 2 * SLOT);
}

/// Many concurrent requests on one slotted counter: exactly the limit admitted.
async fn concurrent_decisions_admit_exactly_a_slotted_limit(backend: &Backend) {
    let store = backend.store();
    let id = "ip:10.9.3.1";
    let c = [slotted(
        &keys::budget_key(id, 60, Algorithm::Slotted { slot_us: SLOT }),
        25,
        Duration::from_secs(60),
        SLOT,
    )];
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let store = store.clone();
        let c = c.clone();
        tasks.spawn(async move { store.check_and_record(id, &c).await.expect("store") });
    }
    let mut admitted = 0;
    while let Some(out) = tasks.join_next().await {
        let out = out.expect("task");
        assert!(out.counters[0].count <= 25);
        admitted += u64::from(out.admitted);
    }
    assert_eq!(admitted, 25, "{}", backend.name());
}

/// A window switched from exact to slotted keeps every request its log counts (the log is
/// converted into slot counts, then deleted); switched back, or to another slot length, the
/// new counter starts from what it can take without loss: the slots are not turned back into
/// a log.
async fn an_exact_log_becomes_slots_and_slots_do_not_become_a_log(backend: &Backend) {
    let clock = clock_at_a_slot_start();
    let store = backend.store_with_clock(clock.clone());
    let id = "ip:10.9.4.1";
    let window = Duration::from_secs(10);
    let exact = [spec(&keys::budget_key(id, 10, Algorithm::Exact), 5, window)];
    let one_s = Algorithm::Slotted { slot_us: SLOT };
    let slots = [slotted(&keys::budget_key(id, 10, one_s), 5, window, SLOT)];
    let t0 = clock.now_us();
    // Entries at 0, 0.5, 3 and 4 s; at 10.2 s the first has left the exact window.
    for at in [0, 500_000, 3 * SLOT, 4 * SLOT] {
        clock.set(t0 + at);
        assert!(
            store
                .check_and_record(id, &exact)
                .await
                .expect("store")
                .admitted
        );
    }
    clock.set(t0 + 10_200_000);
    let converted = store.peek(id, &slots).await.expect("peek");
    assert_eq!(
        (
            converted.counters[0].count,
            converted.counters[0].free_at_us
        ),
        (3, t0 + SLOT + 10_000_000),
        "{}: the log's three live entries, by slot",
        backend.name()
    );
    let out = store.check_and_record(id, &slots).await.expect("store");
    assert!(out.admitted);
    assert_eq!(out.counters[0].count, 4);
    let out = store.check_and_record(id, &slots).await.expect("store");
    assert!(out.admitted);
    assert_eq!(out.counters[0].count, 5);
    assert!(
        !store
            .check_and_record(id, &slots)
            .await
            .expect("store")
            .admitted
    );
    if let Some(redis) = backend.redis_server() {
        let mut conn = redis.connection();
        let log: u64 = redis::cmd("EXISTS")
            .arg(&exact[0].key)
            .query(&mut conn)
            .expect("EXISTS");
        assert_eq!(log, 0, "the converted log is deleted");
        let kind: String = redis::cmd("TYPE")
            .arg(&slots[0].key)
            .query(&mut conn)
            .expect("TYPE");
        assert_eq!(kind, "hash");
    }
    // Back to exact: a new, empty log (at most one window of over-admission, documented).
    let back = store.check_and_record(id, &exact).await.expect("store");
    assert!(back.admitted, "{}", backend.name());
    assert_eq!(back.counters[0].count, 1, "{}", backend.name());
    // Another slot length: a new counter, which converts the (new) log of its window.
    let two_s = Algorithm::Slotted { slot_us: 2 * SLOT };
    let other = [slotted(
        &keys::budget_key(id, 10, two_s),
        5,
        window,
        2 * SLOT,
    )];
    let out = store.check_and_record(id, &other).await.expect("store");
    assert_eq!(out.counters[0].count, 2, "{}", backend.name());
    // The first slotted counter is untouched by all this.
    let out = store.peek(id, &slots).await.expect("peek");
    assert_eq!(out.counters[0].count, 5, "{}", backend.name());
}

/// A report reads a slotted counter (count, when it has room) and records nothing.
async fn peek_reports_a_slotted_counter_without_recording(backend: &Backend) {
    let clock = clock_at_a_slot_start();
    let store = backend.store_with_clock(clock.clone());
    let id = "ip:10.9.5.1";
    let c = [slotted(
        &keys::budget_key(id, 10, Algorithm::Slotted { slot_us: SLOT }),
        2,
        Duration::from_secs(10),
        SLOT,
    )];
    let t0 = clock.now_us();
    let empty = store.peek(id, &c).await.expect("peek");
    assert!(empty.admitted);
    assert_eq!(
        (empty.counters[0].count, empty.counters[0].free_at_us),
        (0, t0)
    );
    for at in [100, 2 * SLOT + 100] {
        clock.set(t0 + at);
        store.check_and_record(id, &c).await.expect("store");
    }
    clock.set(t0 + 3 * SLOT);
    for _ in 0..3 {
        let out = store.peek(id, &c).await.expect("peek");
        assert!(!out.admitted, "{}", backend.name());
        assert_eq!(
            (
                out.counters[0].count,
                out.counters[0].free_at_us,
                out.counters[0].full
            ),
            (2, t0 + 11 * SLOT, true),
            "{}",
            backend.name()
        );
    }
}

/// The largest limit of a slotted counter, 2^32 − 1: counted like any other.
async fn the_largest_slotted_limit_is_counted(backend: &Backend) {
    let store = backend.store();
    let id = "ip:10.9.6.1";
    let max = u64::from(u32::MAX);
    let c = [slotted(
        &keys::budget_key(id, 3_600, Algorithm::Slotted { slot_us: 60 * SLOT }),
        max,
        Duration::from_secs(3_600),
        60 * SLOT,
    )];
    for n in 1..=3 {
        let out = store.check_and_record(id, &c).await.expect("store");
        assert!(out.admitted, "{}", backend.name());
        assert_eq!((out.counters[0].count, out.counters[0].full), (n, false));
    }
}

/// A burst window (3 per second) and a long one (5 per minute) of one identity, and a rule's
/// window: each request is recorded in every one of them, the burst binds first, then the
/// long one, and a second later the burst has room again while the minute does not.
async fn several_windows_are_checked_and_recorded_together(backend: &Backend) {
    let clock = clock_at_now();
    let store = backend.store_with_clock(clock.clone());
    let id = "ip:10.3.0.1";
    let counters = [
        spec("rl:{ip:10.3.0.1}:b:1", 3, Duration::from_secs(1)),
        spec("rl:{ip:10.3.0.1}:b:60", 5, Duration::from_secs(60)),
        spec("rl:{ip:10.3.0.1}:e:60:/x", 10, Duration::from_secs(60)),
    ];
    let call = async || store.check_and_record(id, &counters).await.expect("store");
    let t0 = clock.now_us();
    for n in 1..=3 {
        let out = call().await;
        assert!(out.admitted, "{}: request {n}", backend.name());
        let counts: Vec<u64> = out.counters.iter().map(|c| c.count).collect();
        assert_eq!(
            counts,
            [n, n, n],
            "{}: recorded in every window",
            backend.name()
        );
        assert!(out.counters.iter().all(|c| !c.full));
    }
    let denied = call().await;
    assert!(!denied.admitted, "{}: the burst is full", backend.name());
    let full: Vec<bool> = denied.counters.iter().map(|c| c.full).collect();
    assert_eq!(full, [true, false, false], "{}", backend.name());
    assert_eq!(denied.counters[0].free_at_us, t0 + 1_000_000);
    clock.set(t0 + 1_000_000);
    for _ in 0..2 {
        assert!(call().await.admitted, "{}", backend.name());
    }
    let denied = call().await;
    assert!(!denied.admitted, "{}: the minute is full", backend.name());
    let counts: Vec<(u64, bool)> = denied.counters.iter().map(|c| (c.count, c.full)).collect();
    assert_eq!(
        counts,
        [(2, false), (5, true), (5, false)],
        "{}: the burst has room, the minute has not",
        backend.name()
    );
    assert_eq!(
        denied.counters[1].free_at_us,
        t0 + 60_000_000,
        "{}: the minute has room when its first entry leaves",
        backend.name()
    );
}

/// A request refused by one window leaves every other window as it was, also the windows
/// that had room (and also in a batch).
async fn a_denied_request_records_nothing_in_any_window(backend: &Backend) {
    let clock = clock_at_now();
    let store = backend.store_with_clock(clock.clone());
    let id = "ip:10.3.0.2";
    let budget = [
        spec("rl:{ip:10.3.0.2}:b:1", 10, Duration::from_secs(1)),
        spec("rl:{ip:10.3.0.2}:b:60", 100, Duration::from_secs(60)),
    ];
    let rule = spec("rl:{ip:10.3.0.2}:e:60:/x", 1, Duration::from_secs(60));
    let with_rule = [budget[0].clone(), budget[1].clone(), rule.clone()];
    assert!(
        store
            .check_and_record(id, &with_rule)
            .await
            .expect("store")
            .admitted
    );
    let calls: Vec<(&str, &[CounterSpec])> = vec![(id, &with_rule[..]), (id, &with_rule[..])];
    for out in store.check_and_record_many(&calls).await {
        let out = out.expect("store");
        assert!(!out.admitted, "{}", backend.name());
        let counts: Vec<u64> = out.counters.iter().map(|c| c.count).collect();
        assert_eq!(counts, [1, 1, 1], "{}: nothing recorded", backend.name());
    }
    let after = store.peek(id, &with_rule).await.expect("peek");
    let counts: Vec<u64> = after.counters.iter().map(|c| c.count).collect();
    assert_eq!(counts, [1, 1, 1], "{}", backend.name());
    // Without the rule, the budget windows still have room.
    assert!(
        store
            .check_and_record(id, &budget)
            .await
            .expect("store")
            .admitted
    );
}

/// 200 concurrent requests of one identity against a burst window and a long one: exactly
/// the smaller limit is admitted, and every window holds exactly the admitted requests.
async fn concurrent_decisions_respect_every_window(backend: &Backend) {
    let store = backend.store();
    let counters = Arc::new(vec![
        spec("rl:{key:many}:b:60", 80, Duration::from_secs(60)),
        spec("rl:{key:many}:b:3600", 120, Duration::from_secs(3600)),
        spec("rl:{key:many}:e:60:/x", 90, Duration::from_secs(60)),
    ]);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let store = store.clone();
            let counters = counters.clone();
            tokio::spawn(async move { store.check_and_record("key:many", &counters).await })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        if task.await.expect("task").expect("store").admitted {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 80, "{}", backend.name());
    let after = store.peek("key:many", &counters).await.expect("peek");
    let counts: Vec<u64> = after.counters.iter().map(|c| c.count).collect();
    assert_eq!(counts, [80, 80, 80], "{}", backend.name());
}

/// A shadow window (2 per minute) beside an enforced one (4 per minute): requests pass
/// while the enforced window has room, the shadow one says it is full and holds no more
/// than its limit; a denial by the enforced window records in neither.
async fn shadow_counters_never_refuse_and_record_only_with_room(backend: &Backend) {
    let clock = clock_at_now();
    let store = backend.store_with_clock(clock.clone());
    let id = "ip:10.3.0.3";
    let counters = [
        spec("rl:{ip:10.3.0.3}:b:60", 4, Duration::from_secs(60)),
        shadow("rl:{ip:10.3.0.3}:e:60:/new", 2, Duration::from_secs(60)),
    ];
    let t0 = clock.now_us();
    for n in 1..=4u64 {
        clock.set(t0 + n);
        let out = store.check_and_record(id, &counters).await.expect("store");
        assert!(out.admitted, "{}: request {n}", backend.name());
        assert_eq!(out.counters[0].count, n);
        assert_eq!(
            (out.counters[1].count, out.counters[1].full),
            (n.min(2), n > 2),
            "{}: request {n}",
            backend.name()
        );
        if n > 2 {
            // Full: when the shadow window would have room again.
            assert_eq!(out.counters[1].free_at_us, t0 + 1 + 60_000_000);
        }
    }
    let denied = store.check_and_record(id, &counters).await.expect("store");
    assert!(!denied.admitted, "{}", backend.name());
    assert_eq!(
        (denied.counters[0].full, denied.counters[1].full),
        (true, true)
    );
    let after = store.peek(id, &counters).await.expect("peek");
    let counts: Vec<u64> = after.counters.iter().map(|c| c.count).collect();
    assert_eq!(counts, [4, 2], "{}", backend.name());
    // Only shadow windows, all full: admitted, nothing recorded.
    let only_shadow = [counters[1].clone()];
    let out = store
        .check_and_record(id, &only_shadow)
        .await
        .expect("store");
    assert!(out.admitted && out.counters[0].full, "{}", backend.name());
    assert_eq!(out.counters[0].count, 2);
}

/// 100 concurrent requests through a shadow window of 30: every one passes, the window
/// holds exactly 30.
async fn concurrent_shadow_counters_stay_at_their_limit(backend: &Backend) {
    let store = backend.store();
    let counters = Arc::new(vec![
        spec("rl:{key:trial}:b:60", 1000, Duration::from_secs(60)),
        shadow("rl:{key:trial}:e:60:/t", 30, Duration::from_secs(60)),
    ]);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let store = store.clone();
            let counters = counters.clone();
            tokio::spawn(async move { store.check_and_record("key:trial", &counters).await })
        })
        .collect();
    let (mut admitted, mut full) = (0, 0);
    for task in tasks {
        let out = task.await.expect("task").expect("store");
        admitted += u64::from(out.admitted);
        full += u64::from(out.counters[1].full);
    }
    assert_eq!((admitted, full), (100, 70), "{}", backend.name());
    let after = store.peek("key:trial", &counters).await.expect("peek");
    let counts: Vec<u64> = after.counters.iter().map(|c| c.count).collect();
    assert_eq!(counts, [100, 30], "{}", backend.name());
}

/// 300 concurrent decisions for one identity with limit 100 admit exactly 100.
async fn concurrent_decisions_admit_exactly_the_limit(backend: &Backend) {
    let store = backend.store();
    let counters = Arc::new(vec![
        spec("rl:{key:hot}:b", 100, Duration::from_secs(60)),
        spec("rl:{key:hot}:e:/x", 150, Duration::from_secs(60)),
    ]);
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let store = store.clone();
            let counters = counters.clone();
            tokio::spawn(async move { store.check_and_record("key:hot", &counters).await })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        if task.await.expect("task").expect("store").admitted {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 100, "{}", backend.name());
    let after = store.peek("key:hot", &counters).await.expect("peek");
    assert_eq!(after.counters[0].count, 100);
    assert_eq!(
        after.counters[1].count,
        100,
        "{}: denied requests recorded nothing",
        backend.name()
    );
}

/// 1,000 identities at once each get their own full budget, no more.
async fn identities_are_independent(backend: &Backend) {
    let store = backend.store();
    let limit = 3;
    let tasks: Vec<_> = (0..1000)
        .flat_map(|id| (0..limit + 1).map(move |_| id))
        .map(|id| {
            let store = store.clone();
            tokio::spawn(async move {
                let identity = format!("ip:10.{}.{}.1", id / 256, id % 256);
                let key = format!("rl:{{{identity}}}:b");
                let counters = [spec(&key, limit, Duration::from_secs(60))];
                let out = store.check_and_record(&identity, &counters).await;
                (id, out.expect("store").admitted)
            })
        })
        .collect();
    let mut per_identity = vec![0u64; 1000];
    for task in tasks {
        let (id, admitted) = task.await.expect("task");
        if admitted {
            per_identity[id] += 1;
        }
    }
    assert!(
        per_identity.iter().all(|&n| n == limit),
        "{}: every identity gets exactly its budget",
        backend.name()
    );
}

/// Limit 2 in 2 s: denied until the oldest entry is exactly 2 s old, admitted from then on,
/// and only one slot is freed.
async fn admitted_again_exactly_when_the_oldest_entry_leaves(backend: &Backend) {
    let clock = clock_at_now();
    let store = backend.store_with_clock(clock.clone());
    let window = Duration::from_secs(2);
    let w = window.as_micros() as u64;
    let counters = [spec("rl:{ip:10.0.0.9}:b", 2, window)];
    let call = async || {
        store
            .check_and_record("ip:10.0.0.9", &counters)
            .await
            .expect("store")
    };
    let t0 = clock.now_us();
    let first = call().await;
    assert!(first.admitted);
    assert_eq!(
        first.now_us,
        t0,
        "{}: the store judges by the given clock",
        backend.name()
    );
    assert_eq!(first.counters[0].free_at_us, t0 + w);
    clock.set(t0 + 300_000);
    assert!(call().await.admitted);
    let denied = call().await;
    assert!(!denied.admitted);
    assert_eq!(denied.counters[0].count, 2);
    assert_eq!(
        denied.counters[0].free_at_us,
        t0 + w,
        "room again when the oldest entry leaves"
    );

    clock.set(t0 + w - 1);
    assert!(
        !call().await.admitted,
        "{}: admitted 1 µs early",
        backend.name()
    );
    clock.set(t0 + w);
    let again = call().await;
    assert!(
        again.admitted,
        "{}: not admitted at the boundary",
        backend.name()
    );
    assert_eq!(again.counters[0].count, 2);
    assert_eq!(again.counters[0].free_at_us, t0 + 300_000 + w);
    assert!(
        !call().await.admitted,
        "{}: only one slot was freed",
        backend.name()
    );
}

/// Five entries one second apart under limit 5, then the limit drops to 2: the counter has
/// room again only when four entries have left (count − limit + 1), not when the oldest has.
async fn a_lowered_limit_frees_the_counter_only_when_enough_entries_left(backend: &Backend) {
    let clock = clock_at_now();
    let store = backend.store_with_clock(clock.clone());
    let window = Duration::from_secs(10);
    let w = window.as_micros() as u64;
    let key = "rl:{key:lowered}:b";
    let t0 = clock.now_us();
    for i in 0..5 {
        clock.set(t0 + i * 1_000_000);
        let out = store
            .check_and_record("key:lowered", &[spec(key, 5, window)])
            .await
            .expect("store");
        assert!(out.admitted);
    }
    let lowered = [spec(key, 2, window)];
    clock.set(t0 + 5_000_000);
    let denied = store
        .check_and_record("key:lowered", &lowered)
        .await
        .expect("store");
    assert!(!denied.admitted);
    assert_eq!(
        denied.counters[0].count, 5,
        "entries stay under a new limit"
    );
    let room_at = t0 + 3_000_000 + w;
    assert_eq!(
        denied.counters[0].free_at_us,
        room_at,
        "{}: the fourth entry's departure frees the counter",
        backend.name()
    );
    clock.set(room_at - 1);
    let still = store
        .check_and_record("key:lowered", &lowered)
        .await
        .expect("store");
    assert!(!still.admitted, "{}", backend.name());
    assert_eq!(still.counters[0].count, 2, "three entries have left");
    assert_eq!(still.counters[0].free_at_us, room_at);
    clock.set(room_at);
    let admitted = store
        .check_and_record("key:lowered", &lowered)
        .await
        .expect("store");
    assert!(admitted.admitted, "{}", backend.name());
    assert_eq!(admitted.counters[0].count, 2);
}

/// One batch: calls of one identity are counted one after the other, in the order given,
/// whatever the backend does to save round trips; identities do not disturb each other.
async fn batched_calls_are_counted_in_order(backend: &Backend) {
    let clock = clock_at_now();
    let store = backend.store_with_clock(clock.clone());
    let minute = Duration::from_secs(60);
    let a = [spec("rl:{ip:10.0.1.1}:b", 3, minute)];
    let b = [
        spec("rl:{ip:10.0.2.2}:b", 5, minute),
        spec("rl:{ip:10.0.2.2}:e:/x", 1, minute),
    ];
    let mut calls: Vec<(&str, &[CounterSpec])> = Vec::new();
    for _ in 0..5 {
        calls.push(("ip:10.0.1.1", &a));
        calls.push(("ip:10.0.2.2", &b));
    }
    let results = store.check_and_record_many(&calls).await;
    assert_eq!(results.len(), calls.len());
    let outcomes: Vec<_> = results.into_iter().map(|r| r.expect("store")).collect();
    let a_seen: Vec<(bool, u64)> = outcomes
        .iter()
        .step_by(2)
        .map(|o| (o.admitted, o.counters[0].count))
        .collect();
    assert_eq!(
        a_seen,
        [(true, 1), (true, 2), (true, 3), (false, 3), (false, 3)],
        "{}",
        backend.name()
    );
    let b_seen: Vec<(bool, u64, u64)> = outcomes
        .iter()
        .skip(1)
        .step_by(2)
        .map(|o| (o.admitted, o.counters[0].count, o.counters[1].count))
        .collect();
    assert_eq!(
        b_seen,
        [
            (true, 1, 1),
            (false, 1, 1),
            (false, 1, 1),
            (false, 1, 1),
            (false, 1, 1)
        ],
        "{}: the rule's counter blocks, and the budget records nothing meanwhile",
        backend.name()
    );
    assert!(outcomes.iter().all(|o| o.now_us == clock.now_us()));
}

/// Peeking reports the counters and would-be admission without recording, creating or
/// trimming anything a later decision would see differently.
async fn peek_records_nothing(backend: &Backend) {
    let clock = clock_at_now();
    let store = backend.store_with_clock(clock.clone());
    let counters = [spec("rl:{user:peek}:b", 1, Duration::from_secs(5))];
    let empty = store.peek("user:peek", &counters).await.expect("peek");
    assert!(empty.admitted);
    assert_eq!(empty.counters[0].count, 0);
    assert_eq!(empty.counters[0].free_at_us, clock.now_us());
    for _ in 0..3 {
        assert!(
            store
                .peek("user:peek", &counters)
                .await
                .expect("peek")
                .admitted
        );
    }
    let t0 = clock.now_us();
    assert!(
        store
            .check_and_record("user:peek", &counters)
            .await
            .expect("store")
            .admitted,
        "{}: peeks recorded something",
        backend.name()
    );
    let full = store.peek("user:peek", &counters).await.expect("peek");
    assert!(!full.admitted);
    assert_eq!(
        (full.counters[0].count, full.counters[0].free_at_us),
        (1, t0 + 5_000_000)
    );
}

/// Polls `condition` until it holds; false at the deadline.
async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// A key's time-to-live in ms (`PTTL`).
fn pttl(conn: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(conn).expect("PTTL")
}

#[tokio::test]
async fn redis_keys_expire_with_their_window_and_stay_bounded() {
    let backend = Backend::start(BackendKind::Redis);
    let redis = backend.redis_server().expect("redis");
    let store = backend.store();
    let counters = [spec("rl:{ip:10.0.0.7}:b", 5, Duration::from_secs(1))];
    for _ in 0..20 {
        store
            .check_and_record("ip:10.0.0.7", &counters)
            .await
            .expect("store");
    }
    let mut conn = redis.connection();
    let len: u64 = redis::cmd("ZCARD")
        .arg("rl:{ip:10.0.0.7}:b")
        .query(&mut conn)
        .expect("ZCARD");
    assert_eq!(len, 5, "memory per counter is bounded by its limit");
    let ttl = pttl(&mut conn, "rl:{ip:10.0.0.7}:b");
    // The window plus the millisecond Redis's own expiry rounding can take away.
    assert!(ttl > 0 && ttl <= 1001, "TTL {ttl} ms follows the window");
    let gone = eventually(Duration::from_secs(5), || {
        redis::cmd("EXISTS")
            .arg("rl:{ip:10.0.0.7}:b")
            .query::<u64>(&mut conn)
            .expect("EXISTS")
            == 0
    })
    .await;
    assert!(gone, "the key outlived its TTL");
}

#[tokio::test]
async fn redis_script_is_reloaded_after_script_flush() {
    let backend = Backend::start(BackendKind::Redis);
    let store = backend.store();
    let counters = [spec("rl:{ip:10.0.0.8}:b", 5, Duration::from_secs(10))];
    let first = store
        .check_and_record("ip:10.0.0.8", &counters)
        .await
        .expect("store");
    assert!(first.admitted);
    let mut conn = backend.redis_server().expect("redis").connection();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut conn)
        .expect("SCRIPT FLUSH");
    let out = store
        .check_and_record("ip:10.0.0.8", &counters)
        .await
        .expect("store");
    assert!(out.admitted);
    assert_eq!(out.counters[0].count, 2, "counted once, not twice");
    // A batch after another flush: the pipeline reloads the script too.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut conn)
        .expect("SCRIPT FLUSH");
    let calls: Vec<(&str, &[CounterSpec])> = vec![("ip:10.0.0.8", &counters); 2];
    let counts: Vec<u64> = store
        .check_and_record_many(&calls)
        .await
        .into_iter()
        .map(|r| r.expect("store").counters[0].count)
        .collect();
    assert_eq!(counts, [3, 4]);
}

/// The breaker times its cooldown on the store's clock: with a manual clock the whole
/// open → half-open → closed cycle runs without waiting.
#[tokio::test]
async fn redis_breaker_opens_and_recovers_on_the_store_clock() {
    let mut backend = Backend::start(BackendKind::Redis);
    let clock = clock_at_now();
    let store = backend.store_with_clock(clock.clone());
    let counters = [spec("rl:{ip:10.0.0.6}:b", 100, Duration::from_secs(10))];
    assert!(
        store
            .check_and_record("ip:10.0.0.6", &counters)
            .await
            .expect("store")
            .admitted
    );
    backend.redis_server_mut().expect("redis").kill9();
    // Default options: three consecutive failures open the circuit for 500 ms.
    for attempt in 0..3 {
        let err = store
            .check_and_record("ip:10.0.0.6", &counters)
            .await
            .expect_err("Redis is down");
        assert!(
            matches!(err, StoreError::Backend(_) | StoreError::Timeout(_)),
            "attempt {attempt}: {err}"
        );
    }
    let err = store
        .check_and_record("ip:10.0.0.6", &counters)
        .await
        .expect_err("circuit open");
    assert!(matches!(err, StoreError::CircuitOpen), "{err}");
    assert_eq!(store.breaker_opened_total(), 1);
    clock.advance(499_999);
    assert!(matches!(
        store.check_and_record("ip:10.0.0.6", &counters).await,
        Err(StoreError::CircuitOpen)
    ));

    backend.redis_server_mut().expect("redis").restart();
    // The first probes may still meet the dead connection; each failed probe re-opens the
    // circuit, and the clock is moved past every cooldown.
    let deadline = Instant::now() + Duration::from_secs(10);
    let recovered = loop {
        clock.advance(500_000);
        match store.check_and_record("ip:10.0.0.6", &counters).await {
            Ok(out) => break out,
            Err(err) => assert!(Instant::now() < deadline, "Redis did not come back: {err}"),
        }
    };
    assert!(recovered.admitted, "the restarted Redis starts empty");
    assert_eq!(
        store.breaker_state(),
        Some(control_plane::store::BreakerState::Closed)
    );
    assert_eq!(store.breaker_opened_total(), 1, "one outage");
}

/// A slotted counter in Redis is one small hash in the compact listpack encoding, whatever
/// the traffic: at most W/g + 2 slots plus its total, lowest slot and the slot its expiry is
/// armed to, trimmed as time passes, and its key lives at least its window and at most W/8 and
/// a slot (and a millisecond) past it: the expiry is armed ahead, not per request.
#[tokio::test]
async fn redis_slotted_counters_are_small_hashes_that_live_at_most_an_eighth_past_their_window() {
    let backend = Backend::start(BackendKind::Redis);
    let redis = backend.redis_server().expect("redis");
    let clock = clock_at_a_slot_start();
    let store = backend.store_with_clock(clock.clone());
    let id = "ip:10.9.7.1";
    // 120 slots of 500 ms: the finest precision a window may have.
    let slot_us = 500_000;
    let c = [slotted(
        &keys::budget_key(id, 60, Algorithm::Slotted { slot_us }),
        1_000_000,
        Duration::from_secs(60),
        slot_us,
    )];
    let mut conn = redis.connection();
    let t0 = clock.now_us();
    // Three requests per slot over four windows.
    for i in 0..(4 * 120 * 3) {
        clock.set(t0 + i * slot_us / 3);
        let out = store.check_and_record(id, &c).await.expect("store");
        assert!(out.admitted);
        let fields: u64 = redis::cmd("HLEN")
            .arg(&c[0].key)
            .query(&mut conn)
            .expect("HLEN");
        assert!(fields <= 122 + 3, "{fields} fields at request {i}");
        if i >= 120 * 3 {
            // 120 whole slots of three, and the current one so far.
            assert_eq!(out.counters[0].count, 120 * 3 + i % 3 + 1, "request {i}");
        }
    }
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(&c[0].key)
        .query(&mut conn)
        .expect("OBJECT ENCODING");
    assert_eq!(encoding, "listpack");
    let ttl = pttl(&mut conn, &c[0].key);
    assert!(
        ttl > 60_000 && ttl <= 60_000 + 7_500 + 500 + 1,
        "TTL {ttl} ms: the window, and at most an eighth of it, a slot and a millisecond"
    );
}

/// On Redis's own clock, the expiry armed ahead still covers every count: after each request
/// the key lives at least a window longer (its newest count is in now's slot, counted until
/// that slot's end plus W), and the seen record a replay horizon longer (a timeout of 100 ms:
/// 1 s, armed twice in the test), while most requests send no `PEXPIRE` at all.
#[tokio::test]
async fn redis_a_slotted_counter_armed_ahead_outlives_its_newest_count() {
    let backend = Backend::start(BackendKind::Redis);
    let redis = backend.redis_server().expect("redis");
    let options = RedisStoreOptions {
        timeout: Duration::from_millis(100),
        ..RedisStoreOptions::default()
    };
    let store = RedisStore::new(&redis.url(), options).expect("store");
    let id = "ip:10.9.7.2";
    // 60 slots of 50 ms: the expiry is armed 7 slots (350 ms) ahead.
    let slot_us = 50_000;
    let c = [slotted(
        &keys::budget_key(id, 3, Algorithm::Slotted { slot_us }),
        1_000_000,
        Duration::from_secs(3),
        slot_us,
    )];
    let mut conn = redis.connection();
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query::<()>(&mut conn)
        .expect("CONFIG RESETSTAT");
    let requests = 100;
    for i in 0..requests {
        let out = store.check_and_record(id, &c).await.expect("store");
        assert!(out.admitted);
        let ttl = pttl(&mut conn, &c[0].key);
        // What Redis's clock moved between the script and PTTL is all the slack there is.
        assert!(
            ttl > 3_000 - 50,
            "request {i}: TTL {ttl} ms, less than the window"
        );
        let seen = pttl(&mut conn, &keys::seen_key(id));
        assert!(
            seen > 1_000 - 50,
            "request {i}: the seen record's TTL {seen} ms, less than the horizon"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .expect("INFO");
    let pexpires = info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_pexpire:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse::<u64>().expect("calls"));
    // About 2 s at 20 ms and more a request: one arming per 350 ms for the counter, one per
    // replay horizon for the seen record.
    assert!(
        (1..requests / 4).contains(&pexpires),
        "{pexpires} PEXPIRE for {requests} requests"
    );
}

// ---- Batches: one script call ----

/// The counters of a request of `identity` under a tier of three windows (the day's one
/// slotted) and an endpoint rule of three windows (the hour's one a shadow, the day's one
/// slotted): six counters, every kind the script knows.
fn tier_and_rule(identity: &str, limit: u64) -> Vec<CounterSpec> {
    let slotted_day = Algorithm::Slotted {
        slot_us: 60 * 60 * SLOT,
    };
    let mut specs = Vec::new();
    for (seconds, algorithm) in [
        (60, Algorithm::Exact),
        (3_600, Algorithm::Exact),
        (86_400, slotted_day),
    ] {
        specs.push(CounterSpec {
            algorithm,
            ..spec(
                &keys::budget_key(identity, seconds, algorithm),
                limit * 2,
                Duration::from_secs(seconds),
            )
        });
        specs.push(CounterSpec {
            algorithm,
            shadow: seconds == 3_600,
            ..spec(
                &keys::rule_key(identity, seconds, algorithm, "/api/*"),
                limit,
                Duration::from_secs(seconds),
            )
        });
    }
    specs
}

/// The largest batch the decision endpoint takes, each request with a tier and a rule of
/// three windows each (exact, shadow and slotted ones), several requests per identity: every
/// request answered, in order, as its identity's earlier requests of the batch left it.
async fn the_largest_batch_is_decided_in_order(backend: &Backend) {
    let clock = clock_at_now();
    let store = backend.store_with_clock(clock.clone());
    let identities: Vec<String> = (0..8).map(|i| format!("ip:10.9.0.{i}")).collect();
    // A limit of 5 on the rule: each identity's requests 6, 7 and 8 are denied.
    let specs: Vec<Vec<CounterSpec>> = identities.iter().map(|id| tier_and_rule(id, 5)).collect();
    let calls: Vec<(&str, &[CounterSpec])> = (0..rl_wire::MAX_BATCH_DECISIONS)
        .map(|i| (identities[i % 8].as_str(), specs[i % 8].as_slice()))
        .collect();
    let results = store.check_and_record_many(&calls).await;
    assert_eq!(results.len(), calls.len());
    for (i, result) in results.into_iter().enumerate() {
        let out = result.unwrap_or_else(|e| panic!("{}: request {i}: {e}", backend.name()));
        let nth = (i / 8) as u64 + 1;
        assert_eq!(out.admitted, nth <= 5, "{}: request {i}", backend.name());
        let budget_count = out.counters[0].count;
        assert_eq!(budget_count, nth.min(5), "{}: request {i}", backend.name());
        assert_eq!(out.counters.len(), 6);
        assert_eq!(out.now_us, clock.now_us());
    }
}

test_with_all_stores!(the_largest_batch_is_decided_in_order);

/// Entries of an exact log as Redis holds them.
fn zcard(conn: &mut redis::Connection, key: &str) -> u64 {
    redis::cmd("ZCARD").arg(key).query(conn).expect("ZCARD")
}

/// On a single node a batch is one script call, however many requests and identities it has.
#[tokio::test]
async fn redis_a_batch_is_one_script_call() {
    let backend = Backend::start(BackendKind::Redis);
    let redis = backend.redis_server().expect("redis");
    let store = backend.store_with_clock(clock_at_now());
    let identities: Vec<String> = (0..5).map(|i| format!("ip:10.9.1.{i}")).collect();
    let specs: Vec<Vec<CounterSpec>> = identities.iter().map(|id| tier_and_rule(id, 8)).collect();
    // Loads the script.
    let warm_up = store
        .check_and_record(&identities[0], &specs[0])
        .await
        .expect("warm-up");
    assert!(warm_up.admitted);
    let calls: Vec<(&str, &[CounterSpec])> = (0..50)
        .map(|i| (identities[i % 5].as_str(), specs[i % 5].as_slice()))
        .collect();
    let before = redis.command_calls("evalsha");
    let results = store.check_and_record_many(&calls).await;
    let after = redis.command_calls("evalsha");
    assert_eq!(after - before, 1, "50 requests, one script call");
    let admitted = results
        .iter()
        .map(|r| r.as_ref().expect("store").admitted)
        .filter(|a| *a)
        .count();
    // Identity 0 had one request already: 8 + 8×4 − 1 of the 50 fit.
    assert_eq!(admitted, 7 + 4 * 8);
    let mut conn = redis.connection();
    assert_eq!(zcard(&mut conn, &specs[0][1].key), 8);
    assert_eq!(zcard(&mut conn, &specs[4][1].key), 8);
}

/// A batch whose keys and arguments exceed what one script call carries is split, in order,
/// into as few calls as it needs, and answers as if it were one.
#[tokio::test]
async fn redis_a_batch_too_big_for_one_script_call_is_split_in_order() {
    use control_plane::store::MAX_SCRIPT_ARGS;
    let backend = Backend::start(BackendKind::Redis);
    let redis = backend.redis_server().expect("redis");
    let store = backend.store_with_clock(clock_at_now());
    let identity = "ip:10.9.2.1";
    // 40 windows: one request takes 1 + 40 keys and 3 + 200 arguments.
    let specs: Vec<CounterSpec> = (1..=40)
        .map(|s| {
            spec(
                &keys::budget_key(identity, s, Algorithm::Exact),
                100,
                Duration::from_secs(s),
            )
        })
        .collect();
    let per_request = 1 + 40 + 3 + 5 * 40;
    let requests = rl_wire::MAX_BATCH_DECISIONS;
    store
        .check_and_record(identity, &specs[..1])
        .await
        .expect("warm-up");
    let calls: Vec<(&str, &[CounterSpec])> = vec![(identity, specs.as_slice()); requests];
    let before = redis.command_calls("evalsha");
    let results = store.check_and_record_many(&calls).await;
    let after = redis.command_calls("evalsha");
    let per_call = MAX_SCRIPT_ARGS / per_request;
    assert_eq!(after - before, requests.div_ceil(per_call) as u64);
    assert!(after - before > 1, "the batch does not fit one script call");
    let counts: Vec<u64> = results
        .into_iter()
        .map(|r| r.expect("store").counters[1].count)
        .collect();
    let expected: Vec<u64> = (1..=requests as u64).collect();
    assert_eq!(counts, expected, "in order, each request counted once");
}

/// A request the script refuses (a slotted window of more slots than a counter names) fails
/// alone: the requests before and after it in the batch are decided and recorded.
#[tokio::test]
async fn redis_a_refused_request_fails_alone_in_its_batch() {
    let backend = Backend::start(BackendKind::Redis);
    let redis = backend.redis_server().expect("redis");
    let store = backend.store_with_clock(clock_at_now());
    let good = [spec("rl:{ip:10.9.3.1}:b:60", 5, Duration::from_secs(60))];
    let bad = [CounterSpec {
        algorithm: Algorithm::Slotted { slot_us: 1_000 },
        ..spec("rl:{ip:10.9.3.2}:b:60s0", 5, Duration::from_secs(60))
    }];
    let calls: Vec<(&str, &[CounterSpec])> = vec![
        ("ip:10.9.3.1", &good),
        ("ip:10.9.3.2", &bad),
        ("ip:10.9.3.1", &good),
    ];
    let results = store.check_and_record_many(&calls).await;
    let first = results[0].as_ref().expect("the first request is decided");
    let last = results[2].as_ref().expect("the last request is decided");
    assert_eq!((first.counters[0].count, last.counters[0].count), (1, 2));
    match &results[1] {
        Err(StoreError::Refused(err)) => {
            assert!(err.to_string().contains("too many slots"), "{err}")
        }
        other => panic!("the bad request is refused: {other:?}"),
    }
    let mut conn = redis.connection();
    assert_eq!(zcard(&mut conn, &good[0].key), 2);
    let exists: u64 = redis::cmd("EXISTS")
        .arg(&bad[0].key)
        .query(&mut conn)
        .expect("EXISTS");
    assert_eq!(exists, 0, "nothing of the refused request is written");
}

/// After `SCRIPT FLUSH` the batch's script call did not run: the script is loaded, the batch
/// sent again, and every request answered and recorded once.
#[tokio::test]
async fn redis_a_batch_after_script_flush_is_answered_and_recorded_once() {
    let backend = Backend::start(BackendKind::Redis);
    let redis = backend.redis_server().expect("redis");
    let store = backend.store_with_clock(clock_at_now());
    let identities = ["ip:10.9.4.1", "ip:10.9.4.2", "ip:10.9.4.3"];
    let specs: Vec<Vec<CounterSpec>> = identities.iter().map(|id| tier_and_rule(id, 3)).collect();
    store
        .check_and_record(identities[0], &specs[0])
        .await
        .expect("warm-up");
    let mut conn = redis.connection();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut conn)
        .expect("SCRIPT FLUSH");
    let calls: Vec<(&str, &[CounterSpec])> = (0..12)
        .map(|i| (identities[i % 3], specs[i % 3].as_slice()))
        .collect();
    let results = store.check_and_record_many(&calls).await;
    let seen: Vec<(bool, u64)> = results
        .into_iter()
        .map(|r| {
            let out = r.expect("answered after the reload");
            (out.admitted, out.counters[1].count)
        })
        .collect();
    // Identity 0 had one request: its 1st, 2nd of the batch fit; identities 1 and 2 three.
    let expected: Vec<(bool, u64)> = (0..12)
        .map(|i| {
            let before = u64::from(i % 3 == 0);
            let nth = (i / 3) as u64 + 1 + before;
            (nth <= 3, nth.min(3))
        })
        .collect();
    assert_eq!(seen, expected);
    for specs in &specs {
        assert_eq!(zcard(&mut conn, &specs[1].key), 3, "recorded once");
    }
}
