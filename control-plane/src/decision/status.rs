//! What the control plane knows about one identifier: its tier, whitelist state and every
//! counter of that tier, read from the store without recording anything.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::answer::ceil_secs;
use super::{Decider, budget_spec, rule_spec};
use crate::config::CounterAlgorithm;
use crate::identity;
use crate::store::{Algorithm, StoreError};

/// One window of one counter of an identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CounterStatus {
    /// `tier_budget`, or the endpoint rule (e.g. `/api/v1/admin/*`).
    pub counter: String,
    /// The window's name in the `RateLimit-Policy` field (`free-60s`,
    /// `free-/api/v1/search-1s`).
    pub policy: String,
    /// Counted and reported, but a full one refuses nothing.
    pub shadow: bool,
    pub limit: u64,
    /// Requests counted in the current window.
    pub count: u64,
    pub remaining: u64,
    /// Unix time (s) when the oldest counted request leaves the window; absent when empty.
    pub reset: Option<u64>,
    pub window_seconds: u64,
    /// How the window is counted (`exact` or `slotted`).
    pub algorithm: CounterAlgorithm,
    /// The slot of a slotted window, in ms; absent for an exact one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision_ms: Option<u64>,
}

/// What the control plane knows about an identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StatusReport {
    pub identifier: String,
    pub tier: String,
    pub whitelisted: bool,
    /// Every window of the tier, then every window of each endpoint rule, in configuration
    /// order.
    pub counters: Vec<CounterStatus>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("expected ip:<address>, ip:<network>/<len>, key:<id> or user:<sub>")]
    InvalidIdentifier,
    /// An `ip:<network>/<len>` that is not a group clients are counted as.
    #[error("{0}")]
    NotAGroup(String),
    #[error("no such tier")]
    UnknownTier,
    #[error("nothing is known about this identifier")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Longest identifier accepted: longer ones cannot be keys, users or addresses we track.
const MAX_IDENTIFIER_LEN: usize = 300;

/// Parses `ip:<addr>`, `ip:<network>/<len>`, `key:<id>`, `user:<sub>` into the identifier
/// counters are kept under and, for a single address, that address (for the whitelist). An
/// IPv6 address names the group it is counted in, so an operator can ask with the address a
/// client reported.
fn parse_identifier(
    raw: &str,
    ipv6_prefix_length: u8,
) -> Result<(String, Option<IpAddr>), StatusError> {
    let (kind, rest) = raw.split_once(':').ok_or(StatusError::InvalidIdentifier)?;
    if rest.is_empty() || raw.len() > MAX_IDENTIFIER_LEN {
        return Err(StatusError::InvalidIdentifier);
    }
    match kind {
        "ip" if rest.contains('/') => parse_group(rest, ipv6_prefix_length),
        "ip" => {
            let ip = identity::parse_client_ip(rest).ok_or(StatusError::InvalidIdentifier)?;
            Ok((
                identity::ip_identifier(Some(ip), ipv6_prefix_length),
                Some(ip),
            ))
        }
        "key" | "user" => Ok((raw.to_string(), None)),
        _ => Err(StatusError::InvalidIdentifier),
    }
}

/// `<network>/<len>`: accepted when it is how IPv6 clients are grouped (host bits may be set).
fn parse_group(
    text: &str,
    ipv6_prefix_length: u8,
) -> Result<(String, Option<IpAddr>), StatusError> {
    let net = text
        .parse::<IpNet>()
        .map_err(|_| StatusError::InvalidIdentifier)?;
    let ipv4 =
        || StatusError::NotAGroup("IPv4 clients are not grouped: ask for ip:<address>".into());
    let IpNet::V6(net) = net else {
        return Err(ipv4());
    };
    let net = net.trunc();
    if net.addr().to_ipv4_mapped().is_some() {
        return Err(ipv4());
    }
    if net.prefix_len() != ipv6_prefix_length {
        return Err(StatusError::NotAGroup(format!(
            "IPv6 clients are counted by /{ipv6_prefix_length} (ipv6_prefix_length): ask for \
             ip:<address> or ip:<network>/{ipv6_prefix_length}"
        )));
    }
    let ip = IpAddr::V6(net.addr());
    let single = (ipv6_prefix_length == 128).then_some(ip);
    Ok((
        identity::ip_identifier(Some(ip), ipv6_prefix_length),
        single,
    ))
}

impl Decider {
    /// The counters of `identifier` under its tier (a registered key's own, else the default
    /// tier) or under `tier` when given: the tier of a JWT user is only known from its token.
    /// [`StatusError::NotFound`] when nothing is counted and the identifier is neither a
    /// registered key nor whitelisted.
    pub async fn status(
        &self,
        identifier: &str,
        tier: Option<&str>,
    ) -> Result<StatusReport, StatusError> {
        let cfg = self.config.load();
        let (identifier, ip) = parse_identifier(identifier, cfg.ipv6_prefix_length())?;
        let registered = identifier
            .strip_prefix("key:")
            .and_then(|id| cfg.tier_of_key_id(id));
        let tier_id = match tier {
            Some(name) => cfg.tier_by_name(name).ok_or(StatusError::UnknownTier)?,
            None => registered.unwrap_or_else(|| cfg.default_tier()),
        };
        let tier = cfg.tier(tier_id);
        let mut named = Vec::new();
        for window in &tier.windows {
            named.push(("tier_budget", window, budget_spec(&identifier, window)));
        }
        for (pattern, windows) in tier.rules.entries() {
            for window in windows {
                named.push((pattern, window, rule_spec(&identifier, pattern, window)));
            }
        }
        let specs: Vec<_> = named.iter().map(|(_, _, spec)| spec.clone()).collect();
        let states = if specs.is_empty() {
            Vec::new()
        } else {
            self.store.peek(&identifier, &specs).await?.counters
        };
        let counters: Vec<CounterStatus> = named
            .into_iter()
            .zip(states)
            .map(|((name, window, spec), state)| {
                let (algorithm, precision_ms) = match window.algorithm {
                    Algorithm::Exact => (CounterAlgorithm::ExactLog, None),
                    Algorithm::Slotted { slot_us } => {
                        (CounterAlgorithm::Slotted, Some(slot_us / 1_000))
                    }
                };
                CounterStatus {
                    counter: name.to_string(),
                    policy: window.policy.clone(),
                    shadow: window.shadow,
                    limit: spec.limit,
                    count: state.count,
                    remaining: spec.limit.saturating_sub(state.count),
                    reset: (state.count > 0).then(|| ceil_secs(state.free_at_us)),
                    window_seconds: window.length.as_secs(),
                    algorithm,
                    precision_ms,
                }
            })
            .collect();
        let whitelisted = cfg.is_whitelisted(ip, &identifier);
        let active = counters.iter().any(|c| c.count > 0);
        if !active && registered.is_none() && !whitelisted {
            return Err(StatusError::NotFound);
        }
        Ok(StatusReport {
            identifier,
            tier: tier.name.clone(),
            whitelisted,
            counters,
        })
    }
}

#[cfg(test)]
mod tests;
