//! The OpenAPI 3 document of the whole API, generated from the handlers and types
//! (`GET /api/v1/openapi.json`).
//!
//! It also describes what clients of the protected API see through Envoy — the
//! `X-RateLimit-*` headers, the `RateLimit` / `RateLimit-Policy` fields and the 429/503
//! bodies the filter produces — as the path `/{proxied_path}` (tag `proxied`), so client
//! authors find the contract in one place.

use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{admin, decision, health, leases, metrics, usage};

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
///
/// Every window that applies to a request (each window of its tier, then each of the
/// endpoint rule it matches) is a policy named `<tier>-<W>s` or `<tier>-<rule>-<W>s`
/// (`free-60s`, `free-/api/v1/search-1s`). The headers describe the binding window: the one
/// with the least remaining, ties to the lower limit, then to the longer wait. The plugin
/// configuration's `headers` chooses the sets sent (`x-ratelimit`, `ietf`; both by default).
#[utoipa::path(
    get,
    path = "/{proxied_path}",
    tag = "proxied",
    params(("proxied_path" = String, Path, description = "Any path of the API behind Envoy")),
    responses(
        (status = 200, description = "The upstream's answer (any status), with the rate-limit headers of the binding window. \
            The upstream's own X-RateLimit-* headers never pass (ours replace them; whitelisted, disabled and failed-open \
            responses carry none, an unlimited tier only X-RateLimit-Tier); its RateLimit, RateLimit-Policy and Retry-After pass, \
            and our items are appended to its RateLimit and RateLimit-Policy lists. A request a shadowed window \
            (`shadow: true`) would have refused passes with the headers an enforced limit would send, without Retry-After",
            headers(
                ("X-RateLimit-Limit" = u64, description = "Limit of the binding window"),
                ("X-RateLimit-Remaining" = u64, description = "Requests left in the binding window, this one counted"),
                ("X-RateLimit-Reset" = u64, description = "Unix time (s) when the binding window's oldest counted request leaves it"),
                ("X-RateLimit-Tier" = String, description = "Tier the request was judged under"),
                ("RateLimit-Policy" = String, description = "Structured-field List (RFC 9651), one Item per window that applied: the policy name as an sf-string, `q` the limit, `w` the window in seconds, e.g. `\"free-1s\";q=10;w=1, \"free-60s\";q=100;w=60`"),
                ("RateLimit" = String, description = "Structured-field List (RFC 9651) with the binding window: its policy name, `r` the remaining quota, `t` the seconds until its oldest counted request leaves it, e.g. `\"free-60s\";r=49;t=37`"),
            )),
        (status = 429, description = "Over a limit: the headers and the body describe the binding window (among the full ones). \
            Over a tier's `max_concurrent` (requests in flight): `Retry-After: 1`, X-RateLimit-Limit the most requests in flight, \
            `details.window_size` 0, no RateLimit / RateLimit-Policy fields", body = RateLimitExceeded,
            headers(
                ("Retry-After" = u64, description = "Seconds until every full window has room again (≥ 1)"),
                ("X-RateLimit-Limit" = u64),
                ("X-RateLimit-Remaining" = u64, description = "0"),
                ("X-RateLimit-Reset" = u64, description = "Unix time (s) when every full window has room again"),
                ("X-RateLimit-Tier" = String),
                ("RateLimit-Policy" = String, description = "As on a 200"),
                ("RateLimit" = String, description = "The binding window with `r=0` and `t` equal to Retry-After"),
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
        leases::leases,
        usage::usage,
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
        rl_wire::LocalDenials,
        rl_wire::BatchDecisionResponse,
        rl_wire::Lease,
        rl_wire::LeasesRequest,
        rl_wire::LeasesResponse,
        rl_wire::Usage,
        rl_wire::UsageRequest,
        rl_wire::UsageItem,
        rl_wire::UsageResponse,
        rl_wire::CounterReport,
        rl_wire::PolicyReport,
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

#[cfg(test)]
mod tests;
