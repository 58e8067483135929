//! Route layers that authenticate callers: every admin endpoint passes through
//! [`require_admin`], every decision endpoint through [`require_decision_secret`].
//!
//! Secrets are compared as SHA-256 digests in constant time: the digests have a fixed size,
//! so neither a secret's content nor its length leaks through timing.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rl_wire::DECISION_SECRET_HEADER;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

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

/// The secrets a decision call may carry: the current one and, while it is being rotated, the
/// previous one (filters whose configuration still sends it keep being answered).
#[derive(Clone)]
pub struct DecisionSecrets {
    current: [u8; 32],
    /// The current digest again when no previous secret is set, so that every check does
    /// the same work.
    previous: [u8; 32],
}

/// A previous secret without a current one: nothing would say which secret to move to.
#[derive(Debug, Error)]
#[error(
    "RATE_LIMIT_DECISION_SECRET_PREVIOUS is set without RATE_LIMIT_DECISION_SECRET: \
     set the new secret in RATE_LIMIT_DECISION_SECRET and keep the old one in \
     RATE_LIMIT_DECISION_SECRET_PREVIOUS while filters move to the new one"
)]
pub struct PreviousWithoutCurrent;

impl DecisionSecrets {
    /// `None` when no secret is required (no current secret). Empty values count as unset.
    pub fn new(
        current: Option<&str>,
        previous: Option<&str>,
    ) -> Result<Option<DecisionSecrets>, PreviousWithoutCurrent> {
        let digest = |s: &str| -> [u8; 32] { Sha256::digest(s.as_bytes()).into() };
        let previous = previous.filter(|s| !s.is_empty());
        match current.filter(|s| !s.is_empty()) {
            None if previous.is_some() => Err(PreviousWithoutCurrent),
            None => Ok(None),
            Some(current) => {
                let current = digest(current);
                Ok(Some(DecisionSecrets {
                    current,
                    previous: previous.map_or(current, digest),
                }))
            }
        }
    }

    /// Which secret `presented` is (both are compared, always).
    pub fn check(&self, presented: &[u8]) -> SecretMatch {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let current = bool::from(digest.ct_eq(&self.current));
        let previous = bool::from(digest.ct_eq(&self.previous));
        match (current, previous) {
            (true, _) => SecretMatch::Current,
            (false, true) => SecretMatch::Previous,
            (false, false) => SecretMatch::Neither,
        }
    }
}

/// What a presented decision secret is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretMatch {
    Current,
    /// `RATE_LIMIT_DECISION_SECRET_PREVIOUS`: accepted, and counted, so operators see when no
    /// filter sends it any more.
    Previous,
    Neither,
}

/// When a decision secret is configured, a decision call must carry it (or, while rotating,
/// the previous one) in [`DECISION_SECRET_HEADER`].
pub async fn require_decision_secret(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(secrets) = &state.decision_secrets {
        let presented = request
            .headers()
            .get(DECISION_SECRET_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        match secrets.check(presented) {
            SecretMatch::Current => {}
            SecretMatch::Previous => state.metrics.previous_secret_used(),
            SecretMatch::Neither => {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong decision secret",
                )
                .into_response();
            }
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

#[cfg(test)]
mod tests;
