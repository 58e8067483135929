//! The generator's timing on tokio's paused clock (time advances only when every task waits,
//! so these runs are exact and take no real time), and the HTTP target against a real server.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::sleep;

use super::*;

const MS: u64 = 1_000;

/// A target whose answers take `service`, or what `slow` says for a given request; `hang`:
/// never answers. Records when each request reached it.
#[derive(Clone)]
struct Fake {
    service: Duration,
    slow: Arc<BTreeMap<u64, Duration>>,
    hang: bool,
    status: fn(u64) -> u16,
    arrivals: Arc<Mutex<Vec<(u64, Instant)>>>,
    connects: Arc<AtomicU64>,
}

impl Fake {
    fn new(service: Duration) -> Fake {
        Fake {
            service,
            slow: Arc::new(BTreeMap::new()),
            hang: false,
            status: |_| 200,
            arrivals: Arc::default(),
            connects: Arc::default(),
        }
    }

    fn arrival(&self, request: u64) -> Instant {
        let arrivals = self.arrivals.lock().unwrap();
        arrivals
            .iter()
            .find(|(r, _)| *r == request)
            .map(|(_, at)| *at)
            .unwrap_or_else(|| panic!("request {request} never arrived"))
    }
}

impl Target for Fake {
    type Conn = ();

    async fn connect(&self) -> Result<(), String> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn send(&self, _conn: &mut (), request: u64) -> Result<u16, String> {
        self.arrivals
            .lock()
            .unwrap()
            .push((request, Instant::now()));
        if self.hang {
            std::future::pending::<()>().await;
        }
        sleep(self.slow.get(&request).copied().unwrap_or(self.service)).await;
        Ok((self.status)(request))
    }
}

fn settings(connections: usize, timeout_ms: u64) -> Settings {
    Settings {
        connections,
        timeout: Duration::from_millis(timeout_ms),
    }
}

#[test]
fn the_schedule_spaces_requests_evenly() {
    let s = Schedule::new(1_000.0, Duration::from_secs(2)).unwrap();
    assert_eq!(s.len(), 2_000);
    assert_eq!(s.offset(0), Duration::ZERO);
    assert_eq!(s.offset(1), Duration::from_millis(1));
    assert_eq!(s.offset(1_999), Duration::from_millis(1_999));
    assert_eq!(s.span(), Duration::from_secs(2));

    let s = Schedule::new(3.0, Duration::from_secs(1)).unwrap();
    assert_eq!(s.len(), 3);
    assert_eq!(s.offset(2).as_micros(), 666_666);
    assert_eq!(
        Schedule::new(0.1, Duration::from_secs(10)).unwrap().len(),
        1
    );
    assert!(
        Schedule::new(0.5, Duration::from_secs(1))
            .unwrap()
            .is_empty()
    );
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(Schedule::new(bad, Duration::from_secs(1)).is_err(), "{bad}");
    }
}

#[test]
fn percentiles_are_nearest_rank() {
    let values: Vec<u64> = (1..=100).collect();
    assert_eq!(percentile(&values, 0.5), Some(50));
    assert_eq!(percentile(&values, 0.95), Some(95));
    assert_eq!(percentile(&values, 0.99), Some(99));
    assert_eq!(percentile(&values, 1.0), Some(100));
    assert_eq!(percentile(&values, 0.001), Some(1));
    assert_eq!(percentile(&[7], 0.5), Some(7));
    assert_eq!(percentile(&[], 0.5), None);
    assert_eq!(percentile(&values, 0.0), None);
    assert_eq!(percentile(&values, 1.5), None);
}

#[tokio::test(start_paused = true)]
async fn a_stall_counts_in_every_request_it_delayed() {
    // 100 req/s for 1 s on one connection; request 0 takes 300 ms, the others 1 ms. Requests
    // 1–29 fall due while request 0 is stuck: each waits for it, and that wait is latency.
    let mut fake = Fake::new(Duration::from_millis(1));
    fake.slow = Arc::new(BTreeMap::from([(0, Duration::from_millis(300))]));
    let schedule = Schedule::new(100.0, Duration::from_secs(1)).unwrap();
    let start = Instant::now();
    let report = run(fake.clone(), schedule, settings(1, 5_000)).await;

    assert_eq!(report.scheduled, 100);
    assert_eq!(report.answered, 100);
    assert_eq!(report.errors(), 0);
    assert_eq!(report.statuses, BTreeMap::from([(200, 100)]));
    // Request 1 was due at 10 ms but could leave only at 300 ms: measured from when it was
    // sent it took 1 ms; from when it was due, 291 ms.
    assert_eq!(fake.arrival(1) - start, Duration::from_millis(300));
    assert!(
        report.latencies_us.contains(&(291 * MS)),
        "{:?}",
        &report.latencies_us[90..]
    );
    assert_eq!(report.latencies_us.last(), Some(&(300 * MS)));
    // 300 − 9k ms ≥ 100 ms for k = 0..=22: 23 requests show the stall, not one.
    let slow = report
        .latencies_us
        .iter()
        .filter(|&&l| l >= 100 * MS)
        .count();
    assert_eq!(slow, 23, "{:?}", report.latencies_us);
    assert_eq!(
        report.percentile(0.5),
        Some(MS),
        "the backlog clears, then 1 ms each"
    );
    // The schedule itself never waited for the stalled answer.
    assert_eq!(report.max_dispatch_lag, Duration::ZERO);
    assert_eq!(
        fake.connects.load(Ordering::SeqCst),
        1,
        "one keep-alive connection"
    );
}

#[tokio::test(start_paused = true)]
async fn a_target_that_never_answers_times_out_and_the_rest_is_unfinished() {
    // 10 req/s for 1 s, 2 connections, 400 ms timeout: each connection times out every
    // 400 ms (reconnecting each time) until the generator gives up at 1 s + 400 ms.
    let mut fake = Fake::new(Duration::ZERO);
    fake.hang = true;
    let schedule = Schedule::new(10.0, Duration::from_secs(1)).unwrap();
    let report = run(fake.clone(), schedule, settings(2, 400)).await;

    assert_eq!(report.scheduled, 10);
    assert_eq!(report.answered, 0);
    assert_eq!(report.timeouts, 6);
    assert_eq!(report.unfinished, 4, "two in flight, two never sent");
    assert_eq!(report.errors(), 10);
    // Requests 0–5, each timed out 400 ms after it left, which was later and later after it
    // was due: 0 and 1 at once, 2 and 3 after 200 ms, 4 and 5 after 400 ms.
    assert_eq!(
        report.latencies_us,
        [400, 400, 600, 600, 800, 800].map(|ms| ms * MS)
    );
    assert_eq!(report.elapsed, Duration::from_millis(1_400));
    assert_eq!(report.max_dispatch_lag, Duration::ZERO);
    assert_eq!(fake.connects.load(Ordering::SeqCst), 8);
    assert_eq!(report.achieved_rate(), 0.0);
}

#[tokio::test(start_paused = true)]
async fn statuses_are_counted_and_the_rate_is_kept() {
    let mut fake = Fake::new(Duration::from_millis(2));
    fake.status = |request| if request % 2 == 1 { 429 } else { 200 };
    let schedule = Schedule::new(1_000.0, Duration::from_secs(1)).unwrap();
    let report = run(fake.clone(), schedule, settings(4, 5_000)).await;
    assert_eq!(report.answered, 1_000);
    assert_eq!(report.statuses, BTreeMap::from([(200, 500), (429, 500)]));
    // Two requests in flight at a time: none ever waits for a connection.
    assert_eq!(report.latencies_us.first(), Some(&(2 * MS)));
    assert_eq!(report.latencies_us.last(), Some(&(2 * MS)));
    let rate = report.achieved_rate();
    assert!((990.0..=1_000.0).contains(&rate), "{rate}");
    let line = report.to_json();
    assert_eq!(line["p95_us"], 2 * MS);
    assert_eq!(line["statuses"]["429"], 500);
    assert_eq!(line["unfinished"], 0);
    // Every request arrived, in order.
    let arrivals = fake.arrivals.lock().unwrap();
    assert_eq!(arrivals.len(), 1_000);
    assert!(arrivals.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn arguments() {
    let args = |list: &[&str]| Args::parse(list.iter().map(|s| s.to_string()));
    let a = args(&[
        "--url",
        "http://127.0.0.1:1/x",
        "--keys",
        "k.txt",
        "--rate",
        "2000",
    ])
    .unwrap();
    assert_eq!(a.rate, 2_000.0);
    assert_eq!(a.connections, 100);
    assert_eq!(a.duration, Duration::from_secs(10));
    assert_eq!(a.timeout, Duration::from_secs(5));
    assert_eq!(a.header, "x-api-key");
    let a = args(&[
        "--url",
        "u",
        "--keys",
        "k",
        "--rate",
        "1.5",
        "--duration",
        "3",
        "--connections",
        "7",
        "--timeout",
        "0.5",
        "--header",
        "x-key",
    ])
    .unwrap();
    assert_eq!(
        (a.duration, a.connections, a.timeout, a.header.as_str()),
        (
            Duration::from_secs(3),
            7,
            Duration::from_millis(500),
            "x-key"
        )
    );
    assert!(
        args(&["--url", "u", "--keys", "k"])
            .unwrap_err()
            .contains("--rate")
    );
    assert!(
        args(&["--rate", "0", "--url", "u"])
            .unwrap_err()
            .contains("positive")
    );
    assert!(args(&["--rate"]).unwrap_err().contains("needs a value"));
    assert!(
        args(&["--bogus", "1"])
            .unwrap_err()
            .contains("unknown option")
    );
}

#[test]
fn the_http_target_takes_the_keys_in_turn() {
    let keys = vec![
        "a".to_string(),
        "".to_string(),
        "b".to_string(),
        "c".to_string(),
    ];
    let t = HttpTarget::new(
        "http://127.0.0.1:8080/api/v1/request?x=1",
        "x-api-key",
        keys,
    )
    .unwrap();
    let sent: Vec<&str> = (0..5).map(|i| t.key(i).to_str().unwrap()).collect();
    assert_eq!(sent, ["a", "b", "c", "a", "b"]);
    assert_eq!(t.path, "/api/v1/request?x=1");
    assert_eq!(t.addr.port(), 8080);
    for bad in ["https://127.0.0.1:1/", "http://localhost:1/", "not a url"] {
        assert!(
            HttpTarget::new(bad, "x-api-key", vec!["k".into()]).is_err(),
            "{bad}"
        );
    }
    assert!(HttpTarget::new("http://127.0.0.1:1/", "x-api-key", vec![]).is_err());
    assert!(HttpTarget::new("http://127.0.0.1:1/", "bad header", vec!["k".into()]).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_target_against_a_real_server() {
    use axum::extract::State;
    use axum::http::HeaderMap;

    // A server that counts the keys it receives.
    let seen: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/api/v1/request",
            axum::routing::get(
                |State(seen): State<Arc<Mutex<BTreeMap<String, u64>>>>, headers: HeaderMap| async move {
                    let key = headers
                        .get("x-api-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_string();
                    *seen.lock().unwrap().entry(key).or_default() += 1;
                    "ok"
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let keys: Vec<String> = (0..10).map(|i| format!("key-{i}")).collect();
    let target =
        HttpTarget::new(&format!("http://{addr}/api/v1/request"), "x-api-key", keys).unwrap();
    let schedule = Schedule::new(400.0, Duration::from_millis(500)).unwrap();
    let report = run(target, schedule, settings(4, 5_000)).await;
    assert_eq!(report.scheduled, 200);
    assert_eq!(report.errors(), 0, "{report:?}");
    assert_eq!(report.statuses, BTreeMap::from([(200, 200)]));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 10, "{seen:?}");
    assert!(seen.values().all(|&n| n == 20), "{seen:?}");
}
