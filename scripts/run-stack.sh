#!/usr/bin/env bash
# Runs the whole stack locally, without Docker: Redis (AOF on), the control plane, the demo
# upstream and Envoy with the rate-limit filter; then shows rate limiting at work and waits.
# Ctrl-C stops everything this script started.
#
# Ports: Envoy :10000 (admin :9901), control plane :8080, demo upstream :8081, Redis :6379.
# RATE_LIMIT_REDIS_URL=redis://host:port  use that Redis instead of starting one
# RATE_LIMIT_REDIS_URL=memory             no Redis: the in-memory store
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

log "building the control plane, the demo upstream and the filter (release)"
# envoy/envoy.yaml loads the filter from ./target, so the builds go there whatever
# CARGO_TARGET_DIR says.
export CARGO_TARGET_DIR="$PWD/target"
cargo build --locked --release -p control-plane -p demo-upstream
cargo build --locked --release -p rate-limit-filter --target wasm32-wasip1

run=.run
mkdir -p "$run"
pids=()
cleanup() {
  trap - EXIT INT TERM
  if [ "${#pids[@]}" -gt 0 ]; then
    log "stopping the stack"
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 10000 9901 8080 8081; do
  if port_busy "$port"; then
    echo "port $port is already in use: stop what listens there (an earlier run-stack?)" >&2
    exit 1
  fi
done

redis_url=${RATE_LIMIT_REDIS_URL:-}
if [ -z "$redis_url" ]; then
  if command -v redis-server >/dev/null 2>&1; then
    if port_busy 6379; then
      echo "a Redis (or something else) already listens on :6379; reuse it with" >&2
      echo "RATE_LIMIT_REDIS_URL=redis://127.0.0.1:6379/0 $0" >&2
      exit 1
    fi
    log "starting Redis on :6379 (AOF, appendfsync everysec; data in $run/)"
    redis-server --port 6379 --bind 127.0.0.1 --dir "$run" --appendonly yes \
      --appendfsync everysec --save "" --loglevel warning >"$run/redis.log" 2>&1 &
    pids+=($!)
    redis_url=redis://127.0.0.1:6379/0
  else
    redis_url=memory
  fi
fi
if [ "$redis_url" = memory ]; then
  log "no Redis: counters are kept in the control plane's memory"
  unset RATE_LIMIT_REDIS_URL
else
  export RATE_LIMIT_REDIS_URL=$redis_url
fi

# The admin API needs a key; a demo one unless you bring your own. The demo key and the
# sample's secrets are public: the control plane names them in warnings (RATE_LIMIT_STRICT=1
# would refuse them; docs/OPERATIONS.md, "Demo secrets and strict mode").
export RATE_LIMIT_ADMIN_API_KEY=${RATE_LIMIT_ADMIN_API_KEY:-demo-admin-key-change-me}

log "starting the control plane on :8080 (log: $run/control-plane.log)"
RATE_LIMIT_LISTEN=127.0.0.1:8080 RATE_LIMIT_CONFIG_PATH=rate_limit_config.yaml \
  ./target/release/control-plane >"$run/control-plane.log" 2>&1 &
pids+=($!)

log "starting the demo upstream on :8081"
./target/release/demo-upstream 127.0.0.1:8081 >"$run/demo-upstream.log" 2>&1 &
pids+=($!)

log "starting Envoy on :10000 (admin :9901, log: $run/envoy.log)"
"$ENVOY_BIN" -c envoy/envoy.yaml --log-level warning >"$run/envoy.log" 2>&1 &
pids+=($!)

wait_for() {
  local what=$1 url=$2
  for _ in $(seq 1 200); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$what did not come up ($url); see $run/*.log" >&2
  exit 1
}
wait_for "control plane" http://127.0.0.1:8080/readyz
wait_for "Envoy" http://127.0.0.1:9901/ready

# The demo client connects from 127.0.0.2 so your own curls from 127.0.0.1 start fresh.
demo() { curl -s --interface 127.0.0.2 "$@"; }
log "demo: 101 requests to /api/v1/health as one anonymous client (free tier: 100/min)"
codes=$(for _ in $(seq 1 101); do
  demo -o /dev/null -w '%{http_code}\n' http://127.0.0.1:10000/api/v1/health
done | sort | uniq -c | tr '\n' ' ')
echo "status codes: $codes"
echo "the 101st-and-later response:"
demo -i http://127.0.0.1:10000/api/v1/health | sed 's/^/    /'
echo

cat <<TXT
The stack is running (store: ${RATE_LIMIT_REDIS_URL:-memory}). Try:

  curl -i http://127.0.0.1:10000/api/v1/request                       # free tier, by IP
  curl -i -H 'X-API-Key: demo-premium-key-0001' http://127.0.0.1:10000/api/v1/request
  curl -i http://127.0.0.1:10000/api/v1/error                         # upstream 500, headers still there
  curl -s http://127.0.0.1:8080/api/v1/rate-limit/metrics
  curl -s -H 'X-API-Key: $RATE_LIMIT_ADMIN_API_KEY' http://127.0.0.1:8080/api/v1/rate-limit/status/ip:127.0.0.2
  curl -s http://127.0.0.1:9901/stats | grep rate_limit_filter

Configuration: rate_limit_config.yaml. Logs: $run/. Ctrl-C stops everything.
TXT

if [ "${RUN_STACK_DEMO_ONLY:-}" = 1 ]; then exit 0; fi
wait
