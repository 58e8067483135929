//! Process settings: command-line flags, each with a `RATE_LIMIT_*` environment equivalent.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (default; what log pipelines ingest).
    Json,
    /// Human-readable lines.
    Text,
}

/// Control plane of the Envoy rate limiter: answers the filter's decision calls with exact
/// sliding windows kept in Redis (or in memory), and serves the admin API and metrics.
#[derive(Debug, Clone, Parser)]
#[command(name = "control-plane", version)]
pub struct Settings {
    /// Address to listen on (decision endpoint, admin API, metrics, health).
    #[arg(long, env = "RATE_LIMIT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address of the gRPC listener serving Envoy's rate-limit service protocol
    /// (`envoy.service.ratelimit.v3.RateLimitService`) and the gRPC health service. Unset: no
    /// gRPC listener. A bare port (`8082`) binds 127.0.0.1; `0.0.0.0:8082` binds every
    /// interface.
    #[arg(long, env = "RATE_LIMIT_GRPC_LISTEN", value_parser = parse_listen)]
    pub grpc_listen: Option<SocketAddr>,

    /// Rate-limit configuration file (YAML).
    #[arg(
        long = "config",
        env = "RATE_LIMIT_CONFIG_PATH",
        default_value = "./rate_limit_config.yaml"
    )]
    pub config_path: PathBuf,

    /// Redis URL (`redis://host:6379/0`, `rediss://…`, `redis+unix:///path`). Absent: counters
    /// are kept in this process's memory (single replica only).
    #[arg(long, env = "RATE_LIMIT_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Treat `--redis-url` as the comma-separated seed nodes of a Redis Cluster
    /// (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`).
    #[arg(long, env = "RATE_LIMIT_REDIS_CLUSTER", default_value_t = false)]
    pub redis_cluster: bool,

    /// Key for the admin API (`X-API-Key` or `Authorization: Bearer`). Unset: admin endpoints
    /// answer 503 `admin_disabled`.
    #[arg(long, env = "RATE_LIMIT_ADMIN_API_KEY", hide_env_values = true)]
    pub admin_api_key: Option<String>,

    /// Shared secret the filter must send in `x-rate-limit-decision-secret` on decision calls
    /// (set the filter's `decision_secret` to the same value). Unset: not required.
    #[arg(long, env = "RATE_LIMIT_DECISION_SECRET", hide_env_values = true)]
    pub decision_secret: Option<String>,

    /// While rotating the decision secret: the old secret, still accepted next to
    /// `--decision-secret` (the new one) until every filter sends the new one. Unset: only
    /// the current secret is accepted.
    #[arg(
        long,
        env = "RATE_LIMIT_DECISION_SECRET_PREVIOUS",
        hide_env_values = true
    )]
    pub decision_secret_previous: Option<String>,

    /// Timeout of one Redis round trip in milliseconds; keep it below the filter's
    /// `timeout_ms` so the control plane's `fail_open` decides, not the filter's.
    #[arg(long, env = "RATE_LIMIT_REDIS_TIMEOUT_MS", default_value_t = 100)]
    pub redis_timeout_ms: u64,

    /// Most identities the in-memory store (no Redis) tracks at once. At the cap a new
    /// identity is refused with 503, whatever `fail_open` says, until a tracked identity's
    /// entries have all left their window; tracked identities are never dropped early.
    #[arg(
        long,
        env = "RATE_LIMIT_MEMORY_MAX_IDENTITIES",
        default_value_t = crate::store::DEFAULT_MAX_IDENTITIES as u64,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub memory_max_identities: u64,

    /// How often (seconds) the configuration file is re-read and Redis is asked for a newer
    /// configuration version, as a safety net for missed file events or notifications.
    #[arg(long, env = "RATE_LIMIT_CONFIG_POLL_SECONDS", default_value_t = 10)]
    pub config_poll_seconds: u64,

    /// Lifetime of a concurrency lease (a tier's `max_concurrent`) without renewal, in s: the
    /// filter renews a lease while its request is in flight, so this bounds how long a slot
    /// outlives an Envoy that died or a release that was lost.
    #[arg(
        long,
        env = "RATE_LIMIT_LEASE_SECONDS",
        default_value_t = crate::decision::DEFAULT_LEASE_SECONDS,
        value_parser = clap::value_parser!(u64).range(crate::decision::MIN_LEASE_SECONDS..=crate::decision::MAX_LEASE_SECONDS)
    )]
    pub lease_seconds: u64,

    /// Log format.
    #[arg(
        long,
        env = "RATE_LIMIT_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,

    /// Refuse the demo secrets shipped with this repository (the sample configuration's
    /// HS256 secret and API keys, the demo admin key): do not start with one, and refuse a PUT
    /// or file change that brings one in. Without it they are only named in warnings. The
    /// variable takes `1` / `0` (or `true` / `false`).
    #[arg(
        long,
        env = "RATE_LIMIT_STRICT",
        default_value_t = false,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub strict: bool,
}

/// Port the documentation suggests for `RATE_LIMIT_GRPC_LISTEN`: next to the HTTP listener's
/// 8080, clear of the demo upstream's 8081, Envoy's 10000 and 9901 and Redis's 6379.
pub const SUGGESTED_GRPC_PORT: u16 = 8082;

/// A listen address: `host:port`, or a bare port on 127.0.0.1.
pub fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = value.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    value.parse().map_err(|_| {
        format!("{value:?} is neither a port nor an address (`{SUGGESTED_GRPC_PORT}`, `127.0.0.1:{SUGGESTED_GRPC_PORT}`, `[::1]:{SUGGESTED_GRPC_PORT}`)")
    })
}

#[cfg(test)]
mod tests;
