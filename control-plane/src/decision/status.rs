//! What the control plane knows about one identifier: its tier, whitelist state and every
//! counter of that tier, read from the store without recording anything.

use std::net::IpAddr;

use serde::Serialize;

use super::{Decider, budget_spec, ceil_secs, rule_spec};
use crate::identity;
use crate::store::StoreError;

/// One counter of an identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CounterStatus {
    /// `tier_budget`, or the endpoint rule (e.g. `/api/v1/admin/*`).
    pub counter: String,
    pub limit: u64,
    /// Requests counted in the current window.
    pub count: u64,
    pub remaining: u64,
    /// Unix time (s) when the oldest counted request leaves the window; absent when empty.
    pub reset: Option<u64>,
    pub window_seconds: u64,
}

/// What the control plane knows about an identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StatusReport {
    pub identifier: String,
    pub tier: String,
    pub whitelisted: bool,
    pub counters: Vec<CounterStatus>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("expected ip:<address>, key:<id> or user:<sub>")]
    InvalidIdentifier,
    #[error("no such tier")]
    UnknownTier,
    #[error("nothing is known about this identifier")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Longest identifier accepted: longer ones cannot be keys, users or addresses we track.
const MAX_IDENTIFIER_LEN: usize = 300;

/// Parses `ip:<addr>`, `key:<id>`, `user:<sub>`; IPs are made canonical.
fn parse_identifier(raw: &str) -> Option<(String, Option<IpAddr>)> {
    let (kind, rest) = raw.split_once(':')?;
    if rest.is_empty() || raw.len() > MAX_IDENTIFIER_LEN {
        return None;
    }
    match kind {
        "ip" => {
            let ip = identity::parse_client_ip(rest)?;
            Some((identity::ip_identifier(Some(ip)), Some(ip)))
        }
        "key" | "user" => Some((raw.to_string(), None)),
        _ => None,
    }
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
        let (identifier, ip) =
            parse_identifier(identifier).ok_or(StatusError::InvalidIdentifier)?;
        let cfg = self.config.load();
        let registered = identifier
            .strip_prefix("key:")
            .and_then(|id| cfg.tier_of_key_id(id));
        let tier_id = match tier {
            Some(name) => cfg.tier_by_name(name).ok_or(StatusError::UnknownTier)?,
            None => registered.unwrap_or_else(|| cfg.default_tier()),
        };
        let tier = cfg.tier(tier_id);
        let mut named = Vec::new();
        if let Some(spec) = budget_spec(&identifier, tier) {
            named.push(("tier_budget".to_string(), spec));
        }
        for (pattern, limit) in tier.rules.entries() {
            named.push((
                pattern.to_string(),
                rule_spec(&identifier, tier, pattern, limit),
            ));
        }
        let specs: Vec<_> = named.iter().map(|(_, spec)| spec.clone()).collect();
        let states = if specs.is_empty() {
            Vec::new()
        } else {
            self.store.peek(&identifier, &specs).await?.counters
        };
        let counters: Vec<CounterStatus> = named
            .into_iter()
            .zip(states)
            .map(|((name, spec), state)| CounterStatus {
                counter: name,
                limit: spec.limit,
                count: state.count,
                remaining: spec.limit.saturating_sub(state.count),
                reset: (state.count > 0).then(|| ceil_secs(state.free_at_us)),
                window_seconds: tier.window.as_secs(),
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
