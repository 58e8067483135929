//! The filter's per-plugin state machine, without the host: where each request stands, the
//! coalescing of decision calls ([`crate::batch`]), and what every host event leads to.
//!
//! Each event returns [`Effect`]s for the glue to carry out in order with host calls. What only
//! the host knows comes back as another event: the token of a dispatched call
//! ([`Engine::dispatched`], reported before any later effect is carried out, since its results
//! come first) and whether a tick period was accepted ([`Engine::tick_set`]).
//!
//! One engine per plugin root context (one per worker VM and plugin configuration); streams
//! are named by their context id. Rules kept here:
//!
//! - at most [`batch::MAX_SINGLE_IN_FLIGHT`] requests have a call of their own, and none
//!   while a batch is in flight; later ones queue and leave together in one batch call;
//! - a batch call is dispatched only while a root event (the tick, the answer of the previous
//!   batch) is being handled, on the root context: the proxy-wasm SDK delivers an answer to the
//!   context that dispatched the call and drops it when that context is gone, and the root
//!   outlives every request of the batch;
//! - the tick is armed only while requests wait and no batch is in flight (a batch's answer
//!   sends the queue that formed meanwhile);
//! - `timeout_ms` bounds each request's whole wait, from its arrival: a batch call gets what
//!   is left of its longest-waiting request's time, since that request may already have
//!   waited for the batch before it;
//! - an answer whose token is unknown, or that arrives for a stream that has ended, changes
//!   nothing; a member whose stream ended is left out of its batch, or skipped when the
//!   batch's answer arrives;
//! - a request is resumed explicitly only once it has been paused: a single call that cannot
//!   be dispatched is decided while its headers are still being handled;
//! - with a deny cache ([`Engine::with_cache`]), a request whose evidence has a live cached
//!   denial is answered 429 at once, without a call; a cacheable denial (`deny_for_ms`) is
//!   stored, timed from the moment its call was handed to the host; the denials answered from
//!   the cache leave with the next batch call (`local_denials`), and while some wait, a new
//!   request queues instead of taking a single call, so that a batch carries them;
//! - a request admitted with a concurrency lease holds it until its stream ends (response
//!   complete or reset), when the lease is released; leases are renewed and released by lease
//!   calls from the root context ([`crate::leases`]), dispatched on the tick before any batch,
//!   and while leases are held the tick runs every [`LEASE_TICK_MS`] (a tick kept for leases
//!   sends no batch while one is in flight: that batch's answer sends the queue);
//! - a request admitted with a usage handle reports after its response ([`crate::usage`]):
//!   the upstream's charge, and a release when its rule does not count the response's status
//!   (or no response came); reports leave when the stream ends, in usage calls from the root
//!   context on the tick, which runs while reports wait.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use rl_wire::{
    BATCH_DECISION_PATH, DECISION_PATH, DECISION_SECRET_HEADER, LEASES_PATH, USAGE_PATH,
};

use rl_wire::{DecisionResponse, LocalDenials};

use crate::batch::{self, Coalescer, MAX_BATCH_BODY_BYTES, MAX_BATCH_RESPONSE_BYTES, Route};
use crate::config::{HeaderSets, PluginConfig};
use crate::deny_cache::{self, CacheHost, Fingerprint, FingerprintKey, Salt, Tally};
use crate::leases::{LEASE_TICK_MS, LeaseBook, MAX_LEASES_RESPONSE_BYTES, Release};
use crate::response::{
    self, Action, BATCH_CALLS_METRIC, CHARGES_INVALID_METRIC, CallResult, ControlPlaneError,
    Decision, HEADER_LIMIT, HEADER_REMAINING, HEADER_RESET, HEADER_TIER, LOCAL_DENIED_METRIC,
    LocalReply, MAX_DECISION_RESPONSE_BYTES, Outcome, ResponseHeaders, USAGE_DROPPED_METRIC,
};
use crate::usage::{self, ChargeRead, MAX_USAGE_RESPONSE_BYTES, UsageBook};

/// Tick period while requests wait for a batch and nothing else will send them.
pub const KICK_TICK_MS: u32 = 1;

/// The headers every response gets under `benchmark_no_callout` (a benchmarking aid): values
/// of the length real ones have, so that setting them costs what it costs after a decision.
pub const NO_CALLOUT_HEADERS: [(&str, &str); 4] = [
    (HEADER_LIMIT, "1000"),
    (HEADER_REMAINING, "999"),
    (HEADER_RESET, "1700000000"),
    (HEADER_TIER, "benchmark_no_callout"),
];

/// A decision call to dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The context to dispatch it from (the stream for a single call, the root for a batch).
    pub context: u32,
    /// [`DECISION_PATH`], [`BATCH_DECISION_PATH`] or [`LEASES_PATH`].
    pub path: &'static str,
    pub body: Vec<u8>,
    /// For a batch: the host time (Unix ms) by which its longest-waiting request must be
    /// decided. `None`: the configured timeout from now.
    pub deadline_ms: Option<u64>,
}

impl Call {
    /// The call's timeout; `now_ms` (host time, Unix ms) is read only for a deadline.
    pub fn timeout(&self, config: &PluginConfig, now_ms: impl FnOnce() -> u64) -> Duration {
        match self.deadline_ms {
            None => config.timeout,
            Some(deadline) => time_left(deadline, now_ms(), config.timeout),
        }
    }
}

/// What is left until `deadline_ms`, within 1 ms and `timeout` (the host clock is wall time:
/// a jump back must not stretch a wait beyond the timeout, and a call needs some time).
pub fn time_left(deadline_ms: u64, now_ms: u64, timeout: Duration) -> Duration {
    let max = u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(deadline_ms.saturating_sub(now_ms).clamp(1, max))
}

/// Something for the glue to do with the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Dispatch this call (headers from [`call_headers`]), then report the outcome with
    /// [`Engine::dispatched`] and carry out what that returns before the remaining effects.
    Dispatch(Call),
    /// Set the root context's tick period in milliseconds (0 stops it); report an accepted
    /// period with [`Engine::tick_set`].
    SetTick(u32),
    /// Add one to the counter at this index of [`response::METRIC_NAMES`].
    Count(usize),
    /// The control plane's answer was unusable: log it (throttled), with
    /// [`error_log_line`].
    LogError(ControlPlaneError),
    /// Continue the paused request of this context.
    Resume(u32),
    /// Answer the request of this context locally.
    Reply(u32, LocalReply),
    /// Log this warning.
    Warn(String),
}

/// What a request callback returns to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Its own decision call is being dispatched.
    Dispatching,
    /// Its own decision call is in flight (its token).
    Waiting(u32),
    /// In the queue or in a batch call in flight.
    Queued,
    /// Request forwarded; these headers go on the response.
    Forwarded(ResponseHeaders),
    /// Answered locally.
    Answered,
}

#[derive(Debug)]
struct Stream {
    serial: u64,
    state: State,
    /// The deny cache's key for this request's evidence (with a cache only).
    fingerprint: Option<Fingerprint>,
    /// Host monotonic time (ns) at which its decision call was handed to the host.
    dispatched_ns: Option<u64>,
}

impl Stream {
    fn new(serial: u64, state: State, fingerprint: Option<Fingerprint>) -> Stream {
        Stream {
            serial,
            state,
            fingerprint,
            dispatched_ns: None,
        }
    }
}

/// A request as the coalescer and the calls in flight hold it. The serial tells a stream from
/// a later one that reuses its context id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    context: u32,
    serial: u64,
}

/// A queued request and when it arrived (host time, Unix ms).
#[derive(Debug, Clone, Copy)]
struct Waiter {
    member: Member,
    since_ms: u64,
}

/// A [`Effect::Dispatch`] waiting for [`Engine::dispatched`].
#[derive(Debug)]
enum Outgoing {
    Single(Member),
    /// A batch and the local denials it reports (put back if it is not dispatched).
    Batch(Vec<Member>, Vec<LocalDenials>),
    /// A lease call and the releases it carries.
    Leases(Vec<Release>),
    /// A usage call and the reports it carries.
    Usage(Vec<usage::Pending>),
}

/// The deny cache of an engine: the host's shared data and clock, and what this worker keeps.
struct DenyCache {
    host: Box<dyn CacheHost>,
    /// `None` until read or made (and for good if the host has no randomness).
    salt: Option<Salt>,
    salt_tried: bool,
    scope: [u8; 32],
    /// Derived from `salt` and `scope` whenever either changes.
    key: Option<FingerprintKey>,
    tally: Tally,
}

impl std::fmt::Debug for DenyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenyCache")
            .field("salt_known", &self.salt.is_some())
            .field("tally", &self.tally)
            .finish_non_exhaustive()
    }
}

impl DenyCache {
    fn fingerprint(&mut self, evidence: &[u8]) -> Option<Fingerprint> {
        if !self.salt_tried {
            self.salt_tried = true;
            self.salt = Salt::load_or_create(self.host.as_mut());
            self.rekey();
        }
        Some(Fingerprint::of(self.key.as_ref()?, evidence))
    }

    fn rekey(&mut self) {
        self.key = self
            .salt
            .map(|salt| FingerprintKey::new(&salt, &self.scope));
    }

    /// A live cached denial for this fingerprint. The clock is read only when the bucket
    /// holds an entry (most requests find it empty or another's: one host call, not two).
    fn lookup(&mut self, fingerprint: &Fingerprint) -> Option<DecisionResponse> {
        let (bytes, _) = self
            .host
            .get(&deny_cache::bucket_key(fingerprint.bucket()))?;
        if !deny_cache::is_entry_of(&bytes, fingerprint) {
            return None;
        }
        let now = self.host.now_ns()?;
        deny_cache::lookup(&bytes, fingerprint, now).map(|hit| hit.answer)
    }

    /// Stores a cacheable denial (compare-and-swap; a mismatch skips it).
    fn store(&mut self, fingerprint: &Fingerprint, answer: &DecisionResponse, dispatched_ns: u64) {
        if answer.deny_for_ms.is_none() {
            return;
        }
        // Two workers may have raced to create the salt: from now on use the stored one (this
        // entry, keyed with the other, is skipped).
        if let Some(salt) = self.salt {
            let stored = salt.refresh(self.host.as_mut());
            if stored != salt {
                self.salt = Some(stored);
                self.rekey();
                return;
            }
        }
        let Some(bytes) = deny_cache::encode(fingerprint, answer, dispatched_ns) else {
            return;
        };
        let key = deny_cache::bucket_key(fingerprint.bucket());
        let cas = self.host.get(&key).and_then(|(_, cas)| cas);
        self.host.set(&key, &bytes, cas);
    }
}

/// The state of one plugin root context: its configuration, its streams, and its calls.
#[derive(Debug)]
pub struct Engine {
    root: u32,
    config: Option<Rc<PluginConfig>>,
    /// Streams whose headers were handled and that have not ended.
    streams: BTreeMap<u32, Stream>,
    next_serial: u64,
    coalescer: Coalescer<Waiter>,
    /// Single calls in flight, by token.
    singles: BTreeMap<u32, Member>,
    /// Batch calls in flight, by token.
    batches: BTreeMap<u32, Vec<Member>>,
    outgoing: VecDeque<Outgoing>,
    /// The tick period the host accepted last (0: stopped).
    tick_period: u32,
    cache: Option<DenyCache>,
    leases: LeaseBook,
    usage: UsageBook,
}

impl Engine {
    /// The engine of the root context `root`; requests pass unchecked until
    /// [`configure`](Self::configure).
    pub fn new(root: u32) -> Engine {
        Engine {
            root,
            config: None,
            streams: BTreeMap::new(),
            next_serial: 0,
            coalescer: Coalescer::default(),
            singles: BTreeMap::new(),
            batches: BTreeMap::new(),
            outgoing: VecDeque::new(),
            tick_period: 0,
            cache: None,
            leases: LeaseBook::default(),
            usage: UsageBook::default(),
        }
    }

    /// An engine with a deny cache in `host`'s shared data ([`crate::deny_cache`]).
    pub fn with_cache(root: u32, host: Box<dyn CacheHost>) -> Engine {
        let mut engine = Engine::new(root);
        engine.cache = Some(DenyCache {
            host,
            salt: None,
            salt_tried: false,
            scope: deny_cache::scope(b""),
            key: None,
            tally: Tally::default(),
        });
        engine
    }

    /// Keys this plugin's cache entries to its configuration (its raw bytes): two plugins of
    /// one VM sharing the buckets must not answer each other's requests.
    pub fn set_cache_scope(&mut self, plugin_configuration: &[u8]) {
        if let Some(cache) = self.cache.as_mut() {
            cache.scope = deny_cache::scope(plugin_configuration);
            cache.rekey();
        }
    }

    pub fn configure(&mut self, config: PluginConfig) {
        self.config = Some(Rc::new(config));
    }

    pub fn config(&self) -> Option<Rc<PluginConfig>> {
        self.config.clone()
    }

    /// The root context's id (batch calls and the tick belong to it).
    pub fn root(&self) -> u32 {
        self.root
    }

    fn fail_open(&self) -> bool {
        // Calls exist only once configured; the default is the configuration's.
        self.config.as_ref().is_none_or(|c| c.fail_open)
    }

    fn header_sets(&self) -> HeaderSets {
        self.config
            .as_ref()
            .map_or(HeaderSets::default(), |c| c.headers)
    }

    /// A request's headers arrived. `evidence` builds its decision body (host reads); it is
    /// called only when the request needs a decision. `now_ms` (host time, Unix ms) is read
    /// only when the request queues.
    pub fn on_request_headers(
        &mut self,
        context: u32,
        evidence: impl FnOnce(&PluginConfig) -> Vec<u8>,
        now_ms: impl FnOnce() -> u64,
    ) -> Vec<Effect> {
        let Some(config) = self.config.clone() else {
            return Vec::new();
        };
        if self.streams.contains_key(&context) {
            return Vec::new();
        }
        let body = evidence(&config);
        if config.benchmark_no_callout {
            // The load benchmark's floor: the evidence was resolved and encoded as for a call
            // (black_box keeps that work), and the request goes on as if allowed.
            std::hint::black_box(body);
            let headers = ResponseHeaders {
                replace: NO_CALLOUT_HEADERS
                    .iter()
                    .map(|(name, value)| (*name, (*value).to_string()))
                    .collect(),
                append: Vec::new(),
            };
            self.streams.insert(
                context,
                Stream::new(self.next_serial, State::Forwarded(headers), None),
            );
            self.next_serial += 1;
            return Vec::new();
        }
        let member = Member {
            context,
            serial: self.next_serial,
        };
        self.next_serial += 1;
        let fingerprint = self.cache.as_mut().and_then(|c| c.fingerprint(&body));
        if let Some(fingerprint) = &fingerprint
            && let Some(effects) = self.answer_from_cache(member, fingerprint, &config)
        {
            return effects;
        }
        // Local denials wait to be reported: this request leaves in a batch that carries them.
        let report = self.cache.as_ref().is_some_and(|c| !c.tally.is_empty());
        let route = if report {
            Route::Queue
        } else {
            self.coalescer.route()
        };
        let state = match route {
            Route::Queue => State::Queued,
            Route::Single => State::Dispatching,
        };
        let mut stream = Stream::new(member.serial, state, fingerprint);
        if route == Route::Single {
            stream.dispatched_ns = self.cache.as_mut().and_then(|c| c.host.now_ns());
        }
        self.streams.insert(context, stream);
        match route {
            Route::Queue => {
                let since_ms = now_ms();
                self.coalescer.push(Waiter { member, since_ms }, body);
                self.kick().into_iter().collect()
            }
            Route::Single => {
                self.outgoing.push_back(Outgoing::Single(member));
                vec![Effect::Dispatch(Call {
                    context,
                    path: DECISION_PATH,
                    body,
                    deadline_ms: None,
                })]
            }
        }
    }

    /// How the oldest [`Effect::Dispatch`] went: its token, or `None` when the host refused
    /// the call.
    pub fn dispatched(&mut self, token: Option<u32>) -> Vec<Effect> {
        let Some(outgoing) = self.outgoing.pop_front() else {
            return Vec::new();
        };
        let fail_open = self.fail_open();
        let sets = self.header_sets();
        match (outgoing, token) {
            (Outgoing::Leases(releases), token) => {
                self.leases.sent(token, releases);
                self.lease_tick().into_iter().collect()
            }
            (Outgoing::Usage(reports), token) => {
                let dropped = self.usage.sent(token, reports);
                let mut effects = usage_dropped(dropped);
                effects.extend(self.lease_tick());
                effects
            }
            (Outgoing::Single(member), Some(token)) => {
                if self.is(member, |s| *s == State::Dispatching) {
                    self.set_state(member, State::Waiting(token));
                    self.singles.insert(token, member);
                } else {
                    // The stream ended meanwhile; its answer will not be delivered.
                    self.coalescer.single_done();
                }
                Vec::new()
            }
            (Outgoing::Single(member), None) => {
                self.coalescer.single_done();
                if !self.is(member, |s| *s == State::Dispatching) {
                    return Vec::new();
                }
                let decision = response::decide(CallResult::DispatchFailed, fail_open, sets);
                // Still in its headers callback: the callback's return lets it go on.
                self.apply(member, decision, false)
            }
            (Outgoing::Batch(members, _), Some(token)) => {
                self.batches.insert(token, members);
                let mut effects = vec![Effect::Count(BATCH_CALLS_METRIC)];
                effects.extend(self.send_next_batch());
                effects
            }
            (Outgoing::Batch(members, reported), None) => {
                self.coalescer.batch_done();
                if let Some(cache) = self.cache.as_mut() {
                    cache.tally.put_back(reported);
                }
                let decisions =
                    batch::decide(CallResult::DispatchFailed, members.len(), fail_open, sets);
                let mut effects = self.finish(members, decisions);
                effects.extend(self.send_next_batch());
                effects
            }
        }
    }

    /// The host accepted tick period `period_ms`.
    pub fn tick_set(&mut self, period_ms: u32) {
        self.tick_period = period_ms;
    }

    /// The largest answer body to read for call `token`; `None`: not a call of this engine
    /// (its answer is ignored, so there is nothing to read).
    pub fn answer_limit(&self, token: u32) -> Option<usize> {
        if self.singles.contains_key(&token) {
            Some(MAX_DECISION_RESPONSE_BYTES)
        } else if self.batches.contains_key(&token) {
            Some(MAX_BATCH_RESPONSE_BYTES)
        } else if self.leases.is_call(token) {
            Some(MAX_LEASES_RESPONSE_BYTES)
        } else if self.usage.is_call(token) {
            Some(MAX_USAGE_RESPONSE_BYTES)
        } else {
            None
        }
    }

    /// Call `token` ended (an answer, Envoy's 504 after the timeout, or a reset).
    pub fn on_call_response(&mut self, token: u32, result: CallResult<'_>) -> Vec<Effect> {
        let fail_open = self.fail_open();
        let sets = self.header_sets();
        if let Some(member) = self.singles.remove(&token) {
            self.coalescer.single_done();
            if !self.is(member, |s| *s == State::Waiting(token)) {
                return Vec::new();
            }
            let decision = match response::interpret(result) {
                Ok(answer) => {
                    self.remember(member, &answer);
                    if let Some(lease) = &answer.lease {
                        self.leases.hold(member.serial, lease);
                    }
                    if let Some(usage) = &answer.usage {
                        self.usage.hold(member.serial, usage);
                    }
                    response::decide_response(&answer, fail_open, sets)
                }
                Err(error) => response::failure(error, fail_open),
            };
            let mut effects = self.apply(member, decision, true);
            effects.extend(self.lease_tick());
            return effects;
        }
        if let Some(members) = self.batches.remove(&token) {
            self.coalescer.batch_done();
            let decisions = match batch::interpret(result, members.len()) {
                Ok(answer) => members
                    .iter()
                    .zip(&answer.responses)
                    .map(|(member, answer)| {
                        self.remember(*member, answer);
                        if let Some(lease) = &answer.lease {
                            if self.is(*member, |s| *s == State::Queued) {
                                self.leases.hold(member.serial, lease);
                            } else {
                                self.leases.orphan(lease);
                            }
                        }
                        if let Some(usage) = &answer.usage {
                            if self.is(*member, |s| *s == State::Queued) {
                                self.usage.hold(member.serial, usage);
                            } else {
                                self.usage.orphan(usage);
                            }
                        }
                        response::decide_response(answer, fail_open, sets)
                    })
                    .collect(),
                Err(error) => (0..members.len())
                    .map(|_| response::failure(error.clone(), fail_open))
                    .collect(),
            };
            let mut effects = self.finish(members, decisions);
            effects.extend(self.send_next_batch());
            effects.extend(self.lease_tick());
            return effects;
        }
        if self.leases.is_call(token) {
            self.leases
                .answered(token, response::call_body(result).is_ok());
            return self.lease_tick().into_iter().collect();
        }
        if self.usage.is_call(token) {
            let dropped = self
                .usage
                .answered(token, response::call_body(result).is_ok());
            let mut effects = usage_dropped(dropped);
            effects.extend(self.lease_tick());
            return effects;
        }
        Vec::new()
    }

    /// The root context's tick at host time `now_ms` (Unix ms): the lease call due, then the
    /// queue; the tick goes on every [`LEASE_TICK_MS`] while leases are held, else stops.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        // First, so that the calls leave in the order `outgoing` holds them whatever a
        // batch's dispatch adds.
        if let Some((body, releases)) = self.leases.due(now_ms) {
            self.outgoing.push_back(Outgoing::Leases(releases));
            effects.push(Effect::Dispatch(Call {
                context: self.root,
                path: LEASES_PATH,
                body,
                deadline_ms: None,
            }));
        }
        if let Some((body, reports)) = self.usage.due() {
            self.outgoing.push_back(Outgoing::Usage(reports));
            effects.push(Effect::Dispatch(Call {
                context: self.root,
                path: USAGE_PATH,
                body,
                deadline_ms: None,
            }));
        }
        let period = if self.tick_idle() { 0 } else { LEASE_TICK_MS };
        effects.insert(0, Effect::SetTick(period));
        if self.tick_idle() || self.coalescer.needs_kick() {
            effects.extend(self.send_next_batch());
        }
        effects
    }

    /// Starts the lease tick when leases or usage reports need it and the tick is stopped.
    fn lease_tick(&self) -> Option<Effect> {
        (!self.tick_idle() && self.tick_period == 0).then_some(Effect::SetTick(LEASE_TICK_MS))
    }

    /// Neither leases nor usage reports need the tick.
    fn tick_idle(&self) -> bool {
        self.leases.is_idle() && !self.usage.has_pending()
    }

    /// The usage handles held by this engine's requests and their reports.
    pub fn usage(&self) -> &UsageBook {
        &self.usage
    }

    /// The response of the forwarded request of `context` has status `status`.
    pub fn on_response_status(&mut self, context: u32, status: u16) {
        if let Some(stream) = self.streams.get(&context) {
            self.usage.status(stream.serial, status);
        }
    }

    /// The response of the request of `context` carries a charge (the plugin's
    /// `charge_header`, in its headers or trailers): kept for its report, or counted as
    /// invalid.
    pub fn on_charge(&mut self, context: u32, raw: &[u8]) -> Vec<Effect> {
        let Some(serial) = self.streams.get(&context).map(|s| s.serial) else {
            return Vec::new();
        };
        match self.usage.charge(serial, raw) {
            ChargeRead::Invalid => vec![Effect::Count(CHARGES_INVALID_METRIC)],
            ChargeRead::Taken(_) | ChargeRead::Unused => Vec::new(),
        }
    }

    /// The concurrency leases held by this engine's requests.
    pub fn leases(&self) -> &LeaseBook {
        &self.leases
    }

    /// What the request callbacks (headers, body, trailers) return: a request stays paused
    /// while its decision is pending and after it was answered locally.
    pub fn request_flow(&self, context: u32) -> Flow {
        match self.streams.get(&context).map(|s| &s.state) {
            Some(State::Dispatching | State::Waiting(_) | State::Queued | State::Answered) => {
                Flow::Pause
            }
            Some(State::Forwarded(_)) | None => Flow::Continue,
        }
    }

    /// The headers of ours for the response of a request this engine decided and forwarded
    /// (the upstream's other `X-RateLimit-*` headers then go, [`crate::upstream_headers`]).
    /// `None`: leave the response alone (a local reply of ours, or a request nothing decided).
    pub fn response_headers(&self, context: u32) -> Option<&ResponseHeaders> {
        match self.streams.get(&context).map(|s| &s.state) {
            Some(State::Forwarded(headers)) => Some(headers),
            _ => None,
        }
    }

    /// The stream ended (response complete, or reset). A call of its own in flight no longer
    /// counts (its answer will not be delivered); as a queued or batched member it is skipped
    /// from now on. A lease it held is released on the next tick, armed now to come at once.
    pub fn on_done(&mut self, context: u32) -> Vec<Effect> {
        let Some(stream) = self.streams.remove(&context) else {
            return Vec::new();
        };
        if let State::Waiting(token) = stream.state {
            self.singles.remove(&token);
            self.coalescer.single_done();
        }
        let released = self.leases.end(stream.serial);
        let reported = self.usage.end(stream.serial);
        if (released || reported) && self.tick_period != KICK_TICK_MS {
            return vec![Effect::SetTick(KICK_TICK_MS)];
        }
        Vec::new()
    }

    fn is(&self, member: Member, pred: impl Fn(&State) -> bool) -> bool {
        self.streams
            .get(&member.context)
            .is_some_and(|s| s.serial == member.serial && pred(&s.state))
    }

    fn set_state(&mut self, member: Member, state: State) {
        if let Some(stream) = self.streams.get_mut(&member.context)
            && stream.serial == member.serial
        {
            stream.state = state;
        }
    }

    /// Arms the tick when queued requests have nobody to send them.
    fn kick(&self) -> Option<Effect> {
        (self.coalescer.needs_kick() && self.tick_period != KICK_TICK_MS)
            .then_some(Effect::SetTick(KICK_TICK_MS))
    }

    /// The next batch of the queue, if any member is still there. The rest of the queue goes
    /// once this one is reported dispatched (or refused).
    fn send_next_batch(&mut self) -> Vec<Effect> {
        let Some(config) = &self.config else {
            return Vec::new();
        };
        let timeout_ms = u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX);
        let streams = &self.streams;
        let batch = self.coalescer.take_batch(|w| {
            streams
                .get(&w.member.context)
                .is_some_and(|s| s.serial == w.member.serial && s.state == State::Queued)
        });
        let Some(batch) = batch else {
            return Vec::new();
        };
        let since_ms = batch.members.iter().map(|w| w.since_ms).min();
        let members: Vec<Member> = batch.members.iter().map(|w| w.member).collect();
        let mut body = batch.body;
        let mut reported = Vec::new();
        if let Some(cache) = self.cache.as_mut() {
            let now = cache.host.now_ns();
            for member in &members {
                if let Some(stream) = self.streams.get_mut(&member.context) {
                    stream.dispatched_ns = now;
                }
            }
            if !cache.tally.is_empty() {
                let room =
                    MAX_BATCH_BODY_BYTES.saturating_sub(body.len() + LOCAL_DENIALS_FIELD_BYTES);
                let denials = cache.tally.take(room);
                match deny_cache::with_local_denials(&body, &denials, MAX_BATCH_BODY_BYTES) {
                    Some(with) => {
                        body = with;
                        reported = denials;
                    }
                    None => cache.tally.put_back(denials),
                }
            }
        }
        self.outgoing.push_back(Outgoing::Batch(members, reported));
        vec![Effect::Dispatch(Call {
            context: self.root,
            path: BATCH_DECISION_PATH,
            body,
            deadline_ms: since_ms.map(|since| since.saturating_add(timeout_ms)),
        })]
    }

    /// A request whose evidence has a live cached denial: answered now, counted, and tallied
    /// for the next report. `None`: no such denial, ask the control plane.
    fn answer_from_cache(
        &mut self,
        member: Member,
        fingerprint: &Fingerprint,
        config: &PluginConfig,
    ) -> Option<Vec<Effect>> {
        let cache = self.cache.as_mut()?;
        let answer = cache.lookup(fingerprint)?;
        let decision = response::decide_response(&answer, config.fail_open, config.headers);
        if decision.outcome != Outcome::Denied {
            return None;
        }
        cache.tally.add(&answer);
        self.streams.insert(
            member.context,
            Stream::new(member.serial, State::Dispatching, Some(*fingerprint)),
        );
        // Still in its headers callback: the reply needs no resume.
        let mut effects = self.apply(member, decision, false);
        effects.push(Effect::Count(LOCAL_DENIED_METRIC));
        Some(effects)
    }

    /// Stores a cacheable denial for the request it answered, if the request is still known.
    fn remember(&mut self, member: Member, answer: &DecisionResponse) {
        if answer.deny_for_ms.is_none() {
            return;
        }
        let Some(cache) = self.cache.as_mut() else {
            return;
        };
        let Some(stream) = self
            .streams
            .get(&member.context)
            .filter(|s| s.serial == member.serial)
        else {
            return;
        };
        if let (Some(fingerprint), Some(at)) = (stream.fingerprint, stream.dispatched_ns) {
            cache.store(&fingerprint, answer, at);
        }
    }

    /// Resumes or answers every member still waiting.
    fn finish(&mut self, members: Vec<Member>, decisions: Vec<Decision>) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (member, decision) in members.into_iter().zip(decisions) {
            if self.is(member, |s| *s == State::Queued) {
                effects.extend(self.apply(member, decision, true));
            }
        }
        effects
    }

    /// Carries out a decision. `resume`: the request is paused and must be continued
    /// explicitly.
    fn apply(&mut self, member: Member, decision: Decision, resume: bool) -> Vec<Effect> {
        let mut effects = vec![Effect::Count(decision.outcome.metric_index())];
        if let Some(error) = decision.error {
            effects.push(Effect::Count(error.metric_index()));
            effects.push(Effect::LogError(error));
        }
        let state = match decision.action {
            Action::Resume { response_headers } => {
                if resume {
                    effects.push(Effect::Resume(member.context));
                }
                State::Forwarded(response_headers)
            }
            Action::Reply(reply) => {
                effects.push(Effect::Reply(member.context, reply));
                State::Answered
            }
        };
        self.set_state(member, state);
        effects
    }
}

/// What dropping `dropped` undeliverable usage reports leads to: each counted, one warning.
fn usage_dropped(dropped: usize) -> Vec<Effect> {
    if dropped == 0 {
        return Vec::new();
    }
    let mut effects = vec![Effect::Count(USAGE_DROPPED_METRIC); dropped];
    effects.push(Effect::Warn(format!(
        "rate-limit-filter: {dropped} charges or releases could not be delivered after {} \
         attempts and were dropped",
        usage::MAX_USAGE_ATTEMPTS
    )));
    effects
}

/// Bytes `local_denials` adds to a batch body besides its entries.
const LOCAL_DENIALS_FIELD_BYTES: usize = 32;

/// Request headers of a decision call to `path`.
pub fn call_headers<'a>(config: &'a PluginConfig, path: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        (":method", "POST"),
        (":path", path),
        (":authority", config.authority.as_str()),
        ("content-type", "application/json"),
    ];
    if let Some(secret) = &config.decision_secret {
        headers.push((DECISION_SECRET_HEADER, secret.as_str()));
    }
    headers
}

/// The warning for an unusable control-plane answer; `suppressed`: similar lines not logged
/// since the last one.
pub fn error_log_line(config: &PluginConfig, error: &ControlPlaneError, suppressed: u64) -> String {
    let policy = if config.fail_open {
        "requests pass unchecked (fail_open)"
    } else {
        "requests get 503 (fail_open: false)"
    };
    format!(
        "rate-limit-filter: control plane cluster `{}`: {error}; {policy}; {suppressed} similar errors not logged",
        config.cluster
    )
}

#[cfg(test)]
mod tests;
