//! Where the live configuration comes from, and how a change reaches every replica.
//!
//! Sources: the configuration file (watched), the admin API (`PUT`), and — with Redis — the
//! versioned document stored there. With Redis, every accepted change (a PUT, or a file
//! whose content changed) is written to Redis as a new version and announced on a pub/sub
//! channel; every replica adopts the newest version it sees, from the notification or from
//! a periodic version check (the safety net for missed messages). Without Redis the
//! replica's own changes are all there is.
//!
//! A change is validated and compiled before anything is written or swapped: a bad document
//! never replaces a good one, and decisions keep running on the old config meanwhile.

mod redis_source;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{self, CompiledConfig, ConfigError, RateLimitConfig};
use crate::live_config::SharedConfig;
use crate::metrics::Metrics;

pub use redis_source::{RedisConfigSource, SourceError};
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
    /// Increases with every change (shared by all replicas when Redis is configured).
    pub version: u64,
    pub source: ConfigSource,
    /// RFC 3339 time of the change.
    pub updated_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("the configuration store (Redis) is unavailable: {0}")]
    Store(#[from] SourceError),
}

pub struct ConfigManager {
    live: SharedConfig,
    meta: Mutex<ConfigMeta>,
    file: PathBuf,
    /// SHA-256 of the file content last seen (applied or rejected), so an unchanged file is
    /// not parsed again and a broken one is reported once.
    last_file_digest: Mutex<Option<[u8; 32]>>,
    /// Set while the file's content has not been recorded in Redis yet (Redis was down).
    file_pending: Mutex<Option<(RateLimitConfig, [u8; 32])>>,
    redis: Option<RedisConfigSource>,
    metrics: Arc<Metrics>,
    /// Serialises changes so two sources cannot interleave a check and a swap.
    change: tokio::sync::Mutex<()>,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl ConfigManager {
    /// Starts from the file, reconciling with Redis when configured: a file Redis has not
    /// recorded yet becomes a new version; otherwise the newest version in Redis (perhaps a
    /// PUT) wins. A broken file is fatal only when Redis holds a configuration to fall back on.
    pub async fn start(
        file: &Path,
        redis: Option<RedisConfigSource>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<ConfigManager>, ConfigError> {
        let from_file = config::read_file(file).and_then(|bytes| {
            let cfg = config::parse_yaml_bytes(&bytes)?;
            let compiled = CompiledConfig::compile(cfg.clone())?;
            Ok((cfg, compiled, digest(&bytes)))
        });
        let (initial, pending) = match from_file {
            Ok((cfg, compiled, d)) => (compiled, Some((cfg, d))),
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
                });
                match compiled {
                    Some(compiled) => {
                        tracing::warn!("running the configuration stored in Redis instead");
                        (compiled, None)
                    }
                    None => return Err(file_err),
                }
            }
        };
        let manager = Arc::new(ConfigManager {
            live: crate::live_config::shared(initial),
            meta: Mutex::new(ConfigMeta {
                // With Redis, version numbers are Redis's; 0 until this replica has synced.
                version: if redis.is_some() { 0 } else { 1 },
                source: ConfigSource::File,
                updated_at: crate::decision::rfc3339_now(),
            }),
            file: file.to_path_buf(),
            last_file_digest: Mutex::new(pending.as_ref().map(|(_, d)| *d)),
            file_pending: Mutex::new(pending.filter(|_| redis.is_some())),
            redis,
            metrics,
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
        self.meta.lock().clone()
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn redis_source(&self) -> Option<&RedisConfigSource> {
        self.redis.as_ref()
    }

    fn apply(
        &self,
        compiled: CompiledConfig,
        version: u64,
        source: ConfigSource,
        updated_at: String,
    ) {
        self.live.store(Arc::new(compiled));
        *self.meta.lock() = ConfigMeta {
            version,
            source,
            updated_at,
        };
        self.metrics.config_reload(source.label(), true);
        tracing::info!(version, source = source.label(), "configuration applied");
    }

    /// A new document from `source`: validated, written to Redis (when configured) and
    /// applied here. Returns the version in force afterwards.
    pub async fn update(
        &self,
        cfg: RateLimitConfig,
        source: ConfigSource,
        file_digest: Option<[u8; 32]>,
    ) -> Result<u64, UpdateError> {
        let compiled = match CompiledConfig::compile(cfg.clone()) {
            Ok(compiled) => compiled,
            Err(err) => {
                self.metrics.config_reload(source.label(), false);
                return Err(err.into());
            }
        };
        let _guard = self.change.lock().await;
        let updated_at = crate::decision::rfc3339_now();
        let version = match &self.redis {
            Some(redis) => {
                let version = redis
                    .publish(&cfg, source, &updated_at, file_digest)
                    .await?;
                if version <= self.meta.lock().version {
                    // Identical to what is stored: nothing changes.
                    return Ok(self.meta.lock().version);
                }
                version
            }
            None => self.meta.lock().version + 1,
        };
        self.apply(compiled, version, source, updated_at);
        Ok(version)
    }

    /// Re-reads the file; applies it when its content changed and is valid.
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
        match self.update(cfg.clone(), ConfigSource::File, Some(d)).await {
            Ok(_) => {}
            Err(UpdateError::Invalid(err)) => {
                tracing::error!(error = %err, path = %self.file.display(), "configuration file rejected; keeping the running configuration");
            }
            Err(UpdateError::Store(err)) => {
                // Forget the digest so the next event or poll tries again.
                tracing::warn!(error = %err, "configuration store unreachable; the file change is retried");
                *self.last_file_digest.lock() = None;
            }
        }
    }

    /// Adopts the newest version stored in Redis if it is newer than ours. Returns whether
    /// a configuration was adopted.
    pub async fn sync_from_redis(&self) -> Result<bool, SourceError> {
        let Some(redis) = &self.redis else {
            return Ok(false);
        };
        let stored = redis.version().await?;
        if stored <= self.meta.lock().version {
            return Ok(false);
        }
        let Some(doc) = redis.fetch().await? else {
            return Ok(false);
        };
        let _guard = self.change.lock().await;
        if doc.version <= self.meta.lock().version {
            return Ok(false);
        }
        match config::parse_json(doc.document.as_bytes()).and_then(CompiledConfig::compile) {
            Ok(compiled) => {
                self.apply(
                    compiled,
                    doc.version,
                    ConfigSource::parse(&doc.source),
                    doc.updated_at,
                );
                Ok(true)
            }
            Err(err) => {
                self.metrics.config_reload("redis", false);
                tracing::error!(error = %err, version = doc.version, "stored configuration rejected; keeping the running configuration");
                Ok(false)
            }
        }
    }

    /// Brings this replica and Redis together: records a file Redis has not seen, then
    /// adopts the newest stored version.
    pub async fn reconcile(&self) -> Result<(), UpdateError> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        let pending = self.file_pending.lock().clone();
        if let Some((cfg, d)) = pending {
            let recorded = redis.file_digest().await?;
            if recorded != Some(d) {
                self.update(cfg, ConfigSource::File, Some(d)).await?;
            }
            *self.file_pending.lock() = None;
        }
        self.sync_from_redis().await?;
        Ok(())
    }
}

/// The safety net: every `interval`, re-read the file and adopt any newer stored version.
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
