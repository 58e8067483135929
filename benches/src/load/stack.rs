//! The processes of one configuration: Redis, the demo upstream, the control plane and
//! Envoy, each a child of this process that dies with it.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rl_tests::envoy::admin_get;

use crate::configs::{FilterKind, StoreKind, Variant};

/// Envoy bootstrap pieces (see the files for what each configuration is).
pub const ENVOY_BASE: &str = include_str!("../../load/envoy-base.yaml");
pub const FILTER_WASM: &str = include_str!("../../load/filter-wasm.yaml");
pub const FILTER_LOCAL_RATELIMIT: &str = include_str!("../../load/filter-local-ratelimit.yaml");
pub const FILTER_NATIVE_RATELIMIT: &str = include_str!("../../load/filter-native-ratelimit.yaml");
/// Configuration 5's route: the descriptors of envoy/envoy.native-ratelimit.yaml.
const NATIVE_ROUTE_RATE_LIMITS: &str = ", rate_limits: [\
    {actions: [{remote_address: {}}, \
    {request_headers: {header_name: \":path\", descriptor_key: \":path\"}}, \
    {request_headers: {header_name: \":method\", descriptor_key: \":method\"}}]}, \
    {actions: [{request_headers: {header_name: x-api-key, descriptor_key: x-api-key, \
    skip_if_absent: true}}]}]";
/// gRPC needs HTTP/2 to the control plane.
const NATIVE_CLUSTER_EXTRA: &str = "    typed_extension_protocol_options:\n      \
    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \
    \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        \
    explicit_http_config: {http2_protocol_options: {}}\n";

/// A child process, killed when dropped. Its output goes to a log file.
pub struct Spawned {
    pub name: String,
    child: Child,
}

impl Spawned {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Spawned, String> {
        let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child when
        // this process (its spawning thread: always the main thread here) dies, so nothing
        // outlives an interrupted benchmark.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({cmd:?}): {e}"))?;
        Ok(Spawned {
            name: name.to_string(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and wait for it (a control plane between two runs: its state is thrown away,
    /// and a graceful stop would wait for Envoy to close its HTTP/2 connection).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(mut self, grace: Duration) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Waits until `ready` holds, failing when the process exits or `timeout` passes.
pub fn wait_until(
    proc: &mut Spawned,
    log: &Path,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        let tail = || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        if !proc.is_running() {
            return Err(format!("{} exited during start-up:\n{}", proc.name, tail()));
        }
        if Instant::now() > deadline {
            return Err(format!("{} did not become ready:\n{}", proc.name, tail()));
        }
        sleep(Duration::from_millis(50));
    }
}

pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The Envoy bootstrap of a configuration.
pub fn envoy_bootstrap(variant: &Variant, ports: &EnvoyPorts, control_plane_port: u16) -> String {
    let filter = match (&variant.filter_yaml, variant.filter) {
        (Some(custom), _) => custom.clone(),
        (None, FilterKind::None) => String::new(),
        (None, FilterKind::LocalRateLimit) => FILTER_LOCAL_RATELIMIT.to_string(),
        (None, FilterKind::Wasm) => FILTER_WASM.replace("{{PLUGIN_EXTRA}}", ""),
        (None, FilterKind::NativeRateLimit) => FILTER_NATIVE_RATELIMIT.to_string(),
        (None, FilterKind::WasmNoCallout) => FILTER_WASM.replace(
            "{{PLUGIN_EXTRA}}",
            ",\n                      \"benchmark_no_callout\": true",
        ),
    };
    // JSON strings are valid YAML scalars.
    let wasm = serde_json::Value::String(variant.wasm.display().to_string()).to_string();
    let native = variant.filter == FilterKind::NativeRateLimit;
    let cluster_extra = match (native, variant.cluster_extra.is_empty()) {
        (true, true) => NATIVE_CLUSTER_EXTRA.to_string(),
        _ => variant.cluster_extra.clone(),
    };
    // A charging configuration's upstream answers carry a charge: added by the route, which
    // Envoy applies to the upstream's headers before the filters see them.
    let route_headers = if variant.charging {
        format!(
            "\n                response_headers_to_add: [{{header: {{key: {}, value: \"{}\"}}}}]",
            crate::configs::CHARGE_HEADER,
            crate::configs::CHARGE_UNITS
        )
    } else {
        String::new()
    };
    ENVOY_BASE
        .replace("{{HTTP_FILTERS}}\n", &filter)
        .replace(
            "demo_upstream{{ROUTE_EXTRA}}}",
            &format!("demo_upstream{{{{ROUTE_EXTRA}}}}}}{route_headers}"),
        )
        .replace(
            "{{ROUTE_EXTRA}}",
            if native { NATIVE_ROUTE_RATE_LIMITS } else { "" },
        )
        .replace("{{CONTROL_PLANE_CLUSTER_EXTRA}}\n", &cluster_extra)
        .replace("{{ADMIN_PORT}}", &ports.admin.to_string())
        .replace("{{LISTENER_PORT}}", &ports.listener.to_string())
        .replace("{{UPSTREAM_PORT}}", &ports.upstream.to_string())
        .replace("{{CONTROL_PLANE_PORT}}", &control_plane_port.to_string())
        .replace("{{WASM}}", &wasm)
}

pub struct EnvoyPorts {
    pub admin: u16,
    pub listener: u16,
    pub upstream: u16,
}

/// Starts Envoy; `tag` names its log in `dir` (one per start of a configuration).
pub fn start_envoy(
    envoy_bin: &Path,
    variant: &Variant,
    ports: &EnvoyPorts,
    control_plane_port: u16,
    dir: &Path,
    tag: &str,
) -> Result<Spawned, String> {
    let config = dir.join(format!("envoy-{}.yaml", variant.name));
    std::fs::write(&config, envoy_bootstrap(variant, ports, control_plane_port))
        .map_err(|e| format!("{}: {e}", config.display()))?;
    let log = dir.join(format!("envoy-{tag}.log"));
    let mut proc = Spawned::spawn(
        "envoy",
        Command::new(envoy_bin)
            .arg("-c")
            .arg(&config)
            .arg("--disable-hot-restart")
            .args(["--concurrency", &variant.envoy_concurrency.to_string()])
            .args(["--log-level", "warning"]),
        &log,
    )?;
    let admin = local(ports.admin);
    let listener = local(ports.listener);
    wait_until(&mut proc, &log, Duration::from_secs(60), || {
        admin_get(admin, "/ready").is_some_and(|s| s.contains("LIVE")) && accepts(listener)
    })?;
    Ok(proc)
}

/// The admin key of the benchmark's control planes (status reads after a run).
pub const ADMIN_KEY: &str = "load-bench-admin-key";

/// Starts a control plane on `port` with `config_yaml` (written to `dir`, one file per
/// configuration); `tag` names its log in `dir` (one per start).
pub fn start_control_plane(
    variant: &Variant,
    port: u16,
    grpc_port: Option<u16>,
    config_yaml: &str,
    redis_url: Option<&str>,
    dir: &Path,
    tag: &str,
) -> Result<Spawned, String> {
    let config = dir.join(format!("control-plane-{}.yaml", variant.name));
    std::fs::write(&config, config_yaml).map_err(|e| format!("{}: {e}", config.display()))?;
    let log = dir.join(format!("control-plane-{tag}.log"));
    let mut cmd = Command::new(&variant.control_plane);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RATE_LIMIT_") {
            cmd.env_remove(&key);
        }
    }
    cmd.arg("--listen")
        .arg(local(port).to_string())
        .arg("--config")
        .arg(&config)
        .env("RATE_LIMIT_LOG_FORMAT", "json")
        .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .env("RUST_LOG", "info");
    if variant.store == StoreKind::Redis {
        let url = redis_url.ok_or("configuration needs Redis but none was started")?;
        cmd.arg("--redis-url").arg(url);
    }
    if let Some(grpc_port) = grpc_port {
        cmd.env("RATE_LIMIT_GRPC_LISTEN", local(grpc_port).to_string());
    }
    cmd.args(&variant.cp_args);
    for (key, value) in &variant.cp_env {
        cmd.env(key, value);
    }
    let mut proc = Spawned::spawn("control plane", &mut cmd, &log)?;
    let addr = local(port);
    wait_until(&mut proc, &log, Duration::from_secs(30), || {
        admin_get(addr, "/readyz").is_some()
    })?;
    Ok(proc)
}

pub fn start_upstream(bin: &Path, port: u16, dir: &Path) -> Result<Spawned, String> {
    let log = dir.join("demo-upstream.log");
    let mut proc = Spawned::spawn(
        "demo upstream",
        Command::new(bin).arg(local(port).to_string()),
        &log,
    )?;
    wait_until(&mut proc, &log, Duration::from_secs(10), || {
        accepts(local(port))
    })?;
    Ok(proc)
}

/// Redis as the local stack runs it: AOF on, `appendfsync everysec`.
pub fn start_redis(bin: &Path, port: u16, dir: &Path) -> Result<Spawned, String> {
    let data = dir.join("redis-data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    let log = dir.join("redis.log");
    let mut proc = Spawned::spawn(
        "redis-server",
        Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&data),
        &log,
    )?;
    let url = redis_url(port);
    wait_until(&mut proc, &log, Duration::from_secs(10), || {
        redis_cmd(&url, &["PING"]).is_ok()
    })?;
    Ok(proc)
}

pub fn redis_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

/// One Redis command; the reply as text.
pub fn redis_cmd(url: &str, args: &[&str]) -> Result<String, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    let value: redis::Value = cmd.query(&mut conn).map_err(|e| e.to_string())?;
    Ok(match value {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        redis::Value::SimpleString(s) => s,
        redis::Value::VerbatimString { text, .. } => text,
        redis::Value::Okay => "OK".to_string(),
        other => format!("{other:?}"),
    })
}

#[cfg(test)]
mod tests;
