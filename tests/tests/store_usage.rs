//! Adjustments after a response on every counter store (memory, Redis, Redis Cluster): a
//! charge adds its units at the time of the call to every window without a room check (an
//! exact log one weighted entry, a slotted counter its current slot), so a counter may go over
//! its limit and stays full until enough units leave; a release takes back the very entry of
//! an admission (exact: that entry, the `#` sum fixed; slotted: from its slot while that slot
//! is counted), and nothing once the entry has left; each adjustment applies once, also when
//! many of several identities (several cluster slots) go together.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use control_plane::store::{
    Adjustment, Algorithm, Change, Clock, CounterSpec, CounterStore, ManualClock, keys,
};
use rl_tests::backends::Backend;
use rl_tests::test_with_all_stores;

const S: u64 = 1_000_000;

test_with_all_stores!(
    a_charge_goes_over_the_limit_and_denies_until_units_leave,
    a_charge_lands_in_the_current_slot,
    a_release_takes_back_the_admissions_entry_exactly,
    a_release_of_a_slotted_entry_leaves_other_slots_alone,
    an_entry_that_left_the_window_releases_nothing,
    each_adjustment_applies_once,
    many_adjustments_across_identities_apply_in_one_call_each_once,
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

fn clock() -> Arc<ManualClock> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64;
    Arc::new(ManualClock::new(now.div_ceil(S) * S))
}

fn charge(units: u64, once: &str) -> Adjustment {
    Adjustment {
        change: Change::Charge { units },
        once: once.to_string(),
    }
}

fn release(recorded_us: u64, weight: u64, once: &str) -> Adjustment {
    Adjustment {
        change: Change::Release {
            recorded_us,
            weight,
        },
        once: once.to_string(),
    }
}

/// Count of each counter, without recording.
async fn counts(store: &dyn CounterStore, id: &str, c: &[CounterSpec]) -> Vec<u64> {
    store
        .peek(id, c)
        .await
        .expect("peek")
        .counters
        .iter()
        .map(|s| s.count)
        .collect()
}

/// A request of 1 then a charge of 25 on a limit of 10: both windows (exact and slotted) hold
/// 26, the next request is refused and free_at says when 16 units have left; once the charge's
/// entry leaves, requests pass again.
async fn a_charge_goes_over_the_limit_and_denies_until_units_leave(backend: &Backend) {
    let clock = clock();
    let store = backend.store_with_clock(clock.clone());
    let id = "key:charged";
    let c = [
        exact(keys::budget_key(id, 10, Algorithm::Exact), 10, 10),
        slotted(
            keys::rule_key(id, 20, Algorithm::Slotted { slot_us: S }, "/llm"),
            10,
            20,
        ),
    ];
    let t0 = clock.now_us();
    let first = store.check_and_record(id, &c).await.expect("store");
    assert!(first.admitted);
    clock.set(t0 + 2 * S);
    let units = store
        .adjust(id, &c, &charge(25, "c1"))
        .await
        .expect("charge");
    assert_eq!(units, 25, "{}", backend.name());
    assert_eq!(
        counts(store.as_ref(), id, &c).await,
        [26, 26],
        "{}",
        backend.name()
    );
    clock.set(t0 + 3 * S);
    let refused = store.check_and_record(id, &c).await.expect("store");
    assert!(!refused.admitted, "{}", backend.name());
    assert!(
        refused.counters.iter().all(|s| s.full),
        "{}",
        backend.name()
    );
    // The exact log frees room when the charge (at t0 + 2 s) leaves its 10 s window.
    assert_eq!(
        refused.counters[0].free_at_us,
        t0 + 12 * S,
        "{}",
        backend.name()
    );
    clock.set(t0 + 12 * S + 1);
    let exact_only = [c[0].clone()];
    let again = store
        .check_and_record(id, &exact_only)
        .await
        .expect("store");
    assert!(again.admitted, "{}", backend.name());
    assert_eq!(again.counters[0].count, 1, "{}", backend.name());
}

/// A charge on a slotted counter is added to the slot of its time: that slot is what leaves.
async fn a_charge_lands_in_the_current_slot(backend: &Backend) {
    let clock = clock();
    let store = backend.store_with_clock(clock.clone());
    let id = "key:slots";
    let c = [slotted(
        keys::budget_key(id, 10, Algorithm::Slotted { slot_us: S }),
        100,
        10,
    )];
    let t0 = clock.now_us();
    assert!(
        store
            .check_and_record(id, &c)
            .await
            .expect("store")
            .admitted
    );
    clock.set(t0 + 5 * S);
    assert_eq!(
        store
            .adjust(id, &c, &charge(7, "s1"))
            .await
            .expect("charge"),
        7
    );
    assert_eq!(
        counts(store.as_ref(), id, &c).await,
        [8],
        "{}",
        backend.name()
    );
    // The first slot leaves (its whole slot counted until t0 + 11 s), the charge stays.
    clock.set(t0 + 11 * S);
    assert_eq!(
        counts(store.as_ref(), id, &c).await,
        [7],
        "{}",
        backend.name()
    );
    clock.set(t0 + 16 * S);
    assert_eq!(
        counts(store.as_ref(), id, &c).await,
        [0],
        "{}",
        backend.name()
    );
}

/// Five admissions of cost 2 among weight-1 entries; releasing the third takes exactly its 2
/// units from the exact log (whose `#` sum stays right: a request of 9 then fits exactly) and
/// from the slotted counter.
async fn a_release_takes_back_the_admissions_entry_exactly(backend: &Backend) {
    let clock = clock();
    let store = backend.store_with_clock(clock.clone());
    let id = "key:release";
    let c = [
        exact(keys::rule_key(id, 60, Algorithm::Exact, "/login"), 20, 60),
        slotted(
            keys::rule_key(id, 60, Algorithm::Slotted { slot_us: S }, "/login"),
            20,
            60,
        ),
    ];
    let t0 = clock.now_us();
    let mut recorded = Vec::new();
    for i in 0..5u64 {
        clock.set(t0 + i * S);
        let out = store
            .check_and_record_weighted(id, &c, 2)
            .await
            .expect("store");
        assert!(out.admitted);
        recorded.push(out.now_us);
        let one = store.check_and_record(id, &c).await.expect("store");
        assert!(one.admitted);
    }
    assert_eq!(
        counts(store.as_ref(), id, &c).await,
        [15, 15],
        "{}",
        backend.name()
    );
    clock.set(t0 + 6 * S);
    let released = store
        .adjust(id, &c, &release(recorded[2], 2, "r1"))
        .await
        .expect("release");
    assert_eq!(released, 2, "{}", backend.name());
    assert_eq!(
        counts(store.as_ref(), id, &c).await,
        [13, 13],
        "{}",
        backend.name()
    );
    // A weight that was not recorded at that time is not there.
    let wrong = store
        .adjust(id, &c, &release(recorded[3], 5, "r2"))
        .await
        .expect("release");
    assert_eq!(wrong, 0, "{}", backend.name());
    // 13 + 7 = 20: fits exactly; one more unit does not.
    let seven = store
        .check_and_record_weighted(id, &c, 7)
        .await
        .expect("store");
    assert!(seven.admitted, "{}", backend.name());
    assert_eq!(
        seven.counters.iter().map(|s| s.count).collect::<Vec<_>>(),
        [20, 20],
        "{}",
        backend.name()
    );
    assert!(
        !store
            .check_and_record(id, &c)
            .await
            .expect("store")
            .admitted
    );
}

/// A release from a slotted counter takes only from the slot of its admission.
async fn a_release_of_a_slotted_entry_leaves_other_slots_alone(backend: &Backend) {
    let clock = clock();
    let store = backend.store_with_clock(clock.clone());
    let id = "key:slot-release";
    let c = [slotted(
        keys::budget_key(id, 10, Algorithm::Slotted { slot_us: S }),
        10,
        10,
    )];
    let t0 = clock.now_us();
    let first = store.check_and_record(id, &c).await.expect("store");
    clock.set(t0 + 3 * S);
    assert!(
        store
            .check_and_record(id, &c)
            .await
            .expect("store")
            .admitted
    );
    assert_eq!(
        store
            .adjust(id, &c, &release(first.now_us, 1, "a1"))
            .await
            .expect("release"),
        1
    );
    assert_eq!(
        counts(store.as_ref(), id, &c).await,
        [1],
        "{}",
        backend.name()
    );
    // The remaining unit is the one of t0 + 3 s: it is counted until t0 + 14 s.
    clock.set(t0 + 11 * S);
    assert_eq!(
        counts(store.as_ref(), id, &c).await,
        [1],
        "{}",
        backend.name()
    );
    clock.set(t0 + 14 * S);
    assert_eq!(
        counts(store.as_ref(), id, &c).await,
        [0],
        "{}",
        backend.name()
    );
}

/// Once an admission's entry has left the window, its release takes nothing from later ones.
async fn an_entry_that_left_the_window_releases_nothing(backend: &Backend) {
    let clock = clock();
    let store = backend.store_with_clock(clock.clone());
    let id = "key:gone";
    let c = [
        exact(keys::rule_key(id, 5, Algorithm::Exact, "/login"), 10, 5),
        slotted(
            keys::rule_key(id, 5, Algorithm::Slotted { slot_us: S }, "/login"),
            10,
            5,
        ),
    ];
    let t0 = clock.now_us();
    let old = store.check_and_record(id, &c).await.expect("store");
    clock.set(t0 + 6 * S);
    assert!(
        store
            .check_and_record(id, &c)
            .await
            .expect("store")
            .admitted
    );
    let released = store
        .adjust(id, &c, &release(old.now_us, 1, "g1"))
        .await
        .expect("release");
    assert_eq!(released, 0, "{}", backend.name());
    assert_eq!(
        counts(store.as_ref(), id, &c).await,
        [1, 1],
        "{}",
        backend.name()
    );
}

/// The same charge or release sent twice (a reply lost on the way) is applied once.
async fn each_adjustment_applies_once(backend: &Backend) {
    let clock = clock();
    let store = backend.store_with_clock(clock.clone());
    let id = "key:once";
    let c = [exact(keys::budget_key(id, 60, Algorithm::Exact), 100, 60)];
    let first = store.check_and_record(id, &c).await.expect("store");
    let second = store.check_and_record(id, &c).await.expect("store");
    assert_eq!(first.now_us, second.now_us);
    for expected in [4, 0] {
        let units = store
            .adjust(id, &c, &charge(4, "o1"))
            .await
            .expect("charge");
        assert_eq!(units, expected, "{}", backend.name());
    }
    for expected in [1, 0] {
        let units = store
            .adjust(id, &c, &release(first.now_us, 1, "o2"))
            .await
            .expect("release");
        assert_eq!(units, expected, "{}", backend.name());
    }
    // Two admissions at one instant, one released: one of them remains.
    assert_eq!(
        counts(store.as_ref(), id, &c).await,
        [5],
        "{}",
        backend.name()
    );
}

/// Charges and releases of twenty identities in one `adjust_many` (on a cluster, several slot
/// groups): each answered in order, each applied once when the whole call comes again.
async fn many_adjustments_across_identities_apply_in_one_call_each_once(backend: &Backend) {
    let clock = clock();
    let store = backend.store_with_clock(clock.clone());
    let ids: Vec<String> = (0..20).map(|i| format!("key:many-{i}")).collect();
    let specs: Vec<[CounterSpec; 1]> = ids
        .iter()
        .map(|id| [exact(keys::budget_key(id, 60, Algorithm::Exact), 100, 60)])
        .collect();
    let mut admitted_at = Vec::new();
    for (id, c) in ids.iter().zip(&specs) {
        let out = store.check_and_record(id, c).await.expect("store");
        admitted_at.push(out.now_us);
    }
    clock.advance(S);
    let adjustments: Vec<Adjustment> = (0..20)
        .map(|i| {
            if i % 2 == 0 {
                charge(i as u64 + 1, &format!("m{i}"))
            } else {
                release(admitted_at[i], 1, &format!("m{i}"))
            }
        })
        .collect();
    let calls: Vec<(&str, &[CounterSpec], &Adjustment)> = ids
        .iter()
        .zip(&specs)
        .zip(&adjustments)
        .map(|((id, c), a)| (id.as_str(), c.as_slice(), a))
        .collect();
    let first: Vec<u64> = store
        .adjust_many(&calls)
        .await
        .into_iter()
        .map(|r| r.expect("adjusted"))
        .collect();
    let want: Vec<u64> = (0..20u64)
        .map(|i| if i % 2 == 0 { i + 1 } else { 1 })
        .collect();
    assert_eq!(first, want, "{}", backend.name());
    let again: Vec<u64> = store
        .adjust_many(&calls)
        .await
        .into_iter()
        .map(|r| r.expect("adjusted"))
        .collect();
    assert_eq!(again, vec![0; 20], "{}", backend.name());
    for (i, (id, c)) in ids.iter().zip(&specs).enumerate() {
        let want = if i % 2 == 0 { 1 + i as u64 + 1 } else { 0 };
        assert_eq!(
            counts(store.as_ref(), id, c).await,
            [want],
            "{} {id}",
            backend.name()
        );
    }
}
