//! The release `.wasm` users deploy, driven in process by `rl_tests::wasm_host` (wasmtime):
//! identity evidence in the decision call, decision → response, every control-plane failure
//! under both `fail_open` values, plugin-config validation, stats and logs.
//!
//! Every case runs on a fresh VM and ends with [`still_works`]: the VM has not trapped, made no
//! ABI misuse, and serves an ordinary request afterwards (a trap kills a worker's VM for good
//! in Envoy).

#[path = "support/structured_fields.rs"]
mod structured_fields;

use std::time::Duration;

use rate_limit_filter::engine::NO_CALLOUT_HEADERS;
use rl_tests::fake_control_plane::windows;
use rl_tests::wasm_host::{
    Action, FilterVm, HeaderMap, LogLevel, Outcome, ROOT_CONTEXT, Request, RequestRun, imports,
};
use rl_wire::{
    CounterReport, DECISION_PATH, DECISION_SECRET_HEADER, DecisionRequest, DecisionResponse,
    MAX_DECISION_REQUEST_BYTES, Verdict,
};
use serde_json::{Value, json};
use structured_fields::{Member, list, member};

const CLUSTER: &str = "rate_limit_control_plane";
const TRUSTED: &str = r#""trusted_proxies":["10.0.0.0/8","2001:db8:ffff::/48"]"#;
const RL_HEADERS: [&str; 4] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-tier",
];

// ---------------------------------------------------------------------------------------------
// Helpers

/// `{"cluster": CLUSTER, <extra>}`.
fn config(extra: &str) -> String {
    if extra.is_empty() {
        format!(r#"{{"cluster":"{CLUSTER}"}}"#)
    } else {
        format!(r#"{{"cluster":"{CLUSTER}",{extra}}}"#)
    }
}

fn vm(config: &str) -> FilterVm {
    FilterVm::new(config).unwrap_or_else(|rejected| panic!("{config}: {rejected:?}"))
}

fn counter(remaining: u64) -> CounterReport {
    CounterReport {
        limit: 100,
        remaining,
        reset: 1_700_000_060,
        retry_after: None,
        window: 60,
        endpoint: "/api/v1/request".into(),
        reset_at: None,
        policy: None,
        reset_after: None,
        units: false,
    }
}

/// A decision answer, serialised from the wire types the control plane uses.
fn answer(verdict: Verdict, tier: Option<&str>, counter: Option<CounterReport>) -> String {
    let response = DecisionResponse {
        verdict,
        tier: tier.map(str::to_owned),
        counter,
        policies: Vec::new(),
        shadow_denied: false,
        deny_for_ms: None,
        lease: None,
        usage: None,
    };
    serde_json::to_string(&response).expect("serialise a DecisionResponse")
}

fn allow() -> String {
    answer(Verdict::Allow, Some("free"), Some(counter(99)))
}

fn deny() -> String {
    let mut c = counter(0);
    c.retry_after = Some(59);
    c.reset_at = Some("2023-11-14T22:14:20Z".into());
    answer(Verdict::Deny, Some("free"), Some(c))
}

fn respond_200(run: RequestRun<'_>, body: &str) -> Outcome {
    run.respond(
        &[(":status", "200"), ("content-type", "application/json")],
        body,
    )
}

/// The JSON body of the pending decision call.
fn decision(run: &RequestRun<'_>) -> DecisionRequest {
    let call = run.call().expect("the filter dispatched no decision call");
    serde_json::from_slice(&call.body).unwrap_or_else(|e| {
        panic!(
            "decision body is not a DecisionRequest ({e}): {}",
            String::from_utf8_lossy(&call.body)
        )
    })
}

/// Runs `request` and returns what the filter told the control plane (the call is then
/// answered with an allow, so the request ends normally).
fn evidence(vm: &mut FilterVm, request: Request) -> DecisionRequest {
    let run = vm.request(request);
    let sent = decision(&run);
    let outcome = respond_200(run, &allow());
    assert!(outcome.forwarded().is_some(), "{outcome:?}");
    sent
}

fn rate_limit_headers(headers: &HeaderMap) -> Vec<&str> {
    headers.names_with_prefix("x-ratelimit-")
}

fn forwarded(outcome: &Outcome) -> &HeaderMap {
    outcome
        .forwarded()
        .unwrap_or_else(|| panic!("expected the request to be forwarded, got {outcome:?}"))
}

/// Asserts a forwarded request whose response carries no `X-RateLimit-*` header.
fn assert_passed_without_headers(outcome: &Outcome) {
    let headers = forwarded(outcome);
    assert!(rate_limit_headers(headers).is_empty(), "{headers:?}");
}

/// Asserts the filter's own 503: `Retry-After: 1`, JSON, no `X-RateLimit-*`.
fn assert_unavailable(outcome: &Outcome) {
    let reply = outcome
        .local()
        .unwrap_or_else(|| panic!("expected a local 503, got {outcome:?}"));
    assert_eq!(reply.status, 503);
    assert_eq!(reply.headers.get("retry-after"), Some("1"));
    assert_eq!(reply.headers.get("content-type"), Some("application/json"));
    assert!(rate_limit_headers(&reply.headers).is_empty(), "{reply:?}");
    let body: Value = serde_json::from_slice(&reply.body).expect("503 body is JSON");
    assert_eq!(body["error"]["code"], "rate_limit_unavailable");
    assert!(body["error"]["message"].is_string());
    assert!(body["error"].get("details").is_none(), "{body}");
}

/// The end of every case: no trap, no ABI misuse, and an ordinary request still works.
fn still_works(vm: &mut FilterVm) {
    vm.assert_healthy();
    vm.fail_dispatch(false);
    let run = vm.request(Request::get("/api/v1/request").from("203.0.113.50:1234"));
    assert_eq!(run.headers_action(), Some(Action::Pause));
    assert_eq!(decision(&run).ip, "203.0.113.50");
    let outcome = respond_200(run, &allow());
    assert_eq!(forwarded(&outcome).get("x-ratelimit-remaining"), Some("99"));
    vm.assert_healthy();
}

fn metric(vm: &FilterVm, short: &str) -> u64 {
    let name = format!("rate_limit_filter.{short}");
    vm.metric(&name)
        .unwrap_or_else(|| panic!("metric {name} not defined: {:?}", vm.metrics()))
}

/// The filter's stats (Envoy shows them as `wasmcustom.rate_limit_filter.<name>`; the README
/// documents these names).
const METRICS: [&str; 13] = [
    "allowed",
    "denied",
    "unavailable",
    "whitelisted",
    "disabled",
    "failed_open",
    "failed_closed",
    "control_plane_errors",
    "batch_calls",
    "unauthorized",
    "local_denied",
    "charges_invalid",
    "usage_dropped",
];

/// Every filter metric, by short name, with the non-zero ones listed in `expected`.
fn assert_metrics(vm: &FilterVm, expected: &[(&str, u64)]) {
    assert_eq!(vm.metrics().len(), METRICS.len(), "{:?}", vm.metrics());
    for short in METRICS {
        let name = format!("rate_limit_filter.{short}");
        let want = expected
            .iter()
            .find(|(n, _)| *n == short)
            .map_or(0, |(_, v)| *v);
        assert_eq!(metric(vm, short), want, "metric {name}: {:?}", vm.metrics());
    }
}

// ---------------------------------------------------------------------------------------------
// The module and its host calls

#[test]
fn imports_are_known_and_the_unused_ones_trap() {
    let imports = imports();
    // Host calls the filter makes (glue.rs plus the SDK's dispatcher) and the WASI functions
    // std links: all implemented.
    for used in [
        "env.proxy_log",
        "env.proxy_get_buffer_bytes",
        "env.proxy_get_header_map_value",
        "env.proxy_get_header_map_pairs",
        "env.proxy_set_tick_period_milliseconds",
        "env.proxy_add_header_map_value",
        "env.proxy_replace_header_map_value",
        "env.proxy_remove_header_map_value",
        "env.proxy_get_property",
        "env.proxy_http_call",
        "env.proxy_continue_stream",
        "env.proxy_send_local_response",
        "env.proxy_define_metric",
        "env.proxy_increment_metric",
        "env.proxy_get_current_time_nanoseconds",
        "env.proxy_set_effective_context",
        "env.proxy_get_shared_data",
        "env.proxy_set_shared_data",
        "wasi_snapshot_preview1.clock_time_get",
        "wasi_snapshot_preview1.random_get",
        "wasi_snapshot_preview1.fd_write",
        "wasi_snapshot_preview1.environ_get",
        "wasi_snapshot_preview1.environ_sizes_get",
        "wasi_snapshot_preview1.proc_exit",
    ] {
        assert!(
            imports.implemented.iter().any(|i| i == used),
            "{used} not implemented: {imports:?}"
        );
    }
    // The SDK declares these for features the filter does not use. A new import (an SDK
    // upgrade, a new host call) shows up here first; if the filter calls one, its stub traps
    // with the import's name and every test using it fails.
    let mut trapping = imports.trapping.clone();
    trapping.sort();
    assert_eq!(
        trapping,
        [
            "env.proxy_call_foreign_function",
            "env.proxy_close_stream",
            "env.proxy_dequeue_shared_queue",
            "env.proxy_done",
            "env.proxy_enqueue_shared_queue",
            "env.proxy_get_status",
            "env.proxy_grpc_call",
            "env.proxy_grpc_cancel",
            "env.proxy_grpc_close",
            "env.proxy_grpc_send",
            "env.proxy_grpc_stream",
            "env.proxy_register_shared_queue",
            "env.proxy_resolve_shared_queue",
            "env.proxy_set_buffer_bytes",
            "env.proxy_set_header_map_pairs",
            "env.proxy_set_property",
        ]
    );
}

#[test]
fn start_defines_every_metric_and_no_tick() {
    let vm = vm(&config(""));
    assert_metrics(&vm, &[]);
    assert_eq!(vm.tick_period_ms(), 0);
    assert!(vm.logs().is_empty(), "{:?}", vm.logs());
    assert!(vm.wasi_output().is_empty());
    vm.assert_healthy();
}

// ---------------------------------------------------------------------------------------------
// The decision call

#[test]
fn decision_call_shape_with_defaults() {
    let mut vm = vm(&config(""));
    let run = vm.request(
        Request::new("POST", "/api/v1/request?page=2#frag")
            .from("203.0.113.9:4000")
            .header("x-api-key", "demo-premium-key-0001")
            .header("authorization", "Bearer abc.def.ghi"),
    );
    assert_eq!(run.headers_action(), Some(Action::Pause));
    let call = run.call().expect("decision call").clone();
    assert_eq!(call.cluster, CLUSTER);
    assert_eq!(call.timeout, Duration::from_millis(250));
    assert_eq!(call.headers.get(":method"), Some("POST"));
    assert_eq!(call.headers.get(":path"), Some(DECISION_PATH));
    assert_eq!(call.headers.get(":authority"), Some(CLUSTER));
    assert_eq!(call.headers.get("content-type"), Some("application/json"));
    assert_eq!(call.headers.get(DECISION_SECRET_HEADER), None);
    assert_eq!(call.headers.len(), 4, "{:?}", call.headers);
    assert!(call.trailers.is_empty());
    assert_eq!(
        decision(&run),
        DecisionRequest {
            ip: "203.0.113.9".into(),
            api_key: Some("demo-premium-key-0001".into()),
            authorization: Some("Bearer abc.def.ghi".into()),
            method: "POST".into(),
            path: "/api/v1/request".into(),
        }
    );
    // The raw body, too: absent credentials are omitted, nothing else is sent.
    let body: Value = serde_json::from_slice(&call.body).expect("JSON body");
    assert_eq!(body.as_object().map(|o| o.len()), Some(5), "{body}");
    respond_200(run, &allow());
    still_works(&mut vm);
}

#[test]
fn decision_call_with_authority_secret_and_timeout() {
    let mut vm = vm(&config(
        r#""authority":"cp.internal:8080","timeout_ms":40,"decision_secret":"s3cret value""#,
    ));
    let run = vm.request(Request::get("/x"));
    let call = run.call().expect("decision call").clone();
    assert_eq!(call.cluster, CLUSTER);
    assert_eq!(call.headers.get(":authority"), Some("cp.internal:8080"));
    assert_eq!(
        call.headers.get(DECISION_SECRET_HEADER),
        Some("s3cret value")
    );
    assert_eq!(call.timeout, Duration::from_millis(40));
    let sent = decision(&run);
    assert_eq!((sent.api_key, sent.authorization), (None, None));
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("GET", "/x"));
    respond_200(run, &allow());
    still_works(&mut vm);
}

#[test]
fn request_body_waits_for_the_decision() {
    let mut vm = vm(&config(""));
    let run = vm.request(Request::new("POST", "/upload").body(512));
    assert_eq!(run.headers_action(), Some(Action::Pause));
    // Continue here would let Envoy forward the paused headers before the decision.
    assert_eq!(run.body_action(), Some(Action::Pause));
    let outcome = respond_200(run, &allow());
    forwarded(&outcome);
    still_works(&mut vm);
}

// ---------------------------------------------------------------------------------------------
// Identity evidence: the client IP

/// (peer, X-Forwarded-For, X-Real-IP, expected ip).
type IpCase = (
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
);

/// Client-IP cases under `TRUSTED`.
fn ip_cases() -> Vec<IpCase> {
    vec![
        // Peer only.
        (Some("203.0.113.9:4000"), None, None, "203.0.113.9"),
        // Untrusted peer: forged forwarded headers are ignored.
        (
            Some("203.0.113.9:4000"),
            Some("1.1.1.1"),
            Some("2.2.2.2"),
            "203.0.113.9",
        ),
        (
            Some("203.0.113.9:4000"),
            Some("1.1.1.1, 10.0.0.1"),
            None,
            "203.0.113.9",
        ),
        // Trusted proxy: single entry, several entries (rightmost wins), trusted hops skipped.
        (
            Some("10.0.0.1:4000"),
            Some("198.51.100.7"),
            None,
            "198.51.100.7",
        ),
        (
            Some("10.0.0.1:4000"),
            Some("6.6.6.6, 198.51.100.7"),
            None,
            "198.51.100.7",
        ),
        (
            Some("10.0.0.1:4000"),
            Some("6.6.6.6,198.51.100.7 , 10.0.0.2,\t10.0.0.3"),
            Some("9.9.9.9"),
            "198.51.100.7",
        ),
        // Every hop trusted: the leftmost one.
        (
            Some("10.0.0.1:4000"),
            Some("10.0.0.7, 10.0.0.8"),
            None,
            "10.0.0.7",
        ),
        // Garbage or malformed entries: the peer, never an attacker-chosen address.
        (
            Some("10.0.0.1:4000"),
            Some("6.6.6.6, garbage"),
            None,
            "10.0.0.1",
        ),
        (Some("10.0.0.1:4000"), Some("unknown"), None, "10.0.0.1"),
        (
            Some("10.0.0.1:4000"),
            Some("6.6.6.6, 198.51.100.7:8080"),
            None,
            "10.0.0.1",
        ),
        (
            Some("10.0.0.1:4000"),
            Some("6.6.6.6, [2001:db8::1]"),
            None,
            "10.0.0.1",
        ),
        (Some("10.0.0.1:4000"), Some("6.6.6.6,"), None, "10.0.0.1"),
        (
            Some("10.0.0.1:4000"),
            Some("6.6.6.6, ,10.0.0.2"),
            None,
            "10.0.0.1",
        ),
        (
            Some("10.0.0.1:4000"),
            Some("198.51.100. 7"),
            None,
            "10.0.0.1",
        ),
        // X-Real-IP only when XFF is absent (or holds just the peer), and only from a proxy.
        (
            Some("10.0.0.1:4000"),
            None,
            Some("198.51.100.8"),
            "198.51.100.8",
        ),
        (
            Some("10.0.0.1:4000"),
            Some(""),
            Some("198.51.100.8"),
            "198.51.100.8",
        ),
        (
            Some("10.0.0.1:4000"),
            Some("10.0.0.1"),
            Some("198.51.100.8"),
            "198.51.100.8",
        ),
        (Some("10.0.0.1:4000"), None, Some("not an ip"), "10.0.0.1"),
        (
            Some("203.0.113.9:4000"),
            None,
            Some("198.51.100.8"),
            "203.0.113.9",
        ),
        // IPv6 peers and XFF entries.
        (Some("[::1]:5555"), None, None, "::1"),
        (Some("[::1]:5555"), Some("198.51.100.7"), None, "::1"),
        (
            Some("[2001:db8:ffff::1]:443"),
            Some("2001:db8:1::7"),
            None,
            "2001:db8:1::7",
        ),
        (
            Some("10.0.0.1:4000"),
            Some("2001:db8:1::7"),
            None,
            "2001:db8:1::7",
        ),
        (
            Some("[2001:db8:ffff::1]:443"),
            Some("2001:DB8:1:0:0:0:0:7, 2001:db8:ffff::2"),
            None,
            "2001:db8:1::7",
        ),
        // IPv4-mapped IPv6 is the IPv4 address, for the peer and for XFF entries.
        (Some("[::ffff:203.0.113.9]:4000"), None, None, "203.0.113.9"),
        (
            Some("[::ffff:10.0.0.1]:4000"),
            Some("::ffff:198.51.100.7"),
            None,
            "198.51.100.7",
        ),
        // A bare address without port; no address at all (e.g. a pipe): empty.
        (Some("203.0.113.9"), None, None, "203.0.113.9"),
        (Some("/run/envoy.sock"), None, None, ""),
        (None, Some("198.51.100.7"), None, ""),
    ]
}

#[test]
fn client_ip_from_peer_and_trusted_forwarded_headers() {
    for (peer, xff, real_ip, expected) in ip_cases() {
        let mut vm = vm(&config(TRUSTED));
        let mut request = Request::get("/api/v1/request").source(peer);
        if let Some(xff) = xff {
            request = request.header("x-forwarded-for", xff);
        }
        if let Some(real_ip) = real_ip {
            request = request.header("x-real-ip", real_ip);
        }
        let sent = evidence(&mut vm, request);
        assert_eq!(
            sent.ip, expected,
            "peer {peer:?}, xff {xff:?}, x-real-ip {real_ip:?}"
        );
        still_works(&mut vm);
    }
}

#[test]
fn forwarded_headers_are_ignored_without_trusted_proxies() {
    for (peer, xff) in [
        ("10.0.0.1:4000", "198.51.100.7"),
        ("[::1]:5555", "2001:db8:1::7"),
        ("127.0.0.1:5555", "1.2.3.4, 5.6.7.8"),
    ] {
        let mut vm = vm(&config(""));
        let request = Request::get("/")
            .from(peer)
            .header("x-forwarded-for", xff)
            .header("x-real-ip", "198.51.100.8");
        let sent = evidence(&mut vm, request);
        let peer_ip = peer.rsplit_once(':').map_or(peer, |(ip, _)| ip);
        assert_eq!(sent.ip, peer_ip.trim_matches(['[', ']']), "{peer} {xff}");
        still_works(&mut vm);
    }
}

#[test]
fn forwarded_header_with_invalid_utf8_falls_back_to_the_peer() {
    let mut vm = vm(&config(TRUSTED));
    let request = Request::get("/")
        .from("10.0.0.1:4000")
        .header("x-forwarded-for", b"198.51.100.7\xff".as_slice());
    assert_eq!(evidence(&mut vm, request).ip, "10.0.0.1");
    still_works(&mut vm);
}

// ---------------------------------------------------------------------------------------------
// Identity evidence: credentials, method and path, and their bounds

#[test]
fn api_key_bounds_and_encoding() {
    let at_limit = "k".repeat(1024);
    let over_limit = "k".repeat(1025);
    let cases: Vec<(&[u8], Option<&str>)> = vec![
        (b"demo-free-key", Some("demo-free-key")),
        (at_limit.as_bytes(), Some(at_limit.as_str())),
        // Longer than any registered key: dropped, judged by IP.
        (over_limit.as_bytes(), None),
        (b"", None),
        // Not UTF-8: cannot be a registered key.
        (b"key-\xff\xfe", None),
        (b"\xc3\x28", None),
        // Quotes and backslashes are carried, JSON-escaped.
        (br#"a"b\c"#, Some(r#"a"b\c"#)),
    ];
    for (key, expected) in cases {
        let mut vm = vm(&config(""));
        let request = Request::get("/").header("x-api-key", key);
        let sent = evidence(&mut vm, request);
        assert_eq!(
            sent.api_key.as_deref(),
            expected,
            "key {:?}",
            String::from_utf8_lossy(key)
        );
        assert_eq!(sent.ip, "192.0.2.1");
        still_works(&mut vm);
    }
}

#[test]
fn authorization_bounds() {
    let at_limit = format!("Bearer {}", "t".repeat(8192 - 7));
    let over_limit = format!("Bearer {}", "t".repeat(8192 - 6));
    for (value, kept) in [(&at_limit, true), (&over_limit, false)] {
        let mut vm = vm(&config(""));
        let sent = evidence(&mut vm, Request::get("/").header("authorization", value));
        assert_eq!(
            sent.authorization.as_ref(),
            kept.then_some(value),
            "{} bytes",
            value.len()
        );
        still_works(&mut vm);
    }
}

#[test]
fn custom_api_key_header() {
    let mut vm = vm(&config(r#""api_key_header":"X-Tenant-Key""#));
    let request = Request::get("/")
        .header("x-api-key", "ignored")
        .header("X-Tenant-Key", "tenant-key-1");
    assert_eq!(
        evidence(&mut vm, request).api_key.as_deref(),
        Some("tenant-key-1")
    );
    still_works(&mut vm);
}

#[test]
fn path_is_cut_and_query_dropped() {
    let long = format!("/{}", "a".repeat(5000));
    // A multi-byte character straddling the limit is not split.
    let straddling = format!("/{}é/rest", "b".repeat(4094));
    let cases: Vec<(String, String)> = vec![
        ("/api/v1/request?x=1&y=2".into(), "/api/v1/request".into()),
        ("/api/v1//request#frag".into(), "/api/v1//request".into()),
        (long.clone(), long[..4096].to_string()),
        (straddling.clone(), straddling[..4095].to_string()),
        ("/caf\u{e9}".into(), "/caf\u{e9}".into()),
    ];
    for (path, expected) in cases {
        let mut vm = vm(&config(""));
        let sent = evidence(&mut vm, Request::get(&path));
        assert_eq!(sent.path, expected, "path of {} bytes", path.len());
        assert_eq!(sent.method, "GET");
        still_works(&mut vm);
    }
    // Invalid UTF-8 in the path is replaced, not refused.
    let mut vm = vm(&config(""));
    let request = Request::get("/").set_header(":path", Some(b"/x\xff/y?q".as_slice()));
    assert_eq!(evidence(&mut vm, request).path, "/x\u{fffd}/y");
    still_works(&mut vm);
}

#[test]
fn oversized_evidence_keeps_the_decision_body_bounded() {
    // Credentials that JSON-escape to six bytes each; a path at its limit.
    let key = "\u{1}".repeat(1024);
    let token = "\"".repeat(8192);
    let path = format!("/{}", "\\".repeat(4095));
    let mut vm = vm(&config(""));
    let run = vm.request(
        Request::get(&path)
            .header("x-api-key", &key)
            .header("authorization", &token),
    );
    let body_len = run.call().expect("decision call").body.len();
    assert!(body_len <= MAX_DECISION_REQUEST_BYTES, "{body_len} bytes");
    let sent = decision(&run);
    // Credentials go first (such values are no real key or token), the authorization first:
    // without it the rest fits, so the key and the whole path survive.
    assert!(sent.authorization.is_none(), "authorization kept");
    assert!(sent.api_key == Some(key), "api key changed or dropped");
    assert!(sent.path == path, "path cut to {} bytes", sent.path.len());
    respond_200(run, &allow());
    still_works(&mut vm);
}

#[test]
fn missing_method_and_path_are_sent_empty() {
    let mut vm = vm(&config(""));
    let request = Request::get("/")
        .set_header(":method", None)
        .set_header(":path", None);
    let sent = evidence(&mut vm, request);
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("", ""));
    still_works(&mut vm);
}

// ---------------------------------------------------------------------------------------------
// Decision → response

#[test]
fn allow_with_counter_sets_the_four_headers_replacing_upstream_values() {
    let mut vm = vm(&config(""));
    let request = Request::get("/api/v1/request").upstream_response(&[
        (":status", "200"),
        ("x-ratelimit-limit", "999"),
        ("x-ratelimit-limit", "998"),
        ("X-RateLimit-Tier", "forged"),
        ("content-type", "text/plain"),
    ]);
    let outcome = respond_200(vm.request(request), &allow());
    let headers = forwarded(&outcome);
    assert_eq!(rate_limit_headers(headers).len(), 4, "{headers:?}");
    assert_eq!(headers.get("x-ratelimit-limit"), Some("100"));
    assert_eq!(headers.get("x-ratelimit-remaining"), Some("99"));
    assert_eq!(headers.get("x-ratelimit-reset"), Some("1700000060"));
    assert_eq!(headers.get("x-ratelimit-tier"), Some("free"));
    assert_eq!(headers.get("content-type"), Some("text/plain"));
    assert_eq!(headers.get(":status"), Some("200"));
    assert_metrics(&vm, &[("allowed", 1)]);
    still_works(&mut vm);
}

#[test]
fn allow_headers_go_on_upstream_errors_too() {
    let mut vm = vm(&config(""));
    let request = Request::get("/api/v1/error").upstream_response(&[(":status", "500")]);
    let outcome = respond_200(vm.request(request), &allow());
    let headers = forwarded(&outcome);
    assert_eq!(headers.get(":status"), Some("500"));
    assert_eq!(rate_limit_headers(headers), RL_HEADERS);
    still_works(&mut vm);
}

#[test]
fn allow_without_counter_sets_only_the_tier() {
    let mut vm = vm(&config(""));
    let body = answer(Verdict::Allow, Some("unlimited"), None);
    let outcome = respond_200(vm.request(Request::get("/")), &body);
    let headers = forwarded(&outcome);
    assert_eq!(rate_limit_headers(headers), ["x-ratelimit-tier"]);
    assert_eq!(headers.get("x-ratelimit-tier"), Some("unlimited"));
    assert_metrics(&vm, &[("allowed", 1)]);
    still_works(&mut vm);
}

#[test]
fn allow_with_an_unsafe_tier_does_not_echo_it() {
    let mut vm = vm(&config(""));
    let body = answer(
        Verdict::Allow,
        Some("free\r\nset-cookie: x=1"),
        Some(counter(5)),
    );
    let outcome = respond_200(vm.request(Request::get("/")), &body);
    let headers = forwarded(&outcome);
    assert_eq!(rate_limit_headers(headers), &RL_HEADERS[..3]);
    assert_eq!(headers.get("set-cookie"), None);
    still_works(&mut vm);
}

#[test]
fn deny_is_a_local_429_with_headers_and_body() {
    for fail_open in [true, false] {
        let mut vm = vm(&config(&format!(r#""fail_open":{fail_open}"#)));
        let outcome = respond_200(vm.request(Request::get("/api/v1/request")), &deny());
        let reply = outcome
            .local()
            .unwrap_or_else(|| panic!("expected a 429, got {outcome:?}"));
        assert_eq!(reply.status, 429);
        assert_eq!(reply.grpc_status, -1);
        // Exactly these headers, once each: the filter's on_response_headers, which Envoy
        // also runs for the local reply, adds nothing.
        assert_eq!(
            reply.headers,
            HeaderMap::from_pairs(&[
                ("retry-after", "59"),
                ("x-ratelimit-limit", "100"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700000060"),
                ("x-ratelimit-tier", "free"),
                ("content-type", "application/json"),
            ])
        );
        let body: Value = serde_json::from_slice(&reply.body).expect("429 body is JSON");
        assert_eq!(
            body,
            json!({"error": {
                "code": "rate_limit_exceeded",
                "message": "Rate limit exceeded: 100 requests per 60 seconds. Retry after 59 seconds.",
                "details": {
                    "limit": 100,
                    "window_size": 60,
                    "reset_at": "2023-11-14T22:14:20Z",
                    "retry_after_seconds": 59,
                    "tier": "free",
                    "endpoint": "/api/v1/request"
                }
            }})
        );
        assert_metrics(&vm, &[("denied", 1)]);
        still_works(&mut vm);
    }
}

#[test]
fn deny_without_reset_at_or_retry_after_fills_them_in() {
    let mut vm = vm(&config(""));
    let mut c = counter(0);
    c.window = 1;
    c.limit = 1;
    let outcome = respond_200(
        vm.request(Request::get("/")),
        &answer(Verdict::Deny, None, Some(c)),
    );
    let reply = outcome.local().expect("a 429");
    assert_eq!(reply.status, 429);
    assert_eq!(reply.headers.get("retry-after"), Some("1"));
    assert_eq!(reply.headers.get("x-ratelimit-tier"), None);
    let body: Value = serde_json::from_slice(&reply.body).expect("JSON");
    let details = &body["error"]["details"];
    assert_eq!(details["reset_at"], "2023-11-14T22:14:20Z");
    assert_eq!(details["retry_after_seconds"], 1);
    assert_eq!(details["tier"], Value::Null);
    assert_eq!(
        body["error"]["message"],
        "Rate limit exceeded: 1 requests per 1 second. Retry after 1 second."
    );
    still_works(&mut vm);
}

#[test]
fn unavailable_is_a_503_without_rate_limit_headers() {
    for fail_open in [true, false] {
        let mut vm = vm(&config(&format!(r#""fail_open":{fail_open}"#)));
        let body = answer(Verdict::Unavailable, Some("free"), Some(counter(0)));
        let outcome = respond_200(vm.request(Request::get("/")), &body);
        assert_unavailable(&outcome);
        assert_metrics(&vm, &[("unavailable", 1)]);
        still_works(&mut vm);
    }
}

#[test]
fn whitelisted_disabled_and_failed_open_pass_without_headers() {
    for (verdict, metric_name) in [
        (Verdict::Whitelisted, "whitelisted"),
        (Verdict::Disabled, "disabled"),
        (Verdict::FailedOpen, "failed_open"),
    ] {
        for fail_open in [true, false] {
            let mut vm = vm(&config(&format!(r#""fail_open":{fail_open}"#)));
            // Even an answer carrying a tier and a counter adds no header.
            let body = answer(verdict, Some("free"), Some(counter(3)));
            let outcome = respond_200(vm.request(Request::get("/")), &body);
            assert_passed_without_headers(&outcome);
            assert_metrics(&vm, &[(metric_name, 1)]);
            assert!(vm.logs().is_empty(), "{:?}", vm.logs());
            still_works(&mut vm);
        }
    }
}

/// The response of an upstream that runs a limiter of its own (`RateLimit-Policy` is a List:
/// two lines, two items).
const UPSTREAM_WITH_OWN_LIMITS: [(&str, &str); 10] = [
    (":status", "503"),
    ("x-ratelimit-limit", "5000"),
    ("X-RateLimit-Remaining", "4321"),
    ("x-ratelimit-reset", "1"),
    ("x-ratelimit-tier", "upstream-gold"),
    ("x-ratelimit-used", "679"),
    ("ratelimit", "\"upstream\";r=4321;t=60"),
    ("ratelimit-policy", "\"upstream\";q=5000;w=3600"),
    ("ratelimit-policy", "\"burst\";q=100;w=1"),
    ("retry-after", "30"),
];

/// Every line of a header map as (name, value), sorted by name only (lines of one name keep
/// their order).
fn lines(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut lines: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    lines
}

#[test]
fn the_upstreams_own_rate_limit_headers_give_way_on_every_forwarded_response() {
    let ours_all: &[(&str, &str)] = &[
        ("x-ratelimit-limit", "100"),
        ("x-ratelimit-remaining", "99"),
        ("x-ratelimit-reset", "1700000060"),
        ("x-ratelimit-tier", "free"),
    ];
    // (case, the control plane's answer (`None`: the call is reset), the headers of ours)
    type Case<'a> = (&'a str, Option<String>, &'a [(&'a str, &'a str)]);
    let cases: [Case<'_>; 6] = [
        ("allow", Some(allow()), ours_all),
        (
            "unlimited tier",
            Some(answer(Verdict::Allow, Some("unlimited"), None)),
            &[("x-ratelimit-tier", "unlimited")],
        ),
        (
            "whitelisted",
            Some(answer(Verdict::Whitelisted, None, None)),
            &[],
        ),
        ("disabled", Some(answer(Verdict::Disabled, None, None)), &[]),
        (
            "failed open by the control plane",
            Some(answer(Verdict::FailedOpen, None, None)),
            &[],
        ),
        ("failed open by the filter (call reset)", None, &[]),
    ];
    for (what, body, ours) in cases {
        let mut vm = vm(&config(""));
        let run = vm.request(Request::get("/").upstream_response(&UPSTREAM_WITH_OWN_LIMITS));
        let outcome = match body {
            Some(body) => respond_200(run, &body),
            None => run.respond_reset(),
        };
        let mut want = HeaderMap::from_pairs(&[
            (":status", "503"),
            ("ratelimit", "\"upstream\";r=4321;t=60"),
            ("ratelimit-policy", "\"upstream\";q=5000;w=3600"),
            ("ratelimit-policy", "\"burst\";q=100;w=1"),
            ("retry-after", "30"),
        ]);
        for (name, value) in ours {
            want.append(name, value);
        }
        assert_eq!(lines(forwarded(&outcome)), lines(&want), "{what}");
        still_works(&mut vm);
    }
}

#[test]
fn outcomes_accumulate_in_the_stats() {
    let mut vm = vm(&config(""));
    for _ in 0..3 {
        respond_200(vm.request(Request::get("/")), &allow());
    }
    respond_200(vm.request(Request::get("/")), &deny());
    vm.request(Request::get("/")).respond_reset();
    assert_metrics(
        &vm,
        &[
            ("allowed", 3),
            ("denied", 1),
            ("failed_open", 1),
            ("control_plane_errors", 1),
        ],
    );
    still_works(&mut vm);
}

// ---------------------------------------------------------------------------------------------
// `benchmark_no_callout`: the load benchmark's floor of the Wasm runtime

#[test]
fn benchmark_no_callout_forwards_with_fixed_headers_and_asks_nothing() {
    let mut vm = vm(&config(r#""benchmark_no_callout":true"#));
    assert!(
        vm.logs()
            .iter()
            .any(|l| l.level == LogLevel::Warn && l.message.contains("benchmark_no_callout is on")),
        "Envoy's log must say that nothing is checked: {:?}",
        vm.logs()
    );
    // The request goes on at once; the upstream's own X-RateLimit-* give way to the fixed ones,
    // its other fields pass.
    let run = vm.request(
        Request::get("/api/v1/request")
            .header("x-api-key", "0123456789abcdef")
            .upstream_response(&UPSTREAM_WITH_OWN_LIMITS),
    );
    assert_eq!(run.headers_action(), Some(Action::Continue));
    assert!(run.call().is_none(), "no decision call");
    let outcome = run.finish();
    let mut want = HeaderMap::from_pairs(&[
        (":status", "503"),
        ("ratelimit", "\"upstream\";r=4321;t=60"),
        ("ratelimit-policy", "\"upstream\";q=5000;w=3600"),
        ("ratelimit-policy", "\"burst\";q=100;w=1"),
        ("retry-after", "30"),
    ]);
    for (name, value) in NO_CALLOUT_HEADERS {
        want.append(name, value);
    }
    assert_eq!(lines(forwarded(&outcome)), lines(&want));

    // Many requests in flight at once: none asks, none queues for a batch, no tick is armed.
    let contexts: Vec<u32> = (0..100)
        .map(|i| vm.start(Request::get("/api/v1/request").from(&format!("198.51.100.{i}:4000"))))
        .collect();
    assert!(vm.pending_calls().is_empty(), "{:?}", vm.pending_calls());
    assert_eq!(vm.tick_period_ms(), 0);
    for context in contexts {
        assert!(vm.decided(context), "forwarded at once");
        let outcome = vm.finish(context);
        let headers = forwarded(&outcome);
        for (name, value) in NO_CALLOUT_HEADERS {
            assert_eq!(headers.get(name), Some(value), "{headers:?}");
        }
    }
    // Nothing was decided, so nothing is counted.
    assert_metrics(&vm, &[]);
    vm.assert_healthy();
}

// ---------------------------------------------------------------------------------------------
// Control-plane failures × fail_open

/// How the control plane fails to answer.
#[derive(Debug, Clone, Copy)]
enum Failure {
    DispatchError,
    Status(&'static str, &'static str),
    Garbage,
    EmptyBody,
    OversizedBody,
    UnknownVerdict,
    DenyWithoutCounter,
    NoStatus,
    Reset,
}

const FAILURES: [Failure; 11] = [
    Failure::DispatchError,
    // Envoy's own answers when the cluster has no healthy host / the call times out.
    Failure::Status("503", "no healthy upstream"),
    Failure::Status("504", "upstream request timeout"),
    Failure::Status("500", r#"{"verdict":"allow"}"#),
    Failure::Garbage,
    Failure::EmptyBody,
    Failure::OversizedBody,
    Failure::UnknownVerdict,
    Failure::DenyWithoutCounter,
    Failure::NoStatus,
    Failure::Reset,
];

/// Runs one request that meets `failure`, and returns how it ended.
fn run_failure(vm: &mut FilterVm, failure: Failure, fail_open: bool) -> Outcome {
    if let Failure::DispatchError = failure {
        vm.fail_dispatch(true);
        let run = vm.request(Request::get("/api/v1/request"));
        assert!(run.call().is_none());
        // Decided at once: Continue (fail open) or Pause behind the local 503.
        let expected = if fail_open {
            Action::Continue
        } else {
            Action::Pause
        };
        assert_eq!(run.headers_action(), Some(expected));
        return run.finish();
    }
    let run = vm.request(Request::get("/api/v1/request"));
    assert!(run.call().is_some(), "{failure:?}: no decision call");
    let oversized = {
        // One byte over what the filter accepts (a valid answer padded with whitespace).
        let mut body = allow();
        let limit = rate_limit_filter::response::MAX_DECISION_RESPONSE_BYTES;
        body.push_str(&" ".repeat(limit + 1 - body.len()));
        body
    };
    match failure {
        Failure::DispatchError => unreachable!("handled above"),
        Failure::Status(status, body) => run.respond(&[(":status", status)], body),
        Failure::Garbage => respond_200(run, "<html>garbage</html>"),
        Failure::EmptyBody => respond_200(run, ""),
        Failure::OversizedBody => respond_200(run, &oversized),
        Failure::UnknownVerdict => respond_200(run, r#"{"verdict":"maybe","tier":"free"}"#),
        Failure::DenyWithoutCounter => respond_200(run, r#"{"verdict":"deny","tier":"free"}"#),
        Failure::NoStatus => run.respond(&[("content-type", "application/json")], allow()),
        Failure::Reset => run.respond_reset(),
    }
}

/// Every failure shape under one `fail_open` value: the outcome, the metrics, exactly one
/// warning (`warning_says` checks it), and a VM that still works.
fn single_call_failures(
    fail_open: bool,
    assert_outcome: fn(&Outcome),
    metric: &str,
    warning_says: fn(&str) -> bool,
) {
    for failure in FAILURES {
        let mut vm = vm(&config(&format!(r#""fail_open":{fail_open}"#)));
        let outcome = run_failure(&mut vm, failure, fail_open);
        assert_outcome(&outcome);
        assert_metrics(&vm, &[(metric, 1), ("control_plane_errors", 1)]);
        let warnings: Vec<_> = vm
            .logs()
            .iter()
            .filter(|l| l.level == LogLevel::Warn)
            .collect();
        assert_eq!(warnings.len(), 1, "{failure:?}: {:?}", vm.logs());
        assert!(
            warning_says(&warnings[0].message),
            "{failure:?}: {}",
            warnings[0].message
        );
        still_works(&mut vm);
    }
}

#[test]
fn control_plane_failures_fail_open() {
    single_call_failures(true, assert_passed_without_headers, "failed_open", |m| {
        m.contains(CLUSTER) && m.contains("fail_open")
    });
}

#[test]
fn control_plane_failures_fail_closed() {
    single_call_failures(false, assert_unavailable, "failed_closed", |m| {
        m.contains("503")
    });
}

/// The control plane's answer to a decision call without the right secret (as its
/// `require_decision_secret` layer sends it).
const UNAUTHORIZED_BODY: &str =
    r#"{"error":{"code":"unauthorized","message":"missing or wrong decision secret"}}"#;

#[test]
fn a_401_is_counted_as_unauthorized_not_as_an_outage_and_follows_fail_open() {
    for (fail_open, check, policy) in [
        (
            true,
            assert_passed_without_headers as fn(&Outcome),
            "failed_open",
        ),
        (false, assert_unavailable, "failed_closed"),
    ] {
        let mut vm = vm(&config(&format!(
            r#""fail_open":{fail_open},"decision_secret":"stale secret""#
        )));
        let run = vm.request(Request::get("/api/v1/request"));
        check(&run.respond(
            &[(":status", "401"), ("content-type", "application/json")],
            UNAUTHORIZED_BODY,
        ));
        assert_metrics(&vm, &[(policy, 1), ("unauthorized", 1)]);
        let logs = vm.take_logs();
        assert_eq!(logs.len(), 1, "{logs:?}");
        let line = &logs[0].message;
        assert!(
            line.contains("HTTP 401") && line.contains("decision secret") && line.contains(CLUSTER),
            "{line}"
        );
        assert!(
            !line.contains("stale secret"),
            "the secret is never logged: {line}"
        );

        // Every member of a batch refused with 401 counts once.
        let c = coalesce(&mut vm, 3);
        vm.answer_call(
            c.batch,
            Some(&[(":status", "401")]),
            UNAUTHORIZED_BODY.as_bytes(),
        );
        for ctx in &c.queued {
            check(&vm.finish(*ctx));
        }
        for (ctx, _) in c.singles {
            vm.cancel(ctx);
        }
        assert_metrics(&vm, &[(policy, 4), ("unauthorized", 4), ("batch_calls", 1)]);
        still_works(&mut vm);
    }
}

#[test]
fn control_plane_error_logs_are_throttled_per_vm() {
    let mut vm = vm(&config(""));
    for _ in 0..5 {
        vm.request(Request::get("/")).respond_reset();
    }
    assert_eq!(vm.take_logs().len(), 1);
    vm.advance_clock(Duration::from_secs(11));
    vm.request(Request::get("/")).respond_reset();
    let logs = vm.take_logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(
        logs[0].message.contains("4 similar errors not logged"),
        "{}",
        logs[0].message
    );
    assert_metrics(&vm, &[("failed_open", 6), ("control_plane_errors", 6)]);
    still_works(&mut vm);
}

#[test]
fn unanswered_call_leaves_the_request_waiting() {
    // Envoy answers every call (with a synthesised 504 after the timeout); until then the
    // request must stay paused, not slip through.
    let mut vm = vm(&config(""));
    let run = vm.request(Request::get("/"));
    assert!(run.call().is_some());
    assert_eq!(run.finish(), Outcome::Stalled);
    still_works(&mut vm);
}

// ---------------------------------------------------------------------------------------------
// Plugin configuration

#[test]
fn good_configurations_are_accepted() {
    for config in [
        config(""),
        config(r#""fail_open":false"#),
        config(TRUSTED),
        r#"{"cluster":"rl","authority":"control-plane:8080","timeout_ms":1000,
            "fail_open":false,"api_key_header":"X-My-Key",
            "trusted_proxies":["10.0.0.0/8","192.168.1.1","2001:db8::/32","::1"],
            "decision_secret":"s3cret value"}"#
            .to_string(),
        format!(r#"  {{"cluster":"{CLUSTER}","timeout_ms":60000}}  "#),
        // `["ietf"]` and `[]` are accepted too: the_header_sets_follow_the_plugin_configuration.
        config(r#""headers":["x-ratelimit","ietf"]"#),
    ] {
        let mut vm = vm(&config);
        assert!(vm.logs().is_empty(), "{config}: {:?}", vm.logs());
        still_works(&mut vm);
    }
}

#[test]
fn bad_configurations_are_rejected_naming_the_field() {
    let cases = [
        ("", "field `cluster`: is required"),
        ("   ", "field `cluster`: is required"),
        ("{}", "field `cluster`: is required"),
        (r#"{"timeout_ms":250}"#, "field `cluster`: is required"),
        (r#"{"cluster":""}"#, "field `cluster`"),
        (r#"{"cluster":5}"#, "field `cluster`: must be a string"),
        (&config(r#""timeout_ms":0"#), "field `timeout_ms`"),
        (&config(r#""timeout_ms":60001"#), "field `timeout_ms`"),
        (&config(r#""timeout_ms":"250""#), "field `timeout_ms`"),
        (&config(r#""timeout_ms":1.5"#), "field `timeout_ms`"),
        (
            &config(r#""trusted_proxies":["10.0.0.0/33"]"#),
            "field `trusted_proxies[0]`",
        ),
        (
            &config(r#""trusted_proxies":["10.0.0.0/8","not-an-ip"]"#),
            "field `trusted_proxies[1]`",
        ),
        (
            &config(r#""trusted_proxies":"10.0.0.0/8""#),
            "field `trusted_proxies`",
        ),
        (
            &config(r#""fail_opne":false"#),
            "field `fail_opne`: unknown field",
        ),
        (&config(r#""fail_open":"false""#), "field `fail_open`"),
        (
            &config(r#""api_key_header":"x api key""#),
            "field `api_key_header`",
        ),
        (&config(r#""authority":"a b""#), "field `authority`"),
        (
            &config(r#""decision_secret":"""#),
            "field `decision_secret`",
        ),
        (
            &config(r#""headers":"ietf""#),
            "field `headers`: must be a list",
        ),
        (
            &config(r#""headers":["ietf","draft-11"]"#),
            "field `headers[1]`: unknown header set \"draft-11\"",
        ),
        (
            &config(r#""headers":["X-RateLimit"]"#),
            "field `headers[0]`: unknown header set",
        ),
        (
            &config(r#""headers":[true]"#),
            "field `headers[0]`: must be a string",
        ),
        (
            &config(r#""headers":["ietf","ietf"]"#),
            "field `headers[1]`: \"ietf\" is listed twice",
        ),
        ("{", "not valid JSON"),
        ("cluster: rl", "not valid JSON"),
        (r#"["rl"]"#, "must be a JSON object"),
    ];
    for (config, expected) in cases {
        let rejected = match FilterVm::new(config) {
            Ok(_) => panic!("{config:?} was accepted"),
            Err(rejected) => rejected,
        };
        assert_eq!(rejected.trap, None, "{config:?}");
        let errors: Vec<_> = rejected
            .logs
            .iter()
            .filter(|l| l.level == LogLevel::Error)
            .collect();
        assert_eq!(errors.len(), 1, "{config:?}: {:?}", rejected.logs);
        assert!(
            errors[0]
                .message
                .starts_with("rate-limit-filter: invalid plugin configuration: ")
                && errors[0].message.contains(expected),
            "{config:?}: {:?} does not mention {expected:?}",
            errors[0].message
        );
    }
}

#[test]
fn configuration_that_is_not_utf8_is_rejected() {
    let rejected = match FilterVm::new(b"{\"cluster\":\"rl\xff\"}") {
        Ok(_) => panic!("accepted"),
        Err(rejected) => rejected,
    };
    assert_eq!(rejected.trap, None);
    assert!(
        rejected
            .logs
            .iter()
            .any(|l| l.message.contains("not valid JSON")),
        "{:?}",
        rejected.logs
    );
}

// ---------------------------------------------------------------------------------------------
// Coalescing: decision calls of one VM under load go out as one batch call

fn batch_answer(responses: &[String]) -> String {
    let items: Vec<Value> = responses
        .iter()
        .map(|r| serde_json::from_str(r).expect("answer json"))
        .collect();
    json!({ "responses": items }).to_string()
}

/// Requests started until `queued` of them wait behind the single calls, and the batch call
/// the tick then sends.
struct Coalesced {
    /// (context, call token) of the requests that went alone.
    singles: Vec<(u32, u32)>,
    queued: Vec<u32>,
    batch: u32,
}

fn coalesce(vm: &mut FilterVm, queued: usize) -> Coalesced {
    let mut singles = Vec::new();
    // Requests go alone until the single-call limit, then queue.
    loop {
        let before = vm.pending_calls().len();
        let ctx = vm.start(Request::get("/api/v1/request").from("203.0.113.1:1"));
        let calls = vm.pending_calls();
        if calls.len() == before {
            // Queued: no call of its own.
            let mut queued_ctx = vec![ctx];
            for i in 1..queued {
                queued_ctx.push(vm.start(
                    Request::get("/api/v1/request").from(&format!("203.0.113.{}:1", i + 10)),
                ));
            }
            assert_eq!(
                vm.pending_calls().len(),
                before,
                "queued requests call nobody"
            );
            assert!(vm.tick_period_ms() > 0, "a tick is armed to send the queue");
            assert!(vm.tick());
            let calls = vm.pending_calls();
            assert_eq!(calls.len(), before + 1, "one batch call for the queue");
            let batch = calls.last().expect("batch call");
            assert_eq!(
                batch.headers.get(":path"),
                Some(rl_wire::BATCH_DECISION_PATH)
            );
            assert_eq!(batch.headers.get(":method"), Some("POST"));
            assert_eq!(batch.context, ROOT_CONTEXT, "batches go out from the root");
            assert_eq!(batch.cluster, CLUSTER);
            let body: rl_wire::BatchDecisionRequest =
                serde_json::from_slice(&batch.body).expect("batch body");
            assert_eq!(body.requests.len(), queued);
            assert_eq!(body.requests[0].ip, "203.0.113.1");
            assert_eq!(
                vm.tick_period_ms(),
                0,
                "the tick stops once the queue is sent"
            );
            return Coalesced {
                singles,
                queued: queued_ctx,
                batch: batch.token,
            };
        }
        let call = calls.last().expect("single call");
        assert_eq!(call.headers.get(":path"), Some(DECISION_PATH));
        singles.push((ctx, call.token));
        assert!(singles.len() < 16, "requests never queue");
    }
}

const OK: [(&str, &str); 2] = [(":status", "200"), ("content-type", "application/json")];

#[test]
fn requests_queue_behind_single_calls_and_leave_in_one_batch() {
    let mut vm = vm(&config(r#""decision_secret":"s3cret""#));
    let c = coalesce(&mut vm, 3);
    assert!(!c.singles.is_empty());
    let batch = vm
        .pending_calls()
        .into_iter()
        .find(|call| call.token == c.batch)
        .expect("batch call");
    assert_eq!(batch.headers.get(DECISION_SECRET_HEADER), Some("s3cret"));
    // Answers in order: allow, deny, whitelisted.
    let body = batch_answer(&[allow(), deny(), answer(Verdict::Whitelisted, None, None)]);
    vm.answer_call(c.batch, Some(&OK), body.as_bytes());
    for ctx in &c.queued {
        assert!(vm.decided(*ctx));
    }
    let allowed = vm.finish(c.queued[0]);
    assert_eq!(forwarded(&allowed).get("x-ratelimit-remaining"), Some("99"));
    assert_eq!(forwarded(&allowed).get("x-ratelimit-tier"), Some("free"));
    // The 429 is the single path's, byte for byte.
    let denied = vm.finish(c.queued[1]);
    let mut single_vm = self::vm(&config(""));
    let single = respond_200(single_vm.request(Request::get("/api/v1/request")), &deny());
    assert_eq!(denied.local(), single.local());
    assert_eq!(denied.local().map(|l| l.status), Some(429));
    assert_passed_without_headers(&vm.finish(c.queued[2]));
    for (ctx, token) in &c.singles {
        vm.answer_call(*token, Some(&OK), allow().as_bytes());
        assert!(
            forwarded(&vm.finish(*ctx))
                .get("x-ratelimit-limit")
                .is_some()
        );
    }
    let allowed = 1 + c.singles.len() as u64;
    assert_metrics(
        &vm,
        &[
            ("allowed", allowed),
            ("denied", 1),
            ("whitelisted", 1),
            ("batch_calls", 1),
        ],
    );
    assert!(vm.pending_calls().is_empty());
    still_works(&mut vm);
}

#[test]
fn a_batch_answer_sends_the_next_queue_at_once() {
    let mut vm = vm(&config(""));
    let c = coalesce(&mut vm, 1);
    // More requests arrive while the batch is in flight: they wait for it, not for a tick.
    let later: Vec<u32> = (0..3)
        .map(|i| vm.start(Request::get("/").from(&format!("198.51.100.{i}:1"))))
        .collect();
    assert_eq!(vm.tick_period_ms(), 0);
    let calls_before = vm.pending_calls().len();
    vm.answer_call(c.batch, Some(&OK), batch_answer(&[allow()]).as_bytes());
    let calls = vm.pending_calls();
    assert_eq!(
        calls.len(),
        calls_before,
        "the answered batch is replaced by the next"
    );
    let next = calls.last().expect("next batch");
    assert_eq!(
        next.headers.get(":path"),
        Some(rl_wire::BATCH_DECISION_PATH)
    );
    // Sent after resuming the first batch's member, yet from the root: a member's end must
    // not cancel it.
    assert_eq!(next.context, ROOT_CONTEXT);
    let body: rl_wire::BatchDecisionRequest = serde_json::from_slice(&next.body).expect("body");
    assert_eq!(body.requests.len(), later.len());
    let token = next.token;
    vm.answer_call(
        token,
        Some(&OK),
        batch_answer(&[allow(), allow(), allow()]).as_bytes(),
    );
    for ctx in later.iter().chain(&c.queued) {
        assert!(
            forwarded(&vm.finish(*ctx))
                .get("x-ratelimit-limit")
                .is_some()
        );
    }
    for (ctx, token) in &c.singles {
        vm.answer_call(*token, Some(&OK), allow().as_bytes());
        vm.finish(*ctx);
    }
    still_works(&mut vm);
}

#[test]
fn members_that_went_away_are_skipped() {
    let mut vm = vm(&config(""));
    let c = coalesce(&mut vm, 3);
    // The client of the middle request disconnects while its batch is in flight.
    vm.cancel(c.queued[1]);
    let body = batch_answer(&[allow(), allow(), allow()]);
    vm.answer_call(c.batch, Some(&OK), body.as_bytes());
    assert!(
        forwarded(&vm.finish(c.queued[0]))
            .get("x-ratelimit-limit")
            .is_some()
    );
    assert!(
        forwarded(&vm.finish(c.queued[2]))
            .get("x-ratelimit-limit")
            .is_some()
    );
    for (ctx, token) in &c.singles {
        vm.answer_call(*token, Some(&OK), allow().as_bytes());
        vm.finish(*ctx);
    }
    vm.assert_healthy();
}

#[test]
fn a_request_gone_while_queued_is_left_out_of_the_batch() {
    let mut vm = vm(&config(""));
    let mut singles = Vec::new();
    let queued = loop {
        let before = vm.pending_calls().len();
        let ctx = vm.start(Request::get("/"));
        if vm.pending_calls().len() == before {
            break ctx;
        }
        singles.push(ctx);
    };
    let kept = vm.start(Request::get("/").from("198.51.100.7:1"));
    vm.cancel(queued);
    assert!(vm.tick());
    let batch = vm.pending_calls().last().cloned().expect("batch");
    let body: rl_wire::BatchDecisionRequest = serde_json::from_slice(&batch.body).expect("body");
    assert_eq!(body.requests.len(), 1);
    assert_eq!(body.requests[0].ip, "198.51.100.7");
    vm.answer_call(batch.token, Some(&OK), batch_answer(&[allow()]).as_bytes());
    assert!(
        forwarded(&vm.finish(kept))
            .get("x-ratelimit-limit")
            .is_some()
    );
    vm.assert_healthy();
}

#[test]
fn a_long_queue_leaves_in_several_batch_calls_from_one_tick() {
    let mut vm = vm(&config(""));
    let max = rl_wire::MAX_BATCH_DECISIONS;
    let (singles, queued) = fill_and_queue(&mut vm, max + 2);
    assert!(vm.tick());
    let batches: Vec<_> = vm
        .pending_calls()
        .into_iter()
        .filter(|call| call.headers.get(":path") == Some(rl_wire::BATCH_DECISION_PATH))
        .collect();
    assert_eq!(batches.len(), 2, "{batches:?}");
    let sizes: Vec<usize> = batches
        .iter()
        .map(|call| {
            assert_eq!(call.context, ROOT_CONTEXT);
            serde_json::from_slice::<rl_wire::BatchDecisionRequest>(&call.body)
                .expect("batch body")
                .requests
                .len()
        })
        .collect();
    assert_eq!(sizes, [max, 2]);
    for (call, size) in batches.iter().zip(sizes) {
        let answers = vec![allow(); size];
        vm.answer_call(call.token, Some(&OK), batch_answer(&answers).as_bytes());
    }
    for ctx in &queued {
        assert!(
            forwarded(&vm.finish(*ctx))
                .get("x-ratelimit-limit")
                .is_some()
        );
    }
    for (ctx, token) in &singles {
        vm.answer_call(*token, Some(&OK), allow().as_bytes());
        vm.finish(*ctx);
    }
    assert_metrics(
        &vm,
        &[
            ("allowed", (max + 2 + singles.len()) as u64),
            ("batch_calls", 2),
        ],
    );
    still_works(&mut vm);
}

#[test]
fn timeout_ms_bounds_a_request_queued_behind_a_batch() {
    let ms = Duration::from_millis;
    let mut vm = vm(&config(r#""timeout_ms":250"#));
    let (singles, queued) = fill_and_queue(&mut vm, 1);
    for call in vm.pending_calls() {
        assert_eq!(call.timeout, ms(250), "single calls get the whole timeout");
    }
    vm.advance_clock(ms(100));
    assert!(vm.tick());
    let first = vm.pending_calls().last().cloned().expect("batch");
    assert_eq!(
        first.timeout,
        ms(150),
        "what is left of the queued request's 250 ms"
    );
    // A request queues behind the batch in flight; the batch times out 150 ms later (Envoy
    // answers 504), so the next batch gets the 100 ms left of the new request's time.
    let later = vm.start(Request::get("/").from("198.51.100.9:1"));
    vm.advance_clock(ms(150));
    vm.answer_call(
        first.token,
        Some(&[(":status", "504")]),
        b"upstream request timeout",
    );
    let second = vm.pending_calls().last().cloned().expect("next batch");
    assert_ne!(second.token, first.token);
    assert_eq!(second.timeout, ms(100));
    vm.answer_call(second.token, Some(&OK), batch_answer(&[allow()]).as_bytes());
    assert_passed_without_headers(&vm.finish(queued[0]));
    assert_eq!(
        forwarded(&vm.finish(later)).get("x-ratelimit-remaining"),
        Some("99")
    );
    for (ctx, token) in &singles {
        vm.answer_call(*token, Some(&OK), allow().as_bytes());
        vm.finish(*ctx);
    }
    still_works(&mut vm);
}

/// Requests started until `queued` of them wait behind the single calls (the tick not fired):
/// the (context, token) of the single calls and the queued contexts.
fn fill_and_queue(vm: &mut FilterVm, queued: usize) -> (Vec<(u32, u32)>, Vec<u32>) {
    let mut singles = Vec::new();
    let first = loop {
        let before = vm.pending_calls().len();
        let ctx = vm.start(Request::get("/"));
        let calls = vm.pending_calls();
        if calls.len() == before {
            break ctx;
        }
        singles.push((ctx, calls.last().expect("single call").token));
    };
    let mut queued_ctx = vec![first];
    for i in 1..queued {
        queued_ctx.push(vm.start(Request::get("/").from(&format!("198.51.100.{}:1", i % 250))));
    }
    (singles, queued_ctx)
}

/// How a batch call fails.
#[derive(Debug, Clone, Copy)]
enum BatchFailure {
    DispatchError,
    Status(&'static str),
    Garbage,
    EmptyBody,
    NoStatus,
    Reset,
    SingleAnswer,
    WrongCount,
    UnknownVerdict,
}

const BATCH_FAILURES: [BatchFailure; 10] = [
    BatchFailure::DispatchError,
    BatchFailure::Status("503"),
    BatchFailure::Status("504"),
    BatchFailure::Garbage,
    BatchFailure::EmptyBody,
    BatchFailure::NoStatus,
    BatchFailure::Reset,
    BatchFailure::SingleAnswer,
    BatchFailure::WrongCount,
    BatchFailure::UnknownVerdict,
];

fn batch_failure(fail_open: bool, check: fn(&Outcome)) {
    const MEMBERS: u64 = 3;
    for failure in BATCH_FAILURES {
        let mut vm = vm(&config(&format!(r#""fail_open":{fail_open}"#)));
        let dispatched = !matches!(failure, BatchFailure::DispatchError);
        if !dispatched {
            // The queue forms, then the cluster goes away before the tick sends it.
            let mut singles = Vec::new();
            let first_queued = loop {
                let before = vm.pending_calls().len();
                let ctx = vm.start(Request::get("/"));
                if vm.pending_calls().len() == before {
                    break ctx;
                }
                singles.push(ctx);
            };
            let mut queued = vec![first_queued];
            for _ in 1..MEMBERS {
                queued.push(vm.start(Request::get("/")));
            }
            vm.fail_dispatch(true);
            assert!(vm.tick());
            for ctx in queued {
                check(&vm.finish(ctx));
            }
            for ctx in singles {
                vm.cancel(ctx);
            }
        } else {
            let c = coalesce(&mut vm, MEMBERS as usize);
            let wrong = batch_answer(&[allow(), allow()]);
            let unknown =
                r#"{"responses":[{"verdict":"maybe"},{"verdict":"allow"},{"verdict":"allow"}]}"#;
            let body = batch_answer(&[allow(), allow(), allow()]);
            match failure {
                BatchFailure::DispatchError => unreachable!("handled above"),
                BatchFailure::Status(status) => {
                    vm.answer_call(c.batch, Some(&[(":status", status)]), body.as_bytes())
                }
                BatchFailure::Garbage => vm.answer_call(c.batch, Some(&OK), b"<html>"),
                BatchFailure::EmptyBody => vm.answer_call(c.batch, Some(&OK), b""),
                BatchFailure::NoStatus => vm.answer_call(
                    c.batch,
                    Some(&[("content-type", "application/json")]),
                    body.as_bytes(),
                ),
                BatchFailure::Reset => vm.answer_call(c.batch, None, b""),
                BatchFailure::SingleAnswer => {
                    vm.answer_call(c.batch, Some(&OK), allow().as_bytes())
                }
                BatchFailure::WrongCount => vm.answer_call(c.batch, Some(&OK), wrong.as_bytes()),
                BatchFailure::UnknownVerdict => {
                    vm.answer_call(c.batch, Some(&OK), unknown.as_bytes())
                }
            }
            for ctx in &c.queued {
                assert!(vm.decided(*ctx), "{failure:?}");
                check(&vm.finish(*ctx));
            }
            for (ctx, _) in c.singles {
                vm.cancel(ctx);
            }
        }
        let policy = if fail_open {
            "failed_open"
        } else {
            "failed_closed"
        };
        assert_metrics(
            &vm,
            &[
                (policy, MEMBERS),
                ("control_plane_errors", MEMBERS),
                ("batch_calls", u64::from(dispatched)),
            ],
        );
        still_works(&mut vm);
    }
}

#[test]
fn batch_failures_fail_open() {
    batch_failure(true, assert_passed_without_headers);
}

#[test]
fn batch_failures_fail_closed() {
    batch_failure(false, assert_unavailable);
}

// ---------------------------------------------------------------------------------------------
// The IETF fields (`RateLimit-Policy`, `RateLimit`) and the plugin's `headers`

/// A tier's burst and long windows, then an endpoint rule's window.
const SEVERAL: [(&str, u64, u64); 3] = [
    ("fake-1s", 10, 1),
    ("fake-60s", 100, 60),
    ("fake-/api/v1/request-60s", 30, 60),
];

/// An answer naming `policies`, the one at `binding` describing the request.
fn windowed(
    verdict: Verdict,
    policies: &[(&str, u64, u64)],
    binding: usize,
    remaining: u64,
    reset_after: u64,
) -> String {
    let decision = windows(verdict, policies, binding, remaining, reset_after);
    serde_json::to_string(&decision).expect("serialise a DecisionResponse")
}

/// The List field `name`, every line of it combined; `None` when absent.
fn sf_field(headers: &HeaderMap, name: &str) -> Option<Vec<Member>> {
    let lines: Vec<&[u8]> = headers
        .iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .collect();
    (!lines.is_empty()).then(|| list(lines))
}

fn policy_members(policies: &[(&str, u64, u64)]) -> Vec<Member> {
    policies
        .iter()
        .map(|(name, q, w)| member(name, &[("q", *q as i64), ("w", *w as i64)]))
        .collect()
}

fn assert_no_ietf_fields(headers: &HeaderMap) {
    assert_eq!(sf_field(headers, "ratelimit-policy"), None, "{headers:?}");
    assert_eq!(sf_field(headers, "ratelimit"), None, "{headers:?}");
}

#[test]
fn ietf_fields_with_one_window_and_several() {
    let mut vm = vm(&config(""));
    let one = [("fake-60s", 100, 60)];
    for (policies, binding, remaining, reset) in [
        (&one[..], 0, 49, 37),
        (&SEVERAL[..], 0, 9, 1),
        (&SEVERAL[..], 2, 0, 59),
    ] {
        let body = windowed(Verdict::Allow, policies, binding, remaining, reset);
        let outcome = respond_200(vm.request(Request::get("/api/v1/request")), &body);
        let headers = forwarded(&outcome);
        assert_eq!(
            sf_field(headers, "ratelimit-policy"),
            Some(policy_members(policies))
        );
        let (name, limit, _) = policies[binding];
        assert_eq!(
            sf_field(headers, "ratelimit"),
            Some(vec![member(
                name,
                &[("r", remaining as i64), ("t", reset as i64)]
            )])
        );
        // One line each, and the X-RateLimit-* set beside them.
        assert_eq!(
            headers.names_with_prefix("ratelimit").len(),
            2,
            "{headers:?}"
        );
        assert_eq!(rate_limit_headers(headers), RL_HEADERS);
        assert_eq!(headers.get("x-ratelimit-limit"), Some(&*limit.to_string()));
        assert_eq!(headers.get("retry-after"), None);
    }
    assert_metrics(&vm, &[("allowed", 3)]);
    still_works(&mut vm);
}

#[test]
fn the_429_carries_the_ietf_fields_and_t_is_its_retry_after() {
    let mut vm = vm(&config(""));
    let body = windowed(Verdict::Deny, &SEVERAL, 1, 0, 41);
    let outcome = respond_200(vm.request(Request::get("/api/v1/request")), &body);
    let reply = outcome
        .local()
        .unwrap_or_else(|| panic!("expected a 429, got {outcome:?}"));
    assert_eq!(reply.status, 429);
    assert_eq!(
        sf_field(&reply.headers, "ratelimit-policy"),
        Some(policy_members(&SEVERAL))
    );
    let retry_after: i64 = reply
        .headers
        .get("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("a numeric Retry-After");
    assert_eq!(retry_after, 41);
    assert_eq!(
        sf_field(&reply.headers, "ratelimit"),
        Some(vec![member("fake-60s", &[("r", 0), ("t", retry_after)])])
    );
    // Every header once: on_response_headers, which Envoy runs for local replies too, adds
    // nothing to our own reply.
    assert_eq!(reply.headers.len(), 8, "{:?}", reply.headers);
    assert_eq!(rate_limit_headers(&reply.headers), RL_HEADERS);
    let body: Value = serde_json::from_slice(&reply.body).expect("JSON");
    assert_eq!(body["error"]["details"]["retry_after_seconds"], 41);
    assert_metrics(&vm, &[("denied", 1)]);
    still_works(&mut vm);
}

#[test]
fn ietf_fields_are_appended_after_the_upstreams_items() {
    let mut vm = vm(&config(""));
    let request = Request::get("/").upstream_response(&UPSTREAM_WITH_OWN_LIMITS);
    let body = windowed(Verdict::Allow, &SEVERAL, 0, 9, 1);
    let outcome = respond_200(vm.request(request), &body);
    let headers = forwarded(&outcome);
    // The upstream's lines stay as they were, ours come after them as lines of their own.
    let policy_lines: Vec<&[u8]> = headers
        .iter()
        .filter(|(n, _)| *n == "ratelimit-policy")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(policy_lines.len(), 3, "{headers:?}");
    assert_eq!(policy_lines[0], b"\"upstream\";q=5000;w=3600");
    assert_eq!(policy_lines[1], b"\"burst\";q=100;w=1");
    let mut want = vec![
        member("upstream", &[("q", 5000), ("w", 3600)]),
        member("burst", &[("q", 100), ("w", 1)]),
    ];
    want.extend(policy_members(&SEVERAL));
    assert_eq!(sf_field(headers, "ratelimit-policy"), Some(want));
    assert_eq!(
        sf_field(headers, "ratelimit"),
        Some(vec![
            member("upstream", &[("r", 4321), ("t", 60)]),
            member("fake-1s", &[("r", 9), ("t", 1)]),
        ])
    );
    // The upstream's X-RateLimit-* gave way to ours; its Retry-After stays.
    assert_eq!(rate_limit_headers(headers).len(), 4, "{headers:?}");
    assert_eq!(headers.get("x-ratelimit-tier"), Some("fake"));
    assert_eq!(headers.get("retry-after"), Some("30"));
    still_works(&mut vm);
}

#[test]
fn odd_ascii_policy_names_are_escaped_and_read_back_as_sent() {
    let mut vm = vm(&config(""));
    let odd = [
        (r#"fake-/api/v1/"quoted"\x-1s"#, 5, 1),
        ("fake-/a b,c;d=e-60s", 50, 60),
        ("fake-/caf%C3%A9/*-3600s", 500, 3600),
        (r#"\"#, 1, 2),
    ];
    for binding in 0..odd.len() {
        let body = windowed(Verdict::Allow, &odd, binding, 3, 4);
        let outcome = respond_200(vm.request(Request::get("/")), &body);
        let headers = forwarded(&outcome);
        assert_eq!(
            sf_field(headers, "ratelimit-policy"),
            Some(policy_members(&odd))
        );
        assert_eq!(
            sf_field(headers, "ratelimit"),
            Some(vec![member(odd[binding].0, &[("r", 3), ("t", 4)])])
        );
    }
    still_works(&mut vm);
}

#[test]
fn a_shadow_denial_passes_with_the_headers_an_enforced_limit_would_send() {
    let mut vm = vm(&config(""));
    let mut decision = windows(Verdict::Allow, &SEVERAL, 0, 0, 1);
    decision.shadow_denied = true;
    let body = serde_json::to_string(&decision).expect("serialise");
    let outcome = respond_200(vm.request(Request::get("/api/v1/request")), &body);
    let headers = forwarded(&outcome);
    assert_eq!(headers.get("retry-after"), None, "no Retry-After on a 200");
    assert_eq!(headers.get("x-ratelimit-remaining"), Some("0"));
    assert_eq!(
        sf_field(headers, "ratelimit"),
        Some(vec![member("fake-1s", &[("r", 0), ("t", 1)])])
    );
    assert_metrics(&vm, &[("allowed", 1)]);
    still_works(&mut vm);
}

#[test]
fn no_ietf_fields_without_policies_or_on_responses_nothing_limited() {
    // An answer without policies (a control plane of the first release).
    let mut vm = vm(&config(""));
    let outcome = respond_200(vm.request(Request::get("/")), &allow());
    assert_no_ietf_fields(forwarded(&outcome));
    let outcome = respond_200(vm.request(Request::get("/")), &deny());
    assert_no_ietf_fields(&outcome.local().expect("a 429").headers);

    // Whitelisted, disabled, failed open (by the control plane, by the filter): neither set,
    // even when the answer names windows; the upstream's own fields pass untouched.
    let upstream_only = HeaderMap::from_pairs(&[
        ("ratelimit", "\"upstream\";r=4321;t=60"),
        ("ratelimit-policy", "\"upstream\";q=5000;w=3600"),
        ("ratelimit-policy", "\"burst\";q=100;w=1"),
    ]);
    for verdict in [
        Some(Verdict::Whitelisted),
        Some(Verdict::Disabled),
        Some(Verdict::FailedOpen),
        None,
    ] {
        let run = vm.request(Request::get("/").upstream_response(&UPSTREAM_WITH_OWN_LIMITS));
        let outcome = match verdict {
            Some(verdict) => {
                let mut decision = windows(Verdict::Allow, &SEVERAL, 0, 5, 1);
                decision.verdict = verdict;
                respond_200(run, &serde_json::to_string(&decision).expect("serialise"))
            }
            None => run.respond_reset(),
        };
        let headers = forwarded(&outcome);
        let ietf: Vec<(String, String)> = lines(headers)
            .into_iter()
            .filter(|(n, _)| n.starts_with("ratelimit"))
            .collect();
        assert_eq!(ietf, lines(&upstream_only), "{verdict:?}");
        assert!(rate_limit_headers(headers).is_empty(), "{verdict:?}");
    }
    still_works(&mut vm);
}

#[test]
fn the_header_sets_follow_the_plugin_configuration() {
    for (headers, x, ietf) in [
        (r#"["x-ratelimit","ietf"]"#, true, true),
        (r#"["ietf","x-ratelimit"]"#, true, true),
        (r#"["x-ratelimit"]"#, true, false),
        (r#"["ietf"]"#, false, true),
        ("[]", false, false),
    ] {
        let mut vm = vm(&config(&format!(r#""headers":{headers}"#)));
        let check = |what: &str, got: &HeaderMap| {
            let want_x: &[&str] = if x { &RL_HEADERS } else { &[] };
            assert_eq!(rate_limit_headers(got), want_x, "{headers} {what}: {got:?}");
            assert_eq!(
                sf_field(got, "ratelimit-policy").is_some(),
                ietf,
                "{headers} {what}: {got:?}"
            );
            assert_eq!(
                sf_field(got, "ratelimit").is_some(),
                ietf,
                "{headers} {what}: {got:?}"
            );
        };
        // Allowed: the upstream's X-RateLimit-* go whatever we send.
        let request = Request::get("/").upstream_response(&[
            (":status", "200"),
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-used", "1"),
        ]);
        let body = windowed(Verdict::Allow, &SEVERAL, 1, 50, 30);
        let outcome = respond_200(vm.request(request), &body);
        check("allow", forwarded(&outcome));

        // The 429: Retry-After always.
        let body = windowed(Verdict::Deny, &SEVERAL, 1, 0, 30);
        let outcome = respond_200(vm.request(Request::get("/")), &body);
        let reply = outcome.local().expect("a 429");
        assert_eq!(reply.headers.get("retry-after"), Some("30"));
        check("deny", &reply.headers);

        // A member of a batch call gets the same.
        let c = coalesce(&mut vm, 1);
        let answer = batch_answer(&[windowed(Verdict::Allow, &SEVERAL, 1, 50, 30)]);
        vm.answer_call(c.batch, Some(&OK), answer.as_bytes());
        check("batch", forwarded(&vm.finish(c.queued[0])));
        for (ctx, _) in c.singles {
            vm.cancel(ctx);
        }
        // (`still_works` expects the X-RateLimit-* set, which some of these leave out.)
        vm.assert_healthy();
    }
}

// ---------------------------------------------------------------------------------------------
// The deny cache (shared data)

fn cacheable_deny(deny_for_ms: u64) -> String {
    let mut c = counter(0);
    c.retry_after = Some(59);
    c.reset_after = Some(59);
    c.policy = Some("free-60s".into());
    let response = DecisionResponse {
        verdict: Verdict::Deny,
        tier: Some("free".into()),
        counter: Some(c),
        policies: Vec::new(),
        shadow_denied: false,
        deny_for_ms: Some(deny_for_ms),
        lease: None,
        usage: None,
    };
    serde_json::to_string(&response).expect("serialise a DecisionResponse")
}

fn keyed(key: &str, path: &str) -> Request {
    Request::get(path)
        .from("203.0.113.7:1000")
        .header("x-api-key", key)
}

#[test]
fn a_cacheable_denial_is_answered_by_the_filter_until_it_expires() {
    let mut vm = vm(&config(""));
    let first = respond_200(
        vm.request(keyed("k1", "/api/v1/request")),
        &cacheable_deny(500),
    );
    let first = first.local().expect("a 429").clone();
    assert_eq!(first.status, 429);
    vm.advance_clock(Duration::from_millis(200));
    let run = vm.request(keyed("k1", "/api/v1/request"));
    assert!(run.call().is_none(), "answered without a call");
    let again = run.finish();
    assert_eq!(again.local(), Some(&first), "the same 429");
    // Query strings are not evidence: still a hit.
    let run = vm.request(keyed("k1", "/api/v1/request?page=2"));
    assert!(run.call().is_none());
    run.finish();
    assert_metrics(&vm, &[("denied", 3), ("local_denied", 2)]);
    // Another path asks; with local denials to report it queues and leaves in a batch that
    // carries them.
    let context = vm.start(keyed("k1", "/api/v1/other"));
    assert!(vm.pending_calls().is_empty(), "queued for a batch");
    assert!(vm.tick());
    let calls = vm.pending_calls();
    assert_eq!(calls.len(), 1);
    let sent: rl_wire::BatchDecisionRequest = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(sent.requests.len(), 1);
    assert_eq!(sent.requests[0].path, "/api/v1/other");
    assert_eq!(sent.local_denials.len(), 1);
    assert_eq!(sent.local_denials[0].count, 2);
    assert_eq!(sent.local_denials[0].tier.as_deref(), Some("free"));
    assert_eq!(sent.local_denials[0].policy.as_deref(), Some("free-60s"));
    let batch = format!(r#"{{"responses":[{}]}}"#, allow());
    vm.answer_call(
        calls[0].token,
        Some(&[(":status", "200")]),
        batch.as_bytes(),
    );
    assert!(vm.finish(context).forwarded().is_some());
    // Reported once: another key now takes a call of its own.
    let run = vm.request(keyed("k2", "/api/v1/request"));
    assert!(run.call().is_some());
    respond_200(run, &allow());
    // 500 ms after the first call's dispatch: asked again.
    vm.advance_clock(Duration::from_millis(300));
    let run = vm.request(keyed("k1", "/api/v1/request"));
    assert!(run.call().is_some());
    assert_eq!(respond_200(run, &allow()).forwarded().map(|_| ()), Some(()));
    still_works(&mut vm);
}

#[test]
fn the_deny_cache_caps_deny_for_ms_and_ignores_corrupt_buckets() {
    let mut vm = vm(&config(""));
    respond_200(vm.request(keyed("k1", "/a")), &cacheable_deny(60_000));
    vm.advance_clock(Duration::from_millis(999));
    let run = vm.request(keyed("k1", "/a"));
    assert!(run.call().is_none());
    run.finish();
    vm.advance_clock(Duration::from_millis(1));
    let context = vm.start(keyed("k1", "/a"));
    assert!(vm.tick(), "capped at 1 s: asked again");
    let calls = vm.pending_calls();
    let batch = format!(r#"{{"responses":[{}]}}"#, cacheable_deny(60_000));
    vm.answer_call(
        calls[0].token,
        Some(&[(":status", "200")]),
        batch.as_bytes(),
    );
    assert_eq!(vm.finish(context).local().map(|r| r.status), Some(429));
    // Garbage in every bucket: requests are asked about, nothing traps.
    for key in vm.shared_data_keys() {
        if key != rate_limit_filter::deny_cache::SALT_KEY {
            vm.set_shared_data(&key, b"\x01garbage");
        }
    }
    let run = vm.request(keyed("k1", "/a"));
    assert!(run.call().is_some());
    respond_200(run, &allow());
    still_works(&mut vm);
}

#[test]
fn rotating_api_keys_cannot_grow_the_shared_data() {
    use rate_limit_filter::deny_cache::{BUCKET_KEY_PREFIX, BUCKETS, SALT_KEY};
    let mut vm = vm(&config(""));
    for i in 0..3000 {
        let run = vm.request(keyed(&format!("fake-{i}"), "/api/v1/request"));
        respond_200(run, &cacheable_deny(1000));
    }
    let keys = vm.shared_data_keys();
    assert!(keys.len() <= BUCKETS + 1, "{} keys", keys.len());
    assert!(
        keys.len() > BUCKETS / 2,
        "spread over the buckets: {}",
        keys.len()
    );
    for key in &keys {
        let index = key.strip_prefix(BUCKET_KEY_PREFIX);
        assert!(
            key == SALT_KEY
                || index
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| i < BUCKETS),
            "unexpected key {key}"
        );
    }
    // No raw key in shared data.
    for key in &keys {
        let value = vm.shared_data(key);
        assert!(!value.windows(5).any(|w| w == b"fake-"), "{key}");
    }
    still_works(&mut vm);
}

// ---------------------------------------------------------------------------------------------
// Concurrency leases

/// An allow carrying a concurrency lease.
fn allow_with_lease(id: &str, ttl_ms: u64) -> String {
    let mut response: DecisionResponse = serde_json::from_str(&allow()).expect("allow");
    response.lease = Some(rl_wire::Lease {
        id: id.into(),
        ttl_ms,
    });
    serde_json::to_string(&response).expect("serialise")
}

/// Starts a request whose single call is answered with lease `id`; returns its context.
fn leased(vm: &mut FilterVm, id: &str, ttl_ms: u64) -> u32 {
    let before = vm.pending_calls().len();
    let ctx = vm.start(Request::get("/api/v1/request").from("203.0.113.9:1"));
    let calls = vm.pending_calls();
    assert_eq!(calls.len(), before + 1, "a call of its own");
    let call = calls.last().expect("decision call").clone();
    vm.answer_call(
        call.token,
        Some(&OK),
        allow_with_lease(id, ttl_ms).as_bytes(),
    );
    assert!(vm.decided(ctx));
    ctx
}

/// The lease calls pending, parsed, after checking they go from the root with the secret.
fn lease_calls(vm: &FilterVm) -> Vec<(u32, rl_wire::LeasesRequest)> {
    vm.pending_calls()
        .into_iter()
        .filter(|call| call.headers.get(":path") == Some(rl_wire::LEASES_PATH))
        .map(|call| {
            assert_eq!(
                call.context, ROOT_CONTEXT,
                "lease calls go out from the root"
            );
            assert_eq!(call.headers.get(":method"), Some("POST"));
            assert_eq!(call.headers.get(DECISION_SECRET_HEADER), Some("s3cret"));
            assert_eq!(call.cluster, CLUSTER);
            let body = serde_json::from_slice(&call.body).expect("lease call body");
            (call.token, body)
        })
        .collect()
}

const LEASE_ANSWER: &[u8] = br#"{"renewed":0,"released":1}"#;

#[test]
fn a_lease_is_released_when_the_response_completes_and_when_the_stream_resets() {
    let mut vm = vm(&config(r#""decision_secret":"s3cret""#));
    let completed = leased(&mut vm, "lease-done", 30_000);
    let reset = leased(&mut vm, "lease-reset", 30_000);
    assert!(
        vm.tick_period_ms() > 0,
        "the tick runs while leases are held"
    );
    assert!(lease_calls(&vm).is_empty(), "nothing to release yet");

    // The response completes: on the next tick, one call releases its lease.
    assert!(
        forwarded(&vm.finish(completed))
            .get("x-ratelimit-limit")
            .is_some()
    );
    assert!(vm.tick());
    let calls = lease_calls(&vm);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].1.release, ["lease-done"]);
    assert!(calls[0].1.renew.is_empty());
    vm.answer_call(calls[0].0, Some(&OK), LEASE_ANSWER);

    // The client goes away before the response: released all the same.
    vm.cancel(reset);
    assert!(vm.tick());
    let calls = lease_calls(&vm);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].1.release, ["lease-reset"]);
    vm.answer_call(calls[0].0, Some(&OK), LEASE_ANSWER);
    // Nothing held: the tick stops.
    assert_eq!(vm.tick_period_ms(), 0, "no lease, no tick");
    still_works(&mut vm);
}

#[test]
fn a_lease_in_flight_is_renewed_on_the_tick_and_a_failed_release_is_retried() {
    let mut vm = vm(&config(r#""decision_secret":"s3cret""#));
    let ctx = leased(&mut vm, "lease-slow", 3_000);
    // The first tick schedules the renewal a third of the lease later (host time).
    assert!(vm.tick());
    assert!(lease_calls(&vm).is_empty());
    vm.advance_clock(Duration::from_millis(999));
    assert!(vm.tick());
    assert!(lease_calls(&vm).is_empty(), "not due yet");
    vm.advance_clock(Duration::from_millis(1));
    assert!(vm.tick());
    let calls = lease_calls(&vm);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].1.renew, ["lease-slow"]);
    assert!(calls[0].1.release.is_empty());
    vm.answer_call(calls[0].0, Some(&OK), br#"{"renewed":1,"released":0}"#);

    // The release fails (the control plane answers 503): it goes again on a later tick.
    assert!(vm.decided(ctx));
    vm.finish(ctx);
    assert!(vm.tick());
    let calls = lease_calls(&vm);
    assert_eq!(calls[0].1.release, ["lease-slow"]);
    vm.answer_call(
        calls[0].0,
        Some(&[(":status", "503"), ("content-type", "application/json")]),
        b"{}",
    );
    assert!(vm.tick_period_ms() > 0, "a tick to try again");
    assert!(vm.tick());
    let calls = lease_calls(&vm);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].1.release, ["lease-slow"]);
    // A reset of the lease call itself counts as a failure too; the VM survives all of it.
    vm.answer_call(calls[0].0, None, b"");
    still_works(&mut vm);
}

// ---------------------------------------------------------------------------------------------
// Usage after the response: charges and releases

/// An allow carrying a usage handle.
fn allow_with_usage(handle: &str, max_charge: Option<u64>, statuses: &[u16]) -> String {
    let mut response: DecisionResponse = serde_json::from_str(&allow()).expect("allow");
    response.usage = Some(rl_wire::Usage {
        handle: handle.into(),
        max_charge,
        count_statuses: statuses.to_vec(),
    });
    serde_json::to_string(&response).expect("serialise")
}

/// Starts a request whose single call is answered with `answer`; returns its context.
fn admitted(vm: &mut FilterVm, answer: &str) -> u32 {
    let before = vm.pending_calls().len();
    let ctx = vm.start(Request::get("/api/v1/chat").from("203.0.113.9:1"));
    let calls = vm.pending_calls();
    assert_eq!(calls.len(), before + 1, "a call of its own");
    let call = calls.last().expect("decision call").clone();
    vm.answer_call(call.token, Some(&OK), answer.as_bytes());
    assert!(vm.decided(ctx));
    ctx
}

/// The usage calls pending, parsed, after checking they go from the root with the secret.
fn usage_calls(vm: &FilterVm) -> Vec<(u32, Vec<rl_wire::UsageItem>)> {
    vm.pending_calls()
        .into_iter()
        .filter(|call| call.headers.get(":path") == Some(rl_wire::USAGE_PATH))
        .map(|call| {
            assert_eq!(
                call.context, ROOT_CONTEXT,
                "usage calls go out from the root"
            );
            assert_eq!(call.headers.get(":method"), Some("POST"));
            assert_eq!(call.headers.get(DECISION_SECRET_HEADER), Some("s3cret"));
            assert_eq!(call.cluster, CLUSTER);
            let body: rl_wire::UsageRequest =
                serde_json::from_slice(&call.body).expect("usage call body");
            (call.token, body.items)
        })
        .collect()
}

fn item(handle: &str, charge: u64, release: bool) -> rl_wire::UsageItem {
    rl_wire::UsageItem {
        handle: handle.into(),
        charge,
        release,
    }
}

const USAGE_ANSWER: &[u8] = br#"{"charged":1,"released":0}"#;

#[test]
fn a_charge_in_the_headers_or_the_trailers_is_hidden_and_reported_cut_to_max_charge() {
    let mut vm = vm(&config(r#""decision_secret":"s3cret""#));
    // In the headers.
    let ctx = admitted(&mut vm, &allow_with_usage("h-headers", Some(1000), &[]));
    let (outcome, _) = vm.finish_response(
        ctx,
        &[(":status", "200"), ("x-ratelimit-charge", "1532")],
        None,
    );
    let headers = forwarded(&outcome);
    assert_eq!(
        headers.get("x-ratelimit-charge"),
        None,
        "the charge is ours"
    );
    assert!(headers.get("x-ratelimit-limit").is_some());
    assert!(vm.tick_period_ms() > 0, "the tick sends the report");
    assert!(vm.tick());
    let calls = usage_calls(&vm);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].1, [item("h-headers", 1000, false)]);
    vm.answer_call(calls[0].0, Some(&OK), USAGE_ANSWER);

    // In the trailers (a streamed answer), with a configured name; the trailer replaces the
    // headers' value.
    let mut vm = vm_with(r#""decision_secret":"s3cret","charge_header":"X-Tokens""#);
    let ctx = admitted(&mut vm, &allow_with_usage("h-trailers", Some(5000), &[]));
    let (outcome, trailers) = vm.finish_response(
        ctx,
        &[(":status", "200"), ("x-tokens", "3")],
        Some(&[("x-tokens", "2048"), ("grpc-status", "0")]),
    );
    assert_eq!(forwarded(&outcome).get("x-tokens"), None);
    let trailers = trailers.expect("trailers reach the client");
    assert_eq!(trailers.get("x-tokens"), None, "the charge is ours");
    assert_eq!(
        trailers.get("grpc-status"),
        Some("0"),
        "other trailers stay"
    );
    assert!(vm.tick());
    let calls = usage_calls(&vm);
    assert_eq!(calls[0].1, [item("h-trailers", 2048, false)]);
    vm.answer_call(calls[0].0, Some(&OK), USAGE_ANSWER);
    assert_eq!(vm.tick_period_ms(), 0, "nothing left: the tick stops");
    assert_metrics(&vm, &[("allowed", 1)]);
    still_works(&mut vm);
}

fn vm_with(extra: &str) -> FilterVm {
    vm(&config(extra))
}

#[test]
fn an_invalid_charge_is_counted_and_removed_and_a_charge_without_a_handle_is_only_removed() {
    let mut vm = vm(&config(r#""decision_secret":"s3cret""#));
    let ctx = admitted(&mut vm, &allow_with_usage("h", Some(10), &[]));
    let (outcome, _) = vm.finish_response(
        ctx,
        &[(":status", "200"), ("x-ratelimit-charge", "-7")],
        None,
    );
    assert_eq!(forwarded(&outcome).get("x-ratelimit-charge"), None);
    assert_eq!(metric(&vm, "charges_invalid"), 1);
    // A request whose rule takes no charges: removed all the same, nothing reported.
    let ctx = admitted(&mut vm, &allow());
    let (outcome, _) = vm.finish_response(
        ctx,
        &[(":status", "200"), ("x-ratelimit-charge", "99")],
        None,
    );
    assert_eq!(forwarded(&outcome).get("x-ratelimit-charge"), None);
    vm.tick();
    assert!(usage_calls(&vm).is_empty());
    assert_metrics(&vm, &[("allowed", 2), ("charges_invalid", 1)]);
    still_works(&mut vm);
}

#[test]
fn a_status_the_rule_does_not_count_or_a_reset_releases_the_unit() {
    let mut vm = vm(&config(r#""decision_secret":"s3cret""#));
    let success = admitted(&mut vm, &allow_with_usage("ok", None, &[401, 403]));
    let failure = admitted(&mut vm, &allow_with_usage("fail", None, &[401, 403]));
    let reset = admitted(&mut vm, &allow_with_usage("reset", None, &[401, 403]));
    vm.finish_response(success, &[(":status", "200")], None);
    vm.finish_response(failure, &[(":status", "401")], None);
    vm.cancel(reset);
    assert!(vm.tick());
    let calls = usage_calls(&vm);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].1, [item("ok", 0, true), item("reset", 0, true)]);
    vm.answer_call(calls[0].0, Some(&OK), USAGE_ANSWER);
    still_works(&mut vm);
}

#[test]
fn an_undeliverable_report_is_retried_then_dropped_counted_and_logged() {
    let mut vm = vm(&config(r#""decision_secret":"s3cret""#));
    let ctx = admitted(&mut vm, &allow_with_usage("h", Some(10), &[]));
    vm.finish_response(
        ctx,
        &[(":status", "200"), ("x-ratelimit-charge", "4")],
        None,
    );
    vm.take_logs();
    for attempt in 0..3 {
        assert!(vm.tick(), "attempt {attempt}");
        let calls = usage_calls(&vm);
        assert_eq!(calls.len(), 1, "attempt {attempt}: {calls:?}");
        if attempt == 1 {
            vm.answer_call(calls[0].0, None, b"");
        } else {
            vm.answer_call(
                calls[0].0,
                Some(&[(":status", "503"), ("content-type", "application/json")]),
                b"{}",
            );
        }
    }
    assert_eq!(metric(&vm, "usage_dropped"), 1);
    assert!(
        vm.logs()
            .iter()
            .any(|l| l.message.contains("could not be delivered")),
        "{:?}",
        vm.logs()
    );
    vm.tick();
    assert!(usage_calls(&vm).is_empty(), "dropped for good");
    still_works(&mut vm);
}
