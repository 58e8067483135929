use super::*;
use crate::store::ManualClock;

fn spec(key: &str, limit: u64, window_us: u64) -> CounterSpec {
    CounterSpec {
        key: key.into(),
        limit,
        window_us,
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
