//! The report's verdicts, computed from the runs: one function per target or success
//! criterion ([`CHECKS`]); a new target is a new function in that list.
//!
//! Every verdict counts the requests that got no decision of ours or no answer (fail-open
//! decisions, control-plane errors, timeouts, socket errors) over the runs it judges, and
//! fails when a configuration had more of them than configuration 1 (passthrough) in the
//! same cells of the same benchmark run. A verdict whose runs could not test what it claims
//! (limits that missed their sizing, a pool that ran dry, configuration 1 not measured) says
//! so instead of passing.

use std::fmt::Write as _;

use serde::Serialize;

use crate::Phase;
use crate::configs::{StoreKind, Variant};
use crate::plan::{GOOD_QUOTA_SHARE, SC003_SHARE_RANGE};
use crate::record::Errors;
use crate::summary::{Cell, Cells, difference, ratio};

/// Throughput of a configuration on Redis against configuration 1, phase a, at the first
/// connection count (100 by default).
pub const THROUGHPUT_TARGET: f64 = 0.45;
pub const THROUGHPUT_STRETCH: f64 = 0.6;
/// SC-002: added latency p95 < 5 ms.
pub const SC002_ADDED_P95_MS: f64 = 5.0;
/// A fixed-rate run that answered less than this share of its rate was overloaded.
pub const SC002_MIN_ACHIEVED: f64 = 0.95;
/// SC-003: p95 with 10,000 identities within 25 % of the p95 with 100.
pub const SC003_P95_RATIO: f64 = 1.25;
/// SC-005: good identities must have reached at least this share of their limit for the
/// check to mean something (they are taken to `GOOD_QUOTA_SHARE`).
pub const SC005_MIN_SHARE: f64 = 0.7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// The runs could not test what the verdict claims (see its reasons).
    NotChecked,
}

impl Status {
    pub fn text(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::NotChecked => "not checked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub criterion: String,
    pub config: String,
    /// What it looked at (connections, rate).
    pub scope: String,
    pub target: String,
    pub measured: String,
    pub status: Status,
    /// Why it failed or was not checked.
    pub reasons: Vec<String>,
}

/// What the verdicts judge.
pub struct Evidence<'a> {
    pub variants: &'a [Variant],
    pub cells: &'a Cells<'a>,
    /// Connection counts of the closed-loop phases, in the order given.
    pub conns: &'a [u32],
    /// Fixed rates as shares of configuration 1's throughput, and their connections.
    pub rates: &'a [f64],
    pub rate_conns: u32,
    /// Configuration 1's throughput the fixed rates were derived from.
    pub ceiling: f64,
}

pub type Check = fn(&Evidence) -> Vec<Verdict>;

/// Every verdict of the report, in its order.
pub const CHECKS: &[Check] = &[
    throughput,
    lead::throughput_lead,
    lead::abuse_mix,
    lead::cpu_budgets,
    sc002_added_latency,
    sc003_identities,
    sc005_abuse,
];

pub fn all(evidence: &Evidence) -> Vec<Verdict> {
    CHECKS.iter().flat_map(|check| check(evidence)).collect()
}

fn limited<'a>(evidence: &'a Evidence) -> impl Iterator<Item = &'a Variant> {
    evidence.variants.iter().filter(|v| v.uses_control_plane())
}

fn thousands(n: f64) -> String {
    crate::report::thousands(n)
}

/// Errors of `ours` against configuration 1's in the same cells; a reason when ours had more.
fn errors_against_passthrough(
    evidence: &Evidence,
    ours: &[&Cell],
) -> (Errors, u64, Option<String>) {
    let mut mine = Errors::default();
    let mut base = 0;
    for cell in ours {
        mine.add(&cell.errors());
        base += evidence
            .cells
            .passthrough(cell)
            .map_or(0, |b| b.errors().total());
    }
    let reason = (mine.total() > base).then(|| {
        format!(
            "{} requests without a decision or an answer (failed open {}, control-plane errors \
             {}, timeouts {}, socket errors {}) against {base} for configuration 1",
            mine.total(),
            mine.failed_open,
            mine.control_plane,
            mine.timeouts,
            mine.socket
        )
    });
    (mine, base, reason)
}

fn verdict(
    criterion: &str,
    config: &str,
    scope: String,
    target: &str,
    measured: String,
    failures: Vec<String>,
    unchecked: Vec<String>,
) -> Verdict {
    let (status, reasons) = if !failures.is_empty() {
        (Status::Fail, failures)
    } else if !unchecked.is_empty() {
        (Status::NotChecked, unchecked)
    } else {
        (Status::Pass, Vec::new())
    };
    Verdict {
        criterion: criterion.to_string(),
        config: config.to_string(),
        scope,
        target: target.to_string(),
        measured,
        status,
        reasons,
    }
}

fn range_text(min: f64, max: f64, f: impl Fn(f64) -> String) -> String {
    if (max - min).abs() < 1e-9 {
        f(min)
    } else {
        format!("{}–{}", f(min), f(max))
    }
}

/// A ratio to configuration 1 as verdicts show it: of the medians, then the paired range.
fn ratio_text(r: &crate::summary::Ratio) -> String {
    let mut text = format!("{:.2} ×", r.of_medians);
    if let Some(p) = r.paired {
        let _ = write!(
            text,
            " (repeats {})",
            range_text(p.min, p.max, |x| format!("{x:.2}"))
        );
    }
    text
}

/// Configurations on Redis: throughput of phase a against configuration 1 at the first
/// connection count.
pub fn throughput(evidence: &Evidence) -> Vec<Verdict> {
    let Some(&conns) = evidence.conns.first() else {
        return Vec::new();
    };
    let target = format!("≥ {THROUGHPUT_TARGET} × configuration 1 (stretch {THROUGHPUT_STRETCH})");
    let mut out = Vec::new();
    for v in limited(evidence).filter(|v| v.store == StoreKind::Redis) {
        let Some(cell) = evidence.cells.get(&v.name, Phase::A, conns, None) else {
            continue;
        };
        let scope = format!("phase a, {conns} connections");
        let Some(base) = evidence.cells.passthrough(cell) else {
            out.push(verdict(
                "throughput",
                &v.name,
                scope,
                &target,
                "—".into(),
                Vec::new(),
                vec!["configuration 1 was not measured in this run".into()],
            ));
            continue;
        };
        let Some(r) = ratio(cell, base, |r| Some(r.load.rps)) else {
            continue;
        };
        let mut measured = ratio_text(&r);
        if r.of_medians >= THROUGHPUT_STRETCH {
            measured.push_str(", stretch met");
        }
        let mut failures = Vec::new();
        if r.of_medians < THROUGHPUT_TARGET {
            failures.push(format!(
                "{:.2} × is below {THROUGHPUT_TARGET}",
                r.of_medians
            ));
        }
        failures.extend(errors_against_passthrough(evidence, &[cell]).2);
        out.push(verdict(
            "throughput",
            &v.name,
            scope,
            &target,
            measured,
            failures,
            Vec::new(),
        ));
    }
    out
}

/// SC-002: added p95 at each fixed rate, against configuration 1 at the same rate.
pub fn sc002_added_latency(evidence: &Evidence) -> Vec<Verdict> {
    let target = format!("added p95 < {SC002_ADDED_P95_MS} ms");
    let mut out = Vec::new();
    for v in limited(evidence) {
        for &share in evidence.rates {
            let Some(cell) =
                evidence
                    .cells
                    .get(&v.name, Phase::Fixed, evidence.rate_conns, Some(share))
            else {
                continue;
            };
            let rate = share * evidence.ceiling;
            let scope = format!(
                "{} req/s ({:.0} % of configuration 1), {} connections",
                thousands(rate),
                share * 100.0,
                evidence.rate_conns
            );
            let Some(base) = evidence.cells.passthrough(cell) else {
                out.push(verdict(
                    "SC-002",
                    &v.name,
                    scope,
                    &target,
                    "—".into(),
                    Vec::new(),
                    vec!["configuration 1 was not measured in this run".into()],
                ));
                continue;
            };
            let Some(added) = difference(cell, base, |r| Some(r.load.p95_ms)) else {
                continue;
            };
            let p95 = |c: &Cell| c.p95().map_or(0.0, |s| s.median);
            let mut measured = format!(
                "{:+.2} ms (p95 {:.2} vs {:.2} ms",
                added.of_medians,
                p95(cell),
                p95(base)
            );
            if let Some(p) = added.paired {
                let _ = write!(
                    measured,
                    "; repeats {}",
                    range_text(p.min, p.max, |x| format!("{x:+.2}"))
                );
            }
            measured.push(')');
            let mut failures = Vec::new();
            if added.of_medians >= SC002_ADDED_P95_MS {
                failures.push(format!("added p95 {:+.2} ms", added.of_medians));
            }
            let short: Vec<String> = cell
                .runs
                .iter()
                .filter(|r| r.load.rps < SC002_MIN_ACHIEVED * rate)
                .map(|r| {
                    format!(
                        "start {} answered {} req/s",
                        r.repeat,
                        thousands(r.load.rps)
                    )
                })
                .collect();
            if !short.is_empty() {
                failures.push(format!(
                    "the rate was above this configuration's capacity ({})",
                    short.join(", ")
                ));
            }
            if cell.non_2xx() > 0 {
                failures.push(format!("{} responses ≥ 400", cell.non_2xx()));
            }
            failures.extend(errors_against_passthrough(evidence, &[cell]).2);
            out.push(verdict(
                "SC-002",
                &v.name,
                scope,
                &target,
                measured,
                failures,
                Vec::new(),
            ));
        }
    }
    out
}

/// SC-003: 10,000 identities at the largest connection count, each at 50–80 % of its limit:
/// none throttled, the control plane counted exactly what its sample identities were sent,
/// and p95 within 25 % of the run with 100 identities.
///
/// The limits of a run are sized from a predicted rate; a run whose identities ended outside
/// 50–80 % is reported and still checked for throttling and counts (unless they passed their
/// limit, when a 429 is legitimate), but the verdict needs at least one run of each phase
/// inside the range.
pub fn sc003_identities(evidence: &Evidence) -> Vec<Verdict> {
    let Some(&big) = evidence.conns.iter().max() else {
        return Vec::new();
    };
    let target =
        format!("none throttled, counts exact, p95 ≤ {SC003_P95_RATIO} × the 100-identity run");
    let (low, high) = SC003_SHARE_RANGE;
    let mut out = Vec::new();
    for v in limited(evidence) {
        let (Some(a), Some(b)) = (
            evidence.cells.get(&v.name, Phase::A, big, None),
            evidence.cells.get(&v.name, Phase::B, big, None),
        ) else {
            continue;
        };
        let scope = format!("phases a and b, {big} connections");
        let judged: Vec<&Cell> = evidence
            .cells
            .iter()
            .filter(|c| c.key.variant == v.name && matches!(c.key.phase, Phase::A | Phase::B))
            .collect();
        let mut failures = Vec::new();
        let mut unchecked = Vec::new();

        let p95 = |c: &Cell| c.p95().map_or(0.0, |s| s.median);
        let p95_ratio = if p95(b) > 0.0 {
            p95(a) / p95(b)
        } else {
            f64::INFINITY
        };
        if p95_ratio > SC003_P95_RATIO {
            failures.push(format!("p95 ratio {p95_ratio:.2}"));
        }
        let (mut runs, mut sized, mut throttled) = (0, 0, 0);
        let (mut samples, mut exact) = (0, 0);
        let (mut wrong, mut unreadable, mut over) = (Vec::new(), Vec::new(), Vec::new());
        let mut shares: Vec<f64> = Vec::new();
        for phase in [Phase::A, Phase::B] {
            let mut sized_here = 0;
            for r in judged
                .iter()
                .filter(|c| c.key.phase == phase)
                .flat_map(|c| c.runs.iter().copied())
            {
                runs += 1;
                let which = format!(
                    "phase {} c={} start {}",
                    phase.name(),
                    r.connections,
                    r.repeat
                );
                let Some(check) = &r.identities else {
                    unchecked.push(format!("no status read after {which}"));
                    continue;
                };
                unreadable.extend(check.problems.iter().cloned());
                let Some((lo, hi)) = check.share_range() else {
                    unchecked.push(format!("no identity's share read after {which}"));
                    continue;
                };
                shares.extend([lo, hi]);
                if hi >= 1.0 {
                    // Past their limit: 429s are then legitimate, and so are samples that
                    // were counted less than they were sent.
                    over.push(format!("{which} ({:.0} %)", hi * 100.0));
                    continue;
                }
                if (low..=high).contains(&lo) && (low..=high).contains(&hi) {
                    sized_here += 1;
                }
                throttled += r.load.non_2xx;
                samples += check.samples.len();
                exact += check.samples.len() - check.mismatches().len();
                // A sample whose status could not be read has no count: unread, not wrong.
                for s in check
                    .mismatches()
                    .into_iter()
                    .filter(|s| !s.counted.is_empty())
                {
                    wrong.push(format!(
                        "{} sent {} counted {:?} ({which})",
                        s.identity, s.sent, s.counted
                    ));
                }
            }
            if sized_here == 0 {
                unchecked.push(format!(
                    "no run of phase {} had its identities within {:.0}–{:.0} % of their limit",
                    phase.name(),
                    low * 100.0,
                    high * 100.0
                ));
            }
            sized += sized_here;
        }
        if throttled > 0 {
            failures.push(format!("{throttled} responses ≥ 400 below the limit"));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{} sample identities counted differently from what was sent: {}",
                wrong.len(),
                wrong.join("; ")
            ));
        }
        if !unreadable.is_empty() {
            unchecked.push(format!("status reads failed: {}", unreadable.join("; ")));
        }
        failures.extend(errors_against_passthrough(evidence, &judged).2);
        let lowest = shares.iter().copied().reduce(f64::min);
        let highest = shares.iter().copied().reduce(f64::max);
        let mut measured = format!(
            "p95 {:.1} vs {:.1} ms = {p95_ratio:.2} ×; throttled {throttled}; {exact} of {samples} \
             sample counts exact; identities at {} of their limit, {sized} of {runs} runs within \
             {:.0}–{:.0} %",
            p95(a),
            p95(b),
            match (lowest, highest) {
                (Some(lo), Some(hi)) => range_text(lo, hi, |x| format!("{:.0} %", x * 100.0)),
                _ => "?".into(),
            },
            low * 100.0,
            high * 100.0
        );
        if !over.is_empty() {
            let _ = write!(
                measured,
                "; past their limit (not judged): {}",
                over.join(", ")
            );
        }
        out.push(verdict(
            "SC-003", &v.name, scope, &target, measured, failures, unchecked,
        ));
    }
    out
}

/// SC-005: in the abuse mix, good identities taken to 80 % of their limit are never
/// throttled, and identities over their limit are never admitted.
pub fn sc005_abuse(evidence: &Evidence) -> Vec<Verdict> {
    let target = format!(
        "no 429 for good identities at ≤ {:.0} % of their limit; none over it admitted",
        GOOD_QUOTA_SHARE * 100.0
    );
    let mut out = Vec::new();
    for v in limited(evidence) {
        for &conns in evidence.conns {
            let Some(cell) = evidence.cells.get(&v.name, Phase::C, conns, None) else {
                continue;
            };
            let scope = format!("phase c, {conns} connections");
            let mut failures = Vec::new();
            let mut unchecked = Vec::new();
            let (mut good, mut good_429, mut good_other, mut abuse_ok, mut retired) =
                (0, 0, 0, 0, 0);
            let mut highest: f64 = 0.0;
            for r in &cell.runs {
                let Some(a) = &r.load.abuse else {
                    unchecked.push(format!("start {}: no abuse counts", r.repeat));
                    continue;
                };
                good += a.good_requests();
                good_429 += a.good_429;
                good_other += a.good_other;
                abuse_ok += a.abuse_ok;
                retired += a.good_retired;
                highest = highest.max(a.good_max_used);
                if a.good_exhausted {
                    unchecked.push(format!("start {}: the good identities ran out", r.repeat));
                }
                if a.good_retired == 0 {
                    unchecked.push(format!(
                        "start {}: no good identity reached its quota",
                        r.repeat
                    ));
                }
                match r.abuse_start {
                    Some(s) if s.checked > 0 && s.over_limit == s.checked && s.unreadable == 0 => {}
                    Some(s) => unchecked.push(format!(
                        "start {}: {} of {} abuse identities read were over their limit \
                         before the run ({} could not be read)",
                        r.repeat, s.over_limit, s.checked, s.unreadable
                    )),
                    None => unchecked.push(format!(
                        "start {}: the abuse identities were not read before the run",
                        r.repeat
                    )),
                }
            }
            if good_429 > 0 || good_other > 0 {
                failures.push(format!(
                    "{good_429} good requests got 429, {good_other} another error status"
                ));
            }
            if abuse_ok > 0 {
                failures.push(format!("{abuse_ok} requests over the limit were admitted"));
            }
            if highest > GOOD_QUOTA_SHARE + 1e-9 {
                unchecked.push(format!(
                    "a good identity reached {:.0} % of its limit, above {:.0} %",
                    highest * 100.0,
                    GOOD_QUOTA_SHARE * 100.0
                ));
            } else if highest < SC005_MIN_SHARE && retired > 0 {
                unchecked.push(format!(
                    "good identities reached only {:.0} % of their limit",
                    highest * 100.0
                ));
            }
            failures.extend(errors_against_passthrough(evidence, &[cell]).2);
            let measured = format!(
                "{good_429} of {} good requests got 429; {retired} good identities taken to \
                 {:.0} % of their limit (highest seen {:.0} %); over-limit admitted: {abuse_ok}",
                thousands(good as f64),
                GOOD_QUOTA_SHARE * 100.0,
                highest * 100.0
            );
            out.push(verdict(
                "SC-005", &v.name, scope, &target, measured, failures, unchecked,
            ));
        }
    }
    out
}

pub mod lead;

#[cfg(test)]
mod tests;
