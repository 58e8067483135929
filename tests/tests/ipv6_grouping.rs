//! IPv6 clients grouped by network, through a real Envoy: a client that owns a /64 cannot mint
//! budgets by rotating its source address.
//!
//! Envoy's test listener is on 127.0.0.1, so the IPv6 addresses arrive the way they do behind
//! a load balancer: from a trusted proxy (a 127.0.0.x source in the filter's
//! `trusted_proxies`) in `X-Forwarded-For`. The filter forwards the address as it is; the
//! grouping is the control plane's.

use std::net::{IpAddr, Ipv4Addr};

use rl_tests::fixtures::{Config, Tier};
use rl_tests::{Reply, Stack, StackBuilder, client_from, control_plane_bin, get};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "ipv6-test-admin-key-0123456789";
const BUDGET: u64 = 5;
const PROXY: u8 = 71;

fn stack(config: &Config, redis: bool) -> Stack {
    let mut builder = StackBuilder::new(control_plane_bin!(), &config.yaml())
        .plugin("trusted_proxies", json!([format!("127.0.0.{PROXY}/32")]))
        .control_plane_env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY);
    if redis {
        builder = builder.with_redis();
    }
    builder.start()
}

fn budget_only() -> Config {
    Config::new().tier(Tier::new("free", BUDGET).window(60))
}

/// One request on behalf of the client at `address`, forwarded by the trusted proxy.
async fn request_from(stack: &Stack, address: &str) -> Reply {
    let proxy = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, PROXY)));
    get(
        &proxy,
        &stack.url("/api/v1/request"),
        &[("x-forwarded-for", address)],
    )
    .await
}

async fn status(stack: &Stack, identifier: &str) -> (u16, Value) {
    let url = stack
        .control_plane
        .url(&format!("/api/v1/rate-limit/status/{identifier}"));
    let response = reqwest::Client::new()
        .get(&url)
        .header("x-api-key", ADMIN_KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let code = response.status().as_u16();
    (code, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_address_of_one_slash_64_shares_one_budget() {
    let stack = stack(&budget_only(), true);
    // Five different source addresses of 2001:db8:1:2::/64, then a sixth.
    let rotating = [
        "2001:db8:1:2::1",
        "2001:db8:1:2::2",
        "2001:db8:1:2:aaaa:bbbb:cccc:dddd",
        "2001:db8:1:2:1234::99",
        "2001:DB8:1:2::5",
    ];
    for (i, address) in rotating.iter().enumerate() {
        let reply = request_from(&stack, address).await;
        assert_eq!(reply.status, 200, "{address}: {reply:?}");
        assert_eq!(
            reply.num("x-ratelimit-remaining"),
            BUDGET - 1 - i as u64,
            "{address} spends the /64's budget"
        );
    }
    let sixth = request_from(&stack, "2001:db8:1:2:ffff:ffff:ffff:ffff").await;
    assert_eq!(
        sixth.status, 429,
        "a new address of the same /64: {sixth:?}"
    );

    // The next /64 is another client, with a budget of its own.
    let neighbour = request_from(&stack, "2001:db8:1:3::1").await;
    assert_eq!(neighbour.status, 200, "{neighbour:?}");
    assert_eq!(neighbour.num("x-ratelimit-remaining"), BUDGET - 1);

    // IPv4 is not grouped; an IPv4-mapped IPv6 address is the IPv4 client.
    let v4 = request_from(&stack, "198.51.100.7").await;
    assert_eq!(v4.num("x-ratelimit-remaining"), BUDGET - 1, "{v4:?}");
    let mapped = request_from(&stack, "::ffff:198.51.100.7").await;
    assert_eq!(
        mapped.num("x-ratelimit-remaining"),
        BUDGET - 2,
        "{mapped:?}"
    );
    let other_v4 = request_from(&stack, "198.51.100.8").await;
    assert_eq!(other_v4.num("x-ratelimit-remaining"), BUDGET - 1);

    // The status endpoint knows the group by its name, by any of its addresses, and with
    // the slash of the name percent-encoded.
    for identifier in [
        "ip:2001:db8:1:2::/64",
        "ip:2001:db8:1:2::%2F64",
        "ip:2001:db8:1:2::77",
        "ip:2001:db8:1:2:ffff::/64",
    ] {
        let (code, report) = status(&stack, identifier).await;
        assert_eq!(code, 200, "{identifier}: {report}");
        assert_eq!(report["identifier"], "ip:2001:db8:1:2::/64", "{identifier}");
        assert_eq!(report["counters"][0]["count"], BUDGET, "{identifier}");
    }
    let (code, report) = status(&stack, "ip:2001:db8:1:2::/48").await;
    assert_eq!(
        code, 400,
        "another grouping than the configured one: {report}"
    );
    assert!(
        report["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/64")),
        "{report}"
    );
    let (code, _) = status(&stack, "ip:2001:db8:1:4::/64").await;
    assert_eq!(code, 404, "a /64 nobody used");

    // In Redis the group's name is the key's hash tag, readable as it is.
    let mut conn = stack.redis.as_ref().expect("redis").connection();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("rl:{ip:*").query(&mut conn).unwrap();
    // Counters only, not each identity's record of recently counted requests.
    keys.retain(|k| !k.ends_with(":n"));
    for key in [
        "rl:{ip:2001:db8:1:2::/64}:b:60",
        "rl:{ip:2001:db8:1:3::/64}:b:60",
        "rl:{ip:198.51.100.7}:b:60",
    ] {
        assert!(keys.contains(&key.to_string()), "{key} not in {keys:?}");
    }
    assert_eq!(keys.len(), 4, "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whitelisted_group_is_written_as_its_identifier() {
    let stack = stack(&budget_only().whitelist("ip:2001:db8:ffff:1::/64"), false);
    for i in 0..(BUDGET + 3) {
        let reply = request_from(&stack, &format!("2001:db8:ffff:1::{i:x}")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(!reply.has_rate_limit_headers(), "whitelisted: {reply:?}");
    }
    let outside = request_from(&stack, "2001:db8:ffff:2::1").await;
    assert_eq!(outside.num("x-ratelimit-remaining"), BUDGET - 1);
    let (code, report) = status(&stack, "ip:2001:db8:ffff:1::/64").await;
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["whitelisted"], true, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefix_length_is_the_configured_one() {
    // /48: two /64s of one site are one client.
    let site = stack(&budget_only().ipv6_prefix_length(48), false);
    let first = request_from(&site, "2001:db8:7:1::1").await;
    let second = request_from(&site, "2001:db8:7:2::1").await;
    assert_eq!(first.num("x-ratelimit-remaining"), BUDGET - 1);
    assert_eq!(second.num("x-ratelimit-remaining"), BUDGET - 2);
    let (code, report) = status(&site, "ip:2001:db8:7::/48").await;
    assert_eq!(
        (code, report["counters"][0]["count"].clone()),
        (200, json!(2))
    );
    drop(site);

    // /128: no grouping, every address is a client of its own, named as an address.
    let single = stack(&budget_only().ipv6_prefix_length(128), false);
    let first = request_from(&single, "2001:db8:7:1::1").await;
    let second = request_from(&single, "2001:db8:7:1::2").await;
    assert_eq!(first.num("x-ratelimit-remaining"), BUDGET - 1);
    assert_eq!(second.num("x-ratelimit-remaining"), BUDGET - 1);
    let (code, report) = status(&single, "ip:2001:db8:7:1::2").await;
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["identifier"], "ip:2001:db8:7:1::2");
}
