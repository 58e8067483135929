//! From the result of the decision call to what happens to the request.
//!
//! Every way the call can go wrong is an input here, so the failure behaviour is decided in
//! one place and tested without a host.

use std::fmt;

use rl_wire::{CounterReport, DecisionResponse, Verdict};
use serde::Serialize;

/// Largest decision answer the filter reads. A normal answer is ~120 bytes. The control
/// plane caps the endpoint it echoes (256 bytes), but the limit leaves room for a whole
/// 4 KiB path JSON-escaped at 6 bytes per character, so an answer is never refused for its
/// size (which would turn a counted decision into a `fail_open` one).
pub const MAX_DECISION_RESPONSE_BYTES: usize = 32 * 1024;

pub const HEADER_LIMIT: &str = "x-ratelimit-limit";
pub const HEADER_REMAINING: &str = "x-ratelimit-remaining";
pub const HEADER_RESET: &str = "x-ratelimit-reset";
pub const HEADER_TIER: &str = "x-ratelimit-tier";
pub const HEADER_RETRY_AFTER: &str = "retry-after";
pub const HEADER_CONTENT_TYPE: &str = "content-type";

/// Headers as (lowercase name, value).
pub type Headers = Vec<(&'static str, String)>;

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
    /// Anything but 200 (Envoy synthesises 503 when refused, 504 on timeout).
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
pub const METRIC_NAMES: [&str; 8] = [
    "rate_limit_filter.allowed",
    "rate_limit_filter.denied",
    "rate_limit_filter.unavailable",
    "rate_limit_filter.whitelisted",
    "rate_limit_filter.disabled",
    "rate_limit_filter.failed_open",
    "rate_limit_filter.failed_closed",
    "rate_limit_filter.control_plane_errors",
];

/// Index into [`METRIC_NAMES`] of the control-plane error counter.
pub const CONTROL_PLANE_ERRORS_METRIC: usize = 7;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Forward the request; set these headers (replacing) on whatever response comes back.
    Resume { response_headers: Headers },
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

/// Maps the decision call's result to what happens to the request.
pub fn decide(result: CallResult<'_>, fail_open: bool) -> Decision {
    match interpret(result) {
        Ok(resp) => decide_response(&resp, fail_open),
        Err(error) => failure(error, fail_open),
    }
}

/// What happens to a request the control plane answered (one decision of a batch, too).
pub fn decide_response(resp: &DecisionResponse, fail_open: bool) -> Decision {
    match from_verdict(resp) {
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

fn interpret(result: CallResult<'_>) -> Result<DecisionResponse, ControlPlaneError> {
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

fn from_verdict(resp: &DecisionResponse) -> Result<(Action, Outcome), ControlPlaneError> {
    Ok(match resp.verdict {
        Verdict::Allow => (
            Action::Resume {
                response_headers: rate_limit_headers(resp.counter.as_ref(), resp.tier.as_deref()),
            },
            Outcome::Allowed,
        ),
        Verdict::Deny => {
            let counter = resp
                .counter
                .as_ref()
                .ok_or(ControlPlaneError::DenyWithoutCounter)?;
            (
                Action::Reply(deny_reply(counter, resp.tier.as_deref())),
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
        response_headers: Vec::new(),
    }
}

/// The four `X-RateLimit-*` headers, as far as the answer provides them.
fn rate_limit_headers(counter: Option<&CounterReport>, tier: Option<&str>) -> Headers {
    let mut headers = Vec::with_capacity(4);
    if let Some(c) = counter {
        headers.push((HEADER_LIMIT, c.limit.to_string()));
        headers.push((HEADER_REMAINING, c.remaining.to_string()));
        headers.push((HEADER_RESET, c.reset.to_string()));
    }
    // A value with CR/LF would split the response; tier names are plain words anyway.
    if let Some(tier) = tier.filter(|t| is_safe_header_value(t)) {
        headers.push((HEADER_TIER, tier.to_string()));
    }
    headers
}

fn is_safe_header_value(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<DenyDetails<'a>>,
}

#[derive(Serialize)]
struct DenyDetails<'a> {
    limit: u64,
    window_size: u64,
    reset_at: String,
    retry_after_seconds: u64,
    tier: Option<&'a str>,
    endpoint: &'a str,
}

fn seconds(n: u64) -> &'static str {
    if n == 1 { "second" } else { "seconds" }
}

fn deny_reply(counter: &CounterReport, tier: Option<&str>) -> LocalReply {
    let retry_after = counter.retry_after.unwrap_or(1).max(1);
    let mut headers = vec![(HEADER_RETRY_AFTER, retry_after.to_string())];
    headers.extend(rate_limit_headers(Some(counter), tier));
    headers.push((HEADER_CONTENT_TYPE, "application/json".to_string()));
    let body = ErrorBody {
        error: ErrorObject {
            code: "rate_limit_exceeded",
            message: format!(
                "Rate limit exceeded: {} requests per {} {}. Retry after {} {}.",
                counter.limit,
                counter.window,
                seconds(counter.window),
                retry_after,
                seconds(retry_after)
            ),
            details: Some(DenyDetails {
                limit: counter.limit,
                window_size: counter.window,
                reset_at: counter
                    .reset_at
                    .clone()
                    .unwrap_or_else(|| rfc3339_utc(counter.reset)),
                retry_after_seconds: retry_after,
                tier,
                endpoint: &counter.endpoint,
            }),
        },
    };
    LocalReply {
        status: 429,
        headers,
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

/// The 503 for a store outage (control plane fail-closed) and for this filter's fail-closed.
/// It carries no `X-RateLimit-*` headers: nothing was counted.
pub fn unavailable_reply() -> LocalReply {
    let body = ErrorBody {
        error: ErrorObject {
            code: "rate_limit_unavailable",
            message: "Rate limiting is temporarily unavailable. Retry shortly.".to_string(),
            details: None,
        },
    };
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
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn ok(body: &str) -> CallResult<'_> {
        CallResult::Response {
            status: Some(b"200"),
            body: CallBody::Bytes(body.as_bytes()),
        }
    }

    fn headers(list: &[(&'static str, &str)]) -> Headers {
        list.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    fn resume(h: Headers) -> Action {
        Action::Resume {
            response_headers: h,
        }
    }

    const ALLOW: &str = r#"{"verdict":"allow","tier":"free","counter":{"limit":100,"remaining":99,"reset":1700000060,"window":60,"endpoint":"/api/v1/request"}}"#;
    const DENY: &str = r#"{"verdict":"deny","tier":"free","counter":{"limit":100,"remaining":0,"reset":1700000060,"retry_after":59,"window":60,"endpoint":"/api/v1/request","reset_at":"2023-11-14T22:14:20Z"}}"#;

    #[test]
    fn allow_with_counter_sets_all_headers() {
        for fail_open in [true, false] {
            let d = decide(ok(ALLOW), fail_open);
            assert_eq!(d.outcome, Outcome::Allowed);
            assert_eq!(d.error, None);
            assert_eq!(
                d.action,
                resume(headers(&[
                    ("x-ratelimit-limit", "100"),
                    ("x-ratelimit-remaining", "99"),
                    ("x-ratelimit-reset", "1700000060"),
                    ("x-ratelimit-tier", "free"),
                ]))
            );
        }
    }

    #[test]
    fn allow_without_counter_sets_only_tier() {
        let d = decide(ok(r#"{"verdict":"allow","tier":"unlimited"}"#), true);
        assert_eq!(
            d.action,
            resume(headers(&[("x-ratelimit-tier", "unlimited")]))
        );
        assert_eq!(d.outcome, Outcome::Allowed);
        let d = decide(ok(r#"{"verdict":"allow"}"#), true);
        assert_eq!(d.action, resume(vec![]));
    }

    #[test]
    fn unsafe_tier_is_not_echoed_into_headers() {
        let d = decide(
            ok(r#"{"verdict":"allow","tier":"free\r\nset-cookie: x=1"}"#),
            true,
        );
        assert_eq!(d.action, resume(vec![]));
    }

    #[test]
    fn deny_is_an_exact_429() {
        for fail_open in [true, false] {
            let d = decide(ok(DENY), fail_open);
            assert_eq!(d.outcome, Outcome::Denied);
            let Action::Reply(reply) = d.action else {
                panic!("not a reply")
            };
            assert_eq!(reply.status, 429);
            assert_eq!(
                reply.headers,
                headers(&[
                    ("retry-after", "59"),
                    ("x-ratelimit-limit", "100"),
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1700000060"),
                    ("x-ratelimit-tier", "free"),
                    ("content-type", "application/json"),
                ])
            );
            assert_eq!(
                String::from_utf8(reply.body).unwrap(),
                r#"{"error":{"code":"rate_limit_exceeded","message":"Rate limit exceeded: 100 requests per 60 seconds. Retry after 59 seconds.","details":{"limit":100,"window_size":60,"reset_at":"2023-11-14T22:14:20Z","retry_after_seconds":59,"tier":"free","endpoint":"/api/v1/request"}}}"#
            );
        }
    }

    #[test]
    fn the_largest_possible_answer_is_read() {
        // A whole 4 KiB path of control characters, each escaped to 6 bytes in the answer.
        let endpoint = "\u{1}".repeat(crate::evidence::MAX_PATH_BYTES + 1);
        let answer = serde_json::json!({
            "verdict": "deny",
            "tier": "free",
            "counter": {"limit": 100, "remaining": 0, "reset": 1_700_000_060u64,
                        "retry_after": 59, "window": 60, "endpoint": endpoint,
                        "reset_at": "2023-11-14T22:14:20Z"}
        })
        .to_string();
        assert!(answer.len() > 16 * 1024 && answer.len() <= MAX_DECISION_RESPONSE_BYTES);
        assert!(CallBody::should_read(answer.len()));
        let result = CallResult::Response {
            status: Some(b"200"),
            body: CallBody::from_read(answer.len(), Some(answer.as_bytes())),
        };
        assert_eq!(decide(result, true).outcome, Outcome::Denied);
    }

    #[test]
    fn deny_escapes_strings_and_fills_gaps() {
        let body = r#"{"verdict":"deny","tier":"a\"b","counter":{"limit":1,"remaining":0,"reset":1700000060,"retry_after":0,"window":1,"endpoint":"/x\"y\\z"}}"#;
        let Action::Reply(reply) = decide(ok(body), true).action else {
            panic!()
        };
        assert_eq!(
            reply.headers[0],
            ("retry-after", "1".to_string()),
            "at least 1"
        );
        let v: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(
            v,
            json!({"error":{"code":"rate_limit_exceeded",
                "message":"Rate limit exceeded: 1 requests per 1 second. Retry after 1 second.",
                "details":{"limit":1,"window_size":1,"reset_at":"2023-11-14T22:14:20Z",
                    "retry_after_seconds":1,"tier":"a\"b","endpoint":"/x\"y\\z"}}})
        );
        // No retry_after at all, no tier.
        let body = r#"{"verdict":"deny","counter":{"limit":5,"remaining":0,"reset":0,"window":60,"endpoint":"/e"}}"#;
        let Action::Reply(reply) = decide(ok(body), true).action else {
            panic!()
        };
        assert_eq!(reply.headers[0].1, "1");
        assert!(!reply.headers.iter().any(|(k, _)| *k == HEADER_TIER));
        let v: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(v["error"]["details"]["tier"], Value::Null);
        assert_eq!(v["error"]["details"]["reset_at"], "1970-01-01T00:00:00Z");
    }

    fn assert_unavailable(action: &Action) {
        let Action::Reply(reply) = action else {
            panic!("not a reply: {action:?}")
        };
        assert_eq!(reply.status, 503);
        assert_eq!(
            reply.headers,
            headers(&[("retry-after", "1"), ("content-type", "application/json")])
        );
        let v: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(v["error"]["code"], "rate_limit_unavailable");
        assert!(v["error"]["message"].is_string());
        assert_eq!(v["error"].as_object().unwrap().len(), 2);
    }

    #[test]
    fn unavailable_is_503_without_rate_limit_headers() {
        for fail_open in [true, false] {
            let d = decide(
                ok(
                    r#"{"verdict":"unavailable","tier":"free","counter":{"limit":1,"remaining":0,"reset":1,"window":1,"endpoint":"/"}}"#,
                ),
                fail_open,
            );
            assert_eq!(d.outcome, Outcome::Unavailable);
            assert_eq!(d.error, None);
            assert_unavailable(&d.action);
        }
    }

    #[test]
    fn admitted_without_headers() {
        for (verdict, outcome) in [
            ("whitelisted", Outcome::Whitelisted),
            ("disabled", Outcome::Disabled),
            ("failed_open", Outcome::FailedOpen),
        ] {
            for fail_open in [true, false] {
                let body = format!(
                    r#"{{"verdict":"{verdict}","tier":"free","counter":{{"limit":1,"remaining":0,"reset":1,"window":1,"endpoint":"/"}}}}"#
                );
                let d = decide(ok(&body), fail_open);
                assert_eq!(d.outcome, outcome);
                assert_eq!(d.error, None);
                assert_eq!(d.action, resume(vec![]));
            }
        }
    }

    fn failures() -> Vec<(CallResult<'static>, ControlPlaneError)> {
        let resp = |status: Option<&'static [u8]>, body| CallResult::Response { status, body };
        vec![
            (
                CallResult::DispatchFailed,
                ControlPlaneError::DispatchFailed,
            ),
            (CallResult::Reset, ControlPlaneError::Reset),
            (
                resp(Some(b"503"), CallBody::Bytes(b"no healthy upstream")),
                ControlPlaneError::Status(503),
            ),
            (
                resp(Some(b"504"), CallBody::Bytes(b"upstream request timeout")),
                ControlPlaneError::Status(504),
            ),
            (
                resp(Some(b"500"), CallBody::Bytes(DENY.as_bytes())),
                ControlPlaneError::Status(500),
            ),
            (
                resp(Some(b"429"), CallBody::Bytes(DENY.as_bytes())),
                ControlPlaneError::Status(429),
            ),
            (
                resp(Some(b"204"), CallBody::Empty),
                ControlPlaneError::Status(204),
            ),
            (
                resp(None, CallBody::Bytes(ALLOW.as_bytes())),
                ControlPlaneError::MissingStatus,
            ),
            (
                resp(Some(b"2000"), CallBody::Bytes(ALLOW.as_bytes())),
                ControlPlaneError::MissingStatus,
            ),
            (
                resp(Some(b"20x"), CallBody::Bytes(ALLOW.as_bytes())),
                ControlPlaneError::MissingStatus,
            ),
            (
                resp(Some(b"200"), CallBody::Empty),
                ControlPlaneError::EmptyBody,
            ),
            (
                resp(Some(b"200"), CallBody::TooLarge(1 << 20)),
                ControlPlaneError::BodyTooLarge(1 << 20),
            ),
            (
                resp(
                    Some(b"200"),
                    CallBody::Bytes(r#"{"verdict":"deny"}"#.as_bytes()),
                ),
                ControlPlaneError::DenyWithoutCounter,
            ),
        ]
    }

    fn malformed_bodies() -> Vec<&'static str> {
        vec![
            "garbage",
            "{",
            "null",
            "[]",
            r#"{"verdict":"maybe"}"#,
            r#"{"verdict":"ALLOW"}"#,
            r#"{"tier":"free"}"#,
            r#"{"verdict":"allow","counter":{"limit":"100"}}"#,
            r#"{"verdict":"allow","counter":{"limit":-1,"remaining":0,"reset":0,"window":1,"endpoint":"/"}}"#,
            "\u{feff}{\"verdict\":\"allow\"}",
        ]
    }

    #[test]
    fn control_plane_failures_fail_open() {
        for (result, error) in failures() {
            let d = decide(result, true);
            assert_eq!(d.outcome, Outcome::FailedOpen, "{result:?}");
            assert_eq!(d.error, Some(error));
            assert_eq!(d.action, resume(vec![]), "{result:?}");
        }
        for body in malformed_bodies() {
            let d = decide(ok(body), true);
            assert_eq!(d.outcome, Outcome::FailedOpen, "{body}");
            assert!(
                matches!(d.error, Some(ControlPlaneError::Malformed(_))),
                "{body}"
            );
            assert_eq!(d.action, resume(vec![]));
        }
    }

    #[test]
    fn control_plane_failures_fail_closed() {
        for (result, error) in failures() {
            let d = decide(result, false);
            assert_eq!(d.outcome, Outcome::FailedClosed, "{result:?}");
            assert_eq!(d.error, Some(error));
            assert_unavailable(&d.action);
        }
        for body in malformed_bodies() {
            let d = decide(ok(body), false);
            assert_eq!(d.outcome, Outcome::FailedClosed, "{body}");
            assert!(
                matches!(d.error, Some(ControlPlaneError::Malformed(_))),
                "{body}"
            );
            assert_unavailable(&d.action);
        }
    }

    #[test]
    fn extra_fields_in_the_answer_are_tolerated() {
        let d = decide(ok(r#"{"verdict":"whitelisted","future":1}"#), false);
        assert_eq!(d.outcome, Outcome::Whitelisted);
    }

    #[test]
    fn body_classification() {
        assert!(CallBody::should_read_within(5, 5));
        assert!(!CallBody::should_read_within(6, 5));
        assert_eq!(
            CallBody::from_read_within(6, 5, None),
            CallBody::TooLarge(6)
        );
        assert_eq!(
            CallBody::from_read_within(MAX_DECISION_RESPONSE_BYTES + 1, usize::MAX, Some(b"{}")),
            CallBody::Bytes(b"{}")
        );
        assert!(!CallBody::should_read(0));
        assert!(CallBody::should_read(1));
        assert!(CallBody::should_read(MAX_DECISION_RESPONSE_BYTES));
        assert!(!CallBody::should_read(MAX_DECISION_RESPONSE_BYTES + 1));
        assert_eq!(CallBody::from_read(0, None), CallBody::Empty);
        assert_eq!(CallBody::from_read(3, Some(b"")), CallBody::Empty);
        assert_eq!(CallBody::from_read(2, Some(b"{}")), CallBody::Bytes(b"{}"));
        assert_eq!(
            CallBody::from_read(MAX_DECISION_RESPONSE_BYTES + 1, None),
            CallBody::TooLarge(MAX_DECISION_RESPONSE_BYTES + 1)
        );
        // An oversized answer is refused even when it would parse.
        let mut big = ALLOW.as_bytes().to_vec();
        big.resize(MAX_DECISION_RESPONSE_BYTES + 1, b' ');
        let body = CallBody::from_read(big.len(), Some(&big));
        let d = decide(
            CallResult::Response {
                status: Some(b"200"),
                body,
            },
            false,
        );
        assert_eq!(d.outcome, Outcome::FailedClosed);
    }

    #[test]
    fn metric_indices_are_distinct_and_named() {
        let all = [
            Outcome::Allowed,
            Outcome::Denied,
            Outcome::Unavailable,
            Outcome::Whitelisted,
            Outcome::Disabled,
            Outcome::FailedOpen,
            Outcome::FailedClosed,
        ];
        let mut seen: Vec<usize> = all.iter().map(|o| o.metric_index()).collect();
        seen.push(CONTROL_PLANE_ERRORS_METRIC);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), METRIC_NAMES.len());
        assert_eq!(
            METRIC_NAMES[Outcome::Denied.metric_index()],
            "rate_limit_filter.denied"
        );
        assert_eq!(
            METRIC_NAMES[Outcome::FailedOpen.metric_index()],
            "rate_limit_filter.failed_open"
        );
        assert_eq!(
            METRIC_NAMES[CONTROL_PLANE_ERRORS_METRIC],
            "rate_limit_filter.control_plane_errors"
        );
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_060), "2023-11-14T22:14:20Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339_utc(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn error_messages_are_readable() {
        assert_eq!(
            ControlPlaneError::Status(504).to_string(),
            "decision call answered HTTP 504"
        );
        assert_eq!(
            ControlPlaneError::Reset.to_string(),
            "decision call was reset"
        );
    }
}
