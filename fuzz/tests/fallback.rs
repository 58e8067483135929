//! The fallback when nightly or cargo-fuzz is missing: the fuzz targets' own checks
//! (`rl_fuzz::check`), fed by proptest instead of libFuzzer, for a time budget per target.
//!
//! Inputs are arbitrary bytes, or a corpus file (`fuzz/corpus/<target>/`) with random byte
//! edits, which reaches much deeper than random bytes alone. Every corpus file is also
//! replayed as it is.
//!
//! `FUZZ_SECONDS` (default 2) is the budget per target; `scripts/fuzz.sh` sets it.
//!
//! ```sh
//! FUZZ_SECONDS=60 cargo test --release --manifest-path fuzz/Cargo.toml --no-default-features
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use rl_fuzz::{TARGETS, check};

/// The corpus files of `target`: (file name, content), by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|entry| {
                    let path = entry.ok()?.path();
                    let name = path.file_name()?.to_string_lossy().into_owned();
                    Some((name, std::fs::read(&path).ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A byte edit: (position, byte, kind) with kind 0 replace, 1 insert, 2 delete, 3 duplicate a
/// stretch (grows the input the way libFuzzer's CopyPart does).
type Edit = (u16, u8, u8);

fn mutate(mut data: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for &(pos, byte, kind) in edits {
        let at = usize::from(pos) % (data.len() + 1);
        match kind % 4 {
            0 if at < data.len() => data[at] = byte,
            1 | 0 => data.insert(at, byte),
            2 if at < data.len() => {
                data.remove(at);
            }
            _ => {
                let len = usize::from(byte).min(data.len() - at);
                let stretch = data[at..at + len].to_vec();
                data.splice(at..at, stretch);
            }
        }
    }
    data
}

fn inputs(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let random = prop::collection::vec(any::<u8>(), 0..1024);
    if seeds.is_empty() {
        return random.boxed();
    }
    let mutated = (
        prop::sample::select(seeds),
        prop::collection::vec(any::<Edit>(), 0..12),
    )
        .prop_map(|(seed, edits)| mutate(seed, &edits));
    prop_oneof![1 => random, 3 => mutated].boxed()
}

fn budget() -> Duration {
    let secs = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

thread_local! {
    /// Set while a check runs: its panics are recorded here instead of printed.
    static IN_CHECK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The last panic of a check on this thread (location and message).
    static LAST_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Runs the check, returning its panic as text instead of printing it: shrinking runs a
/// failing check hundreds of times.
fn run_check(target: &str, data: &[u8]) -> Result<(), String> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_CHECK.get() {
                LAST_PANIC.with(|last| *last.borrow_mut() = info.to_string());
            } else {
                default(info);
            }
        }))
    });
    IN_CHECK.set(true);
    let result = std::panic::catch_unwind(|| check(target, data));
    IN_CHECK.set(false);
    result.map_err(|_| LAST_PANIC.with(|last| last.borrow().clone()))
}

/// At most 2,000 characters of a message (a panic can quote a 16 KiB value).
fn shorten(text: &str) -> String {
    match text.char_indices().nth(2000) {
        Some((cut, _)) => format!("{}… ({} bytes in all)", &text[..cut], text.len()),
        None => text.to_string(),
    }
}

fn fuzz(target: &str) {
    let seeds = corpus(target);
    for (name, seed) in &seeds {
        if let Err(panic) = run_check(target, seed) {
            panic!("fuzz/corpus/{target}/{name} fails: {}", shorten(&panic));
        }
    }
    let strategy = inputs(seeds.into_iter().map(|(_, data)| data).collect());
    let deadline = Instant::now() + budget();
    let mut cases = 0u64;
    loop {
        let mut runner = TestRunner::new(Config {
            cases: 64,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&strategy, |input| {
            run_check(target, &input).map_err(TestCaseError::fail)
        });
        cases += 64;
        if let Err(TestError::Fail(reason, input)) = result {
            panic!(
                "{target}: {}\nminimal input ({} bytes): b\"{}\"",
                shorten(&reason.to_string()),
                input.len(),
                shorten(&input.escape_ascii().to_string())
            );
        }
        result.unwrap();
        if Instant::now() >= deadline {
            break;
        }
    }
    eprintln!("{target}: {cases} proptest cases and the corpus, no failure");
}

#[test]
fn every_target_is_tested() {
    assert_eq!(TARGETS.len(), 7);
}

#[test]
fn filter_evidence() {
    fuzz("filter_evidence");
}

#[test]
fn filter_response() {
    fuzz("filter_response");
}

#[test]
fn filter_config() {
    fuzz("filter_config");
}

#[test]
fn path_rules() {
    fuzz("path_rules");
}

#[test]
fn decision() {
    fuzz("decision");
}

#[test]
fn config_yaml() {
    fuzz("config_yaml");
}

#[test]
fn config_json() {
    fuzz("config_json");
}
