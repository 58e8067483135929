//! Wiring: builds the store, loads the configuration and serves HTTP until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::{self, CompiledConfig, ConfigError};
use crate::decision::Decider;
use crate::http::{self, AppState};
use crate::live_config;
use crate::settings::Settings;
use crate::store::{CounterStore, MemoryStore, RedisStore, RedisStoreOptions, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("counter store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Serve(#[source] std::io::Error),
}

/// How often the in-memory store drops counters whose entries have all expired.
const EVICTION_INTERVAL: Duration = Duration::from_secs(10);

pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let initial = CompiledConfig::compile(config::load_file(&settings.config_path)?)?;
    tracing::info!(
        path = %settings.config_path.display(),
        tiers = initial.tiers().len(),
        "configuration loaded"
    );
    let config = live_config::shared(initial);

    let store: Arc<dyn CounterStore> = match &settings.redis_url {
        Some(url) => {
            let options = RedisStoreOptions {
                timeout: Duration::from_millis(settings.redis_timeout_ms.max(1)),
                ..RedisStoreOptions::default()
            };
            let store = RedisStore::new(url, options)?;
            if let Err(err) = store.ping().await {
                tracing::warn!(error = %err, "Redis not reachable yet; not ready until it is");
            }
            Arc::new(store)
        }
        None => {
            tracing::info!("no Redis URL: counters are kept in memory (single replica only)");
            let store = Arc::new(MemoryStore::new());
            let weak = Arc::downgrade(&store);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(EVICTION_INTERVAL);
                loop {
                    tick.tick().await;
                    let Some(store) = weak.upgrade() else { break };
                    store.evict_expired();
                }
            });
            store
        }
    };
    if settings.admin_api_key.is_none() {
        tracing::warn!("RATE_LIMIT_ADMIN_API_KEY is not set: admin endpoints answer 503");
    }

    let state = AppState {
        decider: Arc::new(Decider::new(config, store)),
        decision_secret: settings.decision_secret.as_deref().map(Arc::from),
    };
    let listener =
        TcpListener::bind(settings.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: settings.listen,
                source,
            })?;
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServerError::Serve)?;
    tracing::info!("stopped");
    Ok(())
}
