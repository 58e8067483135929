//! Who is asking: turns the filter's evidence into an identifier and a tier.
//!
//! Order: a registered API key, then a verified JWT, then the client IP. Evidence that proves
//! nothing — an unknown key, a forged or expired token, a malformed header — never mints a
//! fresh budget: such requests are counted as their client IP under the default tier.

use std::net::{IpAddr, Ipv6Addr};

use crate::config::{CompiledConfig, TierId};

/// Where an identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    ApiKey,
    Jwt,
    ClientIp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `key:<id>`, `user:<sub>`, `ip:<address>` or, for IPv6 clients, `ip:<network>/<len>`
    /// (never a raw key or token).
    pub id: String,
    pub tier: TierId,
    pub source: IdentitySource,
}

/// Longest textual IP the filter can send (an IPv6 address with an IPv4 tail is 45 chars).
const MAX_IP_LEN: usize = 64;

/// Parses the filter's client IP; IPv4-mapped IPv6 addresses become IPv4 so one client has
/// one identifier whichever way it connected.
pub fn parse_client_ip(raw: &str) -> Option<IpAddr> {
    if raw.len() > MAX_IP_LEN {
        return None;
    }
    raw.trim()
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The identifier of a client address: `ip:<address>` for IPv4 (IPv4-mapped addresses are
/// IPv4 by then, see [`parse_client_ip`]); for IPv6, the network of its first
/// `ipv6_prefix_length` bits, `ip:<network>/<len>` (`ip:2001:db8:1:2::/64`), because whoever
/// holds a network can send from any address in it. With 128 an IPv6 address is its own
/// identity, written as an address. Clients without a usable address share `ip:unknown`.
pub fn ip_identifier(ip: Option<IpAddr>, ipv6_prefix_length: u8) -> String {
    match ip {
        Some(IpAddr::V6(v6)) if ipv6_prefix_length < 128 => {
            // The network's bits: the first `ipv6_prefix_length` (the guard keeps the shift
            // below 128).
            let host_bits = u128::MAX >> ipv6_prefix_length;
            let network = Ipv6Addr::from(u128::from(v6) & !host_bits);
            format!("ip:{network}/{ipv6_prefix_length}")
        }
        Some(ip) => format!("ip:{ip}"),
        None => "ip:unknown".to_string(),
    }
}

pub fn resolve(
    cfg: &CompiledConfig,
    ip: Option<IpAddr>,
    api_key: Option<&str>,
    authorization: Option<&str>,
) -> Identity {
    if let Some((id, tier)) = api_key.and_then(|k| cfg.lookup_api_key(k.as_bytes())) {
        return Identity {
            id: format!("key:{id}"),
            tier,
            source: IdentitySource::ApiKey,
        };
    }
    let verified = authorization
        .zip(cfg.jwt())
        .and_then(|(a, jwt)| jwt.verify(a));
    if let Some(token) = verified {
        // A tier claim naming no configured tier is ignored, not an error: the token is
        // still a verified user, limited under the default tier.
        let tier = token
            .tier
            .as_deref()
            .and_then(|name| cfg.tier_by_name(name))
            .unwrap_or_else(|| cfg.default_tier());
        return Identity {
            id: format!("user:{}", token.user),
            tier,
            source: IdentitySource::Jwt,
        };
    }
    Identity {
        id: ip_identifier(ip, cfg.ipv6_prefix_length()),
        tier: cfg.default_tier(),
        source: IdentitySource::ClientIp,
    }
}

#[cfg(test)]
mod tests;
