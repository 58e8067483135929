//! Redis counter store: one `EVALSHA` per decision, one round trip per decision or per batch.
//!
//! Time comes from Redis (`TIME` inside the script), so every replica of the control plane
//! judges by the same clock and a skewed host clock changes nothing; a store given a
//! [`Clock`] instead (tests: a manual clock) passes its readings to the script. The connection is a
//! multiplexed `ConnectionManager` that reconnects by itself; a circuit breaker makes calls
//! fail fast while Redis is down instead of each waiting for the timeout.
//!
//! Each call carries a nonce, and the script remembers the nonces of the requests it recorded
//! for a replay horizon: a call that reaches Redis twice (the cluster client sends it again
//! when the connection drops before the reply) records its request once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{Cmd, Pipeline, Script, Value};

use super::connection::Connector;
use super::keys;
use super::nonce::NonceSource;
use super::{
    Algorithm, Breaker, BreakerState, Clock, CounterSpec, CounterState, CounterStore,
    MonotonicClock, Outcome, StoreError,
};

const SCRIPT: &str = include_str!("sliding_window.lua");

/// How long the script remembers the nonce of a recorded request, from the store's timeout.
/// Every send of one call happens within the timeout (the cluster client stops retrying once
/// the caller gave up), so a retry runs later than the first execution by at most the timeout
/// plus however long it waited inside Redis: ten timeouts, and at least a second, cover a
/// Redis that stalls for several timeouts. Memory: one entry per request admitted within it.
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

/// One script call, built once: sent again (a retry), it carries the same nonce, and the
/// script counts its request once.
#[derive(Clone)]
pub struct ScriptCall {
    cmd: Cmd,
    /// How many counters the reply describes.
    counter_count: usize,
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
            seen_ttl_ms: (horizon.as_micros().div_ceil(1000) + 1).to_string(),
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
        self.script_call(shard, counters, "r", &self.nonces.next())
    }

    /// Sends `call` behind the breaker and the timeout, loading the script first if Redis
    /// lost it.
    pub async fn send(&self, call: &ScriptCall) -> Result<Outcome, StoreError> {
        let reply: Value = self
            .guarded(async {
                let mut conn = self.connector.get().await.map_err(classify)?;
                match call.cmd.query_async(&mut conn).await {
                    // Not cached (Redis restarted or flushed it): the call did not run, so
                    // loading the script and calling again counts it once.
                    Err(err) if is_noscript(&err) => {
                        self.script.load_async(&mut conn).await.map_err(classify)?;
                        call.cmd.query_async(&mut conn).await.map_err(classify)
                    }
                    reply => reply.map_err(classify),
                }
            })
            .await?;
        parse_reply(reply, call.counter_count)
    }

    /// `EVALSHA sha 1+n+m seen KEYS… SOURCES… nonce mode now horizon seen_ttl (limit window
    /// shadow slot source)…`, where `now` is empty for Redis `TIME` or the injected clock's
    /// reading, `slot` is a slotted counter's slot in µs (0 for an exact log) and `source` the
    /// index in `KEYS` of the exact log a new slotted counter takes its counts from (0: none;
    /// one of the `m` SOURCES, which share the identity's hash tag). A report (`"p"`) records
    /// nothing and needs no nonce.
    fn script_call(
        &self,
        shard: &str,
        counters: &[CounterSpec],
        mode: &str,
        nonce: &str,
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
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash())
            .arg(1 + counters.len() + source_count)
            .arg(keys::seen_key(shard));
        for spec in counters {
            cmd.arg(&spec.key);
        }
        for source in sources.iter().flatten() {
            cmd.arg(source);
        }
        let now = self.clock.as_ref().map(|c| c.now_us().to_string());
        cmd.arg(nonce)
            .arg(mode)
            .arg(now.unwrap_or_default())
            .arg(&self.horizon_us)
            .arg(&self.seen_ttl_ms);
        // Sources follow the seen record and the counters in KEYS (1-based in Lua).
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
            cmd.arg(spec.limit)
                .arg(spec.window_us)
                .arg(if spec.shadow { "1" } else { "0" })
                .arg(slot_us)
                .arg(source_index);
        }
        ScriptCall {
            cmd,
            counter_count: counters.len(),
        }
    }

    /// Several check-and-record calls. On a single node they go out as one pipeline (one
    /// round trip; Redis runs the scripts one after the other, in order). A cluster routes
    /// by key slot and the identities of a batch live on different nodes, so there each
    /// call goes on its own, concurrently; calls on one identity share a hash tag and hence a
    /// node, where they keep their order.
    async fn run_many(&self, calls: &[(&str, &[CounterSpec])]) -> Vec<Result<Outcome, StoreError>> {
        let shards: Vec<&str> = calls.iter().map(|(shard, _)| *shard).collect();
        let calls: Vec<ScriptCall> = calls
            .iter()
            .map(|(shard, counters)| self.record_call(shard, counters))
            .collect();
        if self.connector.is_cluster() {
            return self.run_many_on_cluster(&shards, &calls).await;
        }
        let mut pipe = Pipeline::with_capacity(calls.len());
        pipe.ignore_errors();
        for call in &calls {
            pipe.add_command(call.cmd.clone());
        }
        let replies: Result<Vec<redis::RedisResult<Value>>, StoreError> = self
            .guarded(async {
                let mut conn = self.connector.get().await.map_err(classify)?;
                pipe.query_async(&mut conn).await.map_err(classify)
            })
            .await;
        let replies = match replies {
            Ok(replies) if replies.len() == calls.len() => replies,
            Ok(_) => {
                let err = StoreError::Protocol("pipeline: wrong number of replies".into());
                return vec![Err(err); calls.len()];
            }
            Err(err) => return vec![Err(err); calls.len()],
        };
        let mut results = Vec::with_capacity(calls.len());
        for (call, reply) in calls.iter().zip(replies) {
            results.push(match reply {
                Ok(value) => parse_reply(value, call.counter_count),
                // The script is not cached (Redis restarted or flushed it): this call did not
                // run, so it is safe to send it alone, which loads the script.
                Err(err) if is_noscript(&err) => self.send(call).await,
                Err(err) => Err(classify(err)),
            });
        }
        results
    }
}

impl RedisStore {
    /// A cluster takes no cross-slot pipeline: each shard's calls go one after the other, in
    /// the order given (sent concurrently, a later call could overtake an earlier one, e.g.
    /// while the script loads), and the shards concurrently.
    async fn run_many_on_cluster(
        &self,
        shards: &[&str],
        calls: &[ScriptCall],
    ) -> Vec<Result<Outcome, StoreError>> {
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, shard) in shards.iter().enumerate() {
            match groups.iter_mut().find(|(s, _)| s == shard) {
                Some((_, members)) => members.push(i),
                None => groups.push((shard, vec![i])),
            }
        }
        let ran = futures_util::future::join_all(groups.iter().map(|(_, members)| async move {
            let mut outcomes = Vec::with_capacity(members.len());
            for &i in members {
                outcomes.push((i, self.send(&calls[i]).await));
            }
            outcomes
        }))
        .await;
        let mut results: Vec<(usize, Result<Outcome, StoreError>)> =
            ran.into_iter().flatten().collect();
        results.sort_unstable_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, outcome)| outcome).collect()
    }
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
    async fn check_and_record(
        &self,
        shard: &str,
        counters: &[CounterSpec],
    ) -> Result<Outcome, StoreError> {
        self.send(&self.record_call(shard, counters)).await
    }

    async fn check_and_record_many(
        &self,
        calls: &[(&str, &[CounterSpec])],
    ) -> Vec<Result<Outcome, StoreError>> {
        self.run_many(calls).await
    }

    async fn peek(&self, shard: &str, counters: &[CounterSpec]) -> Result<Outcome, StoreError> {
        self.send(&self.script_call(shard, counters, "p", "")).await
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
}

#[cfg(test)]
mod tests;
