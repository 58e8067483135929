//! A small upstream API standing behind Envoy in the local stack, the tests and the load
//! benchmark. It answers fast (the load benchmark measures the limiter, not the upstream)
//! and offers one route per behaviour the stack demonstrates:
//!
//! - `/api/v1/request`: the rate-limited business endpoint (200);
//! - `/api/v1/health`: a cheap health endpoint with its own limit (200);
//! - `/api/v1/error`: always 500, to show the rate-limit headers on upstream errors;
//! - `/api/v1/own-limits`: an API that runs a rate limiter of its own and says so in its
//!   headers ([`OWN_LIMIT_HEADERS`]); `?status=NNN` (200–599) picks the status, default 200.
//!   Shows which of them reach clients through the filter;
//! - `/api/v1/slow`: answers 200 after `?ms=N` milliseconds (0–30000, default 1000), to hold
//!   requests in flight (concurrency limits);
//! - `/api/v1/charged`: an API billed by usage: 200 with the units the response used in
//!   `x-ratelimit-charge` ([`CHARGE_HEADER`]), `?units=N` (default 1), after `?ms=N`
//!   milliseconds as `/api/v1/slow` (default 0);
//! - `/api/v1/login`: 200 when `x-password` is [`DEMO_PASSWORD`], else 401 (a failed login),
//!   after `?ms=N` milliseconds as `/api/v1/slow` (default 0);
//! - anything else: 200 echoing the method and path.

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::any;
use tokio::net::TcpListener;

pub fn router() -> Router {
    Router::new()
        .route("/api/v1/request", any(request))
        .route("/api/v1/health", any(health))
        .route("/api/v1/error", any(error))
        .route("/api/v1/own-limits", any(own_limits))
        .route("/api/v1/slow", any(slow))
        .route("/api/v1/charged", any(charged))
        .route("/api/v1/login", any(login))
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

/// What `/api/v1/own-limits` sends besides `content-type`, in order; a name listed twice is
/// sent as two field lines (`RateLimit-Policy` is a List: two lines are two items).
pub const OWN_LIMIT_HEADERS: [(&str, &str); 9] = [
    ("x-ratelimit-limit", "5000"),
    ("x-ratelimit-remaining", "4321"),
    ("x-ratelimit-reset", "1700000000"),
    ("x-ratelimit-tier", "upstream-gold"),
    ("x-ratelimit-used", "679"),
    ("ratelimit", "\"upstream\";r=4321;t=60"),
    ("ratelimit-policy", "\"upstream\";q=5000;w=3600"),
    ("ratelimit-policy", "\"burst\";q=100;w=1"),
    ("retry-after", "30"),
];

async fn own_limits(uri: Uri) -> impl IntoResponse {
    let status = status_asked(uri.query());
    (
        own_limit_headers(),
        json(
            status,
            r#"{"status":"limited by the upstream too"}"#.to_string(),
        ),
    )
}

/// Longest wait `/api/v1/slow` accepts, in ms.
pub const MAX_SLOW_MS: u64 = 30_000;

async fn slow(uri: Uri) -> impl IntoResponse {
    let ms = slow_ms(uri.query());
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    json(
        StatusCode::OK,
        format!(r#"{{"status":"ok","waited_ms":{ms}}}"#),
    )
}

/// `ms=N` in a query (at most [`MAX_SLOW_MS`]), else 1000.
fn slow_ms(query: Option<&str>) -> u64 {
    query_number(query, "ms").map_or(1000, |ms| ms.min(MAX_SLOW_MS))
}

/// The number `name=N` in a query, if any.
fn query_number(query: Option<&str>, name: &str) -> Option<u64> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .and_then(|n| n.parse::<u64>().ok())
}

/// The header in which `/api/v1/charged` reports the units a response used (the filter's
/// default `charge_header`).
pub const CHARGE_HEADER: &str = "x-ratelimit-charge";

async fn charged(uri: Uri) -> impl IntoResponse {
    let units = query_number(uri.query(), "units").unwrap_or(1);
    let ms = query_number(uri.query(), "ms").map_or(0, |ms| ms.min(MAX_SLOW_MS));
    if ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&units.to_string()) {
        headers.insert(HeaderName::from_static(CHARGE_HEADER), value);
    }
    (
        headers,
        json(
            StatusCode::OK,
            format!(r#"{{"status":"ok","units":{units}}}"#),
        ),
    )
}

/// The password `/api/v1/login` accepts (a demo: there is no account behind it).
pub const DEMO_PASSWORD: &str = "demo-password";

async fn login(uri: Uri, headers: HeaderMap) -> impl IntoResponse {
    let ms = query_number(uri.query(), "ms").map_or(0, |ms| ms.min(MAX_SLOW_MS));
    if ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let right = headers
        .get("x-password")
        .is_some_and(|p| p.as_bytes() == DEMO_PASSWORD.as_bytes());
    if right {
        json(StatusCode::OK, r#"{"status":"logged in"}"#.to_string())
    } else {
        json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"wrong password"}"#.to_string(),
        )
    }
}

/// `status=NNN` in a query (200–599), else 200.
fn status_asked(query: Option<&str>) -> StatusCode {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("status="))
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (200..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK)
}

fn own_limit_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in OWN_LIMIT_HEADERS {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
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
