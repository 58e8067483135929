//! The throughput-lead targets (docs/BENCHMARKS.md, "Targets"): each judged from the runs of
//! one report, so the report shows it met or how far it is.
//!
//! - throughput of our filter on Redis, phase a at the first connection count: slotted
//!   counters ≥ 0.6 × configuration 1, the exact log ≥ 0.5 ×;
//! - the abuse mix (phase c, 90 % of the requests over their limit): ≥ 0.85 × configuration 1,
//!   with ≤ 0.05 Redis script calls per denied request (every script call of the run is
//!   charged to the denials: an upper bound);
//! - CPU budgets per request, phase a at the first connection count: our filter with its
//!   callouts ≤ 30 µs over configuration 1's Envoy, the control plane ≤ 10 µs per decision,
//!   Redis ≤ 15 µs per decision for slotted counters.

use super::{Evidence, Verdict, errors_against_passthrough, limited, ratio, ratio_text, verdict};
use crate::Phase;
use crate::configs::{Counters, FilterKind, StoreKind, Variant};
use crate::record::RunRecord;
use crate::summary::Cell;

pub const LEAD_SLOTTED: f64 = 0.6;
pub const LEAD_EXACT: f64 = 0.5;
pub const ABUSE_MIX: f64 = 0.85;
pub const CALLS_PER_DENIAL: f64 = 0.05;
pub const FILTER_US_OVER_PASSTHROUGH: f64 = 30.0;
pub const CONTROL_PLANE_US_PER_DECISION: f64 = 10.0;
pub const REDIS_SLOTTED_US_PER_DECISION: f64 = 15.0;

const CRITERION: &str = "lead";

/// Our filter asking the control plane on Redis, deciding every request (not charging).
fn ours_on_redis<'a>(evidence: &'a Evidence) -> impl Iterator<Item = &'a Variant> {
    limited(evidence)
        .filter(|v| v.filter == FilterKind::Wasm && v.store == StoreKind::Redis && !v.charging)
}

fn first_cell<'a>(evidence: &Evidence<'a>, v: &Variant, phase: Phase) -> Option<&'a Cell<'a>> {
    let conns = *evidence.conns.first()?;
    evidence.cells.get(&v.name, phase, conns, None)
}

fn scope(cell: &Cell, phase: &str) -> String {
    format!("{phase}, {} connections", cell.key.connections)
}

/// Throughput against configuration 1 at or above `target`; the measured text and failures.
fn against_passthrough(
    evidence: &Evidence,
    cell: &Cell,
    target: f64,
) -> (String, Vec<String>, Vec<String>) {
    let Some(base) = evidence.cells.passthrough(cell) else {
        return (
            "—".into(),
            Vec::new(),
            vec!["configuration 1 was not measured in this run".into()],
        );
    };
    let Some(r) = ratio(cell, base, |r| Some(r.load.rps)) else {
        return (
            "—".into(),
            Vec::new(),
            vec!["no throughput to compare".into()],
        );
    };
    let measured = ratio_text(&r);
    let mut failures = Vec::new();
    if r.of_medians < target {
        failures.push(format!(
            "{:.2} × is {:.2} below {target}",
            r.of_medians,
            target - r.of_medians
        ));
    }
    failures.extend(errors_against_passthrough(evidence, &[cell]).2);
    (measured, failures, Vec::new())
}

/// Slotted ≥ 0.6 ×, exact ≥ 0.5 × configuration 1 in phase a.
pub fn throughput_lead(evidence: &Evidence) -> Vec<Verdict> {
    let mut out = Vec::new();
    for v in ours_on_redis(evidence) {
        let Some(cell) = first_cell(evidence, v, Phase::A) else {
            continue;
        };
        let (target, counters) = match v.counters {
            Counters::Slotted => (LEAD_SLOTTED, "slotted"),
            Counters::Exact => (LEAD_EXACT, "exact log"),
        };
        let (measured, failures, unchecked) = against_passthrough(evidence, cell, target);
        out.push(verdict(
            CRITERION,
            &v.name,
            scope(cell, "phase a"),
            &format!("{counters}: ≥ {target} × configuration 1"),
            measured,
            failures,
            unchecked,
        ));
    }
    out
}

/// Phase c: ≥ 0.85 × configuration 1, ≤ 0.05 script calls per denied request.
pub fn abuse_mix(evidence: &Evidence) -> Vec<Verdict> {
    let mut out = Vec::new();
    for v in ours_on_redis(evidence) {
        let Some(cell) = first_cell(evidence, v, Phase::C) else {
            continue;
        };
        let (mut measured, mut failures, mut unchecked) =
            against_passthrough(evidence, cell, ABUSE_MIX);
        let (mut calls, mut denied, mut counted) = (0.0, 0u64, true);
        for r in &cell.runs {
            match (r.redis, &r.load.abuse) {
                (Some(redis), Some(a)) => {
                    calls += redis.commands.script_calls;
                    denied += a.good_429 + a.abuse_429;
                }
                _ => counted = false,
            }
        }
        if !counted || denied == 0 {
            unchecked.push("no Redis command counts or no denials in a run".into());
        } else {
            let per_denial = calls / denied as f64;
            measured.push_str(&format!(
                "; {per_denial:.3} script calls per denied request ({} calls, {} denied)",
                crate::report::thousands(calls),
                crate::report::thousands(denied as f64)
            ));
            if per_denial > CALLS_PER_DENIAL {
                failures.push(format!(
                    "{per_denial:.3} script calls per denied request, above {CALLS_PER_DENIAL}"
                ));
            }
        }
        out.push(verdict(
            CRITERION,
            &v.name,
            scope(cell, "phase c"),
            &format!(
                "abuse mix ≥ {ABUSE_MIX} × configuration 1; ≤ {CALLS_PER_DENIAL} Redis calls \
                 per denied request"
            ),
            measured,
            failures,
            unchecked,
        ));
    }
    out
}

/// One CPU budget: the median of `figure` over the cell's runs at most `budget` µs.
fn budget(
    cell: &Cell,
    what: &str,
    budget: f64,
    figure: impl Fn(&RunRecord) -> Option<f64>,
) -> (String, Option<String>, Option<String>) {
    match cell.figure(figure) {
        Some(s) => {
            let text = format!(
                "{what} {:.1} µs ({})",
                s.median,
                super::range_text(s.min, s.max, |x| format!("{x:.1}"))
            );
            let over = (s.median > budget).then(|| {
                format!(
                    "{what} {:.1} µs is {:.1} over {budget}",
                    s.median,
                    s.median - budget
                )
            });
            (text, over, None)
        }
        None => (
            format!("{what} —"),
            None,
            Some(format!("{what}: not measured")),
        ),
    }
}

/// Filter ≤ 30 µs over passthrough, control plane ≤ 10 µs per decision, Redis (slotted)
/// ≤ 15 µs per decision; phase a.
pub fn cpu_budgets(evidence: &Evidence) -> Vec<Verdict> {
    let mut out = Vec::new();
    for v in ours_on_redis(evidence) {
        let Some(cell) = first_cell(evidence, v, Phase::A) else {
            continue;
        };
        let Some(base) = evidence.cells.passthrough(cell) else {
            continue;
        };
        let Some(base_envoy) = base.figure(|b| b.cpu("envoy")).map(|s| s.median) else {
            continue;
        };
        let mut parts = vec![budget(cell, "filter", FILTER_US_OVER_PASSTHROUGH, |r| {
            Some(r.cpu("envoy")? - base_envoy)
        })];
        parts.push(budget(
            cell,
            "control plane",
            CONTROL_PLANE_US_PER_DECISION,
            |r| r.per_decision(r.cpu("control_plane")? * r.load.requests as f64),
        ));
        let mut target = format!(
            "filter + callouts ≤ {FILTER_US_OVER_PASSTHROUGH:.0} µs over configuration 1's \
             Envoy; control plane ≤ {CONTROL_PLANE_US_PER_DECISION:.0} µs per decision"
        );
        if v.counters == Counters::Slotted {
            parts.push(budget(cell, "Redis", REDIS_SLOTTED_US_PER_DECISION, |r| {
                r.per_decision(r.redis?.cpu_us)
            }));
            target.push_str(&format!(
                "; Redis ≤ {REDIS_SLOTTED_US_PER_DECISION:.0} µs per decision"
            ));
        }
        let measured = parts
            .iter()
            .map(|(t, _, _)| t.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let failures: Vec<String> = parts.iter().filter_map(|(_, f, _)| f.clone()).collect();
        let unchecked: Vec<String> = parts.iter().filter_map(|(_, _, u)| u.clone()).collect();
        out.push(verdict(
            "CPU budget",
            &v.name,
            scope(cell, "phase a"),
            &target,
            measured,
            failures,
            unchecked,
        ));
    }
    out
}

#[cfg(test)]
mod tests;
