#!/usr/bin/env bash
# The full test suite, from a fresh machine: installs prerequisites and the pinned test tools,
# builds the filter, checks formatting and lints, runs every test and smoke-runs every
# benchmark (real redis-server, control plane, Envoy and the compiled .wasm) under line
# coverage, checks the coverage floor, and fuzzes each target for a bounded time. Ends with
# the time each step took. Any step that cannot run fails the whole.
#
#   FUZZ_SECONDS=N   fuzzing time per target (default 20; 0 skips fuzzing and says so)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

steps=()
step_start=$start
step_name="setup (toolchain, apt, PyPI, pinned test tools)"
# Closes the running step and opens the next; the table is printed however the run ends.
step() {
  local now
  now=$(date +%s)
  steps+=("$(printf '%6d s  %s' $((now - step_start)) "$step_name")")
  step_start=$now
  step_name=$*
  log "$* ($((now - start)) s)"
}
report() {
  local status=$? now
  now=$(date +%s)
  steps+=("$(printf '%6d s  %s' $((now - step_start)) "$step_name")")
  printf '\nTime per step:\n' >&2
  printf '  %s\n' "${steps[@]}" >&2
  printf '%8d s  total (%s)\n' $((now - start)) "$([ "$status" = 0 ] && echo passed || echo FAILED)" >&2
}
trap report EXIT

source scripts/setup.sh
source scripts/test-tools.sh

step "building the filter (wasm32-wasip1, release)"
cargo build --locked -p rate-limit-filter --target wasm32-wasip1 --release
ls -l target/wasm32-wasip1/release/rate_limit_filter.wasm

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo clippy --locked -p rate-limit-filter --target wasm32-wasip1 -- -D warnings

# Coverage is about the product: the test harness, benches, fuzz glue, the demo upstream and
# the product crates' unit-test files are left out of the figures (their code runs, it is just
# not counted).
ignore='(^|/)(tests|benches|demo-upstream|fuzz)/|(^|/)tests\.rs$|(^|/)test_support\.rs$'

step "tests and benchmark smoke runs (nextest, instrumented for coverage)"
# --all-targets takes in the criterion benchmarks, which nextest runs in criterion's test
# mode (each benchmark once, untimed): one instrumented build serves both.
cargo llvm-cov nextest --locked --workspace --all-targets --no-fail-fast \
  --ignore-filename-regex "$ignore" --no-report

step "coverage"
cargo llvm-cov report --json --summary-only --ignore-filename-regex "$ignore" |
  python3 scripts/coverage-check.py

step "fuzzing (bounded)"
FUZZ_SECONDS=${FUZZ_SECONDS:-20} FUZZ_REQUIRE=1 bash scripts/fuzz.sh

log "all green in $(($(date +%s) - start)) s"
