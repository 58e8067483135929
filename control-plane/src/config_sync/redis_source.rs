//! The versioned configuration document in Redis.
//!
//! One hash, `rl:{config}` (hash-tagged like every key, so it works on Redis Cluster):
//! `version`, `document` (JSON), `sha256` (of the document), `source`, `updated_at`, and
//! `file_sha256` (the last configuration file any replica recorded). Writes go through one
//! script, so a version number is never handed out twice and an identical document does not
//! create a new version; each new version is announced on the `rl:config` channel.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::{AsyncCommands, Client, Script};
use sha2::{Digest, Sha256};

use super::{ConfigManager, ConfigSource};
use crate::config::RateLimitConfig;
use crate::store::connection::Connector;

const KEY: &str = "rl:{config}";
pub const CHANNEL: &str = "rl:config";
/// Config calls are rare; a generous timeout avoids flapping on a busy Redis.
const TIMEOUT: Duration = Duration::from_secs(2);

const WRITE: &str = r#"
local current = redis.call('HGET', KEYS[1], 'sha256')
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'file_sha256', ARGV[5])
end
if current == ARGV[2] then
  return tonumber(redis.call('HGET', KEYS[1], 'version'))
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'sha256', ARGV[2], 'document', ARGV[1], 'source', ARGV[3],
  'updated_at', ARGV[4])
redis.call('PUBLISH', ARGV[6], version)
return version
"#;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot encode the configuration: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A stored version.
#[derive(Debug, Clone)]
pub struct StoredConfig {
    pub version: u64,
    pub document: String,
    pub source: String,
    pub updated_at: String,
}

pub struct RedisConfigSource {
    /// For SUBSCRIBE; in a cluster any node delivers every PUBLISH.
    pubsub: Client,
    connector: Connector,
    script: Script,
}

async fn timed<T>(
    call: impl Future<Output = Result<T, redis::RedisError>>,
) -> Result<T, SourceError> {
    match tokio::time::timeout(TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SourceError::Timeout(TIMEOUT)),
    }
}

impl RedisConfigSource {
    pub fn new(connector: Connector) -> Result<Self, SourceError> {
        Ok(Self {
            pubsub: Client::open(connector.pubsub_url())?,
            connector,
            script: Script::new(WRITE),
        })
    }

    pub async fn version(&self) -> Result<u64, SourceError> {
        let mut conn = timed(self.connector.get()).await?;
        let version: Option<u64> = timed(conn.hget(KEY, "version")).await?;
        Ok(version.unwrap_or(0))
    }

    pub async fn file_digest(&self) -> Result<Option<[u8; 32]>, SourceError> {
        let mut conn = timed(self.connector.get()).await?;
        let hex_digest: Option<String> = timed(conn.hget(KEY, "file_sha256")).await?;
        Ok(hex_digest
            .and_then(|h| hex::decode(h).ok())
            .and_then(|bytes| bytes.try_into().ok()))
    }

    pub async fn fetch(&self) -> Result<Option<StoredConfig>, SourceError> {
        let mut conn = timed(self.connector.get()).await?;
        let fields: (Option<u64>, Option<String>, Option<String>, Option<String>) = timed(
            redis::cmd("HMGET")
                .arg(KEY)
                .arg(&["version", "document", "source", "updated_at"])
                .query_async(&mut conn),
        )
        .await?;
        Ok(match fields {
            (Some(version), Some(document), source, updated_at) => Some(StoredConfig {
                version,
                document,
                source: source.unwrap_or_default(),
                updated_at: updated_at.unwrap_or_default(),
            }),
            _ => None,
        })
    }

    /// Writes `cfg` as a new version (or returns the stored version when identical).
    pub async fn publish(
        &self,
        cfg: &RateLimitConfig,
        source: ConfigSource,
        updated_at: &str,
        file_digest: Option<[u8; 32]>,
    ) -> Result<u64, SourceError> {
        let document = serde_json::to_string(cfg)?;
        let sha = hex::encode(Sha256::digest(document.as_bytes()));
        let mut conn = timed(self.connector.get()).await?;
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(KEY)
            .arg(&document)
            .arg(&sha)
            .arg(source.label())
            .arg(updated_at)
            .arg(file_digest.map(hex::encode).unwrap_or_default())
            .arg(CHANNEL);
        timed(invocation.invoke_async(&mut conn)).await
    }

    /// Subscribes to change notifications and syncs on each, reconnecting forever. The
    /// periodic check in [`poll`] covers messages lost while disconnected.
    pub async fn listen(&self, manager: Arc<ConfigManager>) {
        loop {
            match self.pubsub.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if pubsub.subscribe(CHANNEL).await.is_ok() {
                        // Changes made while we were not subscribed.
                        let _ = manager.reconcile().await;
                        let mut messages = pubsub.on_message();
                        while messages.next().await.is_some() {
                            if let Err(err) = manager.sync_from_redis().await {
                                tracing::warn!(error = %err, "configuration sync failed");
                            }
                        }
                    }
                }
                Err(err) => tracing::debug!(error = %err, "config subscription failed"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
