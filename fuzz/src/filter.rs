//! Properties of the filter's hostile-input surface: identity evidence (client IP, the
//! decision request) and the mapping of whatever the control plane answers.

use std::net::IpAddr;

use rate_limit_filter::client_ip::{
    IpNet, TrustedProxies, parse_source_address, resolve_client_ip,
};
use rate_limit_filter::config::{MAX_TIMEOUT_MS, PluginConfig};
use rate_limit_filter::evidence::{
    MAX_API_KEY_BYTES, MAX_AUTHORIZATION_BYTES, MAX_METHOD_BYTES, MAX_PATH_BYTES, RawRequest,
    decision_request, encode_decision_request,
};
use rate_limit_filter::response::{
    self, Action, CallBody, CallResult, HEADER_CONTENT_TYPE, HEADER_LIMIT, HEADER_REMAINING,
    HEADER_RESET, HEADER_RETRY_AFTER, HEADER_TIER, MAX_DECISION_RESPONSE_BYTES, Outcome,
};
use rl_wire::{DecisionRequest, DecisionResponse, MAX_DECISION_REQUEST_BYTES, Verdict};

use crate::input::{expand, split_head};

/// At most this many `X-Forwarded-For` values per input (Envoy joins repeated headers anyway).
const MAX_XFF_VALUES: usize = 16;
/// At most this many `trusted_proxies` entries.
const MAX_TRUSTED: usize = 16;

/// `filter_evidence` input, one field per line:
///
/// ```text
/// trusted proxies, comma-separated (entries that do not parse are dropped)
/// source.address
/// API key header value
/// Authorization value
/// :method
/// :path
/// X-Real-IP
/// X-Forwarded-For value        (every further line is another value)
/// ```
///
/// A missing line is an absent header. Any field may use the `~` expansion.
pub fn check_evidence(data: &[u8]) {
    let (head, rest) = split_head(data, b'\n', 7);
    let field = |i: usize| head[i].map(expand);
    let trusted = trusted_proxies(head[0].unwrap_or_default());
    let source = field(1);
    let api_key = field(2);
    let authorization = field(3);
    let method = field(4);
    let path = field(5);
    let real_ip = field(6);
    let xff: Vec<_> = if head[6].is_none() {
        Vec::new()
    } else {
        rest.split(|&b| b == b'\n')
            .take(MAX_XFF_VALUES)
            .map(expand)
            .collect()
    };
    let raw = RawRequest {
        source_address: source.as_deref(),
        forwarded_for: xff.iter().map(|v| &**v).collect(),
        real_ip: real_ip.as_deref(),
        api_key: api_key.as_deref(),
        authorization: authorization.as_deref(),
        method: method.as_deref(),
        path: path.as_deref(),
    };
    check_client_ip(&raw, &trusted);
    check_decision_request(&raw, &trusted);
}

fn trusted_proxies(line: &[u8]) -> TrustedProxies {
    let text = String::from_utf8_lossy(line);
    let mut nets = Vec::new();
    for entry in text.split(',').take(MAX_TRUSTED) {
        let Ok(net) = IpNet::parse(entry) else {
            continue;
        };
        // The canonical form parses back to the same block.
        let shown = net.to_string();
        assert_eq!(
            IpNet::parse(&shown),
            Ok(net),
            "{entry:?} shown as {shown:?}"
        );
        nets.push(net);
    }
    TrustedProxies::new(nets)
}

fn canonical(ip: IpAddr) -> bool {
    ip.to_canonical() == ip
}

/// The specification of client IP resolution (README "Client IP", docs/PRODUCT.md §5), written
/// independently of the product: strings instead of slices, one joined list.
fn reference_client_ip(
    peer: Option<IpAddr>,
    forwarded_for: &[&[u8]],
    real_ip: Option<&[u8]>,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.contains(peer) {
        return Some(peer);
    }
    let parse = |bytes: &[u8]| -> Option<IpAddr> {
        let text = std::str::from_utf8(bytes).ok()?;
        let text = text.trim_matches([' ', '\t']);
        text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
    };
    let joined: Vec<u8> = forwarded_for.join(&b","[..]);
    let entries: Vec<&[u8]> = joined.split(|&b| b == b',').collect();
    let blank = |e: &[u8]| e.iter().all(|&b| b == b' ' || b == b'\t');
    // Absent: no entry at all, or only the peer itself (what Envoy appends on its own).
    let absent =
        entries.iter().all(|e| blank(e)) || (entries.len() == 1 && parse(entries[0]) == Some(peer));
    if absent {
        return Some(real_ip.and_then(parse).unwrap_or(peer));
    }
    let mut chosen = peer;
    for entry in entries.iter().rev() {
        match parse(entry) {
            Some(ip) if trusted.contains(ip) => chosen = ip,
            Some(ip) => return Some(ip),
            None => return Some(peer),
        }
    }
    Some(chosen)
}

fn check_client_ip(raw: &RawRequest<'_>, trusted: &TrustedProxies) {
    let peer = raw.source_address.and_then(parse_source_address);
    if let Some(p) = peer {
        assert!(canonical(p), "source address {p} not canonical");
    }
    let got = resolve_client_ip(peer, &raw.forwarded_for, raw.real_ip, trusted);
    assert_eq!(got.is_none(), peer.is_none(), "an address needs a peer");
    if let Some(ip) = got {
        assert!(canonical(ip), "{ip} not canonical");
    }
    if let Some(p) = peer
        && !trusted.contains(p)
    {
        assert_eq!(
            got,
            Some(p),
            "forwarded headers believed from untrusted peer {p}"
        );
    }
    let want = reference_client_ip(peer, &raw.forwarded_for, raw.real_ip, trusted);
    assert_eq!(
        got,
        want,
        "client IP differs from the reference (peer {peer:?}, xff {:?}, real ip {:?}, trusted {:?})",
        raw.forwarded_for
            .iter()
            .map(|v| String::from_utf8_lossy(v))
            .collect::<Vec<_>>(),
        raw.real_ip.map(String::from_utf8_lossy),
        trusted.nets()
    );
}

fn expected_credential(value: Option<&[u8]>, max: usize) -> Option<String> {
    let value = value?;
    if value.is_empty() || value.len() > max {
        return None;
    }
    String::from_utf8(value.to_vec()).ok()
}

fn check_decision_request(raw: &RawRequest<'_>, trusted: &TrustedProxies) {
    let req = decision_request(raw, trusted);
    let peer = raw.source_address.and_then(parse_source_address);
    let ip = resolve_client_ip(peer, &raw.forwarded_for, raw.real_ip, trusted);
    assert_eq!(req.ip, ip.map(|ip| ip.to_string()).unwrap_or_default());
    assert_eq!(
        req.api_key,
        expected_credential(raw.api_key, MAX_API_KEY_BYTES)
    );
    assert_eq!(
        req.authorization,
        expected_credential(raw.authorization, MAX_AUTHORIZATION_BYTES)
    );
    assert!(req.method.len() <= MAX_METHOD_BYTES);
    assert!(req.path.len() <= MAX_PATH_BYTES);
    assert!(!req.path.contains(['?', '#']), "{:?}", req.path);
    // The path keeps everything before the query, up to the bound.
    let raw_path = raw.path.unwrap_or_default();
    let cut = raw_path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(raw_path.len());
    let full = String::from_utf8_lossy(&raw_path[..cut]);
    assert!(full.starts_with(&req.path), "path is not a prefix");
    if full.len() <= MAX_PATH_BYTES {
        assert_eq!(req.path, full);
    }

    let body = encode_decision_request(req.clone());
    assert!(
        body.len() <= MAX_DECISION_REQUEST_BYTES,
        "decision request of {} bytes",
        body.len()
    );
    // The control plane's first check: a JSON object.
    assert_eq!(body.first(), Some(&b'{'));
    let sent: DecisionRequest = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("decision request does not parse: {e}"));
    assert_eq!(sent.ip, req.ip, "the client IP is never dropped");
    assert!(req.path.starts_with(&sent.path), "path is not a prefix");
    assert!(sent.method.is_empty() || sent.method == req.method);
    assert!(sent.api_key.is_none() || sent.api_key == req.api_key);
    assert!(sent.authorization.is_none() || sent.authorization == req.authorization);
    // Dropping order: the Authorization first, then the API key, then path and method.
    if sent.api_key.is_none() && req.api_key.is_some() {
        assert!(
            sent.authorization.is_none(),
            "API key dropped before the token"
        );
    }
    if sent.path != req.path || sent.method != req.method {
        assert!(sent.api_key.is_none() && sent.authorization.is_none());
    }
    if sent.method != req.method {
        assert!(
            sent.path.is_empty(),
            "method dropped while the path is left"
        );
    }
    // Nothing is dropped from a request that fits as it is.
    let whole = serde_json::to_vec(&req).expect("a DecisionRequest serialises");
    if whole.len() <= MAX_DECISION_REQUEST_BYTES {
        assert_eq!(sent, req);
    }
}

/// Flags of a `filter_response` input (first line, first byte).
const FAIL_OPEN: u8 = 1;
const RESET: u8 = 2;
const DISPATCH_FAILED: u8 = 4;
const NO_STATUS: u8 = 8;
const HOST_GAVE_NO_BODY: u8 = 16;
const ANNOUNCED_TOO_LARGE: u8 = 32;

/// `filter_response` input:
///
/// ```text
/// flags (first byte; see the constants above, e.g. `0` fail closed, `1` fail open)
/// :status of the decision response
/// body (the rest, newlines included; `~` expansion applies)
/// ```
pub fn check_response(data: &[u8]) {
    let (head, rest) = split_head(data, b'\n', 2);
    let flags = head[0].and_then(|f| f.first()).copied().unwrap_or(0);
    let status = head[1];
    let body = expand(rest);
    let fail_open = flags & FAIL_OPEN != 0;

    // What the glue hands over: the body only when its announced size is readable.
    let size = if flags & ANNOUNCED_TOO_LARGE != 0 {
        MAX_DECISION_RESPONSE_BYTES + 1 + body.len()
    } else {
        body.len()
    };
    let read = (CallBody::should_read(size) && flags & HOST_GAVE_NO_BODY == 0).then_some(&*body);
    let result = if flags & DISPATCH_FAILED != 0 {
        CallResult::DispatchFailed
    } else if flags & RESET != 0 {
        CallResult::Reset
    } else {
        CallResult::Response {
            status: if flags & NO_STATUS != 0 { None } else { status },
            body: CallBody::from_read(size, read),
        }
    };
    let decision = response::decide(result, fail_open);
    if let Some(err) = &decision.error {
        let _ = err.to_string();
    }

    // Reference: a usable answer is a 200 with a readable DecisionResponse (a deny must name
    // its counter); everything else is the filter's own fail_open.
    let usable: Option<DecisionResponse> = match result {
        CallResult::Response {
            status: Some(b"200"),
            body: CallBody::Bytes(bytes),
        } => serde_json::from_slice::<DecisionResponse>(bytes)
            .ok()
            .filter(|r| r.verdict != Verdict::Deny || r.counter.is_some()),
        _ => None,
    };
    let expected = match &usable {
        None if fail_open => Outcome::FailedOpen,
        None => Outcome::FailedClosed,
        Some(r) => match r.verdict {
            Verdict::Allow => Outcome::Allowed,
            Verdict::Deny => Outcome::Denied,
            Verdict::Unavailable => Outcome::Unavailable,
            Verdict::Whitelisted => Outcome::Whitelisted,
            Verdict::Disabled => Outcome::Disabled,
            Verdict::FailedOpen => Outcome::FailedOpen,
        },
    };
    assert_eq!(decision.outcome, expected, "{result:?}");
    assert_eq!(decision.error.is_some(), usable.is_none(), "{result:?}");

    let headers = match &decision.action {
        Action::Resume { response_headers } => response_headers,
        Action::Reply(reply) => &reply.headers,
    };
    for (name, value) in headers {
        assert!(
            !value.is_empty() && value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
            "unsafe value for {name}: {value:?}"
        );
    }
    match (&decision.action, decision.outcome) {
        (Action::Resume { response_headers }, Outcome::Allowed) => {
            for (name, _) in response_headers {
                assert!(
                    [HEADER_LIMIT, HEADER_REMAINING, HEADER_RESET, HEADER_TIER].contains(name),
                    "{name} on an allowed request"
                );
            }
        }
        (Action::Resume { response_headers }, Outcome::Whitelisted)
        | (Action::Resume { response_headers }, Outcome::Disabled)
        | (Action::Resume { response_headers }, Outcome::FailedOpen) => {
            assert!(response_headers.is_empty(), "{response_headers:?}");
        }
        (Action::Reply(reply), Outcome::Denied) => {
            assert_eq!(reply.status, 429);
            let get = |name| {
                reply
                    .headers
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.as_str())
            };
            let retry_after: u64 = get(HEADER_RETRY_AFTER)
                .and_then(|v| v.parse().ok())
                .expect("429 without a numeric Retry-After");
            assert!(retry_after >= 1);
            assert_eq!(get(HEADER_CONTENT_TYPE), Some("application/json"));
            assert!(get(HEADER_LIMIT).is_some(), "429 without X-RateLimit-Limit");
            let body: serde_json::Value =
                serde_json::from_slice(&reply.body).expect("429 body is JSON");
            assert_eq!(body["error"]["code"], "rate_limit_exceeded");
            assert_eq!(body["error"]["details"]["retry_after_seconds"], retry_after);
        }
        (Action::Reply(reply), Outcome::Unavailable | Outcome::FailedClosed) => {
            assert_eq!(*reply, response::unavailable_reply());
        }
        (action, outcome) => panic!("{outcome:?} with {action:?}"),
    }
}

/// `filter_config` input: the plugin configuration (the JSON string in the Envoy config).
/// Whatever it accepts must be usable as it is: a non-empty cluster, an `:authority` Envoy
/// accepts, a timeout in range, a lowercase header name, a secret without blank ends.
pub fn check_config(raw: &[u8]) {
    let Ok(config) = PluginConfig::from_json(raw) else {
        return;
    };
    assert!(!config.cluster.trim().is_empty());
    assert!(
        !config.authority.is_empty() && config.authority.bytes().all(|b| b.is_ascii_graphic()),
        "accepted :authority {:?} is not printable ASCII without spaces",
        config.authority
    );
    let ms = config.timeout.as_millis();
    assert!((1..=u128::from(MAX_TIMEOUT_MS)).contains(&ms));
    assert!(!config.api_key_header.is_empty());
    assert_eq!(
        config.api_key_header,
        config.api_key_header.to_ascii_lowercase()
    );
    if let Some(secret) = &config.decision_secret {
        assert!(!secret.is_empty() && secret.trim() == secret);
    }
    let _ = format!("{config:?}");
}
