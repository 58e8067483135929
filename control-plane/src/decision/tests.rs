use super::*;
use crate::config::{CompiledConfig, parse_yaml};
use crate::live_config;
use crate::store::{ManualClock, MemoryStore};

const T0: u64 = 1_700_000_000_000_000;

fn decider(yaml: &str) -> (Arc<ManualClock>, Decider) {
    let clock = Arc::new(ManualClock::new(T0));
    let cfg = CompiledConfig::compile(parse_yaml(yaml).unwrap()).unwrap();
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let decider = Decider::new(live_config::shared(cfg), store, clock.clone());
    (clock, decider)
}

fn req(ip: &str, path: &str) -> DecisionRequest {
    DecisionRequest {
        ip: ip.into(),
        method: "GET".into(),
        path: path.into(),
        ..Default::default()
    }
}

const BASIC: &str = r#"
default_tier: free
tiers:
  - name: free
    requests_per_window: 3
    window_size_seconds: 60
    endpoints:
      /api/v1/request: 2
"#;

#[tokio::test]
async fn allows_with_headers_then_denies_with_retry_after() {
    let (clock, d) = decider(BASIC);
    let first = d.decide(&req("10.0.0.1", "/other")).await.response;
    assert_eq!(first.verdict, Verdict::Allow);
    let c = first.counter.unwrap();
    assert_eq!((c.limit, c.remaining, c.window), (3, 2, 60));
    assert_eq!(c.reset, T0 / 1_000_000 + 60);
    assert_eq!(c.endpoint, "/other");
    clock.advance(10_000_000);
    d.decide(&req("10.0.0.1", "/other")).await;
    d.decide(&req("10.0.0.1", "/other")).await;
    let denied = d.decide(&req("10.0.0.1", "/other")).await.response;
    assert_eq!(denied.verdict, Verdict::Deny);
    let c = denied.counter.unwrap();
    assert_eq!((c.limit, c.remaining), (3, 0));
    assert_eq!(c.retry_after, Some(50));
    assert_eq!(c.reset, T0 / 1_000_000 + 60);
    assert_eq!(c.reset_at.as_deref(), Some("2023-11-14T22:14:20Z"));
    // Other clients are independent.
    assert_eq!(
        d.decide(&req("10.0.0.2", "/other")).await.response.verdict,
        Verdict::Allow
    );
}

#[tokio::test]
async fn endpoint_rule_binds_before_the_budget_and_headers_show_least_remaining() {
    let (_clock, d) = decider(BASIC);
    let a = d.decide(&req("10.0.0.1", "/api/v1/request?x=1")).await;
    assert_eq!(a.rule.as_deref(), Some("/api/v1/request"));
    let c = a.response.counter.unwrap();
    assert_eq!((c.limit, c.remaining), (2, 1), "rule has 1 left, budget 2");
    d.decide(&req("10.0.0.1", "/api/v1//request")).await;
    let denied = d
        .decide(&req("10.0.0.1", "/api/v1/./request"))
        .await
        .response;
    assert_eq!(denied.verdict, Verdict::Deny);
    assert_eq!(denied.counter.unwrap().endpoint, "/api/v1/request");
    // The denial consumed nothing: the budget still has one request left.
    let other = d.decide(&req("10.0.0.1", "/other")).await.response;
    assert_eq!(other.verdict, Verdict::Allow);
    assert_eq!(other.counter.unwrap().remaining, 0);
}

#[tokio::test]
async fn disabled_and_whitelisted_requests_carry_no_counter() {
    let (_c, d) = decider(&format!("{BASIC}whitelist: [\"10.1.0.0/16\"]\n"));
    let r = d.decide(&req("10.1.2.3", "/x")).await.response;
    assert_eq!(r, bare(Verdict::Whitelisted));
    let (_c, d) = decider(&format!("enabled: false\n{BASIC}"));
    let r = d.decide(&req("10.0.0.1", "/x")).await.response;
    assert_eq!(r, bare(Verdict::Disabled));
}

#[tokio::test]
async fn unlimited_tier_without_rule_reports_only_the_tier() {
    let (_c, d) = decider(
        "default_tier: unlimited\ntiers:\n  - name: unlimited\n    unlimited: true\n    endpoints:\n      /limited: 1\n",
    );
    for _ in 0..50 {
        let r = d.decide(&req("10.0.0.1", "/x")).await.response;
        assert_eq!(r.verdict, Verdict::Allow);
        assert_eq!(r.tier.as_deref(), Some("unlimited"));
        assert!(r.counter.is_none());
    }
    assert_eq!(
        d.decide(&req("10.0.0.1", "/limited"))
            .await
            .response
            .verdict,
        Verdict::Allow
    );
    assert_eq!(
        d.decide(&req("10.0.0.1", "/limited"))
            .await
            .response
            .verdict,
        Verdict::Deny
    );
}

#[tokio::test]
async fn long_paths_are_echoed_bounded() {
    let (_c, d) = decider("default_tier: t\ntiers:\n  - name: t\n    requests_per_window: 1\n");
    let long = format!("/{}", "é".repeat(3000));
    d.decide(&req("10.0.0.1", &long)).await;
    let denied = d.decide(&req("10.0.0.1", &long)).await.response;
    let endpoint = denied.counter.unwrap().endpoint;
    assert!(
        endpoint.len() <= MAX_ECHOED_PATH && endpoint.starts_with("/é"),
        "{endpoint}"
    );
    assert_eq!(bounded("/short"), "/short");
}

#[test]
fn rfc3339_formats_utc() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(u64::MAX), "");
}

#[test]
fn store_errors_are_logged_at_most_once_per_second() {
    let clock = Arc::new(ManualClock::new(T0));
    let log = ErrorLog::new(clock.clone());
    assert_eq!(log.admit(), Some(0), "the first error is logged");
    assert_eq!(log.admit(), None);
    clock.advance(ERROR_LOG_INTERVAL_US - 1);
    assert_eq!(log.admit(), None);
    clock.advance(1);
    assert_eq!(
        log.admit(),
        Some(2),
        "the next line counts the suppressed ones"
    );
    assert_eq!(log.admit(), None);
    clock.advance(10 * ERROR_LOG_INTERVAL_US);
    assert_eq!(log.admit(), Some(1));
}

#[test]
fn a_clock_at_zero_logs_the_first_error() {
    let log = ErrorLog::new(Arc::new(ManualClock::new(0)));
    assert_eq!(log.admit(), Some(0));
    assert_eq!(log.admit(), None);
}

#[tokio::test]
async fn reset_and_retry_after_round_the_same_instant() {
    let (clock, d) = decider("default_tier: t\ntiers:\n  - name: t\n    requests_per_window: 1\n");
    // Recorded at a fifth past a whole second: the counter has room again at T0 + 60.2 s.
    clock.set(T0 + 200_000);
    d.decide(&req("10.0.0.1", "/x")).await;
    // 0.1 s before that, in the same whole second as the moment itself.
    clock.set(T0 + 60_100_000);
    let denied = d.decide(&req("10.0.0.1", "/x")).await.response;
    let c = denied.counter.unwrap();
    assert_eq!(c.retry_after, Some(1));
    assert_eq!(
        c.reset,
        T0 / 1_000_000 + 61,
        "the second in which it has room again"
    );
    clock.set(T0 + 61_000_000);
    assert_eq!(
        d.decide(&req("10.0.0.1", "/x")).await.response.verdict,
        Verdict::Allow,
        "a request at Reset passes"
    );
}

#[tokio::test]
async fn a_full_memory_store_refuses_new_identities_even_when_failing_open() {
    let clock = Arc::new(ManualClock::new(T0));
    // BASIC leaves fail_open at its default, true.
    let cfg = CompiledConfig::compile(parse_yaml(BASIC).unwrap()).unwrap();
    assert!(cfg.fail_open());
    let store = Arc::new(MemoryStore::with_max_identities(clock.clone(), 1));
    let d = Decider::new(live_config::shared(cfg), store, clock);
    assert_eq!(
        d.decide(&req("10.0.0.1", "/x")).await.response.verdict,
        Verdict::Allow
    );
    let refused = d.decide(&req("10.0.0.2", "/x")).await;
    assert_eq!(refused.response.verdict, Verdict::Unavailable);
    assert!(matches!(refused.store_error, Some(StoreError::Full(1))));
    assert_eq!(refused.identity.as_deref(), Some("ip:10.0.0.2"));
    // In a batch too, and the tracked identity goes on.
    let batch = d
        .decide_batch(&[req("10.0.0.3", "/x"), req("10.0.0.1", "/x")])
        .await;
    assert_eq!(batch[0].response.verdict, Verdict::Unavailable);
    assert_eq!(batch[1].response.verdict, Verdict::Allow);
    assert_eq!(batch[1].response.counter.as_ref().unwrap().remaining, 1);
}
