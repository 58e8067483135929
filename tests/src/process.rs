//! Child processes that are stopped when their handle is dropped.
//!
//! A child's stdout and stderr are read line by line on two threads into an [`Output`]. Once
//! the child has exited (`wait_exit`, `terminate`, `kill9`), those threads are joined: the
//! output is then complete, so a test can read it at once instead of waiting a while for the
//! pipes to drain.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long the reader threads may take to reach the end of the pipes once the child has
/// exited. Only a descendant still holding a pipe open (e.g. a forked redis-server saving a
/// snapshot) makes them take that long; the output is then left incomplete.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Lines a child wrote to stdout and stderr, kept for assertions and failure messages.
#[derive(Clone, Default)]
pub struct Output(Arc<Lines>);

#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    /// Notified on every new line.
    added: Condvar,
}

impl Output {
    pub fn lines(&self) -> Vec<String> {
        self.0.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Last `n` lines, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Reads `stream` on a thread until its end; the thread says so on `done`.
    fn collect(&self, stream: impl Read + Send + 'static, done: Sender<()>) -> JoinHandle<()> {
        let sink = self.0.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Ok(mut lines) = sink.lines.lock() {
                    lines.push(line);
                }
                sink.added.notify_all();
            }
            let _ = done.send(());
        })
    }

    /// Blocks until more than `seen` lines exist or `until` passes; returns the line count.
    fn wait_past(&self, seen: usize, until: Instant) -> usize {
        let Ok(mut lines) = self.0.lines.lock() else {
            return seen;
        };
        while lines.len() <= seen {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.0.added.wait_timeout(lines, left) {
                Ok((guard, _)) => lines = guard,
                Err(_) => return seen,
            }
        }
        lines.len()
    }

    /// Waits until a line satisfies `pred`, returning what `pred` extracted. Gives up after
    /// `timeout`, or once `alive` says the writer has exited and no line matched.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        mut alive: impl FnMut() -> bool,
        mut pred: impl FnMut(&str) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            let lines = self.lines();
            for line in &lines[seen..] {
                if let Some(found) = pred(line) {
                    return Some(found);
                }
            }
            seen = lines.len();
            if !alive() || Instant::now() >= deadline {
                return None;
            }
            // Re-check `alive` now and then: a dead writer adds no line to wake us.
            let slice = (Instant::now() + Duration::from_millis(50)).min(deadline);
            self.wait_past(seen, slice);
        }
    }

    /// Waits until a line satisfies `pred` and returns it; panics after `within`, naming
    /// `what` and showing the last lines. Checks that something is *absent* from the output
    /// wait first for the line they inspect: the writer may not have written it yet.
    pub fn expect_line(
        &self,
        within: Duration,
        what: &str,
        mut pred: impl FnMut(&str) -> bool,
    ) -> String {
        self.wait_for(within, || true, |line| pred(line).then(|| line.to_string()))
            .unwrap_or_else(|| {
                panic!(
                    "no {what} in the output within {within:?}:\n{}",
                    self.tail(30)
                )
            })
    }
}

/// The threads reading one child's pipes.
struct Readers {
    done: Receiver<()>,
    threads: Vec<JoinHandle<()>>,
}

impl Readers {
    /// Joins the threads once both pipes have ended (the child and anything it forked have
    /// exited). Returns false, leaving them detached, if that takes longer than `within`.
    fn join(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        for _ in 0..self.threads.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.done.recv_timeout(left).is_err() {
                return false;
            }
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        true
    }
}

pub struct Proc {
    pub name: String,
    child: Option<Child>,
    readers: Readers,
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
        let (done_tx, done) = mpsc::channel();
        let mut threads = Vec::new();
        if let Some(out) = child.stdout.take() {
            threads.push(output.collect(out, done_tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            threads.push(output.collect(err, done_tx));
        }
        Proc {
            name: name.to_string(),
            child: Some(child),
            readers: Readers { done, threads },
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
    /// Returns once every thread of the process is stopped (SIGSTOP is delivered
    /// asynchronously: a thread busy on another core could otherwise still answer a request
    /// sent right after).
    pub fn suspend(&self) {
        self.signal(libc::SIGSTOP);
        let Some(pid) = self.pid() else { return };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !all_threads_stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "process {pid} did not stop within 5 s of SIGSTOP"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGCONT after [`suspend`](Self::suspend).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`. Returns the exit status
    /// code if it exited by itself. The output is complete when this returns.
    pub fn terminate(&mut self, grace: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        self.signal_child(&child, libc::SIGTERM);
        // A suspended process acts on SIGTERM only once continued.
        self.signal_child(&child, libc::SIGCONT);
        let deadline = Instant::now() + grace;
        let mut code = None;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                code = status.code();
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.readers.join(DRAIN_GRACE);
        code
    }

    fn signal_child(&self, child: &Child, sig: i32) {
        // SAFETY: as in `signal`.
        unsafe {
            libc::kill(child.id() as i32, sig);
        }
    }

    /// SIGKILL: the abrupt death of a crash or `kill -9`. The output is complete when this
    /// returns.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
            self.readers.join(DRAIN_GRACE);
        }
    }

    /// Waits for the process to exit by itself (e.g. a refused configuration). When it has,
    /// its output is complete.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                self.readers.join(DRAIN_GRACE);
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

/// Whether every thread of `pid` is in the stopped state (`T` in /proc/<pid>/task/*/stat).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        // Gone: nothing can answer.
        return true;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command name, which is in parentheses and may hold spaces.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .is_some_and(|state| state == 'T' || state == 't')
        })
    })
}
