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
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
    const RSA_PRIVATE: &str = include_str!("../../tests/fixtures/jwt-test-rs256-private.pem");
    const RSA_PUBLIC: &str = include_str!("../../tests/fixtures/jwt-test-rs256-public.pem");

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn config() -> JwtConfig {
        JwtConfig {
            hs256_secret: Some(SECRET.into()),
            rs256_public_key_pem: Some(RSA_PUBLIC.into()),
            user_claim: "sub".into(),
            tier_claim: Some("tier".into()),
            issuer: None,
            audience: None,
        }
    }

    fn hs(claims: Value, secret: &str) -> String {
        let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
        encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    fn rs(claims: Value) -> String {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    /// Unpadded base64url, to hand-craft tokens the library would refuse to produce.
    fn b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn valid_tokens_name_the_user_and_tier() {
        let v = JwtVerifier::new(&config()).unwrap();
        let claims = json!({"sub": "alice", "tier": "premium", "exp": now() + 600});
        let want = Some(VerifiedToken {
            user: "alice".into(),
            tier: Some("premium".into()),
        });
        assert_eq!(v.verify(&bearer(&hs(claims.clone(), SECRET))), want);
        assert_eq!(v.verify(&bearer(&rs(claims))), want);
        let numeric = json!({"sub": 42, "exp": now() + 600});
        assert_eq!(
            v.verify(&format!("bearer  {} ", hs(numeric, SECRET)))
                .unwrap()
                .user,
            "42"
        );
    }

    #[test]
    fn forged_expired_and_malformed_tokens_prove_nothing() {
        let v = JwtVerifier::new(&config()).unwrap();
        let good = json!({"sub": "alice", "exp": now() + 600});
        // Wrong key.
        assert!(
            v.verify(&bearer(&hs(
                good.clone(),
                "another-secret-another-secret-xx"
            )))
            .is_none()
        );
        // Expired, beyond the leeway; not yet valid.
        let expired = json!({"sub": "alice", "exp": now() - 3600});
        assert!(v.verify(&bearer(&hs(expired, SECRET))).is_none());
        let early = json!({"sub": "alice", "exp": now() + 7200, "nbf": now() + 3600});
        assert!(v.verify(&bearer(&hs(early, SECRET))).is_none());
        // No exp at all.
        assert!(
            v.verify(&bearer(&hs(json!({"sub": "alice"}), SECRET)))
                .is_none()
        );
        // alg: none, with and without a trailing signature.
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = b64(format!(r#"{{"sub":"alice","exp":{}}}"#, now() + 600).as_bytes());
        assert!(v.verify(&bearer(&format!("{header}.{payload}."))).is_none());
        assert!(
            v.verify(&bearer(&format!("{header}.{payload}.xyz")))
                .is_none()
        );
        // HS/RS confusion: an HS256 token whose "secret" is the RSA public key.
        let confused = hs(good.clone(), RSA_PUBLIC);
        assert!(v.verify(&bearer(&confused)).is_none());
        // Edited claims keep the old signature.
        let token = hs(
            json!({"sub": "alice", "tier": "free", "exp": now() + 600}),
            SECRET,
        );
        let parts: Vec<&str> = token.split('.').collect();
        let edited = b64(format!(
            r#"{{"sub":"alice","tier":"enterprise","exp":{}}}"#,
            now() + 600
        )
        .as_bytes());
        assert!(
            v.verify(&bearer(&format!("{}.{edited}.{}", parts[0], parts[2])))
                .is_none()
        );
        // Not a bearer token, garbage, empty.
        for raw in [
            "Basic YWxpY2U6cHc=",
            "Bearer",
            "Bearer    ",
            "Bearer a.b",
            "Bearer ...",
            "",
            "🦀",
        ] {
            assert!(v.verify(raw).is_none(), "{raw}");
        }
        // Missing user claim, oversized user id.
        assert!(
            v.verify(&bearer(&hs(json!({"exp": now() + 600}), SECRET)))
                .is_none()
        );
        let long = json!({"sub": "a".repeat(300), "exp": now() + 600});
        assert!(v.verify(&bearer(&hs(long, SECRET))).is_none());
    }

    #[test]
    fn an_algorithm_without_a_configured_key_is_refused() {
        let only_rs = JwtConfig {
            hs256_secret: None,
            ..config()
        };
        let v = JwtVerifier::new(&only_rs).unwrap();
        let claims = json!({"sub": "alice", "exp": now() + 600});
        assert!(v.verify(&bearer(&hs(claims.clone(), SECRET))).is_none());
        assert!(v.verify(&bearer(&rs(claims.clone()))).is_some());

        let only_hs = JwtConfig {
            rs256_public_key_pem: None,
            ..config()
        };
        let v = JwtVerifier::new(&only_hs).unwrap();
        assert!(v.verify(&bearer(&rs(claims.clone()))).is_none());
        assert!(v.verify(&bearer(&hs(claims, SECRET))).is_some());
    }

    #[test]
    fn issuer_and_audience_are_enforced_when_configured() {
        let cfg = JwtConfig {
            issuer: Some("https://auth.example".into()),
            audience: Some("api".into()),
            ..config()
        };
        let v = JwtVerifier::new(&cfg).unwrap();
        let exp = now() + 600;
        let ok = json!({"sub": "a", "exp": exp, "iss": "https://auth.example", "aud": "api"});
        assert!(v.verify(&bearer(&hs(ok, SECRET))).is_some());
        for bad in [
            json!({"sub": "a", "exp": exp, "iss": "https://evil.example", "aud": "api"}),
            json!({"sub": "a", "exp": exp, "iss": "https://auth.example", "aud": "other"}),
            json!({"sub": "a", "exp": exp, "aud": "api"}),
            json!({"sub": "a", "exp": exp, "iss": "https://auth.example"}),
        ] {
            assert!(
                v.verify(&bearer(&hs(bad.clone(), SECRET))).is_none(),
                "{bad}"
            );
        }
        // Without a configured audience, a token's own `aud` does not matter.
        let v = JwtVerifier::new(&config()).unwrap();
        let with_aud = json!({"sub": "a", "exp": exp, "aud": "whatever"});
        assert!(v.verify(&bearer(&hs(with_aud, SECRET))).is_some());
    }

    #[test]
    fn unusual_tokens_and_claims_are_refused() {
        let v = JwtVerifier::new(&config()).unwrap();
        let exp = now() + 600;
        // Another HMAC algorithm, even with the right secret: only HS256/RS256 are accepted.
        let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &json!({"sub": "a", "exp": exp}),
            &key,
        )
        .unwrap();
        assert!(v.verify(&bearer(&hs384)).is_none());
        // A user claim that is neither a string nor a number.
        for sub in [
            json!(true),
            json!({"id": 1}),
            json!(["a"]),
            json!(null),
            json!(""),
        ] {
            let token = hs(json!({"sub": sub, "exp": exp}), SECRET);
            assert!(v.verify(&bearer(&token)).is_none(), "{sub}");
        }
        // Longer than any header the filter forwards.
        let long = format!("{}.{}.{}", "a".repeat(5000), "b".repeat(5000), "c");
        assert!(v.verify(&bearer(&long)).is_none());
    }

    #[test]
    fn debug_output_names_no_secret() {
        let v = JwtVerifier::new(&config()).unwrap();
        let text = format!("{v:?}");
        assert!(
            text.contains("hs256: true") && text.contains("rs256: true"),
            "{text}"
        );
        assert!(!text.contains(SECRET));
    }

    #[test]
    fn an_unparseable_public_key_is_a_config_error() {
        let cfg = JwtConfig {
            rs256_public_key_pem: Some(
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----".into(),
            ),
            ..config()
        };
        let err = JwtVerifier::new(&cfg).unwrap_err();
        assert_eq!(err.0, "jwt.rs256_public_key_pem");

        // Config validation refuses an empty secret first; the verifier refuses it too.
        let cfg = JwtConfig {
            hs256_secret: Some(String::new()),
            ..config()
        };
        let err = JwtVerifier::new(&cfg).unwrap_err();
        assert_eq!(err.0, "jwt.hs256_secret");
    }
}
