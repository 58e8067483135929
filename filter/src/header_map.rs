//! Header maps in the proxy-wasm ABI encoding, read and written without the SDK (whose
//! helpers panic on non-UTF-8 names and on statuses they do not expect).
//!
//! The encoding: a little-endian u32 count, then a (name length, value length) pair of u32 per
//! header, then every name and value, each followed by a NUL byte.

use crate::evidence::RawRequest;

/// Splits an encoded map into (name, value) pairs; `None` when the buffer is malformed.
pub fn parse(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(raw)).ok()
    };
    let count = word(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    if data > bytes.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let name_len = word(4 + 8 * i)?;
        let value_len = word(8 + 8 * i)?;
        let name = bytes.get(data..data.checked_add(name_len)?)?;
        data = data.checked_add(name_len)?.checked_add(1)?;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data = data.checked_add(value_len)?.checked_add(1)?;
        pairs.push((name, value));
    }
    Some(pairs)
}

/// Encodes `pairs` for a host call.
pub fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(n, v)| 10 + n.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&len(pairs.len()));
    for (name, value) in pairs {
        out.extend_from_slice(&len(name.len()));
        out.extend_from_slice(&len(value.len()));
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// The headers [`raw_request`] reads, besides the configured API-key header.
pub const EVIDENCE_HEADERS: [&str; 5] = [
    "x-forwarded-for",
    "x-real-ip",
    "authorization",
    ":method",
    ":path",
];

/// The evidence in a request's headers. Like a per-name host lookup, the first value of a
/// name counts (Envoy already joins repeated `X-Forwarded-For` headers into one).
pub fn raw_request<'a>(
    headers: &[(&'a [u8], &'a [u8])],
    api_key_header: &str,
    source_address: Option<&'a [u8]>,
) -> RawRequest<'a> {
    let first = |name: &[u8]| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    RawRequest {
        source_address,
        forwarded_for: first(b"x-forwarded-for").into_iter().collect(),
        real_ip: first(b"x-real-ip"),
        api_key: first(api_key_header.as_bytes()),
        authorization: first(b"authorization"),
        method: first(b":method"),
        path: first(b":path"),
    }
}

#[cfg(test)]
mod tests;
