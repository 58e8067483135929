//! The configuration's version as an entity tag: `ETag: "<version>"` on the configuration
//! document, and `If-Match` on a PUT (RFC 9110 §8.8.3, §13.1.1), compared strongly.

use axum::http::{HeaderMap, HeaderValue, header};

use crate::config_sync::Precondition;

/// The strong entity tag of a configuration version.
pub fn etag(version: u64) -> HeaderValue {
    // Digits between quotes: always a valid header value.
    HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// Why an `If-Match` header is not one.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "If-Match must be `*` or a list of entity tags such as \"{example}\" (quotes included): {reason}"
)]
pub struct IfMatchError {
    example: u64,
    reason: &'static str,
}

/// The precondition of a request's `If-Match` headers: none without one, or `*`; otherwise
/// the versions its strong tags name. A weak tag (`W/"5"`) never matches a strong
/// comparison, and a tag that is no version matches nothing: both leave the list without
/// them, so a list of only such tags is a precondition that fails.
pub fn if_match(headers: &HeaderMap, current: u64) -> Result<Precondition, IfMatchError> {
    let mut values = headers.get_all(header::IF_MATCH).iter().peekable();
    if values.peek().is_none() {
        return Ok(Precondition::None);
    }
    let fail = |reason| IfMatchError {
        example: current,
        reason,
    };
    let mut versions = Vec::new();
    let mut any = false;
    let mut tags = 0;
    for value in values {
        let text = value.to_str().map_err(|_| fail("not ASCII"))?;
        let mut rest = text;
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                break;
            }
            if let Some(after) = rest.strip_prefix('*') {
                any = true;
                tags += 1;
                rest = after;
                continue;
            }
            let (weak, quoted) = match rest.strip_prefix("W/") {
                Some(after) => (true, after),
                None => (false, rest),
            };
            let body = quoted
                .strip_prefix('"')
                .ok_or_else(|| fail("a tag is not quoted"))?;
            let end = body
                .find('"')
                .ok_or_else(|| fail("a quote is not closed"))?;
            let tag = &body[..end];
            if !weak
                && !tag.is_empty()
                && tag.bytes().all(|b| b.is_ascii_digit())
                && let Ok(version) = tag.parse()
            {
                versions.push(version);
            }
            tags += 1;
            rest = &body[end + 1..];
            if !(rest.is_empty() || rest.starts_with([' ', '\t', ','])) {
                return Err(fail("tags must be separated by commas"));
            }
        }
    }
    if tags == 0 {
        return Err(fail("it is empty"));
    }
    if any {
        // `*` stands alone: it matches whenever there is a configuration, which is always.
        return if tags == 1 {
            Ok(Precondition::None)
        } else {
            Err(fail("`*` cannot be combined with tags"))
        };
    }
    Ok(Precondition::VersionIn(versions))
}

#[cfg(test)]
mod tests;
