//! Admin API: configuration GET/PUT and per-identifier status (behind [`super::auth`]).

use std::net::IpAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::config::{self, RateLimitConfig};
use crate::config_sync::{ConfigMeta, ConfigSource, UpdateError};
use crate::store::{CounterSpec, keys};

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
        (status = 401, description = "Missing or wrong admin key", body = super::errors::ErrorBody),
        (status = 503, description = "Admin API disabled (no RATE_LIMIT_ADMIN_API_KEY)", body = super::errors::ErrorBody),
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
        (status = 400, description = "Invalid document; `field` names the offending field", body = super::errors::ErrorBody),
        (status = 401, description = "Missing or wrong admin key", body = super::errors::ErrorBody),
        (status = 413, description = "Body over 1 MiB"),
        (status = 503, description = "Admin API disabled, or the configuration store (Redis) unavailable", body = super::errors::ErrorBody),
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

/// One counter of an identifier.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CounterStatus {
    /// `tier_budget`, or the endpoint rule (e.g. `/api/v1/admin/*`).
    pub counter: String,
    pub limit: u64,
    /// Requests counted in the current window.
    pub count: u64,
    pub remaining: u64,
    /// Unix time (s) when the oldest counted request leaves the window; absent when empty.
    pub reset: Option<u64>,
    pub window_seconds: u64,
}

/// What the control plane knows about an identifier.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusReport {
    pub identifier: String,
    pub tier: String,
    pub whitelisted: bool,
    pub counters: Vec<CounterStatus>,
}

/// Parses `ip:<addr>`, `key:<id>`, `user:<sub>`; IPs are made canonical.
fn parse_identifier(raw: &str) -> Option<(String, Option<IpAddr>)> {
    let (kind, rest) = raw.split_once(':')?;
    if rest.is_empty() || raw.len() > 300 {
        return None;
    }
    match kind {
        "ip" => {
            let ip = crate::identity::parse_client_ip(rest)?;
            Some((crate::identity::ip_identifier(Some(ip)), Some(ip)))
        }
        "key" | "user" => Some((raw.to_string(), None)),
        _ => None,
    }
}

/// Counters of one identifier (nothing is recorded by looking).
#[utoipa::path(
    get,
    path = "/api/v1/rate-limit/status/{identifier}",
    tag = "admin",
    security(("admin_key" = []), ("admin_bearer" = [])),
    params(("identifier" = String, Path, description = "`ip:<address>`, `key:<id>` or `user:<sub>`"), StatusQuery),
    responses(
        (status = 200, description = "Counters, tier and whitelist state", body = StatusReport),
        (status = 400, description = "Not an identifier form", body = super::errors::ErrorBody),
        (status = 401, description = "Missing or wrong admin key", body = super::errors::ErrorBody),
        (status = 404, description = "Nothing is known about this identifier", body = super::errors::ErrorBody),
        (status = 503, description = "Counter store unavailable, or admin API disabled", body = super::errors::ErrorBody),
    )
)]
pub async fn status(
    State(state): State<AppState>,
    Path(identifier): Path<String>,
    Query(query): Query<StatusQuery>,
) -> Response {
    let Some((identifier, ip)) = parse_identifier(&identifier) else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_identifier",
            "expected ip:<address>, key:<id> or user:<sub>",
        )
        .into_response();
    };
    let cfg = state.config.current();
    let registered = identifier
        .strip_prefix("key:")
        .and_then(|id| cfg.tier_of_key_id(id));
    let tier_id = match &query.tier {
        Some(name) => match cfg.tier_by_name(name) {
            Some(id) => id,
            None => {
                return ApiError::new(StatusCode::BAD_REQUEST, "unknown_tier", "no such tier")
                    .into_response();
            }
        },
        None => registered.unwrap_or_else(|| cfg.default_tier()),
    };
    let tier = cfg.tier(tier_id);
    let window_us = tier.window.as_micros() as u64;
    let mut names = Vec::new();
    let mut specs = Vec::new();
    if let Some(budget) = tier.budget {
        names.push("tier_budget".to_string());
        specs.push(CounterSpec {
            key: keys::budget_key(&identifier),
            limit: budget,
            window_us,
        });
    }
    for (pattern, limit) in tier.rules.entries() {
        names.push(pattern.to_string());
        specs.push(CounterSpec {
            key: keys::rule_key(&identifier, pattern),
            limit,
            window_us,
        });
    }
    let outcome = if specs.is_empty() {
        None
    } else {
        match state.decider.store().peek(&identifier, &specs).await {
            Ok(outcome) => Some(outcome),
            Err(err) => {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    err.to_string(),
                )
                .into_response();
            }
        }
    };
    let whitelisted = cfg.is_whitelisted(ip, &identifier);
    let counters: Vec<CounterStatus> = outcome
        .iter()
        .flat_map(|o| o.counters.iter())
        .zip(specs.iter().zip(names))
        .map(|(state, (spec, name))| CounterStatus {
            counter: name,
            limit: spec.limit,
            count: state.count,
            remaining: spec.limit.saturating_sub(state.count),
            reset: (state.count > 0).then(|| state.free_at_us.div_ceil(1_000_000)),
            window_seconds: tier.window.as_secs(),
        })
        .collect();
    let active = counters.iter().any(|c| c.count > 0);
    if !active && registered.is_none() && !whitelisted {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "nothing is known about this identifier",
        )
        .into_response();
    }
    Json(StatusReport {
        identifier,
        tier: tier.name.clone(),
        whitelisted,
        counters,
    })
    .into_response()
}
