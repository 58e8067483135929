use super::*;

const EXACT: Algorithm = Algorithm::Exact;
const SLOTTED: Algorithm = Algorithm::Slotted { slot_us: 1_000_000 };

#[test]
fn plain_identities_stay_readable() {
    assert_eq!(
        budget_key("ip:10.0.0.1", 60, EXACT),
        "rl:{ip:10.0.0.1}:b:60"
    );
    assert_eq!(
        budget_key("ip:2001:db8::1", 1, EXACT),
        "rl:{ip:2001:db8::1}:b:1"
    );
    // A grouped IPv6 client: `/` is a plain character, and the longest group name (every
    // group is at most an address and `/len`) stays far below the plain-text bound.
    assert_eq!(
        budget_key("ip:2001:db8:1:2::/64", 86_400, EXACT),
        "rl:{ip:2001:db8:1:2::/64}:b:86400"
    );
    let longest = "ip:ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127";
    assert_eq!(tag(longest), format!("{{{longest}}}"));
    assert_eq!(
        rule_key("key:demo-free", 60, EXACT, "/api/v1/admin/*"),
        "rl:{key:demo-free}:e:60:/api/v1/admin/*"
    );
}

#[test]
fn special_characters_are_hashed_not_embedded() {
    for nasty in [
        "user:a}b",
        "user:{x}",
        "user:a b",
        "user:\r\nFLUSHALL",
        "user:é",
    ] {
        let key = budget_key(nasty, 60, EXACT);
        assert!(key.starts_with("rl:{#"), "{key}");
        assert_eq!(key.matches('{').count(), 1);
        assert_eq!(key.matches('}').count(), 1);
        assert!(key.is_ascii() && !key.contains(' '));
    }
    assert_ne!(tag("user:a}b"), tag("user:a{b"));
    assert!(tag("user:a*").starts_with("{#"));
}

#[test]
fn long_identities_are_bounded() {
    let long = format!("user:{}", "a".repeat(10_000));
    assert!(budget_key(&long, 86_400, EXACT).len() < 72);
    let rule = format!("/{}", "x".repeat(500));
    assert!(rule_key("ip:1.2.3.4", 86_400, EXACT, &rule).len() < 88);
}

#[test]
fn keys_of_one_identity_share_a_hash_tag() {
    let id = "key:abc";
    let tag_of = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_string();
    let keys = [
        budget_key(id, 1, EXACT),
        budget_key(id, 60, EXACT),
        rule_key(id, 1, EXACT, "/x"),
        rule_key(id, 60, EXACT, "/x"),
        seen_key(id),
    ];
    for key in &keys {
        assert_eq!(tag_of(key), tag_of(&keys[0]), "{key}");
    }
}

#[test]
fn every_window_of_a_counter_has_a_key_of_its_own() {
    let id = "key:abc";
    let keys = [
        budget_key(id, 1, EXACT),
        budget_key(id, 60, EXACT),
        rule_key(id, 1, EXACT, "/x"),
        rule_key(id, 60, EXACT, "/x"),
        rule_key(id, 60, EXACT, "/y"),
        // The same window counted by the other algorithm, or with another slot.
        budget_key(id, 60, SLOTTED),
        budget_key(id, 60, Algorithm::Slotted { slot_us: 2_000_000 }),
        rule_key(id, 60, SLOTTED, "/x"),
        // A rule whose pattern looks like a window length cannot meet another rule's key:
        // patterns start with `/`.
        rule_key(id, 1, EXACT, "/60:/x"),
    ];
    let distinct: std::collections::HashSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "{keys:?}");
}

#[test]
fn the_seen_record_shares_the_identity_slot_and_no_counter_name() {
    assert_eq!(seen_key("ip:10.0.0.1"), "rl:{ip:10.0.0.1}:n");
    for identity in ["ip:10.0.0.1", "user:a b", "key:demo-free"] {
        let seen = seen_key(identity);
        assert!(
            seen.starts_with(&format!("rl:{}:", tag(identity))),
            "{seen}"
        );
        assert_ne!(seen, budget_key(identity, 60, EXACT));
        // Counter keys are `…:b:<W>` and `…:e:<W>:<rule>`: none can be named like the record.
        assert!(!seen.contains(":e:"));
    }
}

#[test]
fn a_slotted_key_names_its_slot() {
    assert_eq!(
        budget_key("ip:10.0.0.1", 60, SLOTTED),
        "rl:{ip:10.0.0.1}:b:60s1000"
    );
    assert_eq!(
        rule_key(
            "key:a",
            3_600,
            Algorithm::Slotted {
                slot_us: 60_000_000
            },
            "/x"
        ),
        "rl:{key:a}:e:3600s60000:/x"
    );
}

#[test]
fn a_slotted_key_names_the_exact_log_of_its_window() {
    for (id, rule) in [
        ("ip:10.0.0.1", "/api/v1/admin/*"),
        ("key:a}b{c", "/x y"),
        ("ip:2001:db8:1:2::/64", "/s:60s1000"),
    ] {
        for (seconds, slot_us) in [(60, 1_000_000), (1, 100_000), (86_400, 720_000_000)] {
            let slotted = Algorithm::Slotted { slot_us };
            assert_eq!(
                exact_counterpart(&budget_key(id, seconds, slotted)),
                Some(budget_key(id, seconds, EXACT))
            );
            assert_eq!(
                exact_counterpart(&rule_key(id, seconds, slotted, rule)),
                Some(rule_key(id, seconds, EXACT, rule))
            );
        }
    }
}

#[test]
fn only_slotted_keys_have_an_exact_counterpart() {
    let id = "ip:10.0.0.1";
    for key in [
        budget_key(id, 60, EXACT),
        rule_key(id, 60, EXACT, "/a:60s1000"),
        seen_key(id),
        "rl:{ip:10.0.0.1}:b0".to_string(),
        "rl:{ip:10.0.0.1}:b:s1000".to_string(),
        "rl:{ip:10.0.0.1}:b:60s".to_string(),
        "rl:{ip:10.0.0.1}:x:60s1000".to_string(),
        "rl:{ip:10.0.0.1".to_string(),
        "other:{ip:10.0.0.1}:b:60s1000".to_string(),
        String::new(),
    ] {
        assert_eq!(exact_counterpart(&key), None, "{key}");
    }
}
