//! The filter's deny cache through a real Envoy with the release `.wasm`: a denial the control
//! plane marks cacheable (`deny_for_ms`) answers the same request in the filter, without a
//! call, until min(`deny_for_ms`, 1 s) after its call was dispatched; another path or key
//! still asks; the filter's own denials reach the control plane with the next batch call
//! (`local_denials`) and its `local_denied` stat.
//!
//! The control plane is the harness's fake (`tests/src/fake_control_plane.rs`), which counts
//! the calls it receives and records the `local_denials` they carry.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use rl_tests::fake_control_plane::{Answer, windows};
use rl_tests::{Envoy, EnvoyBuilder, FakeControlPlane, Reply, Upstream, client_from, get};
use rl_wire::Verdict;

const PATH: &str = "/api/v1/request";
const POLICY: [(&str, u64, u64); 1] = [("fake-60s", 100, 60)];

fn deny(deny_for_ms: u64) -> Answer {
    let mut decision = windows(Verdict::Deny, &POLICY, 0, 0, 42);
    decision.deny_for_ms = Some(deny_for_ms);
    Answer::Decision(decision)
}

fn client() -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 91)))
}

async fn fetch(envoy: &Envoy, key: &str, path: &str) -> Reply {
    get(&client(), &envoy.url(path), &[("x-api-key", key)]).await
}

fn local_denied(envoy: &Envoy) -> u64 {
    envoy
        .stat("wasmcustom.rate_limit_filter.local_denied")
        .expect("the local_denied stat is defined")
}

/// Repeats `fetch` of (key, path) until a decision call reaches `fake`; returns when that
/// happened, measured from `since`.
async fn until_asked(
    envoy: &Envoy,
    fake: &FakeControlPlane,
    key: &str,
    since: Instant,
) -> Duration {
    let before = fake.calls();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = fetch(envoy, key, PATH).await;
        assert_eq!(reply.status, 429, "{reply:#?}");
        if fake.calls() > before {
            return since.elapsed();
        }
        assert!(Instant::now() < deadline, "the filter never asked again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cacheable_denial_is_answered_by_the_filter_then_reported() {
    let fake = FakeControlPlane::start(deny(500));
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(fake.addr(), upstream.addr())
        .concurrency(1)
        .start();

    let start = Instant::now();
    let first = fetch(&envoy, "k1", PATH).await;
    assert_eq!(first.status, 429, "{first:#?}");
    assert_eq!(fake.calls(), 1);
    // Identical requests answered within 400 ms of the start were checked well before the
    // entry's end (500 ms after the dispatch, which came after the start): no call.
    let mut local = 0u64;
    while start.elapsed() < Duration::from_millis(300) {
        let calls = fake.calls();
        let reply = fetch(&envoy, "k1", PATH).await;
        if start.elapsed() >= Duration::from_millis(400) {
            break;
        }
        assert_eq!(reply.status, 429, "{reply:#?}");
        assert_eq!(fake.calls(), calls, "answered by the filter");
        assert_eq!(reply.body, first.body, "the same 429 body");
        for name in [
            "retry-after",
            "x-ratelimit-limit",
            "x-ratelimit-reset",
            "ratelimit",
        ] {
            assert_eq!(reply.headers.get(name), first.headers.get(name), "{name}");
        }
        local += 1;
    }
    assert!(
        local > 0,
        "no identical request in time: the machine is too slow"
    );
    assert_eq!(local_denied(&envoy), local);

    // Another path or key asks; the first such call is a batch that reports the denials.
    let calls = fake.calls();
    assert_eq!(fetch(&envoy, "k1", "/api/v1/other").await.status, 429);
    assert_eq!(fetch(&envoy, "k2", PATH).await.status, 429);
    assert_eq!(fake.calls(), calls + 2);
    let reported: u64 = fake.local_denials().iter().map(|d| d.count).sum();
    assert_eq!(reported, local, "{:?}", fake.local_denials());
    let entry = &fake.local_denials()[0];
    assert_eq!(entry.tier.as_deref(), Some("fake"));
    assert_eq!(entry.endpoint, "/api/v1/request");
    assert_eq!(entry.policy.as_deref(), Some("fake-60s"));

    // After deny_for_ms the same request is asked about again.
    let asked = until_asked(&envoy, &fake, "k1", start).await;
    assert!(
        asked >= Duration::from_millis(500),
        "asked again after {asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_for_ms_is_capped_at_one_second_across_workers() {
    let fake = FakeControlPlane::start(deny(60_000));
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(fake.addr(), upstream.addr())
        .concurrency(2)
        .start();
    let start = Instant::now();
    assert_eq!(fetch(&envoy, "k1", PATH).await.status, 429);
    assert_eq!(fake.calls(), 1);
    // Each fetch opens a new connection: the workers share the entry.
    let asked = until_asked(&envoy, &fake, "k1", start).await;
    assert!(
        asked >= Duration::from_secs(1),
        "asked again after {asked:?}"
    );
    assert!(local_denied(&envoy) > 0);
    // Far below the 60 s the answer asked for (the wait above is bounded by 10 s).
    assert!(asked < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_api_keys_are_each_asked_about_and_the_cache_keeps_working() {
    let fake = FakeControlPlane::start(deny(1000));
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(fake.addr(), upstream.addr())
        .concurrency(1)
        .start();
    for i in 0..300 {
        assert_eq!(fetch(&envoy, &format!("fake-{i}"), PATH).await.status, 429);
    }
    assert_eq!(fake.calls(), 300, "every new key asks");
    assert_eq!(local_denied(&envoy), 0);
    let calls = fake.calls();
    let reply = fetch(&envoy, "fake-299", PATH).await;
    assert_eq!(reply.status, 429);
    assert_eq!(fake.calls(), calls, "the latest entry answers");
}
