//! The OpenAPI 3 document of the whole API, generated from the handlers and types
//! (`GET /api/v1/openapi.json`).
//!
//! It also describes what clients of the protected API see through Envoy — the
//! `X-RateLimit-*` headers and the 429/503 bodies the filter produces — as the path
//! `/{proxied_path}` (tag `proxied`), so client authors find the contract in one place.

use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{admin, decision, health, metrics};

/// Body of a 429 answered by the filter.
#[derive(Serialize, ToSchema)]
pub struct RateLimitExceeded {
    pub error: RateLimitExceededError,
}

#[derive(Serialize, ToSchema)]
pub struct RateLimitExceededError {
    /// Always `rate_limit_exceeded`.
    pub code: String,
    pub message: String,
    pub details: rl_wire::DenyDetails,
}

/// Body of a 503 answered by the filter when no decision could be made and the failure
/// policy is fail-closed.
#[derive(Serialize, ToSchema)]
pub struct RateLimitUnavailable {
    pub error: UnavailableError,
}

#[derive(Serialize, ToSchema)]
pub struct UnavailableError {
    /// Always `rate_limit_unavailable`.
    pub code: String,
    pub message: String,
}

/// Any request to the protected API, through Envoy (not served by the control plane).
#[utoipa::path(
    get,
    path = "/{proxied_path}",
    tag = "proxied",
    params(("proxied_path" = String, Path, description = "Any path of the API behind Envoy")),
    responses(
        (status = 200, description = "The upstream's answer (any status), with the rate-limit headers of the binding counter. \
            The upstream's own X-RateLimit-* headers never pass (ours replace them; whitelisted, disabled and failed-open \
            responses carry none, an unlimited tier only X-RateLimit-Tier); its RateLimit, RateLimit-Policy and Retry-After pass untouched",
            headers(
                ("X-RateLimit-Limit" = u64, description = "Limit of the counter with the least remaining"),
                ("X-RateLimit-Remaining" = u64, description = "Requests left in the window, this one counted"),
                ("X-RateLimit-Reset" = u64, description = "Unix time (s) when the oldest counted request leaves the window"),
                ("X-RateLimit-Tier" = String, description = "Tier the request was judged under"),
            )),
        (status = 429, description = "Over a limit", body = RateLimitExceeded,
            headers(
                ("Retry-After" = u64, description = "Seconds until the request could pass (≥ 1)"),
                ("X-RateLimit-Limit" = u64),
                ("X-RateLimit-Remaining" = u64, description = "0"),
                ("X-RateLimit-Reset" = u64),
                ("X-RateLimit-Tier" = String),
            )),
        (status = 503, description = "No decision possible and fail-closed (not the client's fault)", body = RateLimitUnavailable,
            headers(("Retry-After" = u64, description = "1"))),
    )
)]
#[allow(dead_code)] // documentation only: Envoy serves this path
fn proxied() {}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "admin_bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Envoy rate limiter control plane",
        description = "Decision endpoint for the Envoy filter, admin API, metrics and health. \
            Admin endpoints need RATE_LIMIT_ADMIN_API_KEY (X-API-Key or Authorization: Bearer)."
    ),
    paths(
        decision::decide,
        decision::decide_batch,
        admin::get_config,
        admin::put_config,
        admin::status,
        metrics::json,
        metrics::prometheus,
        health::healthz,
        health::readyz,
        document,
        proxied,
    ),
    components(schemas(
        rl_wire::DecisionRequest,
        rl_wire::DecisionResponse,
        rl_wire::BatchDecisionRequest,
        rl_wire::BatchDecisionResponse,
        rl_wire::CounterReport,
        rl_wire::Verdict,
        rl_wire::ErrorBody,
        rl_wire::ErrorObject,
        rl_wire::DenyDetails,
        RateLimitExceeded,
        RateLimitExceededError,
        RateLimitUnavailable,
        UnavailableError,
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "admin", description = "Configuration and status (admin key)"),
        (name = "metrics", description = "JSON and Prometheus metrics"),
        (name = "health", description = "Liveness and readiness"),
        (name = "internal", description = "Called by the Envoy filter"),
        (name = "proxied", description = "What clients see through Envoy"),
    )
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "health",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json"))
)]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
