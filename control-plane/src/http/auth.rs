//! Route layers that authenticate callers: every admin endpoint passes through
//! [`require_admin`], every decision endpoint through [`require_decision_secret`].

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rl_wire::DECISION_SECRET_HEADER;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// Checks `X-API-Key` or `Authorization: Bearer` against the admin key. The comparison is
/// between SHA-256 digests in constant time, so neither the key's content nor its length
/// leaks through timing. A key in the query string is never looked at.
pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.admin_key else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "admin_disabled",
            "the admin API is disabled: set RATE_LIMIT_ADMIN_API_KEY",
        )
        .into_response();
    };
    let presented = presented_key(request.headers());
    let ok = presented.is_some_and(|key| {
        let digest: [u8; 32] = Sha256::digest(key).into();
        bool::from(digest.ct_eq(&expected))
    });
    if !ok {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong admin key (X-API-Key or Authorization: Bearer)",
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    next.run(request).await
}

/// When a decision secret is configured, a decision call must carry it in
/// [`DECISION_SECRET_HEADER`]; compared in constant time.
pub async fn require_decision_secret(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(secret) = &state.decision_secret {
        let presented = request
            .headers()
            .get(DECISION_SECRET_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !bool::from(presented.ct_eq(secret.as_bytes())) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong decision secret",
            )
            .into_response();
        }
    }
    next.run(request).await
}

fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(key) = headers.get("x-api-key") {
        return Some(key.as_bytes());
    }
    let auth = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = auth.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}
