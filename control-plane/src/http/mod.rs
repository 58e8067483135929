//! HTTP surface of the control plane.

mod decision;
mod errors;
mod health;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::decision::Decider;

pub use errors::ApiError;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub decider: Arc<Decider>,
    /// Shared secret the filter must send on decision calls, when configured.
    pub decision_secret: Option<Arc<str>>,
}

pub fn router(state: AppState) -> Router {
    let decision = Router::new()
        .route(rl_wire::DECISION_PATH, post(decision::decide))
        .layer(DefaultBodyLimit::max(rl_wire::MAX_DECISION_REQUEST_BYTES));
    Router::new()
        .merge(decision)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(errors::not_found)
        .with_state(state)
}
