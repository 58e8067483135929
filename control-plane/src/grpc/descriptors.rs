//! From a `ShouldRateLimit` call's descriptors to the evidence of one decision request: the
//! same fields the filter sends, so the same code path decides.
//!
//! Every descriptor of a call describes the same request: their entries are pooled, a key the
//! configuration names gives its evidence, any other key is ignored (and only its name is
//! reported: values carry keys and tokens).

use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use rl_wire::{DecisionRequest, MAX_METHOD_BYTES, MAX_PATH_BYTES};
use thiserror::Error;

use crate::config::{DescriptorKeys, RateLimitServiceConfig};

/// At most this many ignored key names are reported per call (the log line stays small).
pub const MAX_IGNORED_KEYS: usize = 8;

/// What one call asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub request: DecisionRequest,
    /// What the request costs: the largest `hits_addend` of the call (the request's, or a
    /// descriptor's own), 0 read as 1.
    pub cost: u64,
    /// Names of the entry keys no evidence is read from (at most [`MAX_IGNORED_KEYS`]).
    pub ignored_keys: Vec<String>,
}

/// A call that cannot be decided.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DescriptorError {
    #[error("domain {found:?} is not this service's domain {expected:?}")]
    WrongDomain { found: String, expected: String },
    #[error("no descriptors: nothing describes the request")]
    NoDescriptors,
    /// Two entries give one piece of evidence different values: the route's actions describe
    /// two requests, and picking one would decide on a guess.
    #[error("descriptor key {key:?} appears with two different values")]
    Conflict { key: String },
}

/// The evidence of `call` as `service` maps it.
pub fn evidence(
    service: &RateLimitServiceConfig,
    call: &RateLimitRequest,
) -> Result<Evidence, DescriptorError> {
    if call.domain != service.domain {
        return Err(DescriptorError::WrongDomain {
            found: call.domain.clone(),
            expected: service.domain.clone(),
        });
    }
    if call.descriptors.is_empty() {
        return Err(DescriptorError::NoDescriptors);
    }
    let keys = &service.descriptor_keys;
    let mut found = Found::default();
    let mut ignored_keys: Vec<String> = Vec::new();
    let mut cost = u64::from(call.hits_addend.max(1));
    for descriptor in &call.descriptors {
        if let Some(hits) = &descriptor.hits_addend {
            cost = cost.max(hits.value.max(1));
        }
        for entry in &descriptor.entries {
            match found.slot(keys, &entry.key) {
                Some(slot) => match slot {
                    Some(seen) if *seen != entry.value => {
                        return Err(DescriptorError::Conflict {
                            key: entry.key.clone(),
                        });
                    }
                    Some(_) => {}
                    None => *slot = Some(entry.value.clone()),
                },
                None => {
                    if ignored_keys.len() < MAX_IGNORED_KEYS && !ignored_keys.contains(&entry.key) {
                        ignored_keys.push(entry.key.clone());
                    }
                }
            }
        }
    }
    Ok(Evidence {
        request: DecisionRequest {
            ip: found.ip.unwrap_or_default(),
            api_key: found.api_key,
            authorization: found.authorization,
            method: found
                .method
                .map(|m| truncated(m, MAX_METHOD_BYTES))
                .unwrap_or_default(),
            path: found.path.map(|p| path_only(&p)).unwrap_or_default(),
        },
        cost,
        ignored_keys,
    })
}

#[derive(Default)]
struct Found {
    ip: Option<String>,
    api_key: Option<String>,
    authorization: Option<String>,
    path: Option<String>,
    method: Option<String>,
}

impl Found {
    /// Where the value of entry key `key` goes; `None` for a key no evidence comes from.
    fn slot(&mut self, keys: &DescriptorKeys, key: &str) -> Option<&mut Option<String>> {
        if key == keys.ip {
            Some(&mut self.ip)
        } else if key == keys.api_key {
            Some(&mut self.api_key)
        } else if key == keys.authorization {
            Some(&mut self.authorization)
        } else if key == keys.path {
            Some(&mut self.path)
        } else if key == keys.method {
            Some(&mut self.method)
        } else {
            None
        }
    }
}

/// The path as the filter sends it: query string and fragment dropped (Envoy's `:path`
/// carries them), at most [`MAX_PATH_BYTES`].
fn path_only(path: &str) -> String {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let path = &path[..end];
    truncated(path.to_string(), MAX_PATH_BYTES)
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncated(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests;
