//! What the rate-limit headers and a 429 say, checked against each other. Included with
//! `#[path]` by the real-Envoy tests that read them.

#![allow(dead_code)]

use rl_tests::Reply;
use serde_json::json;

/// (limit, remaining) of the X-RateLimit-* headers.
pub fn described(reply: &Reply) -> (u64, u64) {
    (
        reply.num("x-ratelimit-limit"),
        reply.num("x-ratelimit-remaining"),
    )
}

/// Checks a 429: its body's (limit, window_size, endpoint), the headers describing the same
/// full window, and the body's `retry_after_seconds` equal to `Retry-After`, which it returns.
pub fn denial(reply: &Reply, limit: u64, window: u64, endpoint: &str) -> u64 {
    assert_eq!(reply.status, 429, "{reply:#?}");
    let details = &reply.json()["error"]["details"];
    assert_eq!(
        (
            &details["limit"],
            &details["window_size"],
            &details["endpoint"]
        ),
        (&json!(limit), &json!(window), &json!(endpoint)),
        "{reply:#?}"
    );
    assert_eq!(described(reply), (limit, 0), "{reply:#?}");
    let retry_after = reply.num("retry-after");
    assert_eq!(details["retry_after_seconds"], retry_after, "{reply:#?}");
    retry_after
}
