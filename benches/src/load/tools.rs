//! The load generators: wrk (closed loop, Lua scripts in benches/load/) and oha (fixed
//! rate, open loop).

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
    /// Connect/read/write errors and timeouts.
    pub socket_errors: u64,
    /// Phase c only.
    pub abuse: Option<AbuseCounts>,
    /// oha only: status code → count.
    pub statuses: Option<std::collections::BTreeMap<String, u64>>,
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
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("LOADBENCH "))
            .ok_or_else(|| format!("wrk gave no result (see {}):\n{stderr}", log.display()))?;
        let w: WrkLine = serde_json::from_str(line).map_err(|e| format!("wrk output: {e}"))?;
        let abuse = line
            .contains("good_ok")
            .then(|| serde_json::from_str::<AbuseCounts>(line))
            .transpose()
            .map_err(|e| format!("wrk output: {e}"))?;
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
            socket_errors: w.connect_errors + w.read_errors + w.write_errors + w.timeouts,
            abuse,
            statuses: None,
        })
    }
}

pub struct Oha<'a> {
    pub bin: &'a Path,
    pub url: &'a str,
    pub connections: u32,
    pub duration_s: u64,
    pub rate: f64,
    pub headers: Vec<String>,
}

impl Oha<'_> {
    pub fn run(&self, log: &Path) -> Result<LoadResult, String> {
        let mut cmd = Command::new(self.bin);
        cmd.args(["-z", &format!("{}s", self.duration_s)])
            .args(["-c", &self.connections.to_string()])
            .args(["-q", &format!("{:.0}", self.rate.max(1.0))])
            // Latency from each request's scheduled start, so a stall shows in the figures
            // instead of silently lowering the rate (coordinated omission).
            .arg("--latency-correction")
            // Finish the requests in flight at the deadline instead of counting them as
            // aborted.
            .arg("-w")
            .args(["--no-tui", "--output-format", "json"]);
        for header in &self.headers {
            cmd.arg("-H").arg(header);
        }
        let out = cmd
            .arg(self.url)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let _ = std::fs::write(log, format!("{stdout}\n--- stderr ---\n{stderr}"));
        if !out.status.success() {
            return Err(format!("oha failed (see {}):\n{stderr}", log.display()));
        }
        let v: serde_json::Value =
            serde_json::from_str(&stdout).map_err(|e| format!("oha output: {e}"))?;
        let f = |path: &[&str]| -> f64 {
            let mut cur = &v;
            for p in path {
                cur = &cur[*p];
            }
            cur.as_f64().unwrap_or(0.0)
        };
        let statuses: std::collections::BTreeMap<String, u64> = v["statusCodeDistribution"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let errors: u64 = v["errorDistribution"]
            .as_object()
            .map(|m| m.values().filter_map(|n| n.as_u64()).sum())
            .unwrap_or(0);
        let responses: u64 = statuses.values().sum();
        let non_2xx = statuses
            .iter()
            .filter(|(code, _)| code.parse::<u16>().is_ok_and(|c| c >= 400))
            .map(|(_, n)| n)
            .sum();
        let duration_s = f(&["summary", "total"]);
        Ok(LoadResult {
            requests: responses,
            duration_s,
            rps: if duration_s > 0.0 {
                responses as f64 / duration_s
            } else {
                0.0
            },
            mean_ms: f(&["summary", "average"]) * 1e3,
            p50_ms: f(&["latencyPercentiles", "p50"]) * 1e3,
            p95_ms: f(&["latencyPercentiles", "p95"]) * 1e3,
            p99_ms: f(&["latencyPercentiles", "p99"]) * 1e3,
            max_ms: f(&["summary", "slowest"]) * 1e3,
            non_2xx,
            socket_errors: errors,
            abuse: None,
            statuses: Some(statuses),
        })
    }
}
