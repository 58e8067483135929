#!/usr/bin/env bash
# The load benchmark (docs/BENCHMARKS.md); not part of CI. In one run: installs what is
# missing (Envoy, redis-server, wrk via setup.sh; oha via cargo), builds the release
# control plane, demo upstream and filter .wasm, then measures four configurations with the
# same traffic -- 1 Envoy passthrough, 2 Envoy's local_ratelimit, 3 our filter + control
# plane in memory, 4 our filter + control plane on Redis -- and writes
# target/load-bench/report.md (and results.json, logs/).
#
# Everything listens on 127.0.0.1 on free ports; every process started is stopped at the
# end (or when this script is interrupted). Options go to the orchestrator, e.g.
#   bash scripts/load-bench.sh --duration 5 --configs 1,4 --phases a --conns 100
#   bash scripts/load-bench.sh --help
# The box should be otherwise idle: compare ratios within one run, not across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
source scripts/setup.sh

if ! command -v oha >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/oha" ]; then
  log "installing oha (cargo install oha --locked: a few minutes, once)"
  cargo install oha --locked
fi
oha_bin=$(command -v oha || echo "$HOME/.cargo/bin/oha")

log "building the control plane, the demo upstream and the filter (release)"
cargo build --locked --release -p control-plane -p demo-upstream
cargo build --locked --release -p rate-limit-filter --target wasm32-wasip1
log "building the benchmark's orchestrator"
cargo build --locked -p rl-benches --bin load_bench

target=${CARGO_TARGET_DIR:-target}
bench_pid=
cleanup() {
  trap - EXIT INT TERM
  # load_bench's children die with it (PR_SET_PDEATHSIG).
  if [ -n "$bench_pid" ]; then kill "$bench_pid" 2>/dev/null || true; wait "$bench_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "running the load benchmark (about 10 minutes with the defaults)"
"$target/debug/load_bench" \
  --envoy "$ENVOY_BIN" \
  --oha "$oha_bin" \
  --control-plane "$target/release/control-plane" \
  --upstream "$target/release/demo-upstream" \
  --wasm "$target/wasm32-wasip1/release/rate_limit_filter.wasm" \
  --out "$target/load-bench" \
  "$@" &
bench_pid=$!
status=0
wait "$bench_pid" || status=$?
bench_pid=
log "load benchmark finished in $(( $(date +%s) - start )) s (exit $status); report: $target/load-bench/report.md"
exit "$status"
