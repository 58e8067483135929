//! The whole request path for a test: Redis (optional), the control plane, the demo upstream
//! and Envoy with the compiled filter.

use serde_json::Value;

use crate::{ControlPlane, ControlPlaneBuilder, Envoy, EnvoyBuilder, RedisServer, Upstream};

pub struct StackBuilder {
    control_plane_bin: String,
    config: String,
    redis: bool,
    plugin: Vec<(String, Value)>,
    control_plane_env: Vec<(String, String)>,
    concurrency: u32,
}

impl StackBuilder {
    pub fn new(control_plane_bin: &str, config_yaml: &str) -> Self {
        Self {
            control_plane_bin: control_plane_bin.to_string(),
            config: config_yaml.to_string(),
            redis: false,
            plugin: Vec::new(),
            control_plane_env: Vec::new(),
            concurrency: 2,
        }
    }

    /// Counters in a private redis-server instead of the control plane's memory.
    pub fn with_redis(mut self) -> Self {
        self.redis = true;
        self
    }

    /// One field of the filter's plugin configuration.
    pub fn plugin(mut self, key: &str, value: Value) -> Self {
        self.plugin.push((key.to_string(), value));
        self
    }

    pub fn control_plane_env(mut self, key: &str, value: &str) -> Self {
        self.control_plane_env
            .push((key.to_string(), value.to_string()));
        self
    }

    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }

    pub fn start(self) -> Stack {
        let redis = self.redis.then(RedisServer::start);
        let mut cp = ControlPlaneBuilder::new(&self.control_plane_bin, &self.config);
        if let Some(redis) = &redis {
            cp = cp.redis(redis.url());
        }
        for (k, v) in &self.control_plane_env {
            cp = cp.env(k, v);
        }
        let control_plane = cp.start();
        let upstream = Upstream::start();
        let mut envoy =
            EnvoyBuilder::new(control_plane.addr(), upstream.addr()).concurrency(self.concurrency);
        for (k, v) in self.plugin {
            envoy = envoy.plugin(&k, v);
        }
        let envoy = envoy.start();
        Stack {
            envoy,
            upstream,
            control_plane,
            redis,
        }
    }
}

/// Fields drop in declaration order: Envoy first, Redis last.
pub struct Stack {
    pub envoy: Envoy,
    pub upstream: Upstream,
    pub control_plane: ControlPlane,
    pub redis: Option<RedisServer>,
}

impl Stack {
    pub fn url(&self, path: &str) -> String {
        self.envoy.url(path)
    }

    pub fn redis(&mut self) -> &mut RedisServer {
        self.redis.as_mut().expect("stack started with_redis()")
    }
}
