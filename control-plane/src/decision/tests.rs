use rl_wire::PolicyReport;

use super::answer::{MAX_ECHOED_PATH, bounded};
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
    assert_eq!(c.policy.as_deref(), Some("free-60s"));
    assert_eq!(c.reset_after, Some(60));
    assert_eq!(
        first.policies,
        [PolicyReport {
            name: "free-60s".into(),
            limit: 3,
            window: 60
        }]
    );
    assert!(!first.shadow_denied);
    clock.advance(10_000_000);
    d.decide(&req("10.0.0.1", "/other")).await;
    d.decide(&req("10.0.0.1", "/other")).await;
    let denied = d.decide(&req("10.0.0.1", "/other")).await.response;
    assert_eq!(denied.verdict, Verdict::Deny);
    let c = denied.counter.unwrap();
    assert_eq!((c.limit, c.remaining), (3, 0));
    assert_eq!(c.retry_after, Some(50));
    assert_eq!(
        c.reset_after,
        Some(50),
        "on a deny, reset_after is Retry-After"
    );
    assert_eq!(c.reset, T0 / 1_000_000 + 60);
    assert_eq!(c.reset_at.as_deref(), Some("2023-11-14T22:14:20Z"));
    assert_eq!(denied.policies.len(), 1);
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

const WINDOWS: &str = r#"
default_tier: free
tiers:
  - name: free
    limits:
      - {limit: 3, window_seconds: 1}
      - {limit: 5, window_seconds: 60}
    endpoints:
      /api/v1/search:
        limits: [{limit: 2, window_seconds: 1}, {limit: 4, window_seconds: 600}]
"#;

fn policy(name: &str, limit: u64, window: u64) -> PolicyReport {
    PolicyReport {
        name: name.into(),
        limit,
        window,
    }
}

#[tokio::test]
async fn every_window_that_applies_is_a_policy_tier_first() {
    let (_clock, d) = decider(WINDOWS);
    let r = d.decide(&req("10.0.0.1", "/api/v1/search")).await.response;
    assert_eq!(
        r.policies,
        [
            policy("free-1s", 3, 1),
            policy("free-60s", 5, 60),
            policy("free-/api/v1/search-1s", 2, 1),
            policy("free-/api/v1/search-600s", 4, 600),
        ]
    );
    let r = d.decide(&req("10.0.0.1", "/other")).await.response;
    assert_eq!(
        r.policies,
        [policy("free-1s", 3, 1), policy("free-60s", 5, 60)]
    );
}

#[tokio::test]
async fn the_burst_window_binds_first_then_the_long_one() {
    let (clock, d) = decider(WINDOWS);
    let describe = |r: &DecisionResponse| {
        let c = r.counter.as_ref().unwrap();
        (
            r.verdict,
            c.policy.clone().unwrap(),
            c.limit,
            c.remaining,
            c.window,
        )
    };
    // 1 s window: 3 left, 2, 1; 60 s window: 5 left, 4, 3. Least remaining: the burst.
    for remaining in [2, 1, 0] {
        let r = d.decide(&req("10.0.0.1", "/other")).await.response;
        assert_eq!(
            describe(&r),
            (Verdict::Allow, "free-1s".into(), 3, remaining, 1)
        );
    }
    let denied = d.decide(&req("10.0.0.1", "/other")).await.response;
    assert_eq!(
        describe(&denied),
        (Verdict::Deny, "free-1s".into(), 3, 0, 1)
    );
    let c = denied.counter.unwrap();
    assert_eq!((c.retry_after, c.reset_after), (Some(1), Some(1)));
    assert_eq!(c.reset, T0 / 1_000_000 + 1);
    // A second later the burst has room; the long window now has the least remaining.
    clock.advance(1_000_000);
    let r = d.decide(&req("10.0.0.1", "/other")).await.response;
    assert_eq!(describe(&r), (Verdict::Allow, "free-60s".into(), 5, 1, 60));
    assert_eq!(r.counter.unwrap().reset_after, Some(59));
    d.decide(&req("10.0.0.1", "/other")).await;
    clock.advance(1_000_000);
    let denied = d.decide(&req("10.0.0.1", "/other")).await.response;
    assert_eq!(
        describe(&denied),
        (Verdict::Deny, "free-60s".into(), 5, 0, 60)
    );
    let c = denied.counter.unwrap();
    assert_eq!(
        c.retry_after,
        Some(58),
        "the first of five leaves the minute at T0 + 60 s"
    );
    assert_eq!(c.reset_after, c.retry_after);
}

#[tokio::test]
async fn retry_after_waits_for_every_full_window() {
    let yaml = "default_tier: t
tiers:
  - name: t
    limits: [{limit: 2, window_seconds: 10}, {limit: 3, window_seconds: 100}]
";
    let (clock, d) = decider(yaml);
    d.decide(&req("10.0.0.1", "/x")).await;
    clock.advance(8_000_000);
    d.decide(&req("10.0.0.1", "/x")).await;
    clock.advance(1_000_000);
    // The 10 s window is full (room at T0 + 10 s); the 100 s one has one left.
    let denied = d.decide(&req("10.0.0.1", "/x")).await.response;
    let c = denied.counter.unwrap();
    assert_eq!(
        (c.policy.as_deref(), c.retry_after),
        (Some("t-10s"), Some(1))
    );
    clock.advance(1_000_000);
    assert_eq!(
        d.decide(&req("10.0.0.1", "/x")).await.response.verdict,
        Verdict::Allow
    );
    // Both full now: the 10 s one until T0 + 18 s, the 100 s one until T0 + 100 s. Both are
    // described by the lower limit, and the wait covers both.
    clock.advance(500_000);
    let denied = d.decide(&req("10.0.0.1", "/x")).await.response;
    let c = denied.counter.unwrap();
    assert_eq!(c.policy.as_deref(), Some("t-10s"));
    assert_eq!(
        c.retry_after,
        Some(90),
        "until T0 + 100 s, from T0 + 10.5 s"
    );
    assert_eq!(c.reset, T0 / 1_000_000 + 100);
}

const SHADOWED: &str = r#"
default_tier: free
tiers:
  - name: free
    limits:
      - {limit: 2, window_seconds: 1}
      - {limit: 100, window_seconds: 60}
    endpoints:
      /api/v1/new:
        limits: [{limit: 1, window_seconds: 60}]
        shadow: true
"#;

#[tokio::test]
async fn a_full_shadow_window_admits_with_the_headers_of_an_enforced_limit() {
    let (_clock, d) = decider(SHADOWED);
    let first = d.decide(&req("10.0.0.1", "/api/v1/new")).await;
    assert_eq!(first.response.verdict, Verdict::Allow);
    assert!(!first.response.shadow_denied);
    assert_eq!(first.shadow_denial, None);
    let second = d.decide(&req("10.0.0.1", "/api/v1/new")).await;
    let r = &second.response;
    assert_eq!(r.verdict, Verdict::Allow, "a shadow window never refuses");
    assert!(r.shadow_denied);
    let c = r.counter.as_ref().unwrap();
    assert_eq!(
        (c.policy.as_deref(), c.limit, c.remaining, c.retry_after),
        (Some("free-/api/v1/new-60s"), 1, 0, None),
        "described as an enforced limit would be, without Retry-After"
    );
    assert_eq!(c.reset_after, Some(60));
    assert_eq!(
        second.shadow_denial,
        Some(ShadowDenial {
            policy: "free-/api/v1/new-60s".into(),
            limit: 1,
            window: 60,
            endpoint: "/api/v1/new".into(),
            retry_after: 60,
        })
    );
    // The enforced burst window still decides.
    let third = d.decide(&req("10.0.0.1", "/api/v1/new")).await.response;
    assert_eq!(third.verdict, Verdict::Deny);
    let c = third.counter.unwrap();
    assert_eq!(c.policy.as_deref(), Some("free-1s"));
    assert!(!third.shadow_denied);
}

#[tokio::test]
async fn shadow_at_the_top_admits_everything_and_reports_it() {
    let (_clock, d) = decider(&format!(
        "shadow: true
{BASIC}"
    ));
    for i in 1..=5 {
        let decision = d.decide(&req("10.0.0.1", "/api/v1/request")).await;
        let r = decision.response;
        assert_eq!(r.verdict, Verdict::Allow, "request {i}");
        // The rule (2) is full from the third request on, the budget (3) from the fourth.
        assert_eq!(r.shadow_denied, i > 2, "request {i}");
        let c = r.counter.unwrap();
        assert_eq!(c.remaining, 2u64.saturating_sub(i), "request {i}");
        if i > 2 {
            // Both full from the fourth: the lower limit is described.
            let denial = decision.shadow_denial.unwrap();
            assert_eq!(denial.policy, "free-/api/v1/request-60s", "request {i}");
        }
    }
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

const COSTLY: &str = r#"
default_tier: free
tiers:
  - name: free
    requests_per_window: 12
    window_size_seconds: 60
    endpoints:
      /export: {limits: [{limit: 20, window_seconds: 120}], cost: 5}
"#;

#[tokio::test]
async fn a_rule_cost_is_taken_from_every_window_and_reported_in_units() {
    let (clock, d) = decider(COSTLY);
    let first = d.decide(&req("10.0.0.1", "/export")).await.response;
    let c = first.counter.unwrap();
    // The budget (12) has the least remaining: 7 units.
    assert_eq!((c.limit, c.remaining, c.window), (12, 7, 60));
    clock.advance(10_000_000);
    let second = d.decide(&req("10.0.0.1", "/export")).await.response;
    let c = second.counter.unwrap();
    assert_eq!((c.limit, c.remaining), (12, 2));
    // 2 units left: the next 5 wait until the first request's units leave the budget, 50 s
    // from now (not until one unit does).
    let denied = d.decide(&req("10.0.0.1", "/export")).await.response;
    assert_eq!(denied.verdict, Verdict::Deny);
    let c = denied.counter.clone().unwrap();
    assert_eq!((c.limit, c.remaining, c.window), (12, 0, 60));
    assert_eq!(c.retry_after, Some(50));
    assert!(
        c.units,
        "a budget that costly requests draw from counts units"
    );
    assert_eq!(denied.deny_for_ms, Some(50_000));
    // Again, answered from the deny cache the same way.
    let again = d.decide(&req("10.0.0.1", "/export")).await;
    assert!(again.cached);
    assert_eq!(again.response, denied);
    // A request of cost 1 still fits, twice.
    for remaining in [1, 0] {
        let cheap = d.decide(&req("10.0.0.1", "/other")).await;
        assert!(!cheap.cached);
        assert_eq!(cheap.response.verdict, Verdict::Allow);
        assert_eq!(cheap.response.counter.unwrap().remaining, remaining);
    }
}

const USAGE: &str = r#"
default_tier: free
tiers:
  - name: free
    requests_per_window: 1000
    window_size_seconds: 60
    endpoints:
      /login: {limits: [{limit: 2, window_seconds: 900}], count_statuses: [401]}
      /chat: {limits: [{limit: 10, window_seconds: 60}], max_charge: 50}
      /plain: 5
"#;

fn usage_item(handle: &str, charge: u64, release: bool) -> UsageRequest {
    UsageRequest {
        items: vec![rl_wire::UsageItem {
            handle: handle.to_string(),
            charge,
            release,
        }],
    }
}

#[tokio::test]
async fn admitted_requests_of_usage_rules_carry_a_handle_and_others_none() {
    let (_, d) = decider(USAGE);
    let login = d.decide(&req("10.0.0.1", "/login")).await.response;
    let usage = login.usage.expect("a handle");
    assert_eq!(usage.count_statuses, [401]);
    assert_eq!(usage.max_charge, None);
    let chat = d.decide(&req("10.0.0.1", "/chat")).await.response;
    assert_eq!(chat.usage.expect("a handle").max_charge, Some(50));
    assert!(
        d.decide(&req("10.0.0.1", "/plain"))
            .await
            .response
            .usage
            .is_none()
    );
    assert!(
        d.decide(&req("10.0.0.1", "/other"))
            .await
            .response
            .usage
            .is_none()
    );
}

#[tokio::test]
async fn a_charge_is_cut_to_max_charge_applied_once_and_refuses_the_next_request() {
    let (_, d) = decider(USAGE);
    let chat = d.decide(&req("10.0.0.1", "/chat")).await.response;
    let handle = chat.usage.expect("a handle").handle;
    let report = d.usage(&usage_item(&handle, 1000, true)).await.unwrap();
    // Cut to 50; no release on a rule without count_statuses.
    assert_eq!((report.response.charged, report.response.released), (50, 0));
    assert_eq!(report.charged, [("free".to_string(), 50)]);
    // Sent again (a lost answer): nothing more.
    let again = d.usage(&usage_item(&handle, 1000, false)).await.unwrap();
    assert_eq!(again.response.charged, 0);
    let next = d.decide(&req("10.0.0.1", "/chat")).await.response;
    assert_eq!(next.verdict, Verdict::Deny);
    assert!(
        next.counter.expect("counter").units,
        "a charged rule counts units"
    );
    // The tier took the charge too: 51 of 1000 used.
    let other = d.decide(&req("10.0.0.1", "/other")).await.response;
    assert_eq!(other.counter.expect("counter").remaining, 1000 - 52);
}

#[tokio::test]
async fn a_released_login_gives_its_unit_back_and_denials_of_such_rules_are_never_cached() {
    let (_, d) = decider(USAGE);
    let first = d.decide(&req("10.0.0.1", "/login")).await.response;
    let second = d.decide(&req("10.0.0.1", "/login")).await.response;
    let refused = d.decide(&req("10.0.0.1", "/login")).await;
    assert_eq!(refused.response.verdict, Verdict::Deny);
    assert_eq!(refused.response.deny_for_ms, None, "its counter can shrink");
    let counter = refused.response.counter.clone().expect("counter");
    assert!(
        !counter.units,
        "a rule of cost 1 without charges counts requests"
    );
    assert!(d.deny_cache().is_empty(), "nothing learnt of it");
    // The first login succeeded: its unit comes back, once.
    let handle = first.usage.expect("a handle").handle;
    let report = d.usage(&usage_item(&handle, 0, true)).await.unwrap();
    assert_eq!(report.response.released, 1);
    assert_eq!(report.released, [("free".to_string(), 1)]);
    assert_eq!(
        d.usage(&usage_item(&handle, 0, true))
            .await
            .unwrap()
            .response
            .released,
        0
    );
    let third = d.decide(&req("10.0.0.1", "/login")).await;
    assert_eq!(
        third.response.verdict,
        Verdict::Allow,
        "not answered from a cache"
    );
    assert!(!third.cached);
    assert!(second.usage.is_some());
}

#[tokio::test]
async fn handles_that_are_not_ours_or_name_a_rule_gone_are_skipped() {
    let (_, d) = decider(USAGE);
    for handle in [
        "",
        "garbage",
        r#"["u1",1,1,"zz","free","/login","ip:10.0.0.1"]"#,
    ] {
        let report = d.usage(&usage_item(handle, 10, true)).await.unwrap();
        assert_eq!(report.response, UsageResponse::default(), "{handle}");
    }
    // A well-formed handle of a rule the configuration does not have.
    let forged = usage::Handle::new(T0, 1, "free", "/nope", "ip:10.0.0.1")
        .encode()
        .expect("encodes");
    let report = d.usage(&usage_item(&forged, 10, true)).await.unwrap();
    assert_eq!(report.response, UsageResponse::default());
    // A release whose weight is not the rule's cost takes nothing.
    let first = d.decide(&req("10.0.0.1", "/login")).await;
    assert_eq!(first.response.verdict, Verdict::Allow);
    let heavy = usage::Handle::new(T0, 3, "free", "/login", "ip:10.0.0.1")
        .encode()
        .expect("encodes");
    let report = d.usage(&usage_item(&heavy, 0, true)).await.unwrap();
    assert_eq!(report.response.released, 0);
}
