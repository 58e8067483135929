//! Admin API: configuration GET/PUT and per-identifier status (behind [`super::auth`]).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::etag::{etag, if_match};
use super::{ApiError, AppState};
use crate::config::{self, RateLimitConfig};
use crate::config_sync::{ConfigMeta, ConfigSource, UpdateError};
use crate::decision::{StatusError, StatusReport};

/// The running configuration (secrets redacted) and its version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfigDocument {
    #[serde(flatten)]
    pub meta: ConfigMeta,
    pub config: RateLimitConfig,
}

/// The running configuration, redacted, with its version as the `ETag`.
fn document(state: &AppState) -> Response {
    // The version is read first: a change landing in between shows a newer document under
    // an older tag, which a PUT with that tag then refuses (412) rather than overwrite.
    let meta = state.config.meta();
    let doc = ConfigDocument {
        config: config::redacted(state.config.current().source()),
        meta,
    };
    ([(header::ETAG, etag(doc.meta.version))], Json(doc)).into_response()
}

/// The running configuration; API keys given in clear and the HS256 secret are redacted.
#[utoipa::path(
    get,
    path = "/api/v1/rate-limit/config",
    tag = "admin",
    security(("admin_key" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "Running configuration", body = ConfigDocument,
            headers(("ETag" = String, description = "The version, quoted (`\"7\"`): send it back in `If-Match`"))),
        (status = 401, description = "Missing or wrong admin key", body = rl_wire::ErrorBody),
        (status = 503, description = "Admin API disabled (no RATE_LIMIT_ADMIN_API_KEY)", body = rl_wire::ErrorBody),
    )
)]
pub async fn get_config(State(state): State<AppState>) -> Response {
    document(&state)
}

/// Replaces the whole configuration. The document is validated first; on any error the
/// running configuration is untouched. Redacted placeholders take the secrets of the newest
/// stored configuration. With `If-Match`, only if the newest version is the one named.
#[utoipa::path(
    put,
    path = "/api/v1/rate-limit/config",
    tag = "admin",
    security(("admin_key" = []), ("admin_bearer" = [])),
    params(("If-Match" = Option<String>, Header, description = "The `ETag` of the version the change was made from (`\"7\"`, a list, or `*`): the PUT is refused with 412 if the configuration has changed since. Without it the PUT is unconditional")),
    request_body(content = RateLimitConfig, description = "The whole configuration document (JSON, or YAML with a YAML content type)"),
    responses(
        (status = 200, description = "Applied and live on this replica; the new version", body = ConfigDocument,
            headers(("ETag" = String, description = "The new version, quoted"))),
        (status = 400, description = "Invalid document (`invalid_config`; `field` names the offending field), or a malformed If-Match (`invalid_if_match`)", body = rl_wire::ErrorBody),
        (status = 401, description = "Missing or wrong admin key", body = rl_wire::ErrorBody),
        (status = 409, description = "A redacted placeholder with no stored secret to stand for (`unresolved_placeholder`; `field` names it): send the secret itself", body = rl_wire::ErrorBody),
        (status = 412, description = "If-Match names another version than the newest (`version_conflict`): read the configuration again and redo the change", body = rl_wire::ErrorBody,
            headers(("ETag" = String, description = "The newest version, quoted"))),
        (status = 413, description = "Body over 1 MiB"),
        (status = 503, description = "Admin API disabled, or the configuration store (Redis) unavailable", body = rl_wire::ErrorBody),
    )
)]
pub async fn put_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let precondition = match if_match(&headers, state.config.meta().version) {
        Ok(precondition) => precondition,
        Err(err) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "invalid_if_match", err.to_string())
                .into_response();
        }
    };
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
    let store_unavailable = |err: &dyn std::fmt::Display| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "config_store_unavailable",
            format!("configuration not changed: {err}"),
        )
        .into_response()
    };
    // Placeholders stand for the secrets of the newest configuration, which a replica that
    // has not caught up yet does not run.
    let newest = match state.config.newest_document().await {
        Ok(newest) => newest,
        Err(err) => return store_unavailable(&err),
    };
    if let Err(err) = config::restore_secrets(&mut incoming, &newest) {
        let field = err.path().to_string();
        return ApiError::new(
            StatusCode::CONFLICT,
            "unresolved_placeholder",
            format!("{err}; send the secret itself"),
        )
        .with_field(field)
        .into_response();
    }
    match state
        .config
        .update(incoming, ConfigSource::Api, &precondition)
        .await
    {
        Ok(_) => document(&state),
        Err(UpdateError::Invalid(err)) => invalid(err),
        Err(UpdateError::Store(err)) => store_unavailable(&err),
        Err(err @ UpdateError::Conflict { current }) => {
            let mut response = ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "version_conflict",
                format!("configuration not changed: {err}; read it again and redo the change"),
            )
            .into_response();
            response.headers_mut().insert(header::ETAG, etag(current));
            response
        }
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
