#!/usr/bin/env bash
# The full test suite, from a fresh machine: installs prerequisites, builds the filter and
# the services, checks formatting and lints, runs every test (real redis-server, control
# plane, Envoy and the compiled .wasm) and smoke-runs the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
source scripts/setup.sh

log "building the filter (wasm32-wasip1, release)"
cargo build --locked -p rate-limit-filter --target wasm32-wasip1 --release
ls -l target/wasm32-wasip1/release/rate_limit_filter.wasm

log "formatting and lints"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo clippy --locked -p rate-limit-filter --target wasm32-wasip1 -- -D warnings

log "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast
  cargo test --locked --workspace --doc
else
  cargo test --locked --workspace --no-fail-fast
fi

log "benchmarks (smoke run: each benchmark once, not timed)"
cargo bench --locked -p rl-benches -- --test

log "all green in $(( $(date +%s) - start )) s"
