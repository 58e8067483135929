//! Concurrency leases on every backend (memory, a real redis-server, a real Redis Cluster):
//! taken up to the limit under concurrency, renewed, released, expired; renewals and releases
//! of several identities in one call (one script call per slot group on a cluster).

use std::sync::Arc;

use control_plane::store::keys::lease_key;
use control_plane::store::{CounterStore, LeaseRef, ManualClock};
use rl_tests::backends::Backend;
use rl_tests::test_with_all_stores;

const T0: u64 = 1_700_000_000_000_000;
const TTL_US: u64 = 30_000_000;

test_with_all_stores!(
    concurrent_takers_get_exactly_max_slots,
    renew_release_and_expiry,
    renewals_and_releases_span_identities,
);

fn store_leases(store: &Arc<dyn CounterStore>) -> &dyn control_plane::store::LeaseStore {
    store.leases().expect("every backend keeps leases")
}

async fn concurrent_takers_get_exactly_max_slots(backend: &Backend) {
    let store = backend.store();
    let key = lease_key(&format!("ip:10.9.0.{}", fastrand::u8(..)));
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            let key = key.clone();
            tokio::spawn(async move {
                store_leases(&store)
                    .acquire(&key, 7, &format!("lease-{i}"), TTL_US)
                    .await
                    .expect("acquire")
                    .granted
            })
        })
        .collect();
    let mut granted = Vec::new();
    for task in tasks {
        granted.push(task.await.expect("task"));
    }
    assert_eq!(
        granted.iter().filter(|g| **g).count(),
        7,
        "{}: {granted:?}",
        backend.name()
    );
    let winners: Vec<LeaseRef> = granted
        .iter()
        .enumerate()
        .filter(|(_, g)| **g)
        .map(|(i, _)| LeaseRef {
            key: key.clone(),
            id: format!("lease-{i}"),
        })
        .collect();
    let leases = store_leases(&store);
    assert_eq!(leases.release(&winners).await.unwrap(), 7);
    let again = leases.acquire(&key, 7, "after", TTL_US).await.unwrap();
    assert!(again.granted);
    assert_eq!(again.held, 1, "{}", backend.name());
}

async fn renew_release_and_expiry(backend: &Backend) {
    let clock = Arc::new(ManualClock::new(T0));
    let store = backend.store_with_clock(clock.clone());
    let leases = store_leases(&store);
    let key = lease_key(&format!("key:expiry-{}", fastrand::u32(..)));
    let lease = |id: &str| LeaseRef {
        key: key.clone(),
        id: id.into(),
    };
    assert!(leases.acquire(&key, 2, "a", TTL_US).await.unwrap().granted);
    assert!(leases.acquire(&key, 2, "b", TTL_US).await.unwrap().granted);
    let full = leases.acquire(&key, 2, "c", TTL_US).await.unwrap();
    assert!(!full.granted);
    assert_eq!(full.held, 2);

    // "a" is renewed half-way; "b" is not.
    clock.advance(TTL_US / 2);
    assert_eq!(leases.renew(&[lease("a")], TTL_US).await.unwrap(), 1);
    clock.advance(TTL_US / 2);
    // "b" expired exactly now: its slot is free, "a" still holds its own.
    let taken = leases.acquire(&key, 2, "c", TTL_US).await.unwrap();
    assert!(taken.granted, "{}", backend.name());
    assert_eq!(taken.held, 2);
    // An expired lease is neither renewed nor released.
    assert_eq!(leases.renew(&[lease("b")], TTL_US).await.unwrap(), 0);
    assert_eq!(leases.release(&[lease("b")]).await.unwrap(), 0);
    assert!(!leases.acquire(&key, 2, "d", TTL_US).await.unwrap().granted);
    assert_eq!(leases.release(&[lease("a"), lease("c")]).await.unwrap(), 2);
    let empty = leases.acquire(&key, 2, "d", TTL_US).await.unwrap();
    assert_eq!((empty.granted, empty.held), (true, 1));
}

async fn renewals_and_releases_span_identities(backend: &Backend) {
    let clock = Arc::new(ManualClock::new(T0));
    let store = backend.store_with_clock(clock.clone());
    let leases = store_leases(&store);
    let run = fastrand::u32(..);
    // Identities whose keys fall in different cluster slots.
    let keys: Vec<String> = (0..12)
        .map(|i| lease_key(&format!("user:span-{run}-{i}")))
        .collect();
    for key in &keys {
        assert!(
            leases
                .acquire(key, 1, "only", TTL_US)
                .await
                .unwrap()
                .granted
        );
    }
    let all: Vec<LeaseRef> = keys
        .iter()
        .map(|key| LeaseRef {
            key: key.clone(),
            id: "only".into(),
        })
        .collect();
    clock.advance(TTL_US - 1);
    assert_eq!(leases.renew(&all, TTL_US).await.unwrap(), 12);
    clock.advance(TTL_US - 1);
    for key in &keys {
        assert!(
            !leases
                .acquire(key, 1, "late", TTL_US)
                .await
                .unwrap()
                .granted,
            "renewed leases still hold on {}",
            backend.name()
        );
    }
    assert_eq!(leases.release(&all[..6]).await.unwrap(), 6);
    for (i, key) in keys.iter().enumerate() {
        let got = leases.acquire(key, 1, "late", TTL_US).await.unwrap();
        assert_eq!(got.granted, i < 6, "{i} on {}", backend.name());
    }
}
