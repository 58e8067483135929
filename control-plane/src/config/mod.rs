//! Configuration: schema, parsing, validation, compiled lookups.
//!
//! Flow: [`parse_yaml`] / [`parse_json`] / [`load_file`] check syntax and types, then
//! [`CompiledConfig::compile`] validates ([`RateLimitConfig::validate`]) and builds the
//! read-only structure decisions use.
mod compiled;
mod demo;
mod error;
mod parse;
mod redact;
mod schema;
mod slots;
mod validate;
mod whitelist;
mod windows;

pub use compiled::{CompiledConfig, EndpointLimits, Tier, TierId, Window};
pub use demo::{DemoPolicy, DemoSecret, STRICT_VARIABLE, demo_admin_key, demo_secrets};
pub use error::ConfigError;
pub use parse::{MAX_CONFIG_BYTES, load_file, parse_json, parse_yaml, parse_yaml_bytes, read_file};
pub use redact::{REDACTED, redacted, restore_secrets};
pub use schema::*;
pub use slots::{MAX_SLOTS, MIN_SLOTS, default_precision_ms};
pub use validate::{MAX_EXACT_LOG_LIMIT, MAX_SLOTTED_LIMIT};
pub use windows::policy_name;

#[cfg(test)]
pub(crate) mod test_support;
