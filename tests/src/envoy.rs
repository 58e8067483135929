//! A real Envoy with the compiled filter in front of the demo upstream.
//!
//! The bootstrap mirrors `envoy/envoy.yaml` (edge listener with `use_remote_address`, the
//! filter, the control-plane cluster with raised circuit breakers) with free ports and the
//! test's plugin configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::prereq;
use crate::process::{Output, Proc};

pub struct EnvoyBuilder {
    control_planes: Vec<SocketAddr>,
    upstream: SocketAddr,
    plugin: Value,
    concurrency: u32,
    wasm: Option<PathBuf>,
}

impl EnvoyBuilder {
    /// Plugin config defaults: the control-plane cluster, fail open, 3 s timeout (debug
    /// builds on 2 busy cores; tests about timeouts set their own).
    pub fn new(control_plane: SocketAddr, upstream: SocketAddr) -> Self {
        Self {
            control_planes: vec![control_plane],
            upstream,
            plugin: json!({
                "cluster": "rate_limit_control_plane",
                "timeout_ms": 3000,
                "fail_open": true,
            }),
            concurrency: 2,
            wasm: None,
        }
    }

    /// Another control-plane replica in the cluster (round robin).
    pub fn add_control_plane(mut self, addr: SocketAddr) -> Self {
        self.control_planes.push(addr);
        self
    }

    /// Sets one field of the plugin configuration.
    pub fn plugin(mut self, key: &str, value: Value) -> Self {
        if let Some(obj) = self.plugin.as_object_mut() {
            obj.insert(key.to_string(), value);
        }
        self
    }

    /// Replaces the whole plugin configuration (bad-config tests).
    pub fn plugin_raw(mut self, config: Value) -> Self {
        self.plugin = config;
        self
    }

    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }

    pub fn bootstrap(&self, wasm: &Path) -> String {
        bootstrap(
            &self.control_planes,
            self.upstream,
            &self.plugin.to_string(),
            wasm,
        )
    }

    pub fn start(self) -> Envoy {
        match self.try_start() {
            Ok(envoy) => envoy,
            Err(log) => panic!("Envoy did not start:\n{log}"),
        }
    }

    /// Starts Envoy; `Err` carries its log when it refuses to start.
    pub fn try_start(self) -> Result<Envoy, String> {
        let wasm = self.wasm.clone().unwrap_or_else(prereq::filter_wasm);
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, self.bootstrap(&wasm)).expect("write envoy config");
        let admin_file = dir.path().join("admin_address");
        let mut cmd = Command::new(prereq::envoy());
        cmd.arg("-c")
            .arg(&config)
            .arg("--disable-hot-restart")
            .args(["--concurrency", &self.concurrency.to_string()])
            .args(["--log-level", "warning"])
            .arg("--admin-address-path")
            .arg(&admin_file);
        let output = Output::default();
        let mut proc = Proc::spawn("envoy", cmd, output.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        let admin = loop {
            if let Ok(text) = std::fs::read_to_string(&admin_file)
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
            {
                break addr;
            }
            if !proc.is_running() || Instant::now() > deadline {
                let _ = proc.wait_exit(Duration::from_secs(2));
                return Err(output.tail(60));
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        let listener = loop {
            if let Some(addr) = ready_listener(admin) {
                break addr;
            }
            if !proc.is_running() || Instant::now() > deadline {
                return Err(output.tail(60));
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        Ok(Envoy {
            proc,
            admin,
            listener,
            _dir: dir,
        })
    }
}

/// The listener address once Envoy reports LIVE, via its admin API.
fn ready_listener(admin: SocketAddr) -> Option<SocketAddr> {
    let ready = admin_get(admin, "/ready")?;
    if !ready.contains("LIVE") {
        return None;
    }
    let listeners: Value =
        serde_json::from_str(&admin_get(admin, "/listeners?format=json")?).ok()?;
    let sock = listeners
        .get("listener_statuses")?
        .get(0)?
        .get("local_address")?
        .get("socket_address")?;
    let ip = sock.get("address")?.as_str()?;
    let port = sock.get("port_value")?.as_u64()?;
    format!("{ip}:{port}").parse().ok()
}

/// Minimal blocking GET to the admin API (keeps the harness free of a blocking client).
pub fn admin_get(admin: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if head.split(' ').nth(1) != Some("200") {
        return None;
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some(dechunk(body));
    }
    Some(body.to_string())
}

/// Decodes a chunked HTTP/1.1 body (Envoy's admin API answers chunked; it refuses HTTP/1.0).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}

pub struct Envoy {
    proc: Proc,
    admin: SocketAddr,
    listener: SocketAddr,
    _dir: TempDir,
}

impl Envoy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listener, path)
    }

    pub fn listener(&self) -> SocketAddr {
        self.listener
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Envoy's own log (warnings and errors, the filter's included).
    pub fn log(&self) -> String {
        self.proc.output.text()
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Value of a counter at `/stats` (e.g. the filter's `wasmcustom.rate_limit_filter.denied`).
    pub fn stat(&self, name: &str) -> Option<u64> {
        let stats = admin_get(self.admin, &format!("/stats?filter=^{name}$"))?;
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// Runs `envoy --mode validate` on a bootstrap file: Envoy loads the `.wasm` and runs the
/// filter's `on_configure`. Returns (success, output).
pub fn validate(config: &Path) -> (bool, String) {
    let out = Command::new(prereq::envoy())
        .arg("--mode")
        .arg("validate")
        .arg("-c")
        .arg(config)
        .arg("--disable-hot-restart")
        .args(["--log-level", "warning"])
        .output()
        .expect("run envoy --mode validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn yaml_string(text: &str) -> String {
    // JSON strings are valid YAML flow scalars.
    Value::String(text.to_string()).to_string()
}

pub fn bootstrap(
    control_planes: &[SocketAddr],
    upstream: SocketAddr,
    plugin_json: &str,
    wasm: &Path,
) -> String {
    let plugin = yaml_string(plugin_json);
    let wasm = yaml_string(&wasm.display().to_string());
    let cp_endpoints: String = control_planes
        .iter()
        .map(|cp| {
            format!(
                "        - endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}\n",
                cp.ip(),
                cp.port()
            )
        })
        .collect();
    let (up_ip, up_port) = (upstream.ip(), upstream.port());
    format!(
        r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          use_remote_address: true
          route_config:
            virtual_hosts:
            - name: api
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: upstream}}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: rate_limit
                root_id: rate_limit
                failure_policy: FAIL_RELOAD
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {plugin}
                vm_config:
                  vm_id: rate_limit
                  runtime: envoy.wasm.runtime.v8
                  code: {{local: {{filename: {wasm}}}}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {up_ip}, port_value: {up_port}}}}}}}
  - name: rate_limit_control_plane
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    circuit_breakers:
      thresholds:
      - {{max_connections: 100000, max_pending_requests: 100000, max_requests: 100000, max_retries: 3}}
    load_assignment:
      cluster_name: rate_limit_control_plane
      endpoints:
      - lb_endpoints:
{cp_endpoints}"#
    )
}
