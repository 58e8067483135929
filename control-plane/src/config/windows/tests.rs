use std::collections::HashSet;

use super::*;
use crate::config::CounterAlgorithm;
use crate::config::parse_yaml;

fn tier(doc: &str) -> TierConfig {
    let cfg = parse_yaml(&format!("default_tier: t\ntiers:\n  - name: t\n{doc}"))
        .unwrap_or_else(|e| panic!("{e}\n{doc}"));
    cfg.tiers.into_iter().next().unwrap()
}

fn window(path: &str, limit: u64, seconds: u64, shadow: bool) -> WrittenWindow {
    WrittenWindow {
        path: path.into(),
        limit,
        seconds,
        shadow,
        algorithm: CounterAlgorithm::ExactLog,
        precision_ms: None,
    }
}

#[test]
fn the_shorthand_is_one_window_of_the_tier_window_size() {
    let t = tier("    requests_per_window: 100\n    window_size_seconds: 30\n");
    assert_eq!(
        tier_windows("tiers[0]", false, &t),
        [window("tiers[0].requests_per_window", 100, 30, false)]
    );
}

#[test]
fn limits_list_every_window_in_order() {
    let t = tier(
        "    limits:\n      - {limit: 10, window_seconds: 1}\n      - {limit: 100, window_seconds: 60}\n",
    );
    assert_eq!(
        tier_windows("tiers[2]", false, &t),
        [
            window("tiers[2].limits[0]", 10, 1, false),
            window("tiers[2].limits[1]", 100, 60, false),
        ]
    );
}

#[test]
fn an_unlimited_tier_has_no_windows() {
    let t = tier("    unlimited: true\n    endpoints:\n      /x: 5\n");
    assert!(tier_windows("tiers[0]", false, &t).is_empty());
    // Its rules still count, over window_size_seconds (60 by default).
    let rule = &t.endpoints["/x"];
    assert_eq!(
        rule_windows("tiers[0]", false, &t, "/x", rule),
        [window("tiers[0].endpoints./x", 5, 60, false)]
    );
}

#[test]
fn rule_windows_in_both_forms() {
    let t = tier(
        "    limits: [{limit: 100, window_seconds: 60}]\n    window_size_seconds: 10\n    endpoints:\n      /short: 5\n      /long: {limits: [{limit: 2, window_seconds: 1}, {limit: 30, window_seconds: 60}]}\n",
    );
    assert_eq!(
        rule_windows("tiers[0]", false, &t, "/short", &t.endpoints["/short"]),
        [window("tiers[0].endpoints./short", 5, 10, false)]
    );
    assert_eq!(
        rule_windows("tiers[0]", false, &t, "/long", &t.endpoints["/long"]),
        [
            window("tiers[0].endpoints./long.limits[0]", 2, 1, false),
            window("tiers[0].endpoints./long.limits[1]", 30, 60, false),
        ]
    );
}

#[test]
fn shadow_is_inherited_and_never_undone_below() {
    let t = tier(
        "    requests_per_window: 100\n    shadow: true\n    endpoints:\n      /a: 5\n      /b: {limits: [{limit: 2, window_seconds: 1}], shadow: false}\n",
    );
    assert!(tier_windows("tiers[0]", false, &t)[0].shadow);
    for pattern in ["/a", "/b"] {
        let windows = rule_windows("tiers[0]", false, &t, pattern, &t.endpoints[pattern]);
        assert!(windows.iter().all(|w| w.shadow), "{pattern}: {windows:?}");
    }
    // The top level shadows everything.
    let t = tier("    requests_per_window: 100\n    endpoints:\n      /a: 5\n");
    assert!(tier_windows("tiers[0]", true, &t)[0].shadow);
    assert!(rule_windows("tiers[0]", true, &t, "/a", &t.endpoints["/a"])[0].shadow);
    // A rule alone.
    let t = tier(
        "    requests_per_window: 100\n    endpoints:\n      /a: {limits: [{limit: 2, window_seconds: 1}], shadow: true}\n",
    );
    assert!(!tier_windows("tiers[0]", false, &t)[0].shadow);
    assert!(rule_windows("tiers[0]", false, &t, "/a", &t.endpoints["/a"])[0].shadow);
}

#[test]
fn an_enforced_window_dominates_one_no_longer_with_no_lower_limit() {
    let w = |limit, seconds| window("w", limit, seconds, false);
    assert!(w(100, 60).dominates(&w(200, 60)));
    assert!(w(100, 60).dominates(&w(100, 60)));
    assert!(w(100, 60).dominates(&w(100, 1)));
    assert!(!w(100, 60).dominates(&w(99, 1)));
    assert!(!w(100, 60).dominates(&w(1_000, 61)));
    // A shadow window refuses nothing, so it makes no other window useless.
    assert!(!window("s", 1, 60, true).dominates(&w(100, 1)));
}

#[test]
fn policy_names_name_the_tier_the_rule_and_the_window() {
    assert_eq!(policy_name("free", None, 60), "free-60s");
    assert_eq!(
        policy_name("free", Some("/api/v1/search"), 1),
        "free-/api/v1/search-1s"
    );
    assert_eq!(
        policy_name("free", Some("/api/v1/admin/*"), 86_400),
        "free-/api/v1/admin/*-86400s"
    );
}

#[test]
fn policy_names_are_ascii_and_keep_patterns_apart() {
    // A non-ASCII pattern and the pattern spelling its bytes as escapes are two rules.
    let raw = policy_name("free", Some("/café"), 60);
    let escaped = policy_name("free", Some("/caf%C3%A9"), 60);
    assert_eq!(raw, "free-/caf%C3%A9-60s");
    assert_eq!(escaped, "free-/caf%25C3%25A9-60s");
    assert!(raw.is_ascii() && escaped.is_ascii());
    assert_ne!(raw, escaped);
    // Printable ASCII only: no spaces, no control characters.
    let odd = policy_name("t", Some("/a\u{7f}b\"c"), 1);
    assert!(odd.bytes().all(|b| b.is_ascii_graphic()), "{odd}");
    assert_eq!(odd, "t-/a%7Fb\"c-1s");
}

#[test]
fn policy_names_are_unique_per_counter_and_window() {
    let tiers = ["free", "free_2", "f"];
    let rules = [
        None,
        Some("/a"),
        Some("/a-1s"),
        Some("/a-1"),
        Some("/60"),
        Some("/*"),
    ];
    let lengths = [1, 10, 60, 601];
    let mut seen = HashSet::new();
    for tier in tiers {
        for rule in rules {
            for seconds in lengths {
                let name = policy_name(tier, rule, seconds);
                assert!(seen.insert(name.clone()), "{name} named twice");
            }
        }
    }
}

/// (path, algorithm, precision as written) of each window.
fn algorithms(windows: &[WrittenWindow]) -> Vec<(&str, CounterAlgorithm, Option<u64>)> {
    windows
        .iter()
        .map(|w| (w.path.as_str(), w.algorithm, w.precision_ms))
        .collect()
}

#[test]
fn the_tier_algorithm_applies_unless_a_window_says_otherwise() {
    use CounterAlgorithm::{ExactLog, Slotted};
    let t = tier(
        "    algorithm: slotted\n    limits: [{limit: 10, window_seconds: 1, algorithm: exact}, {limit: 100, window_seconds: 60, precision_ms: 500}]\n    endpoints:\n      /short: 5\n      /long: {limits: [{limit: 2, window_seconds: 1}, {limit: 30, window_seconds: 600, algorithm: exact}]}\n",
    );
    assert_eq!(
        algorithms(&tier_windows("tiers[0]", false, &t)),
        [
            ("tiers[0].limits[0]", ExactLog, None),
            ("tiers[0].limits[1]", Slotted, Some(500)),
        ]
    );
    assert_eq!(
        algorithms(&rule_windows(
            "tiers[0]",
            false,
            &t,
            "/short",
            &t.endpoints["/short"]
        )),
        [("tiers[0].endpoints./short", Slotted, None)]
    );
    assert_eq!(
        algorithms(&rule_windows(
            "tiers[0]",
            false,
            &t,
            "/long",
            &t.endpoints["/long"]
        )),
        [
            ("tiers[0].endpoints./long.limits[0]", Slotted, None),
            ("tiers[0].endpoints./long.limits[1]", ExactLog, None),
        ]
    );
    // The shorthand budget takes the tier's too; without any, everything is exact.
    let t = tier("    algorithm: slotted\n    requests_per_window: 100\n");
    assert_eq!(tier_windows("tiers[0]", false, &t)[0].algorithm, Slotted);
    let t = tier(
        "    requests_per_window: 100\n    endpoints:\n      /a: 5\n      /b: {limits: [{limit: 2, window_seconds: 1, algorithm: slotted}]}\n",
    );
    assert_eq!(tier_windows("tiers[0]", false, &t)[0].algorithm, ExactLog);
    assert_eq!(
        rule_windows("tiers[0]", false, &t, "/a", &t.endpoints["/a"])[0].algorithm,
        ExactLog
    );
    assert_eq!(
        rule_windows("tiers[0]", false, &t, "/b", &t.endpoints["/b"])[0].algorithm,
        Slotted
    );
}

#[test]
fn a_window_counts_with_its_algorithm_and_slot() {
    let exact = window("w", 100, 60, false);
    assert_eq!(exact.counter_algorithm(), Algorithm::Exact);
    let slotted = |seconds, precision_ms| WrittenWindow {
        algorithm: CounterAlgorithm::Slotted,
        precision_ms,
        ..window("w", 100, seconds, false)
    };
    // The written precision, else the default (W/60, or the nearest valid slot).
    assert_eq!(
        slotted(60, Some(500)).counter_algorithm(),
        Algorithm::Slotted { slot_us: 500_000 }
    );
    assert_eq!(
        slotted(60, None).counter_algorithm(),
        Algorithm::Slotted { slot_us: 1_000_000 }
    );
    assert_eq!(
        slotted(1, None).counter_algorithm(),
        Algorithm::Slotted { slot_us: 20_000 }
    );
}
