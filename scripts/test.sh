#!/usr/bin/env bash
# The full test suite, from a fresh machine: installs prerequisites, builds the filter and
# the services, checks formatting and lints, runs every test (real redis-server, control
# plane, Envoy and the compiled .wasm) with line coverage, fuzzes each target for a bounded
# time, and smoke-runs the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
source scripts/setup.sh

step() { log "$* ($(( $(date +%s) - start )) s)"; }

step "building the filter (wasm32-wasip1, release)"
cargo build --locked -p rate-limit-filter --target wasm32-wasip1 --release
ls -l target/wasm32-wasip1/release/rate_limit_filter.wasm

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo clippy --locked -p rate-limit-filter --target wasm32-wasip1 -- -D warnings

step "coverage tooling"
# Coverage needs rustup's llvm-tools and cargo-llvm-cov. Should either be impossible to install
# here, the tests still run (uninstrumented) and the coverage step says loudly that it did not
# measure anything.
coverage=1
if ! rustup component list --installed 2>/dev/null | grep -q '^llvm-tools'; then
  rustup component add llvm-tools-preview || coverage=0
fi
if [ "$coverage" = 1 ] && ! command -v cargo-llvm-cov >/dev/null 2>&1; then
  cargo install cargo-llvm-cov --locked --quiet || coverage=0
fi

# Coverage is about the product: the test harness, benches, fuzz glue and the demo upstream
# are left out of the figures (their code runs, it is just not counted).
ignore='(^|/)(tests|benches|demo-upstream|fuzz)/'
if [ "$coverage" = 1 ]; then
  step "tests (instrumented for coverage)"
  if cargo nextest --version >/dev/null 2>&1; then
    cargo llvm-cov nextest --locked --workspace --no-fail-fast --ignore-filename-regex "$ignore" --no-report
  else
    cargo llvm-cov test --locked --workspace --no-fail-fast --ignore-filename-regex "$ignore" --no-report
  fi
else
  step "tests (NOT instrumented: llvm-tools or cargo-llvm-cov could not be installed)"
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --workspace --no-fail-fast
  else
    cargo test --locked --workspace --no-fail-fast
  fi
fi
cargo test --locked --doc -p control-plane -p rate-limit-filter -p rl-wire

if [ "$coverage" = 1 ]; then
  step "coverage"
  cargo llvm-cov report --json --summary-only --ignore-filename-regex "$ignore" |
    python3 scripts/coverage-check.py
else
  log "COVERAGE NOT MEASURED: install llvm-tools-preview and cargo-llvm-cov to check the floor"
fi

step "fuzzing (bounded)"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet ||
  log "cargo-fuzz could not be installed: scripts/fuzz.sh runs its proptest fallback"
bash scripts/fuzz.sh

step "benchmarks (smoke run: each benchmark once, not timed)"
cargo bench --locked -p rl-benches -- --test

log "all green in $(( $(date +%s) - start )) s"
