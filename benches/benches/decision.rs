//! The decision path: identity, rule matching, counters in the store, the answer.
//!
//! In-memory and Redis (a private redis-server started here) are measured in one run so
//! their ratio is meaningful on a noisy machine. Sequential figures are per-decision latency;
//! the `x64` groups run 64 decisions concurrently, which is how the service is loaded.
//!
//! Every decision timed must be an admission: a store error (answered `failed_open` or
//! `unavailable`) or a denial takes another, shorter path, and timing it would report that
//! path under this one's name. Each backend is checked before it is measured, and each timed
//! decision's verdict is checked too (one comparison), so such a run fails instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use control_plane::decision::{Decider, Decision};
use control_plane::live_config;
use control_plane::store::{
    CounterStore, MemoryStore, MonotonicClock, RedisStore, RedisStoreOptions,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rl_benches::bench_config;
use rl_tests::RedisServer;
use rl_wire::{DecisionRequest, Verdict};

fn request(n: u64) -> DecisionRequest {
    // 10,000 distinct clients, as in the load benchmark.
    let id = n % 10_000;
    DecisionRequest {
        ip: format!("10.{}.{}.{}", id / 65536, (id / 256) % 256, id % 256),
        method: "GET".into(),
        path: "/api/v1/request?page=2".into(),
        ..Default::default()
    }
}

/// Panics unless `decision` admitted its request with the store answering.
fn expect_allowed(decision: &Decision) {
    let verdict = decision.response.verdict;
    assert!(
        verdict == Verdict::Allow && decision.store_error.is_none(),
        "a benchmarked decision was {verdict:?} (store error: {:?}), not an admission: \
         the timings would be of that path",
        decision.store_error
    );
}

fn bench_backend(
    c: &mut Criterion,
    name: &str,
    store: Arc<dyn CounterStore>,
    rt: &tokio::runtime::Runtime,
) {
    let decider = Arc::new(Decider::new(
        live_config::shared(bench_config()),
        store,
        Arc::new(MonotonicClock::new()),
    ));
    let counter = AtomicU64::new(0);
    // The store answers and the configuration admits, before anything is timed.
    for n in 0..3 {
        expect_allowed(&rt.block_on(decider.decide(&request(n))));
    }
    let mut group = c.benchmark_group(format!("decision/{name}"));
    group.throughput(Throughput::Elements(1));
    group.bench_function("sequential", |b| {
        b.to_async(rt).iter(|| {
            let req = request(counter.fetch_add(1, Ordering::Relaxed));
            let decider = decider.clone();
            async move { expect_allowed(&decider.decide(&req).await) }
        })
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("x64", |b| {
        b.to_async(rt).iter(|| {
            let base = counter.fetch_add(64, Ordering::Relaxed);
            let decider = decider.clone();
            async move {
                let tasks: Vec<_> = (0..64)
                    .map(|i| {
                        let decider = decider.clone();
                        tokio::spawn(async move { decider.decide(&request(base + i)).await })
                    })
                    .collect();
                for task in tasks {
                    expect_allowed(&task.await.expect("decision task"));
                }
            }
        })
    });
    group.finish();
}

fn decision(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    bench_backend(c, "memory", Arc::new(MemoryStore::new()), &rt);

    let redis = RedisServer::start();
    let store = {
        let _entered = rt.enter();
        RedisStore::new(
            &redis.url(),
            RedisStoreOptions {
                timeout: Duration::from_secs(1),
                ..RedisStoreOptions::default()
            },
        )
        .expect("redis store")
    };
    bench_backend(c, "redis", Arc::new(store), &rt);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = decision
}
criterion_main!(benches);
