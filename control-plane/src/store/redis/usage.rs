//! Charges and releases in Redis (`usage.lua`), behind the same breaker and timeout as the
//! counters: the adjustments of one usage call go in one script call on a single node, and in
//! one per slot group on a cluster (an identity's once records and counters share its hash
//! tag), at most [`MAX_ADJUSTMENTS_PER_SCRIPT`] to a script call.

use std::sync::LazyLock;

use redis::cluster_routing::Slot;
use redis::{Cmd, Script, Value};

use super::{RedisStore, classify, is_noscript};
use crate::store::usage::{self, Adjustment, Change};
use crate::store::{Algorithm, CounterSpec, StoreError, keys};

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../usage.lua")));

/// Most adjustments one script call carries (a usage call has at most 256, each a dozen keys
/// at most): bounds how long one call holds Redis.
pub const MAX_ADJUSTMENTS_PER_SCRIPT: usize = 64;

/// One adjustment with its identity and counters.
pub type AdjustCall<'a> = (&'a str, &'a [CounterSpec], &'a Adjustment);

impl RedisStore {
    /// Applies `calls`, one result per call in order.
    pub(super) async fn adjust_counters(
        &self,
        calls: &[AdjustCall<'_>],
    ) -> Vec<Result<u64, StoreError>> {
        let mut results: Vec<Option<Result<u64, StoreError>>> = vec![None; calls.len()];
        let mut groups: Vec<(Slot, Vec<usize>)> = Vec::new();
        for (i, (shard, counters, adjustment)) in calls.iter().enumerate() {
            if !adjustment.is_valid() {
                results[i] = Some(Err(StoreError::Protocol(
                    "adjustment: invalid once name".into(),
                )));
                continue;
            }
            if counters.is_empty() || amount(adjustment) == 0 {
                results[i] = Some(Ok(0));
                continue;
            }
            let slot = if self.connector.is_cluster() {
                Slot::for_key(keys::usage_once_key(shard, &adjustment.once))
            } else {
                Slot::for_key("")
            };
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, members)) => members.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
        let runs: Vec<Vec<usize>> = groups
            .into_iter()
            .flat_map(|(_, members)| {
                members
                    .chunks(MAX_ADJUSTMENTS_PER_SCRIPT)
                    .map(<[usize]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect();
        let replies = futures_util::future::join_all(runs.iter().map(|run| async move {
            let members: Vec<&AdjustCall<'_>> = run.iter().map(|&i| &calls[i]).collect();
            self.run_script(self.usage_cmd(&members), members.len())
                .await
        }))
        .await;
        for (run, reply) in runs.iter().zip(replies) {
            match reply {
                Ok(units) => {
                    for (&i, n) in run.iter().zip(units) {
                        results[i] = Some(Ok(n));
                    }
                }
                Err(err) => {
                    for &i in run {
                        results[i] = Some(Err(err.clone()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Protocol("adjustment: no answer".into()))))
            .collect()
    }

    /// `EVALSHA sha numkeys KEYS… now ARGV…` for `members`.
    fn usage_cmd(&self, members: &[&AdjustCall<'_>]) -> Cmd {
        let now = self
            .clock
            .as_ref()
            .map(|clock| clock.now_us().to_string())
            .unwrap_or_default();
        let mut keys: Vec<String> = Vec::new();
        let mut args: Vec<String> = vec![now];
        for (shard, counters, adjustment) in members {
            keys.push(keys::usage_once_key(shard, &adjustment.once));
            keys.extend(counters.iter().map(|c| c.key.clone()));
            let (op, at) = match adjustment.change {
                Change::Charge { .. } => ("c", adjustment.once.clone()),
                Change::Release { recorded_us, .. } => ("r", recorded_us.to_string()),
            };
            let remember_ms =
                usage::remember_us(counters.iter().map(|c| c.window_us)).div_ceil(1000);
            args.extend([
                op.to_string(),
                amount(adjustment).to_string(),
                at,
                remember_ms.to_string(),
                counters.len().to_string(),
            ]);
            for spec in counters.iter() {
                let slot_us = match spec.algorithm {
                    Algorithm::Exact => 0,
                    Algorithm::Slotted { slot_us } => slot_us.max(1),
                };
                args.extend([spec.window_us.to_string(), slot_us.to_string()]);
            }
        }
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(SCRIPT.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(args);
        cmd
    }

    /// Runs one usage script call of `count` adjustments, loading the script first if Redis
    /// lost it (the call did not run then, so it runs once).
    async fn run_script(&self, cmd: Cmd, count: usize) -> Result<Vec<u64>, StoreError> {
        let reply = self
            .guarded(async {
                let mut conn = self.connector.get().await.map_err(classify)?;
                match cmd.query_async(&mut conn).await {
                    Err(err) if is_noscript(&err) => {
                        SCRIPT.load_async(&mut conn).await.map_err(classify)?;
                        cmd.query_async(&mut conn).await.map_err(classify)
                    }
                    reply => reply.map_err(classify),
                }
            })
            .await?;
        let Value::Array(items) = reply else {
            return Err(StoreError::Protocol(
                "usage script reply: not an array".into(),
            ));
        };
        let units: Vec<u64> = items
            .iter()
            .filter_map(|item| match item {
                Value::Int(n) if *n >= 0 => Some(*n as u64),
                _ => None,
            })
            .collect();
        if units.len() != count {
            return Err(StoreError::Protocol(
                "usage script reply: wrong shape".into(),
            ));
        }
        Ok(units)
    }
}

/// The units an adjustment adds or takes back.
fn amount(adjustment: &Adjustment) -> u64 {
    match adjustment.change {
        Change::Charge { units } => units,
        Change::Release { weight, .. } => weight,
    }
}
