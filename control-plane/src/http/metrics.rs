//! `GET /api/v1/rate-limit/metrics` (JSON) and `GET /metrics` (Prometheus).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use crate::metrics::MetricsSnapshot;

/// This replica's decision metrics since it started.
#[utoipa::path(
    get,
    path = "/api/v1/rate-limit/metrics",
    tag = "metrics",
    responses((status = 200, description = "Decision metrics of this replica", body = MetricsSnapshot))
)]
pub async fn json(State(state): State<AppState>) -> Json<MetricsSnapshot> {
    let cfg = state.config.current();
    let tiers = cfg.tiers().iter().map(|t| t.name.as_str());
    let rules = cfg.tiers().iter().flat_map(|t| t.rules.patterns());
    let policies = cfg.tiers().iter().flat_map(|t| {
        let rule_windows = t.rules.entries().flat_map(|(_, windows)| windows);
        t.windows
            .iter()
            .chain(rule_windows)
            .map(|w| w.policy.as_str())
    });
    Json(state.metrics.snapshot(tiers, rules, policies))
}

/// Prometheus exposition (OpenMetrics text).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    responses((status = 200, description = "Prometheus metrics", content_type = "application/openmetrics-text", body = String))
)]
pub async fn prometheus(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode_prometheus(),
    )
}
