use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use rl_wire::{CounterReport, DecisionResponse, ErrorBody, PolicyReport, Verdict};

use super::{Unavailable, over_cost, reply};

fn counter(remaining: u64, retry_after: Option<u64>) -> CounterReport {
    CounterReport {
        limit: 100,
        remaining,
        reset: 1_900_000_000,
        retry_after,
        window: 60,
        endpoint: "/api/v1/request".into(),
        reset_at: Some("2030-03-17T17:46:40Z".into()),
        policy: Some("free-60s".into()),
        reset_after: Some(37),
        units: false,
    }
}

fn decision(verdict: Verdict, counter: Option<CounterReport>) -> DecisionResponse {
    DecisionResponse {
        verdict,
        tier: Some("free".into()),
        counter,
        policies: vec![
            PolicyReport {
                name: "free-1s".into(),
                limit: 10,
                window: 1,
            },
            PolicyReport {
                name: "free-60s".into(),
                limit: 100,
                window: 60,
            },
        ],
        shadow_denied: false,
        deny_for_ms: None,
        lease: None,
        usage: None,
    }
}

fn headers(r: &RateLimitResponse) -> Vec<(String, String)> {
    r.response_headers_to_add
        .iter()
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect()
}

fn get<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn an_admitted_request_is_ok_with_our_headers_and_one_status_per_descriptor() {
    let r = reply(&decision(Verdict::Allow, Some(counter(42, None))), 3).unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses.len(), 3);
    for s in &r.statuses {
        assert_eq!(s.code, Code::Ok as i32);
        assert_eq!(s.limit_remaining, 42);
        let limit = s.current_limit.as_ref().unwrap();
        assert_eq!(
            (limit.requests_per_unit, limit.unit),
            (100, Unit::Minute as i32)
        );
        assert_eq!(limit.name, "free-60s");
        assert_eq!(s.duration_until_reset.unwrap().seconds, 37);
    }
    let h = headers(&r);
    assert_eq!(get(&h, "x-ratelimit-limit"), Some("100"));
    assert_eq!(get(&h, "x-ratelimit-remaining"), Some("42"));
    assert_eq!(get(&h, "x-ratelimit-reset"), Some("1900000000"));
    assert_eq!(get(&h, "x-ratelimit-tier"), Some("free"));
    assert_eq!(
        get(&h, "ratelimit-policy"),
        Some(r#""free-1s";q=10;w=1, "free-60s";q=100;w=60"#)
    );
    assert_eq!(get(&h, "ratelimit"), Some(r#""free-60s";r=42;t=37"#));
    assert_eq!(get(&h, "retry-after"), None);
    assert!(r.raw_body.is_empty());
}

#[test]
fn a_denial_is_over_limit_with_retry_after_and_the_json_body() {
    let r = reply(&decision(Verdict::Deny, Some(counter(0, Some(12)))), 1).unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].duration_until_reset.unwrap().seconds, 12);
    let h = headers(&r);
    assert_eq!(get(&h, "retry-after"), Some("12"));
    assert_eq!(get(&h, "ratelimit"), Some(r#""free-60s";r=0;t=12"#));
    assert_eq!(get(&h, "content-type"), Some("application/json"));
    let body: ErrorBody = serde_json::from_slice(&r.raw_body).unwrap();
    assert_eq!(body.error.code, "rate_limit_exceeded");
    let details = body.error.details.unwrap();
    assert_eq!(details.retry_after_seconds, 12);
    assert_eq!(details.limit, 100);
    assert_eq!(details.tier.as_deref(), Some("free"));
    assert_eq!(details.endpoint, "/api/v1/request");
}

#[test]
fn a_window_of_no_unit_is_unknown_and_named() {
    let mut c = counter(1, None);
    c.window = 10;
    c.policy = Some("free-10s".into());
    let r = reply(&decision(Verdict::Allow, Some(c)), 1).unwrap();
    let limit = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(limit.unit, Unit::Unknown as i32);
    assert_eq!(limit.name, "free-10s");
}

#[test]
fn store_failures_follow_the_verdict() {
    assert_eq!(
        reply(&decision(Verdict::Unavailable, None), 1),
        Err(Unavailable)
    );
    for verdict in [Verdict::FailedOpen, Verdict::Whitelisted, Verdict::Disabled] {
        let r = reply(&decision(verdict, None), 2).unwrap();
        assert_eq!(r.overall_code, Code::Ok as i32);
        assert_eq!(r.statuses.len(), 2);
        assert!(r.response_headers_to_add.is_empty());
    }
}

#[test]
fn names_a_structured_field_cannot_carry_are_left_out() {
    let mut d = decision(Verdict::Allow, Some(counter(5, None)));
    d.policies[0].name = "bad\u{e9}".into();
    d.tier = Some("a\r\nb".into());
    let h = headers(&reply(&d, 1).unwrap());
    assert_eq!(
        get(&h, "ratelimit-policy"),
        Some(r#""free-60s";q=100;w=60"#)
    );
    assert_eq!(get(&h, "x-ratelimit-tier"), None);
}

#[test]
fn a_cost_above_the_limit_is_over_limit() {
    let r = over_cost(1_000_000, 100, 2);
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses.len(), 2);
    let body: ErrorBody = serde_json::from_slice(&r.raw_body).unwrap();
    assert_eq!(body.error.code, "cost_exceeds_limit");
    assert_eq!(get(&headers(&r), "x-ratelimit-remaining"), Some("0"));
}
