//! From a decision to the answer of Envoy's rate-limit service protocol: the overall code,
//! one status per descriptor, our headers (`X-RateLimit-*`, the IETF `RateLimit-Policy` /
//! `RateLimit` fields, `Retry-After` on a denial) and the JSON 429 body.
//!
//! The headers and the body are those the wasm filter sends (`filter/src/response.rs`,
//! `filter/src/ietf_fields.rs`), so a client sees the same answer whichever way in the
//! request took.

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::google::protobuf::Duration;
use rl_wire::{CounterReport, DecisionResponse, DenyDetails, ErrorBody, PolicyReport, Verdict};

use crate::decision::rfc3339;

/// Largest sf-integer (RFC 9651: at most 15 digits).
const MAX_SF_INTEGER: u64 = 999_999_999_999_999;

/// The store failed and the configuration fails closed: the call ends with gRPC
/// `UNAVAILABLE`, and Envoy's `failure_mode_deny` / `status_on_error` decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// The answer to a call with `descriptors` descriptors that `decision` decided.
pub fn reply(
    decision: &DecisionResponse,
    descriptors: usize,
) -> Result<RateLimitResponse, Unavailable> {
    match decision.verdict {
        Verdict::Unavailable => Err(Unavailable),
        Verdict::Deny => Ok(match &decision.counter {
            Some(counter) => denied(decision, counter, descriptors),
            // A denial names its counter; without one there is nothing to tell the client.
            None => plain(Code::OverLimit, descriptors),
        }),
        Verdict::Allow => Ok(allowed(decision, descriptors)),
        Verdict::Whitelisted | Verdict::Disabled | Verdict::FailedOpen => {
            Ok(plain(Code::Ok, descriptors))
        }
    }
}

/// The answer to a request costing `cost`, more than the `limit` of a window it would be
/// counted in: no window can ever admit it, so it is refused without counting.
pub fn over_cost(cost: u64, limit: u64, descriptors: usize) -> RateLimitResponse {
    let mut response = plain(Code::OverLimit, descriptors);
    for status in &mut response.statuses {
        status.current_limit = Some(RateLimit {
            name: String::new(),
            requests_per_unit: clamp_u32(limit),
            unit: Unit::Unknown as i32,
        });
    }
    response.response_headers_to_add = vec![
        header(HEADER_LIMIT, limit.to_string()),
        header(HEADER_REMAINING, "0".to_string()),
        header(HEADER_CONTENT_TYPE, "application/json".to_string()),
    ];
    let body = ErrorBody::new(
        "cost_exceeds_limit",
        format!(
            "This request costs {cost}, more than the limit of {limit}: it can never be admitted."
        ),
    );
    response.raw_body = serde_json::to_vec(&body).unwrap_or_default();
    response
}

pub const HEADER_LIMIT: &str = "x-ratelimit-limit";
pub const HEADER_REMAINING: &str = "x-ratelimit-remaining";
pub const HEADER_RESET: &str = "x-ratelimit-reset";
pub const HEADER_TIER: &str = "x-ratelimit-tier";
pub const HEADER_RETRY_AFTER: &str = "retry-after";
pub const HEADER_CONTENT_TYPE: &str = "content-type";
pub const HEADER_RATELIMIT_POLICY: &str = "ratelimit-policy";
pub const HEADER_RATELIMIT: &str = "ratelimit";

fn plain(code: Code, descriptors: usize) -> RateLimitResponse {
    RateLimitResponse {
        overall_code: code as i32,
        statuses: vec![
            DescriptorStatus {
                code: code as i32,
                ..DescriptorStatus::default()
            };
            descriptors
        ],
        ..RateLimitResponse::default()
    }
}

fn allowed(decision: &DecisionResponse, descriptors: usize) -> RateLimitResponse {
    let mut response = plain(Code::Ok, descriptors);
    let counter = decision.counter.as_ref();
    if let Some(counter) = counter {
        describe(&mut response.statuses, counter, counter.reset_after);
    }
    let mut headers = rate_limit_headers(counter, decision.tier.as_deref());
    headers.extend(ietf_fields(
        &decision.policies,
        counter,
        counter.and_then(|c| c.reset_after),
    ));
    response.response_headers_to_add = headers;
    response
}

/// The 429: `Retry-After` always, `t` of `RateLimit` the same number.
fn denied(
    decision: &DecisionResponse,
    counter: &CounterReport,
    descriptors: usize,
) -> RateLimitResponse {
    let mut response = plain(Code::OverLimit, descriptors);
    let retry_after = counter.retry_after.unwrap_or(1).max(1);
    describe(&mut response.statuses, counter, Some(retry_after));
    let tier = decision.tier.as_deref();
    let mut headers = vec![header(HEADER_RETRY_AFTER, retry_after.to_string())];
    headers.extend(rate_limit_headers(Some(counter), tier));
    headers.extend(ietf_fields(
        &decision.policies,
        Some(counter),
        Some(retry_after),
    ));
    headers.push(header(HEADER_CONTENT_TYPE, "application/json".to_string()));
    response.response_headers_to_add = headers;
    response.raw_body = deny_body(counter, tier, retry_after);
    response
}

/// Every descriptor's status names the binding window: the decision is one for the request.
fn describe(statuses: &mut [DescriptorStatus], counter: &CounterReport, reset: Option<u64>) {
    for status in statuses {
        status.current_limit = Some(current_limit(counter));
        status.limit_remaining = clamp_u32(counter.remaining);
        status.duration_until_reset = reset.map(|seconds| Duration {
            seconds: i64::try_from(seconds).unwrap_or(i64::MAX),
            nanos: 0,
        });
    }
}

/// The binding window in the protocol's units: a window of exactly one second, minute, hour
/// or day in that unit; any other length (a 10 s window) has no unit, `UNKNOWN`, and the
/// window is in `name` (the policy, `free-10s`) and in our headers.
fn current_limit(counter: &CounterReport) -> RateLimit {
    let unit = match counter.window {
        1 => Unit::Second,
        60 => Unit::Minute,
        3_600 => Unit::Hour,
        86_400 => Unit::Day,
        _ => Unit::Unknown,
    };
    RateLimit {
        name: counter.policy.clone().unwrap_or_default(),
        requests_per_unit: clamp_u32(counter.limit),
        unit: unit as i32,
    }
}

fn clamp_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn header(key: &str, value: String) -> HeaderValue {
    HeaderValue {
        key: key.to_string(),
        value,
        ..HeaderValue::default()
    }
}

/// The `X-RateLimit-*` headers, as far as the decision provides them.
fn rate_limit_headers(counter: Option<&CounterReport>, tier: Option<&str>) -> Vec<HeaderValue> {
    let mut headers = Vec::with_capacity(4);
    if let Some(c) = counter {
        headers.push(header(HEADER_LIMIT, c.limit.to_string()));
        headers.push(header(HEADER_REMAINING, c.remaining.to_string()));
        headers.push(header(HEADER_RESET, c.reset.to_string()));
    }
    if let Some(tier) = tier.filter(|t| is_safe_header_value(t)) {
        headers.push(header(HEADER_TIER, tier.to_string()));
    }
    headers
}

fn is_safe_header_value(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

/// `RateLimit-Policy` (one item per policy) and `RateLimit` (the binding policy; `t` only
/// when `reset` is known); none without policies. An item a structured field cannot carry is
/// left out.
fn ietf_fields(
    policies: &[PolicyReport],
    counter: Option<&CounterReport>,
    reset: Option<u64>,
) -> Vec<HeaderValue> {
    let mut headers = Vec::with_capacity(2);
    let items: Vec<String> = policies
        .iter()
        .filter_map(|p| sf_item(&p.name, &[("q", Some(p.limit)), ("w", Some(p.window))]))
        .collect();
    if items.is_empty() {
        return headers;
    }
    headers.push(header(HEADER_RATELIMIT_POLICY, items.join(", ")));
    let binding = counter
        .and_then(|c| c.policy.as_deref().map(|name| (name, c.remaining)))
        .and_then(|(name, remaining)| sf_item(name, &[("r", Some(remaining)), ("t", reset)]));
    if let Some(value) = binding {
        headers.push(header(HEADER_RATELIMIT, value));
    }
    headers
}

/// An sf-string item with integer parameters (`None` ones left out); `None` when the name
/// (printable ASCII only) or a number (15 digits at most) cannot be written.
fn sf_item(name: &str, params: &[(&str, Option<u64>)]) -> Option<String> {
    if !name.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return None;
    }
    let mut out = String::with_capacity(name.len() + 2 + 12 * params.len());
    out.push('"');
    for c in name.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    for (key, value) in params {
        let Some(value) = value else { continue };
        if *value > MAX_SF_INTEGER {
            return None;
        }
        out.push_str(&format!(";{key}={value}"));
    }
    Some(out)
}

fn seconds(n: u64) -> &'static str {
    if n == 1 { "second" } else { "seconds" }
}

/// The product's JSON 429 body, as the filter writes it.
fn deny_body(counter: &CounterReport, tier: Option<&str>, retry_after: u64) -> Vec<u8> {
    let mut body = ErrorBody::new(
        "rate_limit_exceeded",
        format!(
            "Rate limit exceeded: {} requests per {} {}. Retry after {} {}.",
            counter.limit,
            counter.window,
            seconds(counter.window),
            retry_after,
            seconds(retry_after)
        ),
    );
    body.error.details = Some(DenyDetails {
        limit: counter.limit,
        window_size: counter.window,
        reset_at: counter
            .reset_at
            .clone()
            .unwrap_or_else(|| rfc3339(counter.reset)),
        retry_after_seconds: retry_after,
        tier: tier.map(str::to_owned),
        endpoint: counter.endpoint.clone(),
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests;
