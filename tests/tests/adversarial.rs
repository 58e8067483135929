//! Hostile clients through a real Envoy: none gets more than its real budget, nothing
//! crashes, and Redis only holds keys for real identities.

use std::net::{IpAddr, Ipv4Addr};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rl_tests::fixtures::{Config, Jwt, Tier};
use rl_tests::{Stack, StackBuilder, client_from, control_plane_bin, get, send};
use serde_json::json;

const SECRET: &str = "adversarial-test-hs256-secret-0123456789";
const BUDGET: u64 = 50;

/// `BUDGET` per minute, `/api/v1/request` 20; one real key; HS256 tokens signed with `SECRET`.
fn config() -> String {
    Config::new()
        .tier(
            Tier::new("free", BUDGET)
                .window(60)
                .endpoint("/api/v1/request", 20),
        )
        .api_key("real", "free", "the-only-real-key-000001")
        .jwt(Jwt::hs256(SECRET))
        .yaml()
}

fn from(last: u8) -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

fn stack() -> Stack {
    StackBuilder::new(control_plane_bin!(), &config())
        .with_redis()
        .plugin("trusted_proxies", json!(["127.0.0.200/32"]))
        .start()
}

/// Counter keys in Redis (the configuration's keys and each identity's record of recently
/// counted requests excluded).
fn counter_keys(stack: &Stack) -> Vec<String> {
    let mut conn = stack.redis.as_ref().expect("redis").connection();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("rl:*").query(&mut conn).unwrap();
    keys.retain(|k| !k.starts_with("rl:{config}") && !k.ends_with(":n"));
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_random_api_keys_buy_nothing() {
    let stack = stack();
    let url = stack.url("/x");
    let client = from(121);
    let tasks: Vec<_> = (0..20)
        .map(|worker| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let mut passed = 0;
                for i in 0..500 {
                    let key = format!("guess-{worker}-{i}-{}", fastrand::u64(..));
                    if get(&client, &url, &[("x-api-key", &key)]).await.status == 200 {
                        passed += 1;
                    }
                }
                passed
            })
        })
        .collect();
    let mut passed = 0;
    for task in tasks {
        passed += task.await.unwrap();
    }
    assert_eq!(
        passed, BUDGET,
        "10,000 invented keys: the attacker's IP budget only"
    );
    assert_eq!(
        counter_keys(&stack),
        vec!["rl:{ip:127.0.0.121}:b:60".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_spoofed_headers_and_spellings_share_one_budget() {
    let stack = stack();
    let client = from(122);
    let wrong_key = EncodingKey::from_secret(b"not-the-secret-not-the-secret-xxxxxx").unwrap();
    let mut attempts: Vec<Vec<(String, String)>> = Vec::new();
    for i in 0..40 {
        let claims = json!({"sub": format!("victim-{i}"), "exp": 4_000_000_000u64});
        let forged = encode(&Header::new(Algorithm::HS256), &claims, &wrong_key).unwrap();
        attempts.push(vec![("authorization".into(), format!("Bearer {forged}"))]);
        attempts.push(vec![(
            "authorization".into(),
            format!("Bearer eyJhbGciOiJub25lIn0.{i}."),
        )]);
        attempts.push(vec![(
            "x-forwarded-for".into(),
            format!("10.{i}.0.1, 10.{i}.0.2"),
        )]);
        attempts.push(vec![("x-real-ip".into(), format!("10.{i}.9.9"))]);
    }
    let mut passed = 0;
    for headers in &attempts {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        passed += u64::from(get(&client, &stack.url("/x"), &headers).await.status == 200);
    }
    assert_eq!(passed, BUDGET);

    // Spellings of one endpoint share its counter (20), from a fresh client.
    let client = from(123);
    let spellings = [
        "/api/v1/request",
        "/api/v1//request",
        "/api/v1/./request",
        "/api/v1/x/../request",
        "/api/v1/request?a=1",
        "/api/v1/request#f",
        "/%61pi/v1/request",
        "//api/v1/request",
        "/api/v1/%72equest",
        "/api/v1/request?",
    ];
    let mut passed = 0;
    for i in 0..40 {
        let path = spellings[i % spellings.len()];
        passed += u64::from(get(&client, &stack.url(path), &[]).await.status == 200);
    }
    assert_eq!(passed, 20);
    // Distinct spellings that are NOT the same path stay distinct (no rule: budget only).
    assert_eq!(
        get(&client, &stack.url("/api/v1/request/"), &[])
            .await
            .status,
        200
    );

    // Behind the trusted proxy, a client prepending hops still gets the address the proxy saw.
    let proxy = from(200);
    let mut passed = 0;
    for i in 0..(BUDGET + 10) {
        let chain = format!("{i}.{i}.{i}.{i}, 203.0.113.50");
        passed += u64::from(
            get(&proxy, &stack.url("/x"), &[("x-forwarded-for", &chain)])
                .await
                .status
                == 200,
        );
    }
    assert_eq!(passed, BUDGET);

    let mut keys = counter_keys(&stack);
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "rl:{ip:127.0.0.122}:b:60".to_string(),
            "rl:{ip:127.0.0.123}:b:60".to_string(),
            "rl:{ip:127.0.0.123}:e:60:/api/v1/request".to_string(),
            "rl:{ip:203.0.113.50}:b:60".to_string(),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_identifiers_are_escaped_and_bounded_in_redis_keys() {
    let stack = stack();
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    let nasty = [
        "a}b{c",
        "{ip:127.0.0.1}",
        "*",
        "user\r\nFLUSHALL\r\n",
        "spaces and\ttabs",
        "ünïcödé",
        "../../etc",
        &"x".repeat(250),
    ];
    let client = from(124);
    for (i, sub) in nasty.iter().enumerate() {
        let claims = json!({"sub": sub, "exp": 4_000_000_000u64});
        let token = encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        let bearer = format!("Bearer {token}");
        for _ in 0..3 {
            let reply = get(&client, &stack.url("/x"), &[("authorization", &bearer)]).await;
            assert_eq!(reply.status, 200, "{i}");
        }
        let reply = get(&client, &stack.url("/x"), &[("authorization", &bearer)]).await;
        assert_eq!(
            reply.num("x-ratelimit-remaining"),
            BUDGET - 4,
            "{sub:?} has its own budget"
        );
    }
    let keys = counter_keys(&stack);
    assert_eq!(
        keys.len(),
        nasty.len(),
        "one key per real identity: {keys:?}"
    );
    for key in &keys {
        assert!(key.len() < 80, "{key}");
        assert!(
            key.is_ascii() && !key.contains(char::is_whitespace),
            "{key:?}"
        );
        assert_eq!(key.matches('{').count(), 1, "{key}");
        assert_eq!(key.matches('}').count(), 1, "{key}");
    }
    // Nothing was flushed or injected: the keys are still there.
    assert_eq!(counter_keys(&stack).len(), nasty.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_input_crashes_nothing() {
    let stack = stack();
    let client = from(125);
    let url = stack.url("/x");
    let big = vec![b'a'; 50 * 1024];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("x-api-key", big.clone()),
        ("authorization", [b"Bearer ".as_slice(), &big].concat()),
        ("x-forwarded-for", big.clone()),
        ("x-api-key", vec![0xc3, 0x28, 0xa0, 0xa1, 0xff]),
        ("authorization", vec![0xe2, 0x28, 0xa1]),
        ("x-real-ip", vec![0xf0, 0x90, 0x28, 0xbc]),
    ];
    let mut passed = 0;
    for (name, value) in &cases {
        let reply = send(&client, "GET", &url, &[(name, value.as_slice())]).await;
        assert!(
            [200, 431].contains(&reply.status),
            "{name}: {}",
            reply.status
        );
        passed += u64::from(reply.status == 200);
    }
    // Envoy (431) or the filter may have refused the biggest ones; the rest were counted
    // against the client's own budget.
    let next = get(&client, &url, &[]).await;
    assert_eq!(next.status, 200);
    assert_eq!(next.num("x-ratelimit-remaining"), BUDGET - passed - 1);
    let mut paths = vec![
        "/%00".to_string(),
        "/%ff%fe%fd".to_string(),
        format!("/{}", "a/".repeat(2000)),
    ];
    paths.push(format!("/{}", "%2e%2e/".repeat(500)));
    for path in &paths {
        let reply = get(&client, &stack.url(path), &[]).await;
        assert!(reply.status < 500, "{path}: {}", reply.status);
    }
    assert!(!stack.envoy.log().contains("panicked"));
}
