//! Concurrency leases in Redis (`leases.lua`): one script call takes a lease; renewals and
//! releases go in one script call per cluster slot (one call on a single node), behind the
//! same breaker and timeout as the counters.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::cluster_routing::Slot;
use redis::{Cmd, Script, Value};

use super::{RedisStore, classify, is_noscript};
use crate::store::StoreError;
use crate::store::leases::{LeaseOutcome, LeaseRef, LeaseStore};

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../leases.lua")));

impl RedisStore {
    /// `EVALSHA sha numkeys KEYS… op now ttl ARGV…`.
    fn lease_cmd(&self, op: &str, keys: &[&str], ttl_us: u64, args: &[&str]) -> Cmd {
        let now = self
            .clock
            .as_ref()
            .map(|clock| clock.now_us().to_string())
            .unwrap_or_default();
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(SCRIPT.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(op)
            .arg(now)
            .arg(ttl_us)
            .arg(args);
        cmd
    }

    /// Runs a lease script call, loading the script first if Redis lost it (the call did not
    /// run then, so it runs once).
    async fn lease_call(&self, cmd: Cmd) -> Result<Value, StoreError> {
        self.guarded(async {
            let mut conn = self.connector.get().await.map_err(classify)?;
            match cmd.query_async(&mut conn).await {
                Err(err) if is_noscript(&err) => {
                    SCRIPT.load_async(&mut conn).await.map_err(classify)?;
                    cmd.query_async(&mut conn).await.map_err(classify)
                }
                reply => reply.map_err(classify),
            }
        })
        .await
    }

    /// Renews (`"n"`) or releases (`"x"`) `leases`: one script call per slot group.
    async fn lease_many(
        &self,
        op: &str,
        leases: &[LeaseRef],
        ttl_us: u64,
    ) -> Result<u64, StoreError> {
        let mut groups: Vec<(Slot, Vec<&LeaseRef>)> = Vec::new();
        for lease in leases {
            let slot = if self.connector.is_cluster() {
                Slot::for_key(&lease.key)
            } else {
                Slot::for_key("")
            };
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, members)) => members.push(lease),
                None => groups.push((slot, vec![lease])),
            }
        }
        let calls = groups.iter().map(|(_, members)| {
            let keys: Vec<&str> = members.iter().map(|l| l.key.as_str()).collect();
            let ids: Vec<&str> = members.iter().map(|l| l.id.as_str()).collect();
            self.lease_call(self.lease_cmd(op, &keys, ttl_us, &ids))
        });
        let mut done = 0;
        for reply in futures_util::future::join_all(calls).await {
            match reply? {
                Value::Int(n) if n >= 0 => done += n as u64,
                _ => {
                    return Err(StoreError::Protocol(
                        "lease script reply: not a count".into(),
                    ));
                }
            }
        }
        Ok(done)
    }
}

#[async_trait]
impl LeaseStore for RedisStore {
    async fn acquire(
        &self,
        key: &str,
        max: u64,
        id: &str,
        ttl_us: u64,
    ) -> Result<LeaseOutcome, StoreError> {
        let max = max.to_string();
        let reply = self
            .lease_call(self.lease_cmd("a", &[key], ttl_us, &[max.as_str(), id]))
            .await?;
        match reply {
            Value::Array(items) => match items.as_slice() {
                [Value::Int(granted), Value::Int(held)] if *held >= 0 => Ok(LeaseOutcome {
                    granted: *granted == 1,
                    held: *held as u64,
                }),
                _ => Err(StoreError::Protocol(
                    "lease script reply: wrong shape".into(),
                )),
            },
            _ => Err(StoreError::Protocol(
                "lease script reply: not an array".into(),
            )),
        }
    }

    async fn renew(&self, leases: &[LeaseRef], ttl_us: u64) -> Result<u64, StoreError> {
        self.lease_many("n", leases, ttl_us).await
    }

    async fn release(&self, leases: &[LeaseRef]) -> Result<u64, StoreError> {
        self.lease_many("x", leases, 0).await
    }
}
