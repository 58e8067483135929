use super::*;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
const RSA_PRIVATE: &str = include_str!("../../../tests/fixtures/jwt-test-rs256-private.pem");
const RSA_PUBLIC: &str = include_str!("../../../tests/fixtures/jwt-test-rs256-public.pem");

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
