//! Properties of the control plane's hostile-input surface: path normalisation and rule
//! matching, the decision call, and the configuration parser.
//!
//! This file depends only on `control_plane`, `rl_wire`, `serde_json` and `tokio`, so the
//! workspace's own test suite compiles it too (`tests/tests/fuzz_regressions.rs` includes it
//! with `#[path]`), next to [`crate::input`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use control_plane::config::{
    CompiledConfig, ConfigError, EndpointRule, RateLimitConfig, TierConfig, Window, parse_json,
    parse_yaml, parse_yaml_bytes, redacted, restore_secrets,
};
use control_plane::decision::{Decider, rfc3339};
use control_plane::live_config::{self, SharedConfig};
use control_plane::rules::{RuleSet, check_rule_pattern, normalize_path};
use control_plane::store::{ManualClock, MemoryStore};
use rl_wire::{
    CounterReport, DecisionRequest, DecisionResponse, MAX_DECISION_REQUEST_BYTES, PolicyReport,
    Verdict,
};

use crate::input::{fields, text};

// ---------------------------------------------------------------------------------------------
// Path normalisation and rule matching

/// At most this many rules per input.
const MAX_RULES: usize = 32;

/// The longest matching rule, by the book (docs/PRODUCT.md §2 "Endpoint rules"): an exact rule matches
/// its own path, `P/*` every path starting with `P/`; the longest literal wins and an exact
/// rule wins a tie. Quadratic and obvious on purpose.
pub fn naive_longest_match<'a>(
    path: &str,
    rules: impl IntoIterator<Item = (&'a str, u64)>,
) -> Option<(&'a str, u64)> {
    // (literal length, exact), rule
    type Ranked<'a> = ((usize, bool), (&'a str, u64));
    let mut best: Option<Ranked<'a>> = None;
    for (pattern, limit) in rules {
        let (literal, exact) = match pattern.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('/') => (prefix, false),
            _ => (pattern, true),
        };
        let hit = if exact {
            path == literal
        } else {
            path.starts_with(literal)
        };
        let rank = (literal.len(), exact);
        if hit && best.as_ref().is_none_or(|(r, _)| rank > *r) {
            best = Some((rank, (pattern, limit)));
        }
    }
    best.map(|(_, rule)| rule)
}

fn check_normal_form(raw: &str, n: &str) {
    assert!(n.starts_with('/'), "{raw:?} -> {n:?}");
    assert!(!n.contains("//"), "{raw:?} -> {n:?}");
    assert!(!n.contains(['?', '#']), "{raw:?} -> {n:?}");
    assert!(
        n.split('/').all(|s| s != "." && s != ".."),
        "dot segment: {raw:?} -> {n:?}"
    );
    // Escaped slashes and backslashes are slashes (no spelling of a separator survives).
    let upper = n.to_ascii_uppercase();
    assert!(
        !n.contains('\\') && !upper.contains("%2F") && !upper.contains("%5C"),
        "separator spelling kept: {raw:?} -> {n:?}"
    );
    // Linear output: decoding only shrinks, at most a leading '/' is added.
    assert!(n.len() <= raw.len() + 1, "{raw:?} grew to {n:?}");
}

/// A rule pattern from an arbitrary line: normalised, with a trailing `*` kept as a prefix
/// rule. `None` when the result is not a valid pattern (whitespace, control characters or a
/// `*` inside), which must then be the only reason.
fn pattern_from(line: &str) -> Option<String> {
    let pattern = match line.strip_suffix('*') {
        Some(base) => {
            let mut literal = normalize_path(base);
            if !literal.ends_with('/') {
                literal.push('/');
            }
            literal + "*"
        }
        None => normalize_path(line),
    };
    match check_rule_pattern(&pattern) {
        Ok(()) => Some(pattern),
        Err(message) => {
            let literal = match pattern.strip_suffix('*') {
                Some(prefix) if prefix.ends_with('/') => prefix,
                _ => &pattern,
            };
            assert!(
                literal.contains('*')
                    || literal.chars().any(|c| c.is_whitespace() || c.is_control()),
                "normalised pattern {pattern:?} (from {line:?}) refused: {message}"
            );
            None
        }
    }
}

/// `path_rules` input: the first line is a request path, every further line a rule pattern
/// (normalised first; a trailing `*` makes it a prefix rule). Lines that are valid patterns
/// as written are also checked to be in normal form.
pub fn check_path_rules(data: &[u8]) {
    let lines = fields(data, b'\n');
    let raw = text(lines[0]);
    let normalized = normalize_path(&raw);
    check_normal_form(&raw, &normalized);
    assert_eq!(
        normalize_path(&normalized),
        normalized,
        "not idempotent: {raw:?}"
    );
    assert_eq!(
        normalize_path(&format!("/{raw}")),
        normalized,
        "rooting changed {raw:?}"
    );
    assert_eq!(
        normalize_path(&format!("{raw}?q=1#f")),
        normalized,
        "query changed {raw:?}"
    );
    // What normalisation keeps: a plain segment appended to a normal path stays as written,
    // so a function that drops segments (or maps every path to one) fails here.
    let base = normalized.strip_suffix('/').unwrap_or(&normalized);
    let longer = format!("{base}/seg-1.x~");
    assert_eq!(
        normalize_path(&longer),
        longer,
        "segment lost after {raw:?}"
    );
    // A normalised path is a valid exact pattern unless it holds what patterns forbid.
    if !normalized.contains('*')
        && !normalized
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        assert_eq!(check_rule_pattern(&normalized), Ok(()), "{normalized:?}");
    }

    let mut rules: BTreeMap<String, u64> = BTreeMap::new();
    for (i, line) in lines.iter().skip(1).take(MAX_RULES).enumerate() {
        let line = text(line);
        // Whatever validation accepts is in normal form and matches its own literal.
        if check_rule_pattern(&line).is_ok() {
            let literal = line.strip_suffix('*').unwrap_or(&line);
            assert_eq!(
                normalize_path(literal),
                literal,
                "accepted pattern {line:?}"
            );
        }
        if let Some(pattern) = pattern_from(&line) {
            rules.insert(pattern, i as u64 + 1);
        }
    }
    let set = RuleSet::new(rules.iter().map(|(p, &l)| (p.clone(), l)));
    let rule_list = || rules.iter().map(|(p, &l)| (p.as_str(), l));
    let lookup = |path: &str| set.longest_match(path).map(|(p, &l)| (p, l));
    assert_eq!(
        lookup(&normalized),
        naive_longest_match(&normalized, rule_list()),
        "path {normalized:?}, rules {rules:?}"
    );
    // Every rule's own literal, and a path below it, agree with the reference too.
    for (pattern, _) in rule_list() {
        let literal = pattern.strip_suffix('*').unwrap_or(pattern);
        for path in [literal.to_string(), format!("{literal}x")] {
            assert_eq!(
                lookup(&path),
                naive_longest_match(&path, rule_list()),
                "path {path:?}, rules {rules:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration parser

/// `config_yaml` input: a YAML document (bytes, as read from the file).
pub fn check_config_yaml(data: &[u8]) {
    match parse_yaml_bytes(data) {
        Ok(cfg) => check_parsed(cfg),
        Err(e) => check_error(&e),
    }
}

/// `config_json` input: a JSON document (the body of a config PUT).
pub fn check_config_json(data: &[u8]) {
    match parse_json(data) {
        Ok(cfg) => check_parsed(cfg),
        Err(e) => check_error(&e),
    }
}

fn check_error(e: &ConfigError) {
    let shown = e.to_string();
    let path = e.path();
    if !path.is_empty() {
        assert!(
            shown.starts_with(path),
            "{shown:?} does not start with {path:?}"
        );
    }
}

/// A parsed document: compile it; when accepted, it must survive the JSON round trip the
/// admin API and Redis propagation put it through, and redaction must be reversible.
pub fn check_parsed(cfg: RateLimitConfig) {
    let valid = cfg.validate();
    let compiled = match CompiledConfig::compile(cfg.clone()) {
        Ok(compiled) => compiled,
        Err(e) => {
            check_error(&e);
            if valid.is_ok() {
                // Validation must catch everything but an unusable RSA key, which only the
                // JWT library can judge.
                assert_eq!(e.path(), "jwt.rs256_public_key_pem", "{e}");
            }
            return;
        }
    };
    assert!(
        valid.is_ok(),
        "compiled although validation fails: {valid:?}"
    );

    let json = serde_json::to_vec(compiled.source()).expect("a config serialises");
    let back = parse_json(&json).unwrap_or_else(|e| {
        panic!(
            "accepted config does not parse back from its JSON: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(back, cfg, "JSON round trip changed the config");
    let again = CompiledConfig::compile(back).expect("round-tripped config compiles");
    assert_eq!(again.tiers().len(), compiled.tiers().len());

    // GET shows the redacted form; a PUT of it restores the secrets.
    let shown = redacted(&cfg);
    let shown_json = serde_json::to_vec(&shown).expect("serialises");
    let mut put = parse_json(&shown_json).expect("the redacted config parses");
    assert_eq!(put, shown);
    restore_secrets(&mut put, &cfg).expect("redacted secrets restore");
    assert_eq!(put, cfg, "redaction is not reversible");

    // The compiled lookups agree with the document.
    assert_eq!(compiled.enabled(), cfg.enabled);
    assert_eq!(compiled.fail_open(), cfg.fail_open);
    assert_eq!(
        compiled.tier(compiled.default_tier()).name,
        cfg.default_tier
    );
    let mut names = HashSet::new();
    for (tier, doc) in compiled.tiers().iter().zip(&cfg.tiers) {
        assert_eq!(tier.name, doc.name);
        assert_eq!(
            compiled
                .tier_by_name(&doc.name)
                .map(|id| &compiled.tier(id).name),
            Some(&doc.name)
        );
        let tier_windows = written_tier_windows(&cfg, doc);
        assert_eq!(
            windows_of(&tier.windows),
            tier_windows,
            "tier {:?}",
            doc.name
        );
        check_none_dominated(&tier_windows, &[], &doc.name);
        for (pattern, rule) in &doc.endpoints {
            let literal = pattern.strip_suffix('*').unwrap_or(pattern);
            assert_eq!(
                normalize_path(literal),
                literal,
                "validated pattern {pattern:?}"
            );
            let rules = doc.endpoints.keys().map(|p| (p.as_str(), 0));
            assert_eq!(
                tier.rules.longest_match(literal).map(|(p, _)| p),
                naive_longest_match(literal, rules).map(|(p, _)| p),
                "{pattern:?}"
            );
            let (found, windows) = tier
                .rules
                .entries()
                .find(|(p, _)| p == pattern)
                .expect("every rule is compiled");
            assert_eq!(found, pattern);
            let rule_windows = written_rule_windows(&cfg, doc, pattern, rule);
            assert_eq!(windows_of(&windows.windows), rule_windows, "{pattern:?}");
            // A compiled rule costs what it says (1 in the shorthand), within every window
            // it is taken from.
            let cost = match rule {
                EndpointRule::Limit(_) => 1,
                EndpointRule::Rule(r) => r.cost,
            };
            assert_eq!(windows.cost, cost, "{pattern:?}");
            assert!(
                windows
                    .windows
                    .iter()
                    .chain(&tier.windows)
                    .all(|w| w.limit >= cost),
                "{pattern:?}: a cost above a window's limit was accepted"
            );
            check_none_dominated(&rule_windows, &tier_windows, pattern);
            if !pattern.ends_with("/*") {
                assert_eq!(
                    tier.rules.longest_match(pattern).map(|(p, _)| p),
                    Some(pattern.as_str())
                );
            }
        }
        // Policy names: ASCII, unique per (counter, window) across the configuration.
        let rule_windows = tier.rules.entries().flat_map(|(_, w)| w);
        for window in tier.windows.iter().chain(rule_windows) {
            assert!(
                window.policy.bytes().all(|b| b.is_ascii_graphic()),
                "{:?}",
                window.policy
            );
            assert!(
                names.insert(window.policy.clone()),
                "policy name {:?} twice",
                window.policy
            );
        }
    }
    for key in &cfg.api_keys {
        if let Some(raw) = &key.key {
            let found = compiled.lookup_api_key(raw.as_bytes());
            assert_eq!(
                found,
                Some((key.id.as_str(), compiled.tier_by_name(&key.tier).unwrap()))
            );
        }
    }
    for entry in &cfg.whitelist {
        if let Some(id) = entry.strip_prefix("key:") {
            assert!(
                compiled.is_whitelisted(None, &format!("key:{id}")),
                "{entry:?}"
            );
        } else if let Some(sub) = entry.strip_prefix("user:") {
            assert!(
                compiled.is_whitelisted(None, &format!("user:{sub}")),
                "{entry:?}"
            );
        } else if let Ok(ip) = entry.strip_prefix("ip:").unwrap_or(entry).parse::<IpAddr>() {
            assert!(compiled.is_whitelisted(Some(ip), "ip:unknown"), "{entry:?}");
        }
    }
    let _ = format!("{compiled:?}");
}

/// A window as the reference reads it from the document: (limit, seconds, shadow, policy).
type RefWindow = (u64, u64, bool, String);

fn windows_of(windows: &[Window]) -> Vec<RefWindow> {
    windows
        .iter()
        .map(|w| (w.limit, w.length.as_secs(), w.shadow, w.policy.clone()))
        .collect()
}

/// The policy name by the documented rule: `<tier>-<W>s`, `<tier>-<pattern>-<W>s`, every
/// byte of the pattern outside printable ASCII, and `%`, written `%XX`.
fn reference_policy(tier: &str, pattern: Option<&str>, seconds: u64) -> String {
    match pattern {
        None => format!("{tier}-{seconds}s"),
        Some(pattern) => {
            let encoded: String = pattern
                .bytes()
                .map(|b| {
                    if (0x21..0x7f).contains(&b) && b != b'%' {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{tier}-{encoded}-{seconds}s")
        }
    }
}

/// A tier's windows from the document: none when unlimited, else `limits` or the shorthand.
fn written_tier_windows(cfg: &RateLimitConfig, tier: &TierConfig) -> Vec<RefWindow> {
    let shadow = cfg.shadow || tier.shadow;
    if tier.unlimited {
        return Vec::new();
    }
    let pairs: Vec<(u64, u64)> = match (&tier.limits, tier.requests_per_window) {
        (Some(limits), _) => limits.iter().map(|w| (w.limit, w.window_seconds)).collect(),
        (None, Some(limit)) => vec![(limit, tier.window_size_seconds)],
        (None, None) => Vec::new(),
    };
    pairs
        .into_iter()
        .map(|(limit, seconds)| {
            (
                limit,
                seconds,
                shadow,
                reference_policy(&tier.name, None, seconds),
            )
        })
        .collect()
}

fn written_rule_windows(
    cfg: &RateLimitConfig,
    tier: &TierConfig,
    pattern: &str,
    rule: &EndpointRule,
) -> Vec<RefWindow> {
    let (pairs, shadow): (Vec<(u64, u64)>, bool) = match rule {
        EndpointRule::Limit(limit) => (vec![(*limit, tier.window_size_seconds)], false),
        EndpointRule::Rule(rule) => (
            rule.limits
                .iter()
                .map(|w| (w.limit, w.window_seconds))
                .collect(),
            rule.shadow,
        ),
    };
    let shadow = cfg.shadow || tier.shadow || shadow;
    pairs
        .into_iter()
        .map(|(limit, seconds)| {
            (
                limit,
                seconds,
                shadow,
                reference_policy(&tier.name, Some(pattern), seconds),
            )
        })
        .collect()
}

/// An accepted configuration has no window that can never bind: no other enforced window
/// applying to the same requests is at least as long with a limit at or below its own.
fn check_none_dominated(own: &[RefWindow], enclosing: &[RefWindow], what: &str) {
    for (i, (limit, seconds, _, name)) in own.iter().enumerate() {
        let others = own
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, w)| w)
            .chain(enclosing);
        for (other_limit, other_seconds, other_shadow, other_name) in others {
            assert!(
                *other_shadow || other_seconds < seconds || other_limit > limit,
                "{what}: accepted window {name} can never bind beside {other_name}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The decision call

/// The configuration every `decision` input is judged under. Small limits, so denials are
/// reachable within a few requests; several windows on a tier and on a rule; shadowed rules
/// and a shadowed tier (whose `shadow: false` rule stays shadowed).
pub const DECISION_CONFIG: &str = concat!(
    r#"
default_tier: free
fail_open: false
tiers:
  - name: free
    limits:
      - {limit: 2, window_seconds: 1}
      - {limit: 5, window_seconds: 10}
    window_size_seconds: 10
    endpoints:
      /api/v1/request: 3
      /api/v1/admin/*: 2
      /api/v1/admin/special: 1
      /api/v1/search:
        limits: [{limit: 1, window_seconds: 1}, {limit: 3, window_seconds: 30}]
      /api/v1/new:
        limits: [{limit: 1, window_seconds: 10}]
        shadow: true
  - name: premium
    requests_per_window: 50
    window_size_seconds: 60
    endpoints:
      /api/v1/request: 20
      /*: 40
      /api/v1/trial/*:
        limits: [{limit: 2, window_seconds: 5}, {limit: 4, window_seconds: 60}]
        shadow: true
  - name: unlimited
    unlimited: true
    shadow: true
    endpoints:
      /api/v1/expensive: 2
      /api/v1/cheap:
        limits: [{limit: 3, window_seconds: 5}]
        shadow: false
whitelist: ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32", "ip:192.0.2.7", "key:ops", "user:healthchecker"]
api_keys:
  - {id: premium-key, tier: premium, key: premium-key-0123456789}
  - {id: unlimited-key, tier: unlimited, key: unlimited-key-0123456789}
  - {id: ops, tier: free, key: ops-key-0123456789abcdef}
  - {id: hashed, tier: premium, key_sha256: 62c5559717da6012427d84b732fdf7292e3426e5a620fd08af73ebf6300f6d91}
jwt:
  hs256_secret: fuzz-secret-0123456789abcdef-0123456789
  tier_claim: tier
  rs256_public_key_pem: |
"#,
    // Indented into the block scalar above by `decision_config_yaml`.
    include_str!("../../tests/fixtures/jwt-test-rs256-public.pem")
);

/// [`DECISION_CONFIG`] with the PEM indented into its block scalar.
pub fn decision_config_yaml() -> String {
    let (head, pem) = DECISION_CONFIG
        .split_once("rs256_public_key_pem: |\n")
        .expect("marker");
    let mut out = format!("{head}rs256_public_key_pem: |\n");
    for line in pem.lines() {
        out.push_str("    ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A window of the reference: (limit, seconds, shadow).
type WindowSpec = (u64, u64, bool);

struct TierSpec {
    name: &'static str,
    windows: &'static [WindowSpec],
    rules: &'static [(&'static str, &'static [WindowSpec])],
}

/// [`DECISION_CONFIG`]'s tiers, written out again for the reference model.
const TIERS: [TierSpec; 3] = [
    TierSpec {
        name: "free",
        windows: &[(2, 1, false), (5, 10, false)],
        rules: &[
            ("/api/v1/request", &[(3, 10, false)]),
            ("/api/v1/admin/*", &[(2, 10, false)]),
            ("/api/v1/admin/special", &[(1, 10, false)]),
            ("/api/v1/search", &[(1, 1, false), (3, 30, false)]),
            ("/api/v1/new", &[(1, 10, true)]),
        ],
    },
    TierSpec {
        name: "premium",
        windows: &[(50, 60, false)],
        rules: &[
            ("/api/v1/request", &[(20, 60, false)]),
            ("/*", &[(40, 60, false)]),
            ("/api/v1/trial/*", &[(2, 5, true), (4, 60, true)]),
        ],
    },
    TierSpec {
        name: "unlimited",
        windows: &[],
        rules: &[
            ("/api/v1/expensive", &[(2, 60, true)]),
            ("/api/v1/cheap", &[(3, 5, true)]),
        ],
    },
];

/// (raw key, id, tier) of [`DECISION_CONFIG`]'s API keys.
const KEYS: [(&str, &str, &str); 4] = [
    ("premium-key-0123456789", "premium-key", "premium"),
    ("unlimited-key-0123456789", "unlimited-key", "unlimited"),
    ("ops-key-0123456789abcdef", "ops", "free"),
    ("hashed-key-0123456789", "hashed", "premium"),
];

/// Valid tokens for [`DECISION_CONFIG`] (expiring in 2100): (token, user, tier claim).
/// Each user has one tier, so a user's counters always keep their windows.
pub const TOKENS: [(&str, &str, Option<&str>); 5] = [
    (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsInRpZXIiOiJwcmVtaXVtIiwiZXhwIjo0MTAyNDQ0ODAwfQ.XB3dP-z9BpkIWYA1oUl37B3EYh7Rnp5wYLXDhlgxzeM",
        "alice",
        Some("premium"),
    ),
    (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJoZWFsdGhjaGVja2VyIiwiZXhwIjo0MTAyNDQ0ODAwfQ.amKCPW3xea3gAq2Qlp4hlX4xxlk9-ReyA8r07O68FKQ",
        "healthchecker",
        None,
    ),
    (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJib2IiLCJ0aWVyIjoicGxhdGludW0iLCJleHAiOjQxMDI0NDQ4MDB9.PEg75qaMuhEMupTGTS-D5t9DwVlw8rlqflQHsnuwddg",
        "bob",
        Some("platinum"),
    ),
    (
        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJjYXJvbCIsInRpZXIiOiJ1bmxpbWl0ZWQiLCJleHAiOjQxMDI0NDQ4MDB9.fmOHyIccOPyH4KauApwQ6rC7Edn9xVyk64rGiGJ-ujUYYiFI5muE_2Lx0ZYWJf4VjP0WSjL0b6mVuAeTpIIlSpIQF-CS0ZeR4UnTzawoUjyu68jXxbIzgqHfJ51d53Rj7xHxm7gHSZAIjv768Lsa1T06ysL2-98OyedEyhT3Wb0w8WX7thXK9vtYPnHNeWgAHzC8E5Eple4I3vMWaAfrLLzanijZEep6WQ8ydSsPoqL5z9wFWYVO_4Pz8eJDlNeAiQKoYpKroaSgiR-E5oSXbwu8MgbxH07kQcT6jJ_w7dWVm0ZYEE1oJFiE3lQPM7a4QjTAT5Xf4qKIJXFklzX94g",
        "carol",
        Some("unlimited"),
    ),
    (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOjQyLCJ0aWVyIjoiZnJlZSIsImV4cCI6NDEwMjQ0NDgwMH0.po95kKSsfOoU2OWuEiN7N8RaAF3mW0G5hkYumHndW6E",
        "42",
        Some("free"),
    ),
];

/// The compiled [`DECISION_CONFIG`], once per process (compiling parses an RSA key).
pub fn decision_config() -> SharedConfig {
    static CONFIG: OnceLock<SharedConfig> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let cfg = parse_yaml(&decision_config_yaml()).expect("DECISION_CONFIG parses");
            live_config::shared(CompiledConfig::compile(cfg).expect("DECISION_CONFIG compiles"))
        })
        .clone()
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
}

/// Runs a future to completion on this thread's runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(future))
}

/// Where decision calls go: the real HTTP router (fuzz crate) or the handler's steps called
/// directly ([`DirectEndpoint`]).
pub trait DecisionEndpoint {
    /// One `POST /internal/v1/decision` with this body: (HTTP status, response body).
    fn call(&mut self, body: Vec<u8>) -> (u16, Vec<u8>);
}

/// The decision handler's steps without the HTTP stack: the body limit, "a JSON object",
/// the `DecisionRequest` parse, then [`Decider::decide`].
pub struct DirectEndpoint {
    pub decider: Arc<Decider>,
}

impl DecisionEndpoint for DirectEndpoint {
    fn call(&mut self, body: Vec<u8>) -> (u16, Vec<u8>) {
        let invalid = |message: String| {
            let body =
                serde_json::json!({"error": {"code": "invalid_request", "message": message}});
            (400, serde_json::to_vec(&body).unwrap())
        };
        if body.len() > MAX_DECISION_REQUEST_BYTES {
            return (413, b"length limit exceeded".to_vec());
        }
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return invalid("decision request: expected a JSON object".into());
        }
        let request: DecisionRequest = match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(e) => return invalid(format!("decision request: {e}")),
        };
        let decision = block_on(self.decider.decide(&request));
        (200, serde_json::to_vec(&decision.response).unwrap())
    }
}

/// One decision call of an input, for checks the caller adds.
#[derive(Debug)]
pub struct Exchange {
    /// The request, when the body was one.
    pub request: Option<DecisionRequest>,
    pub status: u16,
    pub body: Vec<u8>,
}

/// Start of the store's manual clock (Unix µs).
pub const T0_US: u64 = 1_700_000_000_000_000;
/// Clock step per unit of a record's first byte.
const STEP_US: u64 = 200_000;
/// A record's first byte with this bit set pads the body beyond the body limit.
const PAD_BIT: u8 = 0x80;
/// Records of a `decision` input are separated by ASCII RS, which no JSON document contains.
pub const RECORD_SEPARATOR: u8 = 0x1e;
const MAX_RECORDS: usize = 48;

/// `decision` input: records separated by [`RECORD_SEPARATOR`]. A record's first byte moves
/// the store's clock forward by `(byte & 0x7f) * 200 ms` (bit 7 pads the body past 16 KiB);
/// the rest is the body of one decision call. A fresh in-memory store per input, the fixed
/// [`DECISION_CONFIG`], and every answer checked against a reference model of identity,
/// whitelist, rules and exact sliding windows.
pub fn check_decision<E: DecisionEndpoint>(
    data: &[u8],
    endpoint: impl FnOnce(Arc<Decider>) -> E,
) -> Vec<Exchange> {
    let clock = Arc::new(ManualClock::new(T0_US));
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let decider = Decider::new(decision_config(), store, clock.clone());
    let mut endpoint = endpoint(Arc::new(decider));
    let mut model = Model::default();
    let mut now = T0_US;
    let mut exchanges = Vec::new();
    for record in data.split(|&b| b == RECORD_SEPARATOR).take(MAX_RECORDS) {
        let Some((&control, body)) = record.split_first() else {
            continue;
        };
        now += u64::from(control & !PAD_BIT) * STEP_US;
        clock.set(now);
        let mut body = body.to_vec();
        if control & PAD_BIT != 0 {
            body.resize(body.len() + MAX_DECISION_REQUEST_BYTES, b' ');
        }
        let (status, answer) = endpoint.call(body.clone());
        let request = check_exchange(&mut model, now, &body, status, &answer);
        exchanges.push(Exchange {
            request,
            status,
            body: answer,
        });
    }
    exchanges
}

fn check_exchange(
    model: &mut Model,
    now: u64,
    body: &[u8],
    status: u16,
    answer: &[u8],
) -> Option<DecisionRequest> {
    if body.len() > MAX_DECISION_REQUEST_BYTES {
        assert_eq!(status, 413, "oversized body");
        return None;
    }
    let is_object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let parsed = serde_json::from_slice::<DecisionRequest>(body)
        .ok()
        .filter(|_| is_object);
    let Some(request) = parsed else {
        assert_eq!(
            status,
            400,
            "not a decision request: {}",
            String::from_utf8_lossy(body)
        );
        let error: serde_json::Value = serde_json::from_slice(answer).expect("400 answer is JSON");
        assert_eq!(error["error"]["code"], "invalid_request");
        return None;
    };
    assert_eq!(status, 200, "decision request refused: {request:?}");
    let got: DecisionResponse =
        serde_json::from_slice(answer).expect("answer is a DecisionResponse");
    let want = model.decide(&request, now);
    assert_eq!(got, want, "request {request:?} at +{} µs", now - T0_US);
    Some(request)
}

/// The reference: what the decision for `request` must be, from the specification alone.
#[derive(Default)]
struct Model {
    /// Admitted timestamps per counter.
    counters: HashMap<String, Vec<u64>>,
}

fn reference_ip(raw: &str) -> Option<IpAddr> {
    if raw.len() > 64 {
        return None;
    }
    raw.trim()
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

fn whitelisted_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.octets()[0] == 10
                || v4 == std::net::Ipv4Addr::new(127, 0, 0, 1)
                || v4 == std::net::Ipv4Addr::new(192, 0, 2, 7)
        }
        IpAddr::V6(v6) => v6.segments()[..2] == [0x2001, 0x0db8],
    }
}

fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn ceil_secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

impl Model {
    fn decide(&mut self, req: &DecisionRequest, now: u64) -> DecisionResponse {
        let bare = |verdict| DecisionResponse {
            verdict,
            tier: None,
            counter: None,
            policies: Vec::new(),
            shadow_denied: false,
            deny_for_ms: None,
            lease: None,
            usage: None,
        };
        let ip = reference_ip(&req.ip);
        let key = req
            .api_key
            .as_deref()
            .filter(|k| !k.is_empty() && k.len() <= 1024)
            .and_then(|k| KEYS.iter().find(|(raw, _, _)| *raw == k));
        let token = req
            .authorization
            .as_deref()
            .filter(|a| a.len() <= 8 * 1024)
            .and_then(bearer)
            .and_then(|t| TOKENS.iter().find(|(token, _, _)| *token == t));
        let (identity, tier_name) = match (key, token) {
            (Some((_, id, tier)), _) => (format!("key:{id}"), *tier),
            (None, Some((_, user, claim))) => {
                let tier = claim
                    .filter(|c| TIERS.iter().any(|t| t.name == *c))
                    .unwrap_or("free");
                (format!("user:{user}"), tier)
            }
            (None, None) => match ip {
                // IPv6 clients count as their /64 (the default `ipv6_prefix_length`).
                Some(IpAddr::V6(v6)) => {
                    let mut segments = v6.segments();
                    segments[4..].fill(0);
                    let network = std::net::Ipv6Addr::from(segments);
                    (format!("ip:{network}/64"), "free")
                }
                Some(ip) => (format!("ip:{ip}"), "free"),
                None => ("ip:unknown".to_string(), "free"),
            },
        };
        if ip.is_some_and(whitelisted_ip)
            || identity == "key:ops"
            || identity == "user:healthchecker"
        {
            return bare(Verdict::Whitelisted);
        }
        let tier = TIERS.iter().find(|t| t.name == tier_name).unwrap();
        let path = normalize_path(&req.path);
        let rule = naive_longest_match(
            &path,
            tier.rules
                .iter()
                .enumerate()
                .map(|(i, (p, _))| (*p, i as u64)),
        )
        .map(|(pattern, i)| (pattern, tier.rules[i as usize].1));
        // Every window that applies, tier first: (counter, window, rule pattern).
        let mut applied: Vec<(String, WindowSpec, Option<&str>)> = Vec::new();
        for &window in tier.windows {
            applied.push((format!("{identity}\0budget\0{}", window.1), window, None));
        }
        if let Some((pattern, windows)) = rule {
            for &window in windows {
                applied.push((
                    format!("{identity}\0rule\0{pattern}\0{}", window.1),
                    window,
                    Some(pattern),
                ));
            }
        }
        if applied.is_empty() {
            return DecisionResponse {
                verdict: Verdict::Allow,
                tier: Some(tier.name.to_string()),
                counter: None,
                policies: Vec::new(),
                shadow_denied: false,
                deny_for_ms: None,
                lease: None,
                usage: None,
            };
        }
        let name = |(_, secs, _): WindowSpec, rule: Option<&str>| match rule {
            // The configuration's patterns are plain ASCII.
            Some(pattern) => format!("{}-{pattern}-{secs}s", tier.name),
            None => format!("{}-{secs}s", tier.name),
        };
        let policies: Vec<PolicyReport> = applied
            .iter()
            .map(|&(_, window, rule)| PolicyReport {
                name: name(window, rule),
                limit: window.0,
                window: window.1,
            })
            .collect();
        // Entries in (now - W, now], oldest first; a window is full at its limit.
        let logs: Vec<Vec<u64>> = applied
            .iter()
            .map(|(key, (_, secs, _), _)| {
                let log = self.counters.entry(key.clone()).or_default();
                log.retain(|&ts| ts + secs * 1_000_000 > now);
                log.clone()
            })
            .collect();
        let full: Vec<bool> = applied
            .iter()
            .zip(&logs)
            .map(|((_, (limit, _, _), _), log)| log.len() as u64 >= *limit)
            .collect();
        // Only enforced windows refuse.
        let admitted = applied
            .iter()
            .zip(&full)
            .all(|((_, (_, _, shadow), _), &full)| *shadow || !full);
        // The control plane echoes a rule whole, the path cut to 256 bytes (on a char
        // boundary): a client's path is only a hint in a 429 body.
        let echoed = {
            let mut end = path.len().min(256);
            while !path.is_char_boundary(end) {
                end -= 1;
            }
            &path[..end]
        };
        let endpoint = |rule: Option<&str>| rule.unwrap_or(echoed).to_string();
        // (remaining, limit, free at, index): the window described is the least remaining,
        // then the lower limit, then the longer wait, then the first.
        type Described = (u64, u64, u64, usize);
        let better = |a: &Described, b: &Option<Described>| {
            b.is_none_or(|b| (a.0, a.1) < (b.0, b.1) || ((a.0, a.1) == (b.0, b.1) && a.2 > b.2))
        };
        if admitted {
            let mut described: Option<Described> = None;
            let mut shadow_full = false;
            for (i, ((key, (limit, secs, shadow), _), log)) in applied.iter().zip(&logs).enumerate()
            {
                let window = secs * 1_000_000;
                // A shadow window with no room is left as it is.
                let mut counted = log.clone();
                if full[i] {
                    shadow_full |= *shadow;
                } else {
                    self.counters.get_mut(key).unwrap().push(now);
                    counted.push(now);
                }
                let count = counted.len() as u64;
                let oldest = counted[count.saturating_sub(*limit) as usize];
                let candidate = (limit.saturating_sub(count), *limit, oldest + window, i);
                if better(&candidate, &described) {
                    described = Some(candidate);
                }
            }
            let (remaining, limit, free_at, i) = described.unwrap();
            let (_, window, rule) = applied[i];
            return DecisionResponse {
                verdict: Verdict::Allow,
                tier: Some(tier.name.to_string()),
                counter: Some(CounterReport {
                    limit,
                    remaining,
                    reset: ceil_secs(free_at),
                    retry_after: None,
                    window: window.1,
                    endpoint: endpoint(rule),
                    reset_at: None,
                    policy: Some(name(window, rule)),
                    reset_after: Some(ceil_secs(free_at - now)),
                    units: false,
                }),
                policies,
                shadow_denied: shadow_full,
                deny_for_ms: None,
                lease: None,
                usage: None,
            };
        }
        // Denied: nothing recorded. Described: among the full enforced windows, by the same
        // rule; the client may retry once every full enforced window has room.
        let mut described: Option<Described> = None;
        let mut free_at = 0;
        for (i, ((_, (limit, secs, shadow), _), log)) in applied.iter().zip(&logs).enumerate() {
            if *shadow || !full[i] {
                continue;
            }
            let count = log.len() as u64;
            let room_at = log[(count - limit) as usize] + secs * 1_000_000;
            free_at = free_at.max(room_at);
            let candidate = (0, *limit, room_at, i);
            if better(&candidate, &described) {
                described = Some(candidate);
            }
        }
        let (_, limit, binding_room_at, i) = described.unwrap();
        let (_, window, rule) = applied[i];
        // Retry-After and Reset round the same instant: when every full window has room.
        let free_at = free_at.max(now + 1);
        let reset = ceil_secs(free_at);
        let retry_after = ceil_secs(free_at - now);
        DecisionResponse {
            verdict: Verdict::Deny,
            tier: Some(tier.name.to_string()),
            counter: Some(CounterReport {
                limit,
                remaining: 0,
                reset,
                retry_after: Some(retry_after),
                window: window.1,
                endpoint: endpoint(rule),
                // Date formatting is not what this model checks: the product's own is used.
                reset_at: Some(rfc3339(reset)),
                policy: Some(name(window, rule)),
                reset_after: Some(retry_after),
                units: false,
            }),
            policies,
            shadow_denied: false,
            // The binding window stays full until it has room: that long, in whole ms (rounded
            // down), may the filter answer the same request itself.
            deny_for_ms: Some((binding_room_at - now) / 1_000).filter(|&ms| ms > 0),
            lease: None,
            usage: None,
        }
    }
}
