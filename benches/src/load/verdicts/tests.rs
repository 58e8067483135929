//! Every verdict fed passing data, then data that must fail it (or leave it unchecked).

use std::path::PathBuf;

use super::*;
use crate::configs::{Programs, table};
use crate::record::{AbuseStart, IdentityCheck, RunRecord, SampleCount};
use crate::tools::{AbuseCounts, LoadResult};

const CEILING: f64 = 20_000.0;

fn variants() -> Vec<Variant> {
    table(&Programs {
        control_plane: PathBuf::from("/cp"),
        wasm: PathBuf::from("/f.wasm"),
        envoy_concurrency: 2,
    })
}

fn run(variant: &str, repeat: u32, phase: Phase, connections: u32) -> RunRecord {
    RunRecord {
        variant: variant.into(),
        repeat,
        phase,
        connections,
        load: LoadResult {
            requests: 100_000,
            ..LoadResult::default()
        },
        ..RunRecord::default()
    }
}

pub(super) fn judge(records: &[RunRecord], check: Check) -> Vec<Verdict> {
    let variants = variants();
    let cells = Cells::new(records);
    check(&Evidence {
        variants: &variants,
        cells: &cells,
        conns: &[100, 1000],
        rates: &[0.1, 0.25],
        rate_conns: 100,
        ceiling: CEILING,
    })
}

/// The one verdict about configuration `config`.
fn only<'a>(verdicts: &'a [Verdict], config: &str) -> &'a Verdict {
    let mine: Vec<&Verdict> = verdicts.iter().filter(|v| v.config == config).collect();
    assert_eq!(mine.len(), 1, "{verdicts:#?}");
    mine[0]
}

fn assert_status(v: &Verdict, status: Status, reason: &str) {
    assert_eq!(v.status, status, "{v:#?}");
    assert!(
        v.reasons.iter().any(|r| r.contains(reason)),
        "no reason containing {reason:?}: {v:#?}"
    );
}

#[test]
fn every_check_is_in_the_list() {
    assert_eq!(CHECKS.len(), 7);
    assert!(
        all(&Evidence {
            variants: &variants(),
            cells: &Cells::default(),
            conns: &[100],
            rates: &[0.1],
            rate_conns: 100,
            ceiling: CEILING,
        })
        .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// Throughput

/// Phase a at 100 connections: configuration 1 and 4 with these rates, start by start.
fn throughput_runs(passthrough: &[f64], redis: &[f64]) -> Vec<RunRecord> {
    let mut records = Vec::new();
    for (i, (&p, &r)) in passthrough.iter().zip(redis).enumerate() {
        let mut a = run("1", i as u32 + 1, Phase::A, 100);
        a.load.rps = p;
        let mut b = run("4", i as u32 + 1, Phase::A, 100);
        b.load.rps = r;
        records.extend([a, b]);
    }
    records
}

#[test]
fn throughput_passes_on_the_ratio_of_medians() {
    // Medians 20,000 and 10,000: 0.5, whatever the first start said.
    let records = throughput_runs(
        &[20_000.0, 19_000.0, 21_000.0],
        &[7_000.0, 10_000.0, 11_000.0],
    );
    let verdicts = judge(&records, throughput);
    let v = only(&verdicts, "4");
    assert_eq!(v.status, Status::Pass, "{v:#?}");
    assert!(v.measured.starts_with("0.50 ×"), "{}", v.measured);
    assert!(
        v.measured.contains("0.35–0.53"),
        "paired ratios: {}",
        v.measured
    );
    assert!(!v.measured.contains("stretch met"));

    let records = throughput_runs(&[20_000.0], &[13_000.0]);
    assert!(
        only(&judge(&records, throughput), "4")
            .measured
            .contains("stretch met")
    );
}

#[test]
fn throughput_fails_below_the_target() {
    let records = throughput_runs(
        &[20_000.0, 20_000.0, 20_000.0],
        &[8_000.0, 8_500.0, 12_000.0],
    );
    assert_status(
        only(&judge(&records, throughput), "4"),
        Status::Fail,
        "0.42 × is below 0.45",
    );
}

#[test]
fn throughput_fails_on_more_errors_than_passthrough() {
    let mut records = throughput_runs(&[20_000.0, 20_000.0], &[10_000.0, 10_000.0]);
    records[0].errors.timeouts = 2;
    records[1].errors.timeouts = 2;
    assert_eq!(only(&judge(&records, throughput), "4").status, Status::Pass);
    records[3].errors.failed_open = 1;
    assert_status(
        only(&judge(&records, throughput), "4"),
        Status::Fail,
        "failed open 1, control-plane errors 0, timeouts 2, socket errors 0) against 2",
    );
}

#[test]
fn throughput_without_passthrough_is_not_checked() {
    let records: Vec<RunRecord> = throughput_runs(&[20_000.0], &[10_000.0])
        .into_iter()
        .filter(|r| r.variant == "4")
        .collect();
    assert_status(
        only(&judge(&records, throughput), "4"),
        Status::NotChecked,
        "configuration 1 was not measured",
    );
}

// ---------------------------------------------------------------------------------------------
// SC-002

/// Fixed rate at 10 % of the ceiling: configuration 1 and 3 with these p95s (ms), start by
/// start; every run achieves the rate.
fn fixed_runs(passthrough: &[f64], memory: &[f64]) -> Vec<RunRecord> {
    let mut records = Vec::new();
    for (i, (&p, &m)) in passthrough.iter().zip(memory).enumerate() {
        for (variant, p95) in [("1", p), ("3", m)] {
            let mut r = run(variant, i as u32 + 1, Phase::Fixed, 100);
            r.rate_share = Some(0.1);
            r.load.rps = 0.1 * CEILING;
            r.load.p95_ms = p95;
            records.push(r);
        }
    }
    records
}

#[test]
fn sc002_passes_under_five_ms_added() {
    let records = fixed_runs(&[3.0, 4.0, 3.5], &[6.0, 9.0, 7.0]);
    let verdicts = judge(&records, sc002_added_latency);
    let v = only(&verdicts, "3");
    assert_eq!(v.status, Status::Pass, "{v:#?}");
    assert!(v.measured.starts_with("+3.50 ms"), "{}", v.measured);
    assert!(v.scope.starts_with("2,000 req/s (10 %"), "{}", v.scope);
}

#[test]
fn sc002_fails_at_five_ms_added_or_more() {
    let records = fixed_runs(&[3.0, 4.0, 3.5], &[9.0, 8.5, 9.5]);
    assert_status(
        only(&judge(&records, sc002_added_latency), "3"),
        Status::Fail,
        "added p95 +5.50 ms",
    );
}

#[test]
fn sc002_fails_when_the_rate_was_not_kept() {
    let mut records = fixed_runs(&[3.0, 3.0, 3.0], &[4.0, 4.0, 4.0]);
    records[3].load.rps = 1_500.0;
    assert_status(
        only(&judge(&records, sc002_added_latency), "3"),
        Status::Fail,
        "start 2 answered 1,500 req/s",
    );
}

#[test]
fn sc002_fails_on_errors_and_error_statuses() {
    let mut records = fixed_runs(&[3.0], &[4.0]);
    records[1].errors.timeouts = 3;
    assert_status(
        only(&judge(&records, sc002_added_latency), "3"),
        Status::Fail,
        "timeouts 3",
    );
    let mut records = fixed_runs(&[3.0], &[4.0]);
    records[1].load.non_2xx = 7;
    assert_status(
        only(&judge(&records, sc002_added_latency), "3"),
        Status::Fail,
        "7 responses ≥ 400",
    );
}

// ---------------------------------------------------------------------------------------------
// SC-003

fn identities(shares: &[f64], sent_counted: &[(u64, Vec<u64>)]) -> IdentityCheck {
    IdentityCheck {
        limit: 20,
        sample_quota: 4,
        samples: sent_counted
            .iter()
            .enumerate()
            .map(|(i, (sent, counted))| SampleCount {
                identity: format!("key:k{i:04}"),
                sent: *sent,
                counted: counted.clone(),
            })
            .collect(),
        shares: shares.to_vec(),
        problems: Vec::new(),
    }
}

/// Phases a and b at 1,000 connections for configurations 1 and 4: p95s of 4 (ms) start by
/// start; identities at 60–70 %, samples counted exactly.
fn sc003_runs(a_p95: &[f64], b_p95: &[f64]) -> Vec<RunRecord> {
    let mut records = Vec::new();
    for (i, (&a, &b)) in a_p95.iter().zip(b_p95).enumerate() {
        for (phase, p95) in [(Phase::A, a), (Phase::B, b)] {
            records.push(run("1", i as u32 + 1, phase, 1000));
            let mut r = run("4", i as u32 + 1, phase, 1000);
            r.load.p95_ms = p95;
            r.identities = Some(identities(
                &[0.6, 0.65, 0.7],
                &[(4, vec![4, 4]), (4, vec![4, 4])],
            ));
            records.push(r);
        }
    }
    records
}

fn sc003(records: &[RunRecord]) -> Verdict {
    only(&judge(records, sc003_identities), "4").clone()
}

#[test]
fn sc003_passes_with_exact_counts_and_close_p95() {
    let v = sc003(&sc003_runs(&[110.0, 120.0, 115.0], &[100.0, 100.0, 95.0]));
    assert_eq!(v.status, Status::Pass, "{v:#?}");
    assert!(v.measured.contains("= 1.15 ×"), "{}", v.measured);
    assert!(
        v.measured.contains("12 of 12 sample counts exact"),
        "{}",
        v.measured
    );
    assert!(v.measured.contains("60 %–70 %"), "{}", v.measured);
}

#[test]
fn sc003_fails_on_p95() {
    let v = sc003(&sc003_runs(&[130.0, 140.0, 130.0], &[100.0, 100.0, 100.0]));
    assert_status(&v, Status::Fail, "p95 ratio 1.30");
}

#[test]
fn sc003_fails_when_anything_is_throttled_below_the_limit() {
    let mut records = sc003_runs(&[100.0], &[100.0]);
    records[1].load.non_2xx = 5;
    assert_status(
        &sc003(&records),
        Status::Fail,
        "5 responses ≥ 400 below the limit",
    );
}

#[test]
fn sc003_fails_when_a_count_differs_from_what_was_sent() {
    let mut records = sc003_runs(&[100.0], &[100.0]);
    records[3].identities = Some(identities(&[0.6], &[(4, vec![4, 4]), (4, vec![3, 4])]));
    assert_status(
        &sc003(&records),
        Status::Fail,
        "key:k0001 sent 4 counted [3, 4]",
    );
}

#[test]
fn sc003_fails_on_more_errors_than_passthrough() {
    let mut records = sc003_runs(&[100.0], &[100.0]);
    records[3].errors.control_plane = 1;
    assert_status(&sc003(&records), Status::Fail, "control-plane errors 1");
}

#[test]
fn sc003_is_not_checked_when_the_limits_missed_their_sizing() {
    // Every run of phase a far below the range: nothing shows the limiter near its limits.
    let mut records = sc003_runs(&[100.0, 100.0], &[100.0, 100.0]);
    for r in records
        .iter_mut()
        .filter(|r| r.variant == "4" && r.phase == Phase::A)
    {
        r.identities = Some(identities(&[0.3, 0.35], &[(4, vec![4, 4])]));
    }
    assert_status(
        &sc003(&records),
        Status::NotChecked,
        "no run of phase a had its identities",
    );
    // One run of each phase in range is enough.
    records[1].identities = Some(identities(&[0.6, 0.65], &[(4, vec![4, 4])]));
    assert_eq!(sc003(&records).status, Status::Pass);
    assert!(
        sc003(&records)
            .measured
            .contains("3 of 4 runs within 50–80 %")
    );
    // A status read failed: no count to compare.
    let mut records = sc003_runs(&[100.0], &[100.0]);
    let mut check = identities(&[0.6], &[(4, vec![])]);
    check.problems.push("GET …: connection refused".into());
    records[1].identities = Some(check);
    assert_status(&sc003(&records), Status::NotChecked, "status reads failed");
    // No status read at all.
    let mut records = sc003_runs(&[100.0], &[100.0]);
    records[1].identities = None;
    assert_status(&sc003(&records), Status::NotChecked, "no status read");
}

#[test]
fn sc003_does_not_count_429s_of_identities_past_their_limit() {
    // Start 1 of phase a was sized too low: its identities passed their limit, so its 429s
    // and short counts are legitimate; start 2 is in range and clean.
    let mut records = sc003_runs(&[100.0, 100.0], &[100.0, 100.0]);
    records[1].identities = Some(identities(&[0.9, 1.0], &[(4, vec![3, 3])]));
    records[1].load.non_2xx = 40;
    let v = sc003(&records);
    assert_eq!(v.status, Status::Pass, "{v:#?}");
    assert!(
        v.measured
            .contains("past their limit (not judged): phase a c=1000 start 1")
    );
    // The same 429s below the limit fail it.
    records[1].identities = Some(identities(&[0.7, 0.8], &[(4, vec![4, 4])]));
    assert_status(
        &sc003(&records),
        Status::Fail,
        "40 responses ≥ 400 below the limit",
    );
}

// ---------------------------------------------------------------------------------------------
// SC-005

fn abuse_counts() -> AbuseCounts {
    AbuseCounts {
        good_ok: 5_000,
        abuse_429: 45_000,
        good_max_used: 0.8,
        good_used: 40,
        good_retired: 30,
        ..AbuseCounts::default()
    }
}

/// Phase c at 100 connections for configurations 1 and 3, `starts` times.
fn sc005_runs(starts: u32) -> Vec<RunRecord> {
    let mut records = Vec::new();
    for repeat in 1..=starts {
        let mut p = run("1", repeat, Phase::C, 100);
        p.load.abuse = Some(AbuseCounts {
            unlabelled: 50_000,
            ..AbuseCounts::default()
        });
        let mut r = run("3", repeat, Phase::C, 100);
        r.load.abuse = Some(abuse_counts());
        r.abuse_start = Some(AbuseStart {
            checked: 5,
            over_limit: 5,
            unreadable: 0,
        });
        records.extend([p, r]);
    }
    records
}

fn sc005(records: &[RunRecord]) -> Verdict {
    only(&judge(records, sc005_abuse), "3").clone()
}

fn ours(records: &mut [RunRecord], repeat: u32) -> &mut RunRecord {
    records
        .iter_mut()
        .find(|r| r.variant == "3" && r.repeat == repeat)
        .unwrap()
}

#[test]
fn sc005_passes_when_no_good_request_is_throttled() {
    let v = sc005(&sc005_runs(3));
    assert_eq!(v.status, Status::Pass, "{v:#?}");
    assert!(
        v.measured.starts_with("0 of 15,000 good requests got 429"),
        "{}",
        v.measured
    );
    assert!(v.measured.contains("90 good identities"), "{}", v.measured);
}

#[test]
fn sc005_fails_when_a_good_request_is_throttled() {
    let mut records = sc005_runs(3);
    ours(&mut records, 2).load.abuse.as_mut().unwrap().good_429 = 1;
    assert_status(&sc005(&records), Status::Fail, "1 good requests got 429");
}

#[test]
fn sc005_fails_when_an_over_limit_request_is_admitted() {
    let mut records = sc005_runs(3);
    ours(&mut records, 3).load.abuse.as_mut().unwrap().abuse_ok = 2;
    assert_status(
        &sc005(&records),
        Status::Fail,
        "2 requests over the limit were admitted",
    );
}

#[test]
fn sc005_fails_on_more_errors_than_passthrough() {
    let mut records = sc005_runs(2);
    ours(&mut records, 1).errors.socket = 4;
    assert_status(&sc005(&records), Status::Fail, "socket errors 4");
}

#[test]
fn sc005_is_not_checked_when_the_run_could_not_show_it() {
    type Spoil = fn(&mut RunRecord);
    let cases: [(&str, Spoil); 4] = [
        ("ran out", |r| {
            r.load.abuse.as_mut().unwrap().good_exhausted = true
        }),
        ("no good identity reached its quota", |r| {
            r.load.abuse.as_mut().unwrap().good_retired = 0
        }),
        ("4 of 5 abuse identities", |r| {
            r.abuse_start = Some(AbuseStart {
                checked: 5,
                over_limit: 4,
                unreadable: 0,
            })
        }),
        ("above 80 %", |r| {
            r.load.abuse.as_mut().unwrap().good_max_used = 0.9
        }),
    ];
    for (reason, spoil) in cases {
        let mut records = sc005_runs(2);
        spoil(ours(&mut records, 2));
        assert_status(&sc005(&records), Status::NotChecked, reason);
    }
}
