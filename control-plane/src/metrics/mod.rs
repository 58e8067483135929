//! Decision metrics of this replica: the JSON view (`/api/v1/rate-limit/metrics`) and the
//! Prometheus view (`/metrics`) are fed by the same counters.
//!
//! Label values are bounded: `tier` is a configured tier (or `none` when no tier was judged),
//! `endpoint` a configured endpoint rule or `other`, `policy` a configured window's policy
//! name, `decision` one of seven words. Identities are never labels. The bound holds across changes too: the series of a tier or rule a
//! change removed are dropped ([`Metrics::follow_config`]), not kept for the life of the
//! process.

mod histogram;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use rl_wire::Verdict;
use serde::Serialize;

pub use histogram::LatencyHistogram;

use crate::config::CompiledConfig;
use crate::store::{BreakerState, CounterStore, StoreError};

/// Label of requests whose endpoint matches no configured rule.
pub const OTHER_ENDPOINT: &str = "other";
/// Tier label of decisions that judged no tier (whitelisted, disabled).
pub const NO_TIER: &str = "none";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    tier: String,
    endpoint: String,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThrottleLabels {
    tier: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    tier: String,
    policy: String,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabels {
    tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    source: &'static str,
    result: &'static str,
}

/// The decision label of an admitted request that a shadowed window would have refused.
pub const SHADOW_THROTTLED: &str = "shadow_throttled";

/// The word for a verdict in metrics and logs.
pub fn decision_label(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Allow => "allowed",
        Verdict::Deny => "throttled",
        Verdict::Unavailable => "unavailable",
        Verdict::Whitelisted => "whitelisted",
        Verdict::Disabled => "disabled",
        Verdict::FailedOpen => "failed_open",
    }
}

fn error_kind(err: &StoreError) -> &'static str {
    match err {
        StoreError::CircuitOpen => "circuit_open",
        StoreError::Timeout(_) => "timeout",
        StoreError::Backend(_) | StoreError::Address(_) => "backend",
        // A call Redis refused and a reply we cannot read are both our bug, not an outage.
        StoreError::Refused(_) | StoreError::Protocol(_) => "protocol",
        // Counted apart (`rate_limit_store_full_refusals`): the store works as designed.
        StoreError::Full(_) => "store_full",
    }
}

/// What one decision contributes to the metrics.
pub struct Observation<'a> {
    pub verdict: Verdict,
    pub tier: Option<&'a str>,
    /// The endpoint rule matching the request, if any.
    pub rule: Option<&'a str>,
    /// The window that refused the request (a deny), or the shadowed window that would have
    /// (an admitted request with `shadow_denied`).
    pub policy: Option<&'a str>,
    /// Admitted, but a shadowed window had no room.
    pub shadow_denied: bool,
    pub store_error: Option<&'a StoreError>,
    pub elapsed: Duration,
}

impl Observation<'_> {
    /// The `decision` label: the verdict's word, or [`SHADOW_THROTTLED`].
    fn decision(&self) -> &'static str {
        if self.verdict == Verdict::Allow && self.shadow_denied {
            SHADOW_THROTTLED
        } else {
            decision_label(self.verdict)
        }
    }
}

const VERDICTS: [Verdict; 6] = [
    Verdict::Allow,
    Verdict::Deny,
    Verdict::Unavailable,
    Verdict::Whitelisted,
    Verdict::Disabled,
    Verdict::FailedOpen,
];

fn verdict_index(verdict: Verdict) -> usize {
    VERDICTS.iter().position(|&v| v == verdict).unwrap_or(0)
}

/// The (tier, endpoint) label pairs the configuration in force can produce: a configured
/// tier with `other` or one of its rules, and `none` (no tier judged: whitelisted, disabled,
/// store failure) with `other` or any rule; and the (tier, policy) pairs of its windows.
#[derive(Debug, Default)]
struct LabelScope {
    /// `None` until the first configuration: every pair is admitted.
    rules_by_tier: Option<HashMap<String, HashSet<String>>>,
    /// Policy name → its tier; `None` until the first configuration.
    policies: Option<HashMap<String, String>>,
}

/// Every window's (policy name, tier) of a configuration.
fn policies_of(cfg: &CompiledConfig) -> HashMap<String, String> {
    let mut policies = HashMap::new();
    for tier in cfg.tiers() {
        let rule_windows = tier.rules.entries().flat_map(|(_, windows)| windows);
        for window in tier.windows.iter().chain(rule_windows) {
            policies.insert(window.policy.clone(), tier.name.clone());
        }
    }
    policies
}

impl LabelScope {
    fn of(cfg: &CompiledConfig) -> LabelScope {
        let mut rules_by_tier: HashMap<String, HashSet<String>> = HashMap::new();
        let mut every_rule = HashSet::new();
        for tier in cfg.tiers() {
            let rules: HashSet<String> = tier.rules.patterns().map(str::to_string).collect();
            every_rule.extend(rules.iter().cloned());
            rules_by_tier.insert(tier.name.clone(), rules);
        }
        rules_by_tier.insert(NO_TIER.to_string(), every_rule);
        LabelScope {
            rules_by_tier: Some(rules_by_tier),
            policies: Some(policies_of(cfg)),
        }
    }

    fn admits_policy(&self, tier: &str, policy: &str) -> bool {
        self.policies
            .as_ref()
            .is_none_or(|map| map.get(policy).is_some_and(|t| t == tier))
    }

    fn has_policy(&self, policy: &str) -> bool {
        self.policies
            .as_ref()
            .is_none_or(|map| map.contains_key(policy))
    }

    /// Every (tier, policy) pair this scope admits (none before the first configuration).
    fn policy_pairs(&self) -> Vec<(String, String)> {
        self.policies
            .iter()
            .flatten()
            .map(|(policy, tier)| (tier.clone(), policy.clone()))
            .collect()
    }

    fn admits(&self, tier: &str, endpoint: &str) -> bool {
        match &self.rules_by_tier {
            None => true,
            Some(map) => map
                .get(tier)
                .is_some_and(|rules| endpoint == OTHER_ENDPOINT || rules.contains(endpoint)),
        }
    }

    /// Every pair this scope admits (none before the first configuration).
    fn pairs(&self) -> Vec<(String, String)> {
        let Some(map) = &self.rules_by_tier else {
            return Vec::new();
        };
        let mut pairs = Vec::new();
        for (tier, rules) in map {
            for endpoint in rules.iter().map(String::as_str).chain([OTHER_ENDPOINT]) {
                pairs.push((tier.clone(), endpoint.to_string()));
            }
        }
        pairs
    }

    /// The configured tiers (without `none`).
    fn tiers(&self) -> Vec<String> {
        self.rules_by_tier.as_ref().map_or_else(Vec::new, |map| {
            map.keys().filter(|t| *t != NO_TIER).cloned().collect()
        })
    }

    fn has_tier(&self, tier: &str) -> bool {
        self.rules_by_tier
            .as_ref()
            .is_none_or(|map| map.contains_key(tier))
    }

    fn has_endpoint(&self, endpoint: &str) -> bool {
        endpoint == OTHER_ENDPOINT
            || self.rules_by_tier.as_ref().is_none_or(|map| {
                map.get(NO_TIER)
                    .is_some_and(|rules| rules.contains(endpoint))
            })
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    throttled: Family<ThrottleLabels, Counter>,
    by_policy: Family<PolicyLabels, Counter>,
    store_errors: Family<ErrorLabels, Counter>,
    store_full_refusals: Counter,
    deny_cache_hits: Counter,
    config_reloads: Family<ReloadLabels, Counter>,
    previous_secret: Counter,
    units_charged: Family<TierLabels, Counter>,
    units_released: Family<TierLabels, Counter>,
    latency: LatencyHistogram,
    by_verdict: [AtomicU64; 6],
    shadow_throttled_total: AtomicU64,
    store_error_total: AtomicU64,
    throttled_by_tier: Mutex<BTreeMap<String, u64>>,
    throttled_by_endpoint: Mutex<BTreeMap<String, u64>>,
    throttled_by_policy: Mutex<BTreeMap<String, u64>>,
    shadow_throttled_by_policy: Mutex<BTreeMap<String, u64>>,
    /// Which tier/endpoint labels may have series. Observations hold it for reading while
    /// they touch labelled series, so a change that drops series cannot interleave with a
    /// decision of the old configuration creating them again.
    scope: RwLock<LabelScope>,
}

/// Scrape-time view of the store: backend and circuit breaker.
struct StoreCollector(Arc<dyn CounterStore>);

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.backend())
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(identities) = self.0.identities() {
            let tracked = ConstGauge::new(i64::try_from(identities).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(
                "rate_limit_memory_identities",
                "Identities the in-memory store tracks (at most --memory-max-identities)",
                None,
                tracked.metric_type(),
            )?;
            tracked.encode(metric)?;
        }
        let Some(state) = self.0.breaker_state() else {
            return Ok(());
        };
        let open = ConstGauge::new(i64::from(state == BreakerState::Open));
        let metric = encoder.encode_descriptor(
            "rate_limit_circuit_breaker_open",
            "1 while the Redis circuit breaker is open (decisions fail fast)",
            None,
            open.metric_type(),
        )?;
        open.encode(metric)?;
        let opened = ConstCounter::new(self.0.breaker_opened_total());
        let metric = encoder.encode_descriptor(
            "rate_limit_circuit_breaker_opened",
            "Times the Redis circuit breaker has opened",
            None,
            opened.metric_type(),
        )?;
        opened.encode(metric)
    }
}

impl Metrics {
    pub fn new(store: Arc<dyn CounterStore>) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "rate_limit_requests",
            "Rate-limit decisions by tier, endpoint rule and decision",
            requests.clone(),
        );
        let throttled = Family::<ThrottleLabels, Counter>::default();
        registry.register(
            "rate_limit_throttled",
            "Requests answered 429, by tier and endpoint rule",
            throttled.clone(),
        );
        let by_policy = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "rate_limit_policy_throttled",
            "Requests a window refused (decision throttled: the window the 429 describes) or \
             a shadowed window would have refused (decision shadow_throttled), by window",
            by_policy.clone(),
        );
        // 50 µs … ~3 s, each bucket 1.5× the previous.
        let latency = LatencyHistogram::exponential(50e-6, 1.5, 28);
        registry.register(
            "rate_limit_check_duration_seconds",
            "Time to decide one request (identity, rules and the counter store)",
            latency.clone(),
        );
        let store_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "rate_limit_redis_errors",
            "Decisions whose counter-store call failed, by kind (circuit_open: failed fast)",
            store_errors.clone(),
        );
        let store_full_refusals = Counter::default();
        registry.register(
            "rate_limit_store_full_refusals",
            "New identities refused (503) because the in-memory store tracks its maximum",
            store_full_refusals.clone(),
        );
        let deny_cache_hits = Counter::default();
        registry.register(
            "rate_limit_deny_cache_hits",
            "Denials answered from the deny-until cache without a counter-store call (counted \
             in rate_limit_requests and rate_limit_throttled too)",
            deny_cache_hits.clone(),
        );
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "rate_limit_config_reloads",
            "Configuration changes applied or rejected, by source",
            config_reloads.clone(),
        );
        let previous_secret = Counter::default();
        registry.register(
            "rate_limit_decision_secret_previous",
            "Decision calls that carried RATE_LIMIT_DECISION_SECRET_PREVIOUS, not the current \
             secret (a filter not yet moved to the new one)",
            previous_secret.clone(),
        );
        let units_charged = Family::<TierLabels, Counter>::default();
        registry.register(
            "rate_limit_units_charged",
            "Units added after responses (the upstream's charge header, cut to the rule's \
             max_charge), by tier",
            units_charged.clone(),
        );
        let units_released = Family::<TierLabels, Counter>::default();
        registry.register(
            "rate_limit_units_released",
            "Units given back after responses a rule's count_statuses does not count (or \
             streams that ended without a response), by tier",
            units_released.clone(),
        );
        registry.register_collector(Box::new(StoreCollector(store)));
        Self {
            registry,
            requests,
            throttled,
            by_policy,
            store_errors,
            store_full_refusals,
            deny_cache_hits,
            config_reloads,
            previous_secret,
            units_charged,
            units_released,
            latency,
            by_verdict: Default::default(),
            shadow_throttled_total: AtomicU64::new(0),
            store_error_total: AtomicU64::new(0),
            throttled_by_tier: Mutex::new(BTreeMap::new()),
            throttled_by_endpoint: Mutex::new(BTreeMap::new()),
            throttled_by_policy: Mutex::new(BTreeMap::new()),
            shadow_throttled_by_policy: Mutex::new(BTreeMap::new()),
            scope: RwLock::new(LabelScope::default()),
        }
    }

    /// Follows a configuration change: drops the series and JSON keys of tiers and rules
    /// `cfg` no longer has, so they neither linger in scrapes nor count again.
    pub fn follow_config(&self, cfg: &CompiledConfig) {
        let next = LabelScope::of(cfg);
        let mut scope = self.scope.write();
        for (tier, endpoint) in scope.pairs() {
            if next.admits(&tier, &endpoint) {
                continue;
            }
            let decisions = VERDICTS.map(decision_label);
            for decision in decisions.into_iter().chain([SHADOW_THROTTLED]) {
                self.requests.remove(&RequestLabels {
                    tier: tier.clone(),
                    endpoint: endpoint.clone(),
                    decision,
                });
            }
            self.throttled.remove(&ThrottleLabels { tier, endpoint });
        }
        for (tier, policy) in scope.policy_pairs() {
            if next.admits_policy(&tier, &policy) {
                continue;
            }
            for decision in [decision_label(Verdict::Deny), SHADOW_THROTTLED] {
                self.by_policy.remove(&PolicyLabels {
                    tier: tier.clone(),
                    policy: policy.clone(),
                    decision,
                });
            }
        }
        for family in [&self.units_charged, &self.units_released] {
            for tier in scope.tiers() {
                if !next.has_tier(&tier) {
                    family.remove(&TierLabels { tier });
                }
            }
        }
        self.throttled_by_tier
            .lock()
            .retain(|tier, _| next.has_tier(tier));
        self.throttled_by_endpoint
            .lock()
            .retain(|endpoint, _| next.has_endpoint(endpoint));
        self.throttled_by_policy
            .lock()
            .retain(|policy, _| next.has_policy(policy));
        self.shadow_throttled_by_policy
            .lock()
            .retain(|policy, _| next.has_policy(policy));
        *scope = next;
    }

    pub fn observe(&self, o: &Observation<'_>) {
        let decision = o.decision();
        let tier = o.tier.unwrap_or(NO_TIER);
        let endpoint = o.rule.unwrap_or(OTHER_ENDPOINT);
        self.by_verdict[verdict_index(o.verdict)].fetch_add(1, Ordering::Relaxed);
        if decision == SHADOW_THROTTLED {
            self.shadow_throttled_total.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.observe(o.elapsed);
        let scope = self.scope.read();
        // A decision judged under a configuration that has since dropped its tier or rule
        // counts in the totals only.
        if !scope.admits(tier, endpoint) {
            return self.observe_error(o);
        }
        self.requests
            .get_or_create(&RequestLabels {
                tier: tier.to_string(),
                endpoint: endpoint.to_string(),
                decision,
            })
            .inc();
        if o.verdict == Verdict::Deny {
            self.throttled
                .get_or_create(&ThrottleLabels {
                    tier: tier.to_string(),
                    endpoint: endpoint.to_string(),
                })
                .inc();
            *self
                .throttled_by_tier
                .lock()
                .entry(tier.to_string())
                .or_default() += 1;
            *self
                .throttled_by_endpoint
                .lock()
                .entry(endpoint.to_string())
                .or_default() += 1;
        }
        if let Some(policy) = o.policy
            && matches!(o.verdict, Verdict::Deny | Verdict::Allow)
            && scope.admits_policy(tier, policy)
        {
            let by_policy = if o.verdict == Verdict::Deny {
                &self.throttled_by_policy
            } else {
                &self.shadow_throttled_by_policy
            };
            *by_policy.lock().entry(policy.to_string()).or_default() += 1;
            self.by_policy
                .get_or_create(&PolicyLabels {
                    tier: tier.to_string(),
                    policy: policy.to_string(),
                    decision,
                })
                .inc();
        }
        drop(scope);
        self.observe_error(o);
    }

    fn observe_error(&self, o: &Observation<'_>) {
        if let Some(err) = o.store_error {
            if matches!(err, StoreError::Full(_)) {
                self.store_full_refusals.inc();
                return;
            }
            self.store_error_total.fetch_add(1, Ordering::Relaxed);
            self.store_errors
                .get_or_create(&ErrorLabels {
                    kind: error_kind(err),
                })
                .inc();
        }
    }

    /// A denial was answered from the deny-until cache (observed as well, like any denial).
    pub fn deny_cache_hit(&self) {
        self.deny_cache_hits.inc();
    }

    /// `count` requests the filter denied itself for (`tier`, `rule`, `policy`), from an
    /// earlier answer's `deny_for_ms`: counted as throttled decisions, as if decided here,
    /// latency aside (none was spent here). The caller bounds `count`; labels outside the
    /// configuration in force count in the totals only, as in [`observe`](Self::observe).
    pub fn observe_local_denials(&self, tier: &str, rule: Option<&str>, policy: &str, count: u64) {
        if count == 0 {
            return;
        }
        let add = |counter: &AtomicU64| {
            // Saturating: a total that stops is better than one that wraps to zero.
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(count))
            });
        };
        add(&self.by_verdict[verdict_index(Verdict::Deny)]);
        let endpoint = rule.unwrap_or(OTHER_ENDPOINT);
        let scope = self.scope.read();
        if !scope.admits(tier, endpoint) {
            return;
        }
        let decision = decision_label(Verdict::Deny);
        self.requests
            .get_or_create(&RequestLabels {
                tier: tier.to_string(),
                endpoint: endpoint.to_string(),
                decision,
            })
            .inc_by(count);
        self.throttled
            .get_or_create(&ThrottleLabels {
                tier: tier.to_string(),
                endpoint: endpoint.to_string(),
            })
            .inc_by(count);
        for (map, key) in [
            (&self.throttled_by_tier, tier),
            (&self.throttled_by_endpoint, endpoint),
        ] {
            let mut map = map.lock();
            let slot = map.entry(key.to_string()).or_default();
            *slot = slot.saturating_add(count);
        }
        if scope.admits_policy(tier, policy) {
            let mut map = self.throttled_by_policy.lock();
            let slot = map.entry(policy.to_string()).or_default();
            *slot = slot.saturating_add(count);
            self.by_policy
                .get_or_create(&PolicyLabels {
                    tier: tier.to_string(),
                    policy: policy.to_string(),
                    decision,
                })
                .inc_by(count);
        }
    }

    /// A configuration change from `source` (`file`, `api`, `redis`) was applied or rejected.
    pub fn config_reload(&self, source: &'static str, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        self.config_reloads
            .get_or_create(&ReloadLabels { source, result })
            .inc();
    }

    /// `units` were charged after responses of `tier`'s requests.
    pub fn units_charged(&self, tier: &str, units: u64) {
        self.tier_units(&self.units_charged, tier, units);
    }

    /// `units` were given back after responses of `tier`'s requests.
    pub fn units_released(&self, tier: &str, units: u64) {
        self.tier_units(&self.units_released, tier, units);
    }

    fn tier_units(&self, family: &Family<TierLabels, Counter>, tier: &str, units: u64) {
        let scope = self.scope.read();
        if units > 0 && scope.has_tier(tier) {
            family
                .get_or_create(&TierLabels {
                    tier: tier.to_string(),
                })
                .inc_by(units);
        }
    }

    /// A decision call was let in by the previous decision secret.
    pub fn previous_secret_used(&self) {
        self.previous_secret.inc();
    }

    fn count(&self, verdict: Verdict) -> u64 {
        self.by_verdict[verdict_index(verdict)].load(Ordering::Relaxed)
    }

    /// The JSON view. `tiers`, `rules` and `policies` (the current configuration's) appear
    /// with 0 when nothing was throttled there, so dashboards see every key.
    pub fn snapshot<'a>(
        &self,
        tiers: impl IntoIterator<Item = &'a str>,
        rules: impl IntoIterator<Item = &'a str>,
        policies: impl IntoIterator<Item = &'a str>,
    ) -> MetricsSnapshot {
        let allowed = self.count(Verdict::Allow);
        let throttled = self.count(Verdict::Deny);
        let total = allowed + throttled;
        let mut by_tier = self.throttled_by_tier.lock().clone();
        for tier in tiers {
            by_tier.entry(tier.to_string()).or_default();
        }
        let mut by_endpoint = self.throttled_by_endpoint.lock().clone();
        for rule in rules.into_iter().chain([OTHER_ENDPOINT]) {
            by_endpoint.entry(rule.to_string()).or_default();
        }
        let mut by_policy = self.throttled_by_policy.lock().clone();
        let mut shadow_by_policy = self.shadow_throttled_by_policy.lock().clone();
        for policy in policies {
            by_policy.entry(policy.to_string()).or_default();
            shadow_by_policy.entry(policy.to_string()).or_default();
        }
        MetricsSnapshot {
            total_requests: total,
            allowed_requests: allowed,
            throttled_requests: throttled,
            shadow_throttled_requests: self.shadow_throttled_total.load(Ordering::Relaxed),
            throttle_rate: if total == 0 {
                0.0
            } else {
                throttled as f64 / total as f64
            },
            by_tier,
            by_endpoint,
            by_policy,
            shadow_by_policy,
            avg_check_latency_ms: self.latency.mean() * 1e3,
            p95_check_latency_ms: self.latency.quantile(0.95) * 1e3,
            redis_errors: self.store_error_total.load(Ordering::Relaxed),
            store_full_refusals: self.store_full_refusals.get(),
            deny_cache_hits: self.deny_cache_hits.get(),
            whitelisted_requests: self.count(Verdict::Whitelisted),
            disabled_requests: self.count(Verdict::Disabled),
            failed_open_requests: self.count(Verdict::FailedOpen),
            unavailable_requests: self.count(Verdict::Unavailable),
            timestamp: crate::decision::rfc3339_now(),
        }
    }

    /// Prometheus / OpenMetrics text.
    pub fn encode_prometheus(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// `GET /api/v1/rate-limit/metrics`. Counts are this replica's since it started;
/// `allowed_requests + throttled_requests = total_requests`, and decisions that were not
/// counted against a limit have fields of their own.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MetricsSnapshot {
    pub total_requests: u64,
    /// Admitted requests, `shadow_throttled_requests` included.
    pub allowed_requests: u64,
    pub throttled_requests: u64,
    /// Admitted requests that a shadowed window would have refused (`shadow: true`): what
    /// enforcing it would add to `throttled_requests`.
    pub shadow_throttled_requests: u64,
    /// throttled / total (0 when there was no traffic).
    pub throttle_rate: f64,
    /// Throttled requests per configured tier. A tier a change removed is dropped, so after
    /// such a change the sum can be below `throttled_requests`.
    pub by_tier: BTreeMap<String, u64>,
    /// Throttled requests per configured endpoint rule, `other` for the rest (a rule a change
    /// removed is dropped, as in `by_tier`).
    pub by_endpoint: BTreeMap<String, u64>,
    /// Throttled requests per window of the configuration, by policy name (`free-60s`,
    /// `free-/api/v1/search-1s`): the window each 429 described.
    pub by_policy: BTreeMap<String, u64>,
    /// Would-be denials per shadowed window, by policy name.
    pub shadow_by_policy: BTreeMap<String, u64>,
    pub avg_check_latency_ms: f64,
    pub p95_check_latency_ms: f64,
    /// Decisions whose counter-store call failed (any kind, including fail-fast while the
    /// circuit breaker is open).
    pub redis_errors: u64,
    /// New identities refused (503) because the in-memory store tracks its maximum
    /// (`--memory-max-identities`); not store errors. Counted in `unavailable_requests` too.
    pub store_full_refusals: u64,
    /// Denials answered from the deny-until cache, without a counter-store call (counted in
    /// `throttled_requests` and its breakdowns too).
    pub deny_cache_hits: u64,
    pub whitelisted_requests: u64,
    pub disabled_requests: u64,
    /// Admitted because the store failed and `fail_open` is true.
    pub failed_open_requests: u64,
    /// Refused with 503 because the store failed and `fail_open` is false.
    pub unavailable_requests: u64,
    /// RFC 3339, UTC.
    pub timestamp: String,
}

#[cfg(test)]
mod tests;
