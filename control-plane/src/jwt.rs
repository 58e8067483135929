//! Verified JWT identity (`Authorization: Bearer`).
//!
//! Only a token whose signature verifies with a key from the configuration, within its
//! `exp`/`nbf`, and (when configured) from the right issuer for the right audience, names a
//! user. Everything else — no token, a malformed one, `alg: none`, a token signed with the
//! wrong key or algorithm — proves nothing, and the request is counted by client IP.
//!
//! Algorithm confusion is impossible by construction: each algorithm is verified only with
//! the key configured for it (HS256 with `hs256_secret`, RS256 with the public key), never
//! with a key chosen from the token's header.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::{Map, Value};

use crate::config::JwtConfig;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;
/// Longer tokens are not verified (the filter already drops headers over 8 KiB).
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest accepted user id; identifiers are bounded.
pub const MAX_USER_ID_LEN: usize = 256;

pub struct JwtVerifier {
    hs256: Option<(DecodingKey, Validation)>,
    rs256: Option<(DecodingKey, Validation)>,
    user_claim: String,
    tier_claim: Option<String>,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub user: String,
    /// The tier claim's value, if any (the caller checks that the tier exists).
    pub tier: Option<String>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("hs256", &self.hs256.is_some())
            .field("rs256", &self.rs256.is_some())
            .field("user_claim", &self.user_claim)
            .field("tier_claim", &self.tier_claim)
            .finish()
    }
}

fn validation(alg: Algorithm, cfg: &JwtConfig) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECS;
    v.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(issuer) = &cfg.issuer {
        v.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &cfg.audience {
        Some(audience) => {
            v.set_audience(&[audience]);
            required.push("aud");
        }
        // Without a configured audience the token's `aud` is not ours to judge.
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

impl JwtVerifier {
    /// Builds the keys; `Err` names the field whose key does not parse.
    pub fn new(cfg: &JwtConfig) -> Result<Self, (&'static str, String)> {
        let hs256 = match &cfg.hs256_secret {
            Some(secret) => Some((
                DecodingKey::from_secret(secret.as_bytes())
                    .map_err(|e| ("jwt.hs256_secret", e.to_string()))?,
                validation(Algorithm::HS256, cfg),
            )),
            None => None,
        };
        let rs256 = match &cfg.rs256_public_key_pem {
            Some(pem) => Some((
                DecodingKey::from_rsa_pem(pem.trim().as_bytes()).map_err(|e| {
                    (
                        "jwt.rs256_public_key_pem",
                        format!("not a usable RSA public key: {e}"),
                    )
                })?,
                validation(Algorithm::RS256, cfg),
            )),
            None => None,
        };
        Ok(Self {
            hs256,
            rs256,
            user_claim: cfg.user_claim.clone(),
            tier_claim: cfg.tier_claim.clone(),
        })
    }

    /// Verifies the token of an `Authorization` header value; `None` unless it proves a user.
    pub fn verify(&self, authorization: &str) -> Option<VerifiedToken> {
        let token = bearer_token(authorization)?;
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let header = decode_header(token).ok()?;
        let (key, validation) = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref()?,
            Algorithm::RS256 => self.rs256.as_ref()?,
            _ => return None,
        };
        let claims = decode::<Map<String, Value>>(token, key, validation)
            .ok()?
            .claims;
        let user = match claims.get(&self.user_claim)? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        if user.is_empty() || user.len() > MAX_USER_ID_LEN {
            return None;
        }
        let tier = self
            .tier_claim
            .as_ref()
            .and_then(|claim| claims.get(claim))
            .and_then(Value::as_str)
            .map(str::to_string);
        Some(VerifiedToken { user, tier })
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 7235).
fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests;
