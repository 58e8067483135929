//! A real Envoy with its native rate-limit filter (`envoy.filters.http.ratelimit`) asking the
//! control plane's gRPC service: the shipped `envoy/envoy.native-ratelimit.yaml` with only
//! what a test must own replaced (listener and admin on free ports, the upstream and
//! control-plane endpoints) and the settings a test varies.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::envoy::{Envoy, at, http_connection_manager, launch, named, set_endpoints};

pub const NATIVE_CONFIG: &str = "envoy/envoy.native-ratelimit.yaml";

pub struct NativeEnvoyBuilder {
    grpc: SocketAddr,
    upstream: SocketAddr,
    failure_mode_deny: bool,
    secret: Option<String>,
    concurrency: u32,
}

impl NativeEnvoyBuilder {
    /// `grpc`: the control plane's gRPC listener. The filter's timeout is raised to 3 s
    /// (debug builds on 2 busy cores).
    pub fn new(grpc: SocketAddr, upstream: SocketAddr) -> Self {
        Self {
            grpc,
            upstream,
            failure_mode_deny: false,
            secret: None,
            concurrency: 2,
        }
    }

    pub fn failure_mode_deny(mut self, deny: bool) -> Self {
        self.failure_mode_deny = deny;
        self
    }

    /// Sends the decision secret in the gRPC metadata.
    pub fn secret(mut self, secret: &str) -> Self {
        self.secret = Some(secret.to_string());
        self
    }

    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }

    /// The bootstrap as JSON.
    pub fn bootstrap(&self) -> String {
        let mut config = shipped_native_config();
        self.localize(&mut config)
            .unwrap_or_else(|e| panic!("{NATIVE_CONFIG}: {e}"));
        config.to_string()
    }

    pub fn start(self) -> Envoy {
        launch(&self.bootstrap(), self.concurrency)
            .unwrap_or_else(|log| panic!("Envoy (native filter) did not start:\n{log}"))
    }

    fn localize(&self, config: &mut Value) -> Result<(), String> {
        let loopback = json!({"address": "127.0.0.1", "port_value": 0});
        *at(config, "/admin/address/socket_address")? = loopback.clone();
        *at(
            config,
            "/static_resources/listeners/0/address/socket_address",
        )? = loopback;
        let hcm = http_connection_manager(config)?;
        let filters = at(hcm, "/http_filters")?;
        let ratelimit = at(
            named(filters, "envoy.filters.http.ratelimit")?,
            "/typed_config",
        )?;
        ratelimit["failure_mode_deny"] = json!(self.failure_mode_deny);
        ratelimit["timeout"] = json!("3s");
        if let Some(secret) = &self.secret {
            *at(ratelimit, "/rate_limit_service/grpc_service")?
                .as_object_mut()
                .ok_or("grpc_service is not a map")?
                .entry("initial_metadata")
                .or_insert(json!([])) =
                json!([{"key": "x-rate-limit-decision-secret", "value": secret}]);
        }
        let clusters = at(config, "/static_resources/clusters")?;
        set_endpoints(named(clusters, "demo_upstream")?, &[self.upstream])?;
        set_endpoints(named(clusters, "rate_limit_control_plane")?, &[self.grpc])?;
        Ok(())
    }
}

/// `envoy/envoy.native-ratelimit.yaml`, parsed.
pub fn shipped_native_config() -> Value {
    let path = crate::repo_root().join(NATIVE_CONFIG);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}
