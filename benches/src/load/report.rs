//! The Markdown report: what was measured and on what, the verdicts, then every table the
//! verdicts rest on (median and spread over the repeats), memory, and where the time goes.

use std::fmt::Write as _;
use std::time::Duration;

use crate::configs::{Counters, StoreKind, Variant};
use crate::memory::CounterMemory;
use crate::provenance::Provenance;
use crate::record::RunRecord;
use crate::summary::{Cell, Cells, Spread, difference, ratio};
use crate::verdicts::{Status, Verdict};
use crate::{Options, PASSTHROUGH, Phase};

pub struct Input<'a> {
    pub opts: &'a Options,
    pub provenance: &'a Provenance,
    /// Each configuration once, in the order of a round.
    pub variants: &'a [Variant],
    pub round: &'a [String],
    pub records: &'a [RunRecord],
    pub cells: &'a Cells<'a>,
    pub verdicts: &'a [Verdict],
    pub memory: Option<&'a [CounterMemory]>,
    pub failures: &'a [String],
    pub ceiling: f64,
    pub ceiling_source: &'a str,
    pub elapsed: Duration,
}

const NA: &str = "n/a";

pub fn thousands(n: f64) -> String {
    let n = n.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `median (min–max)`, or just the value when there was one run.
fn spread_text(s: Option<Spread>, f: impl Fn(f64) -> String) -> String {
    match s {
        None => NA.to_string(),
        Some(s) if s.n == 1 || s.min == s.max => f(s.median),
        Some(s) => format!("{} ({}–{})", f(s.median), f(s.min), f(s.max)),
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| NA.to_string())
}

/// One line per run while the benchmark goes.
pub fn progress_line(r: &RunRecord) -> String {
    let l = &r.load;
    let mut s = format!(
        "[{} #{}] {} c={}{}: {} req/s, p50/p95/p99 {}/{}/{} ms, non-2xx {}",
        r.variant,
        r.repeat,
        r.phase.name(),
        r.connections,
        l.target_rate
            .map(|q| format!(" q={q:.0}"))
            .unwrap_or_default(),
        thousands(l.rps),
        ms(l.p50_ms),
        ms(l.p95_ms),
        ms(l.p99_ms),
        l.non_2xx,
    );
    if r.errors.total() > 0 {
        let e = &r.errors;
        let _ = write!(
            s,
            ", errors {} (failed open {}, control plane {}, timeouts {}, socket {})",
            e.total(),
            e.failed_open,
            e.control_plane,
            e.timeouts,
            e.socket
        );
    }
    let _ = write!(s, "; CPU µs/req");
    for (name, v) in &r.cpu_us_per_request {
        let _ = write!(s, " {name} {v:.0}");
    }
    if let Some(check) = &r.identities {
        let shares = check
            .share_range()
            .map(|(lo, hi)| format!("{:.0}–{:.0} %", lo * 100.0, hi * 100.0))
            .unwrap_or_else(|| "?".into());
        let _ = write!(
            s,
            "; limit {}, identities at {shares}, samples exact {}/{}",
            check.limit,
            check.samples.len() - check.mismatches().len(),
            check.samples.len()
        );
    }
    if let Some(a) = &l.abuse {
        let _ = write!(
            s,
            "; good 429 {} of {}, good identities at quota {}, abuse admitted {}",
            a.good_429,
            a.good_requests(),
            a.good_retired,
            a.abuse_ok
        );
    }
    s
}

pub fn render(input: &Input) -> String {
    let mut s = String::new();
    header(&mut s, input);
    verdict_table(&mut s, input);
    headline(&mut s, input);
    closed_loop(&mut s, input);
    fixed_rate(&mut s, input);
    identities(&mut s, input);
    memory(&mut s, input);
    where_time_goes(&mut s, input);
    redis_per_decision(&mut s, input);
    if !input.failures.is_empty() {
        let _ = writeln!(s, "## Failures\n");
        for f in input.failures {
            let _ = writeln!(s, "- {}", f.replace('\n', " / "));
        }
        s.push('\n');
    }
    if input.records.is_empty() {
        let _ = writeln!(s, "No run completed.");
    }
    s
}

fn header(s: &mut String, input: &Input) {
    let o = input.opts;
    let p = input.provenance;
    let _ = writeln!(s, "# Load benchmark report\n");
    let _ = writeln!(
        s,
        "Written by `bash scripts/load-bench.sh` (method: docs/BENCHMARKS.md). Measured commit \
         `{}`{}, started {} UTC, on {} CPU(s); {}; {}; {}.\n",
        p.commit,
        if p.dirty {
            format!(
                " **with uncommitted changes** ({} paths: {})",
                p.changes.len(),
                p.changes
                    .iter()
                    .map(|c| format!("`{}`", c.trim()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            " (clean tree)".to_string()
        },
        p.started_at,
        p.cpus,
        p.envoy,
        p.redis_server,
        p.wrk,
    );
    let _ = writeln!(
        s,
        "Each configuration started {} time(s), interleaved (round: {}); every measured run \
         {} s after a {} s warm-up per start; Envoy `--concurrency` {}; total runtime {:.0} s. \
         Figures are the median over the starts, with (min–max); ratios are ratios of medians. \
         Configuration 1's throughput, from which the fixed rates and the good identities' \
         limit derive: {} req/s ({}).\n",
        o.repeats,
        input.round.join(", "),
        o.duration,
        o.warmup,
        o.envoy_concurrency,
        input.elapsed.as_secs_f64(),
        thousands(input.ceiling),
        input.ceiling_source
    );
    let _ = writeln!(s, "| config | what |\n|---|---|");
    for v in input.variants {
        let _ = writeln!(s, "| {} | {} |", v.name, v.label);
    }
    s.push('\n');
}

fn verdict_table(s: &mut String, input: &Input) {
    if input.verdicts.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Verdicts\n\n\
         Computed from the runs below. Each counts fail-open decisions, control-plane errors, \
         timeouts and socket errors, and fails when a configuration had more of them than \
         configuration 1 in the same runs.\n\n\
         | criterion | config | scope | target | measured | verdict |\n\
         |---|---|---|---|---|---|"
    );
    for v in input.verdicts {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | **{}** |",
            v.criterion,
            v.config,
            v.scope,
            v.target,
            v.measured,
            v.status.text()
        );
    }
    s.push('\n');
    let explained: Vec<&Verdict> = input
        .verdicts
        .iter()
        .filter(|v| v.status != Status::Pass)
        .collect();
    if !explained.is_empty() {
        for v in explained {
            let _ = writeln!(
                s,
                "- {} {} ({}), {}: {}",
                v.criterion,
                v.config,
                v.scope,
                v.status.text(),
                v.reasons.join("; ")
            );
        }
        s.push('\n');
    }
}

/// Configurations on Redis against configuration 1, phase a, at every connection count.
fn headline(s: &mut String, input: &Input) {
    let mut rows = Vec::new();
    for v in input
        .variants
        .iter()
        .filter(|v| v.store == StoreKind::Redis)
    {
        for &c in &input.opts.conns {
            let (Some(cell), Some(base)) = (
                input.cells.get(&v.name, Phase::A, c, None),
                input.cells.get(PASSTHROUGH, Phase::A, c, None),
            ) else {
                continue;
            };
            let r = ratio(cell, base, |r| Some(r.load.rps));
            rows.push(format!(
                "| {} / 1 | {} | {} | {} | {} | {} |",
                v.name,
                thousands(c as f64),
                spread_text(cell.rps(), thousands),
                spread_text(base.rps(), thousands),
                opt(r.map(|r| r.of_medians), |x| format!("**{x:.2}**")),
                spread_text(r.and_then(|r| r.paired), |x| format!("{x:.2}")),
            ));
        }
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Headline: throughput on Redis against passthrough\n\n\
         Phase a (10,000 identities), closed loop. Paired ratios: start n of one configuration \
         against start n of configuration 1.\n\n\
         | configs | connections | req/s | configuration 1 req/s | ratio of medians | paired ratios |\n\
         |---|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let _ = writeln!(s, "{r}");
    }
    s.push('\n');
}

fn errors_text(cell: &Cell) -> String {
    let e = cell.errors();
    if e.total() == 0 {
        "0".into()
    } else {
        format!(
            "{} (fo {}, cp {}, to {}, sock {})",
            e.total(),
            e.failed_open,
            e.control_plane,
            e.timeouts,
            e.socket
        )
    }
}

fn closed_loop(s: &mut String, input: &Input) {
    let cells: Vec<&Cell> = input
        .cells
        .iter()
        .filter(|c| matches!(c.key.phase, Phase::A | Phase::B | Phase::C))
        .collect();
    if cells.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Throughput, closed loop (wrk -t2)\n\n\
         Phase a: 10,000 identities, b: 100 identities (both each at 50–80 % of a limit sized \
         for the run), c: abuse mix (90 % over-limit identities, 10 % good ones). × cfg 1: ratio \
         of medians to configuration 1 in the same phase and connections. non-2xx: summed over \
         the starts (429s expected in phase c only). errors: summed over the starts: failed \
         open (fo), control-plane errors (cp), timeouts (to), socket errors (sock).\n\n\
         | config | phase | conns | runs | req/s | × cfg 1 | p50 ms | p95 ms | p99 ms | non-2xx | errors |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for cell in &cells {
        let ratio = input
            .cells
            .passthrough(cell)
            .and_then(|b| ratio(cell, b, |r| Some(r.load.rps)));
        let _ = writeln!(
            s,
            "| {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell.key.variant,
            cell.key.phase.name(),
            cell.key.phase.describe(),
            thousands(cell.key.connections as f64),
            cell.runs.len(),
            spread_text(cell.rps(), thousands),
            opt(ratio.map(|r| r.of_medians), |x| format!("{x:.2}")),
            spread_text(cell.p50(), ms),
            spread_text(cell.p95(), ms),
            spread_text(cell.p99(), ms),
            thousands(cell.non_2xx() as f64),
            errors_text(cell),
        );
    }
    s.push('\n');

    let abuse: Vec<&Cell> = cells
        .iter()
        .copied()
        .filter(|c| c.key.phase == Phase::C)
        .collect();
    if abuse.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "Phase c in detail, summed over the starts (from each response's `X-RateLimit-*` \
         headers; configurations without our filter send none, so their responses are \
         \"unlabelled\"). Good identities are used in turn until each has been sent {:.0} % of \
         its limit.\n\n\
         | config | conns | good limit | good requests | good 429 | good identities at quota | highest share seen | abuse requests | abuse admitted | unlabelled |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        crate::plan::GOOD_QUOTA_SHARE * 100.0
    );
    for cell in abuse {
        let runs: Vec<_> = cell
            .runs
            .iter()
            .filter_map(|r| r.load.abuse.as_ref())
            .collect();
        let sum = |f: &dyn Fn(&crate::tools::AbuseCounts) -> u64| -> u64 {
            runs.iter().map(|a| f(a)).sum()
        };
        let highest = runs.iter().map(|a| a.good_max_used).fold(0.0, f64::max);
        let limits: Vec<String> = cell
            .runs
            .iter()
            .filter_map(|r| r.limits.map(|l| thousands(l.good as f64)))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let good = sum(&|a| a.good_requests());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell.key.variant,
            thousands(cell.key.connections as f64),
            if limits.is_empty() {
                "—".into()
            } else {
                limits.join(", ")
            },
            thousands(good as f64),
            sum(&|a| a.good_429),
            sum(&|a| a.good_retired),
            if good > 0 && runs.iter().any(|a| a.good_max_used > 0.0) {
                format!("{:.0} %", highest * 100.0)
            } else {
                NA.into()
            },
            thousands(sum(&|a| a.abuse_requests()) as f64),
            sum(&|a| a.abuse_ok),
            thousands(sum(&|a| a.unlabelled) as f64),
        );
    }
    s.push('\n');
}

fn fixed_rate(s: &mut String, input: &Input) {
    let cells: Vec<&Cell> = input
        .cells
        .iter()
        .filter(|c| c.key.phase == Phase::Fixed)
        .collect();
    if cells.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Latency at a fixed rate, open loop\n\n\
         The load benchmark's open-loop generator (`open_loop`): requests leave on a fixed \
         schedule whatever the answers, over at most {} connections, each with the next of the \
         10,000 phase-a keys (limits never reached), and each latency counts from the request's \
         scheduled time. Added p95: difference of the medians to configuration 1 at the same \
         rate (SC-002: < 5 ms), with the range of the paired differences. A rate above a \
         configuration's capacity shows as achieved < target and a large p95.\n\n\
         | config | target req/s | achieved req/s | p50 ms | p95 ms | p99 ms | added p95 ms | non-2xx | errors |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|",
        input.opts.rate_conns
    );
    for cell in cells {
        let target = cell.key.rate_share.unwrap_or(0.0) * input.ceiling;
        let added = input
            .cells
            .passthrough(cell)
            .filter(|_| cell.key.variant != PASSTHROUGH)
            .and_then(|b| difference(cell, b, |r| Some(r.load.p95_ms)));
        let _ = writeln!(
            s,
            "| {} | {} ({:.0} %) | {} | {} | {} | {} | {} | {} | {} |",
            cell.key.variant,
            thousands(target),
            cell.key.rate_share.unwrap_or(0.0) * 100.0,
            spread_text(cell.rps(), thousands),
            spread_text(cell.p50(), ms),
            spread_text(cell.p95(), ms),
            spread_text(cell.p99(), ms),
            match added {
                Some(a) => format!(
                    "{:+.2}{}",
                    a.of_medians,
                    a.paired
                        .filter(|p| p.n > 1)
                        .map(|p| format!(" ({:+.2}–{:+.2})", p.min, p.max))
                        .unwrap_or_default()
                ),
                None => "—".into(),
            },
            cell.non_2xx(),
            errors_text(cell),
        );
    }
    s.push('\n');
}

fn identities(s: &mut String, input: &Input) {
    let runs: Vec<&RunRecord> = input
        .records
        .iter()
        .filter(|r| r.identities.is_some())
        .collect();
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Identities (SC-003)\n\n\
         Before each run the control plane starts afresh with the bulk tier's limit sized so \
         that an identity reaches 65 % of it at the rate predicted for the run (from the \
         configuration's earlier runs, or its warm-up). After the run its status endpoint is \
         read for identities between the samples (the share of their limit they reached) and \
         for sample identities, each sent a fixed share early in the run: the control plane \
         must have counted exactly what was sent.\n\n\
         | config | start | phase | conns | predicted req/s | req/s | limit | identities reached | samples counted exactly | throttled |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in runs {
        let Some(check) = &r.identities else { continue };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} of {} | {} |",
            r.variant,
            r.repeat,
            r.phase.name(),
            thousands(r.connections as f64),
            opt(r.predicted_rps, thousands),
            thousands(r.load.rps),
            thousands(check.limit as f64),
            check
                .share_range()
                .map(|(lo, hi)| format!("{:.0}–{:.0} %", lo * 100.0, hi * 100.0))
                .unwrap_or_else(|| NA.into()),
            check.samples.len() - check.mismatches().len(),
            check.samples.len(),
            r.load.non_2xx,
        );
    }
    s.push('\n');
}

fn memory(s: &mut String, input: &Input) {
    if let Some(counters) = input.memory.filter(|c| !c.is_empty()) {
        let _ = writeln!(
            s,
            "## Memory\n\n\
             Redis `MEMORY USAGE` of one saturated counter (one identity sent exactly its limit \
             within one window through the control plane's batch endpoint, then one more, which \
             must be denied), for each algorithm (an exact log; slotted counters, one count per \
             slot of W/60). Entries: a sorted set's requests, a hash's slots and bookkeeping \
             fields.\n\n\
             | algorithm | limit | admitted | next denied | key type (encoding) | entries | bytes | bytes per request |\n\
             |---|---:|---:|---|---|---:|---:|---:|"
        );
        for c in counters {
            let algorithm = match c.algorithm {
                Counters::Exact => "exact",
                Counters::Slotted => "slotted",
            };
            let _ = writeln!(
                s,
                "| {algorithm} | {} | {} | {} | {} ({}) | {} | {} | {} |",
                thousands(c.limit as f64),
                thousands(c.admitted as f64),
                if c.denied_after { "yes" } else { "**no**" },
                c.redis_type,
                c.encoding,
                opt(c.entries.map(|e| e as f64), thousands),
                opt(c.bytes.map(|b| b as f64), thousands),
                opt(c.bytes_per_request(), |x| format!("{x:.1}")),
            );
        }
        s.push('\n');
    }
    let rows: Vec<String> = input
        .variants
        .iter()
        .filter(|v| v.uses_control_plane())
        .flat_map(|v| {
            input.opts.conns.iter().filter_map(move |&c| {
                let cell = input.cells.get(&v.name, Phase::A, c, None)?;
                let mib = |kib: u64| kib as f64 / 1024.0;
                Some(format!(
                    "| {} | {} | {} | {} |",
                    v.name,
                    thousands(c as f64),
                    spread_text(cell.figure(|r| r.cp_rss_start_kib.map(mib)), |x| format!(
                        "{x:.1}"
                    )),
                    spread_text(cell.figure(|r| r.cp_rss_kib.map(mib)), |x| format!(
                        "{x:.1}"
                    )),
                ))
            })
        })
        .collect();
    if !rows.is_empty() {
        let _ = writeln!(
            s,
            "The control plane's resident memory (`VmRSS`, MiB) when it started for a phase-a \
             run, and after that run (10,000 identities, each with its counters):\n\n\
             | config | conns | at start | after phase a |\n|---|---:|---:|---:|"
        );
        for r in rows {
            let _ = writeln!(s, "{r}");
        }
        s.push('\n');
    }
}

fn where_time_goes(s: &mut String, input: &Input) {
    let Some(&conns) = input.opts.conns.first() else {
        return;
    };
    let cells: Vec<&Cell> = input
        .variants
        .iter()
        .filter_map(|v| input.cells.get(&v.name, Phase::A, conns, None))
        .collect();
    if cells.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Where the time goes\n\n\
         CPU time per request of each process (µs, user + system from /proc, phase a, {conns} \
         connections, median over the starts). \"other\" is the rest of the machine's busy time \
         during the run (other users of this box, kernel work not charged to a process): a \
         large value means a noisy run.\n\n\
         | config | req/s | Envoy | control plane | Redis | upstream | load generator | other | total | busy cores |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for cell in &cells {
        let f = |name: &'static str| {
            opt(cell.figure(|r| r.cpu(name)).map(|s| s.median), |x| {
                format!("{x:.1}")
            })
        };
        let total = cell.figure(|r| Some(r.cpu_us_per_request.values().sum()));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell.key.variant,
            opt(cell.rps().map(|s| s.median), thousands),
            f("envoy"),
            f("control_plane"),
            f("redis"),
            f("upstream"),
            f("load_generator"),
            f("other"),
            opt(total.map(|s| s.median), |x| format!("{x:.1}")),
            opt(
                cell.figure(|r| Some(r.busy_cores)).map(|s| s.median),
                |x| format!("{x:.2}")
            ),
        );
    }
    s.push('\n');

    // Per stage, for the configurations with our filter.
    let lowest_share = input.opts.rates.iter().copied().reduce(f64::min);
    let mut cols: Vec<(String, &Cell)> = Vec::new();
    for v in input.variants.iter().filter(|v| v.uses_control_plane()) {
        if let Some(c) = input.cells.get(&v.name, Phase::A, conns, None) {
            cols.push((format!("{} a c={conns}", v.name), c));
        }
        if let Some(c) = lowest_share.and_then(|q| {
            input
                .cells
                .get(&v.name, Phase::Fixed, input.opts.rate_conns, Some(q))
        }) {
            cols.push((
                format!(
                    "{} {} req/s",
                    v.name,
                    thousands(c.key.rate_share.unwrap_or(0.0) * input.ceiling)
                ),
                c,
            ));
        }
    }
    if cols.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "Per stage of a decision (median over the starts; closed-loop runs are saturated, so \
         their wall times include queueing; the fixed-rate run at the lowest rate is not):\n"
    );
    let _ = write!(s, "| stage | source |");
    for (name, _) in &cols {
        let _ = write!(s, " {name} |");
    }
    let _ = write!(s, "\n|---|---|");
    for _ in &cols {
        let _ = write!(s, "---:|");
    }
    s.push('\n');
    let cells = input.cells;
    let passthrough_envoy = move |r: &RunRecord| -> Option<f64> {
        let base = cells.get(PASSTHROUGH, r.phase, r.connections, r.rate_share)?;
        base.figure(|b| b.cpu("envoy")).map(|s| s.median)
    };
    let per_request = |r: &RunRecord, v: f64| v / r.load.requests.max(1) as f64;
    type Row<'a> = (
        &'a str,
        &'a str,
        usize,
        Box<dyn Fn(&RunRecord) -> Option<f64> + 'a>,
    );
    let rows: Vec<Row> = vec![
        (
            "filter + callout inside Envoy (CPU µs)",
            "Envoy CPU/req − configuration 1's in the same cell",
            1,
            Box::new(move |r: &RunRecord| Some(r.cpu("envoy")? - passthrough_envoy(r)?)),
        ),
        (
            "Envoy callout, wall (mean ms)",
            "`cluster.rate_limit_control_plane.upstream_rq_time` (whole ms, so coarse)",
            2,
            Box::new(|r: &RunRecord| r.callout.as_ref()?.mean()),
        ),
        (
            "Envoy callout, wall (p95 ms)",
            "same histogram, interpolated in Envoy's buckets",
            2,
            Box::new(|r: &RunRecord| r.callout.as_ref()?.quantile(0.95)),
        ),
        (
            "Envoy request, wall (mean ms)",
            "`http.ingress.downstream_rq_time`",
            2,
            Box::new(|r: &RunRecord| r.envoy_request.as_ref()?.mean()),
        ),
        (
            "control-plane handler, wall (mean µs)",
            "`rate_limit_check_duration_seconds` (`/metrics`)",
            1,
            Box::new(|r: &RunRecord| r.cp_check.as_ref()?.mean().map(|m| m * 1e6)),
        ),
        (
            "control plane (CPU µs)",
            "/proc/<pid>/stat",
            1,
            Box::new(|r: &RunRecord| r.cpu("control_plane")),
        ),
        (
            "decision calls per request",
            "callouts / requests",
            2,
            Box::new(move |r: &RunRecord| Some(per_request(r, r.callout.as_ref()?.count))),
        ),
        (
            "decisions per request",
            "`rate_limit_requests_total` / requests",
            2,
            Box::new(move |r: &RunRecord| Some(per_request(r, r.decisions?))),
        ),
        (
            "Redis (CPU µs per request)",
            "/proc/<pid>/stat",
            1,
            Box::new(|r: &RunRecord| r.cpu("redis")),
        ),
        (
            "Redis CPU µs per decision",
            "redis-server utime + stime / decisions",
            1,
            Box::new(|r: &RunRecord| r.per_decision(r.redis?.cpu_us)),
        ),
        (
            "Redis calls per request",
            "`INFO commandstats`: script calls (`EVALSHA`, `EVAL`) / requests",
            2,
            Box::new(move |r: &RunRecord| Some(per_request(r, r.redis?.commands.script_calls))),
        ),
        (
            "Redis commands per request",
            "`INFO commandstats`: every command, the script's own included / requests",
            2,
            Box::new(move |r: &RunRecord| Some(per_request(r, r.redis?.commands.commands))),
        ),
        (
            "Redis script µs per call",
            "`INFO commandstats` evalsha usec_per_call",
            1,
            Box::new(|r: &RunRecord| Some(r.redis?.commands.evalsha_us_per_call)),
        ),
        (
            "new control-plane connections",
            "`upstream_cx_total` over the run",
            0,
            Box::new(|r: &RunRecord| r.callout_connections_opened),
        ),
    ];
    for (stage, source, decimals, f) in &rows {
        let _ = write!(s, "| {stage} | {source} |");
        for (_, cell) in &cols {
            let v = cell.figure(f).map(|s| s.median);
            let _ = write!(s, " {} |", opt(v, |x| format!("{x:.*}", *decimals)));
        }
        s.push('\n');
    }
    s.push('\n');
}

/// Redis CPU per decision the slotted windows aim at (µs).
pub const SLOTTED_REDIS_US_PER_DECISION_TARGET: f64 = 15.0;

/// Redis CPU per decision of each configuration on Redis: what one script call per batch
/// saves shows here, beside the script calls each decision took.
fn redis_per_decision(s: &mut String, input: &Input) {
    let Some(&conns) = input.opts.conns.first() else {
        return;
    };
    let lowest_share = input.opts.rates.iter().copied().reduce(f64::min);
    let mut rows: Vec<(&Variant, String, &Cell)> = Vec::new();
    for v in input
        .variants
        .iter()
        .filter(|v| v.uses_control_plane() && v.store == StoreKind::Redis)
    {
        if let Some(c) = input.cells.get(&v.name, Phase::A, conns, None) {
            rows.push((v, format!("phase a, {conns} connections"), c));
        }
        if let Some(c) = lowest_share.and_then(|q| {
            input
                .cells
                .get(&v.name, Phase::Fixed, input.opts.rate_conns, Some(q))
        }) {
            let rate = thousands(c.key.rate_share.unwrap_or(0.0) * input.ceiling);
            rows.push((v, format!("{rate} req/s"), c));
        }
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "### Redis CPU per decision\n\n\
         redis-server CPU (user + system, /proc) over the run divided by the decisions the \
         control plane counted in it (`rate_limit_requests_total`), median and range over the \
         starts; script calls per decision from `INFO commandstats`. Target for slotted \
         windows: ≤ {SLOTTED_REDIS_US_PER_DECISION_TARGET:.0} µs.\n\n\
         | config | counters | run | decisions | Redis CPU µs per decision | script calls per decision | target |\n\
         |---|---|---|---:|---:|---:|---|"
    );
    for (v, run, cell) in rows {
        let per_decision = cell.figure(|r| r.per_decision(r.redis?.cpu_us));
        let calls = cell.figure(|r| r.per_decision(r.redis?.commands.script_calls));
        let (counters, target) = match v.counters {
            Counters::Exact => ("exact log", "—".to_string()),
            Counters::Slotted => (
                "slotted",
                match per_decision.map(|p| p.median) {
                    Some(m) if m <= SLOTTED_REDIS_US_PER_DECISION_TARGET => {
                        format!("≤ {SLOTTED_REDIS_US_PER_DECISION_TARGET:.0}: met")
                    }
                    Some(m) => format!(
                        "≤ {SLOTTED_REDIS_US_PER_DECISION_TARGET:.0}: {:.1} over",
                        m - SLOTTED_REDIS_US_PER_DECISION_TARGET
                    ),
                    None => format!("≤ {SLOTTED_REDIS_US_PER_DECISION_TARGET:.0}: not measured"),
                },
            ),
        };
        let _ = writeln!(
            s,
            "| {} | {counters} | {run} | {} | {} | {} | {target} |",
            v.name,
            opt(cell.figure(|r| r.decisions).map(|s| s.median), thousands),
            spread_text(per_decision, |x| format!("{x:.1}")),
            opt(calls.map(|s| s.median), |x| format!("{x:.3}")),
        );
    }
    s.push('\n');
}

#[cfg(test)]
mod tests;
