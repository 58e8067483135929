//! The internal decision endpoint the filter calls once per request.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rl_wire::{DECISION_SECRET_HEADER, DecisionRequest};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

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
    let decision = state.decider.decide(&request).await;
    Json(decision.response).into_response()
}
