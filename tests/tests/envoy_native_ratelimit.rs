//! Envoy's native rate-limit filter (`envoy/envoy.native-ratelimit.yaml`) against the real
//! control plane's gRPC service and Redis: the same limits, headers and body as the wasm
//! filter, identities from the descriptors, and `failure_mode_deny` when the control plane is
//! down.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rl_tests::envoy_native::NATIVE_CONFIG;
use rl_tests::fixtures::{Config, Tier};
use rl_tests::{
    ControlPlane, ControlPlaneBuilder, Envoy, NativeEnvoyBuilder, RedisServer, Reply, Upstream,
    client_from, control_plane_bin, free_port, get, repo_root,
};

const PREMIUM_KEY: &str = "partner-key-0001";

struct Native {
    _redis: RedisServer,
    cp: ControlPlane,
    _upstream: Upstream,
    envoy: Envoy,
}

fn start(config: &Config, failure_mode_deny: bool) -> Native {
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), &config.yaml())
        .redis(redis.url())
        .arg("--grpc-listen")
        .arg(&grpc.to_string())
        .start();
    let envoy = NativeEnvoyBuilder::new(grpc, upstream.addr())
        .failure_mode_deny(failure_mode_deny)
        .concurrency(1)
        .start();
    Native {
        _redis: redis,
        cp,
        _upstream: upstream,
        envoy,
    }
}

fn client(last: u8) -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

fn keyed(limit: u64) -> Config {
    Config::new()
        .tier(Tier::new("free", limit).window(60))
        .tier(Tier::new("premium", 1000).window(60))
        .api_key("partner", "premium", PREMIUM_KEY)
}

fn assert_denied(reply: &Reply, limit: u64) {
    assert_eq!(reply.status, 429, "{reply:#?}");
    assert_eq!(reply.num("x-ratelimit-limit"), limit, "{reply:#?}");
    assert_eq!(reply.num("x-ratelimit-remaining"), 0, "{reply:#?}");
    let retry_after = reply.num("retry-after");
    assert!((1..=60).contains(&retry_after), "{reply:#?}");
    let body = reply.json();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{reply:#?}");
    assert_eq!(body["error"]["details"]["limit"], limit);
    assert_eq!(body["error"]["details"]["retry_after_seconds"], retry_after);
}

#[test]
fn the_shipped_native_config_loads_in_envoy() {
    let (ok, log) = rl_tests::envoy::validate(&repo_root().join(NATIVE_CONFIG));
    assert!(ok, "{NATIVE_CONFIG} does not validate:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_101st_request_is_429_with_our_headers_and_body() {
    let native = start(
        &Config::new().tier(Tier::new("free", 100).window(60)),
        false,
    );
    let c = client(91);
    for i in 0..100u64 {
        let reply = get(&c, &native.envoy.url("/api/v1/request?q=1"), &[]).await;
        assert_eq!(reply.status, 200, "request {} {reply:#?}", i + 1);
        assert_eq!(reply.num("x-ratelimit-remaining"), 99 - i, "{reply:#?}");
        assert_eq!(reply.header("x-ratelimit-tier"), Some("free"));
        assert!(reply.header("ratelimit-policy").is_some(), "{reply:#?}");
    }
    let denied = get(&c, &native.envoy.url("/api/v1/request"), &[]).await;
    assert_denied(&denied, 100);
    assert_eq!(denied.header("x-ratelimit-tier"), Some("free"));
    assert!(denied.header("ratelimit").is_some(), "{denied:#?}");
    assert_eq!(
        denied.json()["error"]["details"]["endpoint"],
        "/api/v1/request"
    );
    // Another client is untouched.
    let other = get(&client(92), &native.envoy.url("/api/v1/request"), &[]).await;
    assert_eq!(other.status, 200, "{other:#?}");
    assert_eq!(other.num("x-ratelimit-remaining"), 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_premium_key_keeps_going_and_a_forged_key_falls_back_to_the_ip() {
    let native = start(&keyed(3), false);
    let c = client(93);
    let url = native.envoy.url("/api/v1/request");
    for _ in 0..3 {
        assert_eq!(get(&c, &url, &[]).await.status, 200);
    }
    assert_denied(&get(&c, &url, &[]).await, 3);
    let premium = get(&c, &url, &[("x-api-key", PREMIUM_KEY)]).await;
    assert_eq!(premium.status, 200, "{premium:#?}");
    assert_eq!(premium.header("x-ratelimit-tier"), Some("premium"));
    assert_eq!(premium.num("x-ratelimit-limit"), 1000);
    let forged = get(&c, &url, &[("x-api-key", "not-a-registered-key")]).await;
    assert_denied(&forged, 3);
    assert_eq!(forged.header("x-ratelimit-tier"), Some("free"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_rule_limits_its_endpoint_only() {
    let native = start(
        &Config::new().tier(
            Tier::new("free", 100)
                .window(60)
                .endpoint("/api/v1/search", 2),
        ),
        false,
    );
    let c = client(94);
    for _ in 0..2 {
        let reply = get(&c, &native.envoy.url("/api/v1/search"), &[]).await;
        assert_eq!(reply.status, 200, "{reply:#?}");
    }
    let denied = get(&c, &native.envoy.url("/api/v1/search"), &[]).await;
    assert_denied(&denied, 2);
    assert_eq!(
        denied.json()["error"]["details"]["endpoint"],
        "/api/v1/search"
    );
    let other = get(&c, &native.envoy.url("/api/v1/request"), &[]).await;
    assert_eq!(other.status, 200, "{other:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_down_follows_failure_mode_deny() {
    for (deny, want) in [(false, 200), (true, 503)] {
        let mut native = start(&keyed(100), deny);
        let url = native.envoy.url("/api/v1/request");
        assert_eq!(get(&client(95), &url, &[]).await.status, 200);
        native.cp.stop();
        let reply = get(&client(95), &url, &[]).await;
        assert_eq!(reply.status, want, "failure_mode_deny {deny}: {reply:#?}");
        assert_eq!(reply.header("x-ratelimit-limit"), None, "{reply:#?}");
    }
}
