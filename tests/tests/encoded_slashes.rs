//! Encoded slashes and backslashes through a real Envoy: while the `/api/v1/request` rule is
//! exhausted, no spelling of that path reaches the upstream with a fresh rule budget.
//!
//! Requests are written byte for byte (`raw_get`): an HTTP client would turn `\` into `/`
//! before sending and hide the case.

use std::net::{IpAddr, Ipv4Addr};

use rl_tests::fixtures::{Config, Tier};
use rl_tests::{
    ControlPlaneBuilder, EnvoyBuilder, RawReply, StackBuilder, Upstream, control_plane_bin,
    raw_get, repo_root,
};
use serde_json::json;

const RULE: &str = "/api/v1/request";
const RULE_LIMIT: usize = 3;

/// Spellings that name the rule's path once `%2F`, `%5C` and `\` are read as `/`.
const SPELLINGS: [&str; 9] = [
    "/api/v1%2Frequest",
    "/api/v1%2frequest",
    "/api/v1%5Crequest",
    "/api/v1%5crequest",
    "/api/v1\\request",
    "/api%2Fv1%2Frequest",
    "/api/v1%2F%2Frequest",
    "/api/x%2F..%2Fv1%2Frequest",
    "/api\\v1/%5Crequest",
];

/// A roomy tier budget with a small rule on `/api/v1/request`.
fn config() -> String {
    Config::new()
        .tier(
            Tier::new("free", 100)
                .window(60)
                .endpoint(RULE, RULE_LIMIT as u64),
        )
        .yaml()
}

fn source(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Uses up the rule's budget for `client`: `RULE_LIMIT` answers 200, then 429.
async fn exhaust_the_rule(envoy: std::net::SocketAddr, client: IpAddr) {
    for i in 0..RULE_LIMIT {
        let reply = raw_get(envoy, client, RULE, &[]).await;
        assert_eq!(reply.status, 200, "request {} to {RULE}: {reply:?}", i + 1);
    }
    let denied = raw_get(envoy, client, RULE, &[]).await;
    assert_denied_by_the_rule(RULE, &denied);
}

fn assert_denied_by_the_rule(path: &str, reply: &RawReply) {
    assert_eq!(reply.status, 429, "{path}: {reply:?}");
    let body: serde_json::Value = serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("{path}: 429 body is not JSON ({e}): {reply:?}"));
    assert_eq!(
        body["error"]["details"]["endpoint"], RULE,
        "{path}: denied by another counter: {reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_envoy_redirects_encoded_slashes_to_the_path_the_rule_counts() {
    let stack = StackBuilder::new(control_plane_bin!(), &config()).start();
    let envoy = stack.envoy.listener();
    let client = source(81);
    exhaust_the_rule(envoy, client).await;

    let mut redirected = 0;
    for path in SPELLINGS {
        let reply = raw_get(envoy, client, path, &[]).await;
        match reply.status {
            // Envoy unescaped the slashes and sent the client to the path they spell, which
            // then meets the exhausted rule: the upstream never saw the escaped form.
            307 => {
                let location = reply
                    .header("location")
                    .unwrap_or_else(|| panic!("{path}: redirect without location: {reply:?}"));
                // Relative, or absolute on the Host the request named.
                let target = location.strip_prefix("http://test").unwrap_or(location);
                assert_eq!(target, RULE, "{path}: redirected to {location}");
                let followed = raw_get(envoy, client, target, &[]).await;
                assert_denied_by_the_rule(target, &followed);
                redirected += 1;
            }
            // A literal backslash: Envoy's path normalisation reads it as `/`.
            _ => assert_denied_by_the_rule(path, &reply),
        }
    }
    assert!(
        redirected >= 7,
        "only {redirected} spellings were redirected"
    );
    assert_eq!(
        stack
            .envoy
            .stat("http.ingress.downstream_rq_redirected_with_normalized_path"),
        Some(redirected),
        "Envoy counts each redirect it answered itself"
    );
    // The filter saw each followed redirect and the backslash spelling (all denied by the
    // rule), never a redirected request itself.
    assert_eq!(
        stack.envoy.stat("wasmcustom.rate_limit_filter.denied"),
        Some(1 + SPELLINGS.len() as u64),
        "{}",
        stack.envoy.log()
    );
    // Nothing but the admitted requests was charged: the tier budget shows RULE_LIMIT.
    let other = raw_get(envoy, client, "/api/v1/other", &[]).await;
    assert_eq!(other.status, 200, "{other:?}");
    assert_eq!(
        other.header("x-ratelimit-remaining"),
        Some((100 - RULE_LIMIT - 1).to_string().as_str()),
        "{other:?}"
    );
}

/// An Envoy that leaves escaped slashes alone (Envoy's default) hands them to the filter as
/// they are: the control plane reads `%2F`, `%5C` and `\` as `/` when it matches rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_slashes_that_reach_the_control_plane_meet_the_rule() {
    let control_plane = ControlPlaneBuilder::new(control_plane_bin!(), &config()).start();
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(control_plane.addr(), upstream.addr())
        .connection_manager("path_with_escaped_slashes_action", json!("KEEP_UNCHANGED"))
        .connection_manager("normalize_path", json!(false))
        .connection_manager("merge_slashes", json!(false))
        .start();
    let listener = envoy.listener();
    let client = source(82);
    exhaust_the_rule(listener, client).await;

    for path in SPELLINGS {
        let reply = raw_get(listener, client, path, &[]).await;
        assert_denied_by_the_rule(path, &reply);
    }
    // An encoded percent sign is not a slash: decoding happens once, as for the upstream.
    let reply = raw_get(listener, client, "/api/v1%252Frequest", &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.header("x-ratelimit-limit"),
        Some("100"),
        "only the tier budget applies: {reply:?}"
    );
}

#[test]
fn every_shipped_envoy_config_resolves_paths_before_the_filter() {
    for rel in [
        "envoy/envoy.yaml",
        "envoy/envoy.compose.yaml",
        "benches/load/envoy-base.yaml",
    ] {
        let text = std::fs::read_to_string(repo_root().join(rel))
            .unwrap_or_else(|e| panic!("cannot read {rel}: {e}"));
        for setting in [
            "normalize_path: true",
            "merge_slashes: true",
            "path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT",
        ] {
            assert!(text.contains(setting), "{rel} lacks `{setting}`");
        }
    }
}
