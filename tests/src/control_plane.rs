//! The control plane as a real process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{Output, Proc};

pub struct ControlPlaneBuilder {
    bin: PathBuf,
    config: String,
    redis_url: Option<String>,
    listen: Option<SocketAddr>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    config_file: Option<PathBuf>,
}

impl ControlPlaneBuilder {
    pub fn new(bin: &str, config_yaml: &str) -> Self {
        Self {
            bin: PathBuf::from(bin),
            config: config_yaml.to_string(),
            redis_url: None,
            listen: None,
            env: Vec::new(),
            args: Vec::new(),
            config_file: None,
        }
    }

    /// Use this configuration file (the test manages it) instead of writing one.
    pub fn config_file(mut self, path: &Path) -> Self {
        self.config_file = Some(path.to_path_buf());
        self
    }

    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }

    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    pub fn start(self) -> ControlPlane {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = match &self.config_file {
            Some(path) => path.clone(),
            None => {
                let path = dir.path().join("rate_limit_config.yaml");
                std::fs::write(&path, &self.config).expect("write config");
                path
            }
        };
        let mut cp = ControlPlane {
            builder: self,
            dir,
            config_path,
            proc: None,
            addr: None,
            output: Output::default(),
        };
        cp.launch();
        cp
    }
}

pub struct ControlPlane {
    builder: ControlPlaneBuilder,
    dir: TempDir,
    config_path: PathBuf,
    proc: Option<Proc>,
    addr: Option<SocketAddr>,
    pub output: Output,
}

/// Extracts the address from the `listening` log line (JSON logs).
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value.get("message")?.as_str()? != "listening" {
        return None;
    }
    value.get("addr")?.as_str()?.parse().ok()
}

impl ControlPlane {
    /// Spawns the process without waiting for it to listen (for start-up failure tests).
    pub fn spawn_raw(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(bin);
        clear_env(&mut cmd);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc::spawn("control-plane", cmd, Output::default())
    }

    fn launch(&mut self) {
        let b = &self.builder;
        let listen = self
            .addr
            .or(b.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut cmd = Command::new(&b.bin);
        clear_env(&mut cmd);
        cmd.arg("--listen")
            .arg(listen.to_string())
            .arg("--config")
            .arg(&self.config_path)
            .env("RATE_LIMIT_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            // Debug builds on a busy 2-core box: a Redis round trip can exceed the 100 ms
            // production default under a burst, which would turn into fail-open answers.
            // Tests about timeouts set their own value.
            .env("RATE_LIMIT_REDIS_TIMEOUT_MS", "1000")
            .current_dir(self.dir.path());
        if let Some(url) = &b.redis_url {
            cmd.arg("--redis-url").arg(url);
        }
        cmd.args(&b.args);
        for (k, v) in &b.env {
            cmd.env(k, v);
        }
        self.output = Output::default();
        let mut proc = Proc::spawn("control-plane", cmd, self.output.clone());
        let output = self.output.clone();
        let addr = output.wait_for(
            Duration::from_secs(30),
            || proc.is_running(),
            listening_addr,
        );
        match addr {
            Some(addr) => {
                self.addr = Some(addr);
                self.proc = Some(proc);
            }
            None => panic!(
                "control plane did not start listening:\n{}",
                self.output.tail(40)
            ),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("control plane address")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(Proc::pid)
    }

    /// SIGTERM and wait: returns the exit code (graceful shutdown exits 0).
    pub fn stop(&mut self) -> Option<i32> {
        self.proc
            .take()
            .and_then(|mut p| p.terminate(Duration::from_secs(10)))
    }

    /// Stops the process without killing it (SIGSTOP): connections are still accepted by the
    /// kernel, but no call is answered until [`resume`](Self::resume): a stalled control plane.
    pub fn suspend(&self) {
        if let Some(p) = &self.proc {
            p.suspend();
        }
    }

    pub fn resume(&self) {
        if let Some(p) = &self.proc {
            p.resume();
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// Starts again on the same address with the same configuration file.
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "control plane is still running");
        self.launch();
    }
}

/// Tests must not inherit the developer's `RATE_LIMIT_*` settings.
fn clear_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RATE_LIMIT_") {
            cmd.env_remove(&key);
        }
    }
}
