//! Properties of the filter's hostile-input surface: identity evidence (client IP, the
//! decision request) and the mapping of whatever the control plane answers.

use std::net::IpAddr;

use rate_limit_filter::client_ip::{
    IpNet, TrustedProxies, parse_source_address, resolve_client_ip,
};
use rate_limit_filter::config::{HeaderSets, MAX_TIMEOUT_MS, PluginConfig};
use rate_limit_filter::evidence::{
    MAX_API_KEY_BYTES, MAX_AUTHORIZATION_BYTES, MAX_METHOD_BYTES, MAX_PATH_BYTES, RawRequest,
    decision_request, encode_decision_request,
};
use rate_limit_filter::ietf_fields::{HEADER_RATELIMIT, HEADER_RATELIMIT_POLICY};
use rate_limit_filter::response::{
    self, Action, CallBody, CallResult, HEADER_CONTENT_TYPE, HEADER_LIMIT, HEADER_REMAINING,
    HEADER_RESET, HEADER_RETRY_AFTER, HEADER_TIER, Headers, MAX_DECISION_RESPONSE_BYTES, Outcome,
    ResponseHeaders,
};
use rl_wire::{
    CounterReport, DecisionRequest, DecisionResponse, MAX_DECISION_REQUEST_BYTES, PolicyReport,
    Verdict,
};

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
/// The plugin's `headers` leaves out `x-ratelimit` / `ietf` (neither bit: both sets, the
/// default).
const NO_X_RATELIMIT: u8 = 64;
const NO_IETF: u8 = 128;

/// `filter_response` input:
///
/// ```text
/// flags (first byte; see the constants above, e.g. `0x00` fail closed, `0x01` fail open)
/// :status of the decision response
/// body (the rest, newlines included; `~` expansion applies)
/// ```
pub fn check_response(data: &[u8]) {
    let (head, rest) = split_head(data, b'\n', 2);
    let flags = head[0].and_then(|f| f.first()).copied().unwrap_or(0);
    let status = head[1];
    let body = expand(rest);
    let fail_open = flags & FAIL_OPEN != 0;
    let sets = HeaderSets {
        x_ratelimit: flags & NO_X_RATELIMIT == 0,
        ietf: flags & NO_IETF == 0,
    };

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
    let decision = response::decide(result, fail_open, sets);
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

    let headers: Vec<&(&str, String)> = match &decision.action {
        Action::Resume { response_headers } => response_headers
            .replace
            .iter()
            .chain(&response_headers.append)
            .collect(),
        Action::Reply(reply) => reply.headers.iter().collect(),
    };
    for (name, value) in headers {
        assert!(
            !value.is_empty() && value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
            "unsafe value for {name}: {value:?}"
        );
    }
    match (&decision.action, decision.outcome) {
        (Action::Resume { response_headers }, Outcome::Allowed) => {
            for (name, _) in &response_headers.replace {
                assert!(
                    sets.x_ratelimit
                        && [HEADER_LIMIT, HEADER_REMAINING, HEADER_RESET, HEADER_TIER]
                            .contains(name),
                    "{name} on an allowed request with {sets:?}"
                );
            }
            let answer = usable.as_ref().expect("allowed: a usable answer");
            let counter = answer.counter.as_ref();
            check_ietf_fields(
                &response_headers.append,
                sets,
                answer,
                counter.and_then(|c| c.reset_after),
            );
        }
        (Action::Resume { response_headers }, Outcome::Whitelisted)
        | (Action::Resume { response_headers }, Outcome::Disabled)
        | (Action::Resume { response_headers }, Outcome::FailedOpen) => {
            assert_eq!(*response_headers, ResponseHeaders::default());
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
            assert_eq!(
                get(HEADER_LIMIT).is_some(),
                sets.x_ratelimit,
                "X-RateLimit-Limit on a 429 with {sets:?}"
            );
            let answer = usable.as_ref().expect("denied: a usable answer");
            let ietf: Headers = reply
                .headers
                .iter()
                .filter(|(n, _)| [HEADER_RATELIMIT_POLICY, HEADER_RATELIMIT].contains(n))
                .cloned()
                .collect();
            // `t` of the 429 is its Retry-After, whatever the answer's reset_after says.
            check_ietf_fields(&ietf, sets, answer, Some(retry_after));
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

/// An sf-string as RFC 9651 allows it (printable ASCII), or nothing.
fn sf_string_ok(text: &str) -> bool {
    text.bytes().all(|b| (b' '..=b'~').contains(&b))
}

/// The largest sf-integer (15 digits).
const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

/// A field value as an RFC 9651 List of (string, integer parameters); panics otherwise.
fn parse_list(name: &str, value: &str) -> Vec<(String, Vec<(String, u64)>)> {
    let list: sfv::List = sfv::Parser::new(value)
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {value:?} is not a structured List: {e}"));
    list.into_iter()
        .map(|entry| {
            let sfv::ListEntry::Item(item) = entry else {
                panic!("{name}: {value:?} has an inner list");
            };
            let text = item
                .bare_item
                .as_string()
                .unwrap_or_else(|| panic!("{name}: {value:?}: an item that is not a string"))
                .as_str()
                .to_owned();
            let params = item
                .params
                .iter()
                .map(|(key, v)| {
                    let n = v
                        .as_integer()
                        .and_then(|n| u64::try_from(i64::from(n)).ok())
                        .unwrap_or_else(|| panic!("{name}: {value:?}: {key:?} not a count"));
                    (key.as_str().to_owned(), n)
                })
                .collect();
            (text, params)
        })
        .collect()
}

/// The IETF fields of a response against a reference written from the answer: one
/// `RateLimit-Policy` item per policy that a structured field can carry, `RateLimit` for the
/// binding policy with `r` and `t` (`reset`), nothing without policies or without the set.
fn check_ietf_fields(
    sent: &Headers,
    sets: HeaderSets,
    answer: &DecisionResponse,
    reset: Option<u64>,
) {
    let fits = |n: u64| n <= SF_INTEGER_MAX;
    let want_policy: Vec<(String, Vec<(String, u64)>)> = answer
        .policies
        .iter()
        .filter(|p: &&PolicyReport| sf_string_ok(&p.name) && fits(p.limit) && fits(p.window))
        .map(|p| {
            let params = vec![("q".to_owned(), p.limit), ("w".to_owned(), p.window)];
            (p.name.clone(), params)
        })
        .collect();
    let want_ratelimit = answer
        .counter
        .as_ref()
        .and_then(|c: &CounterReport| c.policy.as_ref().map(|name| (name, c.remaining)))
        .filter(|(name, remaining)| {
            sf_string_ok(name) && fits(*remaining) && reset.is_none_or(fits)
        })
        .map(|(name, remaining)| {
            let mut params = vec![("r".to_owned(), remaining)];
            params.extend(reset.map(|t| ("t".to_owned(), t)));
            vec![(name.clone(), params)]
        });
    let on = sets.ietf && !answer.policies.is_empty();
    let field = |name: &str| -> Option<Vec<(String, Vec<(String, u64)>)>> {
        let lines: Vec<&String> = sent
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .collect();
        assert!(lines.len() <= 1, "{name} twice: {sent:?}");
        lines.first().map(|v| parse_list(name, v))
    };
    let policy = field(HEADER_RATELIMIT_POLICY);
    let ratelimit = field(HEADER_RATELIMIT);
    if !on {
        assert_eq!((policy, ratelimit), (None, None), "{sets:?}, {answer:?}");
        return;
    }
    let want_policy = (!want_policy.is_empty()).then_some(want_policy);
    assert_eq!(policy, want_policy, "RateLimit-Policy of {answer:?}");
    assert_eq!(ratelimit, want_ratelimit, "RateLimit of {answer:?}");
    assert_eq!(
        sent.len(),
        usize::from(policy.is_some()) + usize::from(ratelimit.is_some())
    );
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
    // `headers` was a list of known set names, each once; absent means both.
    let value: serde_json::Value = serde_json::from_slice(raw).unwrap_or_default();
    match value.get("headers") {
        None => assert_eq!(config.headers, HeaderSets::ALL),
        Some(list) => {
            let names: Vec<&str> = list
                .as_array()
                .expect("accepted headers is a list")
                .iter()
                .map(|v| v.as_str().expect("accepted header set is a string"))
                .collect();
            assert!(names.len() <= 2, "{names:?}");
            let want = HeaderSets {
                x_ratelimit: names.contains(&"x-ratelimit"),
                ietf: names.contains(&"ietf"),
            };
            assert_eq!(config.headers, want, "{names:?}");
            assert_eq!(
                names.len(),
                usize::from(want.x_ratelimit) + usize::from(want.ietf),
                "{names:?}"
            );
        }
    }
    let _ = format!("{config:?}");
}
