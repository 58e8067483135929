use std::sync::Arc;

use rl_wire::LocalDenials;

use super::*;
use crate::config::parse_yaml;
use crate::store::MemoryStore;

const YAML: &str = r#"
default_tier: free
tiers:
  - name: free
    requests_per_window: 10
    window_size_seconds: 60
    endpoints:
      /api/v1/search: 2
      /api/v1/items/*: 3
  - name: pro
    requests_per_window: 100
    window_size_seconds: 60
"#;

fn cfg() -> CompiledConfig {
    CompiledConfig::compile(parse_yaml(YAML).unwrap()).unwrap()
}

fn entry(tier: Option<&str>, endpoint: &str, policy: Option<&str>, count: u64) -> LocalDenials {
    LocalDenials {
        tier: tier.map(str::to_string),
        endpoint: endpoint.into(),
        policy: policy.map(str::to_string),
        count,
    }
}

#[test]
fn entries_resolve_to_the_labels_a_decision_would_use() {
    let cfg = cfg();
    let rule = resolve(
        &cfg,
        &entry(
            Some("free"),
            "/api/v1/search",
            Some("free-/api/v1/search-60s"),
            1,
        ),
    )
    .unwrap();
    assert_eq!(
        rule,
        Resolved {
            tier: "free",
            rule: Some("/api/v1/search"),
            policy: "free-/api/v1/search-60s"
        }
    );
    // The tier window bound: the endpoint is the request path, which matched a prefix rule.
    let budget = resolve(
        &cfg,
        &entry(Some("free"), "/api/v1/items/7", Some("free-60s"), 1),
    );
    assert_eq!(budget.unwrap().rule, Some("/api/v1/items/*"));
    let other = resolve(
        &cfg,
        &entry(Some("free"), "/elsewhere", Some("free-60s"), 1),
    );
    assert_eq!(other.unwrap().rule, None);
}

#[test]
fn entries_naming_what_the_configuration_lacks_are_ignored() {
    let cfg = cfg();
    for bad in [
        entry(None, "/x", Some("free-60s"), 1),
        entry(Some("gold"), "/x", Some("free-60s"), 1),
        entry(Some("free"), "/x", None, 1),
        entry(Some("free"), "/x", Some("made-up"), 1),
        // A policy of another tier.
        entry(Some("free"), "/x", Some("pro-60s"), 1),
    ] {
        assert_eq!(resolve(&cfg, &bad), None, "{bad:?}");
    }
}

#[test]
fn counts_are_bounded_per_call_and_reach_the_metrics() {
    let cfg = cfg();
    let metrics = Metrics::new(Arc::new(MemoryStore::new()));
    metrics.follow_config(&cfg);
    let huge = entry(
        Some("free"),
        "/api/v1/search",
        Some("free-/api/v1/search-60s"),
        u64::MAX,
    );
    assert_eq!(
        count(&metrics, &cfg, &[huge.clone(), huge]),
        MAX_COUNT_PER_CALL
    );
    let ok = entry(Some("pro"), "/x", Some("pro-60s"), 1);
    let many = vec![ok; MAX_ENTRIES_PER_CALL + 10];
    assert_eq!(count(&metrics, &cfg, &many), MAX_ENTRIES_PER_CALL as u64);
    let snap = metrics.snapshot(["free", "pro"], ["/api/v1/search"], ["pro-60s"]);
    assert_eq!(
        snap.throttled_requests,
        MAX_COUNT_PER_CALL + MAX_ENTRIES_PER_CALL as u64
    );
    assert_eq!(snap.by_tier["free"], MAX_COUNT_PER_CALL);
    assert_eq!(snap.by_endpoint["/api/v1/search"], MAX_COUNT_PER_CALL);
    assert_eq!(snap.by_policy["pro-60s"], MAX_ENTRIES_PER_CALL as u64);
    assert_eq!(
        snap.by_policy["free-/api/v1/search-60s"],
        MAX_COUNT_PER_CALL
    );
    let text = metrics.encode_prometheus();
    assert!(
        text.contains(&format!(
            "rate_limit_throttled_total{{tier=\"free\",endpoint=\"/api/v1/search\"}} {MAX_COUNT_PER_CALL}"
        )),
        "{text}"
    );
    assert!(
        text.contains("rate_limit_deny_cache_hits_total 0"),
        "{text}"
    );
}
