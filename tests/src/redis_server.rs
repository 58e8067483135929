//! A private `redis-server` on a free loopback port.

use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::prereq;
use crate::process::{Output, Proc};

pub struct RedisServer {
    proc: Option<Proc>,
    port: u16,
    dir: TempDir,
    extra: Vec<String>,
    pub output: Output,
}

impl RedisServer {
    /// Without persistence.
    pub fn start() -> RedisServer {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// On a given port (for tests where the control plane knows the URL before Redis runs).
    pub fn start_on(port: u16) -> RedisServer {
        let mut server = RedisServer {
            proc: None,
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            extra: vec![
                "--save".into(),
                "".into(),
                "--appendonly".into(),
                "no".into(),
            ],
            output: Output::default(),
        };
        assert!(
            server.launch(),
            "redis-server did not start on {port}:\n{}",
            server.output.tail(20)
        );
        server
    }

    /// With extra `redis-server` arguments (e.g. AOF settings).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            proc: None,
            port: 0,
            dir: tempfile::tempdir().expect("temp dir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            output: Output::default(),
        };
        // The port can be taken between choosing and binding it: try a few.
        for _ in 0..5 {
            server.port = crate::free_port();
            if server.launch() {
                return server;
            }
        }
        panic!("redis-server did not start:\n{}", server.output.tail(20));
    }

    fn launch(&mut self) -> bool {
        let mut cmd = command(self.port);
        cmd.arg("--dir").arg(self.dir.path()).args(&self.extra);
        self.output = Output::default();
        let mut proc = Proc::spawn("redis-server", cmd, self.output.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !proc.is_running() {
                return false;
            }
            // Another test's server can hold the port while ours fails to bind it: only an
            // answer from our own process counts.
            if proc.pid().is_some() && self.server_pid() == proc.pid() {
                self.proc = Some(proc);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The process id of whatever answers on the port, from `INFO server`.
    fn server_pid(&self) -> Option<u32> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_millis(200))
            .ok()?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut conn).ok()?;
        process_id_in(&info)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A synchronous connection for assertions on keys.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("connect to test redis")
    }

    /// How many times the server has run `command` (lower case, e.g. `evalsha`), from
    /// `INFO commandstats`.
    pub fn command_calls(&self, command: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.connection())
            .expect("INFO commandstats");
        command_calls_in(&info, command)
    }

    /// Graceful stop (SIGTERM: Redis flushes the AOF).
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.terminate(Duration::from_secs(10));
        }
    }

    /// Stops the process without killing it (SIGSTOP): connections stay open, the kernel
    /// still accepts new ones, and no command is answered until [`resume`](Self::resume): a
    /// stalled Redis.
    pub fn suspend(&self) {
        if let Some(proc) = &self.proc {
            proc.suspend();
        }
    }

    /// SIGCONT after [`suspend`](Self::suspend).
    pub fn resume(&self) {
        if let Some(proc) = &self.proc {
            proc.resume();
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
        }
    }

    /// Starts again on the same port and directory (after `stop` or `kill9`).
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "redis-server is still running");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.launch() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart:\n{}", self.output.tail(20));
    }
}

/// A foreground `redis-server` on 127.0.0.1:`port` that logs only warnings.
pub(crate) fn command(port: u16) -> Command {
    let mut cmd = Command::new(prereq::redis_server());
    cmd.arg("--port").arg(port.to_string()).args([
        "--bind",
        "127.0.0.1",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]);
    cmd
}

/// The `calls` of `command` in an `INFO commandstats` reply (0 when never run).
pub fn command_calls_in(info: &str, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.trim().parse().expect("calls is a number"))
}

/// `process_id:<n>` of an `INFO server` reply.
pub(crate) fn process_id_in(info: &str) -> Option<u32> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix("process_id:"))
        .and_then(|pid| pid.parse().ok())
}
