//! Tiers, verified JWT identity, per-endpoint limits and the whitelist through a real Envoy
//! (US2, US3, FR-015 in docs/PRODUCT.md).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rl_tests::fixtures::tiered::{
    FREE_KEY, HS256_SECRET as SECRET, PREMIUM_KEY, RSA_PRIVATE_PEM as RSA_PRIVATE,
    RSA_PUBLIC_PEM as RSA_PUBLIC, UNLIMITED_KEY,
};
use rl_tests::fixtures::{Config, Tier, tiers_with_keys};
use rl_tests::{StackBuilder, client_from, control_plane_bin, get};
use serde_json::{Value, json};

/// `free` 100, `premium` 1000 (with endpoint rules) and `unlimited`, a key on each, HS256 and
/// RS256 tokens whose `tier` claim picks the tier (`rl_tests::fixtures::tiers_with_keys`).
fn config() -> String {
    tiers_with_keys().yaml()
}

fn from(last: u8) -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    format!(
        "Bearer {}",
        encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    )
}

fn rs256(claims: Value) -> String {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    format!(
        "Bearer {}",
        encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn us2_free_is_throttled_at_101_while_premium_continues() {
    let stack = StackBuilder::new(control_plane_bin!(), &config())
        .with_redis()
        .start();
    let url = stack.url("/api/v1/things");
    let (free, premium) = (from(71), from(72));
    let free_key = [("x-api-key", FREE_KEY)];
    let premium_key = [("x-api-key", PREMIUM_KEY)];
    for i in 1..=100 {
        let f = get(&free, &url, &free_key).await;
        assert_eq!(f.status, 200, "free request {i}");
        assert_eq!(f.header("x-ratelimit-tier"), Some("free"));
        let p = get(&premium, &url, &premium_key).await;
        assert_eq!(p.status, 200, "premium request {i}");
    }
    let f = get(&free, &url, &free_key).await;
    assert_eq!(f.status, 429, "free request 101");
    let p = get(&premium, &url, &premium_key).await;
    assert_eq!(p.status, 200, "premium request 101");
    assert_eq!(p.header("x-ratelimit-tier"), Some("premium"));
    assert_eq!(p.num("x-ratelimit-limit"), 1000);
    assert_eq!(p.num("x-ratelimit-remaining"), 899);
    // No key at all: the default (most restrictive) tier, by IP.
    let anonymous = get(&from(73), &url, &[]).await;
    assert_eq!(anonymous.header("x-ratelimit-tier"), Some("free"));
    assert_eq!(anonymous.num("x-ratelimit-limit"), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn us2_an_unlimited_key_sends_ten_thousand_requests_unthrottled() {
    let stack = StackBuilder::new(control_plane_bin!(), &config())
        .with_redis()
        .start();
    let url = stack.url("/api/v1/things");
    let client = from(74);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let key = [("x-api-key", UNLIMITED_KEY)];
                let mut statuses = Vec::with_capacity(500);
                for _ in 0..500 {
                    let reply = get(&client, &url, &key).await;
                    assert_eq!(reply.header("x-ratelimit-tier"), Some("unlimited"));
                    assert!(
                        reply.header("x-ratelimit-limit").is_none(),
                        "no counter applies"
                    );
                    statuses.push(reply.status);
                }
                statuses
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        let statuses = task.await.unwrap();
        assert!(statuses.iter().all(|&s| s == 200));
        total += statuses.len();
    }
    assert_eq!(total, 10_000);
    // The unlimited tier's endpoint rule still applies… it has none here; nothing was stored.
    let mut conn = stack.redis.as_ref().unwrap().connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("rl:*unlimited*")
        .query(&mut conn)
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn us3_endpoint_limits_bind_independently_under_the_tier_budget() {
    let stack = StackBuilder::new(control_plane_bin!(), &config())
        .with_redis()
        .start();
    let client = from(75);
    let key = [("x-api-key", PREMIUM_KEY)];
    // /api/v1/request: 50; spelling variants share the counter.
    let variants = [
        "/api/v1/request",
        "/api/v1//request?x=1",
        "/api/v1/./request",
        "/api/v1/x/../request",
    ];
    for i in 0..50 {
        let path = variants[i % variants.len()];
        let reply = get(&client, &stack.url(path), &key).await;
        assert_eq!(reply.status, 200, "{path} #{}", i + 1);
        assert_eq!(
            reply.num("x-ratelimit-limit"),
            50,
            "the rule has least remaining"
        );
    }
    let denied = get(&client, &stack.url("/api/v1/request"), &key).await;
    assert_eq!(denied.status, 429);
    assert_eq!(
        denied.json()["error"]["details"]["endpoint"],
        "/api/v1/request"
    );
    assert_eq!(denied.num("x-ratelimit-limit"), 50);
    // Health (its own rule, 999) still passes, and the headers show the tier budget now
    // has the least remaining (1000 − 50 − 1).
    let health = get(&client, &stack.url("/api/v1/health"), &key).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.num("x-ratelimit-remaining"), 949);
    // A prefix rule: three under /api/v1/admin/*, whatever the path below it.
    for path in ["/api/v1/admin/users", "/api/v1/admin/", "/api/v1/admin/a/b"] {
        assert_eq!(
            get(&client, &stack.url(path), &key).await.status,
            200,
            "{path}"
        );
    }
    let admin = get(&client, &stack.url("/api/v1/admin/other"), &key).await;
    assert_eq!(admin.status, 429);
    assert_eq!(
        admin.json()["error"]["details"]["endpoint"],
        "/api/v1/admin/*"
    );
    // `/api/v1/admin` itself is not below the prefix: only the tier budget applies.
    let bare = get(&client, &stack.url("/api/v1/admin"), &key).await;
    assert_eq!(bare.status, 200);
    assert_eq!(bare.num("x-ratelimit-limit"), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn us3_the_tier_budget_caps_the_sum_across_endpoints() {
    let yaml = Config::new()
        .default_tier("t")
        .tier(Tier::new("t", 10).endpoint("/a", 6).endpoint("/b", 6))
        .yaml();
    let stack = StackBuilder::new(control_plane_bin!(), &yaml).start();
    let client = from(76);
    let mut passed = 0;
    for i in 0..20 {
        let path = if i % 2 == 0 { "/a" } else { "/b" };
        passed += usize::from(get(&client, &stack.url(path), &[]).await.status == 200);
    }
    assert_eq!(passed, 10, "6 + 6 endpoint room, but 10 in the tier budget");
    // An endpoint without a rule is limited by the (now exhausted) budget alone.
    assert_eq!(get(&client, &stack.url("/c"), &[]).await.status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_jwts_choose_user_and_tier_forged_ones_fall_back_to_the_ip() {
    let stack = StackBuilder::new(control_plane_bin!(), &config()).start();
    let url = stack.url("/api/v1/things");
    let client = from(77);
    let exp = now() + 600;
    let good = json!({"sub": "alice", "tier": "premium", "exp": exp});
    for token in [hs256(good.clone(), SECRET), rs256(good.clone())] {
        let reply = get(&client, &url, &[("authorization", &token)]).await;
        assert_eq!(
            reply.header("x-ratelimit-tier"),
            Some("premium"),
            "{reply:#?}"
        );
        assert_eq!(reply.num("x-ratelimit-limit"), 1000);
    }
    // Both tokens named user:alice: one budget.
    let reply = get(
        &client,
        &url,
        &[("authorization", &hs256(good.clone(), SECRET))],
    )
    .await;
    assert_eq!(reply.num("x-ratelimit-remaining"), 997);

    let header_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
    let forged_tokens = [
        (
            "wrong key",
            hs256(good.clone(), "not-the-secret-not-the-secret-xxxxx"),
        ),
        (
            "alg none",
            format!("Bearer {header_none}.eyJzdWIiOiJhbGljZSIsInRpZXIiOiJwcmVtaXVtIn0."),
        ),
        ("HS/RS confusion", hs256(good.clone(), RSA_PUBLIC)),
        (
            "expired",
            hs256(
                json!({"sub": "alice", "tier": "premium", "exp": now() - 3600}),
                SECRET,
            ),
        ),
        (
            "not yet valid",
            hs256(
                json!({"sub": "alice", "tier": "premium", "exp": exp, "nbf": now() + 3600}),
                SECRET,
            ),
        ),
        ("edited tier", {
            let t = hs256(json!({"sub": "alice", "tier": "free", "exp": exp}), SECRET);
            let parts: Vec<&str> = t.trim_start_matches("Bearer ").split('.').collect();
            let edited = hs256(
                json!({"sub": "alice", "tier": "premium", "exp": exp}),
                SECRET,
            );
            let edited_payload = edited
                .trim_start_matches("Bearer ")
                .split('.')
                .nth(1)
                .unwrap()
                .to_string();
            format!("Bearer {}.{}.{}", parts[0], edited_payload, parts[2])
        }),
        ("garbage", "Bearer not.a.jwt".to_string()),
    ];
    let attacker = from(78);
    for (i, (name, token)) in forged_tokens.iter().enumerate() {
        let reply = get(&attacker, &url, &[("authorization", token)]).await;
        assert_eq!(reply.status, 200, "{name}");
        assert_eq!(
            reply.header("x-ratelimit-tier"),
            Some("free"),
            "{name}: default tier"
        );
        assert_eq!(
            reply.num("x-ratelimit-remaining"),
            99 - i as u64,
            "{name}: counted against the attacker's IP budget"
        );
    }
    // A valid token naming a tier that does not exist: the user, under the default tier.
    let odd = hs256(
        json!({"sub": "bob", "tier": "platinum", "exp": exp}),
        SECRET,
    );
    let reply = get(&attacker, &url, &[("authorization", &odd)]).await;
    assert_eq!(reply.header("x-ratelimit-tier"), Some("free"));
    assert_eq!(
        reply.num("x-ratelimit-remaining"),
        99,
        "user:bob has its own budget"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitelisted_addresses_and_identities_bypass_without_headers() {
    let config = tiers_with_keys()
        .whitelist("127.0.0.81")
        .whitelist("127.0.1.0/24")
        .whitelist("key:premium-key")
        .whitelist("user:ops")
        .yaml();
    let stack = StackBuilder::new(control_plane_bin!(), &config).start();
    let url = stack.url("/api/v1/request");
    let exp = now() + 600;
    type Case<'a> = (reqwest::Client, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Case> = vec![
        (from(81), vec![], "IP"),
        (
            client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 9))),
            vec![],
            "CIDR",
        ),
        (
            from(82),
            vec![("x-api-key", PREMIUM_KEY.into())],
            "API key id",
        ),
        (
            from(83),
            vec![(
                "authorization",
                hs256(json!({"sub": "ops", "exp": exp}), SECRET),
            )],
            "user",
        ),
    ];
    for (client, headers, what) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for _ in 0..120 {
            let reply = get(&client, &url, &headers).await;
            assert_eq!(reply.status, 200, "{what}");
            assert!(!reply.has_rate_limit_headers(), "{what}: {reply:#?}");
        }
    }
    // Not whitelisted: counted as usual.
    let reply = get(&from(84), &url, &[]).await;
    assert!(reply.has_rate_limit_headers());
}
