//! Storage key names.
//!
//! Every key of one identity carries the same Redis Cluster hash tag (`{…}`) so a decision's
//! counters live in one slot and one script can touch them all. Client-influenced text never
//! reaches a key unescaped: identities and rule patterns made only of a conservative set of
//! characters are used as they are (readable in `redis-cli`), anything else is replaced by a
//! SHA-256 digest, which also bounds the key length.

use sha2::{Digest, Sha256};

const PREFIX: &str = "rl";
const MAX_PLAIN_LEN: usize = 128;

/// `*` is allowed only in rule segments: inside the hash tag it would act as a wildcard in
/// the status endpoint's SCAN pattern.
fn is_plain(text: &str, allow_star: bool) -> bool {
    !text.is_empty()
        && text.len() <= MAX_PLAIN_LEN
        && text.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b':' | b'.' | b'-' | b'_' | b'/' | b'@')
                || (allow_star && b == b'*')
        })
}

/// `text` when it is plain, else `#` followed by the hex SHA-256 of it (`#` never occurs in a
/// plain segment, so the two forms cannot collide).
fn segment(text: &str, allow_star: bool) -> String {
    if is_plain(text, allow_star) {
        text.to_string()
    } else {
        let digest = Sha256::digest(text.as_bytes());
        format!("#{}", hex::encode(&digest[..16]))
    }
}

/// Hash tag of an identity: `{<segment>}`.
pub fn tag(identity: &str) -> String {
    format!("{{{}}}", segment(identity, false))
}

/// Key of an identity's tier budget (all endpoints).
pub fn budget_key(identity: &str) -> String {
    format!("{PREFIX}:{}:b", tag(identity))
}

/// Key of an identity's counter for one endpoint rule.
pub fn rule_key(identity: &str, rule: &str) -> String {
    format!("{PREFIX}:{}:e:{}", tag(identity), segment(rule, true))
}

/// Pattern matching every counter key of an identity (for the status endpoint).
pub fn identity_pattern(identity: &str) -> String {
    format!("{PREFIX}:{}:*", tag(identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_identities_stay_readable() {
        assert_eq!(budget_key("ip:10.0.0.1"), "rl:{ip:10.0.0.1}:b");
        assert_eq!(budget_key("ip:2001:db8::1"), "rl:{ip:2001:db8::1}:b");
        assert_eq!(
            rule_key("key:demo-free", "/api/v1/admin/*"),
            "rl:{key:demo-free}:e:/api/v1/admin/*"
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
            let key = budget_key(nasty);
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
        assert!(budget_key(&long).len() < 64);
        let rule = format!("/{}", "x".repeat(500));
        assert!(rule_key("ip:1.2.3.4", &rule).len() < 80);
    }

    #[test]
    fn keys_of_one_identity_share_a_hash_tag() {
        let id = "key:abc";
        let b = budget_key(id);
        let e = rule_key(id, "/x");
        let tag_of = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_string();
        assert_eq!(tag_of(&b), tag_of(&e));
    }
}
