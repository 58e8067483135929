//! Secrets in configuration documents: hidden when shown, kept when a document sent back
//! still carries the placeholder.
//!
//! Secrets are API keys given in clear (`api_keys[].key`) and `jwt.hs256_secret`. Key
//! digests and public keys are not secrets.

use super::{ConfigError, RateLimitConfig};

/// What `GET /api/v1/rate-limit/config` shows instead of a secret.
pub const REDACTED: &str = "***REDACTED***";

/// A copy with every secret replaced by [`REDACTED`].
pub fn redacted(cfg: &RateLimitConfig) -> RateLimitConfig {
    let mut out = cfg.clone();
    for key in &mut out.api_keys {
        if key.key.is_some() {
            key.key = Some(REDACTED.to_string());
        }
    }
    if let Some(jwt) = &mut out.jwt
        && jwt.hs256_secret.is_some()
    {
        jwt.hs256_secret = Some(REDACTED.to_string());
    }
    out
}

/// Puts the secrets of `current` back where `incoming` carries the placeholder: an API key
/// is matched by its `id`. A placeholder with nothing to restore is an error at its path.
pub fn restore_secrets(
    incoming: &mut RateLimitConfig,
    current: &RateLimitConfig,
) -> Result<(), ConfigError> {
    for (i, key) in incoming.api_keys.iter_mut().enumerate() {
        if key.key.as_deref() != Some(REDACTED) {
            continue;
        }
        let stored = current
            .api_keys
            .iter()
            .find(|k| k.id == key.id)
            .and_then(|k| k.key.clone());
        match stored {
            Some(secret) => key.key = Some(secret),
            None => {
                return Err(ConfigError::invalid(
                    format!("api_keys[{i}].key"),
                    format!(
                        "is the redacted placeholder but no key with id {:?} is stored",
                        key.id
                    ),
                ));
            }
        }
    }
    if let Some(jwt) = &mut incoming.jwt
        && jwt.hs256_secret.as_deref() == Some(REDACTED)
    {
        match current.jwt.as_ref().and_then(|j| j.hs256_secret.clone()) {
            Some(secret) => jwt.hs256_secret = Some(secret),
            None => {
                return Err(ConfigError::invalid(
                    "jwt.hs256_secret",
                    "is the redacted placeholder but no secret is stored",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
