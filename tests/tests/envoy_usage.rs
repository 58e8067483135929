//! Usage after the response through a real Envoy with the compiled filter, the control plane
//! and Redis: an upstream's charge (`x-ratelimit-charge`) is added to the request's windows
//! after the response, cut to the rule's `max_charge`, never reaches the client and refuses
//! the next request; a failed-login rule (`count_statuses: [401, 403]`) lets successful logins
//! pass however many, refuses the sixth of five concurrent failed ones, and gives back the
//! unit of a login whose client reset it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rl_tests::admin::Admin;
use rl_tests::fixtures::{Config, Rule, Tier};
use rl_tests::{Stack, StackBuilder, client_from, control_plane_bin, get, get_in_flight};
use tokio::net::TcpStream;

const ADMIN_KEY: &str = "usage-admin-key-0123456789";
const LOGIN: &str = "/api/v1/login";
const LOGIN_POLICY: &str = "free-/api/v1/login-900s";

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn stack() -> Stack {
    let config = Config::new().tier(
        Tier::new("free", 1000)
            .window(60)
            .rule("/api/v1/charged", Rule::new(&[(100, 60)]).max_charge(500))
            .rule(LOGIN, Rule::new(&[(5, 900)]).count_statuses(&[401, 403])),
    );
    StackBuilder::new(control_plane_bin!(), &config.yaml())
        .with_redis()
        .control_plane_env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .start()
}

/// Units the window `policy` of `identifier` holds now (status endpoint, nothing recorded).
async fn units_of(stack: &Stack, identifier: &str, policy: &str) -> u64 {
    Admin::new(ADMIN_KEY)
        .window_count(&stack.control_plane, identifier, policy)
        .await
}

/// Waits (at most `within`) until `policy` of `identifier` holds `want` units.
async fn wait_units(stack: &Stack, identifier: &str, policy: &str, want: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = units_of(stack, identifier, policy).await;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{identifier} {policy}: {now} units, expected {want} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A metric's value in the control plane's Prometheus text (0 when absent).
async fn metric(stack: &Stack, series: &str) -> u64 {
    let text = reqwest::get(stack.control_plane.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_charge_is_hidden_from_the_client_and_refuses_the_next_request() {
    let stack = stack();
    let client = client_from(ip(61));
    let identity = "ip:127.0.0.61";
    let policy = "free-/api/v1/charged-60s";

    let first = get(&client, &stack.url("/api/v1/charged?units=60"), &[]).await;
    assert_eq!(first.status, 200, "{first:#?}");
    assert_eq!(
        first.header("x-ratelimit-charge"),
        None,
        "the charge is ours"
    );
    // The headers describe the admission (1 unit), before the charge.
    assert_eq!(first.num("x-ratelimit-remaining"), 99);
    wait_units(&stack, identity, policy, 61, Duration::from_secs(5)).await;
    // The tier's budget took the charge too.
    assert_eq!(units_of(&stack, identity, "free-60s").await, 61);

    // A charge above max_charge is cut to it, and may go over the limit.
    let second = get(&client, &stack.url("/api/v1/charged?units=100000"), &[]).await;
    assert_eq!(second.status, 200, "{second:#?}");
    assert_eq!(second.header("x-ratelimit-charge"), None);
    wait_units(&stack, identity, policy, 562, Duration::from_secs(5)).await;
    assert_eq!(
        metric(&stack, "rate_limit_units_charged_total{tier=\"free\"}").await,
        560
    );

    // Over the limit: the next request is refused until enough units leave.
    let refused = get(&client, &stack.url("/api/v1/charged?units=1"), &[]).await;
    assert_eq!(refused.status, 429, "{refused:#?}");
    assert_eq!(refused.num("x-ratelimit-remaining"), 0);
    assert!(refused.num("retry-after") >= 1);
    // Another client is not concerned.
    let other = get(
        &client_from(ip(62)),
        &stack.url("/api/v1/charged?units=1"),
        &[],
    )
    .await;
    assert_eq!(other.status, 200, "{other:#?}");
}

/// A login over a connection of its own, waiting `ms` upstream, left in flight: dropping the
/// stream resets it.
async fn login_in_flight(envoy: SocketAddr, source: IpAddr, ms: u64) -> TcpStream {
    get_in_flight(
        envoy,
        source,
        &format!("{LOGIN}?ms={ms}"),
        &["x-password: guess"],
    )
    .await
}

async fn login(client: &reqwest::Client, stack: &Stack, password: &str, ms: u64) -> u16 {
    get(
        client,
        &stack.url(&format!("{LOGIN}?ms={ms}")),
        &[("x-password", password)],
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_failed_logins_count_and_a_reset_gives_its_unit_back() {
    let stack = stack();
    let client = client_from(ip(71));
    let identity = "ip:127.0.0.71";

    // Successful logins, more than the limit: each gives its unit back after its response.
    for i in 0..8 {
        assert_eq!(
            login(&client, &stack, "demo-password", 0).await,
            200,
            "login {i}"
        );
        wait_units(&stack, identity, LOGIN_POLICY, 0, Duration::from_secs(5)).await;
    }
    assert_eq!(
        metric(&stack, "rate_limit_units_released_total{tier=\"free\"}").await,
        8
    );

    // Five failed logins at once: all reach the upstream (401) and keep their unit.
    let url = stack.url(&format!("{LOGIN}?ms=200"));
    let attempts: Vec<_> = (0..5)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { get(&client, &url, &[("x-password", "guess")]).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.expect("login task"));
    }
    assert_eq!(statuses, [401; 5]);
    assert_eq!(units_of(&stack, identity, LOGIN_POLICY).await, 5);
    // The sixth is refused, and so is a right password now: the limit is reached.
    assert_eq!(login(&client, &stack, "guess", 0).await, 429);
    assert_eq!(login(&client, &stack, "demo-password", 0).await, 429);

    // Another client: five failed logins in flight hold the five units; the sixth is refused.
    let source = ip(72);
    let other = client_from(source);
    let envoy = stack.envoy.listener();
    let mut in_flight = Vec::new();
    for _ in 0..5 {
        in_flight.push(login_in_flight(envoy, source, 10_000).await);
    }
    wait_units(
        &stack,
        "ip:127.0.0.72",
        LOGIN_POLICY,
        5,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(login(&other, &stack, "guess", 0).await, 429);
    // One client gives up (reset): its unit comes back long before the others answer.
    let reset_at = Instant::now();
    drop(in_flight.pop());
    wait_units(
        &stack,
        "ip:127.0.0.72",
        LOGIN_POLICY,
        4,
        Duration::from_secs(5),
    )
    .await;
    assert!(reset_at.elapsed() < Duration::from_secs(5));
    assert_eq!(login(&other, &stack, "guess", 0).await, 401);
    assert_eq!(login(&other, &stack, "guess", 0).await, 429);
    drop(in_flight);
}
