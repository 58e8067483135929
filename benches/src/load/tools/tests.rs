//! The generators' output parsing, and the wrk scripts run by a real wrk against an
//! in-process server that counts what each key was sent.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

use super::*;

#[test]
fn a_keys_lua_line() {
    let out = "Running 1s test\nLOADBENCH {\"requests\":1000,\"duration_us\":2000000,\
        \"connect_errors\":1,\"read_errors\":2,\"write_errors\":3,\"status_errors\":4,\
        \"timeouts\":5,\"mean_us\":1500.0,\"p50_us\":1000,\"p95_us\":3000,\"p99_us\":4000,\
        \"max_us\":9000,\"samples\":{\"1\":7,\"11\":6}}\n";
    let r = parse_wrk(out).unwrap();
    assert_eq!(r.requests, 1000);
    assert_eq!(r.rps, 500.0);
    assert_eq!(
        (r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms),
        (1.0, 3.0, 4.0, 9.0)
    );
    assert_eq!((r.non_2xx, r.socket_errors, r.timeouts), (4, 6, 5));
    assert_eq!(r.samples, BTreeMap::from([(1, 7), (11, 6)]));
    assert!(r.abuse.is_none());
    assert!(parse_wrk("no result").is_err());
    assert!(parse_wrk("LOADBENCH {\"requests\":1").is_err());
}

#[test]
fn an_abuse_lua_line() {
    let out = "LOADBENCH {\"requests\":10,\"duration_us\":1000000,\"connect_errors\":0,\
        \"read_errors\":0,\"write_errors\":0,\"status_errors\":9,\"timeouts\":0,\"mean_us\":1.0,\
        \"p50_us\":1,\"p95_us\":1,\"p99_us\":1,\"max_us\":1,\"good_ok\":1,\"good_429\":0,\
        \"good_other\":0,\"abuse_ok\":0,\"abuse_429\":9,\"abuse_other\":0,\"unlabelled\":0,\
        \"good_max_used\":0.8000,\"good_used\":3,\"good_retired\":1,\"good_exhausted\":false}";
    let a = parse_wrk(out).unwrap().abuse.unwrap();
    assert_eq!((a.good_requests(), a.abuse_requests()), (1, 9));
    assert_eq!(
        (a.good_used, a.good_retired, a.good_exhausted),
        (3, 1, false)
    );
    assert_eq!(a.good_max_used, 0.8);
}

#[test]
fn an_open_loop_line() {
    let out = "LOADBENCH {\"scheduled\":100,\"answered\":97,\"statuses\":{\"200\":90,\"429\":5,\
        \"503\":2},\"connect_errors\":1,\"io_errors\":0,\"timeouts\":1,\"unfinished\":1,\
        \"elapsed_us\":10000000,\"achieved_rate\":9.7,\"mean_us\":900.0,\"p50_us\":800,\
        \"p95_us\":2000,\"p99_us\":5000,\"max_us\":7000,\"max_dispatch_lag_us\":3}";
    let r = parse_open_loop(out, 10.0).unwrap();
    assert_eq!(
        (r.requests, r.non_2xx, r.socket_errors, r.timeouts),
        (97, 7, 1, 2)
    );
    assert_eq!((r.rps, r.p95_ms, r.target_rate), (9.7, 2.0, Some(10.0)));
    assert!(parse_open_loop("", 1.0).is_err());
}

// ---------------------------------------------------------------------------------------------
// The Lua scripts in a real wrk

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// Counts requests per `x-api-key`; keys starting with `g` answer as a good identity (limit
/// 100, remaining by count), `a` as an abuse identity (429), others plain 200.
async fn count(State(counts): State<Counts>, headers: HeaderMap) -> impl IntoResponse {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string();
    let n = {
        let mut counts = counts.lock().unwrap();
        let n = counts.entry(key.clone()).or_default();
        *n += 1;
        *n
    };
    let mut out = HeaderMap::new();
    let status = match key.as_bytes().first() {
        Some(b'g') => {
            out.insert("x-ratelimit-tier", "lb_good".parse().unwrap());
            out.insert("x-ratelimit-limit", "100".parse().unwrap());
            out.insert("x-ratelimit-remaining", (100 - n.min(100)).into());
            StatusCode::OK
        }
        Some(b'a') => {
            out.insert("x-ratelimit-tier", "lb_abuse".parse().unwrap());
            StatusCode::TOO_MANY_REQUESTS
        }
        _ => StatusCode::OK,
    };
    (status, out, "ok")
}

struct Server {
    url: String,
    counts: Counts,
    dir: PathBuf,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start(name: &str) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let counts = Counts::default();
        let app = axum::Router::new()
            .route("/api/v1/request", axum::routing::get(count))
            .with_state(counts.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await });
        let dir = std::env::temp_dir().join(format!("load-bench-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Server {
            url: format!("http://{addr}/api/v1/request"),
            counts,
            dir,
            _runtime: runtime,
        }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn keys(&self, name: &str, keys: &[String]) -> PathBuf {
        self.file(name, &(keys.join("\n") + "\n"))
    }

    fn wrk(&self, script: &Path, args: Vec<String>) -> LoadResult {
        Wrk {
            bin: rl_tests::prereq::wrk(),
            url: self.url.clone(),
            threads: 2,
            connections: 8,
            duration_s: 1,
            script: script.to_path_buf(),
            args,
        }
        .run(&self.dir.join("wrk.log"))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn count(&self, key: &str) -> u64 {
        self.counts.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn keys_lua_cycles_evenly_and_stops_each_sample_at_its_quota() {
    let server = Server::start("keys");
    let keys: Vec<String> = (1..=100).map(|i| format!("k{i:03}")).collect();
    let file = server.keys("keys.txt", &keys);
    let script = server.file("keys.lua", KEYS_LUA);
    // Every 10th key (lines 1, 11, …, 91) is a sample of 5 requests, split over 2 threads.
    let args = ["cycle", "10", "5", "2"].map(String::from);
    let mut all = vec![file.display().to_string()];
    all.extend(args);
    let result = server.wrk(&script, all);

    let sample_lines: Vec<usize> = (1..=100).step_by(10).collect();
    assert_eq!(
        result.samples,
        sample_lines
            .iter()
            .map(|&l| (l, 5))
            .collect::<BTreeMap<_, _>>(),
        "what the script says it sent"
    );
    for &line in &sample_lines {
        assert_eq!(
            server.count(&keys[line - 1]),
            5,
            "what sample line {line} received"
        );
    }
    let others: Vec<u64> = (1..=100)
        .filter(|l| !sample_lines.contains(l))
        .map(|l| server.count(&keys[l - 1]))
        .collect();
    let (min, max) = (others.iter().min().unwrap(), others.iter().max().unwrap());
    assert!(*min > 20, "too little traffic to judge: {others:?}");
    assert!(max - min <= 4, "not an even share: {min}..{max}");
    assert!(result.requests > 0 && result.socket_errors == 0);
}

#[test]
fn abuse_lua_retires_good_identities_at_their_quota() {
    let server = Server::start("abuse");
    let good: Vec<String> = (1..=6).map(|i| format!("g{i}")).collect();
    let abuse: Vec<String> = (1..=20).map(|i| format!("a{i}")).collect();
    let good_file = server.keys("good.txt", &good);
    let abuse_file = server.keys("abuse.txt", &abuse);
    let script = server.file("abuse.lua", ABUSE_LUA);
    let args = |pool: &Path, quota: u64| -> Vec<String> {
        vec![
            pool.display().to_string(),
            abuse_file.display().to_string(),
            "10".into(),
            quota.to_string(),
            "2".into(),
            "2".into(),
        ]
    };

    // A small pool: every good identity gets its 5 requests, then the pool runs dry.
    let result = server.wrk(&script, args(&good_file, 5));
    let a = result.abuse.clone().expect("abuse counts");
    assert!(a.good_exhausted, "{a:?}");
    assert_eq!((a.good_used, a.good_retired), (6, 6));
    for key in &good {
        assert_eq!(server.count(key), 5, "{key}");
    }
    assert_eq!(a.good_requests(), 30);
    assert_eq!((a.good_429, a.abuse_ok), (0, 0));
    assert!(a.abuse_429 > 0 && a.unlabelled == 0);
    assert_eq!(a.good_max_used, 0.05, "5 of a limit of 100");

    // A pool that outlasts the run: only the active ones (2 per thread) are ever used.
    let big: Vec<String> = (1..=50).map(|i| format!("gb{i}")).collect();
    let big_file = server.keys("big.txt", &big);
    let a = server
        .wrk(&script, args(&big_file, 1_000_000))
        .abuse
        .unwrap();
    assert!(!a.good_exhausted);
    assert_eq!((a.good_used, a.good_retired), (4, 0));
    let used: Vec<&String> = big.iter().filter(|k| server.count(k) > 0).collect();
    assert_eq!(used.len(), 4, "{used:?}");
}
