//! Every counter store the control plane ships, started for one test: memory, a real
//! redis-server, and a real Redis Cluster of three masters.
//!
//! A store scenario is written once, as a function of a [`Backend`], and
//! [`test_with_all_stores!`](crate::test_with_all_stores) turns it into one test per backend
//! (`<scenario>::memory`, `<scenario>::redis`, `<scenario>::redis_cluster`). Each test starts
//! its own server or cluster, so tests stay independent and run in parallel.

use std::sync::Arc;
use std::time::Duration;

use control_plane::store::{
    Clock, CounterStore, ManualClock, MemoryStore, RedisStore, RedisStoreOptions,
};

use crate::{RedisCluster, RedisServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Memory,
    Redis,
    RedisCluster,
}

/// One backend and the processes it needs; they stop when it is dropped.
pub struct Backend {
    kind: BackendKind,
    redis: Option<RedisServer>,
    cluster: Option<RedisCluster>,
}

/// Generous: the test machine may be loaded, and a slow answer is not what these tests
/// are about (a timeout would show up as a store error, failing the scenario).
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

impl Backend {
    pub fn start(kind: BackendKind) -> Backend {
        Backend {
            kind,
            redis: (kind == BackendKind::Redis).then(RedisServer::start),
            cluster: (kind == BackendKind::RedisCluster).then(RedisCluster::start_masters),
        }
    }

    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// For assertion messages.
    pub fn name(&self) -> &'static str {
        match self.kind {
            BackendKind::Memory => "memory",
            BackendKind::Redis => "redis",
            BackendKind::RedisCluster => "redis cluster",
        }
    }

    /// A store on production time: Redis `TIME`, or the monotonic clock in memory. Call
    /// inside a Tokio runtime. Every memory store is new and empty; Redis stores share the
    /// server's keys.
    pub fn store(&self) -> Arc<dyn CounterStore> {
        self.build(None)
    }

    /// A store judging by `clock` (Redis: the script is given its readings), so a scenario
    /// sets the exact instant of every call. Call inside a Tokio runtime.
    pub fn store_with_clock(&self, clock: Arc<ManualClock>) -> Arc<dyn CounterStore> {
        self.build(Some(clock))
    }

    fn build(&self, clock: Option<Arc<ManualClock>>) -> Arc<dyn CounterStore> {
        let clock = clock.map(|c| c as Arc<dyn Clock>);
        let (url, cluster) = match (&self.redis, &self.cluster) {
            (Some(redis), _) => (redis.url(), false),
            (_, Some(cluster)) => (cluster.urls(), true),
            (None, None) => {
                return Arc::new(match clock {
                    Some(clock) => MemoryStore::with_clock(clock),
                    None => MemoryStore::new(),
                });
            }
        };
        let options = RedisStoreOptions {
            timeout: REDIS_TIMEOUT,
            cluster,
            clock,
            ..RedisStoreOptions::default()
        };
        Arc::new(RedisStore::new(&url, options).expect("redis store"))
    }

    /// The redis-server of a [`BackendKind::Redis`] backend.
    pub fn redis_server(&self) -> Option<&RedisServer> {
        self.redis.as_ref()
    }

    /// The redis-server of a [`BackendKind::Redis`] backend, to stop and restart it.
    pub fn redis_server_mut(&mut self) -> Option<&mut RedisServer> {
        self.redis.as_mut()
    }

    /// The cluster of a [`BackendKind::RedisCluster`] backend.
    pub fn redis_cluster(&self) -> Option<&RedisCluster> {
        self.cluster.as_ref()
    }
}

/// Runs each named scenario on every backend: for `async fn scenario(backend: &Backend)`,
/// the tests `scenario::memory`, `scenario::redis` and `scenario::redis_cluster` on a
/// multi-threaded Tokio runtime. With `blocking:` first, the scenarios are plain functions
/// (they build their own runtime, e.g. to drive a proptest runner) and the tests are `#[test]`.
#[macro_export]
macro_rules! test_with_all_stores {
    (blocking: $($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                use $crate::backends::{Backend, BackendKind};

                #[test]
                fn memory() {
                    super::$scenario(&Backend::start(BackendKind::Memory));
                }

                #[test]
                fn redis() {
                    super::$scenario(&Backend::start(BackendKind::Redis));
                }

                #[test]
                fn redis_cluster() {
                    super::$scenario(&Backend::start(BackendKind::RedisCluster));
                }
            }
        )+
    };
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                use $crate::backends::{Backend, BackendKind};

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn memory() {
                    super::$scenario(&Backend::start(BackendKind::Memory)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn redis() {
                    super::$scenario(&Backend::start(BackendKind::Redis)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn redis_cluster() {
                    super::$scenario(&Backend::start(BackendKind::RedisCluster)).await;
                }
            }
        )+
    };
}
