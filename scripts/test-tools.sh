#!/usr/bin/env bash
# The test suite's own tools, pinned: cargo-nextest (runs every test), cargo-llvm-cov with
# LLVM's coverage tools (the coverage floor), cargo-fuzz with a C++ compiler (libFuzzer).
# Sourced by test.sh after setup.sh. Any tool that cannot be installed stops the run: CI must
# not go green without measuring.
set -euo pipefail

NEXTEST_VERSION=0.9.143
LLVM_COV_VERSION=0.9.1
CARGO_FUZZ_VERSION=0.13.2

# cargo_pinned CRATE VERSION VERSION_COMMAND...: installs the crate at that version unless the
# command already reports it.
cargo_pinned() {
  local crate=$1 version=$2
  shift 2
  if ! "$@" 2>/dev/null | grep -qwF "$version"; then
    log "installing $crate $version (crates.io)"
    cargo install --locked --quiet "$crate" --version "$version"
  fi
  "$@" 2>/dev/null | grep -qwF "$version" || {
    echo "$crate $version is not usable after installing it" >&2
    exit 1
  }
}

cargo_pinned cargo-nextest "$NEXTEST_VERSION" cargo nextest --version
cargo_pinned cargo-llvm-cov "$LLVM_COV_VERSION" cargo llvm-cov --version
cargo_pinned cargo-fuzz "$CARGO_FUZZ_VERSION" cargo fuzz --version

# libFuzzer (built by cargo-fuzz) is C++.
if ! command -v c++ >/dev/null 2>&1; then
  log "installing a C++ compiler (apt) for libFuzzer"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi

# LLVM's llvm-cov and llvm-profdata must match the LLVM that rustc instruments with: rustup's
# llvm-tools component, or else the distribution's LLVM of the same major version.
if ! rustup component list --installed 2>/dev/null | grep -q '^llvm-tools'; then
  log "adding rustup's llvm-tools component"
  rustup component add llvm-tools-preview ||
    log "rustup cannot add llvm-tools here: looking for the distribution's LLVM"
fi
if ! rustup component list --installed 2>/dev/null | grep -q '^llvm-tools'; then
  major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
  llvm_bin=/usr/lib/llvm-$major/bin
  if [ ! -x "$llvm_bin/llvm-cov" ]; then
    log "installing llvm-$major (apt) for coverage"
    as_root apt-get update -qq || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "llvm-$major" >/dev/null || true
  fi
  if [ ! -x "$llvm_bin/llvm-cov" ] || [ ! -x "$llvm_bin/llvm-profdata" ]; then
    echo "coverage cannot be measured: neither rustup's llvm-tools nor llvm-$major" \
      "(the LLVM of rustc $(rustc -V | awk '{print $2}')) can be installed" >&2
    exit 1
  fi
  export LLVM_COV="$llvm_bin/llvm-cov" LLVM_PROFDATA="$llvm_bin/llvm-profdata"
  log "coverage uses $LLVM_COV"
fi
