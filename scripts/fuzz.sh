#!/usr/bin/env bash
# Fuzzing (hostile input): runs every cargo-fuzz target in fuzz/ for a bounded time on the
# in-repo corpus and fails if any target crashes. Without cargo-fuzz it runs the same checks
# under proptest instead (fuzz/tests/fallback.rs) and says so.
#
#   bash scripts/fuzz.sh                          # every target, FUZZ_SECONDS (60) each
#   FUZZ_SECONDS=300 bash scripts/fuzz.sh decision config_yaml
#   bash scripts/fuzz.sh --cmin [TARGET...]       # fold new finds into fuzz/corpus, minimised
#
# Environment:
#   FUZZ_SECONDS     time per target (default 60; 0 means no fuzzing at all)
#   FUZZ_SANITIZER   cargo-fuzz sanitizer: none (default: the code under test is safe Rust,
#                    so ASan buys little and costs executions) or address
#   FUZZ_FALLBACK=1  force the proptest fallback
#   FUZZ_REQUIRE=1   fail instead of falling back when cargo-fuzz cannot run (test.sh, CI)
#   FUZZ_VERBOSE=1   keep libFuzzer's per-input progress lines
#
# New inputs found by a run go to fuzz/target/new-corpus/<target>/ (not into the repository);
# crashes to fuzz/artifacts/<target>/. `--cmin` merges them into fuzz/corpus/<target>/: it keeps
# the seed-* and regression-* files and adds, over all targets, the inputs that add the most
# coverage, up to 200 files in the repository (fuzz/select_corpus.py, needs python3).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

all_targets=(filter_evidence filter_response filter_config path_rules decision config_yaml config_json)
declare -A dict=(
  [filter_evidence]=evidence [filter_response]=response [filter_config]=response
  [path_rules]=path [decision]=decision [config_yaml]=config [config_json]=config
)
declare -A max_len=(
  [filter_evidence]=20000 [filter_response]=20000 [filter_config]=4096 [path_rules]=4096
  [decision]=40000 [config_yaml]=16384 [config_json]=16384
)
# The repository keeps at most this many corpus files in total (seeds included).
corpus_cap=200

mode=run
if [ "${1:-}" = "--cmin" ]; then
  mode=cmin
  shift
fi
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [ -n "${dict[$t]:-}" ] || { echo "unknown fuzz target: $t (known: ${all_targets[*]})" >&2; exit 2; }
done

seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-none}
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "FUZZ_SECONDS must be a whole number of seconds, got $seconds" >&2; exit 2; }

if [ "$mode" = run ] && [ "$seconds" = 0 ]; then
  log "FUZZ_SECONDS=0: no fuzzing"
  exit 0
fi

# cargo-fuzz passes unstable rustc flags: the pinned toolchain (rust-toolchain.toml) accepts
# them with RUSTC_BOOTSTRAP=1, so fuzzing needs no second toolchain and builds with the same
# compiler as everything else.
export RUSTC_BOOTSTRAP=1
fuzz() { cargo fuzz "$@"; }

have_cargo_fuzz() {
  [ "${FUZZ_FALLBACK:-0}" != 1 ] && fuzz --version >/dev/null 2>&1
}

libfuzzer_args() {
  local t=$1
  printf '%s\n' "-dict=$root/fuzz/dicts/${dict[$t]}.dict" "-max_len=${max_len[$t]}" \
    -timeout=10 -rss_limit_mb=2048
}

if ! have_cargo_fuzz; then
  if [ "${FUZZ_REQUIRE:-0}" = 1 ]; then
    echo "cargo-fuzz cannot run (install it: cargo install cargo-fuzz --locked); FUZZ_REQUIRE=1" >&2
    exit 1
  fi
  if [ "$mode" = cmin ]; then
    echo "--cmin needs cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    exit 1
  fi
  if [ "${FUZZ_FALLBACK:-0}" = 1 ]; then why="FUZZ_FALLBACK=1"; else
    why="cargo-fuzz missing (cargo install cargo-fuzz --locked)"; fi
  log "$why: running the proptest fallback instead of libFuzzer" \
    "(fuzz/tests/fallback.rs, ${seconds} s per target)"
  # Release speed with the checks cargo-fuzz also keeps: debug assertions, overflow checks.
  FUZZ_SECONDS=$seconds \
    CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true \
    cargo test --release --manifest-path fuzz/Cargo.toml --no-default-features \
    --test fallback -- --nocapture "${targets[@]}"
  log "proptest fallback: no failure"
  exit 0
fi

log "building the fuzz targets (fuzz build, sanitizer: $sanitizer)"
fuzz build -s "$sanitizer"

if [ "$mode" = cmin ]; then
  command -v python3 >/dev/null || { echo "--cmin needs python3" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  controls=()
  budget=$corpus_cap
  for t in "${all_targets[@]}"; do
    if [[ " ${targets[*]} " != *" $t "* ]]; then
      budget=$((budget - $(ls "$root/fuzz/corpus/$t" 2>/dev/null | wc -l)))
    fi
  done
  for t in "${targets[@]}"; do
    corpus=$root/fuzz/corpus/$t
    found=$root/fuzz/target/new-corpus/$t
    mkdir -p "$corpus" "$found" "$work/$t/out" "$work/$t/in"
    cp "$corpus"/* "$work/$t/in"/ 2>/dev/null || true
    cp -n "$found"/* "$work/$t/in"/ 2>/dev/null || true
    log "cmin $t: $(ls "$corpus" | wc -l) in the corpus, $(ls "$found" | wc -l) found"
    mapfile -t extra < <(libfuzzer_args "$t")
    # Runs every input once and records all the coverage features it reaches (crashing
    # inputs, such as open regression-* files, are survived).
    fuzz run -s "$sanitizer" "$t" "$work/$t/out" "$work/$t/in" -- \
      -set_cover_merge=1 -merge_control_file="$work/$t/control" "${extra[@]}" \
      >"$work/$t/merge.log" 2>&1 || true
    [ -s "$work/$t/control" ] || { cat "$work/$t/merge.log" >&2; exit 1; }
    controls+=("$t=$work/$t/control")
  done
  # Seeds and regression inputs stay; the rest of the budget goes to the inputs that add the
  # most coverage, over all targets.
  python3 fuzz/select_corpus.py "$budget" "${controls[@]}" >"$work/keep"
  for t in "${targets[@]}"; do
    rm -rf "$root/fuzz/corpus/$t"
    mkdir -p "$root/fuzz/corpus/$t"
  done
  while IFS=$'\t' read -r t f; do
    case $(basename "$f") in
      seed-* | regression-*) cp "$f" "$root/fuzz/corpus/$t/" ;;
      *) cp "$f" "$root/fuzz/corpus/$t/$(sha1sum "$f" | cut -c1-40)" ;;
    esac
  done <"$work/keep"
  for t in "${targets[@]}"; do
    log "cmin $t: $(ls "$root/fuzz/corpus/$t" | wc -l) files kept"
  done
  log "corpus: $(find "$root/fuzz/corpus" -type f | wc -l) files in total (cap $corpus_cap)"
  exit 0
fi

failed=()
for t in "${targets[@]}"; do
  found=$root/fuzz/target/new-corpus/$t
  artifacts=$root/fuzz/artifacts/$t
  mkdir -p "$found" "$artifacts"
  mapfile -t extra < <(libfuzzer_args "$t")
  log "fuzzing $t for ${seconds} s"
  # The first corpus directory receives new inputs; the repository's corpus is only read.
  # libFuzzer's per-input progress lines are dropped (FUZZ_VERBOSE=1 keeps them), and long
  # lines (a crashing input's bytes) are cut.
  set +e
  fuzz run -s "$sanitizer" "$t" "$found" "$root/fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$artifacts/" \
    "${extra[@]}" 2>&1 |
    if [ "${FUZZ_VERBOSE:-0}" = 1 ]; then cat; else
      grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)' | cut -c1-2000
    fi
  status=${PIPESTATUS[0]}
  set -e
  [ "$status" -eq 0 ] || failed+=("$t")
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]} (inputs in fuzz/artifacts/<target>/;" \
    "reproduce with: fuzz run <target> <file>)" >&2
  exit 1
fi
log "fuzzing: no crash in ${targets[*]}"
