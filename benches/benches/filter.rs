//! The filter's own per-request cost: the release `.wasm` on the in-process wasmtime host
//! (`rl_tests::wasm_host`), one allowed request at a time, no network.
//!
//! - `filter/allowed_request`: what Envoy does for an admitted request: request headers
//!   (evidence, decision body, `proxy_http_call`), the decision answer (JSON parsed, headers
//!   prepared, request resumed), response headers (four `X-RateLimit-*` set), then done/log/
//!   delete.
//! - `filter/host_baseline`: the same seven guest entries with callbacks that do no work
//!   (`FilterVm::bare_stream`): the wasm call transitions, the SDK's context dispatch and this
//!   host's bookkeeping. `allowed_request - host_baseline` is what the filter's logic and its
//!   host calls cost; the baseline is measured in the same run so the difference means
//!   something on a noisy 2-core machine.
//! - `filter/batched_request`: the path under load: [`BATCH`] requests queue behind the
//!   first single calls and leave in one batch call, whose answer (realistic allow answers:
//!   two windows, their policies, as the control plane sends them) is split, applied and the
//!   streams finished; per request (throughput = requests), the singles included as they
//!   come at load.
//! - `filter/new_vm`: instantiating and configuring one VM (Envoy does it per worker and on
//!   every plugin-config change), for scale.
//!
//! Wasmtime (Cranelift) is not V8, so absolute figures are not Envoy's; the ratio and the
//! order of magnitude are the point. Smoke run: `cargo bench -p rl-benches --bench filter -- --test`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rl_tests::wasm_host::{FilterVm, Outcome, Request};

const CONFIG: &str = r#"{"cluster":"rate_limit_control_plane","timeout_ms":250,
    "trusted_proxies":["10.0.0.0/8"]}"#;

/// A typical allow answer (~150 bytes, as the control plane sends it).
const ALLOW: &str = r#"{"verdict":"allow","tier":"premium","counter":{"limit":1000,"remaining":998,"reset":1700000060,"window":60,"endpoint":"/api/v1/request"}}"#;

/// A request as a browser or SDK sends it through one trusted proxy.
fn request() -> Request {
    Request::get("/api/v1/request?page=2")
        .from("10.0.0.1:41234")
        .header("x-forwarded-for", "198.51.100.7, 10.0.0.2")
        .header("x-api-key", "demo-premium-key-0001")
        .header("accept", "application/json")
        .header("accept-encoding", "gzip, deflate, br")
        .header("x-request-id", "4b1c5a9e-6f0d-4f3e-9d0b-2a7e1c3d5f60")
}

fn allowed_request(vm: &mut FilterVm, request: Request) -> Outcome {
    let run = vm.request(request);
    run.respond(
        &[
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-length", "140"),
        ],
        ALLOW,
    )
}

/// Requests per batch round in `batched_request` (about what 100 connections over two
/// workers queue per round trip).
const BATCH: usize = 32;

/// An allow answer as the load benchmark's control plane sends it (a tier budget and an
/// endpoint rule, both named in `policies`).
fn allow_with_policies(remaining: usize) -> String {
    format!(
        r#"{{"verdict":"allow","tier":"b","counter":{{"limit":31,"remaining":{remaining},"reset":1764590460,"window":60,"endpoint":"/api/v1/request","policy":"b-api-v1-request-60s","reset_after":60}},"policies":[{{"name":"b-60s","limit":32,"window":60}},{{"name":"b-api-v1-request-60s","limit":31,"window":60}}]}}"#
    )
}

/// One round of the path under load: every request queued or single, the calls answered,
/// every stream finished. Returns how many were forwarded with our headers.
fn batched_round(vm: &mut FilterVm, requests: Vec<Request>) -> usize {
    let contexts: Vec<u32> = requests.into_iter().map(|r| vm.start(r)).collect();
    let ok = [(":status", "200"), ("content-type", "application/json")];
    for call in vm.pending_calls() {
        vm.answer_call(call.token, Some(&ok), allow_with_policies(20).as_bytes());
    }
    while vm.tick() && !vm.pending_calls().is_empty() {
        for call in vm.pending_calls() {
            let members = call.body.windows(5).filter(|w| w == b"\"ip\":").count();
            let answers: Vec<String> = (0..members).map(allow_with_policies).collect();
            let body = format!(r#"{{"responses":[{}]}}"#, answers.join(","));
            vm.answer_call(call.token, Some(&ok), body.as_bytes());
        }
    }
    contexts
        .into_iter()
        .map(|c| vm.finish(c))
        .filter(|o| {
            o.forwarded()
                .is_some_and(|h| h.get("x-ratelimit-limit").is_some())
        })
        .count()
}

fn batch_requests() -> Vec<Request> {
    (0..BATCH)
        .map(|i| request().set_header("x-api-key", Some(format!("key-{i:04}").as_bytes())))
        .collect()
}

fn new_vm() -> FilterVm {
    FilterVm::new(CONFIG).unwrap_or_else(|rejected| panic!("bench config rejected: {rejected:?}"))
}

fn bench_filter(c: &mut Criterion) {
    let mut vm = new_vm();
    // Measure only what is correct: one checked request first.
    let outcome = allowed_request(&mut vm, request());
    let headers = outcome
        .forwarded()
        .unwrap_or_else(|| panic!("the bench request was not forwarded: {outcome:?}"));
    assert_eq!(headers.get("x-ratelimit-remaining"), Some("998"));
    vm.assert_healthy();

    let mut group = c.benchmark_group("filter");
    group.throughput(Throughput::Elements(1));
    // Building the test request (header map, allocations) is the harness's work, not
    // Envoy's: it is done outside the timed part.
    group.bench_function("allowed_request", |b| {
        b.iter_batched(
            request,
            |request| black_box(allowed_request(&mut vm, request)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("host_baseline", |b| b.iter(|| vm.bare_stream()));
    assert_eq!(batched_round(&mut vm, batch_requests()), BATCH);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batched_request", |b| {
        b.iter_batched(
            batch_requests,
            |requests| black_box(batched_round(&mut vm, requests)),
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("new_vm", |b| b.iter(|| black_box(new_vm())));
    group.finish();

    vm.assert_healthy();
    assert!(
        vm.logs().is_empty(),
        "allowed requests logged: {:?}",
        vm.logs()
    );
}

criterion_group!(benches, bench_filter);
criterion_main!(benches);
