//! Each lead target fed data that meets it, then data that misses it or cannot judge it.

use super::*;
use crate::record::RedisRun;
use crate::tools::{AbuseCounts, LoadResult};
use crate::verdicts::Status;
use crate::verdicts::tests::judge;

fn run(variant: &str, repeat: u32, phase: Phase, rps: f64) -> RunRecord {
    RunRecord {
        variant: variant.into(),
        repeat,
        phase,
        connections: 100,
        load: LoadResult {
            requests: 100_000,
            rps,
            ..LoadResult::default()
        },
        decisions: Some(100_000.0),
        ..RunRecord::default()
    }
}

fn of<'a>(verdicts: &'a [Verdict], config: &str) -> &'a Verdict {
    let mine: Vec<&Verdict> = verdicts.iter().filter(|v| v.config == config).collect();
    assert_eq!(mine.len(), 1, "{verdicts:#?}");
    mine[0]
}

fn reason(v: &Verdict, text: &str) {
    assert!(
        v.reasons.iter().any(|r| r.contains(text)),
        "no reason containing {text:?}: {v:#?}"
    );
}

#[test]
fn slotted_needs_six_tenths_and_the_exact_log_half() {
    let records = [
        run("1", 1, Phase::A, 20_000.0),
        run("4", 1, Phase::A, 10_000.0),
        run("4s", 1, Phase::A, 11_000.0),
    ];
    let verdicts = judge(&records, throughput_lead);
    assert_eq!(of(&verdicts, "4").status, Status::Pass, "{verdicts:#?}");
    let slotted = of(&verdicts, "4s");
    assert_eq!(slotted.status, Status::Fail);
    reason(slotted, "0.55 × is 0.05 below 0.6");
    // Configuration 5 (Envoy's own filter) has no lead target.
    let five = [run("1", 1, Phase::A, 20_000.0), run("5", 1, Phase::A, 1.0)];
    assert!(judge(&five, throughput_lead).is_empty());
}

fn abuse(variant: &str, rps: f64, calls: f64, denied: u64) -> RunRecord {
    let mut r = run(variant, 1, Phase::C, rps);
    r.redis = Some(RedisRun {
        cpu_us: 0.0,
        ..RedisRun::default()
    });
    if let Some(redis) = r.redis.as_mut() {
        redis.commands.script_calls = calls;
    }
    r.load.abuse = Some(AbuseCounts {
        abuse_429: denied,
        ..AbuseCounts::default()
    });
    r
}

#[test]
fn the_abuse_mix_counts_script_calls_against_denials() {
    let base = run("1", 1, Phase::C, 20_000.0);
    let good = [base.clone(), abuse("4", 17_000.0, 400.0, 10_000)];
    let v = judge(&good, abuse_mix);
    assert_eq!(of(&v, "4").status, Status::Pass, "{v:#?}");
    assert!(
        of(&v, "4").measured.contains("0.040 script calls"),
        "{v:#?}"
    );

    let chatty = [base.clone(), abuse("4", 17_000.0, 600.0, 10_000)];
    reason(of(&judge(&chatty, abuse_mix), "4"), "0.060 script calls");
    let slow = [base.clone(), abuse("4", 16_000.0, 100.0, 10_000)];
    reason(
        of(&judge(&slow, abuse_mix), "4"),
        "0.80 × is 0.05 below 0.85",
    );
    let none_denied = [base, abuse("4", 17_000.0, 100.0, 0)];
    let v = judge(&none_denied, abuse_mix);
    assert_eq!(of(&v, "4").status, Status::NotChecked, "{v:#?}");
}

fn with_cpu(mut r: RunRecord, envoy: f64, cp: f64, redis_per_decision: f64) -> RunRecord {
    r.cpu_us_per_request.insert("envoy".into(), envoy);
    r.cpu_us_per_request.insert("control_plane".into(), cp);
    r.redis = Some(RedisRun {
        cpu_us: redis_per_decision * r.decisions.unwrap_or(0.0),
        ..RedisRun::default()
    });
    r
}

#[test]
fn cpu_budgets_judge_filter_control_plane_and_slotted_redis() {
    let base = with_cpu(run("1", 1, Phase::A, 20_000.0), 40.0, 0.0, 0.0);
    let records = [
        base.clone(),
        with_cpu(run("4", 1, Phase::A, 10_000.0), 69.0, 9.5, 40.0),
        with_cpu(run("4s", 1, Phase::A, 10_000.0), 71.0, 9.0, 16.0),
    ];
    let v = judge(&records, cpu_budgets);
    // The exact log has no Redis budget.
    assert_eq!(of(&v, "4").status, Status::Pass, "{v:#?}");
    let slotted = of(&v, "4s");
    assert_eq!(slotted.status, Status::Fail);
    reason(slotted, "filter 31.0 µs is 1.0 over 30");
    reason(slotted, "Redis 16.0 µs is 1.0 over 15");

    // Half as many decisions as requests: the control plane's CPU per decision doubles.
    let mut batched = with_cpu(run("4", 1, Phase::A, 10_000.0), 60.0, 6.0, 0.0);
    batched.decisions = Some(50_000.0);
    let v = judge(&[base, batched], cpu_budgets);
    reason(of(&v, "4"), "control plane 12.0 µs is 2.0 over 10");
}
