//! What a client sees of a decision, built the same way whichever way the request came in
//! (the wasm filter's responses, the gRPC service's `response_headers_to_add` and
//! `raw_body`): the `X-RateLimit-*` headers and the 429's error body. The IETF fields are in
//! [`crate::ietf_fields`].

use crate::{CounterReport, DenyDetails, ErrorBody};

pub const HEADER_LIMIT: &str = "x-ratelimit-limit";
pub const HEADER_REMAINING: &str = "x-ratelimit-remaining";
pub const HEADER_RESET: &str = "x-ratelimit-reset";
pub const HEADER_TIER: &str = "x-ratelimit-tier";
/// The `X-RateLimit-*` headers.
pub const RATE_LIMIT_HEADERS: [&str; 4] =
    [HEADER_LIMIT, HEADER_REMAINING, HEADER_RESET, HEADER_TIER];
pub const HEADER_RETRY_AFTER: &str = "retry-after";
pub const HEADER_CONTENT_TYPE: &str = "content-type";

/// Headers as (lowercase name, value).
pub type Headers = Vec<(&'static str, String)>;

/// The four `X-RateLimit-*` headers, as far as the answer provides them.
pub fn x_ratelimit(counter: Option<&CounterReport>, tier: Option<&str>) -> Headers {
    let mut headers = Vec::with_capacity(4);
    if let Some(c) = counter {
        headers.push((HEADER_LIMIT, c.limit.to_string()));
        headers.push((HEADER_REMAINING, c.remaining.to_string()));
        headers.push((HEADER_RESET, c.reset.to_string()));
    }
    // A value with CR/LF would split the response; tier names are plain words anyway.
    if let Some(tier) = tier.filter(|t| is_safe_header_value(t)) {
        headers.push((HEADER_TIER, tier.to_string()));
    }
    headers
}

fn is_safe_header_value(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

fn seconds(n: u64) -> &'static str {
    if n == 1 { "second" } else { "seconds" }
}

/// The 429's body for the binding `counter`: `reset_at` is the answer's, or the caller's
/// RFC 3339 rendering of `counter.reset` when the answer has none.
pub fn deny_error(
    counter: &CounterReport,
    tier: Option<&str>,
    retry_after: u64,
    reset_at: impl FnOnce(u64) -> String,
) -> ErrorBody {
    let message = if counter.window == 0 {
        // No window: a concurrency limit (`max_concurrent`).
        format!(
            "Concurrency limit exceeded: {} requests in flight. Retry after {} {}.",
            counter.limit,
            retry_after,
            seconds(retry_after)
        )
    } else {
        format!(
            "Rate limit exceeded: {} {} per {} {}. Retry after {} {}.",
            counter.limit,
            if counter.units { "units" } else { "requests" },
            counter.window,
            seconds(counter.window),
            retry_after,
            seconds(retry_after)
        )
    };
    let mut body = ErrorBody::new("rate_limit_exceeded", message);
    body.error.details = Some(DenyDetails {
        limit: counter.limit,
        window_size: counter.window,
        reset_at: counter
            .reset_at
            .clone()
            .unwrap_or_else(|| reset_at(counter.reset)),
        retry_after_seconds: retry_after,
        tier: tier.map(str::to_owned),
        endpoint: counter.endpoint.clone(),
    });
    body
}

#[cfg(test)]
mod tests;
