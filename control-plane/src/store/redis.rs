//! Redis counter store: one `EVALSHA` decides a request or a whole batch of them (on a
//! cluster, one per group of requests whose keys share a slot).
//!
//! Time comes from Redis (`TIME` inside the script), so every replica of the control plane
//! judges by the same clock and a skewed host clock changes nothing; a store given a
//! [`Clock`] instead (tests: a manual clock) passes its readings to the script. The connection is a
//! multiplexed `ConnectionManager` that reconnects by itself; a circuit breaker makes calls
//! fail fast while Redis is down instead of each waiting for the timeout.
//!
//! Each request carries a nonce, and the script remembers the nonces of the requests it
//! recorded for a replay horizon: a script call that reaches Redis twice (the cluster client
//! sends it again when the connection drops before the reply) records each request once.
//!
//! A batch is decided by one script call that takes its requests one after the other, each
//! with its own keys, arguments, nonce guard and answer: the answers are those the requests
//! sent one by one would get at the same instant. A request the script refuses (bad arguments)
//! fails alone; a script call that fails (Redis down, a timeout) fails each of its requests.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::cluster_routing::Slot;
use redis::{Cmd, Script, Value};

use super::connection::Connector;
use super::keys;
use super::leases::LeaseStore;
use super::nonce::NonceSource;
use super::{
    Algorithm, Breaker, BreakerState, Clock, CounterSpec, CounterState, CounterStore,
    MonotonicClock, Outcome, StoreError,
};

mod leases;
mod usage;

const SCRIPT: &str = include_str!("sliding_window.lua");

/// How long the script remembers the nonce of a recorded request, from the store's timeout.
/// Every send of one call happens within the timeout (the cluster client stops retrying once
/// the caller gave up), so a retry runs later than the first execution by at most the timeout
/// plus however long it waited inside Redis: ten timeouts, and at least a second, cover a
/// Redis that stalls for several timeouts. Memory: one entry per request admitted within
/// twice the horizon (the script trims the record once per horizon, not per request).
pub fn replay_horizon(timeout: Duration) -> Duration {
    (timeout * 10).max(Duration::from_secs(1))
}

#[derive(Debug, Clone)]
pub struct RedisStoreOptions {
    /// The time decisions are judged by. `None` (production): Redis `TIME`, read inside the
    /// script, and the host's monotonic clock for the breaker's cooldown. `Some`: this clock
    /// for both, so a test on a manual clock hits exact window boundaries deterministically.
    pub clock: Option<Arc<dyn Clock>>,
    /// Upper bound for one decision's round trip (connecting included).
    pub timeout: Duration,
    /// Consecutive failures that open the circuit.
    pub breaker_threshold: u32,
    /// How long the circuit stays open before one probe is let through.
    pub breaker_cooldown: Duration,
    /// The URL(s) name the seed nodes of a Redis Cluster.
    pub cluster: bool,
}

impl Default for RedisStoreOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(100),
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_millis(500),
            cluster: false,
            clock: None,
        }
    }
}

pub struct RedisStore {
    connector: Connector,
    script: Script,
    breaker: Breaker,
    timeout: Duration,
    /// `None`: the script reads Redis `TIME`.
    clock: Option<Arc<dyn Clock>>,
    nonces: NonceSource,
    /// The replay horizon in µs and the seen record's TTL in ms, as the script takes them.
    horizon_us: String,
    seen_ttl_ms: String,
}

/// Most keys and arguments one script call carries (the script hash, key count and the four
/// leading arguments aside). Redis takes far more, but a script's `KEYS` and `ARGV` are Lua
/// tables built before it runs and its reply is built after: a bound keeps one call's memory
/// and its time inside Redis small. A full batch of requests with a dozen windows each fits
/// in one call; a bigger one is split, in order. A request never is: one over the bound goes
/// alone.
pub const MAX_SCRIPT_ARGS: usize = 8192;

/// One request's part of a script call, built once: sent again (a retry), it carries the
/// same nonce, and the script counts its request once.
#[derive(Clone)]
pub struct ScriptCall {
    /// The seen record, the counters, the sources (all under one hash tag).
    keys: Vec<String>,
    /// Nonce, counter and source counts, cost, five arguments per counter.
    args: Vec<String>,
    /// `"r"` records, `"p"` only reports.
    mode: &'static str,
    /// The injected clock's reading when the call was built (`None`: Redis `TIME`).
    now_us: Option<u64>,
    /// How many counters the reply describes.
    counter_count: usize,
}

impl ScriptCall {
    /// What the call adds to a script call's `KEYS` and `ARGV`.
    fn size(&self) -> usize {
        self.keys.len() + self.args.len()
    }
}

impl RedisStore {
    /// Creates the store without connecting (call it inside a Tokio runtime): the first call
    /// connects, and a Redis that is down at start only makes the control plane unready,
    /// never unable to start. `url` may list several comma-separated seed nodes of a cluster.
    pub fn new(url: &str, options: RedisStoreOptions) -> Result<Self, StoreError> {
        let breaker_clock = options
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(MonotonicClock::new()));
        let horizon = replay_horizon(options.timeout);
        Ok(Self {
            connector: Connector::new(url, options.cluster, options.timeout)?,
            script: Script::new(SCRIPT),
            breaker: Breaker::new(
                options.breaker_threshold,
                options.breaker_cooldown,
                breaker_clock,
            ),
            timeout: options.timeout,
            clock: options.clock,
            nonces: NonceSource::new(),
            horizon_us: horizon.as_micros().to_string(),
            seen_ttl_ms: ((2 * horizon).as_micros().div_ceil(1000) + 1).to_string(),
        })
    }

    /// The connection source, shared with the control plane's other Redis users (config
    /// storage, pub/sub notifications).
    pub fn connector(&self) -> Connector {
        self.connector.clone()
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Runs `call` behind the breaker and the timeout.
    async fn guarded<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let Some(permit) = self.breaker.try_acquire() else {
            return Err(StoreError::CircuitOpen);
        };
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(self.timeout.as_millis() as u64)),
        };
        // A script or protocol error is our bug, not Redis being down: it must not open
        // the circuit for everyone.
        let healthy = !matches!(result, Err(StoreError::Backend(_) | StoreError::Timeout(_)));
        permit.record(healthy);
        result
    }

    /// The call that checks `counters` of the identity `shard` and records the request when
    /// admitted: what [`check_and_record`](CounterStore::check_and_record) sends. Sending it
    /// twice records the request once. `shard` is the identity the counter keys were made
    /// for ([`keys`]): its seen record must share their hash tag, hence their cluster slot.
    pub fn record_call(&self, shard: &str, counters: &[CounterSpec]) -> ScriptCall {
        self.weighted_call(shard, counters, 1)
    }

    /// [`record_call`](Self::record_call) for a request that takes `cost` units (at least 1)
    /// from every counter.
    pub fn weighted_call(&self, shard: &str, counters: &[CounterSpec], cost: u64) -> ScriptCall {
        self.script_call(shard, counters, "r", &self.nonces.next(), cost)
    }

    /// Sends `call` alone: [`send_many`](Self::send_many) of one call.
    pub async fn send(&self, call: &ScriptCall) -> Result<Outcome, StoreError> {
        self.send_many(std::slice::from_ref(call))
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::Protocol("no answer for the call".into())))
    }

    /// Sends `calls`, one result per call in order, in as few script calls as Redis lets
    /// them share: on a single node one script call (split only beyond
    /// [`MAX_SCRIPT_ARGS`]); on a cluster, which refuses a script whose keys span several
    /// slots, one per group of calls whose keys share a slot, the groups concurrently. Calls of
    /// one slot (hence every call on one identity) run in the order given. Sending the same
    /// calls again records each admitted request once.
    pub async fn send_many(&self, calls: &[ScriptCall]) -> Vec<Result<Outcome, StoreError>> {
        let groups = if self.connector.is_cluster() {
            slot_groups(calls)
        } else {
            vec![(0..calls.len()).collect()]
        };
        let ran = futures_util::future::join_all(groups.iter().map(|members| async move {
            let mut outcomes = Vec::with_capacity(members.len());
            for chunk in chunks(members, calls, MAX_SCRIPT_ARGS) {
                let batch: Vec<&ScriptCall> = chunk.iter().map(|&i| &calls[i]).collect();
                let results = self.send_script(&batch).await;
                outcomes.extend(chunk.iter().copied().zip(results));
            }
            outcomes
        }))
        .await;
        let mut results: Vec<(usize, Result<Outcome, StoreError>)> =
            ran.into_iter().flatten().collect();
        results.sort_unstable_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, outcome)| outcome).collect()
    }

    /// One script call deciding `batch` in order, behind the breaker and the timeout, loading
    /// the script first if Redis lost it. A failed call fails each of its requests with its
    /// error; a request the script refused (bad arguments) fails alone.
    async fn send_script(&self, batch: &[&ScriptCall]) -> Vec<Result<Outcome, StoreError>> {
        let cmd = self.script_cmd(batch);
        let reply: Result<Value, StoreError> = self
            .guarded(async {
                let mut conn = self.connector.get().await.map_err(classify)?;
                match cmd.query_async(&mut conn).await {
                    // Not cached (Redis restarted or flushed it): the call did not run, so
                    // loading the script and calling again counts each request once.
                    Err(err) if is_noscript(&err) => {
                        self.script.load_async(&mut conn).await.map_err(classify)?;
                        cmd.query_async(&mut conn).await.map_err(classify)
                    }
                    reply => reply.map_err(classify),
                }
            })
            .await;
        let replies = match reply {
            Ok(Value::Array(replies)) if replies.len() == batch.len() => replies,
            Ok(_) => {
                let err = StoreError::Protocol("script reply: not one entry per request".into());
                return vec![Err(err); batch.len()];
            }
            Err(err) => return vec![Err(err); batch.len()],
        };
        batch
            .iter()
            .zip(replies)
            .map(|(call, reply)| match reply {
                Value::BulkString(why) => Err(refused(&why)),
                reply => parse_reply(reply, call.counter_count),
            })
            .collect()
    }

    /// `EVALSHA sha numkeys KEYS… mode now horizon seen_ttl ARGV…`: the requests' keys and
    /// arguments one after the other (see [`script_call`](Self::script_call)). `now` is empty
    /// for Redis `TIME`, or the injected clock's reading when the first call was built.
    fn script_cmd(&self, batch: &[&ScriptCall]) -> Cmd {
        let mode = batch.first().map_or("r", |call| call.mode);
        let now = batch.first().and_then(|call| call.now_us);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash())
            .arg(batch.iter().map(|call| call.keys.len()).sum::<usize>());
        for call in batch {
            cmd.arg(&call.keys);
        }
        cmd.arg(mode)
            .arg(now.map(|now| now.to_string()).unwrap_or_default())
            .arg(&self.horizon_us)
            .arg(&self.seen_ttl_ms);
        for call in batch {
            cmd.arg(&call.args);
        }
        cmd
    }

    /// One request's keys (`seen`, the `n` counters, the `m` SOURCES) and arguments (`nonce n
    /// m cost (limit window shadow slot source)…`), where `cost` is the units the request
    /// takes from each counter (at least 1), `slot` is a slotted counter's slot in µs
    /// (0 for an exact log) and `source` the index among the request's keys (1-based, the
    /// seen record first) of the exact log a new slotted counter takes its counts from (0:
    /// none; one of the SOURCES, which share the identity's hash tag). A report (`"p"`)
    /// records nothing and needs no nonce.
    fn script_call(
        &self,
        shard: &str,
        counters: &[CounterSpec],
        mode: &'static str,
        nonce: &str,
        cost: u64,
    ) -> ScriptCall {
        let sources: Vec<Option<String>> = counters
            .iter()
            .map(|spec| match spec.algorithm {
                Algorithm::Exact => None,
                // A log this call also counts as such stays what it is.
                Algorithm::Slotted { .. } => keys::exact_counterpart(&spec.key)
                    .filter(|exact| counters.iter().all(|other| &other.key != exact)),
            })
            .collect();
        let source_count = sources.iter().flatten().count();
        let mut call_keys = Vec::with_capacity(1 + counters.len() + source_count);
        call_keys.push(keys::seen_key(shard));
        call_keys.extend(counters.iter().map(|spec| spec.key.clone()));
        call_keys.extend(sources.iter().flatten().cloned());
        let mut args = Vec::with_capacity(4 + 5 * counters.len());
        args.push(nonce.to_string());
        args.push(counters.len().to_string());
        args.push(source_count.to_string());
        args.push(cost.max(1).to_string());
        // Sources follow the seen record and the counters (1-based).
        let mut next_source = 2 + counters.len();
        for (spec, source) in counters.iter().zip(&sources) {
            let slot_us = match spec.algorithm {
                Algorithm::Exact => 0,
                Algorithm::Slotted { slot_us } => slot_us.max(1),
            };
            let source_index = match source {
                Some(_) => {
                    next_source += 1;
                    next_source - 1
                }
                None => 0,
            };
            args.push(spec.limit.to_string());
            args.push(spec.window_us.to_string());
            args.push(if spec.shadow { "1" } else { "0" }.to_string());
            args.push(slot_us.to_string());
            args.push(source_index.to_string());
        }
        ScriptCall {
            keys: call_keys,
            args,
            mode,
            now_us: self.clock.as_ref().map(|clock| clock.now_us()),
            counter_count: counters.len(),
        }
    }

    /// Several check-and-record calls, as few script calls as [`send_many`](Self::send_many)
    /// can make them.
    pub fn record_calls(&self, calls: &[(&str, &[CounterSpec])]) -> Vec<ScriptCall> {
        calls
            .iter()
            .map(|(shard, counters)| self.record_call(shard, counters))
            .collect()
    }

    /// [`record_calls`](Self::record_calls) of requests with their costs.
    pub fn weighted_calls(&self, calls: &[(&str, &[CounterSpec], u64)]) -> Vec<ScriptCall> {
        calls
            .iter()
            .map(|(shard, counters, cost)| self.weighted_call(shard, counters, *cost))
            .collect()
    }
}

/// The calls grouped by the cluster slot of their keys (every key of a call shares the
/// identity's hash tag, so its seen record names the slot), groups in order of first
/// appearance, each group's members in order.
fn slot_groups(calls: &[ScriptCall]) -> Vec<Vec<usize>> {
    let mut groups: Vec<(Slot, Vec<usize>)> = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        let slot = Slot::for_key(call.keys.first().map_or("", String::as_str));
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, members)) => members.push(i),
            None => groups.push((slot, vec![i])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

/// `members` (indices into `calls`) cut, in order, into as few runs as keep each run's keys
/// and arguments within `max_args` and its calls of one mode (a script call records or
/// reports); a call bigger than that on its own is a run of its own.
fn chunks(members: &[usize], calls: &[ScriptCall], max_args: usize) -> Vec<Vec<usize>> {
    let mut runs: Vec<Vec<usize>> = Vec::new();
    let mut size = 0;
    for &i in members {
        let call_size = calls[i].size();
        match runs.last_mut() {
            Some(run) if size + call_size <= max_args && calls[run[0]].mode == calls[i].mode => {
                run.push(i);
                size += call_size;
            }
            _ => {
                runs.push(vec![i]);
                size = call_size;
            }
        }
    }
    runs
}

fn is_noscript(err: &redis::RedisError) -> bool {
    err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

fn classify(err: redis::RedisError) -> StoreError {
    use redis::{ErrorKind, ServerErrorKind};
    // A plain error reply (e.g. a script error) means Redis is up and we sent something
    // wrong; everything else (I/O, BUSY, LOADING, READONLY, cluster errors) means the store
    // cannot serve and counts towards the breaker.
    match err.kind() {
        ErrorKind::Server(ServerErrorKind::ResponseError) if err.code() != Some("BUSY") => {
            StoreError::Refused(Arc::new(err))
        }
        _ => StoreError::backend(err),
    }
}

/// A request the script refused whole (its reply a string saying why): a wrong call, as an
/// error reply to a script call of its own would be.
fn refused(why: &[u8]) -> StoreError {
    StoreError::Refused(Arc::new(redis::RedisError::from((
        redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
        "the script refused the request",
        String::from_utf8_lossy(why).into_owned(),
    ))))
}

fn parse_reply(reply: Value, counters: usize) -> Result<Outcome, StoreError> {
    let bad = |what: &str| StoreError::Protocol(format!("script reply: {what}"));
    let Value::Array(items) = reply else {
        return Err(bad("not an array"));
    };
    if items.len() != 2 + 3 * counters {
        return Err(bad("wrong length"));
    }
    let int = |v: &Value| match v {
        Value::Int(i) if *i >= 0 => Ok(*i as u64),
        _ => Err(bad("not a non-negative integer")),
    };
    let admitted = int(&items[0])? == 1;
    let now_us = int(&items[1])?;
    let states = items[2..]
        .chunks_exact(3)
        .map(|triple| {
            Ok(CounterState {
                count: int(&triple[0])?,
                free_at_us: int(&triple[1])?,
                full: int(&triple[2])? == 1,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Outcome {
        admitted,
        now_us,
        counters: states,
    })
}

#[async_trait]
impl CounterStore for RedisStore {
    async fn check_and_record_weighted(
        &self,
        shard: &str,
        counters: &[CounterSpec],
        cost: u64,
    ) -> Result<Outcome, StoreError> {
        self.send(&self.weighted_call(shard, counters, cost)).await
    }

    async fn check_and_record_many_weighted(
        &self,
        calls: &[(&str, &[CounterSpec], u64)],
    ) -> Vec<Result<Outcome, StoreError>> {
        self.send_many(&self.weighted_calls(calls)).await
    }

    async fn peek(&self, shard: &str, counters: &[CounterSpec]) -> Result<Outcome, StoreError> {
        self.send(&self.script_call(shard, counters, "p", "", 1))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.guarded(async {
            let mut conn = self.connector.get().await.map_err(classify)?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(drop)
                .map_err(classify)
        })
        .await
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    fn breaker_state(&self) -> Option<BreakerState> {
        Some(self.breaker.state())
    }

    fn breaker_opened_total(&self) -> u64 {
        self.breaker.opened_total()
    }

    async fn adjust(
        &self,
        shard: &str,
        counters: &[CounterSpec],
        adjustment: &super::Adjustment,
    ) -> Result<u64, StoreError> {
        self.adjust_counters(&[(shard, counters, adjustment)])
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::Protocol("adjustment: no answer".into())))
    }

    async fn adjust_many(
        &self,
        calls: &[(&str, &[CounterSpec], &super::Adjustment)],
    ) -> Vec<Result<u64, StoreError>> {
        self.adjust_counters(calls).await
    }

    fn leases(&self) -> Option<&dyn LeaseStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests;
