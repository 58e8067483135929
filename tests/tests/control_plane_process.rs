//! The control-plane process: its decision endpoint, health, start-up and store failures.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use rl_tests::fixtures::{Config, Tier, free_and_premium};
use rl_tests::{ControlPlane, ControlPlaneBuilder, RedisServer, client_from, control_plane_bin};
use serde_json::{Value, json};

const ALICE_KEY: &str = "alice-0123456789abcdef";
const DECISION_SECRET: &str = "s3cret-shared-with-envoy";

/// `free` (default) 100 and `premium` 1000 per minute; alice's key is on `premium`.
fn config(fail_open: bool) -> String {
    free_and_premium(100, 1000, "alice", ALICE_KEY)
        .fail_open(fail_open)
        .yaml()
}

fn control_plane(fail_open: bool) -> ControlPlaneBuilder {
    ControlPlaneBuilder::new(control_plane_bin!(), &config(fail_open))
}

fn client() -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

async fn decide(cp: &ControlPlane, body: Value) -> Value {
    let response = client()
        .post(cp.url(rl_wire::DECISION_PATH))
        .json(&body)
        .send()
        .await
        .expect("decision call");
    assert_eq!(response.status(), 200);
    response.json().await.expect("decision json")
}

async fn post_raw(cp: &ControlPlane, body: Vec<u8>) -> (u16, String) {
    let response = client()
        .post(cp.url(rl_wire::DECISION_PATH))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("decision call");
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

#[tokio::test]
async fn decisions_over_http_with_identity_from_api_keys() {
    let cp = control_plane(true).start();
    let anonymous = decide(
        &cp,
        json!({"ip": "10.0.0.1", "method": "GET", "path": "/a"}),
    )
    .await;
    assert_eq!(anonymous["verdict"], "allow");
    assert_eq!(anonymous["tier"], "free");
    assert_eq!(anonymous["counter"]["remaining"], 99);
    let keyed = json!({"ip": "10.0.0.1", "api_key": ALICE_KEY, "method": "GET", "path": "/a"});
    let keyed = decide(&cp, keyed).await;
    assert_eq!(keyed["tier"], "premium");
    assert_eq!(keyed["counter"]["remaining"], 999);
    // An unknown key is the client's IP under the default tier: it shares that budget.
    let guessed = json!({"ip": "10.0.0.1", "api_key": "guess", "method": "GET", "path": "/a"});
    let guessed = decide(&cp, guessed).await;
    assert_eq!(guessed["tier"], "free");
    assert_eq!(guessed["counter"]["remaining"], 98);
    // The raw key never reaches the logs, not even the line of a keyed request denied.
    let alice = json!({"ip": "10.0.0.1", "api_key": ALICE_KEY, "method": "GET", "path": "/a"});
    deny_and_wait_for_the_log_line(&cp, &alice, None, "key:alice").await;
    assert!(!cp.output.text().contains(ALICE_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_http_decisions_admit_exactly_the_limit_with_redis() {
    let redis = RedisServer::start();
    let cp = control_plane(true).redis(redis.url()).start();
    let url = cp.url(rl_wire::DECISION_PATH);
    let client = client();
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let body = json!({"ip": "10.9.9.9", "method": "GET", "path": "/a"});
                let r = client.post(url).json(&body).send().await.expect("call");
                r.json::<Value>().await.expect("json")["verdict"] == "allow"
            })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        allowed += u32::from(task.await.expect("task"));
    }
    assert_eq!(allowed, 100);
}

#[tokio::test]
async fn malformed_oversized_and_non_utf8_bodies_get_4xx() {
    let cp = control_plane(true).start();
    let mut nested = "[".repeat(5000);
    nested.push_str(&"]".repeat(5000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("empty", vec![], 400),
        ("garbage", b"not json".to_vec(), 400),
        ("non-utf8", vec![0x7b, 0xff, 0xfe, 0x7d], 400),
        ("non-utf8 string", b"{\"ip\":\"\xff\xfe\"}".to_vec(), 400),
        ("wrong type", br#"{"ip": 5}"#.to_vec(), 400),
        ("array", b"[]".to_vec(), 400),
        ("deeply nested", nested.into_bytes(), 400),
        ("oversized", vec![b' '; 64 * 1024], 413),
    ];
    for (name, body, want) in cases {
        let (status, text) = post_raw(&cp, body).await;
        assert_eq!(status, want, "{name}: {text}");
        if want == 400 {
            let v: Value = serde_json::from_str(&text).expect("JSON error body");
            assert_eq!(v["error"]["code"], "invalid_request", "{name}");
        }
    }
    // Still serving after all of it.
    let ok = decide(&cp, json!({"ip": "10.0.0.2", "method": "GET", "path": "/"})).await;
    assert_eq!(ok["verdict"], "allow");
    let get = client()
        .get(cp.url(rl_wire::DECISION_PATH))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
}

#[tokio::test]
async fn decision_secret_is_required_when_configured() {
    let cp = control_plane(true)
        .env("RATE_LIMIT_DECISION_SECRET", DECISION_SECRET)
        .start();
    let body = json!({"ip": "10.0.0.1", "method": "GET", "path": "/"});
    let url = cp.url(rl_wire::DECISION_PATH);
    let missing = client().post(&url).json(&body).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let wrong = client()
        .post(&url)
        .header(rl_wire::DECISION_SECRET_HEADER, "nope")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client()
        .post(&url)
        .header(rl_wire::DECISION_SECRET_HEADER, DECISION_SECRET)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    // Neither the start-up lines (settings) nor the line of a denied request that carried
    // the secret show it.
    assert_no_secret_logged(&cp, &body).await;
}

/// Start-up logging is over once `listening` is logged (the builder waited for it); a
/// request carrying the secret is then denied and its log line awaited, so the check below
/// reads the lines that could hold the secret rather than an output not yet written.
async fn assert_no_secret_logged(cp: &ControlPlane, request: &Value) {
    cp.output
        .expect_line(Duration::from_secs(10), "`listening` line", |l| {
            l.contains("\"listening\"")
        });
    let identifier = format!("ip:{}", request["ip"].as_str().unwrap_or_default());
    deny_and_wait_for_the_log_line(cp, request, Some(DECISION_SECRET), &identifier).await;
    assert!(!cp.output.text().contains(DECISION_SECRET));
}

/// Sends `request` through the batch endpoint until it is denied, then waits for the deny
/// line the control plane logs for `identifier` and returns it.
async fn deny_and_wait_for_the_log_line(
    cp: &ControlPlane,
    request: &Value,
    secret: Option<&str>,
    identifier: &str,
) -> String {
    let batch = batch_of(&vec![request.clone(); rl_wire::MAX_BATCH_DECISIONS]);
    let mut denied = false;
    for _ in 0..40 {
        let (status, text) = post_batch(cp, batch.clone(), secret).await;
        assert_eq!(status, 200, "{text}");
        let answer: Value = serde_json::from_str(&text).expect("batch answer json");
        let responses = answer["responses"].as_array().cloned().unwrap_or_default();
        if responses.iter().any(|r| r["verdict"] == "deny") {
            denied = true;
            break;
        }
    }
    assert!(denied, "{request} was never denied");
    cp.output.expect_line(
        Duration::from_secs(10),
        &format!("deny line of {identifier}"),
        |line| {
            serde_json::from_str::<Value>(line)
                .is_ok_and(|v| v["event"] == "rate_limit_exceeded" && v["identifier"] == identifier)
        },
    )
}

#[tokio::test]
async fn health_and_readiness() {
    let cp = control_plane(true).start();
    let health = client().get(cp.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = client().get(cp.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["store"], "memory");
    let missing = client().get(cp.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

async fn verdict(cp: &ControlPlane, ip: &str) -> String {
    let v = decide(cp, json!({"ip": ip, "method": "GET", "path": "/a"})).await;
    v["verdict"].as_str().unwrap_or_default().to_string()
}

async fn wait_for_verdict(cp: &ControlPlane, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        if verdict(cp, "10.0.0.5").await == want {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no {want} verdict within {within:?}:\n{}",
        cp.output.tail(20)
    );
}

/// Redis stops: the control plane's `fail_open` decides, quickly (the breaker spares each
/// call the timeout), and readiness drops; Redis returns: decisions resume by themselves.
async fn store_outage(fail_open: bool, down_verdict: &str) {
    let mut redis = RedisServer::start();
    let cp = control_plane(fail_open)
        .redis(redis.url())
        .env("RATE_LIMIT_REDIS_TIMEOUT_MS", "300")
        .start();
    assert_eq!(verdict(&cp, "10.0.0.5").await, "allow");

    redis.stop();
    let start = Instant::now();
    for _ in 0..40 {
        assert_eq!(verdict(&cp, "10.0.0.5").await, down_verdict);
    }
    // 40 calls each waiting for the 300 ms timeout would take 12 s.
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(6),
        "40 decisions took {elapsed:?} with Redis down"
    );
    let ready = client().get(cp.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);

    redis.restart();
    let recovered = wait_for_verdict(&cp, "allow", Duration::from_secs(15)).await;
    eprintln!("decisions resumed {recovered:?} after Redis came back");
    let ready = client().get(cp.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(
        cp.output.text().contains("counter store"),
        "the outage is logged"
    );
}

#[tokio::test]
async fn redis_outage_with_fail_open_admits_and_recovers() {
    store_outage(true, "failed_open").await;
}

#[tokio::test]
async fn redis_outage_with_fail_closed_reports_unavailable_and_recovers() {
    store_outage(false, "unavailable").await;
}

#[tokio::test]
async fn starts_without_redis_and_becomes_ready_when_it_appears() {
    let port = rl_tests::free_port();
    let cp = control_plane(true)
        .redis(format!("redis://127.0.0.1:{port}/"))
        .start();
    let ready = client().get(cp.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(verdict(&cp, "10.0.0.5").await, "failed_open");
    let _redis = RedisServer::start_on(port);
    wait_for_verdict(&cp, "allow", Duration::from_secs(15)).await;
}

#[test]
fn refuses_an_invalid_config_file_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let zero = Config::new().tier(Tier::new("free", 0)).yaml();
    std::fs::write(&path, zero).unwrap();
    let path = path.to_string_lossy().to_string();
    let mut proc = ControlPlane::spawn_raw(
        control_plane_bin!(),
        &["--config", &path, "--listen", "127.0.0.1:0"],
        &[],
    );
    let code = proc.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(1), "{}", proc.output.text());
    let text = proc.output.text();
    assert!(text.contains("tiers[0].requests_per_window"), "{text}");
}

#[test]
fn help_documents_every_setting_and_its_variable() {
    let mut proc = ControlPlane::spawn_raw(control_plane_bin!(), &["--help"], &[]);
    assert_eq!(proc.wait_exit(Duration::from_secs(20)), Some(0));
    let help = proc.output.text();
    for var in [
        "RATE_LIMIT_LISTEN",
        "RATE_LIMIT_CONFIG_PATH",
        "RATE_LIMIT_REDIS_URL",
        "RATE_LIMIT_ADMIN_API_KEY",
        "RATE_LIMIT_DECISION_SECRET",
        "RATE_LIMIT_DECISION_SECRET_PREVIOUS",
        "RATE_LIMIT_REDIS_TIMEOUT_MS",
        "RATE_LIMIT_LOG_FORMAT",
        "127.0.0.1:8080",
        "./rate_limit_config.yaml",
    ] {
        assert!(help.contains(var), "--help lacks {var}:\n{help}");
    }
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let mut cp = control_plane(true).start();
    assert_eq!(cp.stop(), Some(0));
    assert!(cp.output.text().contains("stopped"));
}

#[test]
fn the_sample_config_runs_with_nothing_else() {
    let sample = rl_tests::fixtures::sample_config_path();
    let sample = sample.to_string_lossy().to_string();
    let mut proc = ControlPlane::spawn_raw(
        control_plane_bin!(),
        &["--config", &sample, "--listen", "127.0.0.1:0"],
        &[],
    );
    let listening = proc.output.wait_for(
        Duration::from_secs(20),
        || true,
        |line| line.contains("\"listening\"").then_some(()),
    );
    assert!(listening.is_some(), "{}", proc.output.text());
    assert!(proc.is_running());
}

// ---------------------------------------------------------------------------------------------
// The batch endpoint (the filter coalesces a worker's decision calls under load)

async fn post_batch(cp: &ControlPlane, body: Vec<u8>, secret: Option<&str>) -> (u16, String) {
    let mut request = client()
        .post(cp.url(rl_wire::BATCH_DECISION_PATH))
        .header("content-type", "application/json")
        .body(body);
    if let Some(secret) = secret {
        request = request.header(rl_wire::DECISION_SECRET_HEADER, secret);
    }
    let response = request.send().await.expect("batch call");
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

fn batch_of(requests: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "requests": requests })).expect("batch json")
}

/// Decides a batch on `cp` and returns the verdicts, in order.
async fn batch_verdicts(cp: &ControlPlane, requests: &[Value]) -> Vec<Value> {
    let (status, text) = post_batch(cp, batch_of(requests), None).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("batch answer json");
    let responses = answer["responses"].as_array().expect("responses").clone();
    assert_eq!(responses.len(), requests.len());
    responses
}

async fn batches_decide_in_order_like_single_calls(redis: Option<&RedisServer>) {
    let mut builder = control_plane(true);
    if let Some(redis) = redis {
        builder = builder.redis(redis.url());
    }
    let cp = builder.start();
    let anonymous = json!({"ip": "10.0.0.1", "method": "GET", "path": "/a"});
    let keyed = json!({"ip": "10.0.0.1", "api_key": ALICE_KEY, "method": "GET", "path": "/a"});
    let answers = batch_verdicts(&cp, &[anonymous.clone(), keyed, anonymous.clone()]).await;
    assert_eq!(answers[0]["verdict"], "allow");
    assert_eq!(answers[0]["counter"]["remaining"], 99);
    assert_eq!(answers[1]["tier"], "premium");
    assert_eq!(answers[1]["counter"]["remaining"], 999);
    // Two requests of one identity in one batch are counted one after the other.
    assert_eq!(answers[2]["counter"]["remaining"], 98);
    // A single call sees what the batch recorded.
    let single = decide(&cp, anonymous.clone()).await;
    assert_eq!(single["counter"]["remaining"], 97);
    // Exactly the limit passes when one identity fills a batch beyond it.
    let many: Vec<Value> = (0..64)
        .map(|_| json!({"ip": "10.0.0.9", "method": "GET", "path": "/b"}))
        .collect();
    let mut allowed = 0;
    for _ in 0..2 {
        let answers = batch_verdicts(&cp, &many).await;
        allowed += answers.iter().filter(|a| a["verdict"] == "allow").count();
        for a in &answers {
            if a["verdict"] == "deny" {
                assert_eq!(a["counter"]["remaining"], 0);
                assert!(a["counter"]["retry_after"].as_u64().unwrap_or(0) >= 1);
            }
        }
    }
    assert_eq!(allowed, 100);
    // An empty batch is answered with no decisions.
    assert!(batch_verdicts(&cp, &[]).await.is_empty());
}

#[tokio::test]
async fn batches_decide_in_order_in_memory() {
    batches_decide_in_order_like_single_calls(None).await;
}

#[tokio::test]
async fn batches_decide_in_order_with_redis() {
    let redis = RedisServer::start();
    batches_decide_in_order_like_single_calls(Some(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_admit_exactly_the_limit_with_redis() {
    let redis = RedisServer::start();
    let cp = control_plane(true).redis(redis.url()).start();
    let url = cp.url(rl_wire::BATCH_DECISION_PATH);
    let client = client();
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let requests: Vec<Value> = (0..10)
                    .map(|_| json!({"ip": "10.9.9.9", "method": "GET", "path": "/a"}))
                    .collect();
                let r = client
                    .post(url)
                    .json(&json!({ "requests": requests }))
                    .send()
                    .await
                    .expect("call");
                let answer: Value = r.json().await.expect("json");
                let responses = answer["responses"].as_array().cloned().unwrap_or_default();
                assert_eq!(responses.len(), 10);
                responses.iter().filter(|a| a["verdict"] == "allow").count()
            })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        allowed += task.await.expect("task");
    }
    assert_eq!(allowed, 100);
}

#[tokio::test]
async fn malformed_oversized_and_unauthorised_batches_are_refused() {
    let cp = control_plane(true)
        .env("RATE_LIMIT_DECISION_SECRET", DECISION_SECRET)
        .start();
    let secret = Some(DECISION_SECRET);
    let one = json!({"ip": "10.0.0.1", "method": "GET", "path": "/"});
    let too_many: Vec<Value> = (0..rl_wire::MAX_BATCH_DECISIONS + 1)
        .map(|_| one.clone())
        .collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("empty", vec![], 400),
        ("garbage", b"not json".to_vec(), 400),
        ("array", b"[]".to_vec(), 400),
        ("single request", serde_json::to_vec(&one).unwrap(), 400),
        ("wrong type", br#"{"requests": 5}"#.to_vec(), 400),
        ("bad member", br#"{"requests": [{"ip": 5}]}"#.to_vec(), 400),
        (
            "non-utf8",
            b"{\"requests\":[{\"ip\":\"\xff\"}]}".to_vec(),
            400,
        ),
        ("too many", batch_of(&too_many), 400),
        (
            "oversized",
            vec![b' '; rl_wire::MAX_BATCH_REQUEST_BYTES + 1],
            413,
        ),
    ];
    for (name, body, want) in cases {
        let (status, text) = post_batch(&cp, body, secret).await;
        assert_eq!(status, want, "{name}: {text}");
        if want == 400 {
            let v: Value = serde_json::from_str(&text).expect("JSON error body");
            assert_eq!(v["error"]["code"], "invalid_request", "{name}");
        }
    }
    let body = batch_of(std::slice::from_ref(&one));
    assert_eq!(post_batch(&cp, body.clone(), None).await.0, 401);
    assert_eq!(post_batch(&cp, body.clone(), Some("nope")).await.0, 401);
    let (status, text) = post_batch(&cp, body, secret).await;
    assert_eq!(status, 200, "{text}");
    assert_no_secret_logged(&cp, &one).await;
}
