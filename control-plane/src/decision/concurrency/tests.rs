use std::sync::Arc;

use rl_wire::{DecisionRequest, LeasesRequest, Verdict};

use super::*;
use crate::config::{CompiledConfig, parse_yaml};
use crate::decision::Decider;
use crate::live_config;
use crate::store::{ManualClock, MemoryStore};

const T0: u64 = 1_700_000_000_000_000;

const TWO_IN_FLIGHT: &str = r#"
default_tier: free
tiers:
  - name: free
    requests_per_window: 3
    window_size_seconds: 60
    max_concurrent: 2
  - name: open
    unlimited: true
    max_concurrent: 1
api_keys:
  - {id: open-key, tier: open, key: open-key-0123456789}
"#;

fn decider(yaml: &str) -> (Arc<ManualClock>, Decider) {
    let clock = Arc::new(ManualClock::new(T0));
    let cfg = CompiledConfig::compile(parse_yaml(yaml).unwrap()).unwrap();
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let decider = Decider::new(live_config::shared(cfg), store, clock.clone())
        .with_lease_ttl(std::time::Duration::from_secs(10));
    (clock, decider)
}

fn req(ip: &str) -> DecisionRequest {
    DecisionRequest {
        ip: ip.into(),
        method: "GET".into(),
        path: "/api/v1/request".into(),
        ..Default::default()
    }
}

fn release(handles: &[&str]) -> LeasesRequest {
    LeasesRequest {
        renew: Vec::new(),
        release: handles.iter().map(|h| h.to_string()).collect(),
    }
}

#[test]
fn a_handle_names_its_lease_and_nothing_else_parses() {
    let lease = lease_for("key:abc");
    let parsed = parse_handle(&handle(&lease)).unwrap();
    assert_eq!(parsed, lease);
    assert_eq!(parsed.key, "rl:{key:abc}:c");
    for junk in [
        "",
        "abc",
        "0123456789abcdef0123456789abcdef",
        "0123456789abcdef0123456789abcdef|rl:{key:abc}:b:60",
        "0123456789abcdef0123456789abcdeX|rl:{key:abc}:c",
        "0123456789abcdef|rl:{key:abc}:c",
        "0123456789abcdef0123456789abcdef|rl:{a}{b}:c",
        "0123456789abcdef0123456789abcdef|rl:{}:c",
    ] {
        assert_eq!(parse_handle(junk), None, "{junk:?}");
    }
    let long = format!("{}|rl:{{{}}}:c", "0".repeat(32), "a".repeat(600));
    assert_eq!(parse_handle(&long), None);
}

#[tokio::test]
async fn the_excess_is_refused_with_retry_after_one_and_never_cached() {
    let (_, d) = decider(TWO_IN_FLIGHT);
    let first = d.decide(&req("10.0.0.1")).await.response;
    let second = d.decide(&req("10.0.0.1")).await.response;
    for answer in [&first, &second] {
        assert_eq!(answer.verdict, Verdict::Allow);
        let lease = answer.lease.as_ref().expect("a lease");
        assert_eq!(lease.ttl_ms, 10_000);
        assert!(parse_handle(&lease.id).is_some(), "{}", lease.id);
    }
    assert_ne!(first.lease, second.lease);
    let third = d.decide(&req("10.0.0.1")).await;
    assert!(!third.cached);
    let third = third.response;
    assert_eq!(third.verdict, Verdict::Deny);
    assert_eq!(third.lease, None);
    assert_eq!(third.deny_for_ms, None, "a slot may free any moment");
    assert!(third.policies.is_empty());
    let c = third.counter.unwrap();
    assert_eq!((c.limit, c.remaining, c.window), (2, 0, 0));
    assert_eq!(c.retry_after, Some(1));
    assert_eq!(c.reset_after, Some(1));
    assert_eq!(c.policy, None);
    assert_eq!(c.endpoint, "/api/v1/request");
    // Another identity has slots of its own.
    assert_eq!(
        d.decide(&req("10.0.0.2")).await.response.verdict,
        Verdict::Allow
    );
    // A released slot is taken again, and the refused request was not counted in the
    // window: 3 per 60 s, two admitted so far.
    let handle = first.lease.unwrap().id;
    let answer = d.leases(&release(&[&handle])).await.unwrap();
    assert_eq!((answer.renewed, answer.released), (0, 1));
    let fourth = d.decide(&req("10.0.0.1")).await.response;
    assert_eq!(fourth.verdict, Verdict::Allow);
    assert_eq!(fourth.counter.unwrap().remaining, 0);
}

#[tokio::test]
async fn a_request_the_windows_refuse_holds_no_slot() {
    let (_, d) = decider(TWO_IN_FLIGHT);
    let mut handles = Vec::new();
    for _ in 0..2 {
        let answer = d.decide(&req("10.0.0.1")).await.response;
        handles.push(answer.lease.unwrap().id);
    }
    d.leases(&release(&[&handles[0], &handles[1]]))
        .await
        .unwrap();
    // Third request: the window's last unit, a slot.
    let third = d.decide(&req("10.0.0.1")).await.response;
    assert_eq!(third.verdict, Verdict::Allow);
    // Fourth: the window refuses it; it gives its slot back.
    let fourth = d.decide(&req("10.0.0.1")).await.response;
    assert_eq!(fourth.verdict, Verdict::Deny);
    assert_eq!(fourth.counter.unwrap().window, 60);
    assert_eq!(fourth.lease, None);
    let leases = d.store().leases().unwrap();
    let key = crate::store::keys::lease_key("ip:10.0.0.1");
    let probe = leases.acquire(&key, 2, "probe", 1).await.unwrap();
    assert_eq!(probe.held, 2, "the admitted third and this probe only");
}

#[tokio::test]
async fn renewals_keep_a_slot_and_unrenewed_leases_expire() {
    let (clock, d) = decider(TWO_IN_FLIGHT);
    let open = DecisionRequest {
        api_key: Some("open-key-0123456789".into()),
        ..req("10.0.0.1")
    };
    // An unlimited tier with a concurrency limit: no windows, a lease all the same.
    let first = d.decide(&open).await.response;
    assert_eq!(first.verdict, Verdict::Allow);
    assert_eq!(first.counter, None);
    let handle = first.lease.unwrap().id;
    assert_eq!(d.decide(&open).await.response.verdict, Verdict::Deny);
    clock.advance(9_000_000);
    let renewed = d
        .leases(&LeasesRequest {
            renew: vec![handle.clone(), "not a handle".into()],
            release: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!((renewed.renewed, renewed.released), (1, 0));
    clock.advance(9_000_000);
    assert_eq!(d.decide(&open).await.response.verdict, Verdict::Deny);
    clock.advance(1_000_000);
    // Ten seconds after its renewal, nobody renewed it: the slot is free.
    let next = d.decide(&open).await.response;
    assert_eq!(next.verdict, Verdict::Allow);
}

#[tokio::test]
async fn batches_take_leases_member_by_member() {
    let (_, d) = decider(TWO_IN_FLIGHT);
    let batch = [req("10.0.0.1"), req("10.0.0.1"), req("10.0.0.1")];
    let answers = d.decide_batch(&batch).await;
    let verdicts: Vec<Verdict> = answers.iter().map(|a| a.response.verdict).collect();
    assert_eq!(verdicts, [Verdict::Allow, Verdict::Allow, Verdict::Deny]);
    assert!(answers[0].response.lease.is_some() && answers[1].response.lease.is_some());
    assert_eq!(answers[2].response.counter.as_ref().unwrap().window, 0);
}

#[tokio::test]
async fn without_leases_only_the_windows_apply() {
    let (_, d) = decider(TWO_IN_FLIGHT);
    for _ in 0..3 {
        let answer = d.decide_without_leases(&req("10.0.0.1")).await.response;
        assert_eq!(answer.verdict, Verdict::Allow);
        assert_eq!(answer.lease, None);
    }
    assert_eq!(
        d.decide_without_leases(&req("10.0.0.1"))
            .await
            .response
            .counter
            .unwrap()
            .window,
        60
    );
}
