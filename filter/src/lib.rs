//! Envoy HTTP filter (proxy-wasm) that asks the rate-limit control plane for a decision on
//! every request.
//!
//! Per request the filter gathers the identity evidence ([`evidence`], [`client_ip`]), makes one
//! `dispatch_http_call` to the control plane ([`rl_wire::DECISION_PATH`]) while the request is
//! paused, and then follows the answer ([`response`]): forward and stamp the rate-limit
//! headers on the response (`X-RateLimit-*` and the IETF `RateLimit-Policy` / `RateLimit`
//! fields, [`ietf_fields`], as the plugin's `headers` chooses), answer 429 or 503 itself, or
//! forward without headers of ours. When the control plane cannot answer, the plugin's
//! `fail_open` decides. On every response of a request it forwarded, the upstream's own
//! `X-RateLimit-*` headers give way to ours, while its `RateLimit` items stay beside ours
//! ([`upstream_headers`]).
//!
//! Plugin configuration (see [`config::PluginConfig`] for every field):
//!
//! ```json
//! {"cluster": "rate_limit_control_plane", "timeout_ms": 250, "fail_open": true,
//!  "api_key_header": "x-api-key", "trusted_proxies": ["10.0.0.0/8"],
//!  "headers": ["x-ratelimit", "ietf"]}
//! ```
//!
//! Everything but the host glue is plain Rust, tested natively; the glue is compiled for wasm
//! only, so native builds and tests need no host symbols. The per-request state machine and
//! the coalescing of calls live in [`engine`], which returns effects the glue carries out.
//!
//! A denial the control plane marks cacheable (`deny_for_ms`) is kept in shared data for at
//! most 1 s and answers the same request without a call ([`deny_cache`]).
//!
//! Stats (Envoy names them `wasmcustom.<name>`): see [`response::METRIC_NAMES`].

pub mod batch;
pub mod client_ip;
pub mod config;
pub mod deny_cache;
pub mod engine;
pub mod evidence;
pub mod header_map;
/// The IETF fields, built in the wire crate (the control plane's gRPC service sends the same).
pub use rl_wire::ietf_fields;
pub mod leases;
pub mod log_throttle;
pub mod response;
pub mod upstream_headers;
pub mod usage;

#[cfg(target_arch = "wasm32")]
mod glue;
