use super::*;
use crate::config::{CounterAlgorithm, EndpointRule, RuleConfig, WindowConfig};

const MINIMAL: &str = "default_tier: free\ntiers:\n  - name: free\n    requests_per_window: 100\n";

fn parse_err(doc: &str) -> ConfigError {
    parse_yaml(doc).expect_err("document should not parse")
}

#[test]
fn minimal_document_gets_defaults() {
    let cfg = parse_yaml(MINIMAL).unwrap();
    assert!(cfg.enabled);
    assert!(cfg.fail_open);
    assert_eq!(cfg.default_tier, "free");
    assert_eq!(cfg.tiers[0].window_size_seconds, 60);
    assert_eq!(cfg.tiers[0].requests_per_window, Some(100));
    assert!(!cfg.tiers[0].unlimited);
    assert!(cfg.whitelist.is_empty() && cfg.api_keys.is_empty() && cfg.jwt.is_none());
}

#[test]
fn empty_documents_are_rejected_clearly() {
    for doc in ["", "   \n", "# just a comment\n", "~", "null"] {
        let e = parse_err(doc);
        assert!(matches!(e, ConfigError::Parse { .. }), "{doc:?}");
        assert_eq!(e.to_string(), "configuration document is empty", "{doc:?}");
    }
    for body in [&b""[..], b" \n", b"null"] {
        let e = parse_json(body).unwrap_err();
        assert_eq!(e.to_string(), "configuration document is empty");
    }
}

#[test]
fn type_errors_carry_the_field_path() {
    let e = parse_err(&format!("{MINIMAL}    window_size_seconds: x\n"));
    assert!(matches!(e, ConfigError::Parse { .. }));
    assert_eq!(e.path(), "tiers[0].window_size_seconds");
    assert!(
        e.to_string().starts_with("tiers[0].window_size_seconds: "),
        "{e}"
    );

    let e = parse_err(&format!("{MINIMAL}    endpoints:\n      /api/v1/x: -3\n"));
    assert_eq!(e.path(), "tiers[0].endpoints./api/v1/x");

    let e = parse_err(&format!("{MINIMAL}whitelist:\n  - 10.0.0.1\n  - [a]\n"));
    assert_eq!(e.path(), "whitelist[1]");

    let e = parse_err("default_tier: free\nenabled: maybe\ntiers: []\n");
    assert_eq!(e.path(), "enabled");
}

const WINDOWED: &str = "default_tier: free\nshadow: true\ntiers:\n  - name: free\n    limits:\n      - {limit: 10, window_seconds: 1}\n      - {limit: 100, window_seconds: 60}\n    shadow: true\n    endpoints:\n      /api/v1/search:\n        limits: [{limit: 2, window_seconds: 1}, {limit: 30, window_seconds: 60}]\n        shadow: true\n      /api/v1/request: 50\n";

#[test]
fn limits_rules_and_shadow_parse_in_both_formats() {
    let cfg = parse_yaml(WINDOWED).unwrap();
    assert!(cfg.shadow && cfg.tiers[0].shadow);
    assert_eq!(cfg.tiers[0].requests_per_window, None);
    assert_eq!(
        cfg.tiers[0].limits,
        Some(vec![
            WindowConfig {
                limit: 10,
                window_seconds: 1,
                algorithm: None,
                precision_ms: None,
            },
            WindowConfig {
                limit: 100,
                window_seconds: 60,
                algorithm: None,
                precision_ms: None,
            },
        ])
    );
    assert_eq!(
        cfg.tiers[0].endpoints["/api/v1/search"],
        EndpointRule::Rule(RuleConfig {
            limits: vec![
                WindowConfig {
                    limit: 2,
                    window_seconds: 1,
                    algorithm: None,
                    precision_ms: None,
                },
                WindowConfig {
                    limit: 30,
                    window_seconds: 60,
                    algorithm: None,
                    precision_ms: None,
                },
            ],
            shadow: true,
            cost: 1,
            max_charge: None,
            count_statuses: Vec::new(),
        })
    );
    assert_eq!(
        cfg.tiers[0].endpoints["/api/v1/request"],
        EndpointRule::Limit(50)
    );
    // Both forms survive the JSON round trip (GET, then PUT) unchanged.
    let json = serde_json::to_vec(&cfg).unwrap();
    assert_eq!(parse_json(&json).unwrap(), cfg);
    let text = String::from_utf8(json).unwrap();
    assert!(text.contains(r#""/api/v1/request":50"#), "{text}");
    assert!(
        text.contains(r#""/api/v1/search":{"limits":[{"limit":2,"window_seconds":1}"#),
        "{text}"
    );
}

#[test]
fn errors_inside_limits_and_rules_carry_the_field_path() {
    let tier = |lines: &str| format!("default_tier: free\ntiers:\n  - name: free\n{lines}");
    for (doc, path, message) in [
        (
            tier("    limits: [{limit: 10, window_seconds: x}]\n"),
            "tiers[0].limits[0].window_seconds",
            "invalid",
        ),
        (
            tier("    limits: [{limit: 10}]\n"),
            "tiers[0].limits[0]",
            "missing field `window_seconds`",
        ),
        (
            tier("    limits: [{limit: 10, window_seconds: 1, cost: 2}]\n"),
            "tiers[0].limits[0].cost",
            "unknown field `cost`",
        ),
        (
            tier("    limits: [{limit: 10, window_seconds: 1, algorithm: gcra}]\n"),
            "tiers[0].limits[0].algorithm",
            "unknown variant `gcra`",
        ),
        (
            tier("    limits: [{limit: 10, window_seconds: 1, precision_ms: 0.5}]\n"),
            "tiers[0].limits[0].precision_ms",
            "invalid",
        ),
        (
            tier("    requests_per_window: 10\n    algorithm: Slotted\n"),
            "tiers[0].algorithm",
            "unknown variant `Slotted`",
        ),
        (
            tier(
                "    unlimited: true\n    endpoints:\n      /x: {limits: [{limit: 1, window_seconds: 1, algorithm: 1}]}\n",
            ),
            "tiers[0].endpoints./x.limits[0].algorithm",
            "expected one of exact, slotted",
        ),
        (
            tier("    limits: {limit: 10, window_seconds: 1}\n"),
            "tiers[0].limits",
            "expected sequence",
        ),
        (
            tier(
                "    unlimited: true\n    endpoints:\n      /x: {limits: [{limit: -1, window_seconds: 1}]}\n",
            ),
            "tiers[0].endpoints./x.limits[0].limit",
            "invalid",
        ),
        (
            tier(
                "    unlimited: true\n    endpoints:\n      /x: {limits: [{limit: 1, window_seconds: 1}], weight: 2}\n",
            ),
            "tiers[0].endpoints./x.weight",
            "unknown field `weight`",
        ),
        (
            tier("    unlimited: true\n    endpoints:\n      /x: {shadow: true}\n"),
            "tiers[0].endpoints./x",
            "missing field `limits`",
        ),
        (
            tier(
                "    unlimited: true\n    endpoints:\n      /x: {limits: [{limit: 1, window_seconds: 1}], shadow: maybe}\n",
            ),
            "tiers[0].endpoints./x.shadow",
            "invalid",
        ),
        (
            tier("    unlimited: true\n    endpoints:\n      /x: [1, 2]\n"),
            "tiers[0].endpoints./x",
            "a limit (a non-negative integer) or a rule {limits: [...]}",
        ),
        (
            tier("    unlimited: true\n    endpoints:\n      /x: '50'\n"),
            "tiers[0].endpoints./x",
            "invalid type: string",
        ),
        (
            tier("    unlimited: true\n    endpoints:\n      /x: 2.5\n"),
            "tiers[0].endpoints./x",
            "invalid type",
        ),
        (
            "default_tier: free\nshadow: 1\ntiers: []\n".to_string(),
            "shadow",
            "invalid",
        ),
    ] {
        let e = parse_err(&doc);
        assert_eq!(e.path(), path, "{e}\n{doc}");
        assert!(e.to_string().contains(message), "{e}\n{doc}");
        assert!(e.to_string().starts_with(&format!("{path}: ")), "{e}");
    }
    let json = br#"{"default_tier":"free","tiers":[{"name":"free","unlimited":true,"endpoints":{"/x":{"limits":[{"limit":1,"window_seconds":"1"}]}}}]}"#;
    let e = parse_json(json).unwrap_err();
    assert_eq!(e.path(), "tiers[0].endpoints./x.limits[0].window_seconds");
    let json = br#"{"default_tier":"free","tiers":[{"name":"free","unlimited":true,"endpoints":{"/x":-4}}]}"#;
    let e = parse_json(json).unwrap_err();
    assert_eq!(e.path(), "tiers[0].endpoints./x");
}

#[test]
fn unknown_fields_are_rejected_with_their_name() {
    let e = parse_err(&format!("{MINIMAL}    requestz: 5\n"));
    assert_eq!(e.path(), "tiers[0].requestz");
    assert!(e.to_string().contains("unknown field `requestz`"), "{e}");

    let e = parse_err(&format!("{MINIMAL}bogus: 1\n"));
    assert_eq!(e.path(), "bogus");

    let e = parse_err(&format!("{MINIMAL}jwt:\n  hs256_secrett: x\n"));
    assert_eq!(e.path(), "jwt.hs256_secrett");

    let e = parse_err(&format!(
        "{MINIMAL}api_keys:\n  - id: a\n    tier: free\n    sha: x\n"
    ));
    assert_eq!(e.path(), "api_keys[0].sha");
}

#[test]
fn missing_required_fields_are_named() {
    let e = parse_err("tiers: []\n");
    assert!(
        e.to_string().contains("missing field `default_tier`"),
        "{e}"
    );
    let e = parse_err("default_tier: free\ntiers:\n  - requests_per_window: 1\n");
    assert_eq!(e.path(), "tiers[0]");
    assert!(e.to_string().contains("missing field `name`"), "{e}");
}

#[test]
fn yaml_scalars_read_as_strings_where_the_schema_wants_strings() {
    let doc = "default_tier: '007'\ntiers:\n  - name: 007\n    unlimited: true\n\
                   api_keys:\n  - id: 42\n    tier: 007\n    key: 1234567890123456789\n";
    let cfg = parse_yaml(doc).unwrap();
    assert_eq!(cfg.tiers[0].name, "007");
    assert_eq!(cfg.api_keys[0].id, "42");
    assert_eq!(cfg.api_keys[0].key.as_deref(), Some("1234567890123456789"));
}

#[test]
fn syntax_errors_and_duplicate_keys_are_parse_errors() {
    let e = parse_err("default_tier: free\ntiers: [\n");
    assert!(matches!(e, ConfigError::Parse { .. }));
    let e = parse_err("default_tier: free\ndefault_tier: x\ntiers: []\n");
    assert!(e.to_string().contains("duplicate mapping key"), "{e}");
    assert_eq!(e.path(), "");
    let e = parse_err(&format!("{MINIMAL}---\n{MINIMAL}"));
    assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
}

#[test]
fn parse_errors_do_not_quote_the_source() {
    let doc = format!("{MINIMAL}jwt:\n  hs256_secret: [supersecretvalue\n");
    let e = parse_err(&doc);
    assert!(!e.to_string().contains("supersecretvalue"), "{e}");
}

#[test]
fn oversized_documents_are_rejected_before_parsing() {
    let mut doc = MINIMAL.to_string();
    doc.push_str(&"#".repeat(MAX_CONFIG_BYTES));
    let e = parse_err(&doc);
    assert!(e.to_string().contains("larger than the limit"), "{e}");
    assert!(parse_json(doc.as_bytes()).is_err());
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let depth = 100_000;
    let flow = format!("default_tier: {}{}", "[".repeat(depth), "]".repeat(depth));
    assert!(parse_yaml(&flow).is_err());
    let block: String = (0..5_000)
        .map(|i| format!("{}- \n", " ".repeat(i * 2)))
        .collect();
    assert!(parse_yaml(&format!("whitelist:\n{block}")).is_err());
    let json = format!(
        "{{\"whitelist\": {}{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert!(parse_json(json.as_bytes()).is_err());
    let json = format!("{{\"x\": {}{}}}", "[".repeat(depth), "]".repeat(depth));
    assert!(parse_json(json.as_bytes()).is_err());
}

#[test]
fn alias_bombs_are_stopped() {
    // Classic exponential bomb: ten levels of ten aliases each.
    let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        let refs = vec![format!("*a{p}"); 10].join(", ");
        doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    doc.push_str("default_tier: *a9\n");
    assert!(parse_yaml(&doc).is_err());

    // Wide replay through fields the schema accepts: one large endpoint map aliased by
    // thousands of tiers. The alias replay budget stops it.
    let entries: Vec<String> = (0..1000).map(|i| format!("/e{i}: 1")).collect();
    let mut doc = format!(
        "default_tier: t0\ntiers:\n  - name: t0\n    unlimited: true\n    endpoints: &e {{{}}}\n",
        entries.join(", ")
    );
    for i in 1..600 {
        doc.push_str(&format!(
            "  - {{name: t{i}, unlimited: true, endpoints: *e}}\n"
        ));
    }
    let e = parse_err(&doc);
    assert!(e.to_string().contains("budget"), "{e}");

    // Aliasing a whole tier is legitimate YAML (validation rejects the duplicate name).
    let doc = "default_tier: free\ntiers:\n  - &t {name: free, requests_per_window: 1}\n  - *t\n";
    assert_eq!(parse_yaml(doc).unwrap().tiers.len(), 2);
}

#[test]
fn json_documents_parse_with_paths() {
    let ok = br#"{"default_tier":"free","tiers":[{"name":"free","requests_per_window":100}]}"#;
    assert_eq!(parse_json(ok).unwrap(), parse_yaml(MINIMAL).unwrap());

    let bad = br#"{"default_tier":"free","tiers":[{"name":"free","window_size_seconds":"x"}]}"#;
    let e = parse_json(bad).unwrap_err();
    assert_eq!(e.path(), "tiers[0].window_size_seconds");
    assert!(
        e.to_string()
            .starts_with("tiers[0].window_size_seconds: invalid type: string \"x\", expected u64"),
        "{e}"
    );

    let unknown = br#"{"default_tier":"free","tiers":[],"extra":1}"#;
    let e = parse_json(unknown).unwrap_err();
    assert_eq!(e.path(), "extra");
    assert!(e.to_string().contains("unknown field `extra`"));

    let trailing = [&ok[..], b" {}"].concat();
    assert!(parse_json(&trailing).is_err());
    assert!(parse_json(b"{").is_err());
    assert!(parse_json(b"\xff\xfe").is_err());
}

#[test]
fn load_file_reads_and_reports_io_errors() {
    let dir = std::env::temp_dir().join(format!("cp-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rate_limit_config.yaml");
    std::fs::write(&file, MINIMAL).unwrap();
    assert_eq!(load_file(&file).unwrap().default_tier, "free");

    std::fs::write(&file, b"default_tier: \xff\n").unwrap();
    let e = load_file(&file).unwrap_err();
    assert!(e.to_string().contains("not valid UTF-8"), "{e}");

    std::fs::write(&file, vec![b'#'; MAX_CONFIG_BYTES + 10]).unwrap();
    assert!(
        load_file(&file)
            .unwrap_err()
            .to_string()
            .contains("larger than the limit")
    );

    let missing = dir.join("missing.yaml");
    let e = load_file(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert_eq!(e.path(), "");
    assert!(e.to_string().starts_with("cannot read "), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn algorithm_and_precision_parse_and_round_trip_only_where_written() {
    let doc = "default_tier: free\ntiers:\n  - name: free\n    algorithm: slotted\n    limits:\n      - {limit: 10, window_seconds: 1, algorithm: exact}\n      - {limit: 100, window_seconds: 60, precision_ms: 500}\n    endpoints:\n      /s: {limits: [{limit: 5, window_seconds: 60, algorithm: slotted, precision_ms: 2000}]}\n      /r: 50\n";
    let cfg = parse_yaml(doc).unwrap();
    let tier = &cfg.tiers[0];
    assert_eq!(tier.algorithm, Some(CounterAlgorithm::Slotted));
    let limits = tier.limits.as_deref().unwrap();
    assert_eq!(limits[0].algorithm, Some(CounterAlgorithm::ExactLog));
    assert_eq!(limits[0].precision_ms, None);
    assert_eq!(limits[1].algorithm, None);
    assert_eq!(limits[1].precision_ms, Some(500));
    let EndpointRule::Rule(rule) = &tier.endpoints["/s"] else {
        panic!("object form");
    };
    assert_eq!(rule.limits[0].algorithm, Some(CounterAlgorithm::Slotted));
    assert_eq!(rule.limits[0].precision_ms, Some(2000));

    // GET shows what was written, nothing more; a PUT of it gives the same document.
    let json = serde_json::to_value(&cfg).unwrap();
    let tier = &json["tiers"][0];
    assert_eq!(tier["algorithm"], "slotted");
    assert_eq!(
        tier["limits"],
        serde_json::json!([
            {"limit": 10, "window_seconds": 1, "algorithm": "exact"},
            {"limit": 100, "window_seconds": 60, "precision_ms": 500},
        ])
    );
    assert_eq!(
        tier["endpoints"]["/s"]["limits"][0],
        serde_json::json!({"limit": 5, "window_seconds": 60, "algorithm": "slotted", "precision_ms": 2000})
    );
    assert_eq!(parse_json(json.to_string().as_bytes()).unwrap(), cfg);
    // JSON is YAML too: the same document PUT with a YAML content type.
    assert_eq!(parse_yaml(&json.to_string()).unwrap(), cfg);

    // A document that does not use them shows neither field.
    let plain = serde_json::to_string(&parse_yaml(WINDOWED).unwrap()).unwrap();
    assert!(
        !plain.contains("algorithm") && !plain.contains("precision_ms"),
        "{plain}"
    );
}
