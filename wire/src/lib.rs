//! The contract between the Envoy filter and the control plane: the decision call, the bounds
//! on the evidence it carries, the JSON error body both sides answer with, and what a client
//! sees of a decision ([`headers`], [`ietf_fields`]), shared by the filter and the control
//! plane's gRPC service.
//!
//! Both sides depend on this crate so the JSON shape and the bounds cannot drift. It is kept free of
//! tokio/axum so it builds for `wasm32-wasip1`. Optional fields are omitted from the JSON
//! when absent to keep the bodies small: a typical allow answer is ~120 bytes.

use serde::{Deserialize, Serialize};

pub mod headers;
pub mod ietf_fields;

/// Path of the internal decision endpoint on the control plane.
pub const DECISION_PATH: &str = "/internal/v1/decision";

/// Header carrying the optional shared secret the filter sends with every decision call
/// (`decision_secret` in the plugin config, `RATE_LIMIT_DECISION_SECRET` on the control plane).
pub const DECISION_SECRET_HEADER: &str = "x-rate-limit-decision-secret";

/// Upper bound the control plane enforces on a decision request body.
pub const MAX_DECISION_REQUEST_BYTES: usize = 16 * 1024;

/// Path of the batch decision endpoint: several requests decided in one call, in order. The
/// filter uses it when decision calls from one worker pile up (see the filter's `batch`).
pub const BATCH_DECISION_PATH: &str = "/internal/v1/decisions";

/// Most requests in one batch call; the control plane refuses more.
pub const MAX_BATCH_DECISIONS: usize = 64;

/// Upper bound the control plane enforces on a batch request body. A batch always has room
/// for one request of the largest size.
pub const MAX_BATCH_REQUEST_BYTES: usize = 256 * 1024;

/// Path of the lease endpoint: the filter renews and releases the concurrency leases of its
/// requests in flight (a tier's `max_concurrent`), batched, from its root context.
pub const LEASES_PATH: &str = "/internal/v1/leases";

/// Most lease ids one lease call names, renewals and releases together; the control plane
/// refuses more.
pub const MAX_LEASES_PER_CALL: usize = 256;

/// Longest lease id the control plane hands out; a longer one in a lease call is refused.
pub const MAX_LEASE_ID_BYTES: usize = 512;

/// Upper bound the control plane enforces on a lease call's body: room for the most ids of the
/// longest length, quoted and separated.
pub const MAX_LEASES_REQUEST_BYTES: usize = MAX_LEASES_PER_CALL * (MAX_LEASE_ID_BYTES + 8) + 1024;

/// Path of the usage endpoint: after a response, the filter charges the units the upstream
/// reported (the charge header) and releases the units of rules that count only some
/// responses, batched, from its root context.
pub const USAGE_PATH: &str = "/internal/v1/usage";

/// Most items one usage call carries; the control plane refuses more.
pub const MAX_USAGE_PER_CALL: usize = 256;

/// Longest usage handle the control plane hands out; a longer one in a usage call is refused.
pub const MAX_USAGE_HANDLE_BYTES: usize = 1024;

/// Upper bound the control plane enforces on a usage call's body: room for the most items of
/// the longest handle, quoted and escaped, with their amounts.
pub const MAX_USAGE_REQUEST_BYTES: usize =
    MAX_USAGE_PER_CALL * (2 * MAX_USAGE_HANDLE_BYTES + 64) + 1024;

/// Longest API key the filter forwards and the control plane looks up: a longer value cannot
/// be a registered key, and the request is judged by its other evidence.
pub const MAX_API_KEY_BYTES: usize = 1024;

/// Longest `Authorization` value the filter forwards and the control plane reads: a longer
/// value is not a token the control plane would accept.
pub const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

/// The filter cuts the request path to this many bytes (on a character boundary).
pub const MAX_PATH_BYTES: usize = 4096;

/// Longest method the filter forwards; no real method comes near it.
pub const MAX_METHOD_BYTES: usize = 64;

// The evidence, unescaped, always fits one decision request body.
const _: () = assert!(
    MAX_API_KEY_BYTES + MAX_AUTHORIZATION_BYTES + MAX_PATH_BYTES + MAX_METHOD_BYTES + 1024
        < MAX_DECISION_REQUEST_BYTES
);

/// Several decision requests, decided one after the other in this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchDecisionRequest {
    pub requests: Vec<DecisionRequest>,
    /// Requests the filter denied itself (from an earlier `deny_for_ms`) since its last
    /// report, so the control plane's totals still count every decision. Added after the
    /// first release: absent from older filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_denials: Vec<LocalDenials>,
}

/// How many requests the filter denied itself for one (tier, endpoint, policy), as the cached
/// answer named them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LocalDenials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The binding counter's `endpoint` in the cached answer.
    #[serde(default)]
    pub endpoint: String,
    /// The binding window's policy name in the cached answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    pub count: u64,
}

/// One answer per request of a [`BatchDecisionRequest`], in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchDecisionResponse {
    pub responses: Vec<DecisionResponse>,
}

/// What the filter knows about a request. The filter resolves the client IP (it alone knows
/// the connection and `trusted_proxies`); everything else is passed through for the control
/// plane to judge, so identity rules live in one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecisionRequest {
    /// Client IP as resolved by the filter; empty when the host did not provide one.
    #[serde(default)]
    pub ip: String,
    /// Raw value of the API key header, if present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Raw value of the `Authorization` header, if present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    #[serde(default)]
    pub method: String,
    /// The request's `:path` (the filter drops the query string and bounds the length); the
    /// control plane normalises it.
    #[serde(default)]
    pub path: String,
}

/// Outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Admitted and counted; the rate-limit headers describe the binding counter.
    Allow,
    /// Over a limit: the filter answers 429.
    Deny,
    /// The counter store failed and the control plane's `fail_open` is false: the filter
    /// answers 503 with `Retry-After: 1`.
    Unavailable,
    /// Whitelisted identity or address: admitted, not counted, no headers.
    Whitelisted,
    /// Rate limiting is switched off (`enabled: false`): admitted without headers.
    Disabled,
    /// The counter store failed and `fail_open` is true: admitted without headers.
    FailedOpen,
}

impl Verdict {
    /// Whether the request goes on to the upstream.
    pub fn admits(self) -> bool {
        !matches!(self, Verdict::Deny | Verdict::Unavailable)
    }
}

/// The control plane's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecisionResponse {
    pub verdict: Verdict,
    /// Tier the request was judged under (absent for whitelisted / disabled / failed-open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The binding counter; absent when no counter applies (unlimited tier without an
    /// endpoint rule) or no counter was consulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<CounterReport>,
    /// Every window that applied to the request (the tier's, then the endpoint rule's), for
    /// the `RateLimit-Policy` field. Empty when no counter applied. Added after the first
    /// release: a filter that does not know it ignores it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyReport>,
    /// Set on an allowed answer when a shadowed window had no room: an enforced limit would
    /// have denied the request. There is no verdict of its own, so a filter that does not know
    /// the flag simply admits (what shadow mode wants).
    #[serde(default, skip_serializing_if = "is_false")]
    pub shadow_denied: bool,
    /// On a denial: for at least this many milliseconds from now the binding counter stays
    /// full, so the same request (the same evidence, method and path) would be denied again.
    /// The filter may answer such requests itself until then (at most 1 s, its own clock).
    /// Absent when the denial cannot be cached (e.g. a shadowed window). Added after the
    /// first release: a filter that does not know it asks every time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_for_ms: Option<u64>,
    /// On an admitted request of a tier with `max_concurrent`: the concurrency slot it holds.
    /// The filter renews it while the request is in flight and releases it when the request
    /// ends (`LEASES_PATH`); left alone, it expires after `ttl_ms`. Added after the first
    /// release: a filter that does not know it leaves the slot to expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// On an admitted request whose endpoint rule takes charges after the response
    /// (`max_charge`) or counts only some responses (`count_statuses`): what the filter
    /// reports after the response ([`USAGE_PATH`]). Added after the first release: a filter
    /// that does not know it charges nothing and releases nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// What an admitted request may report after its response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    /// Opaque to the filter; at most `MAX_USAGE_HANDLE_BYTES` bytes. Sent back as it is.
    pub handle: String,
    /// Most units one response may charge (the rule's `max_charge`); absent: the rule takes
    /// no charges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_charge: Option<u64>,
    /// Response statuses that keep the unit taken at admission; after any other status, or
    /// when the stream ends without a response, the filter releases it. Empty: every
    /// response counts (nothing to release).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub count_statuses: Vec<u16>,
}

/// Body of a usage call: charges and releases, at most `MAX_USAGE_PER_CALL` items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageRequest {
    pub items: Vec<UsageItem>,
}

/// What happened to one admitted request after its response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageItem {
    /// The answer's [`Usage::handle`].
    pub handle: String,
    /// Units to add to the request's counters at the time of the call (the upstream's charge,
    /// clamped to `max_charge`). 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub charge: u64,
    /// Give back the unit taken at admission (the response did not count).
    #[serde(default, skip_serializing_if = "is_false")]
    pub release: bool,
}

/// Answer to a usage call: units charged and units released (a release whose entry has left
/// the window, or that was applied before, releases nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageResponse {
    pub charged: u64,
    pub released: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A concurrency slot held by one admitted request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lease {
    /// Opaque to the filter; at most `MAX_LEASE_ID_BYTES` bytes.
    pub id: String,
    /// How long the slot is held without a renewal, from the decision.
    pub ttl_ms: u64,
}

/// Body of a lease call: leases to renew (requests still in flight) and to release (requests
/// that ended), at most `MAX_LEASES_PER_CALL` ids in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeasesRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renew: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub release: Vec<String>,
}

/// Answer to a lease call: how many of the named leases were still held and were renewed or
/// released (an expired lease is neither: its slot may be someone else's by now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeasesResponse {
    pub renewed: u64,
    pub released: u64,
}

fn is_false(flag: &bool) -> bool {
    !*flag
}

/// One window of one counter: an item of the `RateLimit-Policy` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyReport {
    /// The policy's name, unique per (counter, window) within a configuration, ASCII only
    /// (the control plane forms it; docs/CONFIGURATION.md says how).
    pub name: String,
    /// The window's limit (`q`).
    pub limit: u64,
    /// The window's length in seconds (`w`).
    pub window: u64,
}

/// The counter the rate-limit headers describe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CounterReport {
    pub limit: u64,
    /// Remaining after this request (`limit - count`, the current request included).
    pub remaining: u64,
    /// Unix time (seconds, UTC) at which the oldest counted entry leaves the window.
    pub reset: u64,
    /// Seconds until the request could pass (≥ 1); only on deny.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Window size in seconds; 0 on the denial of a concurrency limit (`max_concurrent`),
    /// whose `limit` is then the most requests in flight.
    pub window: u64,
    /// What the counter limits: the endpoint rule (e.g. `/api/v1/admin/*`), or the
    /// normalised request path when the tier budget bound.
    pub endpoint: String,
    /// `reset` as RFC 3339; only on deny (the 429 body carries it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<String>,
    /// This window's name in [`DecisionResponse::policies`] (the `RateLimit` field's item).
    /// Added after the first release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Seconds from the decision until this window's oldest counted request leaves it, rounded
    /// up: `reset` made relative on the store's own clock, so the filter never compares that
    /// clock with its host's (`t` of the `RateLimit` field; equals `retry_after` on a deny).
    /// Added after the first release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_after: Option<u64>,
    /// The window counts units (request costs, charges after the response), not requests:
    /// the 429's message says so. Added after the first release: a filter that does not know
    /// it says "requests".
    #[serde(default, skip_serializing_if = "is_false")]
    pub units: bool,
}

/// Body of every error answer: the control plane's API errors and the filter's own 429 and
/// 503. Parsed and produced by both sides, so the shape is written once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorObject,
}

impl ErrorBody {
    /// An error with only a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorObject {
                code: code.into(),
                message: message.into(),
                field: None,
                details: None,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorObject {
    /// Machine-readable code, e.g. `rate_limit_exceeded`, `unauthorized`, `invalid_config`.
    pub code: String,
    pub message: String,
    /// Field path of a configuration error, e.g. `tiers[1].window_size_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The limit that was exceeded (429 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<DenyDetails>,
}

/// What a client is told about the limit it exceeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DenyDetails {
    pub limit: u64,
    /// Window in seconds; 0 for a concurrency limit (`limit` requests in flight).
    pub window_size: u64,
    /// RFC 3339 time at which the request could pass.
    pub reset_at: String,
    pub retry_after_seconds: u64,
    /// Tier the request was judged under (`null` when the control plane named none).
    pub tier: Option<String>,
    /// The endpoint rule that bound (e.g. `/api/v1/admin/*`), or the path when the tier
    /// budget bound.
    pub endpoint: String,
}

#[cfg(test)]
mod tests;
