use super::*;
use crate::store::MemoryStore;

fn obs(
    verdict: Verdict,
    tier: Option<&'static str>,
    rule: Option<&'static str>,
) -> Observation<'static> {
    Observation {
        verdict,
        tier,
        rule,
        policy: None,
        shadow_denied: false,
        store_error: None,
        elapsed: Duration::from_micros(300),
    }
}

#[test]
fn counts_add_up_and_labels_stay_bounded() {
    let m = Metrics::new(Arc::new(MemoryStore::new()));
    for _ in 0..3 {
        m.observe(&obs(Verdict::Allow, Some("free"), Some("/api/v1/request")));
    }
    m.observe(&obs(Verdict::Deny, Some("free"), Some("/api/v1/request")));
    m.observe(&obs(Verdict::Deny, Some("premium"), None));
    m.observe(&obs(Verdict::Whitelisted, None, None));
    let err = StoreError::Timeout(100);
    m.observe(&Observation {
        store_error: Some(&err),
        ..obs(Verdict::FailedOpen, None, None)
    });
    let s = m.snapshot(
        ["free", "premium", "enterprise"],
        ["/api/v1/request", "/x/*"],
        [],
    );
    assert_eq!(
        (s.total_requests, s.allowed_requests, s.throttled_requests),
        (5, 3, 2)
    );
    assert!((s.throttle_rate - 0.4).abs() < 1e-9);
    assert_eq!(s.by_tier["free"], 1);
    assert_eq!(s.by_tier["premium"], 1);
    assert_eq!(s.by_tier["enterprise"], 0);
    assert_eq!(s.by_endpoint["/api/v1/request"], 1);
    assert_eq!(s.by_endpoint["other"], 1);
    assert_eq!(s.by_endpoint["/x/*"], 0);
    assert_eq!(
        (
            s.whitelisted_requests,
            s.failed_open_requests,
            s.redis_errors
        ),
        (1, 1, 1)
    );
    assert!(s.p95_check_latency_ms > 0.0 && s.p95_check_latency_ms < 1.0);

    let text = m.encode_prometheus();
    for line in [
        r#"rate_limit_requests_total{tier="free",endpoint="/api/v1/request",decision="allowed"} 3"#,
        r#"rate_limit_throttled_total{tier="premium",endpoint="other"} 1"#,
        r#"rate_limit_redis_errors_total{kind="timeout"} 1"#,
        "rate_limit_check_duration_seconds_count 7",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}

#[test]
fn calls_let_in_by_the_previous_decision_secret_are_counted() {
    let m = Metrics::new(Arc::new(MemoryStore::new()));
    assert!(
        m.encode_prometheus()
            .contains("\nrate_limit_decision_secret_previous_total 0\n")
    );
    m.previous_secret_used();
    m.previous_secret_used();
    assert!(
        m.encode_prometheus()
            .contains("\nrate_limit_decision_secret_previous_total 2\n")
    );
}

#[test]
fn a_full_store_is_counted_apart_from_store_errors() {
    let store = Arc::new(MemoryStore::new());
    let m = Metrics::new(store.clone());
    let full = StoreError::Full(3);
    m.observe(&Observation {
        store_error: Some(&full),
        ..obs(Verdict::Unavailable, Some("free"), None)
    });
    let s = m.snapshot(["free"], [], []);
    assert_eq!(
        (
            s.store_full_refusals,
            s.unavailable_requests,
            s.redis_errors
        ),
        (1, 1, 0)
    );
    let text = m.encode_prometheus();
    for line in [
        "rate_limit_store_full_refusals_total 1",
        "rate_limit_memory_identities 0",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(!text.contains("rate_limit_redis_errors_total{"), "{text}");
}

fn compiled(yaml: &str) -> CompiledConfig {
    crate::config::parse_yaml(yaml)
        .and_then(CompiledConfig::compile)
        .expect("valid config")
}

const TWO_TIERS: &str = "default_tier: free
tiers:
  - name: free
    requests_per_window: 10
    endpoints:
      /a: 5
      /gone: 5
  - name: premium
    requests_per_window: 100
";

const ONE_TIER: &str = "default_tier: free
tiers:
  - name: free
    requests_per_window: 10
    endpoints:
      /a: 5
";

#[test]
fn a_change_drops_the_series_of_removed_tiers_and_rules() {
    let m = Metrics::new(Arc::new(MemoryStore::new()));
    m.follow_config(&compiled(TWO_TIERS));
    for (tier, rule) in [
        (Some("free"), Some("/a")),
        (Some("free"), Some("/gone")),
        (Some("premium"), None),
    ] {
        m.observe(&obs(Verdict::Allow, tier, rule));
        m.observe(&obs(Verdict::Deny, tier, rule));
    }
    m.observe(&obs(Verdict::FailedOpen, None, Some("/gone")));
    let text = m.encode_prometheus();
    assert!(text.contains(r#"tier="premium""#), "{text}");
    assert!(text.contains(r#"endpoint="/gone""#), "{text}");

    m.follow_config(&compiled(ONE_TIER));
    let text = m.encode_prometheus();
    for gone in [r#"tier="premium""#, r#"endpoint="/gone""#] {
        assert!(!text.contains(gone), "{gone} left in\n{text}");
    }
    for kept in [
        r#"rate_limit_requests_total{tier="free",endpoint="/a",decision="allowed"} 1"#,
        r#"rate_limit_throttled_total{tier="free",endpoint="/a"} 1"#,
    ] {
        assert!(text.contains(kept), "missing {kept} in\n{text}");
    }
    let s = m.snapshot(["free"], ["/a"], []);
    assert_eq!(s.by_tier.keys().collect::<Vec<_>>(), ["free"]);
    assert_eq!(s.by_endpoint.keys().collect::<Vec<_>>(), ["/a", "other"]);
    assert_eq!(s.throttled_requests, 3, "totals keep every decision");

    // A decision of the old configuration finishing late does not bring a series back;
    // it counts in the totals.
    m.observe(&obs(Verdict::Deny, Some("premium"), None));
    m.observe(&obs(Verdict::Allow, Some("free"), Some("/gone")));
    let text = m.encode_prometheus();
    assert!(!text.contains(r#"tier="premium""#), "{text}");
    assert!(!text.contains(r#"endpoint="/gone""#), "{text}");
    let s = m.snapshot(["free"], ["/a"], []);
    assert_eq!((s.total_requests, s.throttled_requests), (8, 4));
    assert!(!s.by_tier.contains_key("premium"));
}

#[test]
fn store_failures_keep_their_labels_under_any_configured_rule() {
    let m = Metrics::new(Arc::new(MemoryStore::new()));
    m.follow_config(&compiled(TWO_TIERS));
    let err = StoreError::Timeout(100);
    m.observe(&Observation {
        store_error: Some(&err),
        ..obs(Verdict::FailedOpen, None, Some("/a"))
    });
    let text = m.encode_prometheus();
    for line in [
        r#"rate_limit_requests_total{tier="none",endpoint="/a",decision="failed_open"} 1"#,
        r#"rate_limit_redis_errors_total{kind="timeout"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}

#[test]
fn shadow_denials_are_admitted_and_counted_apart() {
    let m = Metrics::new(Arc::new(MemoryStore::new()));
    let shadow = |policy| Observation {
        policy: Some(policy),
        shadow_denied: true,
        ..obs(Verdict::Allow, Some("free"), Some("/s"))
    };
    m.observe(&obs(Verdict::Allow, Some("free"), Some("/s")));
    m.observe(&shadow("free-/s-1s"));
    m.observe(&shadow("free-/s-1s"));
    m.observe(&Observation {
        policy: Some("free-60s"),
        ..obs(Verdict::Deny, Some("free"), Some("/s"))
    });
    let s = m.snapshot(["free"], ["/s"], ["free-60s", "free-/s-1s", "free-/s-60s"]);
    assert_eq!(
        (
            s.total_requests,
            s.allowed_requests,
            s.throttled_requests,
            s.shadow_throttled_requests
        ),
        (4, 3, 1, 2),
        "allowed + throttled = total: would-be denials were admitted"
    );
    assert_eq!(s.by_tier["free"], 1);
    assert_eq!(
        s.by_policy,
        BTreeMap::from([
            ("free-/s-1s".into(), 0),
            ("free-/s-60s".into(), 0),
            ("free-60s".into(), 1),
        ])
    );
    assert_eq!(s.shadow_by_policy["free-/s-1s"], 2);
    assert_eq!(s.shadow_by_policy["free-60s"], 0);

    let text = m.encode_prometheus();
    for line in [
        r#"rate_limit_requests_total{tier="free",endpoint="/s",decision="allowed"} 1"#,
        r#"rate_limit_requests_total{tier="free",endpoint="/s",decision="shadow_throttled"} 2"#,
        r#"rate_limit_requests_total{tier="free",endpoint="/s",decision="throttled"} 1"#,
        r#"rate_limit_throttled_total{tier="free",endpoint="/s"} 1"#,
        r#"rate_limit_policy_throttled_total{tier="free",policy="free-/s-1s",decision="shadow_throttled"} 2"#,
        r#"rate_limit_policy_throttled_total{tier="free",policy="free-60s",decision="throttled"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}

#[test]
fn a_change_drops_the_series_of_removed_windows() {
    let m = Metrics::new(Arc::new(MemoryStore::new()));
    let windows = "default_tier: free\ntiers:\n  - name: free\n    limits: [{limit: 5, window_seconds: 1}, {limit: 50, window_seconds: 60}]\n";
    m.follow_config(&compiled(windows));
    for policy in ["free-1s", "free-60s"] {
        m.observe(&Observation {
            policy: Some(policy),
            ..obs(Verdict::Deny, Some("free"), None)
        });
    }
    // A policy this configuration does not have gets no series.
    m.observe(&Observation {
        policy: Some("free-7s"),
        ..obs(Verdict::Deny, Some("free"), None)
    });
    let text = m.encode_prometheus();
    assert!(text.contains(r#"policy="free-1s""#), "{text}");
    assert!(!text.contains(r#"policy="free-7s""#), "{text}");
    // The burst window goes: its series and JSON key go with it.
    m.follow_config(&compiled(ONE_TIER));
    let text = m.encode_prometheus();
    assert!(!text.contains(r#"policy="free-1s""#), "{text}");
    assert!(
        text.contains(
            r#"rate_limit_policy_throttled_total{tier="free",policy="free-60s",decision="throttled"} 1"#
        ),
        "{text}"
    );
    let s = m.snapshot(["free"], ["/a"], ["free-60s", "free-/a-60s"]);
    assert_eq!(
        s.by_policy,
        BTreeMap::from([("free-/a-60s".into(), 0), ("free-60s".into(), 1)])
    );
}
