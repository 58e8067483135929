//! Charges and releases in Redis (`usage.lua`): one script call per adjusted request, behind
//! the same breaker and timeout as the counters. The once record shares the identity's hash
//! tag, so a call touches one slot.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::{RedisStore, classify, is_noscript};
use crate::store::usage::{self, Adjustment, Change};
use crate::store::{Algorithm, CounterSpec, StoreError, keys};

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../usage.lua")));

impl RedisStore {
    pub(super) async fn adjust_counters(
        &self,
        shard: &str,
        counters: &[CounterSpec],
        adjustment: &Adjustment,
    ) -> Result<u64, StoreError> {
        if !adjustment.is_valid() {
            return Err(StoreError::Protocol("adjustment: invalid once name".into()));
        }
        let (op, amount, at) = match adjustment.change {
            Change::Charge { units } => ("c", units, adjustment.once.clone()),
            Change::Release {
                recorded_us,
                weight,
            } => ("r", weight, recorded_us.to_string()),
        };
        if amount == 0 || counters.is_empty() {
            return Ok(0);
        }
        let now = self
            .clock
            .as_ref()
            .map(|clock| clock.now_us().to_string())
            .unwrap_or_default();
        let remember_ms = usage::remember_us(counters.iter().map(|c| c.window_us)).div_ceil(1000);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(SCRIPT.get_hash())
            .arg(counters.len() + 1)
            .arg(keys::usage_once_key(shard, &adjustment.once));
        for spec in counters {
            cmd.arg(&spec.key);
        }
        cmd.arg(op).arg(now).arg(amount).arg(at).arg(remember_ms);
        for spec in counters {
            let slot_us = match spec.algorithm {
                Algorithm::Exact => 0,
                Algorithm::Slotted { slot_us } => slot_us.max(1),
            };
            cmd.arg(spec.window_us).arg(slot_us);
        }
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
        match reply {
            Value::Int(n) if n >= 0 => Ok(n as u64),
            _ => Err(StoreError::Protocol(
                "usage script reply: not a count".into(),
            )),
        }
    }
}
