//! Wiring: builds the store, the configuration sources, metrics and HTTP, and serves until
//! shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::config::{ConfigError, DemoPolicy, demo_admin_key};
use crate::config_sync::{self, ConfigManager, RedisConfigSource};
use crate::decision::Decider;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::store::{
    Clock, CounterStore, MemoryStore, MonotonicClock, RedisStore, RedisStoreOptions, StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("counter store: {0}")]
    Store(#[from] StoreError),
    #[error("configuration store: {0}")]
    ConfigStore(#[from] config_sync::SourceError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Serve(#[source] std::io::Error),
    #[error("gRPC server: {0}")]
    Grpc(#[source] tonic::transport::Error),
    #[error(transparent)]
    DecisionSecret(#[from] http::PreviousWithoutCurrent),
    /// A setting strict mode refuses (the demo admin key).
    #[error("settings: {0}")]
    Setting(#[source] ConfigError),
}

/// How often the in-memory store drops counters whose entries have all expired.
const EVICTION_INTERVAL: Duration = Duration::from_secs(10);

pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let decision_secrets = http::DecisionSecrets::new(
        settings.decision_secret.as_deref(),
        settings.decision_secret_previous.as_deref(),
    )?;
    let demo = if settings.strict {
        DemoPolicy::Refuse
    } else {
        DemoPolicy::Warn
    };
    let admin_key: Option<[u8; 32]> = settings
        .admin_api_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .map(|k| Sha256::digest(k.as_bytes()).into());
    if let Some(found) = admin_key.as_ref().and_then(demo_admin_key) {
        match demo {
            DemoPolicy::Refuse => {
                return Err(ServerError::Setting(found.refusal()));
            }
            DemoPolicy::Warn => found.warn(),
        }
    }
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock::new());
    let (store, config_source): (Arc<dyn CounterStore>, Option<RedisConfigSource>) =
        match &settings.redis_url {
            Some(url) => {
                let options = RedisStoreOptions {
                    timeout: Duration::from_millis(settings.redis_timeout_ms.max(1)),
                    cluster: settings.redis_cluster,
                    ..RedisStoreOptions::default()
                };
                let store = RedisStore::new(url, options)?;
                if let Err(err) = store.ping().await {
                    tracing::warn!(error = %err, "Redis not reachable yet; not ready until it is");
                }
                let source = RedisConfigSource::new(store.connector())?;
                (Arc::new(store), Some(source))
            }
            None => {
                tracing::info!("no Redis URL: counters are kept in memory (single replica only)");
                let cap = usize::try_from(settings.memory_max_identities).unwrap_or(usize::MAX);
                let store = Arc::new(MemoryStore::with_max_identities(clock.clone(), cap));
                let weak = Arc::downgrade(&store);
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(EVICTION_INTERVAL);
                    loop {
                        tick.tick().await;
                        let Some(store) = weak.upgrade() else { break };
                        store.evict_expired();
                    }
                });
                (store, None)
            }
        };
    let metrics = Arc::new(Metrics::new(store.clone()));
    let has_redis = config_source.is_some();
    let manager =
        ConfigManager::start_with(&settings.config_path, config_source, metrics.clone(), demo)
            .await?;
    tracing::info!(
        path = %settings.config_path.display(),
        tiers = manager.current().tiers().len(),
        "configuration loaded"
    );
    config_sync::watch_file(manager.clone());
    let poll_every = Duration::from_secs(settings.config_poll_seconds.max(1));
    tokio::spawn(config_sync::poll(manager.clone(), poll_every));
    if has_redis {
        let listener_manager = manager.clone();
        tokio::spawn(async move {
            if let Some(source) = listener_manager.redis_source() {
                source.listen(listener_manager.clone()).await;
            }
        });
    }

    if admin_key.is_none() {
        tracing::warn!("RATE_LIMIT_ADMIN_API_KEY is not set: admin endpoints answer 503");
    }

    let state = AppState {
        decider: Arc::new(
            Decider::new(manager.live(), store, clock)
                .with_lease_ttl(Duration::from_secs(settings.lease_seconds)),
        ),
        metrics,
        config: manager,
        admin_key,
        decision_secrets,
    };
    // Both listeners stop on the one shutdown signal.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let grpc = match settings.grpc_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
            let addr = listener.local_addr().map_err(ServerError::Serve)?;
            tracing::info!(%addr, "gRPC rate-limit service listening");
            Some(crate::grpc::serve(
                listener,
                state.clone(),
                stopped(stop_rx.clone()),
            ))
        }
        None => None,
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
    // TCP_NODELAY: answers are small writes, several share one HTTP/2 connection, and
    // Nagle's algorithm would hold one back until Envoy acknowledges the previous one.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY on a connection");
        }
    });
    let http = async {
        axum::serve(listener, http::router(state))
            .with_graceful_shutdown(stopped(stop_rx))
            .await
            .map_err(ServerError::Serve)
    };
    match grpc {
        Some(grpc) => {
            let grpc = async { grpc.await.map_err(ServerError::Grpc) };
            tokio::try_join!(http, grpc)?;
        }
        None => http.await?,
    }
    tracing::info!("stopped");
    Ok(())
}
