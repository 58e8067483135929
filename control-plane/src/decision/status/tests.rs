use std::sync::Arc;

use async_trait::async_trait;
use rl_wire::{DecisionRequest, Verdict};

use super::*;
use crate::config::{CompiledConfig, CounterAlgorithm, parse_yaml};
use crate::live_config;
use crate::store::{CounterSpec, CounterStore, ManualClock, MemoryStore, Outcome};

const T0: u64 = 1_700_000_000_000_000;

const CONFIG: &str = r#"
default_tier: free
tiers:
  - name: free
    requests_per_window: 3
    window_size_seconds: 60
    endpoints:
      /api/v1/request: 2
  - name: gold
    requests_per_window: 10
    window_size_seconds: 10
  - name: open
    unlimited: true
whitelist: ["10.9.0.0/16", "user:monitor"]
api_keys:
  - id: acme
    tier: gold
    key: acme-key-0123456789
"#;

fn decider() -> (Arc<ManualClock>, Decider) {
    let clock = Arc::new(ManualClock::new(T0));
    let cfg = CompiledConfig::compile(parse_yaml(CONFIG).unwrap()).unwrap();
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let decider = Decider::new(live_config::shared(cfg), store, clock.clone());
    (clock, decider)
}

fn from(ip: &str, path: &str) -> DecisionRequest {
    DecisionRequest {
        ip: ip.into(),
        method: "GET".into(),
        path: path.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn reports_every_counter_of_the_tier_and_records_nothing() {
    let (clock, d) = decider();
    let first = d.decide(&from("10.0.0.1", "/api/v1/request")).await;
    assert_eq!(first.response.verdict, Verdict::Allow);
    clock.advance(5_000_000);
    d.decide(&from("10.0.0.1", "/other")).await;
    for _ in 0..3 {
        let report = d.status("ip:10.0.0.1", None).await.unwrap();
        assert_eq!(report.identifier, "ip:10.0.0.1");
        assert_eq!(report.tier, "free");
        assert!(!report.whitelisted);
        assert_eq!(
            report.counters,
            vec![
                CounterStatus {
                    counter: "tier_budget".into(),
                    policy: "free-60s".into(),
                    shadow: false,
                    limit: 3,
                    count: 2,
                    remaining: 1,
                    reset: Some(T0 / 1_000_000 + 60),
                    window_seconds: 60,
                    algorithm: CounterAlgorithm::ExactLog,
                    precision_ms: None,
                },
                CounterStatus {
                    counter: "/api/v1/request".into(),
                    policy: "free-/api/v1/request-60s".into(),
                    shadow: false,
                    limit: 2,
                    count: 1,
                    remaining: 1,
                    reset: Some(T0 / 1_000_000 + 60),
                    window_seconds: 60,
                    algorithm: CounterAlgorithm::ExactLog,
                    precision_ms: None,
                },
            ]
        );
    }
}

#[tokio::test]
async fn reports_every_window_of_the_tier_and_of_each_rule() {
    let clock = Arc::new(ManualClock::new(T0));
    let yaml = "default_tier: t\ntiers:\n  - name: t\n    limits: [{limit: 5, window_seconds: 1}, {limit: 50, window_seconds: 60}]\n    endpoints:\n      /s: {limits: [{limit: 1, window_seconds: 1}, {limit: 10, window_seconds: 600}], shadow: true}\n      /r: 3\n";
    let cfg = CompiledConfig::compile(parse_yaml(yaml).unwrap()).unwrap();
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let d = Decider::new(live_config::shared(cfg), store, clock);
    // Two requests to /s: the second finds its shadowed 1-s window full and is not recorded
    // there (a shadow counter never exceeds its limit), but is recorded everywhere else.
    for _ in 0..2 {
        assert_eq!(
            d.decide(&from("10.0.0.1", "/s")).await.response.verdict,
            Verdict::Allow
        );
    }
    let report = d.status("ip:10.0.0.1", None).await.unwrap();
    let seen: Vec<(&str, &str, bool, u64, u64, u64)> = report
        .counters
        .iter()
        .map(|c| {
            (
                c.counter.as_str(),
                c.policy.as_str(),
                c.shadow,
                c.limit,
                c.window_seconds,
                c.count,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("tier_budget", "t-1s", false, 5, 1, 2),
            ("tier_budget", "t-60s", false, 50, 60, 2),
            ("/r", "t-/r-60s", false, 3, 60, 0),
            ("/s", "t-/s-1s", true, 1, 1, 1),
            ("/s", "t-/s-600s", true, 10, 600, 2),
        ]
    );
}

#[tokio::test]
async fn ip_forms_are_made_canonical() {
    let (_clock, d) = decider();
    d.decide(&from("::ffff:192.0.2.1", "/x")).await;
    let report = d.status("ip:192.0.2.1", None).await.unwrap();
    assert_eq!(report.identifier, "ip:192.0.2.1");
    assert_eq!(report.counters[0].count, 1);
    let report = d.status("ip:::FFFF:192.0.2.1", None).await.unwrap();
    assert_eq!(report.identifier, "ip:192.0.2.1");
}

#[tokio::test]
async fn an_ipv6_client_is_known_by_its_group_and_by_any_of_its_addresses() {
    let (_clock, d) = decider();
    d.decide(&from("2001:db8::1", "/x")).await;
    d.decide(&from("2001:db8::2:1", "/x")).await;
    for asked in [
        "ip:2001:db8::/64",
        "ip:2001:0db8:0:0::/64",
        "ip:2001:db8::ffff/64",
        "ip:2001:db8::1",
        "ip:2001:db8::abcd:1",
    ] {
        let report = d.status(asked, None).await.unwrap();
        assert_eq!(report.identifier, "ip:2001:db8::/64", "{asked}");
        assert_eq!(report.counters[0].count, 2, "{asked}");
    }
    for (asked, fragment) in [
        ("ip:2001:db8::/48", "counted by /64"),
        ("ip:2001:db8::1/128", "counted by /64"),
        ("ip:10.0.0.0/8", "IPv4 clients are not grouped"),
        ("ip:::ffff:10.0.0.0/104", "IPv4 clients are not grouped"),
    ] {
        match d.status(asked, None).await {
            Err(err @ StatusError::NotAGroup(_)) => {
                assert!(err.to_string().contains(fragment), "{asked}: {err}")
            }
            other => panic!("{asked}: {other:?}"),
        }
    }
    assert!(matches!(
        d.status("ip:2001:db8:0:1::/64", None).await,
        Err(StatusError::NotFound)
    ));
}

#[tokio::test]
async fn without_grouping_an_ipv6_address_is_its_own_identifier() {
    let clock = Arc::new(ManualClock::new(T0));
    let mut doc = parse_yaml(CONFIG).unwrap();
    doc.ipv6_prefix_length = 128;
    let cfg = CompiledConfig::compile(doc).unwrap();
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let d = Decider::new(live_config::shared(cfg), store, clock);
    d.decide(&from("2001:db8::1", "/x")).await;
    for asked in ["ip:2001:db8::1", "ip:2001:0db8::1/128"] {
        let report = d.status(asked, None).await.unwrap();
        assert_eq!(report.identifier, "ip:2001:db8::1", "{asked}");
        assert_eq!(report.counters[0].count, 1);
    }
    assert!(matches!(
        d.status("ip:2001:db8::2", None).await,
        Err(StatusError::NotFound)
    ));
}

#[tokio::test]
async fn a_whitelisted_ipv6_group_is_known_while_idle() {
    let clock = Arc::new(ManualClock::new(T0));
    let mut doc = parse_yaml(CONFIG).unwrap();
    doc.whitelist.push("ip:2001:db8:5:5::/64".into());
    let cfg = CompiledConfig::compile(doc).unwrap();
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let d = Decider::new(live_config::shared(cfg), store, clock);
    assert!(
        d.status("ip:2001:db8:5:5::/64", None)
            .await
            .unwrap()
            .whitelisted
    );
    assert!(
        d.status("ip:2001:db8:5:5::9", None)
            .await
            .unwrap()
            .whitelisted
    );
    assert_eq!(
        d.decide(&from("2001:db8:5:5:1::1", "/x"))
            .await
            .response
            .verdict,
        Verdict::Whitelisted
    );
}

#[tokio::test]
async fn registered_keys_use_their_tier_and_an_explicit_tier_wins() {
    let (_clock, d) = decider();
    let report = d.status("key:acme", None).await.unwrap();
    assert_eq!(report.tier, "gold", "a registered key is known while idle");
    assert_eq!(report.counters[0].count, 0);
    assert_eq!(report.counters[0].reset, None);
    let report = d.status("key:acme", Some("free")).await.unwrap();
    assert_eq!(report.tier, "free");
    assert_eq!(report.counters.len(), 2);
    let report = d.status("key:acme", Some("open")).await.unwrap();
    assert!(
        report.counters.is_empty(),
        "an unlimited tier has no counter"
    );
}

#[tokio::test]
async fn whitelisted_identifiers_are_known_while_idle() {
    let (_clock, d) = decider();
    assert!(d.status("ip:10.9.1.1", None).await.unwrap().whitelisted);
    assert!(d.status("user:monitor", None).await.unwrap().whitelisted);
}

#[tokio::test]
async fn refuses_what_it_cannot_answer() {
    let (_clock, d) = decider();
    for bad in [
        "",
        "ip:",
        "ip:not-an-ip",
        "ip:2001:db8::/x",
        "ip:2001:db8::/129",
        "host:x",
        "nothing",
        &format!("key:{}", "k".repeat(300)),
    ] {
        assert!(
            matches!(
                d.status(bad, None).await,
                Err(StatusError::InvalidIdentifier)
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        d.status("key:acme", Some("platinum")).await,
        Err(StatusError::UnknownTier)
    ));
    assert!(matches!(
        d.status("user:nobody", None).await,
        Err(StatusError::NotFound)
    ));
}

/// A store whose every call fails.
struct Down;

#[async_trait]
impl CounterStore for Down {
    async fn check_and_record_weighted(
        &self,
        _: &str,
        _: &[CounterSpec],
        _: u64,
    ) -> Result<Outcome, StoreError> {
        Err(StoreError::Timeout(100))
    }
    async fn peek(&self, _: &str, _: &[CounterSpec]) -> Result<Outcome, StoreError> {
        Err(StoreError::Timeout(100))
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Timeout(100))
    }
    fn backend(&self) -> &'static str {
        "down"
    }
}

#[tokio::test]
async fn a_store_failure_keeps_its_cause() {
    let cfg = CompiledConfig::compile(parse_yaml(CONFIG).unwrap()).unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let d = Decider::new(live_config::shared(cfg), Arc::new(Down), clock);
    let err = d.status("ip:10.0.0.1", None).await.unwrap_err();
    assert!(matches!(err, StatusError::Store(StoreError::Timeout(100))));
    assert_eq!(err.to_string(), "counter store timed out after 100 ms");
}

#[tokio::test]
async fn every_window_names_its_algorithm_and_a_slotted_one_its_slot() {
    let clock = Arc::new(ManualClock::new(T0));
    let yaml = "default_tier: t\ntiers:\n  - name: t\n    algorithm: slotted\n    limits: [{limit: 5, window_seconds: 1, algorithm: exact}, {limit: 50, window_seconds: 60}]\n    endpoints:\n      /s: {limits: [{limit: 10, window_seconds: 600, precision_ms: 20000}]}\n";
    let cfg = CompiledConfig::compile(parse_yaml(yaml).unwrap()).unwrap();
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let d = Decider::new(live_config::shared(cfg), store, clock);
    d.decide(&from("10.0.0.1", "/s")).await;
    let report = d.status("ip:10.0.0.1", None).await.unwrap();
    let seen: Vec<(&str, CounterAlgorithm, Option<u64>)> = report
        .counters
        .iter()
        .map(|c| (c.policy.as_str(), c.algorithm, c.precision_ms))
        .collect();
    assert_eq!(
        seen,
        [
            ("t-1s", CounterAlgorithm::ExactLog, None),
            ("t-60s", CounterAlgorithm::Slotted, Some(1_000)),
            ("t-/s-600s", CounterAlgorithm::Slotted, Some(20_000)),
        ]
    );
    // As JSON: `algorithm` always, `precision_ms` only for a slotted window.
    let json = serde_json::to_value(&report.counters).unwrap();
    assert_eq!(json[0]["algorithm"], "exact");
    assert!(json[0].get("precision_ms").is_none(), "{json}");
    assert_eq!(json[1]["algorithm"], "slotted");
    assert_eq!(json[1]["precision_ms"], 1_000);
}
