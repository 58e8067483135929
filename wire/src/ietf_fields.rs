//! The IETF rate-limit header fields, `RateLimit-Policy` and `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers), written as structured fields (RFC 9651).
//!
//! - `RateLimit-Policy` is a List with one Item per window that applied to the request
//!   (`"free-1s";q=10;w=1, "free-60s";q=100;w=60`): the policy's name as an sf-string, `q` its
//!   limit, `w` its window in seconds.
//! - `RateLimit` is a List with the binding window's Item (`"free-60s";r=49;t=37`): `r` what
//!   remains, `t` the seconds until that window has room again.
//!
//! Both fields are Lists that every intermediary may append to, so ours are added as field
//! lines of their own after the upstream's (the filter's glue adds, never replaces; the gRPC
//! service hands them to Envoy to append). The control plane
//! forms the names (ASCII only, docs/CONFIGURATION.md); whatever a structured field cannot
//! carry (a byte outside printable ASCII in a name, a number above the 15 digits of an
//! sf-integer) leaves out that item rather than sending a field no parser accepts.

use crate::headers::Headers;
use crate::{CounterReport, PolicyReport};

pub const HEADER_RATELIMIT_POLICY: &str = "ratelimit-policy";
pub const HEADER_RATELIMIT: &str = "ratelimit";

/// Largest sf-integer (RFC 9651: at most 15 digits).
pub const MAX_SF_INTEGER: u64 = 999_999_999_999_999;

/// The IETF fields for an answer that named `policies` and the binding `counter`. `reset`
/// (`t`) is given by the caller: on a 429 it is the `Retry-After` sent with it. None at
/// all without policies (a control plane of a release that does not report them).
pub fn fields(
    policies: &[PolicyReport],
    counter: Option<&CounterReport>,
    reset: Option<u64>,
) -> Headers {
    let mut headers = Vec::with_capacity(2);
    if policies.is_empty() {
        return headers;
    }
    if let Some(value) = policy_field(policies) {
        headers.push((HEADER_RATELIMIT_POLICY, value));
    }
    let binding = counter.and_then(|c| c.policy.as_deref().map(|name| (name, c.remaining)));
    if let Some(value) =
        binding.and_then(|(name, remaining)| ratelimit_field(name, remaining, reset))
    {
        headers.push((HEADER_RATELIMIT, value));
    }
    headers
}

/// `RateLimit-Policy`: one Item per policy that can be written; `None` when none can.
pub fn policy_field(policies: &[PolicyReport]) -> Option<String> {
    let mut value = String::new();
    for policy in policies {
        let Some(item) = item(
            &policy.name,
            &[("q", Some(policy.limit)), ("w", Some(policy.window))],
        ) else {
            continue;
        };
        if !value.is_empty() {
            value.push_str(", ");
        }
        value.push_str(&item);
    }
    (!value.is_empty()).then_some(value)
}

/// `RateLimit` for the binding policy `name`; `t` only when `reset` is known.
pub fn ratelimit_field(name: &str, remaining: u64, reset: Option<u64>) -> Option<String> {
    item(name, &[("r", Some(remaining)), ("t", reset)])
}

/// An Item: `name` as an sf-string with integer parameters (those given as `None` left out);
/// `None` when the name or a number cannot be written.
fn item(name: &str, params: &[(&str, Option<u64>)]) -> Option<String> {
    let mut out = String::with_capacity(name.len() + 2 + 12 * params.len());
    sf_string(&mut out, name)?;
    for (key, value) in params {
        let Some(value) = value else {
            continue;
        };
        if *value > MAX_SF_INTEGER {
            return None;
        }
        out.push(';');
        out.push_str(key);
        out.push('=');
        out.push_str(&value.to_string());
    }
    Some(out)
}

/// Appends `text` as an sf-string: printable ASCII only, `"` and `\` escaped.
fn sf_string(out: &mut String, text: &str) -> Option<()> {
    if !text.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return None;
    }
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Some(())
}

#[cfg(test)]
mod tests;
