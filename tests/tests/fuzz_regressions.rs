//! The control-plane fuzz targets (`fuzz/`) inside the normal test suite: their corpus
//! replayed, a short proptest run of the same checks, and inputs the fuzzers found.
//!
//! The checks are the fuzz crate's own (`fuzz/src/control_plane.rs`, compiled here with
//! `#[path]`), so a property changed there is changed here. The decision check goes through
//! the handler's steps and `Decider::decide` directly; the fuzz target also goes through the
//! HTTP router. The filter's targets (`filter_evidence`, `filter_response`, `filter_config`)
//! need the `rate-limit-filter` crate, which this package does not depend on:
//! `scripts/fuzz.sh` runs them (libFuzzer, or proptest in `fuzz/tests/fallback.rs`).

#[allow(dead_code)]
#[path = "../../fuzz/src/input.rs"]
mod input;

#[allow(dead_code)]
#[path = "../../fuzz/src/control_plane.rs"]
mod control_plane;

use std::path::PathBuf;

use control_plane::DirectEndpoint;
use proptest::prelude::*;
use proptest::test_runner::Config;

const TARGETS: [&str; 4] = ["path_rules", "decision", "config_yaml", "config_json"];

fn check(target: &str, data: &[u8]) {
    match target {
        "path_rules" => control_plane::check_path_rules(data),
        "decision" => {
            control_plane::check_decision(data, |decider| DirectEndpoint { decider });
        }
        "config_yaml" => control_plane::check_config_yaml(data),
        "config_json" => control_plane::check_config_json(data),
        other => panic!("unknown target {other:?}"),
    }
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_string_lossy().into_owned();
            Some((name, std::fs::read(&path).ok()?))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_files_pass_their_checks() {
    for target in TARGETS {
        let files = corpus(target);
        assert!(!files.is_empty(), "no corpus for {target}");
        for (name, data) in files {
            let result = std::panic::catch_unwind(|| check(target, &data));
            assert!(
                result.is_ok(),
                "fuzz/corpus/{target}/{name} fails (message above)"
            );
        }
    }
}

/// A corpus file with random byte edits (replace, insert, delete).
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, d)| d).collect();
    (
        prop::sample::select(seeds),
        prop::collection::vec((any::<u16>(), any::<u8>(), 0..3u8), 0..8),
    )
        .prop_map(|(mut data, edits)| {
            for (pos, byte, kind) in edits {
                let at = usize::from(pos) % (data.len() + 1);
                match kind {
                    0 if at < data.len() => data[at] = byte,
                    2 if at < data.len() => {
                        data.remove(at);
                    }
                    _ => data.insert(at, byte),
                }
            }
            data
        })
}

fn inputs(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..512), mutated(target)]
}

proptest! {
    #![proptest_config(Config { cases: 64, failure_persistence: None, ..Config::default() })]

    #[test]
    fn path_rules(data in inputs("path_rules")) {
        check("path_rules", &data);
    }

    #[test]
    fn decision(data in inputs("decision")) {
        check("decision", &data);
    }

    #[test]
    fn config_yaml(data in inputs("config_yaml")) {
        check("config_yaml", &data);
    }

    #[test]
    fn config_json(data in inputs("config_json")) {
        check("config_json", &data);
    }
}

// -------------------------------------------------------------------------------------------
// Findings: each test holds a minimised input that once failed; they stay as regressions.

/// The filter reads at most this much of a decision answer
/// (`rate_limit_filter::response::MAX_DECISION_RESPONSE_BYTES`) and applies its `fail_open`
/// to anything larger.
const FILTER_MAX_ANSWER_BYTES: usize = rate_limit_filter::response::MAX_DECISION_RESPONSE_BYTES;
/// The filter cuts the path to this many bytes.
const FILTER_MAX_PATH_BYTES: usize = rate_limit_filter::evidence::MAX_PATH_BYTES;

/// Found by `decision` (`fuzz/corpus/decision/regression-control-char-path`): the answer
/// echoes the normalised path as `endpoint`, JSON escaping turns each control character into
/// six bytes, so a path the filter does send (2,723 bytes, a 16,379-byte request) gets an
/// answer of more than 16 KiB, which the filter refuses: the request then bypasses the limit
/// with `fail_open: true` (or gets a 503 with `fail_open: false`) although the control plane
/// counted or denied it. Fixed: the control plane echoes at most 256 bytes of the path and the
/// filter reads answers up to 32 KiB (room for a whole escaped 4 KiB path).
#[test]
fn answers_to_filter_sized_paths_fit_the_filter_read_limit() {
    // The longest such path whose request still fits: the filter sends it as it is.
    let request_for = |n: usize| {
        let path = format!("/{}", "\u{1}".repeat(n));
        let body = serde_json::json!({"ip": "198.51.100.1", "method": "GET", "path": path});
        serde_json::to_vec(&body).unwrap()
    };
    let n = (1..FILTER_MAX_PATH_BYTES)
        .take_while(|&n| request_for(n).len() <= rl_wire::MAX_DECISION_REQUEST_BYTES)
        .last()
        .unwrap();
    let request = request_for(n);
    // Six times: allow, then (the budget of 5 spent) deny, whose answer carries more fields.
    let mut input = Vec::new();
    for _ in 0..6 {
        input.push(0u8);
        input.extend_from_slice(&request);
        input.push(control_plane::RECORD_SEPARATOR);
    }
    let exchanges = control_plane::check_decision(&input, |decider| DirectEndpoint { decider });
    for exchange in exchanges {
        assert_eq!(exchange.status, 200);
        assert!(
            exchange.body.len() <= FILTER_MAX_ANSWER_BYTES,
            "answer of {} bytes to a {}-byte request",
            exchange.body.len(),
            request.len()
        );
    }
}
