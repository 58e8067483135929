#!/usr/bin/env bash
# The load benchmark (docs/BENCHMARKS.md); not part of CI. In one run: installs what is
# missing (Envoy, redis-server, wrk via setup.sh), builds the release control plane, demo
# upstream, filter .wasm and open-loop generator, then starts each configuration
# (benches/src/load/configs.rs: Envoy passthrough, Envoy's local_ratelimit, our filter +
# control plane in memory and on Redis (exact and slotted counters), Envoy's native
# rate-limit filter + our control plane over gRPC, our filter without a callout) three times,
# interleaved, drives the same traffic through each, and writes
#   target/load-bench/report.md      the report: verdicts, medians and spreads, memory
#   target/load-bench/results.json   every run, the summaries, the verdicts, the commit
#   target/load-bench/logs/          generated configs, key files, generator output, logs
# About 35 minutes with the defaults, on an otherwise idle machine (compare ratios within
# one run, not across runs). To publish a full run, commit the measured tree first, run,
# then copy report.md and results.json to docs/benchmarks/ in a commit of their own.
#
# Everything listens on 127.0.0.1 on free ports; every process started is stopped at the
# end (or when this script is interrupted). Options go to the orchestrator, e.g.
#   bash scripts/load-bench.sh --duration 3 --warmup 1 --repeats 1 --configs 1,4 --conns 100
#   bash scripts/load-bench.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
source scripts/setup.sh

log "building the control plane, the demo upstream, the open-loop generator and the filter (release)"
cargo build --locked --release -p control-plane -p demo-upstream -p rl-open-loop
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

log "running the load benchmark (about 35 minutes with the defaults)"
"$target/debug/load_bench" \
  --envoy "$ENVOY_BIN" \
  --control-plane "$target/release/control-plane" \
  --upstream "$target/release/demo-upstream" \
  --open-loop "$target/release/open_loop" \
  --wasm "$target/wasm32-wasip1/release/rate_limit_filter.wasm" \
  --out "$target/load-bench" \
  "$@" &
bench_pid=$!
status=0
wait "$bench_pid" || status=$?
bench_pid=
log "load benchmark finished in $(( $(date +%s) - start )) s (exit $status); report: $target/load-bench/report.md"
exit "$status"
