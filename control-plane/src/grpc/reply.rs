//! From a decision to the answer of Envoy's rate-limit service protocol: the overall code,
//! one status per descriptor, our headers (`X-RateLimit-*`, the IETF `RateLimit-Policy` /
//! `RateLimit` fields, `Retry-After` on a denial) and the JSON 429 body.
//!
//! The headers and the body are built by the same code as the wasm filter's (`rl_wire::headers`,
//! `rl_wire::ietf_fields`), so a client sees the same answer whichever way in the request
//! took.

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::google::protobuf::Duration;
use rl_wire::headers::{
    HEADER_CONTENT_TYPE, HEADER_LIMIT, HEADER_REMAINING, HEADER_RETRY_AFTER, Headers, deny_error,
    x_ratelimit,
};
use rl_wire::{CounterReport, DecisionResponse, ErrorBody, Verdict, ietf_fields};

use crate::decision::rfc3339;

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
    let mut headers = x_ratelimit(counter, decision.tier.as_deref());
    headers.extend(ietf_fields::fields(
        &decision.policies,
        counter,
        counter.and_then(|c| c.reset_after),
    ));
    response.response_headers_to_add = to_envoy(headers);
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
    let mut headers: Headers = vec![(HEADER_RETRY_AFTER, retry_after.to_string())];
    headers.extend(x_ratelimit(Some(counter), tier));
    headers.extend(ietf_fields::fields(
        &decision.policies,
        Some(counter),
        Some(retry_after),
    ));
    headers.push((HEADER_CONTENT_TYPE, "application/json".to_string()));
    response.response_headers_to_add = to_envoy(headers);
    let body = deny_error(counter, tier, retry_after, rfc3339);
    response.raw_body = serde_json::to_vec(&body).unwrap_or_default();
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

/// Our headers as Envoy's protocol carries them.
fn to_envoy(headers: Headers) -> Vec<HeaderValue> {
    headers
        .into_iter()
        .map(|(key, value)| header(key, value))
        .collect()
}

#[cfg(test)]
mod tests;
