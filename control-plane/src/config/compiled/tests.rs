use super::*;
use crate::config::parse_yaml;
use crate::config::test_support::SAMPLE;

fn sample() -> CompiledConfig {
    CompiledConfig::compile(parse_yaml(SAMPLE).unwrap()).unwrap()
}

fn window(limit: u64, seconds: u64, shadow: bool, policy: &str) -> Window {
    Window {
        limit,
        length: Duration::from_secs(seconds),
        shadow,
        policy: policy.into(),
        algorithm: crate::store::Algorithm::Exact,
    }
}

#[test]
fn the_top_level_shadow_shadows_every_window() {
    let mut cfg = parse_yaml(SAMPLE).unwrap();
    cfg.shadow = true;
    let c = CompiledConfig::compile(cfg).unwrap();
    for tier in c.tiers() {
        let rule_windows = tier.rules.entries().flat_map(|(_, w)| w);
        for window in tier.windows.iter().chain(rule_windows) {
            assert!(window.shadow, "{}", window.policy);
        }
    }
}

#[test]
fn compiled_config_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<CompiledConfig>();
}

#[test]
fn sample_compiles_into_tiers() {
    let c = sample();
    assert!(c.enabled());
    assert!(c.fail_open());
    assert_eq!(c.tiers().len(), 4);
    assert_eq!(c.tier(c.default_tier()).name, "free");
    let free = c.tier(c.default_tier());
    assert_eq!(free.windows, [window(100, 60, false, "free-60s")]);
    assert_eq!(
        free.description.as_deref(),
        Some("Unauthenticated and free users")
    );
    let (pattern, rule) = free.rules.longest_match("/api/v1/admin/users").unwrap();
    let windows = &rule.windows;
    assert_eq!(rule.cost, 1);
    assert_eq!(pattern, "/api/v1/admin/*");
    assert_eq!(
        windows,
        &[window(10, 60, false, "free-/api/v1/admin/*-60s")]
    );
    assert_eq!(free.rules.longest_match("/api/v1/other"), None);
    let unlimited = c.tier_by_name("unlimited").unwrap();
    assert!(c.tier(unlimited).windows.is_empty());
    assert_eq!(
        c.tier(unlimited)
            .rules
            .longest_match("/api/v1/expensive")
            .map(|(p, r)| (p, &r.windows)),
        Some((
            "/api/v1/expensive",
            &vec![window(5000, 60, false, "unlimited-/api/v1/expensive-60s")]
        ))
    );
    let enterprise = c.tier(c.tier_by_name("enterprise").unwrap());
    assert_eq!(
        enterprise.windows,
        [
            window(100, 1, false, "enterprise-1s"),
            window(10_000, 3600, false, "enterprise-3600s"),
        ]
    );
    assert_eq!(
        enterprise
            .rules
            .longest_match("/api/v1/search")
            .map(|(p, r)| (p, &r.windows)),
        Some((
            "/api/v1/search",
            &vec![
                window(5, 1, true, "enterprise-/api/v1/search-1s"),
                window(600, 3600, true, "enterprise-/api/v1/search-3600s"),
            ]
        ))
    );
    assert_eq!(c.tier_by_name("gold"), None);
    assert_eq!(c.source().default_tier, "free");
}

#[test]
fn compile_validates_first() {
    let mut cfg = parse_yaml(SAMPLE).unwrap();
    cfg.tiers[1].requests_per_window = Some(0);
    let e = CompiledConfig::compile(cfg).unwrap_err();
    assert_eq!(e.path(), "tiers[1].requests_per_window");
}

#[test]
fn api_key_lookup_by_raw_key() {
    let c = sample();
    let (id, tier) = c.lookup_api_key(b"ops-monitor-key-0123456789").unwrap();
    assert_eq!(id, "ops-monitor");
    assert_eq!(c.tier(tier).name, "unlimited");
}

#[test]
fn api_key_lookup_by_digest_upper_and_lower_hex() {
    // The sample's key_sha256 is SHA-256("test") in upper-case hex.
    let c = sample();
    let (id, tier) = c.lookup_api_key(b"test").unwrap();
    assert_eq!(id, "acme-prod");
    assert_eq!(c.tier(tier).name, "premium");

    let mut cfg = parse_yaml(SAMPLE).unwrap();
    cfg.api_keys[1].key_sha256 = Some(hex::encode(Sha256::digest(b"test")));
    let c = CompiledConfig::compile(cfg).unwrap();
    assert_eq!(
        c.lookup_api_key(b"test").map(|(id, _)| id),
        Some("acme-prod")
    );
}

#[test]
fn unknown_api_keys_are_not_found() {
    let c = sample();
    assert_eq!(c.lookup_api_key(b"nope"), None);
    assert_eq!(c.lookup_api_key(b""), None);
    assert_eq!(c.lookup_api_key(b"ops-monitor-key-012345678"), None);
    assert_eq!(c.lookup_api_key(b"ops-monitor-key-0123456789 "), None);
    // The id is not the key.
    assert_eq!(c.lookup_api_key(b"ops-monitor"), None);
}

#[test]
fn whitelist_by_ip() {
    let c = sample();
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    assert!(c.is_whitelisted(ip("127.0.0.1"), "ip:127.0.0.1"));
    assert!(c.is_whitelisted(ip("127.0.0.1"), "user:bob"));
    assert!(!c.is_whitelisted(ip("127.0.0.2"), "ip:127.0.0.2"));
    // An IPv4 client seen through a dual-stack listener.
    assert!(c.is_whitelisted(ip("::ffff:127.0.0.1"), "ip:::ffff:127.0.0.1"));
    assert!(!c.is_whitelisted(None, "ip:127.0.0.2"));
    assert!(c.is_whitelisted(None, "ip:127.0.0.1"));
}

#[test]
fn whitelist_by_cidr() {
    let c = sample();
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    assert!(c.is_whitelisted(ip("10.255.1.2"), "ip:10.255.1.2"));
    assert!(!c.is_whitelisted(ip("11.0.0.1"), "ip:11.0.0.1"));
    assert!(c.is_whitelisted(ip("2001:db8:ffff::1"), "ip:2001:db8:ffff::1"));
    assert!(!c.is_whitelisted(ip("2001:db9::1"), "ip:2001:db9::1"));
}

#[test]
fn whitelist_by_ip_form() {
    let c = sample();
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    assert!(c.is_whitelisted(ip("192.0.2.7"), "key:someone"));
    assert!(c.is_whitelisted(None, "ip:192.0.2.7"));
    assert!(!c.is_whitelisted(ip("192.0.2.8"), "ip:192.0.2.8"));
}

#[test]
fn whitelist_by_key_and_user() {
    let c = sample();
    let other = Some("198.51.100.1".parse::<IpAddr>().unwrap());
    assert!(c.is_whitelisted(other, "key:ops-monitor"));
    assert!(c.is_whitelisted(None, "user:healthchecker"));
    assert!(!c.is_whitelisted(other, "user:ops-monitor"));
    assert!(!c.is_whitelisted(other, "key:healthchecker"));
    assert!(!c.is_whitelisted(other, "key:acme-prod"));
    assert!(!c.is_whitelisted(other, "healthchecker"));
    assert!(!c.is_whitelisted(other, ""));
}

#[test]
fn debug_output_has_no_secrets() {
    let shown = format!("{:?}", sample());
    assert!(!shown.contains("ops-monitor-key-0123456789"), "{shown}");
    assert!(
        !shown.contains("0123456789abcdef0123456789abcdef"),
        "{shown}"
    );
    assert!(!shown.contains("9F86D081"), "{shown}");
}

#[test]
fn windows_compile_with_their_algorithm_and_slot() {
    let doc = "default_tier: t\ntiers:\n  - name: t\n    algorithm: slotted\n    limits: [{limit: 10, window_seconds: 1, algorithm: exact}, {limit: 5000000, window_seconds: 60, precision_ms: 500}, {limit: 90000000, window_seconds: 3600}]\n    endpoints:\n      /r: 3\n      /s: {limits: [{limit: 2, window_seconds: 10, algorithm: exact}]}\n";
    let cfg = CompiledConfig::compile(parse_yaml(doc).unwrap()).unwrap();
    let tier = cfg.tier(0);
    let seen: Vec<(&str, Algorithm)> = tier
        .windows
        .iter()
        .map(|w| (w.policy.as_str(), w.algorithm))
        .collect();
    assert_eq!(
        seen,
        [
            ("t-1s", Algorithm::Exact),
            ("t-60s", Algorithm::Slotted { slot_us: 500_000 }),
            (
                "t-3600s",
                Algorithm::Slotted {
                    slot_us: 60_000_000
                }
            ),
        ]
    );
    let rule = |path: &str| {
        tier.rules
            .entries()
            .find(|(pattern, _)| *pattern == path)
            .map(|(_, limits)| limits.windows.clone())
            .unwrap()
    };
    // The shorthand rule takes the tier's algorithm over window_size_seconds (60 s).
    assert_eq!(
        rule("/r")[0].algorithm,
        Algorithm::Slotted { slot_us: 1_000_000 }
    );
    assert_eq!(rule("/s")[0].algorithm, Algorithm::Exact);
    // The policy name does not carry the algorithm.
    assert_eq!(rule("/r")[0].policy, "t-/r-60s");
}
