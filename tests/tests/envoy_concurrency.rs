//! Concurrency limits (`max_concurrent`) through a real Envoy with the compiled filter, the
//! control plane and a real redis-server: N slow requests in flight, the N+1th refused with
//! 429 and `Retry-After: 1`, a slot freed when a client resets its request, and leases
//! released when responses complete.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use control_plane::store::keys::lease_key;
use rl_tests::fixtures::{Config, Tier};
use rl_tests::{StackBuilder, client_from, control_plane_bin, get, get_in_flight};
use tokio::net::TcpStream;

const MAX: u64 = 3;
/// Longer than the test takes, shorter than Envoy's route timeout (15 s).
const SLOW_MS: u64 = 12_000;

fn config() -> String {
    Config::new()
        .tier(Tier::new("free", 1000).max_concurrent(MAX))
        .yaml()
}

/// A `GET /api/v1/slow` from `source` over a connection of its own, left in flight: dropping
/// the stream resets the request.
async fn slow_request(envoy: SocketAddr, source: IpAddr) -> TcpStream {
    let path = format!("/api/v1/slow?ms={SLOW_MS}");
    get_in_flight(envoy, source, &path, &["Accept: */*"]).await
}

/// Leases held in Redis for `identity`.
fn held(conn: &mut redis::Connection, identity: &str) -> u64 {
    redis::cmd("ZCARD")
        .arg(lease_key(identity))
        .query(conn)
        .expect("ZCARD")
}

/// Waits (at most `within`) until `identity` holds `want` leases.
async fn wait_held(conn: &mut redis::Connection, identity: &str, want: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = held(conn, identity);
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{identity} holds {now} leases, expected {want} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_over_max_concurrent_gets_429_and_a_reset_frees_its_slot() {
    let mut stack = StackBuilder::new(control_plane_bin!(), &config())
        .with_redis()
        .start();
    let mut conn = stack.redis().connection();
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));
    let identity = "ip:127.0.0.7";
    let envoy = stack.envoy.listener();

    let mut in_flight = Vec::new();
    for _ in 0..MAX {
        in_flight.push(slow_request(envoy, source).await);
    }
    wait_held(&mut conn, identity, MAX, Duration::from_secs(10)).await;

    // The N+1th request of the same client is refused, whatever its path.
    let client = client_from(source);
    let denied = get(&client, &stack.url("/api/v1/request"), &[]).await;
    assert_eq!(denied.status, 429, "{denied:#?}");
    assert_eq!(denied.header("retry-after"), Some("1"));
    assert_eq!(denied.num("x-ratelimit-limit"), MAX);
    assert_eq!(denied.num("x-ratelimit-remaining"), 0);
    assert_eq!(denied.header("x-ratelimit-tier"), Some("free"));
    assert_eq!(
        denied.header("ratelimit-policy"),
        None,
        "no window to describe"
    );
    let body = denied.json();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["details"]["limit"], MAX);
    assert_eq!(body["error"]["details"]["window_size"], 0);
    assert_eq!(body["error"]["details"]["retry_after_seconds"], 1);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Concurrency limit")),
        "{body}"
    );
    // Another client has slots of its own.
    let other = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 8)));
    assert_eq!(
        get(&other, &stack.url("/api/v1/request"), &[]).await.status,
        200
    );
    // The refusal took no slot.
    assert_eq!(held(&mut conn, identity), MAX);

    // A client resets its slow request: its slot is released long before the others end.
    let reset_at = Instant::now();
    drop(in_flight.pop());
    wait_held(&mut conn, identity, MAX - 1, Duration::from_secs(5)).await;
    assert!(reset_at.elapsed() < Duration::from_millis(SLOW_MS / 2));
    let admitted = get(&client, &stack.url("/api/v1/request"), &[]).await;
    assert_eq!(admitted.status, 200, "{admitted:#?}");
    assert!(admitted.has_rate_limit_headers());
    // That request completed: its lease goes too, the two slow ones stay.
    wait_held(&mut conn, identity, MAX - 1, Duration::from_secs(5)).await;
    let third = slow_request(envoy, source).await;
    wait_held(&mut conn, identity, MAX, Duration::from_secs(10)).await;
    assert_eq!(
        get(&client, &stack.url("/api/v1/request"), &[])
            .await
            .status,
        429
    );
    drop(third);
    drop(in_flight);
    wait_held(&mut conn, identity, 0, Duration::from_secs(5)).await;
}
