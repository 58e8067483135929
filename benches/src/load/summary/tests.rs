use super::*;

use crate::tools::LoadResult;

fn run(variant: &str, repeat: u32, phase: Phase, rps: f64, p95: f64) -> RunRecord {
    RunRecord {
        variant: variant.into(),
        repeat,
        phase,
        connections: 100,
        load: LoadResult {
            rps,
            p95_ms: p95,
            ..LoadResult::default()
        },
        ..RunRecord::default()
    }
}

#[test]
fn median_and_range() {
    let s = spread([3.0, 1.0, 2.0]).unwrap();
    assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
    assert_eq!(spread([4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
    assert_eq!(spread([f64::NAN, 5.0]).unwrap().n, 1);
    assert!(spread(Vec::<f64>::new()).is_none());
    assert_eq!(median(vec![7.0]), Some(7.0));
}

#[test]
fn repeats_of_a_configuration_form_one_cell_and_each_counts() {
    // Interleaved: 1, 4, 1, 4, 1, 4. Each start of a configuration is its own figure.
    let records = vec![
        run("1", 1, Phase::A, 20_000.0, 8.0),
        run("4", 1, Phase::A, 9_000.0, 17.0),
        run("1", 2, Phase::A, 21_000.0, 9.0),
        run("4", 2, Phase::A, 12_000.0, 15.0),
        run("1", 3, Phase::A, 19_000.0, 8.5),
        run("4", 3, Phase::A, 10_000.0, 16.0),
        run("4", 3, Phase::B, 11_000.0, 14.0),
    ];
    let cells = Cells::new(&records);
    assert_eq!(cells.iter().count(), 3);
    let four = cells.get("4", Phase::A, 100, None).unwrap();
    assert_eq!(four.runs.len(), 3);
    let rps = four.rps().unwrap();
    assert_eq!(
        (rps.median, rps.min, rps.max),
        (10_000.0, 9_000.0, 12_000.0)
    );
    assert_eq!(four.repeat(2).unwrap().load.rps, 12_000.0);
    let base = cells.passthrough(four).unwrap();
    assert_eq!(base.key.variant, "1");

    let r = ratio(four, base, |r| Some(r.load.rps)).unwrap();
    assert_eq!(r.of_medians, 0.5);
    let paired = r.paired.unwrap();
    assert_eq!(paired.n, 3);
    assert!((paired.min - 0.45).abs() < 1e-9 && (paired.max - 12.0 / 21.0).abs() < 1e-9);

    let d = difference(four, base, |r| Some(r.load.p95_ms)).unwrap();
    assert_eq!(d.of_medians, 16.0 - 8.5);
    assert_eq!(d.paired.unwrap().max, 9.0);
    assert!(cells.get("4", Phase::B, 100, None).is_some());
    assert!(cells.get("4", Phase::C, 100, None).is_none());

    let summaries = summaries(&cells);
    let s = summaries
        .iter()
        .find(|s| s.key.variant == "4" && s.key.phase == Phase::A)
        .unwrap();
    assert_eq!(s.runs, 3);
    assert_eq!(s.rps_vs_passthrough.unwrap().of_medians, 0.5);
    assert!(
        summaries
            .iter()
            .find(|s| s.key.variant == "1")
            .unwrap()
            .rps_vs_passthrough
            .is_none()
    );
}
