//! Test harness: starts real processes (redis-server, the control plane, Envoy with the
//! compiled filter) and an in-process demo upstream, each on free loopback ports, and stops
//! them when dropped, so tests run in parallel without colliding.
//!
//! A missing prerequisite fails the test with a message saying how to get it; nothing is
//! skipped.

pub mod admin;
pub mod backends;
pub mod client;
pub mod control_plane;
pub mod envoy;
pub mod envoy_native;
pub mod fake_control_plane;
pub mod fixtures;
pub mod load;
pub mod prereq;
pub mod process;
pub mod redis_cluster;
pub mod redis_server;
pub mod stack;
pub mod tcp_proxy;
pub mod upstream;
pub mod wasm_host;

pub use client::{
    RawReply, Reply, client_from, get, get_in_flight, get_json, post_json, raw_get, send,
};
pub use control_plane::{ControlPlane, ControlPlaneBuilder};
pub use envoy::{Envoy, EnvoyBuilder};
pub use envoy_native::NativeEnvoyBuilder;
pub use fake_control_plane::FakeControlPlane;
pub use fixtures::sample_config;
pub use redis_cluster::RedisCluster;
pub use redis_server::RedisServer;
pub use stack::{Stack, StackBuilder};
pub use tcp_proxy::TcpProxy;
pub use upstream::Upstream;

/// Path of the control-plane binary built for these tests (the same entry point as the
/// shipped binary). A macro because `CARGO_BIN_EXE_*` exists only in integration tests.
#[macro_export]
macro_rules! control_plane_bin {
    () => {
        env!("CARGO_BIN_EXE_rl-control-plane")
    };
}

/// Root of the repository.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("."))
}

/// A free TCP port on 127.0.0.1 (the OS picks it; the caller binds it soon after).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}
