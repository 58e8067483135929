//! The lease endpoint the filter calls: renewals of the concurrency leases of its requests in
//! flight and releases of those that ended, batched. The decision secret is checked before
//! (`auth::require_decision_secret`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rl_wire::{LeasesRequest, LeasesResponse, MAX_LEASES_PER_CALL};

use super::decision::parse_object;
use super::{ApiError, AppState};

/// Renews and releases concurrency leases (internal: called by the Envoy filter). Ids this
/// control plane did not hand out are skipped; an expired lease is neither renewed nor
/// counted as released.
#[utoipa::path(
    post,
    path = "/internal/v1/leases",
    tag = "internal",
    request_body = LeasesRequest,
    responses(
        (status = 200, description = "How many leases were renewed and released", body = LeasesResponse),
        (status = 400, description = "Not a lease request, or more than 256 ids", body = rl_wire::ErrorBody),
        (status = 401, description = "Missing or wrong decision secret (as on the decision endpoints)", body = rl_wire::ErrorBody),
        (status = 503, description = "The counter store failed; the leases expire on their own", body = rl_wire::ErrorBody),
    )
)]
pub async fn leases(State(state): State<AppState>, body: Bytes) -> Response {
    let request: LeasesRequest = match parse_object(&body, "lease request") {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    let ids = request.renew.len() + request.release.len();
    if ids > MAX_LEASES_PER_CALL {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("lease request: {ids} lease ids, at most {MAX_LEASES_PER_CALL}"),
        )
        .into_response();
    }
    match state.decider.leases(&request).await {
        Ok(answer) => Json(answer).into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "lease renewals and releases failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("lease request: {err}"),
            )
            .into_response()
        }
    }
}
