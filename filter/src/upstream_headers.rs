//! The upstream's own rate-limit headers on the response of a request the filter decided and
//! forwarded.
//!
//! A client must read only the budget the filter gives. An upstream that runs a limiter of
//! its own may send `X-RateLimit-*` headers too: beside ours they contradict them, and where
//! we send none (whitelisted, disabled, failed open) or only `X-RateLimit-Tier` (an unlimited
//! tier) they pass for ours. So every `X-RateLimit-*` name the upstream sent goes, and ours
//! are set (replacing any upstream line of the same name). Left alone on purpose:
//!
//! - `RateLimit` and `RateLimit-Policy`: structured-field Lists (the IETF rate-limit header
//!   fields) to which every intermediary may append items of its own; the upstream's items
//!   describe its own limits and stay, and ours are added after them as lines of their own
//!   ([`crate::ietf_fields`]);
//! - `Retry-After`: the filter sets it only on the 429 and 503 it answers itself. On an
//!   upstream response it is the upstream's word about that response: when to come back after
//!   its own 503 or 429, when to poll after a 202, when to follow a 3xx.
//!
//! Nothing is removed from a response the filter answered itself, nor from one it did not
//! decide (see [`crate::engine::Engine::response_headers`]).

/// Names of the header family the filter owns, lowercase (Envoy keeps names lowercase; the
/// match ignores case anyway).
pub const OWNED_PREFIX: &[u8] = b"x-ratelimit-";

/// The response header names to remove before `ours` are set: every name in `present` of the
/// `X-RateLimit-*` family that `ours` does not set (those are replaced), each once.
pub fn to_remove<'a>(
    present: impl IntoIterator<Item = &'a [u8]>,
    ours: &[(&'static str, String)],
) -> Vec<&'a [u8]> {
    let mut names: Vec<&'a [u8]> = Vec::new();
    for name in present {
        let owned = name
            .get(..OWNED_PREFIX.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(OWNED_PREFIX));
        let set_by_us = ours
            .iter()
            .any(|(ours, _)| ours.as_bytes().eq_ignore_ascii_case(name));
        let seen = names.iter().any(|n| n.eq_ignore_ascii_case(name));
        if owned && !set_by_us && !seen {
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests;
