//! Control plane of the Envoy rate limiter. See `docs/ARCHITECTURE.md` for the request path.
pub mod cli;
pub mod config;
pub mod config_sync;
pub mod decision;
pub mod grpc;
pub mod http;
pub mod identity;
pub mod jwt;
pub mod live_config;
pub mod metrics;
pub mod rules;
pub mod server;
pub mod settings;
pub mod store;
