//! Faults under load, against real processes: Redis killed and restarted, the control plane
//! killed and restarted, Redis persistence (AOF) across restarts, a stalled Redis and the
//! circuit breaker it opens. Every test prints its figures (recovery time, wrong answers,
//! latency while broken); timing assertions have generous margins (2 noisy cores).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use rl_tests::fixtures::{Config, Tier};
use rl_tests::load::{Load, Sample, between};
use rl_tests::{
    ControlPlane, ControlPlaneBuilder, RedisServer, StackBuilder, client_from, control_plane_bin,
    get, get_json, post_json,
};
use serde_json::{Value, json};

/// A budget that never binds, and `/counted` limited to `counted` per minute.
fn config(fail_open: bool, counted: u64) -> String {
    Config::new()
        .fail_open(fail_open)
        .tier(
            Tier::new("free", 1_000_000)
                .window(60)
                .endpoint("/counted", counted),
        )
        .yaml()
}

fn from(last: u8) -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

fn max_latency(samples: &[&Sample]) -> Duration {
    samples.iter().map(|s| s.latency).max().unwrap_or_default()
}

fn p99_latency(samples: &[&Sample]) -> Duration {
    let mut l: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    l.sort();
    l.get(l.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or_default()
}

/// First moment after `from` from which every answer is rate limited again.
fn recovered_at(samples: &[Sample], from: Duration) -> Option<Duration> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.sent >= from).collect();
    let last_bad = after
        .iter()
        .rposition(|s| !(s.status == 200 && s.rate_limit_headers));
    match last_bad {
        None => after.first().map(|s| s.sent),
        Some(i) => after.get(i + 1).map(|s| s.sent),
    }
}

async fn metrics(cp: &ControlPlane) -> Value {
    get_json(&from(1), &cp.url("/api/v1/rate-limit/metrics")).await
}

async fn redis_outage_under_load(fail_open: bool) {
    let mut stack = StackBuilder::new(control_plane_bin!(), &config(fail_open, 10))
        .with_redis()
        // The filter fails closed: what clients see is the control plane's decision.
        .plugin("fail_open", json!(false))
        .plugin("timeout_ms", json!(2000))
        .control_plane_env("RATE_LIMIT_REDIS_TIMEOUT_MS", "200")
        .start();
    let load = Load::start(from(101), stack.url("/load"), 8, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = load.now();
    stack.redis().kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarted = load.now();
    stack.redis().restart();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let samples = load.stop().await;

    // Answers to requests sent while Redis was down (after a short detection margin).
    let down = between(&samples, killed + Duration::from_millis(300), restarted);
    assert!(!down.is_empty());
    let wrong: Vec<&Sample> = samples
        .iter()
        .filter(|s| match (fail_open, s.status) {
            // Fail open: everything passes; headers only when Redis answered.
            (true, 200) => false,
            // Fail closed: rate-limited 200s, or 503 with Retry-After: 1 and no headers.
            (false, 200) => !s.rate_limit_headers,
            (false, 503) => s.retry_after.as_deref() != Some("1") || s.rate_limit_headers,
            _ => true,
        })
        .collect();
    let recovery = recovered_at(&samples, restarted).map(|t| t - restarted);
    eprintln!(
        "Redis kill -9 under load (fail_open={fail_open}): {} requests, {} while down; \
         wrong answers {}; while down p99 {:?}, max {:?}; rate limiting resumed {:?} after restart",
        samples.len(),
        down.len(),
        wrong.len(),
        p99_latency(&down),
        max_latency(&down),
        recovery
    );
    assert!(
        wrong.is_empty(),
        "wrong answers: {:?}",
        &wrong[..wrong.len().min(5)]
    );
    if fail_open {
        assert!(
            down.iter()
                .all(|s| s.status == 200 && !s.rate_limit_headers)
        );
    } else {
        assert!(down.iter().all(|s| s.status == 503));
    }
    // No request waits for more than the Redis timeout (200 ms) plus generous slack.
    assert!(
        max_latency(&down) < Duration::from_secs(1),
        "{:?}",
        max_latency(&down)
    );
    let recovery = recovery.expect("rate limiting resumed");
    assert!(recovery < Duration::from_secs(3), "{recovery:?}");
    let m = metrics(&stack.control_plane).await;
    assert!(m["redis_errors"].as_u64().unwrap() > 0, "{m}");
    let field = if fail_open {
        "failed_open_requests"
    } else {
        "unavailable_requests"
    };
    assert!(m[field].as_u64().unwrap() >= down.len() as u64 / 2, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_under_load_with_fail_open() {
    redis_outage_under_load(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_under_load_with_fail_closed() {
    redis_outage_under_load(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_plane_killed_under_load_and_counters_survive() {
    let mut stack = StackBuilder::new(control_plane_bin!(), &config(true, 10))
        .with_redis()
        .plugin("fail_open", json!(true))
        .plugin("timeout_ms", json!(500))
        .start();
    let checker = from(102);
    for i in 1..=5u64 {
        let r = get(&checker, &stack.url("/counted"), &[]).await;
        assert_eq!(r.num("x-ratelimit-remaining"), 10 - i);
    }
    let load = Load::start(from(103), stack.url("/load"), 8, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = load.now();
    stack.control_plane.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = load.now();
    stack.control_plane.restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let samples = load.stop().await;

    let down = between(&samples, killed + Duration::from_millis(100), restarted);
    let wrong = samples.iter().filter(|s| s.status != 200).count();
    let recovery = recovered_at(&samples, restarted).map(|t| t - restarted);
    eprintln!(
        "control plane kill -9 under load (filter fail_open): {} requests, {} while down, \
         wrong answers {wrong}; while down max latency {:?}; rate limiting resumed {:?} after restart",
        samples.len(),
        down.len(),
        max_latency(&down),
        recovery
    );
    assert_eq!(wrong, 0);
    assert!(
        down.iter().all(|s| !s.rate_limit_headers),
        "served unchecked while down"
    );
    assert!(
        recovery.is_some_and(|r| r < Duration::from_secs(3)),
        "{recovery:?}"
    );
    // The counters are where they were: 5 used, this is the 6th.
    let r = get(&checker, &stack.url("/counted"), &[]).await;
    assert_eq!(r.num("x-ratelimit-remaining"), 4, "{r:#?}");
}

async fn decide(cp: &ControlPlane, ip: &str) -> Value {
    let body = json!({"ip": ip, "method": "GET", "path": "/counted"});
    post_json(&from(1), &cp.url(rl_wire::DECISION_PATH), &body).await
}

const AOF: [&str; 6] = [
    "--appendonly",
    "yes",
    "--appendfsync",
    "everysec",
    "--save",
    "",
];

async fn wait_allow(cp: &ControlPlane, ip: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = decide(cp, ip).await;
        if v["verdict"] == "allow" || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_graceful_redis_restart_keeps_every_count() {
    let config = config(true, 1000);
    let mut redis = RedisServer::start_with(&AOF);
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), &config)
        .redis(redis.url())
        .start();
    for _ in 0..30 {
        assert_eq!(decide(&cp, "10.5.5.5").await["verdict"], "allow");
    }
    redis.stop();
    redis.restart();
    let v = wait_allow(&cp, "10.5.5.5").await;
    assert_eq!(v["counter"]["remaining"], 1000 - 31, "{v}");
}

#[tokio::test]
async fn a_redis_kill_9_loses_at_most_the_last_second() {
    let config = config(true, 1000);
    let mut redis = RedisServer::start_with(&AOF);
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), &config)
        .redis(redis.url())
        .start();
    for _ in 0..50 {
        decide(&cp, "10.6.6.6").await;
    }
    // Older than a second: fsynced (appendfsync everysec).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..50 {
        decide(&cp, "10.6.6.6").await;
    }
    redis.kill9();
    redis.restart();
    let v = wait_allow(&cp, "10.6.6.6").await;
    let counted = 1000 - v["counter"]["remaining"].as_u64().unwrap() - 1;
    eprintln!(
        "Redis kill -9 with appendfsync everysec: {counted} of 100 counts survived ({} lost, all from the last second)",
        100 - counted
    );
    assert!((50..=100).contains(&counted), "{counted}");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_redis_costs_each_decision_at_most_the_timeout() {
    let redis = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--enable-debug-command",
        "local",
    ]);
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), &config(true, 10))
        .redis(redis.url())
        .env("RATE_LIMIT_REDIS_TIMEOUT_MS", "150")
        .start();
    let pid = cp.pid().unwrap();
    assert_eq!(decide(&cp, "10.7.7.7").await["verdict"], "allow");
    let rss_before = rss_kib(pid);

    // Redis stops answering for 4 s.
    let url = redis.url();
    let sleeper = std::thread::spawn(move || {
        let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        let _: redis::RedisResult<()> = redis::cmd("DEBUG").arg("SLEEP").arg(4).query(&mut conn);
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let client = from(1);
    // 2,000 decisions from 100 concurrent senders while Redis does not answer.
    let tasks: Vec<_> = (0..100)
        .map(|sender| {
            let (client, url) = (client.clone(), cp.url(rl_wire::DECISION_PATH));
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(20);
                for i in 0..20 {
                    let t = Instant::now();
                    let body =
                        json!({"ip": format!("10.8.{sender}.{i}"), "method": "GET", "path": "/x"});
                    let v = post_json(&client, &url, &body).await;
                    out.push((
                        t.elapsed(),
                        v["verdict"].as_str().unwrap_or_default().to_string(),
                    ));
                }
                out
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    for task in tasks {
        for (latency, verdict) in task.await.unwrap() {
            assert_eq!(verdict, "failed_open");
            worst = worst.max(latency);
        }
    }
    let all = started.elapsed();
    let rss_after = rss_kib(pid);
    eprintln!(
        "stalled Redis: 2000 decisions (100 concurrent) in {all:?}, worst {worst:?}; \
         control-plane RSS {rss_before} KiB → {rss_after} KiB"
    );
    // The Redis timeout is 150 ms; no decision waits for the 4 s stall.
    assert!(worst < Duration::from_secs(1), "{worst:?}");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew to {rss_after} KiB"
    );
    sleeper.join().unwrap();
    let v = wait_allow(&cp, "10.7.7.7").await;
    assert_eq!(v["verdict"], "allow");
}

/// The value of one series (`name{labels}` exactly as exposed) in `cp`'s Prometheus text;
/// `None` when the series does not exist (yet).
async fn prometheus(cp: &ControlPlane, series: &str) -> Option<f64> {
    let text = from(1)
        .get(cp.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

const BREAKER_OPEN: &str = "rate_limit_circuit_breaker_open";
const BREAKER_OPENED: &str = "rate_limit_circuit_breaker_opened_total";
const FAILED_FAST: &str = r#"rate_limit_redis_errors_total{kind="circuit_open"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_opens_the_circuit_breaker_which_answers_within_the_store_timeout() {
    const STORE_TIMEOUT: Duration = Duration::from_millis(300);
    /// Decisions the open breaker must have answered before the test looks at them.
    const FAILED_FAST_WANTED: usize = 20;
    /// Decisions that must have gone to Redis: the 3 failures in a row that open the
    /// breaker, and a probe after its 500 ms cooldown (which fails and opens it again).
    const WAITED_WANTED: usize = 4;
    let redis = RedisServer::start();
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), &config(true, 10))
        .redis(redis.url())
        .env(
            "RATE_LIMIT_REDIS_TIMEOUT_MS",
            &STORE_TIMEOUT.as_millis().to_string(),
        )
        .start();
    assert_eq!(decide(&cp, "10.9.9.9").await["verdict"], "allow");
    assert_eq!(prometheus(&cp, BREAKER_OPEN).await, Some(0.0));
    assert_eq!(prometheus(&cp, BREAKER_OPENED).await, Some(0.0));

    // Redis stops answering (SIGSTOP: its connections stay open, every command hangs).
    // Decisions one at a time, each told apart by whether the open breaker answered it
    // (`circuit_open` grew by one) or it went to Redis and waited for the timeout.
    redis.suspend();
    let stalled = Instant::now();
    let (mut failed_fast, mut waited) = (Vec::new(), Vec::new());
    let mut seen_open = false;
    while failed_fast.len() < FAILED_FAST_WANTED || waited.len() < WAITED_WANTED {
        assert!(
            stalled.elapsed() < Duration::from_secs(30),
            "the breaker answered {} decisions in 30 s ({} waited for Redis)",
            failed_fast.len(),
            waited.len()
        );
        let before = prometheus(&cp, FAILED_FAST).await.unwrap_or(0.0);
        let sent = Instant::now();
        let verdict = decide(&cp, "10.9.9.9").await;
        let took = sent.elapsed();
        assert_eq!(verdict["verdict"], "failed_open", "{verdict}");
        let after = prometheus(&cp, FAILED_FAST).await.unwrap_or(0.0);
        if after - before == 1.0 {
            failed_fast.push(took);
        } else {
            assert_eq!(after, before, "one decision at a time");
            waited.push(took);
        }
        seen_open |= prometheus(&cp, BREAKER_OPEN).await == Some(1.0);
    }
    let opened = prometheus(&cp, BREAKER_OPENED).await.unwrap_or(0.0);
    let stall = stalled.elapsed();
    let worst_fast = failed_fast.iter().max().copied().unwrap_or_default();
    eprintln!(
        "stalled Redis (store timeout {STORE_TIMEOUT:?}) for {stall:?}: breaker opened {opened} \
         time(s); {} decisions answered by the open breaker, worst {worst_fast:?}; {} went to \
         Redis and waited {waited:?}",
        failed_fast.len(),
        waited.len(),
    );
    assert!(
        opened >= 1.0,
        "rate_limit_circuit_breaker_opened_total stayed at {opened}"
    );
    assert!(seen_open, "rate_limit_circuit_breaker_open never read 1");
    // While it is open, decisions are answered within the store timeout (at once, in fact:
    // nothing waits for Redis)...
    assert!(
        worst_fast < STORE_TIMEOUT,
        "the open breaker took {worst_fast:?}: {failed_fast:?}"
    );
    // ...and only the calls that opened it and its probes (at most one per 500 ms cooldown)
    // waited for Redis, each for about the timeout, never for the stall.
    let at_most = 3 + (stall.as_millis() / 500) as usize + 1;
    assert!(
        waited.len() <= at_most,
        "{} decisions waited for Redis in {stall:?}, expected 3 and a probe per cooldown",
        waited.len()
    );
    for took in &waited {
        assert!(
            *took >= STORE_TIMEOUT && *took < STORE_TIMEOUT + Duration::from_secs(1),
            "a call to the stalled Redis took {took:?}"
        );
    }

    redis.resume();
    let v = wait_allow(&cp, "10.9.9.9").await;
    assert_eq!(v["verdict"], "allow", "{v}");
    assert_eq!(
        prometheus(&cp, BREAKER_OPEN).await,
        Some(0.0),
        "closed again"
    );
}
