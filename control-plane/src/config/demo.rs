//! The demo secrets this repository ships, recognised wherever they turn up.
//!
//! The sample configuration (`rate_limit_config.yaml`, also mounted by `docker-compose.yml`)
//! carries an HS256 secret and three API keys, and `scripts/run-stack.sh` and
//! `docker-compose.yml` default the admin key: all public, so anyone can sign tokens, use the
//! keys or change the configuration where they are left in place. They are known here by
//! their SHA-256 only, so this code does not ship them a second time.
//!
//! By default the control plane names each one in a warning (at start, and when a change
//! brings one in); in strict mode (`RATE_LIMIT_STRICT`) it refuses them.

use sha2::{Digest, Sha256};

use super::error::ConfigError;
use super::schema::RateLimitConfig;
use super::validate::key_digest;

/// SHA-256 of the sample configuration's `jwt.hs256_secret`.
const DEMO_HS256_SECRETS: [&str; 1] =
    ["78cba0260262651d82575bd1ede033420e41a45894a5f38a9063418565b0ee33"];

/// SHA-256 of the sample configuration's API keys (`demo-premium`, `demo-enterprise`,
/// `demo-unlimited`): their `key_sha256` values.
const DEMO_API_KEYS: [&str; 3] = [
    "e9e7c5fd830cf914f3963b22814a48ed5bb56f821d184651c54720c06a4c12dd",
    "5d54836bb6f683ed664816c03f122629d735134d45210afbc1060604160aa22c",
    "69b1f4c5d7b9a25bcfabeb24a562b5afb185930416c2aa1f0a6dd357427ed173",
];

/// SHA-256 of the admin key `scripts/run-stack.sh` and `docker-compose.yml` default to.
const DEMO_ADMIN_KEYS: [&str; 1] =
    ["c14d7bdecf2188289bf9d4365a650f7fdd6f26d9f1656d412eb47b8176e320ed"];

/// What the control plane does when it meets a demo secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoPolicy {
    /// Run, naming each demo secret in a warning.
    Warn,
    /// Strict mode: refuse to start with one, refuse a change that brings one in.
    Refuse,
}

/// The setting that turns [`DemoPolicy::Refuse`] on.
pub const STRICT_VARIABLE: &str = "RATE_LIMIT_STRICT";

/// A demo secret found in a configuration or a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSecret {
    /// Where it is: a configuration field path (`jwt.hs256_secret`, `api_keys[0].key`) or a
    /// setting (`RATE_LIMIT_ADMIN_API_KEY`).
    pub field: String,
    /// What it is, for messages.
    pub what: &'static str,
}

impl DemoSecret {
    /// The warning's text (the secret itself is never part of it).
    pub fn warning(&self) -> String {
        format!(
            "DEMO SECRET IN USE: {} is {}, published with this repository: anyone can use it. \
             Replace it; {STRICT_VARIABLE}=1 refuses to start with demo secrets",
            self.field, self.what
        )
    }

    /// Strict mode's refusal, as a configuration error at the field.
    pub fn refusal(&self) -> ConfigError {
        ConfigError::invalid(
            &self.field,
            format!(
                "is {}, published with this repository; strict mode ({STRICT_VARIABLE}) \
                 refuses demo secrets: set your own",
                self.what
            ),
        )
    }

    /// Logs [`warning`](Self::warning) as a WARN line with `event: demo_secret` and the field.
    pub fn warn(&self) {
        tracing::warn!(event = "demo_secret", field = %self.field, "{}", self.warning());
    }
}

fn is_listed(digest: &[u8], list: &[&str]) -> bool {
    let digest = hex::encode(digest);
    list.iter().any(|d| *d == digest)
}

/// Every demo secret in `cfg`, in document order.
pub fn demo_secrets(cfg: &RateLimitConfig) -> Vec<DemoSecret> {
    let mut found = Vec::new();
    for (i, key) in cfg.api_keys.iter().enumerate() {
        let at = format!("api_keys[{i}]");
        // A malformed entry is validation's business; it holds no usable key.
        if let Ok((field, digest)) = key_digest(&at, key)
            && is_listed(&digest, &DEMO_API_KEYS)
        {
            found.push(DemoSecret {
                field: format!("{at}.{field}"),
                what: "a demo API key of the sample configuration",
            });
        }
    }
    if let Some(secret) = cfg.jwt.as_ref().and_then(|j| j.hs256_secret.as_deref())
        && is_listed(&Sha256::digest(secret.as_bytes()), &DEMO_HS256_SECRETS)
    {
        found.push(DemoSecret {
            field: "jwt.hs256_secret".to_string(),
            what: "the demo HS256 secret of the sample configuration (anyone can sign tokens \
                   for any user and tier)",
        });
    }
    found
}

/// The demo admin key, when `digest` (SHA-256 of the configured admin key) is it.
pub fn demo_admin_key(digest: &[u8; 32]) -> Option<DemoSecret> {
    is_listed(digest, &DEMO_ADMIN_KEYS).then(|| DemoSecret {
        field: "RATE_LIMIT_ADMIN_API_KEY".to_string(),
        what: "the demo admin key of scripts/run-stack.sh and docker-compose.yml (anyone can \
               read and replace the configuration)",
    })
}

#[cfg(test)]
mod tests;
