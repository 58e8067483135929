//! Both stores under concurrency and across a real window boundary.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use control_plane::store::{CounterSpec, CounterStore, MemoryStore, RedisStore, RedisStoreOptions};
use rl_tests::RedisServer;

fn spec(key: String, limit: u64, window: Duration) -> CounterSpec {
    CounterSpec {
        key,
        limit,
        window_us: window.as_micros() as u64,
    }
}

fn redis_store(redis: &RedisServer) -> Arc<dyn CounterStore> {
    let options = RedisStoreOptions {
        timeout: Duration::from_secs(2),
        ..RedisStoreOptions::default()
    };
    Arc::new(RedisStore::new(&redis.url(), options).expect("redis store"))
}

/// 300 concurrent decisions for one identity with limit 100 admit exactly 100.
async fn exactly_limit_admitted(store: Arc<dyn CounterStore>) {
    let counters = Arc::new(vec![
        spec("rl:{key:hot}:b".into(), 100, Duration::from_secs(60)),
        spec("rl:{key:hot}:e:/x".into(), 150, Duration::from_secs(60)),
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
    assert_eq!(admitted, 100, "{} backend", store.backend());
    let after = store.peek("key:hot", &counters).await.expect("peek");
    assert_eq!(after.counters[0].count, 100);
    assert_eq!(
        after.counters[1].count, 100,
        "denied requests recorded nothing"
    );
}

/// 1,000 identities at once each get their own full budget, no more.
async fn identities_are_independent(store: Arc<dyn CounterStore>) {
    let limit = 3;
    let tasks: Vec<_> = (0..1000)
        .flat_map(|id| (0..limit + 1).map(move |_| id))
        .map(|id| {
            let store = store.clone();
            tokio::spawn(async move {
                let identity = format!("ip:10.{}.{}.1", id / 256, id % 256);
                let counters = [spec(
                    format!("rl:{{{identity}}}:b"),
                    limit,
                    Duration::from_secs(60),
                )];
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
        "{} backend: every identity gets exactly its budget",
        store.backend()
    );
}

/// With a 2 s window and limit 2: denied until the oldest entry is 2 s old, admitted after.
async fn admitted_again_exactly_after_the_window(store: Arc<dyn CounterStore>) {
    let window = Duration::from_secs(2);
    let counters = [spec("rl:{ip:10.0.0.9}:b".into(), 2, window)];
    let first = store
        .check_and_record("ip:10.0.0.9", &counters)
        .await
        .unwrap();
    assert!(first.admitted);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        store
            .check_and_record("ip:10.0.0.9", &counters)
            .await
            .unwrap()
            .admitted
    );
    let denied = store
        .check_and_record("ip:10.0.0.9", &counters)
        .await
        .unwrap();
    assert!(!denied.admitted);
    let free_at = denied.counters[0].free_at_us;
    assert_eq!(free_at, first.now_us + window.as_micros() as u64);

    // The stores' clocks are on the Unix scale (Redis TIME; the in-memory clock is anchored
    // to it at start), so local sleeps can aim at the boundary.
    let now_us = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    };
    let until = |t: u64| Duration::from_micros(t.saturating_sub(now_us()));
    tokio::time::sleep(until(free_at.saturating_sub(250_000))).await;
    let early = store
        .check_and_record("ip:10.0.0.9", &counters)
        .await
        .unwrap();
    if early.now_us < free_at {
        assert!(
            !early.admitted,
            "admitted {} µs before the boundary",
            free_at - early.now_us
        );
    }
    tokio::time::sleep(until(free_at + 50_000)).await;
    let after = store
        .check_and_record("ip:10.0.0.9", &counters)
        .await
        .unwrap();
    assert!(after.now_us >= free_at);
    assert!(
        after.admitted,
        "not admitted after the oldest entry left the window"
    );
    // Only one slot freed: the second entry is still inside.
    assert!(
        !store
            .check_and_record("ip:10.0.0.9", &counters)
            .await
            .unwrap()
            .admitted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_concurrent_decisions_admit_exactly_the_limit() {
    exactly_limit_admitted(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_concurrent_decisions_admit_exactly_the_limit() {
    let redis = RedisServer::start();
    exactly_limit_admitted(redis_store(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_identities_are_independent() {
    identities_are_independent(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_identities_are_independent() {
    let redis = RedisServer::start();
    identities_are_independent(redis_store(&redis)).await;
}

#[tokio::test]
async fn memory_window_expiry_at_the_boundary() {
    admitted_again_exactly_after_the_window(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn redis_window_expiry_at_the_boundary() {
    let redis = RedisServer::start();
    admitted_again_exactly_after_the_window(redis_store(&redis)).await;
}

#[tokio::test]
async fn redis_keys_expire_with_their_window_and_stay_bounded() {
    let redis = RedisServer::start();
    let store = redis_store(&redis);
    let counters = [spec("rl:{ip:10.0.0.7}:b".into(), 5, Duration::from_secs(1))];
    for _ in 0..20 {
        store
            .check_and_record("ip:10.0.0.7", &counters)
            .await
            .unwrap();
    }
    let mut conn = redis.connection();
    let len: u64 = redis::cmd("ZCARD")
        .arg("rl:{ip:10.0.0.7}:b")
        .query(&mut conn)
        .unwrap();
    assert_eq!(len, 5, "memory per counter is bounded by its limit");
    let ttl: i64 = redis::cmd("PTTL")
        .arg("rl:{ip:10.0.0.7}:b")
        .query(&mut conn)
        .unwrap();
    assert!(ttl > 0 && ttl <= 1000, "TTL {ttl} ms follows the window");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let exists: u64 = redis::cmd("EXISTS")
        .arg("rl:{ip:10.0.0.7}:b")
        .query(&mut conn)
        .unwrap();
    assert_eq!(exists, 0);
}

#[tokio::test]
async fn redis_script_is_reloaded_after_script_flush() {
    let redis = RedisServer::start();
    let store = redis_store(&redis);
    let counters = [spec(
        "rl:{ip:10.0.0.8}:b".into(),
        5,
        Duration::from_secs(10),
    )];
    assert!(
        store
            .check_and_record("ip:10.0.0.8", &counters)
            .await
            .unwrap()
            .admitted
    );
    let mut conn = redis.connection();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
    let out = store
        .check_and_record("ip:10.0.0.8", &counters)
        .await
        .unwrap();
    assert!(out.admitted);
    assert_eq!(out.counters[0].count, 2);
}
