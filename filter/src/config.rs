//! The plugin configuration: the JSON string in the Wasm filter's `configuration`.
//!
//! Field names are part of the product contract (users' Envoy configs must keep working), so
//! every field is checked by hand: an error names the exact field, and an unknown field is
//! refused instead of silently ignored (a typo such as `fail_opne` would otherwise change the
//! failure behaviour unnoticed).

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::client_ip::{IpNet, TrustedProxies};

/// Default `timeout_ms`: a decision normally takes about a millisecond; anything near this
/// bound means the control plane is in trouble and waiting longer only adds latency.
pub const DEFAULT_TIMEOUT_MS: u64 = 250;
/// Largest accepted `timeout_ms`.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Default `api_key_header`.
pub const DEFAULT_API_KEY_HEADER: &str = "x-api-key";
/// Default `charge_header`.
pub const DEFAULT_CHARGE_HEADER: &str = "x-ratelimit-charge";

const FIELDS: &[&str] = &[
    "cluster",
    "authority",
    "timeout_ms",
    "fail_open",
    "api_key_header",
    "trusted_proxies",
    "decision_secret",
    "benchmark_no_callout",
    "headers",
    "charge_header",
];

/// `headers` value of the `X-RateLimit-*` set.
pub const HEADERS_X_RATELIMIT: &str = "x-ratelimit";
/// `headers` value of the IETF `RateLimit` / `RateLimit-Policy` fields.
pub const HEADERS_IETF: &str = "ietf";

/// Which sets of rate-limit headers the filter sends (`headers`). Neither set ever goes on a
/// whitelisted, disabled or failed-open response, and `Retry-After` on the filter's own 429 is
/// not part of either: a client always learns when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSets {
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset`, `-Tier`.
    pub x_ratelimit: bool,
    /// `RateLimit-Policy` and `RateLimit` (structured fields).
    pub ietf: bool,
}

impl HeaderSets {
    pub const ALL: HeaderSets = HeaderSets {
        x_ratelimit: true,
        ietf: true,
    };
    pub const NONE: HeaderSets = HeaderSets {
        x_ratelimit: false,
        ietf: false,
    };
}

impl Default for HeaderSets {
    fn default() -> Self {
        HeaderSets::ALL
    }
}

/// Validated plugin configuration.
///
/// ```json
/// {"cluster": "rate_limit_control_plane", "timeout_ms": 250, "fail_open": true,
///  "api_key_header": "x-api-key", "trusted_proxies": ["10.0.0.0/8"],
///  "headers": ["x-ratelimit", "ietf"]}
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// `cluster` (required, non-empty): name of the Envoy cluster that reaches the control
    /// plane. Must match a cluster in the Envoy config exactly, otherwise every decision call
    /// fails and `fail_open` decides.
    pub cluster: String,
    /// `authority` (default: the cluster name): `:authority` of the decision call. Printable
    /// ASCII without spaces.
    pub authority: String,
    /// `timeout_ms` (default 250, 1..=60000): how long a request waits for its decision before
    /// `fail_open` applies.
    pub timeout: Duration,
    /// `fail_open` (default true): what to do when the control plane cannot answer
    /// (unreachable, timeout, non-200, unreadable answer). `true` lets the request through
    /// without rate-limit headers; `false` answers 503 with `Retry-After: 1`.
    pub fail_open: bool,
    /// `api_key_header` (default `x-api-key`): request header carrying the API key. Any valid
    /// HTTP header name; matched case-insensitively (stored lowercased).
    pub api_key_header: String,
    /// `trusted_proxies` (default empty): IPs or CIDR blocks (IPv4 and IPv6) of proxies in front
    /// of this Envoy. Only when the connection comes from one of them are `X-Forwarded-For` /
    /// `X-Real-IP` believed; with the default, forwarded headers are ignored entirely.
    pub trusted_proxies: TrustedProxies,
    /// `decision_secret` (optional, non-empty, printable ASCII): shared secret sent in
    /// `x-rate-limit-decision-secret` with every decision call, for control planes that set
    /// `RATE_LIMIT_DECISION_SECRET`.
    pub decision_secret: Option<String>,
    /// `benchmark_no_callout` (default false): a benchmarking aid, never for production. Every
    /// request is forwarded unchecked with fixed `X-RateLimit-*` headers
    /// ([`crate::engine::NO_CALLOUT_HEADERS`]) after its evidence was resolved as for a decision
    /// call, and no call is made: the load benchmark's floor of what the Wasm runtime costs.
    pub benchmark_no_callout: bool,
    /// `headers` (default `["x-ratelimit", "ietf"]`): the rate-limit header sets sent on a
    /// limited response, 429 included; `[]` sends none.
    pub headers: HeaderSets,
    /// `charge_header` (default `x-ratelimit-charge`): response header or trailer in which
    /// the upstream reports the units a response used, charged after the response when the
    /// request's endpoint rule has `max_charge`. Removed before the client sees the response.
    /// Any valid HTTP header name; stored lowercased.
    pub charge_header: String,
}

impl fmt::Debug for PluginConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginConfig")
            .field("cluster", &self.cluster)
            .field("authority", &self.authority)
            .field("timeout", &self.timeout)
            .field("fail_open", &self.fail_open)
            .field("api_key_header", &self.api_key_header)
            .field("trusted_proxies", &self.trusted_proxies)
            .field(
                "decision_secret",
                &self.decision_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("benchmark_no_callout", &self.benchmark_no_callout)
            .field("headers", &self.headers)
            .field("charge_header", &self.charge_header)
            .finish()
    }
}

/// Why a configuration was refused. `Display` names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The configuration is not JSON.
    Syntax(String),
    /// The configuration is JSON but not an object.
    NotAnObject,
    /// A field this filter does not know.
    UnknownField(String),
    /// A required field is absent.
    Missing(&'static str),
    /// A field has a wrong type or value.
    Invalid { field: String, reason: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Syntax(err) => write!(f, "configuration is not valid JSON: {err}"),
            ConfigError::NotAnObject => f.write_str("configuration must be a JSON object"),
            ConfigError::UnknownField(name) => write!(
                f,
                "field `{name}`: unknown field (known fields: {})",
                FIELDS.join(", ")
            ),
            ConfigError::Missing(name) => write!(f, "field `{name}`: is required"),
            ConfigError::Invalid { field, reason } => write!(f, "field `{field}`: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl PluginConfig {
    /// Parses and validates the plugin configuration. Empty (or all-whitespace) input is the
    /// empty object, which fails only because `cluster` is required.
    pub fn from_json(raw: &[u8]) -> Result<PluginConfig, ConfigError> {
        let value: Value = if raw.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(raw).map_err(|e| ConfigError::Syntax(e.to_string()))?
        };
        let Value::Object(map) = value else {
            return Err(ConfigError::NotAnObject);
        };
        if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(ConfigError::UnknownField(unknown.clone()));
        }

        let cluster = match map.get("cluster") {
            None => return Err(ConfigError::Missing("cluster")),
            Some(v) => string_field("cluster", v)?,
        };
        if cluster.trim().is_empty() {
            return Err(invalid("cluster", "must not be empty"));
        }

        let authority = match map.get("authority") {
            // The cluster name becomes the `:authority` header: it must be a valid one too.
            None if !cluster.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(invalid(
                    "cluster",
                    "is used as the decision call's :authority, so it must be printable \
                     ASCII without spaces (or set `authority`)",
                ));
            }
            None => cluster.clone(),
            Some(v) => {
                let authority = string_field("authority", v)?;
                if authority.is_empty() {
                    return Err(invalid("authority", "must not be empty"));
                }
                if !authority.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(invalid(
                        "authority",
                        "must be printable ASCII without spaces",
                    ));
                }
                authority
            }
        };

        let timeout_ms = match map.get("timeout_ms") {
            None => DEFAULT_TIMEOUT_MS,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=MAX_TIMEOUT_MS).contains(&n) => n,
                _ => {
                    return Err(invalid(
                        "timeout_ms",
                        format!(
                            "must be an integer between 1 and {MAX_TIMEOUT_MS}, got {}",
                            describe(v)
                        ),
                    ));
                }
            },
        };

        let fail_open = match map.get("fail_open") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(invalid(
                    "fail_open",
                    format!("must be true or false, got {}", describe(v)),
                ));
            }
        };

        let api_key_header = match map.get("api_key_header") {
            None => DEFAULT_API_KEY_HEADER.to_string(),
            Some(v) => {
                let name = string_field("api_key_header", v)?;
                if name.is_empty() || !name.bytes().all(is_tchar) {
                    return Err(invalid(
                        "api_key_header",
                        format!("{name:?} is not a valid HTTP header name"),
                    ));
                }
                name.to_ascii_lowercase()
            }
        };

        let trusted_proxies = match map.get("trusted_proxies") {
            None => TrustedProxies::default(),
            Some(Value::Array(items)) => {
                let mut nets = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let field = format!("trusted_proxies[{i}]");
                    let Value::String(text) = item else {
                        return Err(invalid(
                            field,
                            format!("must be a string, got {}", describe(item)),
                        ));
                    };
                    nets.push(IpNet::parse(text).map_err(|e| invalid(field, e.to_string()))?);
                }
                TrustedProxies::new(nets)
            }
            Some(v) => {
                return Err(invalid(
                    "trusted_proxies",
                    format!("must be a list of IPs or CIDR blocks, got {}", describe(v)),
                ));
            }
        };

        let decision_secret = match map.get("decision_secret") {
            None => None,
            Some(v) => {
                let secret = string_field("decision_secret", v)?;
                if secret.is_empty() {
                    return Err(invalid("decision_secret", "must not be empty"));
                }
                // Leading/trailing blanks would be stripped in transit and never match.
                let printable = secret.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
                if !printable || secret.trim() != secret {
                    return Err(invalid(
                        "decision_secret",
                        "must be printable ASCII without leading or trailing spaces",
                    ));
                }
                Some(secret)
            }
        };

        let benchmark_no_callout = match map.get("benchmark_no_callout") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(invalid(
                    "benchmark_no_callout",
                    format!("must be true or false, got {}", describe(v)),
                ));
            }
        };

        let headers = match map.get("headers") {
            None => HeaderSets::default(),
            Some(v) => header_sets(v)?,
        };

        let charge_header = match map.get("charge_header") {
            None => DEFAULT_CHARGE_HEADER.to_string(),
            Some(v) => {
                let name = string_field("charge_header", v)?;
                if name.is_empty() || !name.bytes().all(is_tchar) {
                    return Err(invalid(
                        "charge_header",
                        format!("{name:?} is not a valid HTTP header name"),
                    ));
                }
                name.to_ascii_lowercase()
            }
        };

        Ok(PluginConfig {
            cluster,
            authority,
            timeout: Duration::from_millis(timeout_ms),
            fail_open,
            api_key_header,
            trusted_proxies,
            decision_secret,
            benchmark_no_callout,
            headers,
            charge_header,
        })
    }
}

/// `headers`: a list of set names, each at most once.
fn header_sets(value: &Value) -> Result<HeaderSets, ConfigError> {
    let Value::Array(items) = value else {
        return Err(invalid(
            "headers",
            format!(
                "must be a list of \"{HEADERS_X_RATELIMIT}\" and/or \"{HEADERS_IETF}\", got {}",
                describe(value)
            ),
        ));
    };
    let mut sets = HeaderSets::NONE;
    for (i, item) in items.iter().enumerate() {
        let field = format!("headers[{i}]");
        let Value::String(name) = item else {
            return Err(invalid(
                field,
                format!("must be a string, got {}", describe(item)),
            ));
        };
        let slot = match name.as_str() {
            HEADERS_X_RATELIMIT => &mut sets.x_ratelimit,
            HEADERS_IETF => &mut sets.ietf,
            _ => {
                return Err(invalid(
                    field,
                    format!(
                        "unknown header set {name:?} (known: \"{HEADERS_X_RATELIMIT}\", \"{HEADERS_IETF}\")"
                    ),
                ));
            }
        };
        if *slot {
            return Err(invalid(field, format!("{name:?} is listed twice")));
        }
        *slot = true;
    }
    Ok(sets)
}

fn string_field(field: &str, value: &Value) -> Result<String, ConfigError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(invalid(
            field,
            format!("must be a string, got {}", describe(other)),
        )),
    }
}

/// A JSON value for an error message. Integers are shown; other values only by kind, which
/// keeps float formatting (and a long echoed value) out of the module.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.to_string(),
            (None, Some(i)) => i.to_string(),
            _ => "a non-integer number".into(),
        },
        Value::String(_) => "a string".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// RFC 9110 `tchar`: the characters of a header name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests;
