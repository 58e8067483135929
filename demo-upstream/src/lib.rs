//! A small upstream API standing behind Envoy in the local stack, the tests and the load
//! benchmark. It answers fast (the load benchmark measures the limiter, not the upstream)
//! and offers one route per behaviour the stack demonstrates:
//!
//! - `/api/v1/request`: the rate-limited business endpoint (200);
//! - `/api/v1/health`: a cheap health endpoint with its own limit (200);
//! - `/api/v1/error`: always 500, to show the rate-limit headers on upstream errors;
//! - anything else: 200 echoing the method and path.

use axum::Router;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::any;
use tokio::net::TcpListener;

pub fn router() -> Router {
    Router::new()
        .route("/api/v1/request", any(request))
        .route("/api/v1/health", any(health))
        .route("/api/v1/error", any(error))
        .fallback(echo)
}

async fn request() -> impl IntoResponse {
    json(
        StatusCode::OK,
        r#"{"status":"ok","endpoint":"/api/v1/request"}"#.to_string(),
    )
}

async fn health() -> impl IntoResponse {
    json(StatusCode::OK, r#"{"status":"healthy"}"#.to_string())
}

async fn error() -> impl IntoResponse {
    json(
        StatusCode::INTERNAL_SERVER_ERROR,
        r#"{"error":"the demo upstream fails on purpose"}"#.to_string(),
    )
}

async fn echo(method: Method, uri: Uri) -> impl IntoResponse {
    let body = serde_json_escape(&format!("{method} {}", uri.path()));
    json(StatusCode::OK, format!(r#"{{"echo":"{body}"}}"#))
}

fn json(status: StatusCode, body: String) -> impl IntoResponse {
    (status, [("content-type", "application/json")], body)
}

/// Minimal JSON string escaping (keeps the crate free of serde for a one-field body).
fn serde_json_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Serves until the future resolves.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests;
