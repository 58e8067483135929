//! Admin API: configuration GET/PUT and per-identifier status (behind [`super::auth`]).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::config::{self, RateLimitConfig};
use crate::config_sync::{ConfigMeta, ConfigSource, UpdateError};
use crate::decision::{StatusError, StatusReport};

/// The running configuration (secrets redacted) and its version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfigDocument {
    #[serde(flatten)]
    pub meta: ConfigMeta,
    #[schema(value_type = Object)]
    pub config: RateLimitConfig,
}

fn document(state: &AppState) -> ConfigDocument {
    ConfigDocument {
        meta: state.config.meta(),
        config: config::redacted(state.config.current().source()),
    }
}

/// The running configuration; API keys given in clear and the HS256 secret are redacted.
#[utoipa::path(
    get,
    path = "/api/v1/rate-limit/config",
    tag = "admin",
    security(("admin_key" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "Running configuration", body = ConfigDocument),
        (status = 401, description = "Missing or wrong admin key", body = rl_wire::ErrorBody),
        (status = 503, description = "Admin API disabled (no RATE_LIMIT_ADMIN_API_KEY)", body = rl_wire::ErrorBody),
    )
)]
pub async fn get_config(State(state): State<AppState>) -> Json<ConfigDocument> {
    Json(document(&state))
}

/// Replaces the whole configuration. The document is validated first; on any error the
/// running configuration is untouched. Redacted placeholders keep the stored secrets.
#[utoipa::path(
    put,
    path = "/api/v1/rate-limit/config",
    tag = "admin",
    security(("admin_key" = []), ("admin_bearer" = [])),
    request_body(content = Object, description = "The whole configuration document (JSON, or YAML with a YAML content type)"),
    responses(
        (status = 200, description = "Applied; the new version", body = ConfigDocument),
        (status = 400, description = "Invalid document; `field` names the offending field", body = rl_wire::ErrorBody),
        (status = 401, description = "Missing or wrong admin key", body = rl_wire::ErrorBody),
        (status = 413, description = "Body over 1 MiB"),
        (status = 503, description = "Admin API disabled, or the configuration store (Redis) unavailable", body = rl_wire::ErrorBody),
    )
)]
pub async fn put_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_yaml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("yaml"));
    let parsed = if is_yaml {
        config::parse_yaml_bytes(&body)
    } else {
        config::parse_json(&body)
    };
    let invalid = |err: config::ConfigError| {
        let field = err.path().to_string();
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_config", err.to_string())
            .with_field(field)
            .into_response()
    };
    let mut incoming = match parsed {
        Ok(cfg) => cfg,
        Err(err) => return invalid(err),
    };
    let current = state.config.current();
    if let Err(err) = config::restore_secrets(&mut incoming, current.source()) {
        return invalid(err);
    }
    match state.config.update(incoming, ConfigSource::Api, None).await {
        Ok(_) => Json(document(&state)).into_response(),
        Err(UpdateError::Invalid(err)) => invalid(err),
        Err(UpdateError::Store(err)) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "config_store_unavailable",
            format!("configuration not changed: {err}"),
        )
        .into_response(),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StatusQuery {
    /// Judge against this tier instead of the identifier's own (the tier of a JWT user is
    /// only known from its token; by default users and IPs are shown under the default tier).
    pub tier: Option<String>,
}

/// Counters of one identifier (nothing is recorded by looking).
#[utoipa::path(
    get,
    path = "/api/v1/rate-limit/status/{identifier}",
    tag = "admin",
    security(("admin_key" = []), ("admin_bearer" = [])),
    params(("identifier" = String, Path, description = "`ip:<address>`, `ip:<network>/<len>` (an IPv6 client group; an IPv6 address names its group), `key:<id>` or `user:<sub>`"), StatusQuery),
    responses(
        (status = 200, description = "Counters, tier and whitelist state", body = StatusReport),
        (status = 400, description = "Not an identifier form, or a network that is not how IPv6 clients are grouped", body = rl_wire::ErrorBody),
        (status = 401, description = "Missing or wrong admin key", body = rl_wire::ErrorBody),
        (status = 404, description = "Nothing is known about this identifier", body = rl_wire::ErrorBody),
        (status = 503, description = "Counter store unavailable, or admin API disabled", body = rl_wire::ErrorBody),
    )
)]
pub async fn status(
    State(state): State<AppState>,
    Path(identifier): Path<String>,
    Query(query): Query<StatusQuery>,
) -> Response {
    match state
        .decider
        .status(&identifier, query.tier.as_deref())
        .await
    {
        Ok(report) => Json(report).into_response(),
        Err(err) => {
            let (status, code) = match &err {
                StatusError::InvalidIdentifier | StatusError::NotAGroup(_) => {
                    (StatusCode::BAD_REQUEST, "invalid_identifier")
                }
                StatusError::UnknownTier => (StatusCode::BAD_REQUEST, "unknown_tier"),
                StatusError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
                StatusError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            };
            ApiError::new(status, code, err.to_string()).into_response()
        }
    }
}
