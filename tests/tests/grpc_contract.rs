//! The control plane's gRPC rate-limit service (Envoy's `RateLimitService/ShouldRateLimit`),
//! called with a tonic client against the real process and a real Redis: one call is one
//! request whatever its descriptors, edge cases get clear gRPC errors, the decision secret
//! applies, and the gRPC health service answers.

use std::net::SocketAddr;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use rl_tests::fixtures::{Config, Tier};
use rl_tests::{ControlPlane, ControlPlaneBuilder, RedisServer, control_plane_bin, free_port};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SECRET: &str = "grpc-decision-secret-0123456789";
const PREVIOUS: &str = "grpc-previous-secret-0123456789";

struct Service {
    _redis: RedisServer,
    _cp: ControlPlane,
    grpc: SocketAddr,
}

/// A control plane on Redis with its gRPC listener; `env` adds settings.
fn start(config: &Config, env: &[(&str, &str)]) -> Service {
    let redis = RedisServer::start();
    let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut builder = ControlPlaneBuilder::new(control_plane_bin!(), &config.yaml())
        .redis(redis.url())
        .arg("--grpc-listen")
        .arg(&grpc.to_string());
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    Service {
        _cp: builder.start(),
        _redis: redis,
        grpc,
    }
}

fn limited(limit: u64) -> Config {
    Config::new()
        .tier(Tier::new("free", limit).window(60))
        .tier(Tier::new("premium", 1000).window(60))
        .api_key("partner", "premium", "partner-key-0001")
}

async fn client(addr: SocketAddr) -> RateLimitServiceClient<Channel> {
    RateLimitServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap_or_else(|e| panic!("connect to the gRPC listener {addr}: {e}"))
}

fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

fn call(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: "rate_limit".into(),
        descriptors,
        hits_addend: 0,
    }
}

fn from_ip(ip: &str) -> RateLimitRequest {
    call(vec![
        descriptor(&[("remote_address", ip)]),
        descriptor(&[("remote_address", ip), (":path", "/api/v1/request")]),
    ])
}

async fn ask(
    client: &mut RateLimitServiceClient<Channel>,
    request: RateLimitRequest,
) -> RateLimitResponse {
    client
        .should_rate_limit(request)
        .await
        .unwrap_or_else(|status| panic!("ShouldRateLimit failed: {status:?}"))
        .into_inner()
}

fn header<'a>(r: &'a RateLimitResponse, name: &str) -> Option<&'a str> {
    r.response_headers_to_add
        .iter()
        .find(|h| h.key == name)
        .map(|h| h.value.as_str())
}

#[tokio::test]
async fn one_call_is_one_request_whatever_its_descriptors() {
    let svc = start(&limited(3), &[]);
    let mut c = client(svc.grpc).await;
    // Two descriptors, the same one listed twice: each call still counts once.
    let d = descriptor(&[("remote_address", "198.51.100.10")]);
    for remaining in [2, 1, 0] {
        let r = ask(&mut c, call(vec![d.clone(), d.clone(), d.clone()])).await;
        assert_eq!(r.overall_code, Code::Ok as i32);
        assert_eq!(r.statuses.len(), 3);
        assert!(r.statuses.iter().all(|s| s.limit_remaining == remaining));
        assert_eq!(
            header(&r, "x-ratelimit-remaining"),
            Some(remaining.to_string().as_str())
        );
        assert_eq!(header(&r, "x-ratelimit-limit"), Some("3"));
        assert_eq!(header(&r, "x-ratelimit-tier"), Some("free"));
        assert!(header(&r, "ratelimit-policy").is_some_and(|v| v.contains("q=3;w=60")));
    }
    let denied = ask(&mut c, from_ip("198.51.100.10")).await;
    assert_eq!(denied.overall_code, Code::OverLimit as i32);
    assert_eq!(denied.statuses.len(), 2);
    let retry: u64 = header(&denied, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    let body: serde_json::Value = serde_json::from_slice(&denied.raw_body).unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["details"]["limit"], 3);
    // A registered key has its own tier, from the same throttled address.
    let mut keyed = from_ip("198.51.100.10");
    keyed
        .descriptors
        .push(descriptor(&[("x-api-key", "partner-key-0001")]));
    let r = ask(&mut c, keyed).await;
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(header(&r, "x-ratelimit-tier"), Some("premium"));
}

#[tokio::test]
async fn edge_cases_get_clear_answers() {
    let svc = start(&limited(5), &[]);
    let mut c = client(svc.grpc).await;

    let err = c.should_rate_limit(call(Vec::new())).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("no descriptors"),
        "{}",
        err.message()
    );

    let mut wrong = from_ip("198.51.100.20");
    wrong.domain = "somebody_else".into();
    let err = c.should_rate_limit(wrong).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("rate_limit"), "{}", err.message());

    // Unknown keys are ignored: the request is decided on what is known.
    let mut unknown = from_ip("198.51.100.21");
    unknown.descriptors.push(descriptor(&[
        ("generic_key", "x"),
        ("destination_cluster", "api"),
    ]));
    let r = ask(&mut c, unknown).await;
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(header(&r, "x-ratelimit-remaining"), Some("4"));

    // A cost above the limit is refused without counting.
    let mut huge = from_ip("198.51.100.21");
    huge.hits_addend = u32::MAX;
    let r = ask(&mut c, huge).await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    let mut huge = from_ip("198.51.100.21");
    huge.descriptors[0].hits_addend = Some(UInt64Value { value: u64::MAX });
    assert_eq!(ask(&mut c, huge).await.overall_code, Code::OverLimit as i32);
    let r = ask(&mut c, from_ip("198.51.100.21")).await;
    assert_eq!(
        header(&r, "x-ratelimit-remaining"),
        Some("3"),
        "the costly calls counted"
    );

    // A call of several hits takes that many units; one that does not fit what is left is
    // refused without counting.
    let mut within = from_ip("198.51.100.21");
    within.hits_addend = 2;
    let r = ask(&mut c, within).await;
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(header(&r, "x-ratelimit-remaining"), Some("1"));
    let mut over = from_ip("198.51.100.21");
    over.descriptors[0].hits_addend = Some(UInt64Value { value: 2 });
    assert_eq!(ask(&mut c, over).await.overall_code, Code::OverLimit as i32);

    // Two values for the client address describe two requests.
    let err = c
        .should_rate_limit(call(vec![
            descriptor(&[("remote_address", "198.51.100.22")]),
            descriptor(&[("remote_address", "198.51.100.23")]),
        ]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn the_decision_secret_is_required_in_the_metadata() {
    let svc = start(
        &limited(5),
        &[
            ("RATE_LIMIT_DECISION_SECRET", SECRET),
            ("RATE_LIMIT_DECISION_SECRET_PREVIOUS", PREVIOUS),
        ],
    );
    let mut c = client(svc.grpc).await;
    let err = c
        .should_rate_limit(from_ip("198.51.100.30"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    for (secret, ok) in [("wrong", false), (SECRET, true), (PREVIOUS, true)] {
        let mut request = tonic::Request::new(from_ip("198.51.100.30"));
        request
            .metadata_mut()
            .insert("x-rate-limit-decision-secret", secret.parse().unwrap());
        let got = c.should_rate_limit(request).await;
        assert_eq!(got.is_ok(), ok, "secret {secret}: {got:?}");
    }
}

#[tokio::test]
async fn the_health_service_answers() {
    let svc = start(&limited(5), &[]);
    let channel = Channel::from_shared(format!("http://{}", svc.grpc))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect health");
    let mut health = HealthClient::new(channel);
    for service in ["", "envoy.service.ratelimit.v3.RateLimitService"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            r.status,
            ServingStatus::Serving as i32,
            "service {service:?}"
        );
    }
}

#[tokio::test]
async fn a_store_failure_follows_fail_open() {
    for (fail_open, expect_ok) in [(true, true), (false, false)] {
        let mut svc = start(&limited(5).fail_open(fail_open), &[]);
        svc._redis.stop();
        let mut c = client(svc.grpc).await;
        let got = c.should_rate_limit(from_ip("198.51.100.40")).await;
        match (expect_ok, got) {
            (true, Ok(r)) => {
                let r = r.into_inner();
                assert_eq!(r.overall_code, Code::Ok as i32);
                assert!(r.response_headers_to_add.is_empty());
            }
            (false, Err(status)) => assert_eq!(status.code(), tonic::Code::Unavailable),
            (_, other) => panic!("fail_open {fail_open}: {other:?}"),
        }
    }
}

/// Envoy resets the rate-limit calls of every client that goes away (a load balancer's
/// connections dropping at once, the end of a load test): such a burst, arriving while the
/// service is busy, must not close the connection under the calls still waiting for their
/// answer (they would fail open, or be refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_cancelled_calls_leaves_the_others_answered() {
    let svc = start(&limited(1_000_000), &[]);
    let c = client(svc.grpc).await;
    ask(&mut c.clone(), from_ip("198.51.100.1")).await;
    // Busy: the calls and their resets queue up before the service reads any of them.
    svc._cp.suspend();
    let mut kept = Vec::new();
    let mut cancelled = Vec::new();
    for i in 0..200 {
        let mut c = c.clone();
        let task = tokio::spawn(async move {
            c.should_rate_limit(from_ip(&format!("198.51.100.{}", i % 100)))
                .await
        });
        if i % 2 == 0 {
            kept.push(task);
        } else {
            cancelled.push(task);
        }
    }
    // Wait until every call's HEADERS are out: the service holds 200 streams' worth.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for task in &cancelled {
        task.abort();
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    svc._cp.resume();
    for task in kept {
        let answer = task.await.expect("task");
        assert!(answer.is_ok(), "{answer:?}\n{}", svc._cp.output.tail(10));
    }
}
