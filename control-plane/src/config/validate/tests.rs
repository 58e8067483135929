use super::*;
use crate::config::parse_yaml;
use crate::config::test_support::SAMPLE;

const BASE: &str = "default_tier: free\ntiers:\n  - name: free\n    requests_per_window: 100\n";

/// Validates `doc` and returns the error's (path, display).
fn invalid(doc: &str) -> (String, String) {
    let cfg = parse_yaml(doc).unwrap_or_else(|e| panic!("parse failed: {e}\n{doc}"));
    let e = cfg.validate().expect_err("document should be invalid");
    assert!(matches!(e, ConfigError::Invalid { .. }), "{e}");
    (e.path().to_string(), e.to_string())
}

fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

fn assert_invalid(doc: &str, path: &str, display: &str) {
    let (p, d) = invalid(doc);
    assert_eq!(p, path, "{d}");
    assert!(d.starts_with(&format!("{path}: ")), "{d}");
    assert!(d.contains(display), "expected {display:?} in {d:?}");
}

#[test]
fn sample_config_is_valid() {
    parse_yaml(SAMPLE).unwrap().validate().unwrap();
    parse_yaml(BASE).unwrap().validate().unwrap();
}

#[test]
fn tiers_must_not_be_empty() {
    assert_invalid(
        "default_tier: free\ntiers: []\n",
        "tiers",
        "at least one tier",
    );
}

#[test]
fn default_tier_must_exist() {
    assert_invalid(
        "default_tier: gold\ntiers:\n  - name: free\n    requests_per_window: 1\n",
        "default_tier",
        "unknown tier \"gold\" (configured tiers: free)",
    );
}

#[test]
fn tier_names_must_be_unique() {
    let doc = with(
        "  - name: premium\n    requests_per_window: 1\n  - name: free\n    requests_per_window: 2\n",
    );
    assert_invalid(&doc, "tiers[2].name", "duplicate tier name \"free\"");
}

#[test]
fn tier_names_must_match_the_pattern() {
    for name in ["Free", "free-tier", "\"\"", "'fr ee'", "'é'"] {
        let doc = format!(
            "default_tier: free\ntiers:\n  - name: free\n    requests_per_window: 1\n  - name: {name}\n    requests_per_window: 1\n"
        );
        assert_invalid(&doc, "tiers[1].name", "must match ^[a-z0-9_]+$");
    }
}

#[test]
fn tier_names_are_at_most_64_chars() {
    let long = "a".repeat(65);
    let doc = format!("default_tier: {long}\ntiers:\n  - name: {long}\n    unlimited: true\n");
    assert_invalid(&doc, "tiers[0].name", "at most 64 characters");
    let ok = "a".repeat(64);
    let doc = format!("default_tier: {ok}\ntiers:\n  - name: {ok}\n    unlimited: true\n");
    parse_yaml(&doc).unwrap().validate().unwrap();
}

#[test]
fn budget_or_unlimited_exactly_one() {
    let both = "default_tier: free\ntiers:\n  - name: free\n    requests_per_window: 5\n    unlimited: true\n";
    assert_invalid(both, "tiers[0]", "mutually exclusive");
    let neither = "default_tier: free\ntiers:\n  - name: free\n";
    assert_invalid(
        neither,
        "tiers[0].requests_per_window",
        "required unless limits or unlimited",
    );
    let unlimited = "default_tier: free\ntiers:\n  - name: free\n    unlimited: true\n";
    parse_yaml(unlimited).unwrap().validate().unwrap();
}

#[test]
fn budget_must_be_positive() {
    let doc = "default_tier: free\ntiers:\n  - name: free\n    requests_per_window: 0\n";
    assert_invalid(doc, "tiers[0].requests_per_window", "must be > 0");
}

#[test]
fn limits_are_bounded_by_the_counter_algorithm() {
    let max = CounterAlgorithm::ExactLog.max_limit();
    assert_eq!(max, MAX_EXACT_LOG_LIMIT);
    assert_eq!(max, 1_000_000);
    assert_eq!(CounterAlgorithm::Slotted.max_limit(), MAX_SLOTTED_LIMIT);
    assert_eq!(MAX_SLOTTED_LIMIT, 4_294_967_295);
    let budget = |n: u64| {
        format!("default_tier: free\ntiers:\n  - name: free\n    requests_per_window: {n}\n")
    };
    parse_yaml(&budget(max)).unwrap().validate().unwrap();
    for over in [max + 1, u64::MAX] {
        assert_invalid(
            &budget(over),
            "tiers[0].requests_per_window",
            &format!("must be at most 1000000 per window for the exact sliding log, got {over}"),
        );
    }
    let rule = |n: u64| {
        format!(
            "default_tier: free\ntiers:\n  - name: free\n    unlimited: true\n    endpoints:\n      /x: {n}\n"
        )
    };
    parse_yaml(&rule(max)).unwrap().validate().unwrap();
    assert_invalid(
        &rule(max + 1),
        "tiers[0].endpoints./x",
        "must be at most 1000000",
    );
}

#[test]
fn window_size_is_bounded() {
    for (w, ok) in [(0, false), (1, true), (86_400, true), (86_401, false)] {
        let doc = with(&format!("    window_size_seconds: {w}\n"));
        let cfg = parse_yaml(&doc).unwrap();
        if ok {
            cfg.validate().unwrap();
        } else {
            assert_invalid(&doc, "tiers[0].window_size_seconds", "between 1 and 86400");
        }
    }
}

#[test]
fn endpoint_limits_must_be_positive() {
    let doc = with("    endpoints:\n      /api/v1/x: 0\n");
    assert_invalid(&doc, "tiers[0].endpoints./api/v1/x", "must be > 0");
    assert_eq!(invalid(&doc).1, "tiers[0].endpoints./api/v1/x: must be > 0");
}

#[test]
fn a_rule_cost_fits_every_window_it_is_taken_from() {
    let rule = |cost: &str| {
        with(&format!(
            "    endpoints:\n      /export: {{limits: [{{limit: 20, window_seconds: 60}}, {{limit: 8, window_seconds: 1}}], {cost}}}\n"
        ))
    };
    valid(&rule("cost: 5"));
    valid(&rule("cost: 8"));
    valid(&rule("cost: 1"));
    // Unset: 1.
    let cfg = parse_yaml(&rule("shadow: false")).unwrap();
    let EndpointRule::Rule(parsed) = &cfg.tiers[0].endpoints["/export"] else {
        panic!("object form");
    };
    assert_eq!(parsed.cost, 1);
    assert_invalid(
        &rule("cost: 0"),
        "tiers[0].endpoints./export.cost",
        "must be at least 1",
    );
    // Above the rule's own 1 s window.
    assert_eq!(
        invalid(&rule("cost: 9")).1,
        "tiers[0].endpoints./export.cost: 9 is more than \
         tiers[0].endpoints./export.limits[1] allows (8 per 1 s): a request of this cost could \
         never pass; lower the cost or raise that limit"
    );
    // Above the tier's budget, which the request also takes its cost from.
    let tiered = tier(
        "    limits: [{limit: 100, window_seconds: 3600}, {limit: 3, window_seconds: 1}]\n    endpoints:\n      /export: {limits: [{limit: 20, window_seconds: 60}], cost: 4}\n",
    );
    assert_invalid(
        &tiered,
        "tiers[0].endpoints./export.cost",
        "tiers[0].limits[1] allows (3 per 1 s)",
    );
    // A shadow window counts too: once enforced it could never admit the request.
    let shadowed = tier(
        "    requests_per_window: 100\n    endpoints:\n      /export: {limits: [{limit: 4, window_seconds: 60}], shadow: true, cost: 5}\n",
    );
    assert_invalid(&shadowed, "tiers[0].endpoints./export.cost", "(4 per 60 s)");
    // A negative or fractional cost is a parse error.
    assert!(parse_yaml(&rule("cost: -1")).is_err());
    assert!(parse_yaml(&rule("cost: 1.5")).is_err());
}

/// A tier (`free`, the default) with the given lines.
fn tier(lines: &str) -> String {
    format!("default_tier: free\ntiers:\n  - name: free\n{lines}")
}

fn valid(doc: &str) {
    parse_yaml(doc)
        .unwrap_or_else(|e| panic!("{e}\n{doc}"))
        .validate()
        .unwrap_or_else(|e| panic!("{e}\n{doc}"));
}

#[test]
fn an_endpoint_rule_a_tier_window_makes_useless_is_rejected() {
    // Above the tier's budget over the same window: the budget is always full first.
    let doc = with("    endpoints:\n      /api/v1/x: 200\n");
    assert_eq!(
        invalid(&doc).1,
        "tiers[0].endpoints./api/v1/x: 200 per 60 s can never bind: \
         tiers[0].requests_per_window (100 per 60 s) is at least as long and allows no more; \
         give this window a lower limit or a longer window, or remove it"
    );
    // Equal to it: the budget counts every request the rule counts, so it is full whenever
    // the rule is, and the rule is never the one described.
    assert_invalid(
        &with("    endpoints:\n      /api/v1/x: 100\n"),
        "tiers[0].endpoints./api/v1/x",
        "can never bind",
    );
    valid(&with("    endpoints:\n      /api/v1/x: 99\n"));
    // An unlimited tier has no window to compare with.
    valid(&tier(
        "    unlimited: true\n    endpoints:\n      /x: 1000000\n",
    ));
    // A rule over a longer window may allow more.
    valid(&tier(
        "    requests_per_window: 100\n    endpoints:\n      /x: {limits: [{limit: 1000, window_seconds: 3600}]}\n",
    ));
}

#[test]
fn windows_that_can_never_bind_are_rejected_in_a_tier() {
    // A longer window with no higher limit makes a shorter one useless.
    assert_invalid(
        &tier(
            "    limits:\n      - {limit: 10, window_seconds: 1}\n      - {limit: 5, window_seconds: 60}\n",
        ),
        "tiers[0].limits[0]",
        "10 per 1 s can never bind: tiers[0].limits[1] (5 per 60 s)",
    );
    assert_invalid(
        &tier(
            "    limits:\n      - {limit: 5, window_seconds: 60}\n      - {limit: 5, window_seconds: 1}\n",
        ),
        "tiers[0].limits[1]",
        "can never bind: tiers[0].limits[0]",
    );
    // Burst and sustained: each binds at its own pace.
    valid(&tier(
        "    limits:\n      - {limit: 10, window_seconds: 1}\n      - {limit: 100, window_seconds: 60}\n      - {limit: 2000, window_seconds: 86400}\n",
    ));
}

#[test]
fn windows_that_can_never_bind_are_rejected_in_a_rule() {
    let base = "    limits:\n      - {limit: 10, window_seconds: 1}\n      - {limit: 100, window_seconds: 60}\n    endpoints:\n";
    // Made useless by a tier window.
    assert_invalid(
        &tier(&format!(
            "{base}      /s: {{limits: [{{limit: 2, window_seconds: 1}}, {{limit: 100, window_seconds: 30}}]}}\n"
        )),
        "tiers[0].endpoints./s.limits[1]",
        "100 per 30 s can never bind: tiers[0].limits[1] (100 per 60 s)",
    );
    // By a window of its own list.
    assert_invalid(
        &tier(&format!(
            "{base}      /s: {{limits: [{{limit: 5, window_seconds: 1}}, {{limit: 3, window_seconds: 2}}]}}\n"
        )),
        "tiers[0].endpoints./s.limits[0]",
        "can never bind: tiers[0].endpoints./s.limits[1] (3 per 2 s)",
    );
    // A shorthand rule runs over window_size_seconds (60 by default): beside a 100-per-60-s
    // window, 100 can never bind, 99 can.
    assert_invalid(
        &tier(&format!("{base}      /x: 100\n")),
        "tiers[0].endpoints./x",
        "can never bind: tiers[0].limits[1]",
    );
    valid(&tier(&format!("{base}      /x: 99\n")));
    valid(&tier(&format!(
        "{base}      /s: {{limits: [{{limit: 2, window_seconds: 1}}, {{limit: 30, window_seconds: 60}}]}}\n"
    )));
    // Windows of two rules never apply together: each rule is judged with the tier alone.
    valid(&tier(&format!(
        "{base}      /a: {{limits: [{{limit: 2, window_seconds: 1}}]}}\n      /a/*: {{limits: [{{limit: 5, window_seconds: 1}}]}}\n"
    )));
}

#[test]
fn only_enforced_windows_make_others_useless() {
    // A shadowed tier refuses nothing: the rule under it binds.
    valid(&tier(
        "    requests_per_window: 10\n    shadow: true\n    endpoints:\n      /x: 50\n",
    ));
    // A shadowed window is useless under an enforced one that is always full first.
    assert_invalid(
        &tier(
            "    requests_per_window: 10\n    endpoints:\n      /x: {limits: [{limit: 50, window_seconds: 60}], shadow: true}\n",
        ),
        "tiers[0].endpoints./x.limits[0]",
        "can never bind: tiers[0].requests_per_window",
    );
    // Shadowed windows of one list do not make each other useless: each records on its own.
    valid(&tier(
        "    limits:\n      - {limit: 10, window_seconds: 1}\n      - {limit: 5, window_seconds: 60}\n    shadow: true\n",
    ));
    let top = "default_tier: free\nshadow: true\ntiers:\n  - name: free\n    requests_per_window: 10\n    endpoints:\n      /x: 50\n";
    valid(top);
}

#[test]
fn requests_per_window_and_limits_are_exclusive() {
    assert_invalid(
        &tier("    requests_per_window: 10\n    limits: [{limit: 5, window_seconds: 1}]\n"),
        "tiers[0].limits",
        "cannot be set together with requests_per_window",
    );
    assert_invalid(
        &tier("    unlimited: true\n    limits: [{limit: 5, window_seconds: 1}]\n"),
        "tiers[0].limits",
        "unlimited: true tier has no tier windows",
    );
    // window_size_seconds stays valid beside limits: it is the shorthand rules' window.
    let doc = tier(
        "    limits: [{limit: 5, window_seconds: 1}, {limit: 100, window_seconds: 3600}]\n    window_size_seconds: 600\n    endpoints:\n      /x: 50\n",
    );
    valid(&doc);
    let cfg = crate::config::CompiledConfig::compile(parse_yaml(&doc).unwrap()).unwrap();
    let (_, rule) = cfg.tier(0).rules.longest_match("/x").unwrap();
    assert_eq!(rule.windows[0].length.as_secs(), 600);
}

#[test]
fn every_window_is_checked_by_its_field() {
    assert_invalid(
        &tier("    limits: []\n"),
        "tiers[0].limits",
        "at least one window",
    );
    assert_invalid(
        &tier("    limits: [{limit: 5, window_seconds: 1}, {limit: 0, window_seconds: 60}]\n"),
        "tiers[0].limits[1].limit",
        "must be > 0",
    );
    assert_invalid(
        &tier("    limits: [{limit: 1000001, window_seconds: 60}]\n"),
        "tiers[0].limits[0].limit",
        "must be at most 1000000 per window",
    );
    for seconds in [0, 86_401] {
        assert_invalid(
            &tier(&format!(
                "    limits: [{{limit: 5, window_seconds: {seconds}}}]\n"
            )),
            "tiers[0].limits[0].window_seconds",
            "between 1 and 86400",
        );
    }
    valid(&tier("    limits: [{limit: 5, window_seconds: 86400}]\n"));
    let rule = |limits: &str| {
        tier(&format!(
            "    unlimited: true\n    endpoints:\n      /api/v1/search: {{limits: {limits}}}\n"
        ))
    };
    assert_invalid(
        &rule("[]"),
        "tiers[0].endpoints./api/v1/search.limits",
        "at least one window",
    );
    assert_invalid(
        &rule("[{limit: 0, window_seconds: 1}]"),
        "tiers[0].endpoints./api/v1/search.limits[0].limit",
        "must be > 0",
    );
    assert_invalid(
        &rule("[{limit: 2, window_seconds: 1}, {limit: 30, window_seconds: 100000}]"),
        "tiers[0].endpoints./api/v1/search.limits[1].window_seconds",
        "between 1 and 86400",
    );
}

#[test]
fn duplicate_windows_are_rejected() {
    assert_invalid(
        &tier(
            "    limits:\n      - {limit: 5, window_seconds: 60}\n      - {limit: 10, window_seconds: 1}\n      - {limit: 50, window_seconds: 60}\n",
        ),
        "tiers[0].limits[2].window_seconds",
        "tiers[0].limits[0] has a window of 60 s already",
    );
    assert_invalid(
        &tier(
            "    unlimited: true\n    endpoints:\n      /x: {limits: [{limit: 1, window_seconds: 5}, {limit: 1, window_seconds: 5}]}\n",
        ),
        "tiers[0].endpoints./x.limits[1].window_seconds",
        "has a window of 5 s already",
    );
    // A rule may have a window of the same length as the tier: another counter.
    valid(&tier(
        "    limits: [{limit: 100, window_seconds: 60}]\n    endpoints:\n      /x: {limits: [{limit: 10, window_seconds: 60}]}\n",
    ));
}

#[test]
fn endpoint_patterns_are_checked() {
    for (pattern, message) in [
        ("api/v1", "must start with '/'"),
        ("/api/*/x", "'*' is only allowed"),
        ("'/a?b'", "must not contain '?'"),
        ("/api//v1", "write \"/api/v1\""),
        ("'/a b'", "whitespace"),
    ] {
        let doc = with(&format!("    endpoints:\n      {pattern}: 1\n"));
        let key = pattern.trim_matches('\'');
        assert_invalid(&doc, &format!("tiers[0].endpoints.{key}"), message);
    }
}

#[test]
fn description_is_bounded() {
    let doc = with(&format!("    description: {}\n", "d".repeat(1025)));
    assert_invalid(&doc, "tiers[0].description", "at most 1024 characters");
    let doc = with(&format!("    description: {}\n", "é".repeat(1024)));
    parse_yaml(&doc).unwrap().validate().unwrap();
}

#[test]
fn whitelist_entries_are_checked() {
    let doc = with("whitelist:\n  - 10.0.0.1\n  - 10.0.0.0/8\n  - somebody\n");
    assert_invalid(&doc, "whitelist[2]", "\"somebody\" is not an IP address");
    let doc = with("whitelist:\n  - 10.0.0.0/40\n");
    assert_invalid(&doc, "whitelist[0]", "not a valid CIDR");
    let doc = with("whitelist:\n  - ip:localhost\n");
    assert_invalid(&doc, "whitelist[0]", "not a valid ip:<address>");
    let doc = with("whitelist:\n  - 'key:'\n");
    assert_invalid(&doc, "whitelist[0]", "empty identifier");
    let doc = with(&format!("whitelist:\n  - user:{}\n", "u".repeat(257)));
    assert_invalid(&doc, "whitelist[0]", "longer than 256");
    let doc = with("whitelist:\n  - ip:2001:db8::/129\n");
    assert_invalid(&doc, "whitelist[0]", "not a valid ip:<network>/<len>");
    let doc = with(
        "whitelist:\n  - 10.1.2.3/8\n  - ::1\n  - fd00::/8\n  - ip:::1\n  - ip:2001:db8:1:2::/64\n  - key:k\n  - user:u\n",
    );
    parse_yaml(&doc).unwrap().validate().unwrap();
}

#[test]
fn ipv6_prefix_length_is_bounded() {
    assert_eq!(parse_yaml(BASE).unwrap().ipv6_prefix_length, 64, "default");
    for bits in [32, 48, 56, 64, 127, 128] {
        let doc = with(&format!("ipv6_prefix_length: {bits}\n"));
        let cfg = parse_yaml(&doc).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.ipv6_prefix_length, bits);
    }
    for bits in [0, 1, 31, 129, 255] {
        let doc = with(&format!("ipv6_prefix_length: {bits}\n"));
        assert_invalid(
            &doc,
            "ipv6_prefix_length",
            &format!("between 32 and 128, got {bits}"),
        );
    }
    // Beyond a byte, or negative: refused by the parser, with the field named.
    for value in ["256", "-1", "sixty-four"] {
        let doc = with(&format!("ipv6_prefix_length: {value}\n"));
        let err = parse_yaml(&doc).expect_err(value);
        assert!(err.to_string().starts_with("ipv6_prefix_length"), "{err}");
    }
}

fn key_doc(entries: &str) -> String {
    with(&format!("api_keys:\n{entries}"))
}

const GOOD_KEY: &str = "0123456789abcdef";

#[test]
fn api_key_ids_match_the_pattern() {
    for id in ["'has space'", "'a/b'", "\"\"", &"k".repeat(65)] {
        let doc = key_doc(&format!(
            "  - id: {id}\n    tier: free\n    key: {GOOD_KEY}\n"
        ));
        assert_invalid(&doc, "api_keys[0].id", "must match ^[A-Za-z0-9._-]{1,64}$");
    }
}

#[test]
fn api_key_ids_are_unique() {
    let doc = key_doc(&format!(
        "  - id: a\n    tier: free\n    key: {GOOD_KEY}\n  - id: a\n    tier: free\n    key: {GOOD_KEY}x\n"
    ));
    assert_invalid(&doc, "api_keys[1].id", "duplicate API key id \"a\"");
}

#[test]
fn api_key_tier_must_exist() {
    let doc = key_doc(&format!("  - id: a\n    tier: gold\n    key: {GOOD_KEY}\n"));
    assert_invalid(&doc, "api_keys[0].tier", "unknown tier \"gold\"");
}

#[test]
fn api_key_needs_exactly_one_of_key_and_digest() {
    let digest = "a".repeat(64);
    let both = key_doc(&format!(
        "  - id: a\n    tier: free\n    key: {GOOD_KEY}\n    key_sha256: {digest}\n"
    ));
    assert_invalid(&both, "api_keys[0]", "mutually exclusive");
    let neither = key_doc("  - id: a\n    tier: free\n");
    assert_invalid(
        &neither,
        "api_keys[0]",
        "one of key or key_sha256 is required",
    );
}

#[test]
fn api_key_length_is_checked() {
    let short = key_doc("  - id: a\n    tier: free\n    key: short-key\n");
    assert_invalid(&short, "api_keys[0].key", "at least 16 characters");
    let empty = key_doc("  - id: a\n    tier: free\n    key: ''\n");
    assert_invalid(&empty, "api_keys[0].key", "at least 16 characters");
    let long = key_doc(&format!(
        "  - id: a\n    tier: free\n    key: {}\n",
        "k".repeat(1025)
    ));
    assert_invalid(&long, "api_keys[0].key", "at most 1024 bytes");
    // Secrets never appear in messages.
    assert!(!invalid(&short).1.contains("short-key"));
}

#[test]
fn api_key_digest_must_be_hex_sha256() {
    for digest in ["abc", &"g".repeat(64), &"a".repeat(63), &"a".repeat(65)] {
        let doc = key_doc(&format!(
            "  - id: a\n    tier: free\n    key_sha256: '{digest}'\n"
        ));
        assert_invalid(&doc, "api_keys[0].key_sha256", "64 hexadecimal characters");
    }
    let empty_hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let doc = key_doc(&format!(
        "  - id: a\n    tier: free\n    key_sha256: {empty_hash}\n"
    ));
    assert_invalid(&doc, "api_keys[0].key_sha256", "empty string");
}

#[test]
fn api_keys_resolving_to_the_same_digest_are_rejected() {
    let digest = hex::encode(Sha256::digest(GOOD_KEY.as_bytes()));
    let doc = key_doc(&format!(
        "  - id: a\n    tier: free\n    key: {GOOD_KEY}\n  - id: b\n    tier: free\n    key_sha256: {}\n",
        digest.to_uppercase()
    ));
    assert_invalid(
        &doc,
        "api_keys[1].key_sha256",
        "same key as api_keys[0] (id \"a\")",
    );
    let doc = key_doc(&format!(
        "  - id: a\n    tier: free\n    key: {GOOD_KEY}\n  - id: b\n    tier: free\n    key: {GOOD_KEY}\n"
    ));
    assert_invalid(&doc, "api_keys[1].key", "same key as api_keys[0]");
}

fn jwt_doc(body: &str) -> String {
    with(&format!("jwt:\n{body}"))
}

const SECRET: &str = "  hs256_secret: 0123456789abcdef0123456789abcdef\n";

#[test]
fn jwt_needs_a_key() {
    assert_invalid(
        &jwt_doc("  user_claim: sub\n"),
        "jwt",
        "at least one of hs256_secret",
    );
}

#[test]
fn jwt_hs256_secret_is_at_least_32_bytes() {
    let doc = jwt_doc("  hs256_secret: 0123456789abcdef0123456789abcde\n");
    assert_invalid(&doc, "jwt.hs256_secret", "at least 32 bytes");
    assert!(invalid(&doc).1.contains("brute-forced"));
    assert!(!invalid(&doc).1.contains("0123456789abcdef"));
    parse_yaml(&jwt_doc(SECRET)).unwrap().validate().unwrap();
}

#[test]
fn jwt_public_key_must_look_like_pem() {
    let doc = jwt_doc("  rs256_public_key_pem: not a key\n");
    assert_invalid(&doc, "jwt.rs256_public_key_pem", "PEM public key block");
    let private = jwt_doc(
        "  rs256_public_key_pem: |\n    -----BEGIN PRIVATE KEY-----\n    MIIE\n    -----END PRIVATE KEY-----\n",
    );
    assert_invalid(&private, "jwt.rs256_public_key_pem", "private key");
    let empty = jwt_doc(
        "  rs256_public_key_pem: |\n    -----BEGIN PUBLIC KEY-----\n    -----END PUBLIC KEY-----\n",
    );
    assert_invalid(&empty, "jwt.rs256_public_key_pem", "empty");
    let rsa = jwt_doc(
        "  rs256_public_key_pem: |\n    -----BEGIN RSA PUBLIC KEY-----\n    MIIBCgKCAQEA\n    -----END RSA PUBLIC KEY-----\n",
    );
    parse_yaml(&rsa).unwrap().validate().unwrap();
}

#[test]
fn jwt_claims_and_issuer_must_not_be_empty() {
    for field in ["user_claim", "tier_claim", "issuer", "audience"] {
        let doc = jwt_doc(&format!("{SECRET}  {field}: ''\n"));
        assert_invalid(&doc, &format!("jwt.{field}"), "must not be empty");
    }
}

#[test]
fn first_error_in_document_order_wins() {
    let doc = "default_tier: gold\ntiers:\n  - name: Bad\n    requests_per_window: 0\nwhitelist: [nope]\n";
    assert_eq!(invalid(doc).0, "default_tier");
    let doc = "default_tier: free\ntiers:\n  - name: free\n    requests_per_window: 0\n    window_size_seconds: 0\nwhitelist: [nope]\n";
    assert_eq!(invalid(doc).0, "tiers[0].requests_per_window");
    let doc = with("whitelist: [nope]\napi_keys:\n  - id: a\n    tier: gold\n    key: x\n");
    assert_eq!(invalid(&doc).0, "whitelist[0]");
    let doc = with("api_keys:\n  - id: a\n    tier: gold\n    key: x\njwt:\n  user_claim: sub\n");
    assert_eq!(invalid(&doc).0, "api_keys[0].tier");
    // Within a tier: its windows, window_size_seconds, its rules, its description.
    let doc = tier(&format!(
        "    limits: [{{limit: 0, window_seconds: 0}}]\n    window_size_seconds: 0\n    endpoints:\n      /x: 0\n    description: {}\n",
        "d".repeat(2000)
    ));
    assert_eq!(invalid(&doc).0, "tiers[0].limits[0].limit");
    let doc = tier(&format!(
        "    limits: [{{limit: 1, window_seconds: 60}}]\n    window_size_seconds: 0\n    endpoints:\n      /x: 0\n    description: {}\n",
        "d".repeat(2000)
    ));
    assert_eq!(invalid(&doc).0, "tiers[0].window_size_seconds");
    let doc = tier(&format!(
        "    limits: [{{limit: 1, window_seconds: 60}}]\n    endpoints:\n      /x: 0\n    description: {}\n",
        "d".repeat(2000)
    ));
    assert_eq!(invalid(&doc).0, "tiers[0].endpoints./x");
}

// ---------------------------------------------------------------------------------------
// Counter algorithms: `algorithm`, `precision_ms`, bounds per algorithm

#[test]
fn slotted_windows_accept_limits_up_to_their_own_bound() {
    let slotted = MAX_SLOTTED_LIMIT;
    // Every place a limit is written, slotted through the tier or through the window.
    valid(&tier(&format!(
        "    algorithm: slotted\n    requests_per_window: {slotted}\n"
    )));
    valid(&tier(&format!(
        "    limits: [{{limit: {slotted}, window_seconds: 60, algorithm: slotted}}]\n"
    )));
    valid(&tier(&format!(
        "    algorithm: slotted\n    unlimited: true\n    endpoints:\n      /x: {slotted}\n      /y: {{limits: [{{limit: {slotted}, window_seconds: 1}}]}}\n"
    )));
    let over = slotted + 1;
    for (doc, path) in [
        (
            tier(&format!(
                "    algorithm: slotted\n    requests_per_window: {over}\n"
            )),
            "tiers[0].requests_per_window",
        ),
        (
            tier(&format!(
                "    limits: [{{limit: 5, window_seconds: 1}}, {{limit: {over}, window_seconds: 60, algorithm: slotted}}]\n"
            )),
            "tiers[0].limits[1].limit",
        ),
        (
            tier(&format!(
                "    algorithm: slotted\n    unlimited: true\n    endpoints:\n      /x: {over}\n"
            )),
            "tiers[0].endpoints./x",
        ),
        (
            tier(&format!(
                "    unlimited: true\n    endpoints:\n      /x: {{limits: [{{limit: {over}, window_seconds: 1, algorithm: slotted}}]}}\n"
            )),
            "tiers[0].endpoints./x.limits[0].limit",
        ),
    ] {
        assert_invalid(
            &doc,
            path,
            &format!("must be at most 4294967295 per window for a slotted window, got {over}"),
        );
    }
}

#[test]
fn an_exact_window_keeps_its_bound_and_names_the_slotted_one() {
    // Exact by default, by the tier, or by the window under a slotted tier.
    for lines in [
        "    limits: [{limit: 1000001, window_seconds: 60}]\n",
        "    algorithm: exact\n    limits: [{limit: 1000001, window_seconds: 60}]\n",
        "    algorithm: slotted\n    limits: [{limit: 1000001, window_seconds: 60, algorithm: exact}]\n",
    ] {
        assert_invalid(
            &tier(lines),
            "tiers[0].limits[0].limit",
            "must be at most 1000000 per window for the exact sliding log, got 1000001 (its \
             memory grows with the limit; see docs/OPERATIONS.md; a slotted window, algorithm: \
             slotted, accepts up to 4294967295)",
        );
    }
}

#[test]
fn precision_ms_is_checked_against_its_window() {
    let slotted = |window: &str| {
        tier(&format!(
            "    limits: [{{limit: 100, {window}, algorithm: slotted}}]\n"
        ))
    };
    for ok in [
        "window_seconds: 60, precision_ms: 1000",
        "window_seconds: 60, precision_ms: 500",
        "window_seconds: 60, precision_ms: 6000",
        "window_seconds: 1, precision_ms: 10",
        "window_seconds: 1, precision_ms: 100",
        "window_seconds: 86400, precision_ms: 720000",
    ] {
        valid(&slotted(ok));
    }
    let path = "tiers[0].limits[0].precision_ms";
    for (window, message) in [
        (
            "window_seconds: 60, precision_ms: 0",
            "must be > 0 (the default for a window of 60 s is 1000)",
        ),
        (
            "window_seconds: 60, precision_ms: 7",
            "must divide the window (60000 ms) into whole slots: 60000 / 7 is not a whole number",
        ),
        (
            "window_seconds: 60, precision_ms: 400",
            "must divide the window (60000 ms) into 10 to 120 slots, got 150 slots of 400 ms",
        ),
        (
            "window_seconds: 60, precision_ms: 12000",
            "got 5 slots of 12000 ms (the default for a window of 60 s is 1000)",
        ),
        (
            "window_seconds: 1, precision_ms: 1",
            "into 10 to 120 slots, got 1000 slots of 1 ms (the default for a window of 1 s is 20)",
        ),
    ] {
        assert_invalid(&slotted(window), path, message);
    }
    // In a rule's windows too, by their own path.
    assert_invalid(
        &tier(
            "    algorithm: slotted\n    unlimited: true\n    endpoints:\n      /x: {limits: [{limit: 5, window_seconds: 1}, {limit: 50, window_seconds: 10, precision_ms: 3}]}\n",
        ),
        "tiers[0].endpoints./x.limits[1].precision_ms",
        "10000 / 3 is not a whole number",
    );
}

#[test]
fn precision_ms_on_an_exact_window_is_an_error() {
    let message = "only a slotted window has a precision, and this one is exact";
    for lines in [
        "    limits: [{limit: 100, window_seconds: 60, precision_ms: 1000}]\n",
        "    algorithm: exact\n    limits: [{limit: 100, window_seconds: 60, precision_ms: 1000}]\n",
        "    algorithm: slotted\n    limits: [{limit: 100, window_seconds: 60, algorithm: exact, precision_ms: 1000}]\n",
    ] {
        assert_invalid(&tier(lines), "tiers[0].limits[0].precision_ms", message);
    }
    assert_invalid(
        &tier(
            "    unlimited: true\n    endpoints:\n      /x: {limits: [{limit: 5, window_seconds: 60, precision_ms: 1000}]}\n",
        ),
        "tiers[0].endpoints./x.limits[0].precision_ms",
        message,
    );
    // The same window, slotted by its tier, is valid.
    valid(&tier(
        "    algorithm: slotted\n    limits: [{limit: 100, window_seconds: 60, precision_ms: 1000}]\n",
    ));
}

#[test]
fn a_slotted_window_without_precision_is_valid_at_every_length() {
    // The default slot is valid whatever the length (1 s: 1000 / 60 is no whole number of ms).
    for seconds in [1, 2, 7, 10, 59, 60, 61, 3600, 86_399, 86_400] {
        valid(&tier(&format!(
            "    limits: [{{limit: 5, window_seconds: {seconds}, algorithm: slotted}}]\n"
        )));
        valid(&tier(&format!(
            "    algorithm: slotted\n    requests_per_window: 5\n    window_size_seconds: {seconds}\n"
        )));
    }
}

#[test]
fn windows_that_can_never_bind_are_refused_whatever_their_algorithm() {
    // A window's guarantee (at most its limit in any window of its length) is the same under
    // both algorithms, so the rule compares lengths and limits only: a slotted window beside
    // an exact one that already gives a stronger guarantee could only deny early.
    for (first, second) in [
        ("algorithm: slotted", ""),
        ("", "algorithm: slotted"),
        ("algorithm: slotted", "algorithm: slotted"),
    ] {
        let doc = tier(&format!(
            "    limits: [{{limit: 10, window_seconds: 120, {first}}}, {{limit: 20, window_seconds: 60, {second}}}]\n"
        )
        .replace(", }", "}"));
        assert_invalid(&doc, "tiers[0].limits[1]", "20 per 60 s can never bind");
    }
    assert_invalid(
        &tier(
            "    algorithm: slotted\n    requests_per_window: 100\n    endpoints:\n      /x: {limits: [{limit: 100, window_seconds: 60, algorithm: exact}]}\n",
        ),
        "tiers[0].endpoints./x.limits[0]",
        "can never bind",
    );
}

#[test]
fn limit_errors_come_before_precision_errors_of_the_same_window() {
    assert_invalid(
        &tier("    limits: [{limit: 0, window_seconds: 60, precision_ms: 7}]\n"),
        "tiers[0].limits[0].limit",
        "must be > 0",
    );
    assert_invalid(
        &tier("    limits: [{limit: 5, window_seconds: 0, algorithm: slotted, precision_ms: 7}]\n"),
        "tiers[0].limits[0].window_seconds",
        "between 1 and 86400",
    );
}

#[test]
fn rate_limit_service_defaults_and_overrides() {
    let cfg = parse_yaml(&with(
        "rate_limit_service:\n  domain: edge\n  descriptor_keys:\n    api_key: api_key\n",
    ))
    .unwrap();
    cfg.validate().unwrap();
    let service = cfg.rate_limit_service.unwrap();
    assert_eq!(service.domain, "edge");
    assert_eq!(service.descriptor_keys.api_key, "api_key");
    assert_eq!(service.descriptor_keys.ip, "remote_address");
    let compiled = crate::config::CompiledConfig::compile(parse_yaml(SAMPLE).unwrap()).unwrap();
    assert_eq!(compiled.rate_limit_service().domain, "rate_limit");
    assert_eq!(compiled.rate_limit_service().descriptor_keys.path, ":path");
}

#[test]
fn rate_limit_service_keys_are_distinct_and_not_empty() {
    assert_invalid(
        &with("rate_limit_service:\n  domain: ''\n"),
        "rate_limit_service.domain",
        "must not be empty",
    );
    assert_invalid(
        &with("rate_limit_service:\n  descriptor_keys:\n    path: remote_address\n"),
        "rate_limit_service.descriptor_keys.path",
        "already carries other evidence",
    );
    assert_invalid(
        &with("rate_limit_service:\n  descriptor_keys:\n    method: ''\n"),
        "rate_limit_service.descriptor_keys.method",
        "must not be empty",
    );
    assert!(parse_yaml(&with("rate_limit_service:\n  domian: x\n")).is_err());
}

#[test]
fn max_concurrent_is_between_one_and_its_bound() {
    for max in [0, MAX_CONCURRENT + 1] {
        assert_invalid(
            &format!("{BASE}    max_concurrent: {max}\n"),
            "tiers[0].max_concurrent",
            &format!("must be between 1 and {MAX_CONCURRENT}, got {max}"),
        );
    }
    for max in [1, MAX_CONCURRENT] {
        let doc = format!("{BASE}    max_concurrent: {max}\n");
        parse_yaml(&doc).unwrap().validate().unwrap();
    }
    // An unlimited tier may have only a concurrency limit.
    let doc =
        "default_tier: free\ntiers:\n  - name: free\n    unlimited: true\n    max_concurrent: 5\n";
    parse_yaml(doc).unwrap().validate().unwrap();
    assert!(parse_yaml(&format!("{BASE}    max_concurrent: -1\n")).is_err());
}
