//! Where the live configuration comes from, and how a change reaches every replica.
//!
//! Sources: the configuration file (watched), the admin API (`PUT`), and — with Redis — the
//! versioned document stored there. With Redis, every accepted change (a PUT, or a file
//! whose content no replica has published yet) is written to Redis as a new version and
//! announced on a pub/sub channel; every replica adopts the newest version it sees, from the
//! notification or from a periodic version check (the safety net for missed messages).
//! Without Redis the replica's own changes are all there is.
//!
//! Versions stay ordered when Redis loses its data (a restart without persistence,
//! `FLUSHALL`, eviction, a failover to a lagging replica):
//!
//! - a writer stores `max(stored, its own) + 1`, so a change made after the loss still
//!   outranks what every replica runs;
//! - a replica that finds a stored version below its own puts its own back (only while the
//!   stored one is lower, so replicas doing it at once agree), and the others adopt it;
//! - two different documents under one version (possible after a loss) are settled by
//!   adopting the stored one.
//!
//! So after a loss every replica converges on the highest version any replica held, or on a
//! newer change, within one periodic check.
//!
//! A change is validated and compiled before anything is written or swapped: a bad document
//! never replaces a good one, and decisions keep running on the old config meanwhile. A
//! change answered as applied is live on the replica that answered.

mod redis_source;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{
    self, CompiledConfig, ConfigError, DemoPolicy, DemoSecret, RateLimitConfig, demo_secrets,
};
use crate::live_config::SharedConfig;
use crate::metrics::Metrics;

pub use redis_source::{
    CHANNEL, Document, MAX_PUBLISHED_FILES, RedisConfigSource, SourceError, StoredConfig,
    StoredHead, WriteOutcome,
};
pub use watch::watch_file;

/// Where the running configuration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConfigSource {
    File,
    Api,
}

impl ConfigSource {
    pub fn label(self) -> &'static str {
        match self {
            ConfigSource::File => "file",
            ConfigSource::Api => "api",
        }
    }

    fn parse(text: &str) -> ConfigSource {
        if text == "api" {
            ConfigSource::Api
        } else {
            ConfigSource::File
        }
    }
}

/// Version information of the running configuration.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConfigMeta {
    /// Increases with every change (shared by all replicas when Redis is configured); also
    /// the `ETag` of the configuration.
    pub version: u64,
    pub source: ConfigSource,
    /// RFC 3339 time of the change.
    pub updated_at: String,
}

/// What a change requires of the running version (a PUT's `If-Match`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Precondition {
    /// Unconditional.
    #[default]
    None,
    /// Only if the newest version is one of these (none: never).
    VersionIn(Vec<u64>),
}

impl Precondition {
    fn holds(&self, version: u64) -> bool {
        match self {
            Precondition::None => true,
            Precondition::VersionIn(versions) => versions.contains(&version),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("the configuration store (Redis) is unavailable: {0}")]
    Store(#[from] SourceError),
    #[error("the configuration is at version {current}, not the version If-Match names")]
    Conflict { current: u64 },
}

/// The configuration in force, as this replica knows it.
#[derive(Debug, Clone)]
struct Running {
    meta: ConfigMeta,
    /// SHA-256 (hex) of the document as stored in Redis: tells two documents under one
    /// version apart.
    sha256: String,
}

/// What a change did.
enum Change {
    Applied(ConfigMeta),
    /// The file's content was published before; the stored version stays.
    FileSeen,
}

pub struct ConfigManager {
    live: SharedConfig,
    running: Mutex<Running>,
    file: PathBuf,
    /// SHA-256 of the file content last seen (applied or rejected), so an unchanged file is
    /// not parsed again and a broken one is reported once.
    last_file_digest: Mutex<Option<[u8; 32]>>,
    /// Set while the file's content has not been recorded in Redis yet (Redis was down).
    file_pending: Mutex<Option<(RateLimitConfig, [u8; 32])>>,
    /// The file content this replica knows Redis has recorded, put back with the running
    /// version if Redis loses its data.
    file_recorded: Mutex<Option<[u8; 32]>>,
    redis: Option<RedisConfigSource>,
    metrics: Arc<Metrics>,
    demo: DemoPolicy,
    /// Set once start-up is over: from then on, a change that brings a demo secret in is
    /// named as it happens.
    started: AtomicBool,
    /// Serialises changes so two sources cannot interleave a check and a swap.
    change: tokio::sync::Mutex<()>,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The document as stored in Redis, and its SHA-256 (hex).
fn encode(cfg: &RateLimitConfig) -> Result<(String, String), serde_json::Error> {
    let json = serde_json::to_string(cfg)?;
    let sha = hex::encode(Sha256::digest(json.as_bytes()));
    Ok((json, sha))
}

impl ConfigManager {
    /// [`start_with`](Self::start_with), naming demo secrets in warnings.
    pub async fn start(
        file: &Path,
        redis: Option<RedisConfigSource>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<ConfigManager>, ConfigError> {
        Self::start_with(file, redis, metrics, DemoPolicy::Warn).await
    }

    /// Starts from the file, reconciling with Redis when configured: a file no replica has
    /// published becomes a new version; otherwise the newest version in Redis (perhaps a
    /// PUT) wins. A broken file is fatal only when Redis holds no configuration to fall back
    /// on; a file with a demo secret is fatal under [`DemoPolicy::Refuse`].
    pub async fn start_with(
        file: &Path,
        redis: Option<RedisConfigSource>,
        metrics: Arc<Metrics>,
        demo: DemoPolicy,
    ) -> Result<Arc<ConfigManager>, ConfigError> {
        let from_file = config::read_file(file).and_then(|bytes| {
            let cfg = config::parse_yaml_bytes(&bytes)?;
            let compiled = CompiledConfig::compile(cfg.clone())?;
            Ok((cfg, compiled, digest(&bytes)))
        });
        let (initial, pending, sha256) = match from_file {
            Ok((cfg, compiled, d)) => {
                if demo == DemoPolicy::Refuse {
                    let found = demo_secrets(&cfg);
                    for each in &found {
                        tracing::error!(event = "demo_secret", field = %each.field, "{}", each.refusal());
                    }
                    if let Some(first) = found.first() {
                        return Err(first.refusal());
                    }
                }
                let sha = encode(&cfg).map(|(_, sha)| sha).unwrap_or_default();
                (compiled, Some((cfg, d)), sha)
            }
            Err(file_err) => {
                tracing::error!(error = %file_err, path = %file.display(), "configuration file rejected");
                let stored = match &redis {
                    Some(redis) => redis.fetch().await.ok().flatten(),
                    None => None,
                };
                let compiled = stored.and_then(|doc| {
                    config::parse_json(doc.document.as_bytes())
                        .and_then(CompiledConfig::compile)
                        .ok()
                        .filter(|c| demo == DemoPolicy::Warn || demo_secrets(c.source()).is_empty())
                });
                match compiled {
                    Some(compiled) => {
                        tracing::warn!("running the configuration stored in Redis instead");
                        (compiled, None, String::new())
                    }
                    None => return Err(file_err),
                }
            }
        };
        metrics.follow_config(&initial);
        let manager = Arc::new(ConfigManager {
            live: crate::live_config::shared(initial),
            running: Mutex::new(Running {
                meta: ConfigMeta {
                    // With Redis, version numbers are Redis's; 0 until this replica has synced.
                    version: if redis.is_some() { 0 } else { 1 },
                    source: ConfigSource::File,
                    updated_at: crate::decision::rfc3339_now(),
                },
                sha256,
            }),
            file: file.to_path_buf(),
            last_file_digest: Mutex::new(pending.as_ref().map(|(_, d)| *d)),
            file_pending: Mutex::new(pending.filter(|_| redis.is_some())),
            file_recorded: Mutex::new(None),
            redis,
            metrics,
            demo,
            started: AtomicBool::new(false),
            change: tokio::sync::Mutex::new(()),
        });
        if let Err(err) = manager.reconcile().await {
            tracing::warn!(error = %err, "configuration store unreachable at start; using the file until it is");
        }
        let meta = manager.meta();
        tracing::info!(
            version = meta.version,
            source = meta.source.label(),
            "configuration in force"
        );
        for found in demo_secrets(manager.current().source()) {
            found.warn();
        }
        manager.started.store(true, Ordering::Release);
        Ok(manager)
    }

    /// The live configuration decisions read.
    pub fn live(&self) -> SharedConfig {
        self.live.clone()
    }

    pub fn current(&self) -> Arc<CompiledConfig> {
        self.live.load_full()
    }

    pub fn meta(&self) -> ConfigMeta {
        self.running.lock().meta.clone()
    }

    fn running(&self) -> Running {
        self.running.lock().clone()
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn redis_source(&self) -> Option<&RedisConfigSource> {
        self.redis.as_ref()
    }

    /// Makes `compiled` the live configuration.
    fn apply(&self, compiled: CompiledConfig, meta: ConfigMeta, sha256: String) {
        if self.started.load(Ordering::Acquire) {
            let before = demo_secrets(self.current().source());
            for found in demo_secrets(compiled.source()) {
                if !before.contains(&found) {
                    found.warn();
                }
            }
        }
        self.metrics.follow_config(&compiled);
        self.live.store(Arc::new(compiled));
        let (version, source) = (meta.version, meta.source);
        *self.running.lock() = Running { meta, sha256 };
        self.metrics.config_reload(source.label(), true);
        tracing::info!(version, source = source.label(), "configuration applied");
    }

    /// Strict mode's refusal of a document with a demo secret.
    fn refused(&self, cfg: &RateLimitConfig) -> Option<DemoSecret> {
        match self.demo {
            DemoPolicy::Warn => None,
            DemoPolicy::Refuse => demo_secrets(cfg).into_iter().next(),
        }
    }

    /// A new document from the admin API, validated, written to Redis (when configured) and
    /// applied here if `precondition` holds for the newest version. Returns the version in
    /// force afterwards: the document is live on this replica when this returns.
    pub async fn update(
        &self,
        cfg: RateLimitConfig,
        source: ConfigSource,
        precondition: &Precondition,
    ) -> Result<ConfigMeta, UpdateError> {
        match self.change(cfg, source, None, precondition).await? {
            Change::Applied(meta) => Ok(meta),
            // Only a file is ever "seen".
            Change::FileSeen => Ok(self.meta()),
        }
    }

    async fn change(
        &self,
        cfg: RateLimitConfig,
        source: ConfigSource,
        file_digest: Option<[u8; 32]>,
        precondition: &Precondition,
    ) -> Result<Change, UpdateError> {
        let checked =
            CompiledConfig::compile(cfg.clone()).and_then(|compiled| match self.refused(&cfg) {
                Some(found) => Err(found.refusal()),
                None => Ok(compiled),
            });
        let compiled = match checked {
            Ok(compiled) => compiled,
            Err(err) => {
                self.metrics.config_reload(source.label(), false);
                return Err(err.into());
            }
        };
        let (json, sha256) = encode(&cfg).map_err(SourceError::from)?;
        let _guard = self.change.lock().await;
        let running = self.running();
        let updated_at = crate::decision::rfc3339_now();
        let Some(redis) = &self.redis else {
            if !precondition.holds(running.meta.version) {
                return Err(UpdateError::Conflict {
                    current: running.meta.version,
                });
            }
            let meta = ConfigMeta {
                version: running.meta.version + 1,
                source,
                updated_at,
            };
            self.apply(compiled, meta.clone(), sha256);
            return Ok(Change::Applied(meta));
        };
        let doc = Document {
            json: &json,
            sha256: &sha256,
            source,
            updated_at: &updated_at,
            file_digest,
        };
        let outcome = redis
            .publish(&doc, running.meta.version, precondition)
            .await?;
        if file_digest.is_some() && outcome != WriteOutcome::FileSeen {
            *self.file_recorded.lock() = file_digest;
        }
        let meta = match outcome {
            WriteOutcome::Written(version) => ConfigMeta {
                version,
                source,
                updated_at,
            },
            WriteOutcome::Unchanged {
                version,
                source: stored_source,
                updated_at: stored_at,
            } => {
                if running.meta.version == version && running.sha256 == sha256 {
                    // Already live here.
                    return Ok(Change::Applied(running.meta));
                }
                ConfigMeta {
                    version,
                    source: ConfigSource::parse(&stored_source),
                    updated_at: stored_at,
                }
            }
            WriteOutcome::FileSeen => {
                *self.file_recorded.lock() = file_digest;
                return Ok(Change::FileSeen);
            }
            WriteOutcome::Conflict(current) => return Err(UpdateError::Conflict { current }),
        };
        self.apply(compiled, meta.clone(), sha256);
        Ok(Change::Applied(meta))
    }

    /// The newest configuration stored, to resolve redacted placeholders against: Redis's
    /// when it holds one at least as new as this replica's, else this replica's own.
    pub async fn newest_document(&self) -> Result<RateLimitConfig, SourceError> {
        let local_version = self.meta().version;
        let local = self.current().source().clone();
        let Some(redis) = &self.redis else {
            return Ok(local);
        };
        let stored = redis
            .fetch()
            .await?
            .filter(|doc| doc.version >= local_version)
            .and_then(|doc| config::parse_json(doc.document.as_bytes()).ok());
        Ok(stored.unwrap_or(local))
    }

    /// Re-reads the file; publishes and applies it when its content changed, is valid and
    /// no replica has published it before.
    pub async fn reload_file(&self) {
        let bytes = match config::read_file(&self.file) {
            Ok(bytes) => bytes,
            Err(err) => {
                // A file replaced by rename can be missing for an instant; the next event
                // or poll reads it.
                tracing::debug!(error = %err, "configuration file not readable");
                return;
            }
        };
        let d = digest(&bytes);
        if *self.last_file_digest.lock() == Some(d) {
            return;
        }
        *self.last_file_digest.lock() = Some(d);
        let cfg = match config::parse_yaml_bytes(&bytes) {
            Ok(cfg) => cfg,
            Err(err) => {
                self.metrics.config_reload("file", false);
                tracing::error!(error = %err, path = %self.file.display(), "configuration file rejected; keeping the running configuration");
                return;
            }
        };
        match self.publish_file(cfg, d).await {
            Ok(()) => {}
            Err(UpdateError::Invalid(err)) => {
                tracing::error!(error = %err, path = %self.file.display(), "configuration file rejected; keeping the running configuration");
            }
            Err(err) => {
                // Forget the digest so the next event or poll tries again.
                tracing::warn!(error = %err, "configuration store unreachable; the file change is retried");
                *self.last_file_digest.lock() = None;
            }
        }
    }

    /// The file's content as a change; when a replica published it before, the stored
    /// version stays (a copy of the file that lags must not undo a newer change).
    async fn publish_file(&self, cfg: RateLimitConfig, d: [u8; 32]) -> Result<(), UpdateError> {
        let file_sha = encode(&cfg).map(|(_, sha)| sha).unwrap_or_default();
        match self
            .change(cfg, ConfigSource::File, Some(d), &Precondition::None)
            .await?
        {
            Change::Applied(_) => Ok(()),
            Change::FileSeen => {
                self.sync_from_redis().await?;
                let running = self.running();
                if running.sha256 == file_sha {
                    tracing::debug!(
                        version = running.meta.version,
                        "configuration file already published"
                    );
                } else {
                    tracing::warn!(
                        version = running.meta.version,
                        path = %self.file.display(),
                        "configuration file content already published before; not published \
                         again, the stored version stays (to go back to an earlier file, \
                         change its content, e.g. a comment, or PUT it)"
                    );
                }
                Ok(())
            }
        }
    }

    /// Brings this replica and Redis together: adopts a newer stored version, or puts back
    /// this replica's version when Redis holds an older one (it lost its data). Returns
    /// whether a configuration was adopted.
    pub async fn sync_from_redis(&self) -> Result<bool, SourceError> {
        let Some(redis) = &self.redis else {
            return Ok(false);
        };
        let head = redis.head().await?;
        let running = self.running();
        if head == self.head_of(&running) {
            return Ok(false);
        }
        let _guard = self.change.lock().await;
        let running = self.running();
        if head.version < running.meta.version {
            self.restore(redis, &running, head.version).await?;
            return Ok(false);
        }
        let Some(doc) = redis.fetch().await? else {
            return Ok(false);
        };
        let newer = doc.version > running.meta.version
            || (doc.version == running.meta.version && doc.sha256 != running.sha256);
        if !newer {
            return Ok(false);
        }
        let checked = config::parse_json(doc.document.as_bytes())
            .and_then(CompiledConfig::compile)
            .and_then(|compiled| match self.refused(compiled.source()) {
                Some(found) => Err(found.refusal()),
                None => Ok(compiled),
            });
        match checked {
            Ok(compiled) => {
                let meta = ConfigMeta {
                    version: doc.version,
                    source: ConfigSource::parse(&doc.source),
                    updated_at: doc.updated_at,
                };
                self.apply(compiled, meta, doc.sha256);
                Ok(true)
            }
            Err(err) => {
                self.metrics.config_reload("redis", false);
                tracing::error!(error = %err, version = doc.version, "stored configuration rejected; keeping the running configuration");
                Ok(false)
            }
        }
    }

    /// What Redis holds when it is in step with `running`.
    fn head_of(&self, running: &Running) -> StoredHead {
        StoredHead {
            version: running.meta.version,
            sha256: (running.meta.version > 0).then(|| running.sha256.clone()),
        }
    }

    /// Puts this replica's version back into Redis, which holds `stored` (lower).
    async fn restore(
        &self,
        redis: &RedisConfigSource,
        running: &Running,
        stored: u64,
    ) -> Result<(), SourceError> {
        let (json, sha256) = encode(self.current().source())?;
        let doc = Document {
            json: &json,
            sha256: &sha256,
            source: running.meta.source,
            updated_at: &running.meta.updated_at,
            file_digest: *self.file_recorded.lock(),
        };
        let now = redis.restore(&doc, running.meta.version).await?;
        if now == running.meta.version {
            // What Redis now holds for this version.
            self.running.lock().sha256 = sha256.clone();
            tracing::warn!(
                version = running.meta.version,
                found = stored,
                "the configuration store had lost this version (Redis lost its data?); \
                 republished it"
            );
        }
        Ok(())
    }

    /// Records a file no replica has published yet, then brings this replica and Redis
    /// together ([`sync_from_redis`](Self::sync_from_redis)).
    pub async fn reconcile(&self) -> Result<(), UpdateError> {
        if self.redis.is_none() {
            return Ok(());
        }
        let pending = self.file_pending.lock().clone();
        if let Some((cfg, d)) = pending {
            self.publish_file(cfg, d).await?;
            *self.file_pending.lock() = None;
        }
        self.sync_from_redis().await?;
        Ok(())
    }
}

/// The safety net: every `interval`, re-read the file and adopt any newer stored version
/// (or put back one Redis lost).
pub async fn poll(manager: Arc<ConfigManager>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        manager.reload_file().await;
        if let Err(err) = manager.reconcile().await {
            tracing::debug!(error = %err, "configuration store unreachable");
        }
    }
}

#[cfg(test)]
mod tests;
