//! The internal decision endpoint the filter calls once per request.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rl_wire::{DECISION_SECRET_HEADER, DecisionRequest, DecisionResponse, Verdict};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::metrics::Observation;

/// Decides one request (internal: called by the Envoy filter).
#[utoipa::path(
    post,
    path = "/internal/v1/decision",
    tag = "internal",
    request_body = DecisionRequest,
    responses(
        (status = 200, description = "The decision", body = DecisionResponse),
        (status = 400, description = "Not a decision request", body = super::errors::ErrorBody),
        (status = 401, description = "Missing or wrong decision secret (when one is configured)", body = super::errors::ErrorBody),
        (status = 413, description = "Body over 16 KiB"),
    )
)]
pub async fn decide(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(secret) = &state.decision_secret {
        let presented = headers
            .get(DECISION_SECRET_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !bool::from(presented.ct_eq(secret.as_bytes())) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong decision secret",
            )
            .into_response();
        }
    }
    // Parsed by hand rather than with the Json extractor: a body of any content type is
    // accepted, and every malformed body gets the same 400 shape. Serde would also accept a
    // JSON array for the struct; only an object is a decision request.
    let starts_as_object = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    if !starts_as_object {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "decision request: expected a JSON object",
        )
        .into_response();
    }
    let request: DecisionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("decision request: {err}"),
            )
            .into_response();
        }
    };
    let started = Instant::now();
    let decision = state.decider.decide(&request).await;
    let response = &decision.response;
    state.metrics.observe(&Observation {
        verdict: response.verdict,
        tier: response.tier.as_deref(),
        rule: decision.rule.as_deref(),
        store_error: decision.store_error.as_ref(),
        elapsed: started.elapsed(),
    });
    if response.verdict == Verdict::Deny
        && let Some(counter) = &response.counter
    {
        // The identifier is a form (`key:<id>`, `user:<sub>`, `ip:<addr>`), never a raw key
        // or token; the timestamp comes with the log line.
        tracing::info!(
            event = "rate_limit_exceeded",
            identifier = decision.identity.as_deref().unwrap_or_default(),
            endpoint = %counter.endpoint,
            tier = response.tier.as_deref().unwrap_or_default(),
            limit = counter.limit,
            window_seconds = counter.window,
            retry_after = counter.retry_after.unwrap_or_default(),
            "rate limit exceeded"
        );
    }
    Json(decision.response).into_response()
}
