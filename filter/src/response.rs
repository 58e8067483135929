//! From the result of the decision call to what happens to the request.
//!
//! Every way the call can go wrong is an input here, so the failure behaviour is decided in
//! one place and tested without a host.

use std::fmt;

pub use rl_wire::headers::{
    HEADER_CONTENT_TYPE, HEADER_LIMIT, HEADER_REMAINING, HEADER_RESET, HEADER_RETRY_AFTER,
    HEADER_TIER, Headers, RATE_LIMIT_HEADERS,
};
use rl_wire::headers::{deny_error, x_ratelimit};
use rl_wire::{CounterReport, DecisionResponse, ErrorBody, Verdict};

use crate::config::HeaderSets;
use crate::ietf_fields;

/// Largest decision answer the filter reads. A normal answer is ~120 bytes. The control
/// plane caps the endpoint it echoes (256 bytes), but the limit leaves room for a whole
/// 4 KiB path JSON-escaped at 6 bytes per character, so an answer is never refused for its
/// size (which would turn a counted decision into a `fail_open` one).
pub const MAX_DECISION_RESPONSE_BYTES: usize = 32 * 1024;

/// The body of a decision call response, as far as the glue read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallBody<'a> {
    /// No body (or the host returned none).
    Empty,
    /// Larger than [`MAX_DECISION_RESPONSE_BYTES`]; not read.
    TooLarge(usize),
    Bytes(&'a [u8]),
}

impl<'a> CallBody<'a> {
    /// Whether the glue should fetch a body of `size` bytes at all.
    pub fn should_read(size: usize) -> bool {
        Self::should_read_within(size, MAX_DECISION_RESPONSE_BYTES)
    }

    /// Classifies what the glue got for a body of announced `size`.
    pub fn from_read(size: usize, bytes: Option<&'a [u8]>) -> CallBody<'a> {
        Self::from_read_within(size, MAX_DECISION_RESPONSE_BYTES, bytes)
    }

    /// [`CallBody::should_read`] for an answer bounded by `max` bytes (a batch answer's bound
    /// is larger).
    pub fn should_read_within(size: usize, max: usize) -> bool {
        size > 0 && size <= max
    }

    /// [`CallBody::from_read`] for an answer bounded by `max` bytes.
    pub fn from_read_within(size: usize, max: usize, bytes: Option<&'a [u8]>) -> CallBody<'a> {
        if size > max {
            return CallBody::TooLarge(size);
        }
        match bytes {
            Some(b) if !b.is_empty() => CallBody::Bytes(b),
            _ => CallBody::Empty,
        }
    }
}

/// How the decision call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult<'a> {
    /// `dispatch_http_call` failed synchronously (unknown cluster, bad headers, ...).
    DispatchFailed,
    /// The call was reset: `on_http_call_response` with no headers.
    Reset,
    /// A response arrived. `status` is the raw `:status` value.
    Response {
        status: Option<&'a [u8]>,
        body: CallBody<'a>,
    },
}

/// Why the control plane's answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlPlaneError {
    DispatchFailed,
    Reset,
    /// No or unreadable `:status`.
    MissingStatus,
    /// 401: the control plane requires a decision secret this filter does not send (or sends
    /// another one). A misconfiguration, counted apart from outages.
    Unauthorized,
    /// Anything but 200 and 401 (Envoy synthesises 503 when refused, 504 on timeout).
    Status(u16),
    EmptyBody,
    BodyTooLarge(usize),
    /// Not a `DecisionResponse` (includes unknown verdicts).
    Malformed(String),
    /// A deny must name the counter it enforces.
    DenyWithoutCounter,
}

impl fmt::Display for ControlPlaneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlPlaneError::DispatchFailed => {
                f.write_str("decision call could not be dispatched")
            }
            ControlPlaneError::Reset => f.write_str("decision call was reset"),
            ControlPlaneError::MissingStatus => {
                f.write_str("decision response has no valid :status")
            }
            ControlPlaneError::Unauthorized => f.write_str(
                "decision call answered HTTP 401: missing or wrong decision secret (the filter's \
                 decision_secret must be the control plane's RATE_LIMIT_DECISION_SECRET, or its \
                 RATE_LIMIT_DECISION_SECRET_PREVIOUS while the secret is rotated)",
            ),
            ControlPlaneError::Status(s) => write!(f, "decision call answered HTTP {s}"),
            ControlPlaneError::EmptyBody => f.write_str("decision response has no body"),
            ControlPlaneError::BodyTooLarge(n) => {
                write!(f, "decision response too large ({n} bytes)")
            }
            ControlPlaneError::Malformed(e) => write!(f, "decision response unreadable: {e}"),
            ControlPlaneError::DenyWithoutCounter => f.write_str("deny verdict without counter"),
        }
    }
}

/// What was decided, for the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied,
    /// The control plane reported its store unavailable (its fail-closed).
    Unavailable,
    Whitelisted,
    Disabled,
    /// Admitted unchecked: the control plane's store failed open, or the control plane could
    /// not answer and this filter's `fail_open` is true.
    FailedOpen,
    /// Refused with 503: the control plane could not answer and `fail_open` is false.
    FailedClosed,
}

/// Every counter the filter defines (Envoy exposes them prefixed with `wasmcustom.`).
pub const METRIC_NAMES: [&str; 13] = [
    "rate_limit_filter.allowed",
    "rate_limit_filter.denied",
    "rate_limit_filter.unavailable",
    "rate_limit_filter.whitelisted",
    "rate_limit_filter.disabled",
    "rate_limit_filter.failed_open",
    "rate_limit_filter.failed_closed",
    "rate_limit_filter.control_plane_errors",
    "rate_limit_filter.batch_calls",
    "rate_limit_filter.unauthorized",
    "rate_limit_filter.local_denied",
    "rate_limit_filter.charges_invalid",
    "rate_limit_filter.usage_dropped",
];

/// Index into [`METRIC_NAMES`] of the control-plane error counter.
pub const CONTROL_PLANE_ERRORS_METRIC: usize = 7;

/// Index into [`METRIC_NAMES`] of the counter of batch calls dispatched (coalescing at work).
pub const BATCH_CALLS_METRIC: usize = 8;

/// Index into [`METRIC_NAMES`] of the counter of decisions refused with 401 (a wrong or
/// missing decision secret).
pub const UNAUTHORIZED_METRIC: usize = 9;

/// Index into [`METRIC_NAMES`] of the counter of requests the filter denied itself from its
/// deny cache ([`crate::deny_cache`]); they count as `denied` too.
pub const LOCAL_DENIED_METRIC: usize = 10;

/// Index into [`METRIC_NAMES`] of the counter of charge values that were not a non-negative
/// integer (ignored).
pub const CHARGES_INVALID_METRIC: usize = 11;

/// Index into [`METRIC_NAMES`] of the counter of charges and releases dropped after their
/// last delivery attempt failed.
pub const USAGE_DROPPED_METRIC: usize = 12;

impl ControlPlaneError {
    /// The counter this error goes to besides the outcome: a 401 is a misconfiguration and
    /// has its own, every other error is the control plane failing to answer.
    pub fn metric_index(&self) -> usize {
        match self {
            ControlPlaneError::Unauthorized => UNAUTHORIZED_METRIC,
            _ => CONTROL_PLANE_ERRORS_METRIC,
        }
    }
}

impl Outcome {
    /// Index into [`METRIC_NAMES`].
    pub fn metric_index(self) -> usize {
        match self {
            Outcome::Allowed => 0,
            Outcome::Denied => 1,
            Outcome::Unavailable => 2,
            Outcome::Whitelisted => 3,
            Outcome::Disabled => 4,
            Outcome::FailedOpen => 5,
            Outcome::FailedClosed => 6,
        }
    }
}

/// A response the filter sends itself instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// The headers of ours that go on the response of a forwarded request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHeaders {
    /// `X-RateLimit-*`: set, replacing the upstream's lines of the same name (its other
    /// `X-RateLimit-*` headers go, see [`crate::upstream_headers`]).
    pub replace: Headers,
    /// `RateLimit-Policy`, `RateLimit`: added as field lines of their own after the
    /// upstream's. They are Lists, and the upstream's items describe its own limits.
    pub append: Headers,
}

impl ResponseHeaders {
    pub fn is_empty(&self) -> bool {
        self.replace.is_empty() && self.append.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Forward the request, with these headers on whatever response comes back.
    Resume { response_headers: ResponseHeaders },
    /// Answer the request locally.
    Reply(LocalReply),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub outcome: Outcome,
    /// Set when the control plane's answer was not usable (the outcome is then the filter's
    /// `fail_open` policy).
    pub error: Option<ControlPlaneError>,
}

/// Maps the decision call's result to what happens to the request; `sets`: the rate-limit
/// header sets the plugin sends.
pub fn decide(result: CallResult<'_>, fail_open: bool, sets: HeaderSets) -> Decision {
    match interpret(result) {
        Ok(resp) => decide_response(&resp, fail_open, sets),
        Err(error) => failure(error, fail_open),
    }
}

/// What happens to a request the control plane answered (one decision of a batch, too).
pub fn decide_response(resp: &DecisionResponse, fail_open: bool, sets: HeaderSets) -> Decision {
    match from_verdict(resp, sets) {
        Ok((action, outcome)) => Decision {
            action,
            outcome,
            error: None,
        },
        Err(error) => failure(error, fail_open),
    }
}

/// The decision when the control plane could not answer usefully.
pub fn failure(error: ControlPlaneError, fail_open: bool) -> Decision {
    let (action, outcome) = if fail_open {
        (resume_without_headers(), Outcome::FailedOpen)
    } else {
        (Action::Reply(unavailable_reply()), Outcome::FailedClosed)
    };
    Decision {
        action,
        outcome,
        error: Some(error),
    }
}

/// The control plane's answer to a single call, or why there is none.
pub fn interpret(result: CallResult<'_>) -> Result<DecisionResponse, ControlPlaneError> {
    let bytes = call_body(result)?;
    serde_json::from_slice(bytes).map_err(|e| ControlPlaneError::Malformed(e.to_string()))
}

/// The body of a call that answered 200 with a body; every other ending is an error.
pub fn call_body(result: CallResult<'_>) -> Result<&[u8], ControlPlaneError> {
    let (status, body) = match result {
        CallResult::DispatchFailed => return Err(ControlPlaneError::DispatchFailed),
        CallResult::Reset => return Err(ControlPlaneError::Reset),
        CallResult::Response { status, body } => (status, body),
    };
    match status.and_then(parse_status) {
        None => return Err(ControlPlaneError::MissingStatus),
        Some(200) => {}
        Some(401) => return Err(ControlPlaneError::Unauthorized),
        Some(other) => return Err(ControlPlaneError::Status(other)),
    }
    match body {
        CallBody::Empty => Err(ControlPlaneError::EmptyBody),
        CallBody::TooLarge(n) => Err(ControlPlaneError::BodyTooLarge(n)),
        CallBody::Bytes(bytes) => Ok(bytes),
    }
}

fn parse_status(raw: &[u8]) -> Option<u16> {
    if raw.len() != 3 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(raw.iter().fold(0, |acc, b| acc * 10 + u16::from(b - b'0')))
}

fn from_verdict(
    resp: &DecisionResponse,
    sets: HeaderSets,
) -> Result<(Action, Outcome), ControlPlaneError> {
    Ok(match resp.verdict {
        Verdict::Allow => {
            let counter = resp.counter.as_ref();
            let mut headers = ResponseHeaders::default();
            if sets.x_ratelimit {
                headers.replace = x_ratelimit(counter, resp.tier.as_deref());
            }
            if sets.ietf {
                let reset = counter.and_then(|c| c.reset_after);
                headers.append = ietf_fields::fields(&resp.policies, counter, reset);
            }
            (
                Action::Resume {
                    response_headers: headers,
                },
                Outcome::Allowed,
            )
        }
        Verdict::Deny => {
            let counter = resp
                .counter
                .as_ref()
                .ok_or(ControlPlaneError::DenyWithoutCounter)?;
            (
                Action::Reply(deny_reply(resp, counter, sets)),
                Outcome::Denied,
            )
        }
        Verdict::Unavailable => (Action::Reply(unavailable_reply()), Outcome::Unavailable),
        Verdict::Whitelisted => (resume_without_headers(), Outcome::Whitelisted),
        Verdict::Disabled => (resume_without_headers(), Outcome::Disabled),
        Verdict::FailedOpen => (resume_without_headers(), Outcome::FailedOpen),
    })
}

fn resume_without_headers() -> Action {
    Action::Resume {
        response_headers: ResponseHeaders::default(),
    }
}

/// The 429. `Retry-After` is always there; `t` of `RateLimit` is the same number, so a client
/// reading either field waits alike.
fn deny_reply(resp: &DecisionResponse, counter: &CounterReport, sets: HeaderSets) -> LocalReply {
    let tier = resp.tier.as_deref();
    let retry_after = counter.retry_after.unwrap_or(1).max(1);
    let mut headers = vec![(HEADER_RETRY_AFTER, retry_after.to_string())];
    if sets.x_ratelimit {
        headers.extend(x_ratelimit(Some(counter), tier));
    }
    if sets.ietf {
        headers.extend(ietf_fields::fields(
            &resp.policies,
            Some(counter),
            Some(retry_after),
        ));
    }
    headers.push((HEADER_CONTENT_TYPE, "application/json".to_string()));
    let body = deny_error(counter, tier, retry_after, rfc3339_utc);
    LocalReply {
        status: 429,
        headers,
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

/// The 503 for a store outage (control plane fail-closed) and for this filter's fail-closed.
/// It carries no `X-RateLimit-*` headers: nothing was counted.
pub fn unavailable_reply() -> LocalReply {
    let body = ErrorBody::new(
        "rate_limit_unavailable",
        "Rate limiting is temporarily unavailable. Retry shortly.",
    );
    LocalReply {
        status: 503,
        headers: vec![
            (HEADER_RETRY_AFTER, "1".to_string()),
            (HEADER_CONTENT_TYPE, "application/json".to_string()),
        ],
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`, for an answer that lacks `reset_at`.
pub fn rfc3339_utc(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Days to civil date (Howard Hinnant's algorithm), valid for every u64 day count we see.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests;
