//! Storage key names.
//!
//! Every key of one identity carries the same Redis Cluster hash tag (`{…}`) so a decision's
//! counters (every window of the tier and of the endpoint rule) live in one slot and one
//! script can touch them all. Client-influenced text never
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

/// Key of one window of an identity's tier budget (all endpoints): `rl:{<identity>}:b:<W>`,
/// `W` the window in seconds. The length is part of the name, so each window of a tier is a
/// counter of its own, and a window whose length changes starts counting afresh.
pub fn budget_key(identity: &str, window_seconds: u64) -> String {
    format!("{PREFIX}:{}:b:{window_seconds}", tag(identity))
}

/// Key of one window of an identity's counter for an endpoint rule:
/// `rl:{<identity>}:e:<W>:<rule>`.
pub fn rule_key(identity: &str, window_seconds: u64, rule: &str) -> String {
    format!(
        "{PREFIX}:{}:e:{window_seconds}:{}",
        tag(identity),
        segment(rule, true)
    )
}

/// Key of an identity's recent request nonces: the script's record of the requests it has
/// already counted, so that a call reaching Redis twice is counted once. Shares the identity's
/// hash tag, so it lives in the slot of the counters it guards.
pub fn seen_key(identity: &str) -> String {
    format!("{PREFIX}:{}:n", tag(identity))
}

/// Pattern matching every counter key of an identity (for the status endpoint).
pub fn identity_pattern(identity: &str) -> String {
    format!("{PREFIX}:{}:*", tag(identity))
}

#[cfg(test)]
mod tests;
