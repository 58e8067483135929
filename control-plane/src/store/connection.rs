//! The Redis connection: one server, or a Redis Cluster.
//!
//! A single server uses a multiplexed `ConnectionManager` that reconnects by itself. A
//! cluster uses redis-rs's cluster connection, which routes each command to the node owning
//! its key's slot and follows the cluster through failovers (MOVED/ASK, slot refresh). Every
//! key of one identity shares a hash tag, so a decision's script runs on one node.
//!
//! Both are created lazily: a Redis that is down at start makes the service unready, never
//! unable to start.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::{Client, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, Value};

use super::StoreError;

#[derive(Clone)]
pub enum RedisConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}

enum Target {
    Single(ConnectionManager),
    Cluster {
        // Boxed: the cluster client is large and this enum is built once per process.
        client: Box<ClusterClient>,
        connection: ArcSwapOption<ClusterConnection>,
        connecting: tokio::sync::Mutex<()>,
    },
}

/// Hands out connections; cheap to clone.
#[derive(Clone)]
pub struct Connector {
    target: Arc<Target>,
    /// URL of one node, for pub/sub (a cluster forwards PUBLISH to every node).
    pubsub_url: String,
}

impl Connector {
    /// `urls`: one URL, or (cluster) several comma-separated seed nodes. Call inside a Tokio
    /// runtime (the connection manager spawns a task).
    pub fn new(urls: &str, cluster: bool, timeout: Duration) -> Result<Self, StoreError> {
        let nodes: Vec<&str> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let backend = StoreError::backend;
        let first = nodes
            .first()
            .ok_or(StoreError::Address("no Redis URL"))?
            .to_string();
        // TCP_NODELAY: every decision is one small command waiting for its reply, and Nagle's
        // algorithm would hold a command back while an earlier one is unacknowledged.
        let tcp = || TcpSettings::default().set_nodelay(true);
        let target = if cluster {
            let client = ClusterClient::builder(nodes)
                .tcp_settings(tcp())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(100)
                .build()
                .map_err(backend)?;
            Target::Cluster {
                client: Box::new(client),
                connection: ArcSwapOption::empty(),
                connecting: tokio::sync::Mutex::new(()),
            }
        } else {
            if nodes.len() > 1 {
                return Err(StoreError::Address(
                    "several Redis URLs given: set RATE_LIMIT_REDIS_CLUSTER=true for a cluster",
                ));
            }
            let info = first
                .as_str()
                .into_connection_info()
                .map_err(backend)?
                .set_tcp_settings(tcp());
            let client = Client::open(info).map_err(backend)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                // Reconnection is retried by the next calls (behind the breaker), not by a
                // long backoff inside one call.
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(10))
                .set_max_delay(Duration::from_millis(100));
            Target::Single(
                ConnectionManager::new_lazy_with_config(client, config).map_err(backend)?,
            )
        };
        Ok(Self {
            target: Arc::new(target),
            pubsub_url: first,
        })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(*self.target, Target::Cluster { .. })
    }

    pub fn pubsub_url(&self) -> &str {
        &self.pubsub_url
    }

    pub async fn get(&self) -> RedisResult<RedisConnection> {
        match &*self.target {
            Target::Single(manager) => Ok(RedisConnection::Single(manager.clone())),
            Target::Cluster {
                client,
                connection,
                connecting,
            } => {
                if let Some(conn) = connection.load_full() {
                    return Ok(RedisConnection::Cluster((*conn).clone()));
                }
                // One caller connects; the others wait and reuse its connection.
                let _guard = connecting.lock().await;
                if let Some(conn) = connection.load_full() {
                    return Ok(RedisConnection::Cluster((*conn).clone()));
                }
                let conn = client.get_async_connection().await?;
                connection.store(Some(Arc::new(conn.clone())));
                Ok(RedisConnection::Cluster(conn))
            }
        }
    }
}
