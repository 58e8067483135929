//! The load generators: wrk (closed loop, Lua scripts in benches/load/) and the open-loop
//! generator (`open_loop`, fixed rate: `rl_benches::open_loop`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

pub const KEYS_LUA: &str = include_str!("../../load/keys.lua");
pub const ABUSE_LUA: &str = include_str!("../../load/abuse.lua");

/// What a load generator reports about one run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoadResult {
    pub requests: u64,
    pub duration_s: f64,
    pub rps: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Responses with a status ≥ 400 (429 included).
    pub non_2xx: u64,
    /// Connect, read and write errors.
    pub socket_errors: u64,
    /// Requests not answered in time (the open-loop generator: also those it gave up on).
    pub timeouts: u64,
    /// Phases a and b: requests sent to each sample key (by line of the key file, from 1).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub samples: BTreeMap<usize, u64>,
    /// Phase c only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abuse: Option<AbuseCounts>,
    /// Fixed-rate runs: status code → count, and the rate asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statuses: Option<BTreeMap<String, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_rate: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct AbuseCounts {
    pub good_ok: u64,
    pub good_429: u64,
    pub good_other: u64,
    pub abuse_ok: u64,
    pub abuse_429: u64,
    pub abuse_other: u64,
    pub unlabelled: u64,
    /// Highest share of its limit a good identity had used (from X-RateLimit-Remaining).
    pub good_max_used: f64,
    /// Good identities taken into use, and those that reached their quota.
    pub good_used: u64,
    pub good_retired: u64,
    /// The pool ran dry: good requests went to abuse identities instead.
    pub good_exhausted: bool,
}

impl AbuseCounts {
    pub fn good_requests(&self) -> u64 {
        self.good_ok + self.good_429 + self.good_other
    }

    pub fn abuse_requests(&self) -> u64 {
        self.abuse_ok + self.abuse_429 + self.abuse_other
    }
}

#[derive(Debug, Deserialize)]
struct WrkLine {
    requests: u64,
    duration_us: u64,
    connect_errors: u64,
    read_errors: u64,
    write_errors: u64,
    status_errors: u64,
    timeouts: u64,
    mean_us: f64,
    p50_us: f64,
    p95_us: f64,
    p99_us: f64,
    max_us: f64,
    #[serde(default)]
    samples: BTreeMap<String, u64>,
}

/// Reads the `LOADBENCH {json}` line of wrk's output (keys.lua, abuse.lua).
pub fn parse_wrk(stdout: &str) -> Result<LoadResult, String> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("LOADBENCH "))
        .ok_or("no LOADBENCH line")?;
    let w: WrkLine = serde_json::from_str(line).map_err(|e| format!("wrk output: {e}"))?;
    let abuse = line
        .contains("\"good_ok\"")
        .then(|| serde_json::from_str::<AbuseCounts>(line))
        .transpose()
        .map_err(|e| format!("wrk output: {e}"))?;
    let samples = w
        .samples
        .iter()
        .map(|(line, n)| {
            line.parse::<usize>()
                .map(|l| (l, *n))
                .map_err(|_| format!("wrk output: sample line {line:?}"))
        })
        .collect::<Result<_, _>>()?;
    let duration_s = w.duration_us as f64 / 1e6;
    Ok(LoadResult {
        requests: w.requests,
        duration_s,
        rps: if duration_s > 0.0 {
            w.requests as f64 / duration_s
        } else {
            0.0
        },
        mean_ms: w.mean_us / 1e3,
        p50_ms: w.p50_us / 1e3,
        p95_ms: w.p95_us / 1e3,
        p99_ms: w.p99_us / 1e3,
        max_ms: w.max_us / 1e3,
        non_2xx: w.status_errors,
        socket_errors: w.connect_errors + w.read_errors + w.write_errors,
        timeouts: w.timeouts,
        samples,
        abuse,
        statuses: None,
        target_rate: None,
    })
}

pub struct Wrk {
    pub bin: PathBuf,
    pub url: String,
    pub threads: u32,
    pub connections: u32,
    pub duration_s: u64,
    pub script: PathBuf,
    pub args: Vec<String>,
}

impl Wrk {
    pub fn run(&self, log: &Path) -> Result<LoadResult, String> {
        let out = Command::new(&self.bin)
            .args(["-t", &self.threads.min(self.connections).to_string()])
            .args(["-c", &self.connections.to_string()])
            .args(["-d", &format!("{}s", self.duration_s)])
            .args(["--timeout", "5s"])
            .arg("-s")
            .arg(&self.script)
            .arg(&self.url)
            .arg("--")
            .args(&self.args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let _ = std::fs::write(log, format!("{stdout}\n--- stderr ---\n{stderr}"));
        parse_wrk(&stdout).map_err(|e| format!("wrk: {e} (see {}):\n{stderr}", log.display()))
    }
}

#[derive(Debug, Deserialize)]
struct OpenLoopLine {
    answered: u64,
    statuses: BTreeMap<String, u64>,
    connect_errors: u64,
    io_errors: u64,
    timeouts: u64,
    unfinished: u64,
    elapsed_us: u64,
    achieved_rate: f64,
    mean_us: f64,
    p50_us: f64,
    p95_us: f64,
    p99_us: f64,
    max_us: f64,
}

/// Reads the `LOADBENCH {json}` line of the open-loop generator.
pub fn parse_open_loop(stdout: &str, target_rate: f64) -> Result<LoadResult, String> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("LOADBENCH "))
        .ok_or("no LOADBENCH line")?;
    let o: OpenLoopLine =
        serde_json::from_str(line).map_err(|e| format!("open_loop output: {e}"))?;
    let non_2xx = o
        .statuses
        .iter()
        .filter(|(code, _)| code.parse::<u16>().is_ok_and(|c| c >= 400))
        .map(|(_, n)| n)
        .sum();
    Ok(LoadResult {
        requests: o.answered,
        duration_s: o.elapsed_us as f64 / 1e6,
        rps: o.achieved_rate,
        mean_ms: o.mean_us / 1e3,
        p50_ms: o.p50_us / 1e3,
        p95_ms: o.p95_us / 1e3,
        p99_ms: o.p99_us / 1e3,
        max_ms: o.max_us / 1e3,
        non_2xx,
        socket_errors: o.connect_errors + o.io_errors,
        timeouts: o.timeouts + o.unfinished,
        samples: BTreeMap::new(),
        abuse: None,
        statuses: Some(o.statuses),
        target_rate: Some(target_rate),
    })
}

/// The open-loop generator (`open_loop`, built with this binary).
pub struct OpenLoop<'a> {
    pub bin: &'a Path,
    pub url: &'a str,
    pub keys: &'a Path,
    pub connections: u32,
    pub duration_s: u64,
    pub rate: f64,
}

impl OpenLoop<'_> {
    pub fn run(&self, log: &Path) -> Result<LoadResult, String> {
        let out = Command::new(self.bin)
            .args(["--url", self.url])
            .arg("--keys")
            .arg(self.keys)
            .args(["--rate", &format!("{:.0}", self.rate.max(1.0))])
            .args(["--duration", &self.duration_s.to_string()])
            .args(["--connections", &self.connections.to_string()])
            .args(["--timeout", "5"])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let _ = std::fs::write(log, format!("{stdout}\n--- stderr ---\n{stderr}"));
        if !out.status.success() {
            return Err(format!(
                "open_loop failed (see {}):\n{stderr}",
                log.display()
            ));
        }
        parse_open_loop(&stdout, self.rate.max(1.0).round())
    }
}

#[cfg(test)]
mod tests;
