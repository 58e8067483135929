//! The internal decision endpoints the filter calls: one request, or a batch under load.
//! The decision secret is checked before (`auth::require_decision_secret`).

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rl_wire::{
    BatchDecisionRequest, BatchDecisionResponse, DecisionRequest, DecisionResponse,
    MAX_BATCH_DECISIONS, Verdict,
};
use serde::de::DeserializeOwned;

use super::{ApiError, AppState, local_denials};
use crate::decision::Decision;
use crate::metrics::Observation;

/// Decides one request (internal: called by the Envoy filter).
#[utoipa::path(
    post,
    path = "/internal/v1/decision",
    tag = "internal",
    request_body = DecisionRequest,
    responses(
        (status = 200, description = "The decision", body = DecisionResponse),
        (status = 400, description = "Not a decision request", body = rl_wire::ErrorBody),
        (status = 401, description = "Missing or wrong decision secret (when RATE_LIMIT_DECISION_SECRET is set; RATE_LIMIT_DECISION_SECRET_PREVIOUS is accepted too), in the x-rate-limit-decision-secret header", body = rl_wire::ErrorBody),
        (status = 413, description = "Body over 16 KiB"),
    )
)]
pub async fn decide(State(state): State<AppState>, body: Bytes) -> Response {
    let request: DecisionRequest = match parse_object(&body, "decision request") {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    let started = Instant::now();
    let decision = state.decider.decide(&request).await;
    record(&state, &decision, started.elapsed());
    Json(decision.response).into_response()
}

/// Decides several requests in one call (internal: the Envoy filter coalesces the decision
/// calls of one worker under load). Same secret as the single endpoint; the answer holds one
/// decision per request, in order.
#[utoipa::path(
    post,
    path = "/internal/v1/decisions",
    tag = "internal",
    request_body = BatchDecisionRequest,
    responses(
        (status = 200, description = "One decision per request, in order", body = BatchDecisionResponse),
        (status = 400, description = "Not a batch decision request, or more than 64 requests", body = rl_wire::ErrorBody),
        (status = 401, description = "Missing or wrong decision secret (when RATE_LIMIT_DECISION_SECRET is set; RATE_LIMIT_DECISION_SECRET_PREVIOUS is accepted too), in the x-rate-limit-decision-secret header", body = rl_wire::ErrorBody),
        (status = 413, description = "Body over 256 KiB"),
    )
)]
pub async fn decide_batch(State(state): State<AppState>, body: Bytes) -> Response {
    let batch: BatchDecisionRequest = match parse_object(&body, "batch decision request") {
        Ok(batch) => batch,
        Err(refused) => return refused.into_response(),
    };
    if batch.requests.len() > MAX_BATCH_DECISIONS {
        return invalid_request(format!(
            "batch decision request: {} requests, at most {MAX_BATCH_DECISIONS}",
            batch.requests.len()
        ))
        .into_response();
    }
    if !batch.local_denials.is_empty() {
        local_denials::count(
            &state.metrics,
            &state.config.current(),
            &batch.local_denials,
        );
    }
    let started = Instant::now();
    let decisions = state.decider.decide_batch(&batch.requests).await;
    // The batch's wall time is what each of its requests waited.
    let elapsed = started.elapsed();
    let mut responses = Vec::with_capacity(decisions.len());
    for decision in decisions {
        record(&state, &decision, elapsed);
        responses.push(decision.response);
    }
    Json(BatchDecisionResponse { responses }).into_response()
}

/// A JSON object body as `T`, or the 400 naming `what` was wrong. Parsed by hand rather than
/// with the Json extractor: a body of any content type is accepted, and every malformed body
/// gets the same 400 shape. Serde would also accept a JSON array for a struct; only an object
/// is a request.
pub(super) fn parse_object<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    let object = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    if !object {
        return Err(invalid_request(format!("{what}: expected a JSON object")));
    }
    serde_json::from_slice(body).map_err(|err| invalid_request(format!("{what}: {err}")))
}

fn invalid_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// Metrics and the log line of a denial (or of a would-be denial by a shadowed window).
pub(crate) fn record(state: &AppState, decision: &Decision, elapsed: std::time::Duration) {
    let response = &decision.response;
    let refused_by = match (&response.counter, &decision.shadow_denial) {
        (Some(counter), _) if response.verdict == Verdict::Deny => counter.policy.as_deref(),
        (_, Some(shadow)) => Some(shadow.policy.as_str()),
        _ => None,
    };
    state.metrics.observe(&Observation {
        verdict: response.verdict,
        tier: response.tier.as_deref(),
        rule: decision.rule.as_deref(),
        policy: refused_by,
        shadow_denied: response.shadow_denied,
        store_error: decision.store_error.as_ref(),
        elapsed,
    });
    if decision.cached {
        state.metrics.deny_cache_hit();
    }
    // The identifier is a form (`key:<id>`, `user:<sub>`, `ip:<addr>`), never a raw key or
    // token; the timestamp comes with the log line.
    let identifier = decision.identity.as_deref().unwrap_or_default();
    let tier = response.tier.as_deref().unwrap_or_default();
    if response.verdict == Verdict::Deny
        && let Some(counter) = &response.counter
    {
        tracing::info!(
            event = "rate_limit_exceeded",
            shadow = false,
            identifier,
            endpoint = %counter.endpoint,
            tier,
            policy = counter.policy.as_deref().unwrap_or_default(),
            limit = counter.limit,
            window_seconds = counter.window,
            retry_after = counter.retry_after.unwrap_or_default(),
            "rate limit exceeded"
        );
    } else if let Some(shadow) = &decision.shadow_denial {
        tracing::info!(
            event = "rate_limit_exceeded",
            shadow = true,
            identifier,
            endpoint = %shadow.endpoint,
            tier,
            policy = %shadow.policy,
            limit = shadow.limit,
            window_seconds = shadow.window,
            retry_after = shadow.retry_after,
            "rate limit exceeded in shadow mode: admitted"
        );
    }
}
