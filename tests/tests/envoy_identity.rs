//! Who is counted, through Envoy: source addresses, API keys, forwarded headers.

use std::net::{IpAddr, Ipv4Addr};

use rl_tests::fixtures::free_and_premium;
use rl_tests::{StackBuilder, client_from, control_plane_bin, get};
use serde_json::json;

const SHARED_KEY: &str = "shared-key-0123456789";

/// `free` 5 and `premium` 8 per minute; one key, shared by several clients, on `premium`.
fn config() -> String {
    free_and_premium(5, 8, "shared", SHARED_KEY).yaml()
}

fn from(last: u8) -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

/// Statuses of `n` requests.
async fn statuses(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(client, url, headers).await.status);
    }
    out
}

fn passed(statuses: &[u16]) -> usize {
    statuses.iter().filter(|&&s| s == 200).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_sources_are_distinct_identities() {
    let stack = StackBuilder::new(control_plane_bin!(), &config()).start();
    let url = stack.url("/api/v1/request");
    for last in [11, 12, 13] {
        let got = statuses(&from(last), &url, &[], 6).await;
        assert_eq!(passed(&got), 5, "client 127.0.0.{last}: {got:?}");
        assert_eq!(got[5], 429);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_registered_key_is_one_budget_across_connections() {
    let stack = StackBuilder::new(control_plane_bin!(), &config()).start();
    let url = stack.url("/api/v1/request");
    let key = [("x-api-key", SHARED_KEY)];
    let (a, b) = (from(21), from(22));
    let first = get(&a, &url, &key).await;
    assert_eq!(first.header("x-ratelimit-tier"), Some("premium"));
    let mut total = usize::from(first.status == 200);
    for i in 0..10 {
        let client = if i % 2 == 0 { &b } else { &a };
        total += usize::from(get(client, &url, &key).await.status == 200);
    }
    assert_eq!(total, 8, "the premium budget is shared by both connections");
    // The clients' own IP budgets are untouched.
    assert_eq!(get(&a, &url, &[]).await.num("x-ratelimit-remaining"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_share_their_ip_budget() {
    let stack = StackBuilder::new(control_plane_bin!(), &config()).start();
    let url = stack.url("/api/v1/request");
    let client = from(31);
    let mut ok = 0;
    for i in 0..10 {
        let key = format!("made-up-key-{i}");
        let reply = get(&client, &url, &[("x-api-key", &key)]).await;
        if reply.status == 200 {
            assert_eq!(reply.header("x-ratelimit-tier"), Some("free"));
            ok += 1;
        }
    }
    assert_eq!(ok, 5, "ten invented keys do not buy ten budgets");
    assert_eq!(get(&client, &url, &[]).await.status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarded_headers_from_an_untrusted_peer_change_nothing() {
    let stack = StackBuilder::new(control_plane_bin!(), &config()).start();
    let url = stack.url("/api/v1/request");
    let client = from(41);
    let mut ok = 0;
    for i in 0..10 {
        let forged = format!("198.51.100.{i}");
        let headers = [
            ("x-forwarded-for", forged.as_str()),
            ("x-real-ip", forged.as_str()),
        ];
        ok += usize::from(get(&client, &url, &headers).await.status == 200);
    }
    assert_eq!(ok, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_forwards_the_client_address() {
    let stack = StackBuilder::new(control_plane_bin!(), &config())
        .plugin("trusted_proxies", json!(["127.0.0.51/32"]))
        .start();
    let url = stack.url("/api/v1/request");
    let proxy = from(51);
    // Two clients behind the proxy: each has its own budget.
    for client in ["203.0.113.7", "203.0.113.8"] {
        let got = statuses(&proxy, &url, &[("x-forwarded-for", client)], 6).await;
        assert_eq!(passed(&got), 5, "{client}: {got:?}");
    }
    // A client prepending a forged hop is still counted by the address the proxy saw.
    let spoofed = [("x-forwarded-for", "1.2.3.4, 203.0.113.7")];
    assert_eq!(get(&proxy, &url, &spoofed).await.status, 429);
    // Without XFF, X-Real-IP from the trusted proxy is used.
    let got = statuses(&proxy, &url, &[("x-real-ip", "203.0.113.9")], 6).await;
    assert_eq!(passed(&got), 5, "{got:?}");
    // The same headers from an untrusted peer are ignored: it is counted as itself.
    let direct = from(52);
    let got = statuses(&direct, &url, &[("x-forwarded-for", "203.0.113.10")], 6).await;
    assert_eq!(passed(&got), 5);
    assert_eq!(
        get(&direct, &url, &[("x-forwarded-for", "203.0.113.11")])
            .await
            .status,
        429
    );
}
