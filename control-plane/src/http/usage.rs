//! The usage endpoint the filter calls after responses: charges (the upstream's charge header)
//! and releases (responses a rule's `count_statuses` does not count), batched. The decision
//! secret is checked before (`auth::require_decision_secret`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rl_wire::{MAX_USAGE_PER_CALL, UsageRequest, UsageResponse};

use super::decision::parse_object;
use super::{ApiError, AppState};

/// Charges and releases the counters of admitted requests (internal: called by the Envoy
/// filter). Handles this control plane could not have handed out, and those of tiers or rules
/// the configuration no longer has, are skipped; a charge is cut to the rule's `max_charge`;
/// each charge and each release is applied once, however often it is sent.
#[utoipa::path(
    post,
    path = "/internal/v1/usage",
    tag = "internal",
    request_body = UsageRequest,
    responses(
        (status = 200, description = "Units charged and released", body = UsageResponse),
        (status = 400, description = "Not a usage request, or more than 256 items", body = rl_wire::ErrorBody),
        (status = 401, description = "Missing or wrong decision secret (as on the decision endpoints)", body = rl_wire::ErrorBody),
        (status = 503, description = "The counter store failed; send the call again", body = rl_wire::ErrorBody),
    )
)]
pub async fn usage(State(state): State<AppState>, body: Bytes) -> Response {
    let request: UsageRequest = match parse_object(&body, "usage request") {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    if request.items.len() > MAX_USAGE_PER_CALL {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "usage request: {} items, at most {MAX_USAGE_PER_CALL}",
                request.items.len()
            ),
        )
        .into_response();
    }
    match state.decider.usage(&request).await {
        Ok(report) => {
            for (tier, units) in &report.charged {
                state.metrics.units_charged(tier, *units);
            }
            for (tier, units) in &report.released {
                state.metrics.units_released(tier, *units);
            }
            Json(report.response).into_response()
        }
        Err(err) => {
            tracing::warn!(error = %err, "charges and releases failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("usage request: {err}"),
            )
            .into_response()
        }
    }
}
