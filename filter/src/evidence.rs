//! What the filter tells the control plane about a request, and the bounds on it.
//!
//! Everything here comes from the client, so every piece is bounded: the decision call must
//! never fail because of what a client sent, or a client could push the filter into its
//! failure policy (with `fail_open: true`, straight past the limiter).

use std::net::IpAddr;

use rl_wire::{DecisionRequest, MAX_DECISION_REQUEST_BYTES};
/// The bounds are part of the decision call's contract: the control plane applies the same.
pub use rl_wire::{MAX_API_KEY_BYTES, MAX_AUTHORIZATION_BYTES, MAX_METHOD_BYTES, MAX_PATH_BYTES};

use crate::client_ip::{TrustedProxies, parse_source_address, resolve_client_ip};

/// The raw request data the glue reads from the host.
#[derive(Debug, Clone, Default)]
pub struct RawRequest<'a> {
    /// Envoy's `source.address` property.
    pub source_address: Option<&'a [u8]>,
    /// Every `x-forwarded-for` value, in order.
    pub forwarded_for: Vec<&'a [u8]>,
    pub real_ip: Option<&'a [u8]>,
    /// Value of the configured API key header.
    pub api_key: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
    pub method: Option<&'a [u8]>,
    pub path: Option<&'a [u8]>,
}

/// Builds the decision request for one client request.
pub fn decision_request(raw: &RawRequest<'_>, trusted: &TrustedProxies) -> DecisionRequest {
    let peer = raw.source_address.and_then(parse_source_address);
    let ip = resolve_client_ip(peer, &raw.forwarded_for, raw.real_ip, trusted);
    DecisionRequest {
        ip: ip.as_ref().map(IpAddr::to_string).unwrap_or_default(),
        api_key: credential(raw.api_key, MAX_API_KEY_BYTES),
        authorization: credential(raw.authorization, MAX_AUTHORIZATION_BYTES),
        method: truncate_lossy(raw.method.unwrap_or_default(), MAX_METHOD_BYTES),
        path: request_path(raw.path.unwrap_or_default()),
    }
}

/// A credential header value, or `None` when it cannot be a real credential: absent, empty,
/// not UTF-8, or longer than `max` bytes. Such a request is then judged by its IP.
pub fn credential(value: Option<&[u8]>, max: usize) -> Option<String> {
    let value = value?;
    if value.is_empty() || value.len() > max {
        return None;
    }
    std::str::from_utf8(value).ok().map(str::to_owned)
}

/// `:path` without query string and fragment, cut to [`MAX_PATH_BYTES`]. Invalid UTF-8 is
/// replaced rather than refused: the path only selects a counter, it grants nothing.
pub fn request_path(raw: &[u8]) -> String {
    let end = raw
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(raw.len());
    truncate_lossy(&raw[..end], MAX_PATH_BYTES)
}

fn truncate_lossy(raw: &[u8], max: usize) -> String {
    let mut text = String::from_utf8_lossy(raw).into_owned();
    truncate_on_char_boundary(&mut text, max);
    text
}

fn truncate_on_char_boundary(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

/// Serialises the request, guaranteed to fit [`MAX_DECISION_REQUEST_BYTES`].
///
/// Raw sizes are bounded well below the limit, but JSON escaping can double them (a header of
/// quotes or backslashes). Such values cannot be valid keys or tokens, so the credentials are
/// dropped first (the request is then judged by IP, as for any unknown key); only then is the
/// path shortened.
pub fn encode_decision_request(mut request: DecisionRequest) -> Vec<u8> {
    loop {
        let body = serde_json::to_vec(&request).unwrap_or_default();
        if body.len() <= MAX_DECISION_REQUEST_BYTES {
            return body;
        }
        if request.authorization.take().is_some() || request.api_key.take().is_some() {
            continue;
        }
        if request.path.is_empty() && request.method.is_empty() {
            // Unreachable with the bounds above; an empty body makes the call fail visibly.
            return body;
        }
        if request.path.is_empty() {
            request.method.clear();
        } else {
            let half = request.path.len() / 2;
            truncate_on_char_boundary(&mut request.path, half);
        }
    }
}

#[cfg(test)]
mod tests;
