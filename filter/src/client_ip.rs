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
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|s| IpNet::parse(s).unwrap()).collect())
    }

    fn resolve(
        peer: &str,
        xff: &[&str],
        real_ip: Option<&str>,
        proxies: &[&str],
    ) -> Option<IpAddr> {
        let xff: Vec<&[u8]> = xff.iter().map(|s| s.as_bytes()).collect();
        resolve_client_ip(
            parse_source_address(peer.as_bytes()),
            &xff,
            real_ip.map(str::as_bytes),
            &trusted(proxies),
        )
    }

    #[test]
    fn ipnet_parses_addresses_and_blocks() {
        assert_eq!(
            IpNet::parse("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            IpNet::parse("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(IpNet::parse("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(IpNet::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(
            IpNet::parse("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(IpNet::parse("::1").unwrap().to_string(), "::1/128");
        assert_eq!(IpNet::parse("::/0").unwrap().to_string(), "::/0");
        assert_eq!(
            IpNet::parse("::ffff:10.0.0.0/104").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            IpNet::parse("::ffff:10.0.0.1").unwrap().to_string(),
            "10.0.0.1/32"
        );
    }

    #[test]
    fn ipnet_rejects_garbage() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "10.0.0.256",
            "localhost",
            " 10.0.0.1",
            "10.0.0.1:80",
            "[::1]",
            "fe80::1%eth0",
            "10.0.0.0/0008",
        ] {
            assert!(IpNet::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ipnet_membership() {
        let net = IpNet::parse("192.168.0.0/16").unwrap();
        assert!(net.contains(ip("192.168.255.1")));
        assert!(!net.contains(ip("192.169.0.1")));
        assert!(
            !net.contains(ip("::ffff:192.168.0.1")),
            "callers canonicalise first"
        );
        let v6 = IpNet::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::5")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(!IpNet::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
    }

    #[test]
    fn source_address_forms() {
        assert_eq!(
            parse_source_address(b"127.0.0.1:5555"),
            Some(ip("127.0.0.1"))
        );
        assert_eq!(parse_source_address(b"[::1]:5555"), Some(ip("::1")));
        assert_eq!(
            parse_source_address(b"[::ffff:1.2.3.4]:80"),
            Some(ip("1.2.3.4"))
        );
        assert_eq!(parse_source_address(b"10.0.0.7"), Some(ip("10.0.0.7")));
        assert_eq!(
            parse_source_address(b"2001:db8::1"),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(parse_source_address(b"/tmp/envoy.sock"), None);
        assert_eq!(parse_source_address(b""), None);
        assert_eq!(parse_source_address(b"\xff\xfe"), None);
    }

    #[test]
    fn forged_headers_ignored_without_trusted_proxies() {
        assert_eq!(
            resolve("203.0.113.9:4000", &["1.1.1.1"], Some("2.2.2.2"), &[]),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn forged_headers_ignored_from_untrusted_peer() {
        assert_eq!(
            resolve(
                "203.0.113.9:4000",
                &["1.1.1.1, 10.0.0.1"],
                Some("2.2.2.2"),
                &["10.0.0.0/8"]
            ),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn trusted_peer_single_entry() {
        assert_eq!(
            resolve("10.0.0.1:4000", &["198.51.100.7"], None, &["10.0.0.0/8"]),
            Some(ip("198.51.100.7"))
        );
    }

    #[test]
    fn trusted_peer_takes_rightmost_untrusted_entry() {
        // The client wrote 6.6.6.6 itself; 198.51.100.7 is what the trusted proxy saw.
        assert_eq!(
            resolve(
                "10.0.0.1:4000",
                &["6.6.6.6, 198.51.100.7"],
                None,
                &["10.0.0.0/8"]
            ),
            Some(ip("198.51.100.7"))
        );
    }

    #[test]
    fn trusted_hops_are_skipped() {
        assert_eq!(
            resolve(
                "10.0.0.1:4000",
                &["6.6.6.6,198.51.100.7 , 10.0.0.2,\t10.0.0.3"],
                None,
                &["10.0.0.0/8"]
            ),
            Some(ip("198.51.100.7"))
        );
    }

    #[test]
    fn several_header_values_are_one_list() {
        assert_eq!(
            resolve(
                "10.0.0.1:4000",
                &["6.6.6.6", "198.51.100.7, 10.0.0.9"],
                None,
                &["10.0.0.0/8"]
            ),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            resolve(
                "10.0.0.1:4000",
                &["6.6.6.6, 10.0.0.9", "10.0.0.8"],
                None,
                &["10.0.0.0/8"]
            ),
            Some(ip("6.6.6.6"))
        );
    }

    #[test]
    fn unreadable_hop_falls_back_to_peer() {
        for xff in [
            "6.6.6.6, garbage",
            "6.6.6.6, 198.51.100.7:8080",
            "6.6.6.6, [2001:db8::1]",
            "6.6.6.6, 198.51.100.7 x",
            "6.6.6.6, 198.51.100. 7",
            "6.6.6.6,",
            "6.6.6.6, ,10.0.0.2",
            "unknown",
        ] {
            assert_eq!(
                resolve("10.0.0.1:4000", &[xff], None, &["10.0.0.0/8"]),
                Some(ip("10.0.0.1")),
                "{xff:?}"
            );
        }
        // Garbage left of the first untrusted hop is never looked at.
        assert_eq!(
            resolve(
                "10.0.0.1:4000",
                &["garbage, 198.51.100.7"],
                None,
                &["10.0.0.0/8"]
            ),
            Some(ip("198.51.100.7"))
        );
    }

    #[test]
    fn non_utf8_hop_falls_back_to_peer() {
        let xff: [&[u8]; 1] = [b"6.6.6.6, \xff\xfe"];
        let got = resolve_client_ip(Some(ip("10.0.0.1")), &xff, None, &trusted(&["10.0.0.0/8"]));
        assert_eq!(got, Some(ip("10.0.0.1")));
    }

    #[test]
    fn empty_forwarded_for_counts_as_absent() {
        assert_eq!(
            resolve("10.0.0.1:1", &[""], None, &["10.0.0.0/8"]),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            resolve("10.0.0.1:1", &[" , "], None, &["10.0.0.0/8"]),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            resolve("10.0.0.1:1", &[""], Some("198.51.100.7"), &["10.0.0.0/8"]),
            Some(ip("198.51.100.7"))
        );
    }

    #[test]
    fn ipv6_entries() {
        assert_eq!(
            resolve(
                "[2001:db8::1]:443",
                &["2001:db8:ffff::42, 2001:db8::2"],
                None,
                &["2001:db8::/64"]
            ),
            Some(ip("2001:db8:ffff::42"))
        );
        assert_eq!(
            resolve("[::1]:443", &["2001:DB8::0:42"], None, &["::1"]).map(|a| a.to_string()),
            Some("2001:db8::42".to_string())
        );
    }

    #[test]
    fn all_trusted_uses_leftmost() {
        assert_eq!(
            resolve("10.0.0.1:1", &["10.0.0.5, 10.0.0.6"], None, &["10.0.0.0/8"]),
            Some(ip("10.0.0.5"))
        );
    }

    #[test]
    fn real_ip_fallback() {
        assert_eq!(
            resolve("10.0.0.1:1", &[], Some("198.51.100.7"), &["10.0.0.0/8"]),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            resolve("10.0.0.1:1", &[], Some(" 198.51.100.7 "), &["10.0.0.0/8"]),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            resolve("10.0.0.1:1", &[], Some("not-an-ip"), &["10.0.0.0/8"]),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            resolve("10.0.0.1:1", &[], Some("198.51.100.7:80"), &["10.0.0.0/8"]),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            resolve("10.0.0.1:1", &[], None, &["10.0.0.0/8"]),
            Some(ip("10.0.0.1"))
        );
        // X-Forwarded-For, when present, wins over X-Real-IP.
        assert_eq!(
            resolve(
                "10.0.0.1:1",
                &["198.51.100.8"],
                Some("198.51.100.7"),
                &["10.0.0.0/8"]
            ),
            Some(ip("198.51.100.8"))
        );
    }

    #[test]
    fn real_ip_behind_envoy_that_appended_the_peer() {
        // Proxy 10.0.0.1 sent only X-Real-IP; Envoy (use_remote_address) appended 10.0.0.1.
        assert_eq!(
            resolve(
                "10.0.0.1:1",
                &["10.0.0.1"],
                Some("198.51.100.7"),
                &["10.0.0.0/8"]
            ),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            resolve("10.0.0.1:1", &["10.0.0.1"], Some("junk"), &["10.0.0.0/8"]),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            resolve("10.0.0.1:1", &["10.0.0.1"], None, &["10.0.0.0/8"]),
            Some(ip("10.0.0.1"))
        );
        // Any other hop in the list means X-Forwarded-For was really sent: it wins.
        assert_eq!(
            resolve(
                "10.0.0.1:1",
                &["10.0.0.2, 10.0.0.1"],
                Some("198.51.100.7"),
                &["10.0.0.0/8"]
            ),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(
            resolve(
                "10.0.0.1:1",
                &["198.51.100.8, 10.0.0.1"],
                Some("198.51.100.7"),
                &["10.0.0.0/8"]
            ),
            Some(ip("198.51.100.8"))
        );
        // Untrusted peers never get here.
        assert_eq!(
            resolve(
                "203.0.113.1:1",
                &["203.0.113.1"],
                Some("198.51.100.7"),
                &["10.0.0.0/8"]
            ),
            Some(ip("203.0.113.1"))
        );
    }

    #[test]
    fn ipv4_mapped_addresses_become_ipv4() {
        assert_eq!(
            resolve("[::ffff:10.0.0.1]:1", &[], None, &[]),
            Some(ip("10.0.0.1"))
        );
        // A mapped peer matches an IPv4 trusted block, and a mapped entry is reported as IPv4.
        assert_eq!(
            resolve(
                "[::ffff:10.0.0.1]:1",
                &["::ffff:198.51.100.7"],
                None,
                &["10.0.0.0/8"]
            ),
            Some(ip("198.51.100.7"))
        );
        // A mapped entry in trusted_proxies matches the IPv4 form.
        assert_eq!(
            resolve("10.0.0.1:1", &["198.51.100.7"], None, &["::ffff:10.0.0.1"]),
            Some(ip("198.51.100.7"))
        );
    }

    #[test]
    fn missing_or_unparseable_source() {
        let xff: [&[u8]; 1] = [b"198.51.100.7"];
        assert_eq!(
            resolve_client_ip(None, &xff, None, &trusted(&["0.0.0.0/0"])),
            None
        );
        assert_eq!(
            resolve("not an address", &["198.51.100.7"], None, &["0.0.0.0/0"]),
            None
        );
    }
}
