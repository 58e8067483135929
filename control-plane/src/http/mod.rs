//! HTTP surface of the control plane.

mod admin;
mod auth;
pub(crate) mod decision;
mod errors;
mod etag;
mod health;
mod leases;
pub mod local_denials;
mod metrics;
pub mod openapi;
mod usage;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};

use crate::config_sync::ConfigManager;
use crate::decision::Decider;
use crate::metrics::Metrics;

pub use auth::{DecisionSecrets, PreviousWithoutCurrent, SecretMatch};
pub use errors::ApiError;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub decider: Arc<Decider>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<ConfigManager>,
    /// SHA-256 of the admin API key; `None` disables the admin endpoints.
    pub admin_key: Option<[u8; 32]>,
    /// Secrets the filter must send on decision calls, when configured.
    pub decision_secrets: Option<DecisionSecrets>,
}

pub fn router(state: AppState) -> Router {
    let decision = Router::new()
        .route(rl_wire::DECISION_PATH, post(decision::decide))
        .layer(DefaultBodyLimit::max(rl_wire::MAX_DECISION_REQUEST_BYTES));
    let batch = Router::new()
        .route(rl_wire::BATCH_DECISION_PATH, post(decision::decide_batch))
        .layer(DefaultBodyLimit::max(rl_wire::MAX_BATCH_REQUEST_BYTES));
    let lease_calls = Router::new()
        .route(rl_wire::LEASES_PATH, post(leases::leases))
        .layer(DefaultBodyLimit::max(rl_wire::MAX_LEASES_REQUEST_BYTES));
    let usage_calls = Router::new()
        .route(rl_wire::USAGE_PATH, post(usage::usage))
        .layer(DefaultBodyLimit::max(rl_wire::MAX_USAGE_REQUEST_BYTES));
    let decisions = Router::new()
        .merge(decision)
        .merge(batch)
        .merge(lease_calls)
        .merge(usage_calls)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_decision_secret,
        ));
    let admin = Router::new()
        .route(
            "/api/v1/rate-limit/config",
            get(admin::get_config).put(admin::put_config),
        )
        // A wildcard: `ip:2001:db8::/64` may be written with its slash as it is.
        .route(
            "/api/v1/rate-limit/status/{*identifier}",
            get(admin::status),
        )
        .layer(DefaultBodyLimit::max(crate::config::MAX_CONFIG_BYTES))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    Router::new()
        .merge(decisions)
        .merge(admin)
        .route("/api/v1/rate-limit/metrics", get(metrics::json))
        .route("/metrics", get(metrics::prometheus))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(errors::not_found)
        .with_state(state)
}
