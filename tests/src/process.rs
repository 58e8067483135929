//! Child processes that are stopped when their handle is dropped.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Lines a child wrote to stdout and stderr, kept for assertions and failure messages.
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<Vec<String>>>);

impl Output {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Last `n` lines, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn collect(&self, stream: impl Read + Send + 'static) {
        let sink = self.0.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Ok(mut lines) = sink.lock() {
                    lines.push(line);
                }
            }
        });
    }

    /// Waits until a line satisfies `pred`, returning what `pred` extracted.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        mut alive: impl FnMut() -> bool,
        mut pred: impl FnMut(&str) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        while Instant::now() < deadline {
            let lines = self.lines();
            for line in &lines[seen..] {
                if let Some(found) = pred(line) {
                    return Some(found);
                }
            }
            seen = lines.len();
            if !alive() {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub output: Output,
}

impl Proc {
    /// Spawns `cmd` with stdout/stderr captured.
    pub fn spawn(name: &str, mut cmd: Command, output: Output) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        if let Some(out) = child.stdout.take() {
            output.collect(out);
        }
        if let Some(err) = child.stderr.take() {
            output.collect(err);
        }
        Proc {
            name: name.to_string(),
            child: Some(child),
            output,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
            unsafe {
                libc::kill(pid as i32, sig);
            }
        }
    }

    /// SIGSTOP: the process stays alive, its sockets open (the kernel still accepts
    /// connections), and nothing is answered until [`resume`](Self::resume).
    pub fn suspend(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`suspend`](Self::suspend).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`. Returns the exit status
    /// code if it exited by itself.
    pub fn terminate(&mut self, grace: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        self.signal_child(&child, libc::SIGTERM);
        // A suspended process acts on SIGTERM only once continued.
        self.signal_child(&child, libc::SIGCONT);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn signal_child(&self, child: &Child, sig: i32) {
        // SAFETY: as in `signal`.
        unsafe {
            libc::kill(child.id() as i32, sig);
        }
    }

    /// SIGKILL: the abrupt death of a crash or `kill -9`.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself (e.g. a refused configuration).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Some(status.code().unwrap_or(-1));
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    /// SIGTERM first, so an instrumented control plane writes its coverage profile and
    /// Redis/Envoy exit cleanly; SIGKILL if it does not exit within a few seconds.
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(5));
    }
}
