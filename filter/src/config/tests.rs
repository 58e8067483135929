use super::*;

fn parse(json: &str) -> Result<PluginConfig, ConfigError> {
    PluginConfig::from_json(json.as_bytes())
}

fn err(json: &str) -> String {
    parse(json).unwrap_err().to_string()
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(r#"{"cluster":"rl"}"#).unwrap();
    assert_eq!(c.cluster, "rl");
    assert_eq!(c.authority, "rl");
    assert_eq!(c.timeout, Duration::from_millis(250));
    assert!(c.fail_open);
    assert_eq!(c.api_key_header, "x-api-key");
    assert!(c.trusted_proxies.is_empty());
    assert_eq!(c.decision_secret, None);
    assert!(!c.benchmark_no_callout);
    assert_eq!(c.headers, HeaderSets::ALL);
}

#[test]
fn full_config() {
    let c = parse(
        r#"{"cluster":"rl","authority":"control-plane:8080","timeout_ms":1000,
                "fail_open":false,"api_key_header":"X-My-Key",
                "trusted_proxies":["10.0.0.0/8","192.168.1.1","2001:db8::/32","::1"],
                "decision_secret":"s3cret value"}"#,
    )
    .unwrap();
    assert_eq!(c.authority, "control-plane:8080");
    assert_eq!(c.timeout, Duration::from_millis(1000));
    assert!(!c.fail_open);
    assert_eq!(c.api_key_header, "x-my-key");
    assert_eq!(c.trusted_proxies.nets().len(), 4);
    assert!(c.trusted_proxies.contains("10.9.9.9".parse().unwrap()));
    assert!(c.trusted_proxies.contains("2001:db8::7".parse().unwrap()));
    assert_eq!(c.decision_secret.as_deref(), Some("s3cret value"));
}

#[test]
fn debug_output_redacts_the_secret() {
    let c = parse(r#"{"cluster":"rl","decision_secret":"hunter2"}"#).unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
    assert!(dbg.contains("<redacted>"));
}

#[test]
fn empty_configuration_requires_cluster() {
    for raw in ["", "  \n", "{}"] {
        assert_eq!(
            parse(raw).unwrap_err(),
            ConfigError::Missing("cluster"),
            "{raw:?}"
        );
    }
    assert_eq!(err("{}"), "field `cluster`: is required");
}

#[test]
fn syntax_and_shape_errors() {
    assert!(matches!(parse("{"), Err(ConfigError::Syntax(_))));
    assert!(matches!(parse("cluster: rl"), Err(ConfigError::Syntax(_))));
    assert_eq!(parse(r#"["rl"]"#).unwrap_err(), ConfigError::NotAnObject);
    assert_eq!(parse(r#""rl""#).unwrap_err(), ConfigError::NotAnObject);
    assert!(matches!(
        PluginConfig::from_json(b"\xff"),
        Err(ConfigError::Syntax(_))
    ));
}

#[test]
fn unknown_field_is_named() {
    assert_eq!(
        parse(r#"{"cluster":"rl","fail_opne":false}"#).unwrap_err(),
        ConfigError::UnknownField("fail_opne".into())
    );
    assert!(err(r#"{"cluster":"rl","x":1}"#).starts_with("field `x`: unknown field"));
}

#[test]
fn cluster_values() {
    assert!(err(r#"{"cluster":""}"#).starts_with("field `cluster`"));
    assert!(err(r#"{"cluster":"  "}"#).starts_with("field `cluster`"));
    assert!(err(r#"{"cluster":5}"#).starts_with("field `cluster`: must be a string"));
    assert!(err(r#"{"cluster":null}"#).starts_with("field `cluster`"));
}

#[test]
fn authority_values() {
    assert_eq!(
        parse(r#"{"cluster":"rl","authority":"cp.internal"}"#)
            .unwrap()
            .authority,
        "cp.internal"
    );
    for bad in [r#""""#, r#""a b""#, r#""a\r\nb""#, "1", r#""é""#] {
        let json = format!(r#"{{"cluster":"rl","authority":{bad}}}"#);
        assert!(err(&json).starts_with("field `authority`"), "{json}");
    }
    // Without `authority`, the cluster name is the authority and is checked as one.
    assert!(err(r#"{"cluster":"rate limit"}"#).starts_with("field `cluster`"));
    let named = parse(r#"{"cluster":"rate limit","authority":"cp"}"#).unwrap();
    assert_eq!(
        (named.cluster.as_str(), named.authority.as_str()),
        ("rate limit", "cp")
    );
}

#[test]
fn timeout_values() {
    for (raw, ms) in [("1", 1), ("250", 250), ("60000", 60000)] {
        let json = format!(r#"{{"cluster":"rl","timeout_ms":{raw}}}"#);
        assert_eq!(parse(&json).unwrap().timeout, Duration::from_millis(ms));
    }
    for bad in [
        "0", "-1", "60001", "1.5", "250.0", r#""250""#, "true", "null", "1e3",
    ] {
        let json = format!(r#"{{"cluster":"rl","timeout_ms":{bad}}}"#);
        assert!(
            err(&json).starts_with("field `timeout_ms`"),
            "{json}: {}",
            err(&json)
        );
    }
}

#[test]
fn error_messages_describe_the_bad_value() {
    assert_eq!(
        err(r#"{"cluster":"rl","timeout_ms":0}"#),
        "field `timeout_ms`: must be an integer between 1 and 60000, got 0"
    );
    assert_eq!(
        err(r#"{"cluster":"rl","timeout_ms":-5}"#),
        "field `timeout_ms`: must be an integer between 1 and 60000, got -5"
    );
    assert_eq!(
        err(r#"{"cluster":"rl","timeout_ms":2.5}"#),
        "field `timeout_ms`: must be an integer between 1 and 60000, got a non-integer number"
    );
    assert_eq!(
        err(r#"{"cluster":"rl","fail_open":"no"}"#),
        "field `fail_open`: must be true or false, got a string"
    );
    assert_eq!(
        err(r#"{"cluster":null}"#),
        "field `cluster`: must be a string, got null"
    );
    assert_eq!(
        err(r#"{"cluster":"rl","trusted_proxies":{}}"#),
        "field `trusted_proxies`: must be a list of IPs or CIDR blocks, got an object"
    );
}

#[test]
fn benchmark_no_callout_values() {
    let on = parse(r#"{"cluster":"rl","benchmark_no_callout":true}"#).unwrap();
    assert!(on.benchmark_no_callout);
    assert!(format!("{on:?}").contains("benchmark_no_callout: true"));
    let off = parse(r#"{"cluster":"rl","benchmark_no_callout":false}"#).unwrap();
    assert!(!off.benchmark_no_callout);
    for bad in [r#""true""#, "1", "null", "[]"] {
        let json = format!(r#"{{"cluster":"rl","benchmark_no_callout":{bad}}}"#);
        assert!(
            err(&json).starts_with("field `benchmark_no_callout`: must be true or false"),
            "{json}: {}",
            err(&json)
        );
    }
}

#[test]
fn fail_open_values() {
    assert!(
        parse(r#"{"cluster":"rl","fail_open":true}"#)
            .unwrap()
            .fail_open
    );
    assert!(
        !parse(r#"{"cluster":"rl","fail_open":false}"#)
            .unwrap()
            .fail_open
    );
    for bad in [r#""false""#, "0", "null"] {
        let json = format!(r#"{{"cluster":"rl","fail_open":{bad}}}"#);
        assert!(err(&json).starts_with("field `fail_open`"), "{json}");
    }
}

#[test]
fn api_key_header_values() {
    assert_eq!(
        parse(r#"{"cluster":"rl","api_key_header":"X-API-KEY"}"#)
            .unwrap()
            .api_key_header,
        "x-api-key"
    );
    assert_eq!(
        parse(r#"{"cluster":"rl","api_key_header":"apikey_v2.token"}"#)
            .unwrap()
            .api_key_header,
        "apikey_v2.token"
    );
    for bad in [
        r#""""#,
        r#""x api key""#,
        r#"":path""#,
        r#""x-key:""#,
        r#""kéy""#,
        "7",
        r#""a\nb""#,
    ] {
        let json = format!(r#"{{"cluster":"rl","api_key_header":{bad}}}"#);
        assert!(err(&json).starts_with("field `api_key_header`"), "{json}");
    }
}

#[test]
fn trusted_proxies_values() {
    let c = parse(r#"{"cluster":"rl","trusted_proxies":[]}"#).unwrap();
    assert!(c.trusted_proxies.is_empty());
    assert_eq!(
        err(r#"{"cluster":"rl","trusted_proxies":["10.0.0.0/8","10.0.0.300"]}"#),
        r#"field `trusted_proxies[1]`: "10.0.0.300" is not an IP address or CIDR block"#
    );
    assert!(
        err(r#"{"cluster":"rl","trusted_proxies":["10.0.0.0/33"]}"#)
            .starts_with("field `trusted_proxies[0]`")
    );
    assert!(
        err(r#"{"cluster":"rl","trusted_proxies":[10]}"#)
            .starts_with("field `trusted_proxies[0]`: must be a string")
    );
    assert!(
        err(r#"{"cluster":"rl","trusted_proxies":"10.0.0.0/8"}"#)
            .starts_with("field `trusted_proxies`: must be a list")
    );
}

#[test]
fn decision_secret_values() {
    for bad in [
        r#""""#,
        r#"" padded""#,
        r#""padded ""#,
        r#""a\u0000b""#,
        r#""tab\there""#,
        r#""ünï""#,
        "1",
    ] {
        let json = format!(r#"{{"cluster":"rl","decision_secret":{bad}}}"#);
        assert!(err(&json).starts_with("field `decision_secret`"), "{json}");
    }
}

#[test]
fn headers_values() {
    let sets = |list: &str| {
        parse(&format!(r#"{{"cluster":"rl","headers":{list}}}"#))
            .unwrap()
            .headers
    };
    assert_eq!(sets(r#"["x-ratelimit","ietf"]"#), HeaderSets::ALL);
    assert_eq!(sets(r#"["ietf","x-ratelimit"]"#), HeaderSets::ALL);
    assert_eq!(
        sets(r#"["x-ratelimit"]"#),
        HeaderSets {
            x_ratelimit: true,
            ietf: false
        }
    );
    assert_eq!(
        sets(r#"["ietf"]"#),
        HeaderSets {
            x_ratelimit: false,
            ietf: true
        }
    );
    assert_eq!(sets("[]"), HeaderSets::NONE);
    assert_eq!(HeaderSets::default(), HeaderSets::ALL);
}

#[test]
fn headers_errors_name_the_entry() {
    for (list, message) in [
        (
            r#""ietf""#,
            r#"field `headers`: must be a list of "x-ratelimit" and/or "ietf", got a string"#,
        ),
        (
            "null",
            r#"field `headers`: must be a list of "x-ratelimit" and/or "ietf", got null"#,
        ),
        (
            r#"{"ietf":true}"#,
            r#"field `headers`: must be a list of "x-ratelimit" and/or "ietf", got an object"#,
        ),
        (
            r#"["ietf","draft"]"#,
            r#"field `headers[1]`: unknown header set "draft" (known: "x-ratelimit", "ietf")"#,
        ),
        (
            r#"["X-RateLimit"]"#,
            r#"field `headers[0]`: unknown header set "X-RateLimit" (known: "x-ratelimit", "ietf")"#,
        ),
        (
            r#"["x-ratelimit",1]"#,
            "field `headers[1]`: must be a string, got 1",
        ),
        (
            r#"["ietf","x-ratelimit","ietf"]"#,
            r#"field `headers[2]`: "ietf" is listed twice"#,
        ),
    ] {
        let json = format!(r#"{{"cluster":"rl","headers":{list}}}"#);
        assert_eq!(err(&json), message, "{json}");
    }
}

#[test]
fn charge_header_values() {
    assert_eq!(
        parse(r#"{"cluster":"rl"}"#).unwrap().charge_header,
        "x-ratelimit-charge"
    );
    assert_eq!(
        parse(r#"{"cluster":"rl","charge_header":"X-Tokens-Used"}"#)
            .unwrap()
            .charge_header,
        "x-tokens-used"
    );
    for bad in [r#""""#, r#""x tokens""#, r#"":status""#, "7", "null"] {
        let json = format!(r#"{{"cluster":"rl","charge_header":{bad}}}"#);
        assert!(err(&json).starts_with("field `charge_header`"), "{json}");
    }
}
