//! The IETF `RateLimit-Policy` and `RateLimit` fields through a real Envoy with the release
//! `.wasm`, read back as structured fields (`sfv`), with one window and with several: on
//! allowed responses and on the filter's 429 (`t` = `Retry-After`), appended after an
//! upstream's own items, chosen by the plugin's `headers`, and absent where they must be
//! (an answer without policies, whitelisted, failed open).
//!
//! The control plane here is the harness's fake (`tests/src/fake_control_plane.rs`): it
//! answers with the windows a test chooses, so the filter's rendering is tested apart from
//! how the control plane counts.

#[path = "support/structured_fields.rs"]
mod structured_fields;

use std::net::{IpAddr, Ipv4Addr};

use rl_tests::fake_control_plane::{Answer, FAKE_TIER, windows};
use rl_tests::{Envoy, EnvoyBuilder, FakeControlPlane, Reply, Upstream, client_from, get};
use rl_wire::{DecisionResponse, Verdict};
use serde_json::{Value, json};
use structured_fields::{Member, list, member};

const PATH: &str = "/api/v1/request";
/// The demo upstream's API with a limiter of its own (`demo_upstream::OWN_LIMIT_HEADERS`).
const OWN_LIMITS: &str = "/api/v1/own-limits";
const POLICY: &str = "ratelimit-policy";
const RATELIMIT: &str = "ratelimit";

/// A tier's burst and long windows, then an endpoint rule's window.
const SEVERAL: [(&str, u64, u64); 3] = [
    ("fake-1s", 10, 1),
    ("fake-60s", 100, 60),
    ("fake-/api/v1/request-60s", 30, 60),
];

fn client() -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 81)))
}

/// An Envoy with one worker in front of `upstream`, asking `fake`; `headers`: the plugin's
/// `headers` field (`None`: left out, the default).
fn envoy(fake: &FakeControlPlane, upstream: &Upstream, headers: Option<Value>) -> Envoy {
    let mut builder = EnvoyBuilder::new(fake.addr(), upstream.addr()).concurrency(1);
    if let Some(headers) = headers {
        builder = builder.plugin("headers", headers);
    }
    builder.start()
}

/// Every line of `name`, in order.
fn lines<'a>(reply: &'a Reply, name: &str) -> Vec<&'a [u8]> {
    reply
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.as_bytes())
        .collect()
}

/// The List field `name` of `reply`, every line of it; `None` when absent.
fn field(reply: &Reply, name: &str) -> Option<Vec<Member>> {
    let lines = lines(reply, name);
    (!lines.is_empty()).then(|| list(lines))
}

fn policy_members(policies: &[(&str, u64, u64)]) -> Vec<Member> {
    policies
        .iter()
        .map(|(name, q, w)| member(name, &[("q", *q as i64), ("w", *w as i64)]))
        .collect()
}

fn x_ratelimit(reply: &Reply) -> Vec<&str> {
    let mut names: Vec<&str> = reply
        .headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("x-ratelimit-"))
        .collect();
    names.sort_unstable();
    names
}

const OURS_X: [&str; 4] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-tier",
];

async fn fetch(envoy: &Envoy, path: &str) -> Reply {
    get(&client(), &envoy.url(path), &[]).await
}

fn assert_no_ietf_fields(reply: &Reply) {
    assert_eq!(field(reply, POLICY), None, "{reply:#?}");
    assert_eq!(field(reply, RATELIMIT), None, "{reply:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ietf_fields_describe_one_window_and_several() {
    let fake = FakeControlPlane::start(Answer::Allow);
    let upstream = Upstream::start();
    let envoy = envoy(&fake, &upstream, None);

    // One window.
    let one = [("fake-60s", 100, 60)];
    fake.set_answer(Answer::Decision(windows(Verdict::Allow, &one, 0, 99, 37)));
    let reply = fetch(&envoy, PATH).await;
    assert_eq!(reply.status, 200, "{reply:#?}");
    assert_eq!(lines(&reply, POLICY).len(), 1, "one line of ours");
    assert_eq!(field(&reply, POLICY), Some(policy_members(&one)));
    assert_eq!(
        field(&reply, RATELIMIT),
        Some(vec![member("fake-60s", &[("r", 99), ("t", 37)])])
    );
    assert_eq!(x_ratelimit(&reply), OURS_X, "both sets by default");
    assert_eq!(reply.num("x-ratelimit-remaining"), 99);

    // Several windows: every one in RateLimit-Policy, in order; the binding one in RateLimit.
    fake.set_answer(Answer::Decision(windows(
        Verdict::Allow,
        &SEVERAL,
        2,
        4,
        12,
    )));
    let reply = fetch(&envoy, PATH).await;
    assert_eq!(reply.status, 200, "{reply:#?}");
    assert_eq!(field(&reply, POLICY), Some(policy_members(&SEVERAL)));
    assert_eq!(
        field(&reply, RATELIMIT),
        Some(vec![member(
            "fake-/api/v1/request-60s",
            &[("r", 4), ("t", 12)]
        )])
    );
    assert_eq!(reply.num("x-ratelimit-limit"), 30);
    assert_eq!(reply.header("retry-after"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_429_carries_both_sets_and_t_equals_retry_after() {
    let fake = FakeControlPlane::start(Answer::Allow);
    let upstream = Upstream::start();
    let envoy = envoy(&fake, &upstream, None);
    for (policies, binding, wait) in [(&SEVERAL[1..2], 0, 41), (&SEVERAL[..], 0, 1)] {
        fake.set_answer(Answer::Decision(windows(
            Verdict::Deny,
            policies,
            binding,
            0,
            wait,
        )));
        let reply = fetch(&envoy, PATH).await;
        assert_eq!(reply.status, 429, "{reply:#?}");
        let retry_after = reply.num("retry-after");
        assert_eq!(retry_after, wait);
        assert_eq!(field(&reply, POLICY), Some(policy_members(policies)));
        let name = policies[binding].0;
        assert_eq!(
            field(&reply, RATELIMIT),
            Some(vec![member(name, &[("r", 0), ("t", retry_after as i64)])]),
            "t is the Retry-After"
        );
        assert_eq!(x_ratelimit(&reply), OURS_X);
        assert_eq!(
            reply.json()["error"]["details"]["retry_after_seconds"],
            json!(wait)
        );
    }
    assert_eq!(
        envoy.stat("wasmcustom.rate_limit_filter.denied"),
        Some(2),
        "{}",
        envoy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_are_appended_after_the_upstreams_own_items() {
    let fake = FakeControlPlane::start(Answer::Allow);
    let upstream = Upstream::start();
    let envoy = envoy(&fake, &upstream, None);
    let upstream_policy = vec![
        member("upstream", &[("q", 5000), ("w", 3600)]),
        member("burst", &[("q", 100), ("w", 1)]),
    ];
    let upstream_ratelimit = vec![member("upstream", &[("r", 4321), ("t", 60)])];

    fake.set_answer(Answer::Decision(windows(Verdict::Allow, &SEVERAL, 0, 9, 1)));
    for status in [200, 503] {
        let reply = fetch(&envoy, &format!("{OWN_LIMITS}?status={status}")).await;
        assert_eq!(reply.status, status, "{reply:#?}");
        // The combined field lines: the upstream's items first, then ours.
        let mut want = upstream_policy.clone();
        want.extend(policy_members(&SEVERAL));
        assert_eq!(field(&reply, POLICY), Some(want), "{reply:#?}");
        let mut want = upstream_ratelimit.clone();
        want.push(member("fake-1s", &[("r", 9), ("t", 1)]));
        assert_eq!(field(&reply, RATELIMIT), Some(want), "{reply:#?}");
        // The upstream's X-RateLimit-* give way to ours, its Retry-After stays.
        assert_eq!(x_ratelimit(&reply), OURS_X);
        assert_eq!(reply.header("x-ratelimit-tier"), Some(FAKE_TIER));
        assert_eq!(reply.header("retry-after"), Some("30"));
    }

    // An answer without policies (a control plane of the first release): the upstream's
    // items alone, untouched.
    fake.set_answer(Answer::Allow);
    let reply = fetch(&envoy, OWN_LIMITS).await;
    assert_eq!(field(&reply, POLICY), Some(upstream_policy));
    assert_eq!(field(&reply, RATELIMIT), Some(upstream_ratelimit));
    assert_eq!(x_ratelimit(&reply), OURS_X);
}

/// A decision naming windows, with another verdict.
fn with_verdict(verdict: Verdict) -> DecisionResponse {
    let mut decision = windows(Verdict::Allow, &SEVERAL, 0, 5, 1);
    decision.verdict = verdict;
    decision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ietf_fields_without_policies_whitelisted_or_failed_open() {
    let fake = FakeControlPlane::start(Answer::Allow);
    let upstream = Upstream::start();
    let envoy = envoy(&fake, &upstream, None);

    // A control plane of the first release: X-RateLimit-* only.
    let reply = fetch(&envoy, PATH).await;
    assert_eq!(reply.status, 200);
    assert_eq!(x_ratelimit(&reply), OURS_X);
    assert_no_ietf_fields(&reply);

    // Whitelisted and failed open by the control plane, even with policies in the answer.
    for verdict in [Verdict::Whitelisted, Verdict::FailedOpen, Verdict::Disabled] {
        fake.set_answer(Answer::Decision(with_verdict(verdict)));
        let reply = fetch(&envoy, PATH).await;
        assert_eq!(reply.status, 200, "{verdict:?}: {reply:#?}");
        assert_no_ietf_fields(&reply);
        assert!(x_ratelimit(&reply).is_empty(), "{verdict:?}: {reply:#?}");
    }

    // Failed open by the filter: the control plane's answer is unreadable.
    fake.set_answer(Answer::Garbage);
    let reply = fetch(&envoy, PATH).await;
    assert_eq!(reply.status, 200, "{reply:#?}");
    assert_no_ietf_fields(&reply);
    assert!(x_ratelimit(&reply).is_empty(), "{reply:#?}");
    for stat in ["whitelisted", "failed_open", "disabled"] {
        assert!(
            envoy
                .stat(&format!("wasmcustom.rate_limit_filter.{stat}"))
                .unwrap_or(0)
                >= 1,
            "{stat}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_ascii_policy_names_arrive_as_sent_and_a_shadow_denial_is_a_200() {
    let fake = FakeControlPlane::start(Answer::Allow);
    let upstream = Upstream::start();
    let envoy = envoy(&fake, &upstream, None);
    let odd = [
        (r#"fake-/api/v1/"quoted"\x-1s"#, 5, 1),
        ("fake-/a b,c;d=e-60s", 50, 60),
        ("fake-/caf%C3%A9/*-3600s", 500, 3600),
    ];
    let mut decision = windows(Verdict::Allow, &odd, 0, 0, 1);
    // A shadowed window is full: the request passes with what an enforced limit would send.
    decision.shadow_denied = true;
    fake.set_answer(Answer::Decision(decision));
    let reply = fetch(&envoy, PATH).await;
    assert_eq!(reply.status, 200, "{reply:#?}");
    assert_eq!(field(&reply, POLICY), Some(policy_members(&odd)));
    assert_eq!(
        field(&reply, RATELIMIT),
        Some(vec![member(odd[0].0, &[("r", 0), ("t", 1)])])
    );
    assert_eq!(reply.header("retry-after"), None, "no Retry-After on a 200");
    assert_eq!(reply.num("x-ratelimit-remaining"), 0);
    assert_eq!(envoy.stat("wasmcustom.rate_limit_filter.allowed"), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_chooses_the_header_sets() {
    let fake = FakeControlPlane::start(Answer::Allow);
    let upstream = Upstream::start();
    for (headers, x, ietf) in [
        (json!(["x-ratelimit"]), true, false),
        (json!(["ietf"]), false, true),
        (json!([]), false, false),
    ] {
        let envoy = envoy(&fake, &upstream, Some(headers.clone()));
        for verdict in [Verdict::Allow, Verdict::Deny] {
            fake.set_answer(Answer::Decision(windows(verdict, &SEVERAL, 1, 0, 7)));
            // On the upstream with its own limits: its fields stay whatever we send, and its
            // X-RateLimit-* never pass for ours.
            let reply = fetch(&envoy, OWN_LIMITS).await;
            let what = format!("headers {headers}, {verdict:?}: {reply:#?}");
            let want_x: &[&str] = if x { &OURS_X } else { &[] };
            assert_eq!(x_ratelimit(&reply), want_x, "{what}");
            let policy = field(&reply, POLICY).unwrap_or_default();
            let ours_policy = policy_members(&SEVERAL);
            let ours_ratelimit = member("fake-60s", &[("r", 0), ("t", 7)]);
            let ratelimit = field(&reply, RATELIMIT).unwrap_or_default();
            assert_eq!(
                policy.ends_with(&ours_policy),
                ietf,
                "RateLimit-Policy: {what}"
            );
            assert_eq!(
                ratelimit.last() == Some(&ours_ratelimit),
                ietf,
                "RateLimit: {what}"
            );
            if verdict == Verdict::Deny {
                assert_eq!(reply.status, 429, "{what}");
                assert_eq!(reply.num("retry-after"), 7, "always on a 429: {what}");
                // The 429 is ours alone: no upstream items.
                assert_eq!(policy.len(), if ietf { SEVERAL.len() } else { 0 }, "{what}");
            } else {
                assert_eq!(reply.status, 200, "{what}");
                assert_eq!(policy.len(), 2 + if ietf { SEVERAL.len() } else { 0 });
            }
        }
    }
}

#[test]
fn an_unknown_header_set_stops_envoy_naming_the_entry() {
    let upstream = Upstream::start();
    // Never called: Envoy must refuse the plugin first.
    let cp = upstream.addr();
    let result = EnvoyBuilder::new(cp, upstream.addr())
        .plugin("headers", json!(["ietf", "draft-11"]))
        .try_start();
    let Err(log) = result else {
        panic!("Envoy accepted headers [\"ietf\", \"draft-11\"]");
    };
    assert!(
        log.contains("invalid plugin configuration") && log.contains("field `headers[1]`"),
        "{log}"
    );
}
