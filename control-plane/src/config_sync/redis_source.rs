//! The versioned configuration document in Redis.
//!
//! Two keys, hash-tagged alike so the scripts also run on Redis Cluster:
//!
//! - `rl:{config}`, a hash: `version`, `document` (JSON), `sha256` (of the document),
//!   `source`, `updated_at`;
//! - `rl:{config}:files`, a sorted set: the SHA-256 of every configuration file a replica
//!   has published (the newest [`MAX_PUBLISHED_FILES`], scored by version), so a file
//!   content is published once however many replicas read it, whenever they read it.
//!
//! Every write goes through a script, so a version number is never handed out twice, and is
//! announced on the `rl:config` channel. The version rule that keeps versions ordered when
//! Redis loses its data is in the parent module.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::{Client, Script};

use super::{ConfigManager, ConfigSource, Precondition};
use crate::store::connection::Connector;

const KEY: &str = "rl:{config}";
const FILES_KEY: &str = "rl:{config}:files";
pub const CHANNEL: &str = "rl:config";
/// How many published file digests are remembered: enough for years of rollouts, small
/// enough (about 100 KiB) to never matter.
pub const MAX_PUBLISHED_FILES: usize = 1000;
/// Config calls are rare; a generous timeout avoids flapping on a busy Redis.
const TIMEOUT: Duration = Duration::from_secs(2);

/// A new version from a writer (a PUT, or a file): `max(stored, writer's) + 1`.
///
/// KEYS: hash, files. ARGV: document, sha256, source, updated_at, file digest ('' for a
/// PUT), channel, the writer's version, precondition ('' for none, else `if:` and the
/// versions If-Match named), MAX_PUBLISHED_FILES.
/// Returns { outcome, version, source, updated_at }: `written` (the new version), `seen`
/// (the file was published before; nothing written), `conflict` (the precondition failed;
/// the current version), `unchanged` (the stored document is this one; its version and
/// origin).
const WRITE: &str = r#"
local stored = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local current = math.max(stored, tonumber(ARGV[7]))
-- `file_sha256` in the hash: the one file digest earlier releases kept.
if ARGV[5] ~= '' and (redis.call('ZSCORE', KEYS[2], ARGV[5])
    or redis.call('HGET', KEYS[1], 'file_sha256') == ARGV[5]) then
  return {'seen', current, '', ''}
end
if ARGV[8] ~= '' then
  local matched = false
  for v in string.gmatch(ARGV[8], '%d+') do
    if tonumber(v) == current then
      matched = true
    end
  end
  if not matched then
    return {'conflict', current, '', ''}
  end
end
local function remember(version)
  if ARGV[5] ~= '' then
    redis.call('ZADD', KEYS[2], version, ARGV[5])
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[9]) + 1))
  end
end
if stored == current and redis.call('HGET', KEYS[1], 'sha256') == ARGV[2] then
  remember(stored)
  local origin = redis.call('HMGET', KEYS[1], 'source', 'updated_at')
  return {'unchanged', stored, origin[1] or '', origin[2] or ''}
end
local version = current + 1
redis.call('HSET', KEYS[1], 'version', version, 'sha256', ARGV[2], 'document', ARGV[1],
  'source', ARGV[3], 'updated_at', ARGV[4])
remember(version)
redis.call('PUBLISH', ARGV[6], version)
return {'written', version, '', ''}
"#;

/// A replica putting back the version it runs, which Redis has lost (or holds an older
/// one of): written only while the stored version is lower.
///
/// KEYS: hash, files. ARGV: document, sha256, source, updated_at, file digest ('' for
/// none), channel, version, MAX_PUBLISHED_FILES. Returns the version stored afterwards.
const RESTORE: &str = r#"
local stored = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local version = tonumber(ARGV[7])
if stored >= version then
  return stored
end
redis.call('HSET', KEYS[1], 'version', version, 'sha256', ARGV[2], 'document', ARGV[1],
  'source', ARGV[3], 'updated_at', ARGV[4])
if ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[2], version, ARGV[5])
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[8]) + 1))
end
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
    #[error("unexpected answer from the configuration script: {0}")]
    Protocol(String),
}

/// A stored version.
#[derive(Debug, Clone)]
pub struct StoredConfig {
    pub version: u64,
    pub document: String,
    /// SHA-256 (hex) of `document`, as stored.
    pub sha256: String,
    pub source: String,
    pub updated_at: String,
}

/// The stored version and the digest of its document, without the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHead {
    /// 0 when nothing is stored.
    pub version: u64,
    pub sha256: Option<String>,
}

/// A document to write, with what identifies it.
#[derive(Debug, Clone)]
pub struct Document<'a> {
    pub json: &'a str,
    pub sha256: &'a str,
    pub source: ConfigSource,
    pub updated_at: &'a str,
    /// SHA-256 of the configuration file the document came from, if any.
    pub file_digest: Option<[u8; 32]>,
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored as this new version.
    Written(u64),
    /// The stored document is already this one, at this version, written by `source` at
    /// `updated_at`.
    Unchanged {
        version: u64,
        source: String,
        updated_at: String,
    },
    /// The file's content was published before (by any replica): nothing written.
    FileSeen,
    /// The precondition named other versions; the current one is this.
    Conflict(u64),
}

pub struct RedisConfigSource {
    /// For SUBSCRIBE; in a cluster any node delivers every PUBLISH.
    pubsub: Client,
    connector: Connector,
    write: Script,
    restore: Script,
}

async fn timed<T>(
    call: impl Future<Output = Result<T, redis::RedisError>>,
) -> Result<T, SourceError> {
    match tokio::time::timeout(TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SourceError::Timeout(TIMEOUT)),
    }
}

fn precondition_arg(precondition: &Precondition) -> String {
    match precondition {
        Precondition::None => String::new(),
        Precondition::VersionIn(versions) => {
            let list: Vec<String> = versions.iter().map(u64::to_string).collect();
            format!("if: {}", list.join(" "))
        }
    }
}

impl RedisConfigSource {
    pub fn new(connector: Connector) -> Result<Self, SourceError> {
        Ok(Self {
            pubsub: Client::open(connector.pubsub_url())?,
            connector,
            write: Script::new(WRITE),
            restore: Script::new(RESTORE),
        })
    }

    /// The stored version and its document's digest.
    pub async fn head(&self) -> Result<StoredHead, SourceError> {
        let mut conn = timed(self.connector.get()).await?;
        let (version, sha256): (Option<u64>, Option<String>) = timed(
            redis::cmd("HMGET")
                .arg(KEY)
                .arg(&["version", "sha256"])
                .query_async(&mut conn),
        )
        .await?;
        Ok(StoredHead {
            version: version.unwrap_or(0),
            sha256,
        })
    }

    pub async fn fetch(&self) -> Result<Option<StoredConfig>, SourceError> {
        let mut conn = timed(self.connector.get()).await?;
        type Fields = (
            Option<u64>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let fields: Fields = timed(
            redis::cmd("HMGET")
                .arg(KEY)
                .arg(&["version", "document", "sha256", "source", "updated_at"])
                .query_async(&mut conn),
        )
        .await?;
        Ok(match fields {
            (Some(version), Some(document), sha256, source, updated_at) => Some(StoredConfig {
                version,
                document,
                sha256: sha256.unwrap_or_default(),
                source: source.unwrap_or_default(),
                updated_at: updated_at.unwrap_or_default(),
            }),
            _ => None,
        })
    }

    /// Writes `doc` as a new version after the writer's `local_version` (see [`WRITE`]).
    pub async fn publish(
        &self,
        doc: &Document<'_>,
        local_version: u64,
        precondition: &Precondition,
    ) -> Result<WriteOutcome, SourceError> {
        let mut conn = timed(self.connector.get()).await?;
        let mut invocation = self.write.prepare_invoke();
        invocation
            .key(KEY)
            .key(FILES_KEY)
            .arg(doc.json)
            .arg(doc.sha256)
            .arg(doc.source.label())
            .arg(doc.updated_at)
            .arg(doc.file_digest.map(hex::encode).unwrap_or_default())
            .arg(CHANNEL)
            .arg(local_version)
            .arg(precondition_arg(precondition))
            .arg(MAX_PUBLISHED_FILES);
        let (outcome, version, source, updated_at): (String, u64, String, String) =
            timed(invocation.invoke_async(&mut conn)).await?;
        match outcome.as_str() {
            "written" => Ok(WriteOutcome::Written(version)),
            "unchanged" => Ok(WriteOutcome::Unchanged {
                version,
                source,
                updated_at,
            }),
            "seen" => Ok(WriteOutcome::FileSeen),
            "conflict" => Ok(WriteOutcome::Conflict(version)),
            other => Err(SourceError::Protocol(other.to_string())),
        }
    }

    /// Puts back `doc` as `version` unless Redis holds that version or a newer one (see
    /// [`RESTORE`]). Returns the version stored afterwards.
    pub async fn restore(&self, doc: &Document<'_>, version: u64) -> Result<u64, SourceError> {
        let mut conn = timed(self.connector.get()).await?;
        let mut invocation = self.restore.prepare_invoke();
        invocation
            .key(KEY)
            .key(FILES_KEY)
            .arg(doc.json)
            .arg(doc.sha256)
            .arg(doc.source.label())
            .arg(doc.updated_at)
            .arg(doc.file_digest.map(hex::encode).unwrap_or_default())
            .arg(CHANNEL)
            .arg(version)
            .arg(MAX_PUBLISHED_FILES);
        timed(invocation.invoke_async(&mut conn)).await
    }

    /// Subscribes to change notifications and syncs on each, reconnecting forever. The
    /// periodic check in [`poll`](super::poll) covers messages lost while disconnected.
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
