use super::*;

fn counter(limit: u64, window: u64) -> CounterReport {
    CounterReport {
        limit,
        remaining: 0,
        reset: 1_700_000_060,
        retry_after: Some(1),
        window,
        endpoint: "/api/v1/search".into(),
        reset_at: None,
        policy: Some("free-60s".into()),
        reset_after: Some(1),
        units: false,
    }
}

#[test]
fn the_four_headers_and_no_unsafe_tier() {
    let c = counter(100, 60);
    assert_eq!(
        x_ratelimit(Some(&c), Some("free")),
        [
            (HEADER_LIMIT, "100".to_string()),
            (HEADER_REMAINING, "0".to_string()),
            (HEADER_RESET, "1700000060".to_string()),
            (HEADER_TIER, "free".to_string()),
        ]
    );
    assert_eq!(x_ratelimit(None, Some("unlimited")).len(), 1);
    assert!(x_ratelimit(None, Some("a\r\nb")).is_empty());
    assert!(x_ratelimit(None, Some("")).is_empty());
}

#[test]
fn the_deny_body_names_the_window_in_words() {
    let body = deny_error(&counter(1, 1), Some("free"), 1, |_| "fallback".into());
    assert_eq!(
        body.error.message,
        "Rate limit exceeded: 1 requests per 1 second. Retry after 1 second."
    );
    let details = body.error.details.expect("details");
    assert_eq!(details.reset_at, "fallback");
    assert_eq!(details.tier.as_deref(), Some("free"));

    let mut c = counter(100, 60);
    c.reset_at = Some("2023-11-14T22:14:20Z".into());
    let body = deny_error(&c, None, 59, |_| "not used: the answer has one".into());
    assert!(
        body.error
            .message
            .ends_with("per 60 seconds. Retry after 59 seconds.")
    );
    let details = body.error.details.expect("details");
    assert_eq!(details.reset_at, "2023-11-14T22:14:20Z");
    assert_eq!(details.endpoint, "/api/v1/search");
}

#[test]
fn a_window_of_units_says_units() {
    let mut c = counter(20, 60);
    c.units = true;
    let body = deny_error(&c, Some("free"), 12, |_| "fallback".into());
    assert_eq!(
        body.error.message,
        "Rate limit exceeded: 20 units per 60 seconds. Retry after 12 seconds."
    );
}

#[test]
fn a_concurrency_limit_has_no_window_in_its_message() {
    let body = deny_error(&counter(3, 0), None, 1, |_| "r".into());
    assert_eq!(
        body.error.message,
        "Concurrency limit exceeded: 3 requests in flight. Retry after 1 second."
    );
    assert_eq!(body.error.details.expect("details").window_size, 0);
}
