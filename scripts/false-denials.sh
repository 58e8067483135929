#!/usr/bin/env bash
# Slotted counters' false-denial rate against the exact rule (docs/CONFIGURATION.md): Poisson
# traffic at 50–300 % of the limit through the control plane's in-memory store on a manual
# clock. Deterministic for its seeds; about a minute. Writes docs/benchmarks/false-denials.md
# and false-denials.json; commit them with the code they measured. Options go to the program
# (`--windows N`, `--seeds N`, `--out DIR`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release -p rl-benches --bin false_denials
exec target/release/false_denials --out docs/benchmarks "$@"
