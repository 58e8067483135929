use super::*;
use crate::store::{Algorithm, ManualClock};

fn spec(key: &str, limit: u64, window_us: u64) -> CounterSpec {
    CounterSpec {
        key: key.into(),
        limit,
        window_us,
        shadow: false,
        algorithm: Algorithm::Exact,
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

fn capped(max_identities: usize) -> (Arc<ManualClock>, MemoryStore) {
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    (
        clock.clone(),
        MemoryStore::with_max_identities(clock, max_identities),
    )
}

#[tokio::test]
async fn at_the_cap_a_new_identity_is_refused_and_tracked_ones_go_on() {
    let (_clock, store) = capped(2);
    let c = [spec("k", 10, 1_000_000)];
    for id in ["a", "b"] {
        assert!(store.check_and_record(id, &c).await.unwrap().admitted);
    }
    assert!(matches!(
        store.check_and_record("c", &c).await,
        Err(StoreError::Full(2))
    ));
    // Nothing was dropped to make room: the tracked identities keep counting.
    let out = store.check_and_record("a", &c).await.unwrap();
    assert!(out.admitted);
    assert_eq!(out.counters[0].count, 2);
    assert_eq!(store.identity_count(), 2);
    // Looking records nothing and takes no place.
    let out = store.peek("c", &c).await.unwrap();
    assert_eq!(out.counters[0].count, 0);
    assert_eq!(store.identity_count(), 2);
}

#[tokio::test]
async fn a_call_that_records_nothing_is_never_refused() {
    let (_clock, store) = capped(1);
    assert!(
        store
            .check_and_record("a", &[spec("k", 1, 1_000)])
            .await
            .unwrap()
            .admitted
    );
    // A limit of 0 denies without recording: nothing to track, nothing to refuse.
    let out = store
        .check_and_record("b", &[spec("k", 0, 1_000)])
        .await
        .unwrap();
    assert!(!out.admitted);
    assert_eq!(store.identity_count(), 1);
}

#[tokio::test]
async fn identities_that_have_ended_make_room_at_once() {
    let (clock, store) = capped(2);
    let t0 = clock.now_us();
    let c = [spec("k", 5, 1_000)];
    store.check_and_record("a", &c).await.unwrap();
    clock.set(t0 + 500);
    store.check_and_record("b", &c).await.unwrap();
    clock.set(t0 + 999);
    assert!(matches!(
        store.check_and_record("c", &c).await,
        Err(StoreError::Full(2))
    ));
    // `a`'s only entry leaves the window at t0 + 1000: no periodic sweep needed.
    clock.set(t0 + 1_000);
    assert!(store.check_and_record("c", &c).await.unwrap().admitted);
    assert_eq!(store.identity_count(), 2);
    assert_eq!(store.peek("b", &c).await.unwrap().counters[0].count, 1);
    assert_eq!(store.peek("a", &c).await.unwrap().counters[0].count, 0);
    // `b` and `c` are live: the next newcomer waits for `b`.
    assert!(store.check_and_record("d", &c).await.is_err());
    clock.set(t0 + 1_500);
    assert!(store.check_and_record("d", &c).await.unwrap().admitted);
}

#[tokio::test]
async fn an_identity_ends_with_its_last_counter() {
    let (clock, store) = capped(1);
    let t0 = clock.now_us();
    let budget = spec("b", 5, 1_000);
    let rule = spec("r", 5, 1_000);
    store
        .check_and_record("a", &[budget.clone(), rule])
        .await
        .unwrap();
    clock.set(t0 + 600);
    store
        .check_and_record("a", std::slice::from_ref(&budget))
        .await
        .unwrap();
    assert_eq!(store.counter_count(), 2);
    // The rule counter ended at t0 + 1000, the budget lives on until t0 + 1600. The refusal
    // swept (an end had passed): the rule counter went, the identity stayed.
    clock.set(t0 + 1_200);
    assert!(
        store
            .check_and_record("z", std::slice::from_ref(&budget))
            .await
            .is_err()
    );
    assert_eq!(store.counter_count(), 1);
    assert_eq!(store.identity_count(), 1);
    clock.set(t0 + 1_600);
    assert!(
        store
            .check_and_record("z", &[budget])
            .await
            .unwrap()
            .admitted
    );
}

#[tokio::test]
async fn a_shortened_window_ends_an_identity_sooner() {
    let (clock, store) = capped(1);
    let t0 = clock.now_us();
    store
        .check_and_record("a", &[spec("k", 5, 10_000)])
        .await
        .unwrap();
    // A configuration change shortens the window: `a` now ends at t0 + 1 + 1000.
    clock.set(t0 + 1);
    store
        .check_and_record("a", &[spec("k", 5, 1_000)])
        .await
        .unwrap();
    clock.set(t0 + 1_001);
    assert!(
        store
            .check_and_record("b", &[spec("k", 5, 1_000)])
            .await
            .unwrap()
            .admitted
    );
}

#[test]
fn concurrent_newcomers_never_exceed_the_cap() {
    let (_clock, store) = capped(50);
    let c = [spec("k", 5, 1_000_000)];
    let admitted = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (store, admitted, c) = (&store, &admitted, &c);
            scope.spawn(move || {
                for i in 0..100 {
                    if let Ok(out) = store.run(&format!("{t}-{i}"), c, true, 1) {
                        assert!(out.admitted);
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(admitted.load(Ordering::Relaxed), 50);
    assert_eq!(store.identity_count(), 50);
    assert_eq!(store.counter_count(), 50);
}

fn shadow(key: &str, limit: u64, window_us: u64) -> CounterSpec {
    CounterSpec {
        shadow: true,
        algorithm: Algorithm::Exact,
        ..spec(key, limit, window_us)
    }
}

#[tokio::test]
async fn a_shadow_counter_never_refuses_and_records_only_with_room() {
    let (_clock, store) = store();
    let c = [
        spec("enforced", 10, 1_000_000),
        shadow("shadow", 2, 1_000_000),
    ];
    for i in 1..=4u64 {
        let out = store.check_and_record("id", &c).await.unwrap();
        assert!(out.admitted, "request {i}");
        assert_eq!(out.counters[0].count, i);
        assert!(!out.counters[0].full);
        assert_eq!(out.counters[1].count, i.min(2), "request {i}");
        assert_eq!(out.counters[1].full, i > 2, "request {i}");
    }
    // A denial by an enforced counter records nothing, in the shadow counter either.
    let c = [
        spec("enforced", 1, 1_000_000),
        shadow("shadow", 5, 1_000_000),
    ];
    assert!(store.check_and_record("other", &c).await.unwrap().admitted);
    let out = store.check_and_record("other", &c).await.unwrap();
    assert!(!out.admitted);
    assert!(out.counters[0].full && !out.counters[1].full);
    assert_eq!(out.counters[1].count, 1);
}

#[tokio::test]
async fn only_shadow_counters_all_full_record_nothing_and_take_no_place() {
    let (_clock, store) = capped(1);
    assert!(
        store
            .check_and_record("a", &[spec("k", 1, 1_000)])
            .await
            .unwrap()
            .admitted
    );
    // A newcomer whose only counter is a shadow one with no room (limit 0) records nothing:
    // admitted, tracked nowhere, never refused at the cap.
    let out = store
        .check_and_record("b", &[shadow("k", 0, 1_000)])
        .await
        .unwrap();
    assert!(out.admitted && out.counters[0].full);
    assert_eq!(store.identity_count(), 1);
}

fn slotted(key: &str, limit: u64, window_us: u64, slot_us: u64) -> CounterSpec {
    CounterSpec {
        algorithm: Algorithm::Slotted { slot_us },
        ..spec(key, limit, window_us)
    }
}

#[tokio::test]
async fn a_slotted_counter_counts_its_oldest_slot_whole() {
    let (clock, store) = store();
    // 1 s slots in 10 s; the clock starts on a slot boundary.
    let c = [slotted("s", 2, 10_000_000, 1_000_000)];
    let t0 = clock.now_us();
    assert!(store.check_and_record("id", &c).await.unwrap().admitted);
    clock.set(t0 + 999_999);
    let out = store.check_and_record("id", &c).await.unwrap();
    assert!(out.admitted);
    assert_eq!(out.counters[0].free_at_us, t0 + 11_000_000);
    // The first request left the exact window at t0 + 10 s; its slot is counted until +11 s.
    clock.set(t0 + 10_500_000);
    let out = store.check_and_record("id", &c).await.unwrap();
    assert!(!out.admitted);
    assert_eq!(
        (out.counters[0].count, out.counters[0].free_at_us),
        (2, t0 + 11_000_000)
    );
    clock.set(t0 + 11_000_000);
    assert!(store.check_and_record("id", &c).await.unwrap().admitted);
}

#[tokio::test]
async fn an_exact_log_becomes_the_slots_of_its_window() {
    let (clock, store) = store();
    let exact = spec("rl:{id}:b:10", 3, 10_000_000);
    let t0 = clock.now_us();
    for i in 0..3 {
        clock.set(t0 + i * 2_000_000);
        assert!(
            store
                .check_and_record("id", std::slice::from_ref(&exact))
                .await
                .unwrap()
                .admitted
        );
    }
    let slotted = slotted("rl:{id}:b:10s1000", 3, 10_000_000, 1_000_000);
    let out = store
        .check_and_record("id", std::slice::from_ref(&slotted))
        .await
        .unwrap();
    assert!(!out.admitted, "the log's three requests are counted");
    assert_eq!(out.counters[0].count, 3);
    assert_eq!(out.counters[0].free_at_us, t0 + 11_000_000);
    assert_eq!(store.counter_count(), 1, "the log is gone");
    // Back to exact: the log starts empty (the slots are not converted back).
    let out = store.check_and_record("id", &[exact]).await.unwrap();
    assert!(out.admitted);
    assert_eq!(out.counters[0].count, 1);
}

#[tokio::test]
async fn a_key_read_with_another_structure_is_rebuilt() {
    let (_clock, store) = store();
    let exact = spec("k", 5, 10_000_000);
    let slots = slotted("k", 5, 10_000_000, 1_000_000);
    for _ in 0..2 {
        store
            .check_and_record("id", std::slice::from_ref(&exact))
            .await
            .unwrap();
    }
    let out = store
        .check_and_record("id", std::slice::from_ref(&slots))
        .await
        .unwrap();
    assert_eq!(out.counters[0].count, 3, "a log converts");
    let out = store.check_and_record("id", &[exact]).await.unwrap();
    assert_eq!(out.counters[0].count, 1, "slots do not");
    let other_slot = slotted("k", 5, 10_000_000, 2_000_000);
    let out = store.check_and_record("id", &[slots]).await.unwrap();
    assert_eq!(out.counters[0].count, 2);
    let out = store.check_and_record("id", &[other_slot]).await.unwrap();
    assert_eq!(
        out.counters[0].count, 1,
        "another slot length starts afresh"
    );
}

#[tokio::test]
async fn a_swept_slotted_counter_ends_when_its_newest_slot_leaves() {
    let (clock, store) = store();
    let c = [slotted("s", 5, 10_000_000, 1_000_000)];
    let t0 = clock.now_us();
    clock.set(t0 + 500_000);
    store.check_and_record("id", &c).await.unwrap();
    clock.set(t0 + 10_999_999);
    assert_eq!(store.evict_expired(), 0);
    clock.set(t0 + 11_000_000);
    assert_eq!(store.evict_expired(), 1);
    assert_eq!(store.identity_count(), 0);
}

#[tokio::test]
async fn an_adjustment_is_remembered_for_its_time_and_the_record_is_swept() {
    let (clock, store) = store();
    let c = [spec("a", 1_000_000, 60_000_000)];
    let charge = |once: &str| Adjustment {
        change: Change::Charge { units: 2 },
        once: once.to_string(),
    };
    assert_eq!(store.adjust("id", &c, &charge("x")).await.unwrap(), 2);
    assert_eq!(store.adjust("id", &c, &charge("x")).await.unwrap(), 0);
    // Past the longest window the name is forgotten (a new call of that name applies).
    clock.advance(60_000_001);
    assert_eq!(store.adjust("id", &c, &charge("x")).await.unwrap(), 2);
    // Many names: the forgotten ones are swept, the record does not keep them all.
    for i in 0..(2 * ADJUSTED_SWEEP_AT) {
        store
            .adjust("id", &c, &charge(&format!("n{i}")))
            .await
            .unwrap();
        clock.advance(1_000_000);
    }
    let kept = store.adjusted.lock().0.len();
    assert!(kept <= ADJUSTED_SWEEP_AT, "{kept} names kept");
}
