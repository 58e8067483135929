//! Whitelist entries (FR-015 in docs/PRODUCT.md): IPs, CIDR ranges and identifier forms.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

/// Longest accepted `key:<id>` / `user:<sub>` value; identifiers end up in Redis keys and logs.
const MAX_IDENTIFIER_CHARS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WhitelistEntry {
    Ip(IpAddr),
    /// Host bits are cleared (`10.1.2.3/8` → `10.0.0.0/8`): the prefix length states the
    /// intent, and rejecting a common way of writing a range would only annoy.
    Net(IpNet),
    Key(String),
    User(String),
}

/// Parses one whitelist entry; `Err` is the message for `whitelist[i]`.
pub(crate) fn parse_entry(entry: &str) -> Result<WhitelistEntry, String> {
    if let Some(addr) = entry.strip_prefix("ip:") {
        // `ip:<network>/<len>` is how a grouped IPv6 client is named: a range like any other.
        if addr.contains('/') {
            return parse_net(addr).ok_or_else(|| {
                format!("{entry:?} is not a valid ip:<network>/<len> (e.g. ip:2001:db8:1:2::/64)")
            });
        }
        return addr
            .parse::<IpAddr>()
            .map(|ip| WhitelistEntry::Ip(ip.to_canonical()))
            .map_err(|_| format!("{entry:?} is not a valid ip:<address> (IPv4 or IPv6)"));
    }
    if let Some(id) = entry.strip_prefix("key:") {
        return check_identifier(entry, id).map(|()| WhitelistEntry::Key(id.to_string()));
    }
    if let Some(sub) = entry.strip_prefix("user:") {
        return check_identifier(entry, sub).map(|()| WhitelistEntry::User(sub.to_string()));
    }
    if entry.contains('/') {
        return parse_net(entry)
            .ok_or_else(|| format!("{entry:?} is not a valid CIDR range (e.g. 10.0.0.0/8)"));
    }
    entry
        .parse::<IpAddr>()
        .map(|ip| WhitelistEntry::Ip(ip.to_canonical()))
        .map_err(|_| {
            format!(
                "{entry:?} is not an IP address, a CIDR range, ip:<address>, key:<id> or user:<sub>"
            )
        })
}

fn parse_net(text: &str) -> Option<WhitelistEntry> {
    text.parse::<IpNet>()
        .ok()
        .map(|net| WhitelistEntry::Net(canonical_net(net.trunc())))
}

fn check_identifier(entry: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{entry:?} has an empty identifier"));
    }
    if value.chars().count() > MAX_IDENTIFIER_CHARS {
        return Err(format!(
            "identifier is longer than {MAX_IDENTIFIER_CHARS} characters"
        ));
    }
    Ok(())
}

/// An IPv4-mapped IPv6 range (`::ffff:10.0.0.0/104`) is stored as the IPv4 range it denotes,
/// because client addresses are canonicalised the same way before matching.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Some(len) = v6.prefix_len().checked_sub(96)
        && let Ok(v4net) = ipnet::Ipv4Net::new(v4, len)
    {
        return IpNet::V4(v4net);
    }
    net
}

/// The compiled whitelist: set lookups for addresses and identifiers, a scan for ranges.
#[derive(Debug, Clone, Default)]
pub(crate) struct Whitelist {
    ips: HashSet<IpAddr>,
    nets: Vec<IpNet>,
    keys: HashSet<String>,
    users: HashSet<String>,
}

impl Whitelist {
    pub(crate) fn insert(&mut self, entry: WhitelistEntry) {
        match entry {
            WhitelistEntry::Ip(ip) => {
                self.ips.insert(ip);
            }
            WhitelistEntry::Net(net) => {
                if !self.nets.contains(&net) {
                    self.nets.push(net);
                }
            }
            WhitelistEntry::Key(id) => {
                self.keys.insert(id);
            }
            WhitelistEntry::User(sub) => {
                self.users.insert(sub);
            }
        }
    }

    pub(crate) fn contains_ip(&self, ip: IpAddr) -> bool {
        // A dual-stack listener reports IPv4 clients as `::ffff:a.b.c.d`; entries are IPv4.
        let ip = ip.to_canonical();
        self.ips.contains(&ip) || self.nets.iter().any(|net| net.contains(&ip))
    }

    pub(crate) fn contains_identity(&self, identity: &str) -> bool {
        if let Some(addr) = identity.strip_prefix("ip:") {
            if addr.contains('/') {
                // A group of IPv6 clients: whitelisted when a range covers all of it.
                return addr.parse::<IpNet>().is_ok_and(|group| {
                    let group = canonical_net(group.trunc());
                    self.nets.iter().any(|net| net.contains(&group))
                });
            }
            return addr.parse::<IpAddr>().is_ok_and(|ip| self.contains_ip(ip));
        }
        if let Some(id) = identity.strip_prefix("key:") {
            return self.keys.contains(id);
        }
        if let Some(sub) = identity.strip_prefix("user:") {
            return self.users.contains(sub);
        }
        false
    }
}

#[cfg(test)]
mod tests;
