//! The decision: identity → tier → counters → store → answer for the filter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rl_wire::{CounterReport, DecisionRequest, DecisionResponse, Verdict};

use crate::config::Tier;
use crate::identity::{self, Identity};
use crate::live_config::SharedConfig;
use crate::rules::normalize_path;
use crate::store::{CounterSpec, CounterState, CounterStore, Outcome, StoreError, keys};

/// Bounds on the evidence; longer values cannot be registered keys and are ignored.
const MAX_API_KEY_LEN: usize = 1024;
const MAX_AUTHORIZATION_LEN: usize = 8 * 1024;

/// A decision with what the service needs besides the filter's answer (metrics, logs).
#[derive(Debug)]
pub struct Decision {
    pub response: DecisionResponse,
    /// Identifier judged (absent when rate limiting is disabled).
    pub identity: Option<String>,
    /// Endpoint rule that applied to the request, if any.
    pub rule: Option<String>,
    pub store_error: Option<StoreError>,
}

pub struct Decider {
    config: SharedConfig,
    store: Arc<dyn CounterStore>,
    store_errors: ErrorLog,
}

/// Logs store errors at most once per second: while Redis is down every decision fails, and
/// one line per request would flood the logs exactly when operators read them.
struct ErrorLog {
    last_us: AtomicU64,
    suppressed: AtomicU64,
    epoch: Instant,
}

impl ErrorLog {
    fn new() -> Self {
        Self {
            last_us: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn warn(&self, err: &StoreError, fail_open: bool) {
        let now = self.epoch.elapsed().as_micros() as u64 + 1_000_000;
        let last = self.last_us.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1_000_000
            || self
                .last_us
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        let outcome = if fail_open {
            "admitted (fail_open)"
        } else {
            "refused (fail closed)"
        };
        tracing::warn!(error = %err, suppressed, outcome, "counter store error");
    }
}

/// A counter taking part in one decision, with what the answer needs to describe it.
struct Applied<'a> {
    spec: CounterSpec,
    /// Rule pattern for endpoint counters, `None` for the tier budget.
    rule: Option<&'a str>,
}

impl Decider {
    pub fn new(config: SharedConfig, store: Arc<dyn CounterStore>) -> Self {
        Self {
            config,
            store,
            store_errors: ErrorLog::new(),
        }
    }

    pub fn store(&self) -> &Arc<dyn CounterStore> {
        &self.store
    }

    pub async fn decide(&self, req: &DecisionRequest) -> Decision {
        let cfg = self.config.load();
        match plan(&cfg, req) {
            Plan::Done(decision) => decision,
            Plan::Count(count) => {
                let result = self
                    .store
                    .check_and_record(&count.who.id, &count.specs)
                    .await;
                self.finish(&cfg, count, result)
            }
        }
    }

    /// Decides several requests, in order, as if each had come alone: the counter checks go to
    /// the store together (one round trip where the store can), in the order given, so two
    /// requests of one identity in one batch are counted one after the other.
    pub async fn decide_batch(&self, requests: &[DecisionRequest]) -> Vec<Decision> {
        let cfg = self.config.load();
        let plans: Vec<Plan<'_>> = requests.iter().map(|req| plan(&cfg, req)).collect();
        let calls: Vec<(&str, &[CounterSpec])> = plans
            .iter()
            .filter_map(|p| match p {
                Plan::Count(c) => Some((c.who.id.as_str(), c.specs.as_slice())),
                Plan::Done(_) => None,
            })
            .collect();
        let mut results = if calls.is_empty() {
            Vec::new()
        } else {
            self.store.check_and_record_many(&calls).await
        }
        .into_iter();
        let mut decisions = Vec::with_capacity(plans.len());
        for p in plans {
            decisions.push(match p {
                Plan::Done(decision) => decision,
                Plan::Count(count) => {
                    let result = results.next().unwrap_or_else(|| {
                        Err(StoreError::Protocol("batch: missing store result".into()))
                    });
                    self.finish(&cfg, count, result)
                }
            });
        }
        decisions
    }

    fn finish(
        &self,
        cfg: &crate::config::CompiledConfig,
        count: Count<'_>,
        result: Result<Outcome, StoreError>,
    ) -> Decision {
        match result {
            Ok(outcome) => Decision {
                response: answer(count.tier, &count.applied, &outcome, &count.path),
                identity: Some(count.who.id),
                rule: count.rule,
                store_error: None,
            },
            Err(err) => {
                self.store_errors.warn(&err, cfg.fail_open());
                let verdict = if cfg.fail_open() {
                    Verdict::FailedOpen
                } else {
                    Verdict::Unavailable
                };
                Decision {
                    response: bare(verdict),
                    identity: Some(count.who.id),
                    rule: count.rule,
                    store_error: Some(err),
                }
            }
        }
    }
}

/// What a request needs before the store is asked.
enum Plan<'a> {
    /// Decided without counting (disabled, whitelisted, nothing to count).
    Done(Decision),
    Count(Count<'a>),
}

struct Count<'a> {
    who: Identity,
    tier: &'a Tier,
    applied: Vec<Applied<'a>>,
    specs: Vec<CounterSpec>,
    path: String,
    rule: Option<String>,
}

fn plan<'a>(cfg: &'a crate::config::CompiledConfig, req: &DecisionRequest) -> Plan<'a> {
    if !cfg.enabled() {
        return Plan::Done(Decision {
            response: bare(Verdict::Disabled),
            identity: None,
            rule: None,
            store_error: None,
        });
    }
    let ip = identity::parse_client_ip(&req.ip);
    let api_key = req
        .api_key
        .as_deref()
        .filter(|k| !k.is_empty() && k.len() <= MAX_API_KEY_LEN);
    let authorization = req
        .authorization
        .as_deref()
        .filter(|a| a.len() <= MAX_AUTHORIZATION_LEN);
    let who = identity::resolve(cfg, ip, api_key, authorization);
    if cfg.is_whitelisted(ip, &who.id) {
        return Plan::Done(Decision {
            response: bare(Verdict::Whitelisted),
            identity: Some(who.id),
            rule: None,
            store_error: None,
        });
    }
    let tier = cfg.tier(who.tier);
    let path = normalize_path(&req.path);
    let matched = tier.rules.longest_match(&path);
    let applied = counters_for(&who, tier, matched);
    let rule = matched.map(|(pattern, _)| pattern.to_string());
    if applied.is_empty() {
        // Unlimited tier and no endpoint rule: nothing to count.
        return Plan::Done(Decision {
            response: DecisionResponse {
                verdict: Verdict::Allow,
                tier: Some(tier.name.clone()),
                counter: None,
            },
            identity: Some(who.id),
            rule,
            store_error: None,
        });
    }
    let specs = applied.iter().map(|a| a.spec.clone()).collect();
    Plan::Count(Count {
        who,
        tier,
        applied,
        specs,
        path,
        rule,
    })
}

fn bare(verdict: Verdict) -> DecisionResponse {
    DecisionResponse {
        verdict,
        tier: None,
        counter: None,
    }
}

fn counters_for<'a>(
    who: &Identity,
    tier: &Tier,
    matched: Option<(&'a str, u64)>,
) -> Vec<Applied<'a>> {
    let window_us = tier.window.as_micros() as u64;
    let mut applied = Vec::with_capacity(2);
    if let Some(budget) = tier.budget {
        applied.push(Applied {
            spec: CounterSpec {
                key: keys::budget_key(&who.id),
                limit: budget,
                window_us,
            },
            rule: None,
        });
    }
    if let Some((pattern, limit)) = matched {
        applied.push(Applied {
            spec: CounterSpec {
                key: keys::rule_key(&who.id, pattern),
                limit,
                window_us,
            },
            rule: Some(pattern),
        });
    }
    applied
}

/// Longest path echoed back as the 429's `endpoint` (rules are shown whole): the client's
/// own path is only a hint there, and echoing kilobytes of it would bloat every denial.
const MAX_ECHOED_PATH: usize = 256;

fn bounded(path: &str) -> &str {
    if path.len() <= MAX_ECHOED_PATH {
        return path;
    }
    let mut end = MAX_ECHOED_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

fn ceil_secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// Builds the answer from the store's outcome.
///
/// Allowed: the headers describe the counter with the least remaining (ties: the lower
/// limit). Denied: among the full counters, the same rule picks the one described, and
/// `Retry-After`/`X-RateLimit-Reset` give the moment every full counter has room again, so a
/// client that waits that long is not denied again by another counter.
fn answer(tier: &Tier, applied: &[Applied<'_>], outcome: &Outcome, path: &str) -> DecisionResponse {
    let pairs = applied.iter().zip(outcome.counters.iter());
    let remaining = |a: &Applied<'_>, s: &CounterState| a.spec.limit.saturating_sub(s.count);
    let candidates: Vec<(&Applied<'_>, &CounterState)> = if outcome.admitted {
        pairs.collect()
    } else {
        pairs.filter(|(a, s)| s.count >= a.spec.limit).collect()
    };
    let binding = candidates
        .iter()
        .min_by_key(|(a, s)| (remaining(a, s), a.spec.limit))
        .or_else(|| candidates.first());
    let Some(&(bound, state)) = binding else {
        // The store reported no counter: cannot happen for a non-empty request; answer
        // conservatively without headers rather than inventing figures.
        return bare(if outcome.admitted {
            Verdict::FailedOpen
        } else {
            Verdict::Unavailable
        });
    };
    let endpoint = bound.rule.unwrap_or_else(|| bounded(path)).to_string();
    let window = tier.window.as_secs();
    if outcome.admitted {
        return DecisionResponse {
            verdict: Verdict::Allow,
            tier: Some(tier.name.clone()),
            counter: Some(CounterReport {
                limit: bound.spec.limit,
                remaining: remaining(bound, state),
                reset: ceil_secs(state.free_at_us),
                retry_after: None,
                window,
                endpoint,
                reset_at: None,
            }),
        };
    }
    let free_at = candidates
        .iter()
        .map(|(_, s)| s.free_at_us)
        .max()
        .unwrap_or(state.free_at_us);
    let retry_after = ceil_secs(free_at.saturating_sub(outcome.now_us)).max(1);
    let reset = ceil_secs(free_at).max(ceil_secs(outcome.now_us) + 1);
    DecisionResponse {
        verdict: Verdict::Deny,
        tier: Some(tier.name.clone()),
        counter: Some(CounterReport {
            limit: bound.spec.limit,
            remaining: 0,
            reset,
            retry_after: Some(retry_after),
            window,
            endpoint,
            reset_at: Some(rfc3339(reset)),
        }),
    }
}

/// The current time as RFC 3339 (UTC), for JSON answers.
pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(now)
}

/// Unix seconds as RFC 3339 (UTC); empty when out of range.
pub fn rfc3339(unix_secs: u64) -> String {
    let formatted = i64::try_from(unix_secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    formatted.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CompiledConfig, parse_yaml};
    use crate::live_config;
    use crate::store::{ManualClock, MemoryStore};

    const T0: u64 = 1_700_000_000_000_000;

    fn decider(yaml: &str) -> (Arc<ManualClock>, Decider) {
        let clock = Arc::new(ManualClock::new(T0));
        let cfg = CompiledConfig::compile(parse_yaml(yaml).unwrap()).unwrap();
        let store = Arc::new(MemoryStore::with_clock(clock.clone()));
        (clock, Decider::new(live_config::shared(cfg), store))
    }

    fn req(ip: &str, path: &str) -> DecisionRequest {
        DecisionRequest {
            ip: ip.into(),
            method: "GET".into(),
            path: path.into(),
            ..Default::default()
        }
    }

    const BASIC: &str = r#"
default_tier: free
tiers:
  - name: free
    requests_per_window: 3
    window_size_seconds: 60
    endpoints:
      /api/v1/request: 2
"#;

    #[tokio::test]
    async fn allows_with_headers_then_denies_with_retry_after() {
        let (clock, d) = decider(BASIC);
        let first = d.decide(&req("10.0.0.1", "/other")).await.response;
        assert_eq!(first.verdict, Verdict::Allow);
        let c = first.counter.unwrap();
        assert_eq!((c.limit, c.remaining, c.window), (3, 2, 60));
        assert_eq!(c.reset, T0 / 1_000_000 + 60);
        assert_eq!(c.endpoint, "/other");
        clock.advance(10_000_000);
        d.decide(&req("10.0.0.1", "/other")).await;
        d.decide(&req("10.0.0.1", "/other")).await;
        let denied = d.decide(&req("10.0.0.1", "/other")).await.response;
        assert_eq!(denied.verdict, Verdict::Deny);
        let c = denied.counter.unwrap();
        assert_eq!((c.limit, c.remaining), (3, 0));
        assert_eq!(c.retry_after, Some(50));
        assert_eq!(c.reset, T0 / 1_000_000 + 60);
        assert_eq!(c.reset_at.as_deref(), Some("2023-11-14T22:14:20Z"));
        // Other clients are independent.
        assert_eq!(
            d.decide(&req("10.0.0.2", "/other")).await.response.verdict,
            Verdict::Allow
        );
    }

    #[tokio::test]
    async fn endpoint_rule_binds_before_the_budget_and_headers_show_least_remaining() {
        let (_clock, d) = decider(BASIC);
        let a = d.decide(&req("10.0.0.1", "/api/v1/request?x=1")).await;
        assert_eq!(a.rule.as_deref(), Some("/api/v1/request"));
        let c = a.response.counter.unwrap();
        assert_eq!((c.limit, c.remaining), (2, 1), "rule has 1 left, budget 2");
        d.decide(&req("10.0.0.1", "/api/v1//request")).await;
        let denied = d
            .decide(&req("10.0.0.1", "/api/v1/./request"))
            .await
            .response;
        assert_eq!(denied.verdict, Verdict::Deny);
        assert_eq!(denied.counter.unwrap().endpoint, "/api/v1/request");
        // The denial consumed nothing: the budget still has one request left.
        let other = d.decide(&req("10.0.0.1", "/other")).await.response;
        assert_eq!(other.verdict, Verdict::Allow);
        assert_eq!(other.counter.unwrap().remaining, 0);
    }

    #[tokio::test]
    async fn disabled_and_whitelisted_requests_carry_no_counter() {
        let (_c, d) = decider(&format!("{BASIC}whitelist: [\"10.1.0.0/16\"]\n"));
        let r = d.decide(&req("10.1.2.3", "/x")).await.response;
        assert_eq!(r, bare(Verdict::Whitelisted));
        let (_c, d) = decider(&format!("enabled: false\n{BASIC}"));
        let r = d.decide(&req("10.0.0.1", "/x")).await.response;
        assert_eq!(r, bare(Verdict::Disabled));
    }

    #[tokio::test]
    async fn unlimited_tier_without_rule_reports_only_the_tier() {
        let (_c, d) = decider(
            "default_tier: unlimited\ntiers:\n  - name: unlimited\n    unlimited: true\n    endpoints:\n      /limited: 1\n",
        );
        for _ in 0..50 {
            let r = d.decide(&req("10.0.0.1", "/x")).await.response;
            assert_eq!(r.verdict, Verdict::Allow);
            assert_eq!(r.tier.as_deref(), Some("unlimited"));
            assert!(r.counter.is_none());
        }
        assert_eq!(
            d.decide(&req("10.0.0.1", "/limited"))
                .await
                .response
                .verdict,
            Verdict::Allow
        );
        assert_eq!(
            d.decide(&req("10.0.0.1", "/limited"))
                .await
                .response
                .verdict,
            Verdict::Deny
        );
    }

    #[tokio::test]
    async fn long_paths_are_echoed_bounded() {
        let (_c, d) = decider("default_tier: t\ntiers:\n  - name: t\n    requests_per_window: 1\n");
        let long = format!("/{}", "é".repeat(3000));
        d.decide(&req("10.0.0.1", &long)).await;
        let denied = d.decide(&req("10.0.0.1", &long)).await.response;
        let endpoint = denied.counter.unwrap().endpoint;
        assert!(
            endpoint.len() <= MAX_ECHOED_PATH && endpoint.starts_with("/é"),
            "{endpoint}"
        );
        assert_eq!(bounded("/short"), "/short");
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(u64::MAX), "");
    }
}
