//! Storage key names.
//!
//! Every key of one identity carries the same Redis Cluster hash tag (`{…}`) so a decision's
//! counters (every window of the tier and of the endpoint rule) live in one slot and one
//! script can touch them all. Client-influenced text never
//! reaches a key unescaped: identities and rule patterns made only of a conservative set of
//! characters are used as they are (readable in `redis-cli`), anything else is replaced by a
//! SHA-256 digest, which also bounds the key length.

use sha2::{Digest, Sha256};

use super::Algorithm;

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

/// The window segment of a counter key: `<W>` for an exact log, `<W>s<g>` for a slotted
/// counter (`g` the slot in milliseconds), `W` the window in seconds. The length and the
/// structure are part of the name, so each window is a counter of its own, one never read as
/// the other's structure, and a window whose length or precision changes starts afresh.
fn window_segment(window_seconds: u64, algorithm: Algorithm) -> String {
    match algorithm {
        Algorithm::Exact => window_seconds.to_string(),
        Algorithm::Slotted { slot_us } => format!("{window_seconds}s{}", slot_us / 1_000),
    }
}

/// Key of one window of an identity's tier budget (all endpoints): `rl:{<identity>}:b:<W>`
/// (`<W>s<g>` when slotted, see [`window_segment`]).
pub fn budget_key(identity: &str, window_seconds: u64, algorithm: Algorithm) -> String {
    format!(
        "{PREFIX}:{}:b:{}",
        tag(identity),
        window_segment(window_seconds, algorithm)
    )
}

/// Key of one window of an identity's counter for an endpoint rule:
/// `rl:{<identity>}:e:<W>:<rule>` (`<W>s<g>` when slotted).
pub fn rule_key(identity: &str, window_seconds: u64, algorithm: Algorithm, rule: &str) -> String {
    format!(
        "{PREFIX}:{}:e:{}:{}",
        tag(identity),
        window_segment(window_seconds, algorithm),
        segment(rule, true)
    )
}

/// The key of the exact log of the same window as the slotted counter `key` (same identity,
/// kind, length and rule: `<W>s<g>` read as `<W>`), the log a new slotted counter takes its
/// counts from. `None` for a key that is not a slotted counter's.
pub fn exact_counterpart(key: &str) -> Option<String> {
    let rest = key.strip_prefix(PREFIX)?.strip_prefix(":{")?;
    // Nothing inside a tag is a `}` (plain segments and digests have none).
    let tag_end = rest.find('}')?;
    let after_tag = &rest[tag_end + 1..];
    let kind = after_tag
        .strip_prefix(":b:")
        .or_else(|| after_tag.strip_prefix(":e:"))?;
    let window_end = kind.find(':').unwrap_or(kind.len());
    let (seconds, slot_ms) = kind[..window_end].split_once('s')?;
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits(seconds) || !digits(slot_ms) {
        return None;
    }
    let head = key.len() - kind.len();
    Some(format!("{}{seconds}{}", &key[..head], &kind[window_end..]))
}

/// Key of an identity's recent request nonces: the script's record of the requests it has
/// already counted, so that a call reaching Redis twice is counted once. Shares the identity's
/// hash tag, so it lives in the slot of the counters it guards.
pub fn seen_key(identity: &str) -> String {
    format!("{PREFIX}:{}:n", tag(identity))
}

/// Key of an identity's concurrency leases (a sorted set, `store/leases.lua`):
/// `rl:{<identity>}:c`.
pub fn lease_key(identity: &str) -> String {
    format!("{PREFIX}:{}:c", tag(identity))
}

/// Whether `key` has the form [`lease_key`] gives: a lease handle coming back from the filter
/// names only such keys.
pub fn is_lease_key(key: &str) -> bool {
    key.len() <= 2 * MAX_PLAIN_LEN
        && key
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_prefix(":{"))
            .and_then(|rest| rest.strip_suffix("}:c"))
            .is_some_and(|inner| {
                !inner.is_empty()
                    && !inner.contains(['{', '}'])
                    && !inner.contains(char::is_whitespace)
            })
}

/// Key of the record that an adjustment after a response (`store/usage.rs`) was applied:
/// `rl:{<identity>}:u:<once>`, in the slot of the counters it adjusts. `once` is made of
/// `[0-9a-z]` (checked by the caller).
pub fn usage_once_key(identity: &str, once: &str) -> String {
    format!("{PREFIX}:{}:u:{once}", tag(identity))
}

/// Pattern matching every counter key of an identity (for the status endpoint).
pub fn identity_pattern(identity: &str) -> String {
    format!("{PREFIX}:{}:*", tag(identity))
}

#[cfg(test)]
mod tests;
