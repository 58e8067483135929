//! A real Envoy with the compiled filter in front of the demo upstream.
//!
//! The bootstrap is the shipped `envoy/envoy.yaml` (edge listener with `use_remote_address`,
//! the filter and its failure policy, the control-plane cluster over HTTP/2 with raised
//! circuit breakers, ...) with only what a test must own replaced: the listener and admin
//! addresses (free ports), the upstream and control-plane endpoints, the `.wasm` under test
//! and the plugin configuration.

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
    /// Fields of the HTTP connection manager set over the shipped ones.
    connection_manager: Vec<(String, Value)>,
}

impl EnvoyBuilder {
    /// Plugin config: the shipped one with a 3 s timeout (debug builds on 2 busy cores; tests
    /// about timeouts set their own).
    pub fn new(control_plane: SocketAddr, upstream: SocketAddr) -> Self {
        let mut plugin = shipped_plugin_config();
        plugin["timeout_ms"] = json!(3000);
        Self {
            control_planes: vec![control_plane],
            upstream,
            plugin,
            concurrency: 2,
            wasm: None,
            connection_manager: Vec::new(),
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

    /// Sets one field of the HTTP connection manager over the shipped value (tests of what
    /// another Envoy configuration lets through, e.g. `path_with_escaped_slashes_action`).
    pub fn connection_manager(mut self, key: &str, value: Value) -> Self {
        self.connection_manager.push((key.to_string(), value));
        self
    }

    pub fn bootstrap(&self, wasm: &Path) -> String {
        let mut config: Value = serde_json::from_str(&bootstrap(
            &self.control_planes,
            self.upstream,
            &self.plugin.to_string(),
            wasm,
        ))
        .expect("the bootstrap is JSON");
        if !self.connection_manager.is_empty() {
            let hcm = http_connection_manager(&mut config)
                .ok()
                .and_then(Value::as_object_mut)
                .expect("envoy/envoy.yaml has a connection manager map");
            for (key, value) in &self.connection_manager {
                hcm.insert(key.clone(), value.clone());
            }
        }
        config.to_string()
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
        launch(&self.bootstrap(&wasm), self.concurrency)
    }
}

/// Starts Envoy on `bootstrap` (JSON) with `concurrency` workers and waits until its
/// listener is live; `Err` carries its log when it refuses to start.
pub fn launch(bootstrap: &str, concurrency: u32) -> Result<Envoy, String> {
    {
        let dir = tempfile::tempdir().expect("temp dir");
        // JSON: the bootstrap is the shipped YAML as a value, written out again.
        let config = dir.path().join("envoy.json");
        std::fs::write(&config, bootstrap).expect("write envoy config");
        let admin_file = dir.path().join("admin_address");
        let mut cmd = Command::new(prereq::envoy());
        cmd.arg("-c")
            .arg(&config)
            .arg("--disable-hot-restart")
            .args(["--concurrency", &concurrency.to_string()])
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
pub(crate) fn dechunk(mut body: &str) -> String {
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

    /// Waits until a line of Envoy's log satisfies `pred` and returns it; panics after
    /// `within`, naming `what`.
    pub fn expect_log_line(
        &self,
        within: Duration,
        what: &str,
        pred: impl FnMut(&str) -> bool,
    ) -> String {
        self.proc.output.expect_line(within, what, pred)
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

/// The repository's `envoy/envoy.yaml`, parsed.
pub fn shipped_config() -> Value {
    let path = crate::repo_root().join("envoy/envoy.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

/// The plugin configuration `envoy/envoy.yaml` ships.
pub fn shipped_plugin_config() -> Value {
    let mut config = shipped_config();
    let plugin = wasm_config(&mut config)
        .and_then(|wasm| text_at(wasm, "/configuration/value"))
        .unwrap_or_else(|e| panic!("envoy/envoy.yaml: {e}"));
    serde_json::from_str(&plugin)
        .unwrap_or_else(|e| panic!("envoy/envoy.yaml: the plugin configuration is not JSON: {e}"))
}

/// `envoy/envoy.yaml` with the test's addresses, `.wasm` and plugin configuration.
pub fn bootstrap(
    control_planes: &[SocketAddr],
    upstream: SocketAddr,
    plugin_json: &str,
    wasm: &Path,
) -> String {
    let mut config = shipped_config();
    localize(&mut config, control_planes, upstream, plugin_json, wasm)
        .unwrap_or_else(|e| panic!("envoy/envoy.yaml: {e}"));
    config.to_string()
}

fn localize(
    config: &mut Value,
    control_planes: &[SocketAddr],
    upstream: SocketAddr,
    plugin_json: &str,
    wasm: &Path,
) -> Result<(), String> {
    let loopback = json!({"address": "127.0.0.1", "port_value": 0});
    *at(config, "/admin/address/socket_address")? = loopback.clone();
    let listeners = at(config, "/static_resources/listeners")?;
    let [listener] = listeners
        .as_array_mut()
        .map(Vec::as_mut_slice)
        .ok_or("listeners is not a list")?
    else {
        return Err("expected exactly one listener".into());
    };
    *at(listener, "/address/socket_address")? = loopback;

    let upstream_cluster = text_at(
        http_connection_manager(config)?,
        "/route_config/virtual_hosts/0/routes/0/route/cluster",
    )?;
    let wasm_config = wasm_config(config)?;
    let control_plane_cluster = text_at(wasm_config, "/configuration/value")
        .and_then(|plugin| {
            serde_json::from_str::<Value>(&plugin).map_err(|e| format!("plugin config: {e}"))
        })
        .and_then(|plugin| text_at(&plugin, "/cluster"))?;
    *at(wasm_config, "/configuration/value")? = Value::String(plugin_json.to_string());
    *at(wasm_config, "/vm_config/code/local/filename")? = Value::String(wasm.display().to_string());

    let clusters = at(config, "/static_resources/clusters")?;
    set_endpoints(named(clusters, &upstream_cluster)?, &[upstream])?;
    set_endpoints(named(clusters, &control_plane_cluster)?, control_planes)?;
    Ok(())
}

pub(crate) fn at<'a>(value: &'a mut Value, pointer: &str) -> Result<&'a mut Value, String> {
    value
        .pointer_mut(pointer)
        .ok_or_else(|| format!("no {pointer}"))
}

fn text_at(value: &Value, pointer: &str) -> Result<String, String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("no text at {pointer}"))
}

/// The entry of a list of `name`d objects (filters, clusters).
pub(crate) fn named<'a>(list: &'a mut Value, name: &str) -> Result<&'a mut Value, String> {
    list.as_array_mut()
        .and_then(|items| {
            items
                .iter_mut()
                .find(|item| item.get("name").and_then(Value::as_str) == Some(name))
        })
        .ok_or_else(|| format!("nothing named {name}"))
}

pub(crate) fn http_connection_manager(config: &mut Value) -> Result<&mut Value, String> {
    let filters = at(
        config,
        "/static_resources/listeners/0/filter_chains/0/filters",
    )?;
    let hcm = named(filters, "envoy.filters.network.http_connection_manager")?;
    at(hcm, "/typed_config")
}

/// The `config` of the filter's `envoy.filters.http.wasm` entry.
fn wasm_config(config: &mut Value) -> Result<&mut Value, String> {
    let http_filters = at(http_connection_manager(config)?, "/http_filters")?;
    let wasm = named(http_filters, "envoy.filters.http.wasm")?;
    at(wasm, "/typed_config/config")
}

pub(crate) fn set_endpoints(cluster: &mut Value, addrs: &[SocketAddr]) -> Result<(), String> {
    let endpoints: Vec<Value> = addrs
        .iter()
        .map(|addr| {
            json!({"endpoint": {"address": {"socket_address": {
                "address": addr.ip().to_string(),
                "port_value": addr.port(),
            }}}})
        })
        .collect();
    *at(cluster, "/load_assignment/endpoints/0/lb_endpoints")? = Value::Array(endpoints);
    Ok(())
}
