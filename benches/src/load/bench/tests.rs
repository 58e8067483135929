use super::*;

use crate::configs::{Programs, table};

fn options() -> Options {
    crate::parse_options(["--envoy", "/e", "--redis-server", "/r"].map(String::from))
        .unwrap()
        .unwrap()
}

fn variant(name: &str) -> Variant {
    table(&Programs {
        control_plane: PathBuf::from("/cp"),
        wasm: PathBuf::from("/f.wasm"),
        envoy_concurrency: 2,
    })
    .into_iter()
    .find(|v| v.name == name)
    .unwrap()
}

fn spec(phase: Phase, connections: u32) -> RunSpec {
    RunSpec {
        phase,
        connections,
        rate_share: None,
    }
}

#[test]
fn the_runs_of_a_start() {
    let opts = options();
    let four: Vec<RunSpec> = runs(&opts, &variant("4"));
    let fixed = |share| RunSpec {
        phase: Phase::Fixed,
        connections: 100,
        rate_share: Some(share),
    };
    assert_eq!(
        four,
        [
            spec(Phase::A, 100),
            spec(Phase::A, 1000),
            spec(Phase::B, 1000),
            spec(Phase::C, 100),
            spec(Phase::C, 1000),
            fixed(0.1),
            fixed(0.25),
        ]
    );
    // Configuration 2 runs phase a only; the floor phase a and the fixed rates.
    assert_eq!(
        runs(&opts, &variant("2")),
        [spec(Phase::A, 100), spec(Phase::A, 1000)]
    );
    assert_eq!(runs(&opts, &variant("w")).len(), 4);
    // --phases narrows every configuration.
    let mut opts = opts;
    opts.phases = vec![Phase::B];
    opts.conns = vec![50, 200];
    assert_eq!(runs(&opts, &variant("1")), [spec(Phase::B, 200)]);
    assert!(runs(&opts, &variant("2")).is_empty());
}

fn record(variant: &str, phase: Phase, connections: u32, rps: f64) -> RunRecord {
    RunRecord {
        variant: variant.into(),
        phase,
        connections,
        load: LoadResult {
            rps,
            ..LoadResult::default()
        },
        ..RunRecord::default()
    }
}

#[test]
fn limits_are_sized_from_the_closest_earlier_runs() {
    let records = vec![
        record("4", Phase::A, 100, 8_000.0),
        record("4", Phase::A, 100, 10_000.0),
        record("4", Phase::A, 1000, 9_000.0),
        record("3", Phase::A, 1000, 50_000.0),
        record("4", Phase::C, 1000, 70_000.0),
    ];
    // Same phase and connections: their median.
    assert_eq!(
        predict_rps(&records, "4", spec(Phase::A, 100), 1.0),
        9_000.0
    );
    // Phase b at 1,000 connections: the closed-loop runs at 1,000 (not phase c's).
    assert_eq!(
        predict_rps(&records, "4", spec(Phase::B, 1000), 1.0),
        9_000.0
    );
    // No run at these connections: any closed-loop run of this configuration.
    assert_eq!(
        predict_rps(&records, "4", spec(Phase::B, 500), 1.0),
        9_000.0
    );
    // Nothing yet: the warm-up's rate.
    assert_eq!(
        predict_rps(&records, "w", spec(Phase::A, 100), 12_345.0),
        12_345.0
    );
}
