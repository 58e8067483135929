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
mod tests {
    use super::*;
    use crate::config::parse_yaml;

    const DOC: &str = r#"
default_tier: free
tiers:
  - name: free
    requests_per_window: 10
api_keys:
  - id: a
    tier: free
    key: "clear-secret-key-000001"
  - id: b
    tier: free
    key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
jwt:
  hs256_secret: "0123456789abcdef0123456789abcdef"
"#;

    #[test]
    fn redaction_hides_secrets_and_keeps_the_rest() {
        let cfg = parse_yaml(DOC).unwrap();
        let shown = redacted(&cfg);
        let text = serde_json::to_string(&shown).unwrap();
        assert!(!text.contains("clear-secret-key-000001"));
        assert!(!text.contains("0123456789abcdef0123456789abcdef"));
        assert!(text.contains("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"));
        assert_eq!(shown.api_keys[0].key.as_deref(), Some(REDACTED));
    }

    #[test]
    fn placeholders_sent_back_keep_the_stored_secrets() {
        let cfg = parse_yaml(DOC).unwrap();
        let mut incoming = redacted(&cfg);
        restore_secrets(&mut incoming, &cfg).unwrap();
        assert_eq!(incoming, cfg);
    }

    #[test]
    fn a_placeholder_without_a_stored_secret_is_an_error() {
        let cfg = parse_yaml(DOC).unwrap();
        let mut incoming = redacted(&cfg);
        incoming.api_keys[0].id = "new".into();
        let err = restore_secrets(&mut incoming, &cfg).unwrap_err();
        assert_eq!(err.path(), "api_keys[0].key");
        let mut incoming = redacted(&cfg);
        let mut without_jwt = cfg.clone();
        without_jwt.jwt = None;
        let err = restore_secrets(&mut incoming, &without_jwt).unwrap_err();
        assert_eq!(err.path(), "jwt.hs256_secret");
    }
}
