//! What was measured, and on what: the commit (and whether the tree had changes beyond it),
//! when, the programs' versions and the machine's CPUs.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Provenance {
    /// `git rev-parse HEAD`, or `unknown`.
    pub commit: String,
    /// `git status --porcelain` had lines: the tree measured is not exactly `commit`.
    pub dirty: bool,
    /// Those lines (at most `MAX_CHANGES`).
    pub changes: Vec<String>,
    /// UTC, ISO 8601.
    pub started_at: String,
    pub cpus: usize,
    pub envoy: String,
    pub redis_server: String,
    pub wrk: String,
}

const MAX_CHANGES: usize = 30;

/// The first line of a command's output (stdout, else stderr); `unknown` when it cannot run.
fn first_line(program: &Path, args: &[&str], dir: Option<&Path>) -> Option<String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let out = cmd.output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// The working tree's state from `git status --porcelain` output.
pub fn changes(porcelain: &str) -> Vec<String> {
    porcelain
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

impl Provenance {
    pub fn collect(repo: &Path, envoy: &Path, redis_server: &Path, wrk: &Path) -> Provenance {
        let git = Path::new("git");
        let commit = first_line(git, &["rev-parse", "HEAD"], Some(repo))
            .filter(|c| c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit()))
            .unwrap_or_else(|| "unknown".into());
        let porcelain = Command::new("git")
            .args(["status", "--porcelain"])
            .current_dir(repo)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let all = changes(&porcelain);
        let unknown = || "unknown".to_string();
        Provenance {
            dirty: !all.is_empty(),
            changes: all.into_iter().take(MAX_CHANGES).collect(),
            commit,
            started_at: first_line(Path::new("date"), &["-u", "+%Y-%m-%dT%H:%M:%SZ"], None)
                .unwrap_or_else(unknown),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            // "<path>  version: <hash>/<version>/…": the part after the path.
            envoy: first_line(envoy, &["--version"], None)
                .map(|l| match l.find("version: ") {
                    Some(i) => format!("Envoy {}", &l[i + "version: ".len()..]),
                    None => l,
                })
                .unwrap_or_else(unknown),
            redis_server: first_line(redis_server, &["--version"], None).unwrap_or_else(unknown),
            wrk: first_line(wrk, &["--version"], None)
                .map(|l| l.split(" Copyright").next().unwrap_or(&l).to_string())
                .unwrap_or_else(unknown),
        }
    }
}

#[cfg(test)]
mod tests;
