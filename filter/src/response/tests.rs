use super::*;
use serde_json::{Value, json};

fn ok(body: &str) -> CallResult<'_> {
    CallResult::Response {
        status: Some(b"200"),
        body: CallBody::Bytes(body.as_bytes()),
    }
}

fn headers(list: &[(&'static str, &str)]) -> Headers {
    list.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Forwarded with `h` set and nothing appended.
fn resume(h: Headers) -> Action {
    Action::Resume {
        response_headers: ResponseHeaders {
            replace: h,
            append: vec![],
        },
    }
}

const ALLOW: &str = r#"{"verdict":"allow","tier":"free","counter":{"limit":100,"remaining":99,"reset":1700000060,"window":60,"endpoint":"/api/v1/request"}}"#;
const DENY: &str = r#"{"verdict":"deny","tier":"free","counter":{"limit":100,"remaining":0,"reset":1700000060,"retry_after":59,"window":60,"endpoint":"/api/v1/request","reset_at":"2023-11-14T22:14:20Z"}}"#;

#[test]
fn allow_with_counter_sets_all_headers() {
    for fail_open in [true, false] {
        let d = decide(ok(ALLOW), fail_open, HeaderSets::ALL);
        assert_eq!(d.outcome, Outcome::Allowed);
        assert_eq!(d.error, None);
        assert_eq!(
            d.action,
            resume(headers(&[
                ("x-ratelimit-limit", "100"),
                ("x-ratelimit-remaining", "99"),
                ("x-ratelimit-reset", "1700000060"),
                ("x-ratelimit-tier", "free"),
            ]))
        );
    }
}

#[test]
fn allow_without_counter_sets_only_tier() {
    let d = decide(
        ok(r#"{"verdict":"allow","tier":"unlimited"}"#),
        true,
        HeaderSets::ALL,
    );
    assert_eq!(
        d.action,
        resume(headers(&[("x-ratelimit-tier", "unlimited")]))
    );
    assert_eq!(d.outcome, Outcome::Allowed);
    let d = decide(ok(r#"{"verdict":"allow"}"#), true, HeaderSets::ALL);
    assert_eq!(d.action, resume(vec![]));
}

#[test]
fn unsafe_tier_is_not_echoed_into_headers() {
    let d = decide(
        ok(r#"{"verdict":"allow","tier":"free\r\nset-cookie: x=1"}"#),
        true,
        HeaderSets::ALL,
    );
    assert_eq!(d.action, resume(vec![]));
}

#[test]
fn deny_is_an_exact_429() {
    for fail_open in [true, false] {
        let d = decide(ok(DENY), fail_open, HeaderSets::ALL);
        assert_eq!(d.outcome, Outcome::Denied);
        let Action::Reply(reply) = d.action else {
            panic!("not a reply")
        };
        assert_eq!(reply.status, 429);
        assert_eq!(
            reply.headers,
            headers(&[
                ("retry-after", "59"),
                ("x-ratelimit-limit", "100"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700000060"),
                ("x-ratelimit-tier", "free"),
                ("content-type", "application/json"),
            ])
        );
        assert_eq!(
            String::from_utf8(reply.body).unwrap(),
            r#"{"error":{"code":"rate_limit_exceeded","message":"Rate limit exceeded: 100 requests per 60 seconds. Retry after 59 seconds.","details":{"limit":100,"window_size":60,"reset_at":"2023-11-14T22:14:20Z","retry_after_seconds":59,"tier":"free","endpoint":"/api/v1/request"}}}"#
        );
    }
}

#[test]
fn the_largest_possible_answer_is_read() {
    // A whole 4 KiB path of control characters, each escaped to 6 bytes in the answer.
    let endpoint = "\u{1}".repeat(crate::evidence::MAX_PATH_BYTES + 1);
    let answer = serde_json::json!({
        "verdict": "deny",
        "tier": "free",
        "counter": {"limit": 100, "remaining": 0, "reset": 1_700_000_060u64,
                    "retry_after": 59, "window": 60, "endpoint": endpoint,
                    "reset_at": "2023-11-14T22:14:20Z"}
    })
    .to_string();
    assert!(answer.len() > 16 * 1024 && answer.len() <= MAX_DECISION_RESPONSE_BYTES);
    assert!(CallBody::should_read(answer.len()));
    let result = CallResult::Response {
        status: Some(b"200"),
        body: CallBody::from_read(answer.len(), Some(answer.as_bytes())),
    };
    assert_eq!(
        decide(result, true, HeaderSets::ALL).outcome,
        Outcome::Denied
    );
}

#[test]
fn deny_escapes_strings_and_fills_gaps() {
    let body = r#"{"verdict":"deny","tier":"a\"b","counter":{"limit":1,"remaining":0,"reset":1700000060,"retry_after":0,"window":1,"endpoint":"/x\"y\\z"}}"#;
    let Action::Reply(reply) = decide(ok(body), true, HeaderSets::ALL).action else {
        panic!()
    };
    assert_eq!(
        reply.headers[0],
        ("retry-after", "1".to_string()),
        "at least 1"
    );
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        v,
        json!({"error":{"code":"rate_limit_exceeded",
                "message":"Rate limit exceeded: 1 requests per 1 second. Retry after 1 second.",
                "details":{"limit":1,"window_size":1,"reset_at":"2023-11-14T22:14:20Z",
                    "retry_after_seconds":1,"tier":"a\"b","endpoint":"/x\"y\\z"}}})
    );
    // No retry_after at all, no tier.
    let body = r#"{"verdict":"deny","counter":{"limit":5,"remaining":0,"reset":0,"window":60,"endpoint":"/e"}}"#;
    let Action::Reply(reply) = decide(ok(body), true, HeaderSets::ALL).action else {
        panic!()
    };
    assert_eq!(reply.headers[0].1, "1");
    assert!(!reply.headers.iter().any(|(k, _)| *k == HEADER_TIER));
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(v["error"]["details"]["tier"], Value::Null);
    assert_eq!(v["error"]["details"]["reset_at"], "1970-01-01T00:00:00Z");
}

fn assert_unavailable(action: &Action) {
    let Action::Reply(reply) = action else {
        panic!("not a reply: {action:?}")
    };
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.headers,
        headers(&[("retry-after", "1"), ("content-type", "application/json")])
    );
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_unavailable");
    assert!(v["error"]["message"].is_string());
    assert_eq!(v["error"].as_object().unwrap().len(), 2);
}

#[test]
fn unavailable_is_503_without_rate_limit_headers() {
    for fail_open in [true, false] {
        let d = decide(
            ok(
                r#"{"verdict":"unavailable","tier":"free","counter":{"limit":1,"remaining":0,"reset":1,"window":1,"endpoint":"/"}}"#,
            ),
            fail_open,
            HeaderSets::ALL,
        );
        assert_eq!(d.outcome, Outcome::Unavailable);
        assert_eq!(d.error, None);
        assert_unavailable(&d.action);
    }
}

#[test]
fn admitted_without_headers() {
    for (verdict, outcome) in [
        ("whitelisted", Outcome::Whitelisted),
        ("disabled", Outcome::Disabled),
        ("failed_open", Outcome::FailedOpen),
    ] {
        for fail_open in [true, false] {
            let body = format!(
                r#"{{"verdict":"{verdict}","tier":"free","counter":{{"limit":1,"remaining":0,"reset":1,"window":1,"endpoint":"/"}}}}"#
            );
            let d = decide(ok(&body), fail_open, HeaderSets::ALL);
            assert_eq!(d.outcome, outcome);
            assert_eq!(d.error, None);
            assert_eq!(d.action, resume(vec![]));
        }
    }
}

fn failures() -> Vec<(CallResult<'static>, ControlPlaneError)> {
    let resp = |status: Option<&'static [u8]>, body| CallResult::Response { status, body };
    vec![
        (
            CallResult::DispatchFailed,
            ControlPlaneError::DispatchFailed,
        ),
        (CallResult::Reset, ControlPlaneError::Reset),
        (
            resp(Some(b"503"), CallBody::Bytes(b"no healthy upstream")),
            ControlPlaneError::Status(503),
        ),
        (
            resp(Some(b"504"), CallBody::Bytes(b"upstream request timeout")),
            ControlPlaneError::Status(504),
        ),
        (
            resp(Some(b"500"), CallBody::Bytes(DENY.as_bytes())),
            ControlPlaneError::Status(500),
        ),
        (
            resp(Some(b"429"), CallBody::Bytes(DENY.as_bytes())),
            ControlPlaneError::Status(429),
        ),
        (
            resp(Some(b"204"), CallBody::Empty),
            ControlPlaneError::Status(204),
        ),
        (
            resp(Some(b"401"), CallBody::Bytes(b"{\"error\":{}}")),
            ControlPlaneError::Unauthorized,
        ),
        (
            resp(None, CallBody::Bytes(ALLOW.as_bytes())),
            ControlPlaneError::MissingStatus,
        ),
        (
            resp(Some(b"2000"), CallBody::Bytes(ALLOW.as_bytes())),
            ControlPlaneError::MissingStatus,
        ),
        (
            resp(Some(b"20x"), CallBody::Bytes(ALLOW.as_bytes())),
            ControlPlaneError::MissingStatus,
        ),
        (
            resp(Some(b"200"), CallBody::Empty),
            ControlPlaneError::EmptyBody,
        ),
        (
            resp(Some(b"200"), CallBody::TooLarge(1 << 20)),
            ControlPlaneError::BodyTooLarge(1 << 20),
        ),
        (
            resp(
                Some(b"200"),
                CallBody::Bytes(r#"{"verdict":"deny"}"#.as_bytes()),
            ),
            ControlPlaneError::DenyWithoutCounter,
        ),
    ]
}

fn malformed_bodies() -> Vec<&'static str> {
    vec![
        "garbage",
        "{",
        "null",
        "[]",
        r#"{"verdict":"maybe"}"#,
        r#"{"verdict":"ALLOW"}"#,
        r#"{"tier":"free"}"#,
        r#"{"verdict":"allow","counter":{"limit":"100"}}"#,
        r#"{"verdict":"allow","counter":{"limit":-1,"remaining":0,"reset":0,"window":1,"endpoint":"/"}}"#,
        "\u{feff}{\"verdict\":\"allow\"}",
    ]
}

#[test]
fn control_plane_failures_fail_open() {
    for (result, error) in failures() {
        let d = decide(result, true, HeaderSets::ALL);
        assert_eq!(d.outcome, Outcome::FailedOpen, "{result:?}");
        assert_eq!(d.error, Some(error));
        assert_eq!(d.action, resume(vec![]), "{result:?}");
    }
    for body in malformed_bodies() {
        let d = decide(ok(body), true, HeaderSets::ALL);
        assert_eq!(d.outcome, Outcome::FailedOpen, "{body}");
        assert!(
            matches!(d.error, Some(ControlPlaneError::Malformed(_))),
            "{body}"
        );
        assert_eq!(d.action, resume(vec![]));
    }
}

#[test]
fn control_plane_failures_fail_closed() {
    for (result, error) in failures() {
        let d = decide(result, false, HeaderSets::ALL);
        assert_eq!(d.outcome, Outcome::FailedClosed, "{result:?}");
        assert_eq!(d.error, Some(error));
        assert_unavailable(&d.action);
    }
    for body in malformed_bodies() {
        let d = decide(ok(body), false, HeaderSets::ALL);
        assert_eq!(d.outcome, Outcome::FailedClosed, "{body}");
        assert!(
            matches!(d.error, Some(ControlPlaneError::Malformed(_))),
            "{body}"
        );
        assert_unavailable(&d.action);
    }
}

#[test]
fn extra_fields_in_the_answer_are_tolerated() {
    let d = decide(
        ok(r#"{"verdict":"whitelisted","future":1}"#),
        false,
        HeaderSets::ALL,
    );
    assert_eq!(d.outcome, Outcome::Whitelisted);
}

#[test]
fn body_classification() {
    assert!(CallBody::should_read_within(5, 5));
    assert!(!CallBody::should_read_within(6, 5));
    assert_eq!(
        CallBody::from_read_within(6, 5, None),
        CallBody::TooLarge(6)
    );
    assert_eq!(
        CallBody::from_read_within(MAX_DECISION_RESPONSE_BYTES + 1, usize::MAX, Some(b"{}")),
        CallBody::Bytes(b"{}")
    );
    assert!(!CallBody::should_read(0));
    assert!(CallBody::should_read(1));
    assert!(CallBody::should_read(MAX_DECISION_RESPONSE_BYTES));
    assert!(!CallBody::should_read(MAX_DECISION_RESPONSE_BYTES + 1));
    assert_eq!(CallBody::from_read(0, None), CallBody::Empty);
    assert_eq!(CallBody::from_read(3, Some(b"")), CallBody::Empty);
    assert_eq!(CallBody::from_read(2, Some(b"{}")), CallBody::Bytes(b"{}"));
    assert_eq!(
        CallBody::from_read(MAX_DECISION_RESPONSE_BYTES + 1, None),
        CallBody::TooLarge(MAX_DECISION_RESPONSE_BYTES + 1)
    );
    // An oversized answer is refused even when it would parse.
    let mut big = ALLOW.as_bytes().to_vec();
    big.resize(MAX_DECISION_RESPONSE_BYTES + 1, b' ');
    let body = CallBody::from_read(big.len(), Some(&big));
    let d = decide(
        CallResult::Response {
            status: Some(b"200"),
            body,
        },
        false,
        HeaderSets::ALL,
    );
    assert_eq!(d.outcome, Outcome::FailedClosed);
}

#[test]
fn metric_indices_are_distinct_and_named() {
    let all = [
        Outcome::Allowed,
        Outcome::Denied,
        Outcome::Unavailable,
        Outcome::Whitelisted,
        Outcome::Disabled,
        Outcome::FailedOpen,
        Outcome::FailedClosed,
    ];
    let mut seen: Vec<usize> = all.iter().map(|o| o.metric_index()).collect();
    seen.push(CONTROL_PLANE_ERRORS_METRIC);
    seen.push(BATCH_CALLS_METRIC);
    seen.push(UNAUTHORIZED_METRIC);
    seen.push(LOCAL_DENIED_METRIC);
    seen.push(CHARGES_INVALID_METRIC);
    seen.push(USAGE_DROPPED_METRIC);
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), METRIC_NAMES.len());
    assert_eq!(
        METRIC_NAMES[Outcome::Denied.metric_index()],
        "rate_limit_filter.denied"
    );
    assert_eq!(
        METRIC_NAMES[Outcome::FailedOpen.metric_index()],
        "rate_limit_filter.failed_open"
    );
    assert_eq!(
        METRIC_NAMES[CONTROL_PLANE_ERRORS_METRIC],
        "rate_limit_filter.control_plane_errors"
    );
    assert_eq!(
        METRIC_NAMES[BATCH_CALLS_METRIC],
        "rate_limit_filter.batch_calls"
    );
    assert_eq!(
        METRIC_NAMES[UNAUTHORIZED_METRIC],
        "rate_limit_filter.unauthorized"
    );
    assert_eq!(
        METRIC_NAMES[LOCAL_DENIED_METRIC],
        "rate_limit_filter.local_denied"
    );
}

#[test]
fn a_401_counts_as_unauthorized_every_other_error_as_a_control_plane_error() {
    assert_eq!(
        ControlPlaneError::Unauthorized.metric_index(),
        UNAUTHORIZED_METRIC
    );
    for (_, error) in failures() {
        if error != ControlPlaneError::Unauthorized {
            assert_eq!(
                error.metric_index(),
                CONTROL_PLANE_ERRORS_METRIC,
                "{error:?}"
            );
        }
    }
}

#[test]
fn rfc3339_formatting() {
    assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339_utc(1_700_000_060), "2023-11-14T22:14:20Z");
    assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339_utc(4_107_542_399), "2100-02-28T23:59:59Z");
    assert_eq!(rfc3339_utc(1_709_251_199), "2024-02-29T23:59:59Z");
}

#[test]
fn error_messages_are_readable() {
    assert_eq!(
        ControlPlaneError::Status(504).to_string(),
        "decision call answered HTTP 504"
    );
    assert_eq!(
        ControlPlaneError::Reset.to_string(),
        "decision call was reset"
    );
    let unauthorized = ControlPlaneError::Unauthorized.to_string();
    assert!(
        unauthorized
            .starts_with("decision call answered HTTP 401: missing or wrong decision secret"),
        "{unauthorized}"
    );
}

// ---------------------------------------------------------------------------------------------
// The header sets and the IETF fields

/// An answer of a control plane that reports its windows: the tier's two, then the rule's.
fn with_policies(verdict: &str, remaining: u64, retry_after: Option<u64>) -> String {
    json!({
        "verdict": verdict,
        "tier": "free",
        "counter": {"limit": 10, "remaining": remaining, "reset": 1_700_000_060u64,
                    "retry_after": retry_after, "window": 1, "endpoint": "/api/v1/search",
                    "policy": "free-1s", "reset_after": retry_after.unwrap_or(1)},
        "policies": [
            {"name": "free-1s", "limit": 10, "window": 1},
            {"name": "free-60s", "limit": 100, "window": 60},
            {"name": "free-/api/v1/search-60s", "limit": 30, "window": 60}
        ]
    })
    .to_string()
}

const POLICY: &str =
    r#""free-1s";q=10;w=1, "free-60s";q=100;w=60, "free-/api/v1/search-60s";q=30;w=60"#;

const X_ONLY: HeaderSets = HeaderSets {
    x_ratelimit: true,
    ietf: false,
};
const IETF_ONLY: HeaderSets = HeaderSets {
    x_ratelimit: false,
    ietf: true,
};

fn forwarded(d: &Decision) -> &ResponseHeaders {
    match &d.action {
        Action::Resume { response_headers } => response_headers,
        Action::Reply(reply) => panic!("not forwarded: {reply:?}"),
    }
}

#[test]
fn an_allowed_request_gets_the_sets_the_plugin_chose() {
    let answer = with_policies("allow", 4, None);
    let x = headers(&[
        ("x-ratelimit-limit", "10"),
        ("x-ratelimit-remaining", "4"),
        ("x-ratelimit-reset", "1700000060"),
        ("x-ratelimit-tier", "free"),
    ]);
    let ietf = headers(&[
        ("ratelimit-policy", POLICY),
        ("ratelimit", r#""free-1s";r=4;t=1"#),
    ]);
    for (sets, replace, append) in [
        (HeaderSets::ALL, x.clone(), ietf.clone()),
        (X_ONLY, x.clone(), vec![]),
        (IETF_ONLY, vec![], ietf.clone()),
        (HeaderSets::NONE, vec![], vec![]),
    ] {
        let d = decide(ok(&answer), true, sets);
        assert_eq!(d.outcome, Outcome::Allowed);
        assert_eq!(
            forwarded(&d),
            &ResponseHeaders { replace, append },
            "{sets:?}"
        );
    }
}

#[test]
fn the_429_carries_the_chosen_sets_and_t_is_retry_after() {
    // The control plane's reset_after disagrees on purpose: the 429's `t` is its Retry-After.
    let mut answer: Value = serde_json::from_str(&with_policies("deny", 0, Some(7))).unwrap();
    answer["counter"]["reset_after"] = json!(9);
    let answer = answer.to_string();
    let x = headers(&[
        ("x-ratelimit-limit", "10"),
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "1700000060"),
        ("x-ratelimit-tier", "free"),
    ]);
    let ietf = headers(&[
        ("ratelimit-policy", POLICY),
        ("ratelimit", r#""free-1s";r=0;t=7"#),
    ]);
    for (sets, middle) in [
        (HeaderSets::ALL, [x.clone(), ietf.clone()].concat()),
        (X_ONLY, x.clone()),
        (IETF_ONLY, ietf.clone()),
        (HeaderSets::NONE, vec![]),
    ] {
        let d = decide(ok(&answer), false, sets);
        let Action::Reply(reply) = d.action else {
            panic!("not a reply")
        };
        assert_eq!(reply.status, 429);
        let want = [
            headers(&[("retry-after", "7")]),
            middle,
            headers(&[("content-type", "application/json")]),
        ]
        .concat();
        assert_eq!(reply.headers, want, "{sets:?}");
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["error"]["details"]["retry_after_seconds"], 7);
    }
}

#[test]
fn a_shadow_denial_is_an_allowed_request_with_the_headers_an_enforced_limit_would_send() {
    let mut answer: Value = serde_json::from_str(&with_policies("allow", 0, None)).unwrap();
    answer["shadow_denied"] = json!(true);
    answer["counter"]["reset_after"] = json!(1);
    let d = decide(ok(&answer.to_string()), false, HeaderSets::ALL);
    assert_eq!(d.outcome, Outcome::Allowed);
    assert_eq!(d.error, None);
    let headers = forwarded(&d);
    assert!(
        !headers
            .replace
            .iter()
            .chain(&headers.append)
            .any(|(n, _)| *n == HEADER_RETRY_AFTER),
        "no Retry-After on a 200: {headers:?}"
    );
    assert!(
        headers
            .append
            .contains(&("ratelimit", r#""free-1s";r=0;t=1"#.to_string()))
    );
    assert!(
        headers
            .replace
            .contains(&("x-ratelimit-remaining", "0".to_string()))
    );
}

#[test]
fn neither_set_on_whitelisted_disabled_failed_open_or_unavailable() {
    for verdict in ["whitelisted", "disabled", "failed_open"] {
        let d = decide(ok(&with_policies(verdict, 4, None)), true, HeaderSets::ALL);
        assert_eq!(forwarded(&d), &ResponseHeaders::default(), "{verdict}");
    }
    let d = decide(
        ok(&with_policies("unavailable", 0, Some(1))),
        true,
        HeaderSets::ALL,
    );
    assert_unavailable(&d.action);
}

#[test]
fn an_answer_without_policies_gets_no_ietf_fields() {
    for answer in [ALLOW, r#"{"verdict":"allow","tier":"unlimited"}"#] {
        let d = decide(ok(answer), true, HeaderSets::ALL);
        assert_eq!(forwarded(&d).append, vec![], "{answer}");
    }
    let Action::Reply(reply) = decide(ok(DENY), true, HeaderSets::ALL).action else {
        panic!("not a reply")
    };
    assert!(
        !reply
            .headers
            .iter()
            .any(|(n, _)| n.starts_with("ratelimit")),
        "{reply:?}"
    );
}

#[test]
fn a_concurrency_denial_says_so_and_waits_one_second() {
    let answer = r#"{"verdict":"deny","tier":"free","counter":{"limit":3,"remaining":0,"reset":1700000001,"retry_after":1,"window":0,"endpoint":"/api/v1/request","reset_at":"2023-11-14T22:13:21Z","reset_after":1}}"#;
    let d = decide(ok(answer), true, HeaderSets::ALL);
    assert_eq!(d.outcome, Outcome::Denied);
    let Action::Reply(reply) = d.action else {
        panic!("not a reply")
    };
    assert_eq!(reply.status, 429);
    assert_eq!(
        reply.headers,
        headers(&[
            ("retry-after", "1"),
            ("x-ratelimit-limit", "3"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1700000001"),
            ("x-ratelimit-tier", "free"),
            ("content-type", "application/json"),
        ]),
        "no RateLimit fields without policies"
    );
    assert_eq!(
        String::from_utf8(reply.body).unwrap(),
        r#"{"error":{"code":"rate_limit_exceeded","message":"Concurrency limit exceeded: 3 requests in flight. Retry after 1 second.","details":{"limit":3,"window_size":0,"reset_at":"2023-11-14T22:13:21Z","retry_after_seconds":1,"tier":"free","endpoint":"/api/v1/request"}}}"#
    );
}
