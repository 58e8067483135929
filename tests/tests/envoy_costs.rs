//! Request costs through a real Envoy with the compiled filter, the control plane and Redis:
//! a rule of cost 5 takes 5 units from its own window and from the tier's budget, the
//! headers and the 429 are in units, and `Retry-After` waits for 5 units, not one. A budget
//! with room for a request of cost 1 but not for one of cost 5 refuses the expensive request
//! and still admits the cheap one (through both deny caches).

#[path = "support/denials.rs"]
mod denials;

use std::net::{IpAddr, Ipv4Addr};

use denials::{denial, described};
use rl_tests::admin::Admin;
use rl_tests::fixtures::{Config, Rule, Tier};
use rl_tests::{Stack, StackBuilder, client_from, control_plane_bin, get};

const ADMIN_KEY: &str = "costs-admin-key-0123456789";

fn from(last: u8) -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

fn stack(config: &Config) -> Stack {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_of_cost_5_under_a_limit_of_20_admits_4_requests_in_units() {
    let stack = stack(
        &Config::new()
            .tier(Tier::new("free", 1000).rule("/api/v1/export", Rule::new(&[(20, 60)]).cost(5))),
    );
    let client = from(51);
    let url = stack.url("/api/v1/export");
    for remaining in [15, 10, 5, 0] {
        let reply = get(&client, &url, &[]).await;
        assert_eq!(reply.status, 200, "{reply:#?}");
        assert_eq!(described(&reply), (20, remaining), "{reply:#?}");
        assert_eq!(reply.header("retry-after"), None);
    }
    // The fifth needs 5 units: they are free once the first request's leave, a minute after
    // it (not one unit's worth of time: every entry is in the same second here).
    let refused = get(&client, &url, &[]).await;
    let retry_after = denial(&refused, 20, 60, "/api/v1/export");
    assert!((55..=60).contains(&retry_after), "{retry_after}");
    let message = refused.json()["error"]["message"].clone();
    assert_eq!(
        message,
        format!("Rate limit exceeded: 20 units per 60 seconds. Retry after {retry_after} seconds."),
        "{refused:#?}"
    );

    // The tier's budget lost 5 units per admitted request, nothing for the refused one.
    assert_eq!(units_of(&stack, "ip:127.0.0.51", "free-60s").await, 20);
    assert_eq!(
        units_of(&stack, "ip:127.0.0.51", "free-/api/v1/export-60s").await,
        20
    );
    // Another endpoint costs 1, from what is left of the budget.
    let other = get(&client, &stack.url("/api/v1/request"), &[]).await;
    assert_eq!(other.status, 200, "{other:#?}");
    assert_eq!(described(&other), (1000, 979), "{other:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_with_room_for_1_unit_but_not_5_refuses_only_the_expensive_request() {
    // A budget of 12 per minute; the rule's own window (20 per 2 minutes) never binds first.
    let stack = stack(
        &Config::new()
            .tier(Tier::new("free", 12).rule("/api/v1/export", Rule::new(&[(20, 120)]).cost(5))),
    );
    let client = from(52);
    let export = stack.url("/api/v1/export");
    let cheap = stack.url("/api/v1/request");
    for remaining in [7, 2] {
        let reply = get(&client, &export, &[]).await;
        assert_eq!(reply.status, 200, "{reply:#?}");
        assert_eq!(described(&reply), (12, remaining), "{reply:#?}");
    }
    // 2 units left: not enough for 5, refused by the budget, and again from the deny caches.
    for _ in 0..2 {
        let retry_after = denial(&get(&client, &export, &[]).await, 12, 60, "/api/v1/export");
        assert!((55..=60).contains(&retry_after), "{retry_after}");
    }
    // Enough for two requests of cost 1, whatever the caches learnt about cost 5.
    for remaining in [1, 0] {
        let reply = get(&client, &cheap, &[]).await;
        assert_eq!(reply.status, 200, "{reply:#?}");
        assert_eq!(described(&reply), (12, remaining), "{reply:#?}");
    }
    denial(&get(&client, &cheap, &[]).await, 12, 60, "/api/v1/request");
    assert_eq!(units_of(&stack, "ip:127.0.0.52", "free-60s").await, 12);
}
