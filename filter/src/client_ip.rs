//! Which address a request is charged to.
//!
//! The connection's peer is the only address a client cannot forge. Forwarded headers are
//! believed only when that peer is a configured trusted proxy, and even then only up to the
//! first hop that is not itself trusted: everything left of that hop was written by whoever
//! sent the request and proves nothing.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or a single address (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// Network address with the host bits cleared.
    addr: IpAddr,
    prefix: u8,
}

/// Why a `trusted_proxies` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpNetParseError(String);

impl fmt::Display for IpNetParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl IpNet {
    /// Parses `ADDRESS` or `ADDRESS/PREFIX`. Host bits below the prefix are ignored
    /// (`10.1.2.3/8` is `10.0.0.0/8`). An IPv4-mapped IPv6 block of at least /96 becomes the
    /// equivalent IPv4 block, because peers are compared in their IPv4 form.
    pub fn parse(text: &str) -> Result<IpNet, IpNetParseError> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| IpNetParseError(format!("{text:?} is not an IP address or CIDR block")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                // u8::from_str would also take "+8"; only plain digits are a prefix length.
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(IpNetParseError(format!(
                        "{text:?} has an invalid prefix length"
                    )));
                }
                let n: u16 = p.bytes().fold(0, |acc, b| acc * 10 + u16::from(b - b'0'));
                if n > u16::from(max) {
                    return Err(IpNetParseError(format!(
                        "{text:?} has a prefix length above {max}"
                    )));
                }
                n as u8
            }
        };
        Ok(IpNet::new(addr, prefix))
    }

    fn new(addr: IpAddr, prefix: u8) -> IpNet {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            other => (other, prefix),
        };
        let addr = match addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask_v4(prefix))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask_v6(prefix))),
        };
        IpNet { addr, prefix }
    }

    /// Whether `ip` (already in canonical form) lies in this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask_v4(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask_v6(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask_v4(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

fn mask_v6(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => u128::MAX << (128 - u32::from(p.min(128))),
    }
}

/// The `trusted_proxies` of the plugin configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies { nets }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(ip))
    }
}

/// Parses Envoy's `source.address` property (`127.0.0.1:5555`, `[::1]:5555`). A bare address
/// is accepted too; anything else (a pipe path, garbage) yields `None`.
pub fn parse_source_address(raw: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(raw).ok()?;
    let ip = match text.parse::<SocketAddr>() {
        Ok(sock) => sock.ip(),
        Err(_) => text.parse::<IpAddr>().ok()?,
    };
    Some(ip.to_canonical())
}

/// One forwarded-header entry as an address. Only optional whitespace around the entry is
/// forgiven: a port, brackets, a zone id or anything else makes it unusable.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(trim_ows(entry)).ok()?;
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// Resolves the client address.
///
/// * `peer`: the connection's source address (`None` when the host gave none).
/// * `forwarded_for`: every `X-Forwarded-For` value in arrival order; they are read as one
///   comma-separated list.
/// * `real_ip`: the `X-Real-IP` value, consulted only when there is no `X-Forwarded-For`.
///   An `X-Forwarded-For` holding nothing but the peer's own address counts as absent: that
///   is what Envoy with `use_remote_address: true` appends when the proxy sent none, so a
///   proxy that reports the client only in `X-Real-IP` still works behind such an Envoy.
///
/// Returns `None` only when the peer is unknown: without it there is nothing to anchor trust.
pub fn resolve_client_ip(
    peer: Option<IpAddr>,
    forwarded_for: &[&[u8]],
    real_ip: Option<&[u8]>,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.contains(peer) {
        return Some(peer);
    }
    let entries: Vec<&[u8]> = forwarded_for
        .iter()
        .flat_map(|value| value.split(|&b| b == b','))
        .map(trim_ows)
        .collect();
    let absent = match entries.as_slice() {
        [only] => only.is_empty() || parse_entry(only) == Some(peer),
        all => all.iter().all(|entry| entry.is_empty()),
    };
    if absent {
        return Some(real_ip.and_then(parse_entry).unwrap_or(peer));
    }
    let mut leftmost_trusted = peer;
    for entry in entries.iter().rev() {
        match parse_entry(entry) {
            Some(ip) if trusted.contains(ip) => leftmost_trusted = ip,
            Some(ip) => return Some(ip),
            // The hop we would have to believe is unreadable; falling back to anything further
            // left would let the sender pick its identity.
            None => return Some(peer),
        }
    }
    Some(leftmost_trusted)
}

#[cfg(test)]
mod tests;
