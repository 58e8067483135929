//! The decision: identity → tier → counters → store → answer for the filter; and the status
//! of one identifier's counters (`status`).

mod answer;
mod concurrency;
pub mod deny_cache;
mod status;
mod usage;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rl_wire::{
    DecisionRequest, DecisionResponse, Lease, LeasesRequest, LeasesResponse, MAX_API_KEY_BYTES,
    MAX_AUTHORIZATION_BYTES, UsageRequest, UsageResponse, Verdict,
};

use crate::config::{CompiledConfig, EndpointLimits, Tier, Window};
use crate::identity::{self, Identity};
use crate::live_config::SharedConfig;
use crate::rules::normalize_path;
use crate::store::{
    Adjustment, Change, Clock, CounterSpec, CounterStore, LeaseRef, Outcome, StoreError, keys,
};

use self::answer::answer;
pub use self::concurrency::{
    DEFAULT_LEASE_SECONDS, MAX_LEASE_SECONDS, MIN_LEASE_SECONDS, parse_handle,
};
use self::deny_cache::DenyCache;
pub use self::status::{CounterStatus, StatusError, StatusReport};
pub use self::usage::Handle as UsageHandle;

/// A decision with what the service needs besides the filter's answer (metrics, logs).
#[derive(Debug)]
pub struct Decision {
    pub response: DecisionResponse,
    /// Identifier judged (absent when rate limiting is disabled).
    pub identity: Option<String>,
    /// Endpoint rule that applied to the request, if any.
    pub rule: Option<String>,
    pub store_error: Option<StoreError>,
    /// On an admitted request: the shadowed window that had no room (an enforced limit
    /// would have refused it), for the metrics and the log line.
    pub shadow_denial: Option<ShadowDenial>,
    /// Denied from the deny-until cache, without a store call.
    pub cached: bool,
}

/// A request a shadowed window would have refused: what the log line and the metrics say
/// about it. The window is chosen among the full shadowed ones as the 429 would choose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowDenial {
    pub policy: String,
    pub limit: u64,
    /// Window in seconds.
    pub window: u64,
    /// The endpoint rule, or the normalised request path for a tier window.
    pub endpoint: String,
    /// Seconds until every full shadowed window would have room again.
    pub retry_after: u64,
}

pub struct Decider {
    config: SharedConfig,
    store: Arc<dyn CounterStore>,
    store_errors: ErrorLog,
    /// Local time of the deny-until cache (production: the monotonic clock).
    clock: Arc<dyn Clock>,
    deny_cache: DenyCache,
    /// Lifetime of a concurrency lease without renewal.
    lease_ttl: Duration,
}

/// Logs store errors at most once per second: while Redis is down every decision fails, and
/// one line per request would flood the logs exactly when operators read them.
#[derive(Debug)]
struct ErrorLog {
    clock: Arc<dyn Clock>,
    /// Earliest time (on `clock`) of the next line.
    next_us: AtomicU64,
    suppressed: AtomicU64,
}

/// Shortest gap between two store-error log lines.
const ERROR_LOG_INTERVAL_US: u64 = 1_000_000;

impl ErrorLog {
    fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            next_us: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now, with how many errors went unlogged since the last
    /// one; `None` counts this error as suppressed.
    fn admit(&self) -> Option<u64> {
        let now = self.clock.now_us();
        let next = self.next_us.load(Ordering::Relaxed);
        if now < next
            || self
                .next_us
                .compare_exchange(
                    next,
                    now.saturating_add(ERROR_LOG_INTERVAL_US),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }

    fn warn(&self, err: &StoreError, verdict: Verdict) {
        let Some(suppressed) = self.admit() else {
            return;
        };
        let outcome = if verdict == Verdict::FailedOpen {
            "admitted (fail_open)"
        } else {
            "refused (fail closed)"
        };
        tracing::warn!(error = %err, suppressed, outcome, "counter store error");
    }
}

/// A counter (one window of the tier or of the rule) taking part in one decision, with what
/// the answer needs to describe it.
struct Applied<'a> {
    spec: CounterSpec,
    window: &'a Window,
    /// Rule pattern for endpoint counters, `None` for the tier budget.
    rule: Option<&'a str>,
}

impl Decider {
    /// `clock` paces the store-error log lines (production: the monotonic clock).
    pub fn new(config: SharedConfig, store: Arc<dyn CounterStore>, clock: Arc<dyn Clock>) -> Self {
        Self::with_deny_cache(config, store, clock, deny_cache::DEFAULT_CAPACITY)
    }

    /// [`new`](Self::new) with a deny-until cache of at most `capacity` counters.
    pub fn with_deny_cache(
        config: SharedConfig,
        store: Arc<dyn CounterStore>,
        clock: Arc<dyn Clock>,
        capacity: usize,
    ) -> Self {
        Self {
            config,
            store,
            store_errors: ErrorLog::new(clock.clone()),
            clock,
            deny_cache: DenyCache::new(capacity),
            lease_ttl: Duration::from_secs(DEFAULT_LEASE_SECONDS),
        }
    }

    /// Concurrency leases last `ttl` without a renewal (default [`DEFAULT_LEASE_SECONDS`]).
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    fn lease_ttl_us(&self) -> u64 {
        u64::try_from(self.lease_ttl.as_micros()).unwrap_or(u64::MAX)
    }

    pub fn store(&self) -> &Arc<dyn CounterStore> {
        &self.store
    }

    /// The deny-until cache (its size, for tests and operations).
    pub fn deny_cache(&self) -> &DenyCache {
        &self.deny_cache
    }

    pub async fn decide(&self, req: &DecisionRequest) -> Decision {
        self.decide_with(req, true, 1).await
    }

    /// [`decide`](Self::decide) for a caller that cannot release a concurrency lease (Envoy's
    /// native rate-limit filter over gRPC): `max_concurrent` is not applied, windows are.
    pub async fn decide_without_leases(&self, req: &DecisionRequest) -> Decision {
        self.decide_with(req, false, 1).await
    }

    /// [`decide_without_leases`](Self::decide_without_leases) of a call that counts for
    /// `hits` requests (Envoy's `hits_addend`; 0 is read as 1): it takes `hits` times its
    /// cost from every window.
    pub async fn decide_hits_without_leases(&self, req: &DecisionRequest, hits: u64) -> Decision {
        self.decide_with(req, false, hits).await
    }

    async fn decide_with(&self, req: &DecisionRequest, take_leases: bool, hits: u64) -> Decision {
        let cfg = self.config.load();
        match plan(&cfg, req) {
            Plan::Done(decision) => *decision,
            Plan::Count(mut count) => {
                count.cost = count.cost.saturating_mul(hits.max(1));
                let started_us = self.clock.now_us();
                if !count.specs.is_empty()
                    && count.cacheable()
                    && let Some(outcome) =
                        self.deny_cache
                            .lookup(&cfg, &count.specs, count.cost, started_us)
                {
                    return cached(count, &outcome);
                }
                let taken = if take_leases {
                    self.take_lease(&count).await
                } else {
                    Taken::Lease(None)
                };
                let lease = match taken {
                    Taken::Lease(lease) => lease,
                    Taken::Done(decision) => return *decision,
                    Taken::Failed(err) => return self.finish(&cfg, count, Err(err), started_us),
                };
                let result = if count.specs.is_empty() {
                    Ok(nothing_counted())
                } else {
                    self.store
                        .check_and_record_weighted(&count.who.id, &count.specs, count.cost)
                        .await
                };
                let decision = self.finish(&cfg, count, result, started_us);
                self.settle(decision, lease).await
            }
        }
    }

    /// Takes the lease of a request whose tier has `max_concurrent` (`Lease(None)` for
    /// others); `Done`: the tier's slots are all taken, the 429.
    async fn take_lease(&self, count: &Count<'_>) -> Taken {
        let Some(max) = count.tier.max_concurrent else {
            return Taken::Lease(None);
        };
        let Some(leases) = self.store.leases() else {
            return Taken::Failed(StoreError::Protocol(format!(
                "the {} store keeps no concurrency leases",
                self.store.backend()
            )));
        };
        let lease = concurrency::lease_for(&count.who.id);
        match leases
            .acquire(&lease.key, max, &lease.id, self.lease_ttl_us())
            .await
        {
            Ok(outcome) if outcome.granted => Taken::Lease(Some(lease)),
            Ok(_) => {
                let now_unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                Taken::Done(Box::new(Decision {
                    response: concurrency::denied(count.tier, max, &count.path, now_unix),
                    identity: Some(count.who.id.clone()),
                    rule: count.rule.clone(),
                    store_error: None,
                    shadow_denial: None,
                    cached: false,
                }))
            }
            Err(err) => Taken::Failed(err),
        }
    }

    /// Hands the lease to an admitted request's answer, or gives it back: a request the
    /// windows refused (or the store failed) holds no slot.
    async fn settle(&self, mut decision: Decision, lease: Option<LeaseRef>) -> Decision {
        let Some(lease) = lease else {
            return decision;
        };
        if decision.response.verdict == Verdict::Allow {
            decision.response.lease = Some(Lease {
                id: concurrency::handle(&lease),
                ttl_ms: u64::try_from(self.lease_ttl.as_millis()).unwrap_or(u64::MAX),
            });
        } else if let Some(leases) = self.store.leases()
            && let Err(err) = leases.release(std::slice::from_ref(&lease)).await
        {
            // The lease expires on its own.
            tracing::debug!(error = %err, "could not give back a refused request's lease");
        }
        decision
    }

    /// Renews and releases the leases the filter names. Handles this control plane did not
    /// hand out are skipped.
    pub async fn leases(&self, req: &LeasesRequest) -> Result<LeasesResponse, StoreError> {
        let Some(leases) = self.store.leases() else {
            return Ok(LeasesResponse::default());
        };
        let parse = |handles: &[String]| -> Vec<LeaseRef> {
            handles.iter().filter_map(|h| parse_handle(h)).collect()
        };
        let (renew, release) = (parse(&req.renew), parse(&req.release));
        let renewed = if renew.is_empty() {
            0
        } else {
            leases.renew(&renew, self.lease_ttl_us()).await?
        };
        let released = if release.is_empty() {
            0
        } else {
            leases.release(&release).await?
        };
        Ok(LeasesResponse { renewed, released })
    }

    /// Applies the charges and releases the filter reports after responses; items whose
    /// handle this control plane could not have handed out, or whose tier or rule the
    /// configuration no longer has, are skipped. Returns the answer and the units charged and
    /// released per tier (for the metrics). A store error fails the whole call: the filter
    /// sends it again, and what was applied is not applied twice.
    pub async fn usage(&self, req: &UsageRequest) -> Result<UsageReport, StoreError> {
        let cfg = self.config.load();
        let mut work = Vec::new();
        for item in &req.items {
            let Some(handle) = usage::Handle::parse(&item.handle) else {
                continue;
            };
            let Some((tier, pattern, limits)) = handle.resolve(&cfg) else {
                continue;
            };
            if let Some(max) = limits.max_charge
                && item.charge > 0
            {
                let specs: Vec<CounterSpec> = tier
                    .windows
                    .iter()
                    .map(|w| budget_spec(handle.identity(), w))
                    .chain(
                        limits
                            .windows
                            .iter()
                            .map(|w| rule_spec(handle.identity(), pattern, w)),
                    )
                    .filter(|spec| !spec.shadow)
                    .collect();
                let change = Change::Charge {
                    units: item.charge.min(max),
                };
                work.push((tier.name.clone(), handle.clone(), specs, change, 'c'));
            }
            if item.release && !limits.count_statuses.is_empty() && handle.cost() == limits.cost {
                let specs = limits
                    .windows
                    .iter()
                    .map(|w| rule_spec(handle.identity(), pattern, w))
                    .collect();
                let change = Change::Release {
                    recorded_us: handle.recorded_us(),
                    weight: handle.cost(),
                };
                work.push((tier.name.clone(), handle, specs, change, 'r'));
            }
        }
        let adjustments: Vec<Adjustment> = work
            .iter()
            .map(|(_, handle, _, change, kind)| Adjustment {
                change: change.clone(),
                once: handle.once(*kind),
            })
            .collect();
        let calls: Vec<(&str, &[CounterSpec], &Adjustment)> = work
            .iter()
            .zip(&adjustments)
            .map(|((_, handle, specs, _, _), adjustment)| {
                (handle.identity(), specs.as_slice(), adjustment)
            })
            .collect();
        let results = self.store.adjust_many(&calls).await;
        let mut report = UsageReport::default();
        for ((tier, _, _, change, _), result) in work.iter().zip(results) {
            let units = result?;
            let (total, by_tier) = match change {
                Change::Charge { .. } => (&mut report.response.charged, &mut report.charged),
                Change::Release { .. } => (&mut report.response.released, &mut report.released),
            };
            *total = total.saturating_add(units);
            if units > 0 {
                by_tier.push((tier.clone(), units));
            }
        }
        Ok(report)
    }

    /// The lowest enforced limit among the windows `req` would be counted in (shadow windows
    /// refuse nothing), without counting; `None` when nothing would count it (disabled,
    /// whitelisted, an unlimited tier without a matching rule). A request costing more than
    /// this can never be admitted.
    pub fn lowest_limit(&self, req: &DecisionRequest) -> Option<u64> {
        let cfg = self.config.load();
        match plan(&cfg, req) {
            Plan::Done(_) => None,
            Plan::Count(count) => count
                .applied
                .iter()
                .filter(|a| !a.spec.shadow)
                .map(|a| a.spec.limit)
                .min(),
        }
    }

    /// Decides several requests, in order, as if each had come alone: the counter checks go to
    /// the store together (one round trip where the store can), in the order given, so two
    /// requests of one identity in one batch are counted one after the other.
    pub async fn decide_batch(&self, requests: &[DecisionRequest]) -> Vec<Decision> {
        let cfg = self.config.load();
        let started_us = self.clock.now_us();
        let plans: Vec<Plan<'_>> = requests.iter().map(|req| plan(&cfg, req)).collect();
        // A request may be answered from the cache unless an earlier member of the batch that
        // goes to the store shares a counter with it: that one is counted first and may fill
        // it.
        let mut sent: HashSet<&str> = HashSet::new();
        let hits: Vec<Option<Outcome>> = plans
            .iter()
            .map(|p| {
                let Plan::Count(count) = p else { return None };
                let keys = || count.specs.iter().map(|s| s.key.as_str());
                let hit = if !count.cacheable() || keys().any(|k| sent.contains(k)) {
                    None
                } else {
                    self.deny_cache
                        .lookup(&cfg, &count.specs, count.cost, started_us)
                };
                if hit.is_none() {
                    sent.extend(keys());
                }
                hit
            })
            .collect();
        drop(sent);
        let plans: Vec<Plan<'_>> = plans
            .into_iter()
            .zip(hits)
            .map(|(p, hit)| match (p, hit) {
                (Plan::Count(count), Some(outcome)) => {
                    Plan::Done(Box::new(cached(count, &outcome)))
                }
                (p, _) => p,
            })
            .collect();
        // Leases before windows, member by member, as a request alone takes them.
        let mut leased: Vec<Option<LeaseRef>> = Vec::with_capacity(plans.len());
        let mut taken: Vec<Plan<'_>> = Vec::with_capacity(plans.len());
        for p in plans {
            let Plan::Count(count) = p else {
                leased.push(None);
                taken.push(p);
                continue;
            };
            match self.take_lease(&count).await {
                Taken::Lease(lease) => {
                    leased.push(lease);
                    taken.push(Plan::Count(count));
                }
                Taken::Done(decision) => {
                    leased.push(None);
                    taken.push(Plan::Done(decision));
                }
                Taken::Failed(err) => {
                    leased.push(None);
                    taken.push(Plan::Done(Box::new(self.finish(
                        &cfg,
                        count,
                        Err(err),
                        started_us,
                    ))));
                }
            }
        }
        let plans = taken;
        let calls: Vec<(&str, &[CounterSpec], u64)> = plans
            .iter()
            .filter_map(|p| match p {
                Plan::Count(c) if !c.specs.is_empty() => {
                    Some((c.who.id.as_str(), c.specs.as_slice(), c.cost))
                }
                _ => None,
            })
            .collect();
        let mut results = if calls.is_empty() {
            Vec::new()
        } else {
            self.store.check_and_record_many_weighted(&calls).await
        }
        .into_iter();
        let mut decisions = Vec::with_capacity(plans.len());
        for (p, lease) in plans.into_iter().zip(leased) {
            let decision = match p {
                Plan::Done(decision) => *decision,
                Plan::Count(count) if count.specs.is_empty() => {
                    self.finish(&cfg, count, Ok(nothing_counted()), started_us)
                }
                Plan::Count(count) => {
                    let result = results.next().unwrap_or_else(|| {
                        Err(StoreError::Protocol("batch: missing store result".into()))
                    });
                    self.finish(&cfg, count, result, started_us)
                }
            };
            decisions.push(self.settle(decision, lease).await);
        }
        decisions
    }

    /// The decision from the store's `result`; the deny-until cache learns from it.
    /// `started_us`: the local clock before the store call.
    fn finish(
        &self,
        cfg: &Arc<CompiledConfig>,
        count: Count<'_>,
        result: Result<Outcome, StoreError>,
        started_us: u64,
    ) -> Decision {
        match result {
            Ok(_) if count.specs.is_empty() => Decision {
                response: unlimited(count.tier),
                identity: Some(count.who.id),
                rule: count.rule,
                store_error: None,
                shadow_denial: None,
                cached: false,
            },
            Ok(outcome) => {
                let (mut response, shadow_denial) =
                    answer(count.tier, &count.applied, &outcome, &count.path);
                if count.cacheable() {
                    self.deny_cache
                        .learn(cfg, &count.specs, count.cost, &outcome, started_us);
                } else {
                    // Its rule's counters may shrink (releases) before the moment named.
                    response.deny_for_ms = None;
                }
                if response.verdict == Verdict::Allow
                    && let (Some(rule), Some(limits)) = (count.rule.as_deref(), count.limits)
                {
                    response.usage = usage::usage_for(
                        &count.tier.name,
                        rule,
                        limits,
                        &count.who.id,
                        outcome.now_us,
                    );
                }
                Decision {
                    response,
                    identity: Some(count.who.id),
                    rule: count.rule,
                    store_error: None,
                    shadow_denial,
                    cached: false,
                }
            }
            Err(err) => {
                // The store may have lost its counters (restart, failover) or be about to:
                // what the cache knows no longer holds. A full in-memory store lost nothing.
                if !matches!(err, StoreError::Full(_)) {
                    self.deny_cache.clear();
                }
                // A full in-memory store refuses new identities whatever fail_open says:
                // admitting them would hand out budgets nobody counts.
                let verdict = if cfg.fail_open() && !matches!(err, StoreError::Full(_)) {
                    Verdict::FailedOpen
                } else {
                    Verdict::Unavailable
                };
                self.store_errors.warn(&err, verdict);
                Decision {
                    response: bare(verdict),
                    identity: Some(count.who.id),
                    rule: count.rule,
                    store_error: Some(err),
                    shadow_denial: None,
                    cached: false,
                }
            }
        }
    }
}

/// The denial the deny-until cache gives for `count` (its synthesised store `outcome`): built
/// by the same rules as a store answer.
fn cached(count: Count<'_>, outcome: &Outcome) -> Decision {
    let (response, shadow_denial) = answer(count.tier, &count.applied, outcome, &count.path);
    Decision {
        response,
        identity: Some(count.who.id),
        rule: count.rule,
        store_error: None,
        shadow_denial,
        cached: true,
    }
}

/// What a usage call did: the answer, and the units charged and released by tier.
#[derive(Debug, Default)]
pub struct UsageReport {
    pub response: UsageResponse,
    pub charged: Vec<(String, u64)>,
    pub released: Vec<(String, u64)>,
}

/// What taking a request's lease came to.
enum Taken {
    /// The lease held (`None`: the tier has no concurrency limit).
    Lease(Option<LeaseRef>),
    /// Refused: every slot is taken.
    Done(Box<Decision>),
    Failed(StoreError),
}

/// The outcome of a request with no window to count (an unlimited tier with only a
/// concurrency limit).
fn nothing_counted() -> Outcome {
    Outcome {
        admitted: true,
        now_us: 0,
        counters: Vec::new(),
    }
}

/// The answer to a request of `tier` that no window counts.
fn unlimited(tier: &Tier) -> DecisionResponse {
    DecisionResponse {
        verdict: Verdict::Allow,
        tier: Some(tier.name.clone()),
        counter: None,
        policies: Vec::new(),
        shadow_denied: false,
        deny_for_ms: None,
        lease: None,
        usage: None,
    }
}

/// What a request needs before the store is asked.
enum Plan<'a> {
    /// Decided without counting (disabled, whitelisted, nothing to count).
    Done(Box<Decision>),
    Count(Count<'a>),
}

struct Count<'a> {
    who: Identity,
    tier: &'a Tier,
    applied: Vec<Applied<'a>>,
    specs: Vec<CounterSpec>,
    /// Units the request takes from each counter: its rule's cost, else 1.
    cost: u64,
    path: String,
    rule: Option<String>,
    /// The matched rule's settings.
    limits: Option<&'a EndpointLimits>,
}

impl Count<'_> {
    /// Whether the deny caches may keep what this request's counters say: not when its rule
    /// gives units back after the response (its counters can shrink before their reset).
    fn cacheable(&self) -> bool {
        self.limits.is_none_or(|l| l.count_statuses.is_empty())
    }
}

fn plan<'a>(cfg: &'a CompiledConfig, req: &DecisionRequest) -> Plan<'a> {
    if !cfg.enabled() {
        return Plan::Done(Box::new(Decision {
            response: bare(Verdict::Disabled),
            identity: None,
            rule: None,
            store_error: None,
            shadow_denial: None,
            cached: false,
        }));
    }
    let ip = identity::parse_client_ip(&req.ip);
    // Longer evidence than the filter forwards cannot be a registered key or an accepted
    // token: it is ignored, as the filter would have dropped it.
    let api_key = req
        .api_key
        .as_deref()
        .filter(|k| !k.is_empty() && k.len() <= MAX_API_KEY_BYTES);
    let authorization = req
        .authorization
        .as_deref()
        .filter(|a| a.len() <= MAX_AUTHORIZATION_BYTES);
    let who = identity::resolve(cfg, ip, api_key, authorization);
    if cfg.is_whitelisted(ip, &who.id) {
        return Plan::Done(Box::new(Decision {
            response: bare(Verdict::Whitelisted),
            identity: Some(who.id),
            rule: None,
            store_error: None,
            shadow_denial: None,
            cached: false,
        }));
    }
    let tier = cfg.tier(who.tier);
    let path = normalize_path(&req.path);
    let matched = tier.rules.longest_match(&path);
    let applied = counters_for(&who, tier, matched);
    let rule = matched.map(|(pattern, _)| pattern.to_string());
    let cost = matched.map_or(deny_cache::REQUEST_COST, |(_, limits)| limits.cost);
    if applied.is_empty() && tier.max_concurrent.is_none() {
        // Unlimited tier and no endpoint rule: nothing to count.
        return Plan::Done(Box::new(Decision {
            response: unlimited(tier),
            identity: Some(who.id),
            rule,
            store_error: None,
            shadow_denial: None,
            cached: false,
        }));
    }
    let specs = applied.iter().map(|a| a.spec.clone()).collect();
    Plan::Count(Count {
        who,
        tier,
        applied,
        specs,
        cost,
        path,
        rule,
        limits: matched.map(|(_, limits)| limits),
    })
}

fn bare(verdict: Verdict) -> DecisionResponse {
    DecisionResponse {
        verdict,
        tier: None,
        counter: None,
        policies: Vec::new(),
        shadow_denied: false,
        deny_for_ms: None,
        lease: None,
        usage: None,
    }
}

/// The counter of one window of `identity`'s tier budget.
fn budget_spec(identity: &str, window: &Window) -> CounterSpec {
    CounterSpec {
        key: keys::budget_key(identity, window.length.as_secs(), window.algorithm),
        limit: window.limit,
        window_us: window.length.as_micros() as u64,
        shadow: window.shadow,
        algorithm: window.algorithm,
    }
}

/// The counter of one window of `identity`'s endpoint rule `pattern`.
fn rule_spec(identity: &str, pattern: &str, window: &Window) -> CounterSpec {
    CounterSpec {
        key: keys::rule_key(identity, window.length.as_secs(), window.algorithm, pattern),
        limit: window.limit,
        window_us: window.length.as_micros() as u64,
        shadow: window.shadow,
        algorithm: window.algorithm,
    }
}

/// Every window that applies: the tier's, then the matched rule's, in configuration order.
fn counters_for<'a>(
    who: &Identity,
    tier: &'a Tier,
    matched: Option<(&'a str, &'a EndpointLimits)>,
) -> Vec<Applied<'a>> {
    let rule_windows = matched.map_or(0, |(_, limits)| limits.windows.len());
    let mut applied = Vec::with_capacity(tier.windows.len() + rule_windows);
    for window in &tier.windows {
        applied.push(Applied {
            spec: budget_spec(&who.id, window),
            window,
            rule: None,
        });
    }
    if let Some((pattern, limits)) = matched {
        for window in &limits.windows {
            applied.push(Applied {
                spec: rule_spec(&who.id, pattern, window),
                window,
                rule: Some(pattern),
            });
        }
    }
    applied
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
mod tests;
