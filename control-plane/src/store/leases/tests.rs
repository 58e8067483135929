use super::*;
use crate::store::ManualClock;

const T0: u64 = 1_700_000_000_000_000;
const TTL: u64 = 30_000_000;

fn leases() -> (Arc<ManualClock>, MemoryLeases) {
    let clock = Arc::new(ManualClock::new(T0));
    (clock.clone(), MemoryLeases::new(clock))
}

fn lease(id: &str) -> LeaseRef {
    LeaseRef {
        key: "rl:{ip:10.0.0.1}:c".into(),
        id: id.into(),
    }
}

async fn take(store: &MemoryLeases, id: &str, max: u64) -> LeaseOutcome {
    store
        .acquire("rl:{ip:10.0.0.1}:c", max, id, TTL)
        .await
        .unwrap()
}

#[tokio::test]
async fn takes_up_to_max_then_refuses_until_a_release() {
    let (_, store) = leases();
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        let got = take(&store, id, 3).await;
        assert_eq!(
            got,
            LeaseOutcome {
                granted: true,
                held: i as u64 + 1
            }
        );
    }
    assert_eq!(
        take(&store, "d", 3).await,
        LeaseOutcome {
            granted: false,
            held: 3
        }
    );
    assert_eq!(store.release(&[lease("b")]).await.unwrap(), 1);
    // Released twice: the second finds nothing.
    assert_eq!(store.release(&[lease("b")]).await.unwrap(), 0);
    assert!(take(&store, "d", 3).await.granted);
    assert!(!take(&store, "e", 3).await.granted);
}

#[tokio::test]
async fn an_unrenewed_lease_expires_and_frees_its_slot() {
    let (clock, store) = leases();
    assert!(take(&store, "a", 1).await.granted);
    clock.advance(TTL - 1);
    assert!(!take(&store, "b", 1).await.granted);
    clock.advance(1);
    // Expired at T0 + TTL exactly.
    assert!(take(&store, "b", 1).await.granted);
    // An expired lease is not brought back by a renewal nor counted as released.
    assert_eq!(store.renew(&[lease("a")], TTL).await.unwrap(), 0);
    assert_eq!(store.release(&[lease("a")]).await.unwrap(), 0);
}

#[tokio::test]
async fn a_renewed_lease_lives_a_lease_from_its_renewal() {
    let (clock, store) = leases();
    assert!(take(&store, "a", 1).await.granted);
    clock.advance(TTL / 2);
    assert_eq!(
        store
            .renew(&[lease("a"), lease("unknown")], TTL)
            .await
            .unwrap(),
        1
    );
    clock.advance(TTL - 1);
    assert!(!take(&store, "b", 1).await.granted, "renewed: still held");
    clock.advance(1);
    assert!(
        take(&store, "b", 1).await.granted,
        "expired a TTL after renewal"
    );
}

#[tokio::test]
async fn sets_are_their_own_per_key_and_emptied_sets_go() {
    let (clock, store) = leases();
    assert!(take(&store, "a", 1).await.granted);
    assert!(
        store
            .acquire("rl:{ip:10.0.0.2}:c", 1, "a", TTL)
            .await
            .unwrap()
            .granted
    );
    assert_eq!(store.set_count(), 2);
    store.release(&[lease("a")]).await.unwrap();
    assert_eq!(store.set_count(), 1);
    // Sets of identities that never come back are swept by later acquisitions.
    clock.advance(TTL);
    for i in 0..SWEEP_EVERY {
        let key = format!("rl:{{ip:10.1.0.{i}}}:c");
        store.acquire(&key, 1, "x", 1).await.unwrap();
        clock.advance(1);
    }
    assert!(
        store.set_count() < SWEEP_EVERY as usize,
        "{}",
        store.set_count()
    );
}
