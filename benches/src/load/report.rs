//! The Markdown report: throughput and latency per configuration and phase, the success
//! criteria, and where the time goes.

use std::fmt::Write as _;
use std::time::Duration;

use crate::stack::{StoreKind, Variant};
use crate::{Options, Phase, RunRecord};

pub struct Input<'a> {
    pub opts: &'a Options,
    pub variants: &'a [Variant],
    pub records: &'a [RunRecord],
    pub failures: &'a [String],
    pub ceiling: f64,
    pub ceiling_source: &'a str,
    pub elapsed: Duration,
}

const NA: &str = "n/a";

fn thousands(n: f64) -> String {
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

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| NA.to_string())
}

fn find<'a>(
    records: &'a [RunRecord],
    variant: &str,
    phase: Phase,
    connections: u32,
) -> Option<&'a RunRecord> {
    records
        .iter()
        .find(|r| r.variant == variant && r.phase == phase && r.connections == connections)
}

fn find_rate<'a>(
    records: &'a [RunRecord],
    variant: &str,
    rate: Option<f64>,
) -> Option<&'a RunRecord> {
    records
        .iter()
        .find(|r| r.variant == variant && r.phase == Phase::Fixed && r.target_rate == rate)
}

fn cpu(r: &RunRecord, name: &str) -> Option<f64> {
    r.cpu_us_per_request.get(name).copied()
}

/// Control-plane failures the filter saw (and answered per its fail_open).
fn cp_errors(r: &RunRecord) -> Option<f64> {
    if r.filter_counters.is_empty() {
        return None;
    }
    Some(
        r.filter_counters
            .get("control_plane_errors")
            .copied()
            .unwrap_or(0.0),
    )
}

pub fn progress_line(r: &RunRecord) -> String {
    let l = &r.load;
    let mut s = format!(
        "[{}] {} c={}{}: {} req/s, p50/p95/p99 {}/{}/{} ms, non-2xx {}, socket errors {}",
        r.variant,
        r.phase.name(),
        r.connections,
        r.target_rate
            .map(|q| format!(" q={q:.0}"))
            .unwrap_or_default(),
        thousands(l.rps),
        ms(l.p50_ms),
        ms(l.p95_ms),
        ms(l.p99_ms),
        l.non_2xx,
        l.socket_errors
    );
    let _ = write!(s, "; CPU µs/req");
    for (name, v) in &r.cpu_us_per_request {
        let _ = write!(s, " {name} {v:.0}");
    }
    if let Some(e) = cp_errors(r).filter(|&e| e > 0.0) {
        let _ = write!(s, "; control-plane errors {e:.0}");
    }
    if let Some(a) = &l.abuse {
        let _ = write!(
            s,
            "; good 429 {} of {}, max good usage {:.0}%, abuse admitted {}",
            a.good_429,
            a.good_ok + a.good_429 + a.good_other,
            a.good_max_used * 100.0,
            a.abuse_ok
        );
    }
    s
}

pub fn render(input: &Input) -> String {
    let o = input.opts;
    let records = input.records;
    let mut s = String::new();
    let _ = writeln!(s, "# Load benchmark report\n");
    let _ = writeln!(
        s,
        "{} configuration(s), {} s per run (warm-up {} s), Envoy `--concurrency` {}, {} CPU(s); \
         total runtime {:.0} s. Configuration 1's max (for the fixed rates and the phase-c \
         limits): {} req/s ({}).\n",
        input.variants.len(),
        o.duration,
        o.warmup,
        o.envoy_concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        input.elapsed.as_secs_f64(),
        thousands(input.ceiling),
        input.ceiling_source
    );
    let _ = writeln!(s, "| config | what |\n|---|---|");
    for v in input.variants {
        let _ = writeln!(s, "| {} | {} |", v.name, v.label);
    }
    s.push('\n');

    closed_loop(&mut s, input);
    fixed_rate(&mut s, input);
    criteria(&mut s, input);
    where_time_goes(&mut s, input);

    if !input.failures.is_empty() {
        let _ = writeln!(s, "## Failures\n");
        for f in input.failures {
            let _ = writeln!(s, "- {}", f.replace('\n', " / "));
        }
        s.push('\n');
    }
    if records.is_empty() {
        let _ = writeln!(s, "No run completed.");
    }
    s
}

fn closed_loop(s: &mut String, input: &Input) {
    let rows: Vec<&RunRecord> = input
        .records
        .iter()
        .filter(|r| r.phase != Phase::Fixed)
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Throughput, closed loop (wrk -t2)\n\n\
         Phase a: 10,000 identities, b: 100 identities, c: abuse mix (90% over-limit \
         identities, 10% good ones). × cfg 1 is the ratio to configuration 1 in the same phase \
         and connection count. non-2xx counts 429s (expected in phase c only). CP errors: \
         decision calls that failed or timed out (answered by the filter's fail_open).\n"
    );
    let _ = writeln!(
        s,
        "| config | phase | conns | req/s | × cfg 1 | p50 ms | p95 ms | p99 ms | non-2xx | socket errors | CP errors |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let base = find(input.records, "1", r.phase, r.connections);
        let ratio = base
            .filter(|b| b.load.rps > 0.0)
            .map(|b| r.load.rps / b.load.rps);
        let _ = writeln!(
            s,
            "| {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.variant,
            r.phase.name(),
            r.phase.describe(),
            r.connections,
            thousands(r.load.rps),
            opt(ratio, |x| format!("{x:.2}")),
            ms(r.load.p50_ms),
            ms(r.load.p95_ms),
            ms(r.load.p99_ms),
            r.load.non_2xx,
            r.load.socket_errors,
            opt(cp_errors(r), |x| format!("{x:.0}")),
        );
    }
    s.push('\n');

    let abuse: Vec<&RunRecord> = input
        .records
        .iter()
        .filter(|r| r.phase == Phase::C && r.load.abuse.is_some())
        .collect();
    if !abuse.is_empty() {
        let _ = writeln!(
            s,
            "Phase c in detail (from each response's `X-RateLimit-*` headers; configurations \
             without our filter send none, so their responses are \"unlabelled\"):\n\n\
             | config | conns | good requests | good 429 | good max usage of limit | abuse requests | abuse admitted | unlabelled |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in abuse {
            let Some(a) = &r.load.abuse else { continue };
            let good = a.good_ok + a.good_429 + a.good_other;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.variant,
                r.connections,
                thousands(good as f64),
                a.good_429,
                if good > 0 {
                    format!("{:.0}%", a.good_max_used * 100.0)
                } else {
                    NA.to_string()
                },
                thousands((a.abuse_ok + a.abuse_429 + a.abuse_other) as f64),
                a.abuse_ok,
                thousands(a.unlabelled as f64),
            );
        }
        s.push('\n');
    }
}

fn fixed_rate(s: &mut String, input: &Input) {
    let rows: Vec<&RunRecord> = input
        .records
        .iter()
        .filter(|r| r.phase == Phase::Fixed)
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Latency at a fixed rate, open loop (oha -q, {} connections, latency from each \
         request's scheduled time)\n\n\
         One identity (oha sends the same headers with every request). Added p95 is the \
         difference to configuration 1 at the same rate (SC-002: < 5 ms). A rate above a \
         configuration's capacity shows as achieved < target and a large p95.\n",
        input.opts.rate_conns
    );
    let _ = writeln!(
        s,
        "| config | target req/s | achieved req/s | p50 ms | p95 ms | p99 ms | added p95 ms | non-2xx | errors |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let base = find_rate(input.records, "1", r.target_rate);
        let added = base.map(|b| r.load.p95_ms - b.load.p95_ms);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.variant,
            opt(r.target_rate, thousands),
            thousands(r.load.rps),
            ms(r.load.p50_ms),
            ms(r.load.p95_ms),
            ms(r.load.p99_ms),
            if r.variant == "1" {
                "—".to_string()
            } else {
                opt(added, |x| format!("{x:+.2}"))
            },
            r.load.non_2xx,
            r.load.socket_errors,
        );
    }
    s.push('\n');
}

fn verdict(ok: bool) -> &'static str {
    if ok { "pass" } else { "FAIL" }
}

fn criteria(s: &mut String, input: &Input) {
    let records = input.records;
    let mut lines = Vec::new();
    let limited: Vec<&Variant> = input
        .variants
        .iter()
        .filter(|v| v.uses_control_plane())
        .collect();
    let first_conns = input.opts.conns.first().copied().unwrap_or(100);
    for v in &limited {
        if let (Some(r), Some(b)) = (
            find(records, &v.name, Phase::A, first_conns),
            find(records, "1", Phase::A, first_conns),
        ) && b.load.rps > 0.0
        {
            let ratio = r.load.rps / b.load.rps;
            let target = if v.store == StoreKind::Redis {
                " (target ≥ 0.45, stretch 0.6)"
            } else {
                ""
            };
            lines.push(format!(
                "| throughput | {} | phase a, {first_conns} connections: {:.2} × configuration 1{target} | {} |",
                v.name,
                ratio,
                if v.store == StoreKind::Redis {
                    if ratio >= 0.6 {
                        "pass (stretch)"
                    } else {
                        verdict(ratio >= 0.45)
                    }
                } else {
                    "—"
                }
            ));
        }
        for rate in &input.opts.rates {
            let rate = (rate * input.ceiling).round();
            let q = Some(rate);
            if let (Some(r), Some(b)) = (find_rate(records, &v.name, q), find_rate(records, "1", q))
            {
                let added = r.load.p95_ms - b.load.p95_ms;
                let saturated = r.load.rps < 0.95 * rate;
                lines.push(format!(
                    "| SC-002 | {} | added p95 at {} req/s: {added:+.2} ms{} | {} |",
                    v.name,
                    thousands(rate),
                    if saturated {
                        " (rate above this configuration's capacity)"
                    } else {
                        ""
                    },
                    verdict(added < 5.0)
                ));
            }
        }
        let big = input.opts.conns.iter().copied().max().unwrap_or(1000);
        if let (Some(a), Some(b)) = (
            find(records, &v.name, Phase::A, big),
            find(records, &v.name, Phase::B, big),
        ) && b.load.p95_ms > 0.0
        {
            let ratio = a.load.p95_ms / b.load.p95_ms;
            let throttled: u64 = records
                .iter()
                .filter(|r| r.variant == v.name && matches!(r.phase, Phase::A | Phase::B))
                .map(|r| r.load.non_2xx)
                .sum();
            lines.push(format!(
                "| SC-003 | {} | {big} connections: p95 with 10,000 identities {} ms vs 100 identities {} ms = {ratio:.2}× (≤ 1.25); responses ≥ 400 in phases a and b: {throttled} | {} |",
                v.name,
                ms(a.load.p95_ms),
                ms(b.load.p95_ms),
                verdict(ratio <= 1.25 && throttled == 0)
            ));
        }
        for r in records
            .iter()
            .filter(|r| r.variant == v.name && r.phase == Phase::C)
        {
            if let Some(a) = &r.load.abuse {
                let good = a.good_ok + a.good_429 + a.good_other;
                let valid = a.good_max_used <= 0.8 && good > 0;
                lines.push(format!(
                    "| SC-005 | {} | phase c, {} connections: {} of {} good requests got 429; good identities used at most {:.0}% of their limit{}; over-limit identities admitted: {} | {} |",
                    v.name,
                    r.connections,
                    a.good_429,
                    thousands(good as f64),
                    a.good_max_used * 100.0,
                    if valid { "" } else { " (above 80%: not a valid SC-005 check)" },
                    a.abuse_ok,
                    if valid {
                        verdict(a.good_429 == 0 && a.good_other == 0)
                    } else {
                        "n/a"
                    }
                ));
            }
        }
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Targets and success criteria\n\n| criterion | config | measured | verdict |\n|---|---|---|---|"
    );
    for l in lines {
        let _ = writeln!(s, "{l}");
    }
    s.push('\n');
}

fn where_time_goes(s: &mut String, input: &Input) {
    let records = input.records;
    let conns = input.opts.conns.first().copied().unwrap_or(100);
    let runs: Vec<&RunRecord> = input
        .variants
        .iter()
        .filter_map(|v| find(records, &v.name, Phase::A, conns))
        .collect();
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Where the time goes\n\n\
         CPU time per request of each process (µs, user + system from /proc, phase a, {conns} \
         connections). \"other\" is the rest of the machine's busy time during the run (other \
         users of this box, the kernel's softirq work not charged to a process): a large value \
         means a noisy run.\n"
    );
    let _ = writeln!(
        s,
        "| config | req/s | Envoy | control plane | Redis | upstream | load generator | other | total | busy cores |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &runs {
        let total: f64 = r.cpu_us_per_request.values().sum();
        let f = |name: &str| opt(cpu(r, name), |x| format!("{x:.1}"));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {total:.1} | {:.2} |",
            r.variant,
            thousands(r.load.rps),
            f("envoy"),
            f("control_plane"),
            f("redis"),
            f("upstream"),
            f("load_generator"),
            f("other"),
            r.busy_cores
        );
    }
    s.push('\n');

    // Per stage, for the configurations with our filter.
    let lowest_rate = input
        .opts
        .rates
        .iter()
        .copied()
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.min(r))))
        .map(|r| (r * input.ceiling).round());
    let mut cols: Vec<(String, &RunRecord)> = Vec::new();
    for v in input.variants.iter().filter(|v| v.uses_control_plane()) {
        if let Some(r) = find(records, &v.name, Phase::A, conns) {
            cols.push((format!("{} a c={conns}", v.name), r));
        }
        if let Some(r) = lowest_rate.and_then(|q| find_rate(records, &v.name, Some(q))) {
            cols.push((
                format!(
                    "{} {} req/s",
                    v.name,
                    thousands(r.target_rate.unwrap_or(0.0))
                ),
                r,
            ));
        }
    }
    if cols.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "Per stage of a decision (µs per request; closed-loop runs are saturated, so their \
         wall times include queueing; the fixed-rate run at the lowest rate is not):\n"
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
    let passthrough = |r: &RunRecord| {
        let base = if r.phase == Phase::Fixed {
            find_rate(records, "1", r.target_rate)
        } else {
            find(records, "1", r.phase, r.connections)
        };
        base.and_then(|b| cpu(b, "envoy"))
    };
    type Row<'a> = (
        &'a str,
        &'a str,
        Box<dyn Fn(&RunRecord) -> Option<f64> + 'a>,
    );
    let rows: Vec<Row> = vec![
        (
            "filter + callout inside Envoy (CPU)",
            "Envoy CPU/req − configuration 1's in the same run",
            Box::new(move |r: &RunRecord| Some(cpu(r, "envoy")? - passthrough(r)?)),
        ),
        (
            "Envoy callout, wall (mean)",
            "`cluster.rate_limit_control_plane.upstream_rq_time` (whole ms, so coarse)",
            Box::new(|r: &RunRecord| r.callout.as_ref()?.mean().map(|m| m * 1e3)),
        ),
        (
            "Envoy callout, wall (p95)",
            "same histogram, interpolated in Envoy's buckets",
            Box::new(|r: &RunRecord| r.callout.as_ref()?.quantile(0.95).map(|m| m * 1e3)),
        ),
        (
            "Envoy request, wall (mean)",
            "`http.ingress.downstream_rq_time`",
            Box::new(|r: &RunRecord| r.envoy_request.as_ref()?.mean().map(|m| m * 1e3)),
        ),
        (
            "control-plane handler, wall (mean)",
            "`rate_limit_check_duration_seconds` (`/metrics`)",
            Box::new(|r: &RunRecord| r.cp_check.as_ref()?.mean().map(|m| m * 1e6)),
        ),
        (
            "control plane (CPU)",
            "/proc/<pid>/stat",
            Box::new(|r: &RunRecord| cpu(r, "control_plane")),
        ),
        (
            "Redis script (per call)",
            "`INFO commandstats` evalsha usec_per_call",
            Box::new(|r: &RunRecord| r.redis_script.map(|(_, us)| us)),
        ),
        (
            "Redis (CPU)",
            "/proc/<pid>/stat",
            Box::new(|r: &RunRecord| cpu(r, "redis")),
        ),
        (
            "decision calls per request",
            "callouts / requests",
            Box::new(|r: &RunRecord| {
                Some(r.callout.as_ref()?.count / r.load.requests.max(1) as f64)
            }),
        ),
        (
            "new control-plane connections",
            "`upstream_cx_total` over the run",
            Box::new(|r: &RunRecord| r.callout_connections_opened),
        ),
    ];
    for (stage, source, f) in &rows {
        let _ = write!(s, "| {stage} | {source} |");
        for (_, r) in &cols {
            let v = f(r);
            let text = match (*stage, v) {
                ("decision calls per request", Some(x)) => format!("{x:.2}"),
                ("new control-plane connections", Some(x)) => format!("{x:.0}"),
                (_, Some(x)) => format!("{x:.1}"),
                (_, None) => NA.to_string(),
            };
            let _ = write!(s, " {text} |");
        }
        s.push('\n');
    }
    s.push('\n');
}
