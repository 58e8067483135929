//! Where the time goes, before and after: two load-benchmark runs (their `results.json`)
//! side by side, per stage, for phase a at one connection count. Each figure is the median
//! over a run's starts, computed here from the runs' raw records, so nothing is retyped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// Configuration 1, the reference of every ratio.
const PASSTHROUGH: &str = "1";

/// One row: a name, how it is computed, and the figure of a configuration's runs.
struct Stage {
    name: &'static str,
    source: &'static str,
    digits: usize,
    figure: fn(&Run, &Run) -> Option<f64>,
}

/// One phase-a run of a configuration, the fields the stages read.
#[derive(Debug, Clone, Default)]
pub struct Run {
    rps: f64,
    requests: f64,
    decisions: Option<f64>,
    cpu: BTreeMap<String, f64>,
    redis_cpu_us: Option<f64>,
    script_calls: Option<f64>,
    commands: Option<f64>,
}

impl Run {
    fn cpu(&self, name: &str) -> Option<f64> {
        self.cpu.get(name).copied()
    }

    fn per_decision(&self, total: f64) -> Option<f64> {
        let d = self.decisions.filter(|d| *d > 0.0)?;
        Some(total / d)
    }
}

const STAGES: &[Stage] = &[
    Stage {
        name: "throughput (req/s)",
        source: "load generator",
        digits: 0,
        figure: |r, _| Some(r.rps),
    },
    Stage {
        name: "ratio to configuration 1",
        source: "req/s ÷ configuration 1's (medians)",
        digits: 2,
        figure: |r, base| (base.rps > 0.0).then(|| r.rps / base.rps),
    },
    Stage {
        name: "Envoy (CPU µs per request)",
        source: "/proc/<pid>/stat",
        digits: 1,
        figure: |r, _| r.cpu("envoy"),
    },
    Stage {
        name: "filter + callout over configuration 1 (CPU µs)",
        source: "Envoy − configuration 1's Envoy",
        digits: 1,
        figure: |r, base| Some(r.cpu("envoy")? - base.cpu("envoy")?),
    },
    Stage {
        name: "control plane (CPU µs per decision)",
        source: "/proc/<pid>/stat ÷ decisions",
        digits: 1,
        figure: |r, _| r.per_decision(r.cpu("control_plane")? * r.requests),
    },
    Stage {
        name: "Redis (CPU µs per decision)",
        source: "/proc/<pid>/stat ÷ decisions",
        digits: 1,
        figure: |r, _| r.per_decision(r.redis_cpu_us?),
    },
    Stage {
        name: "Redis script calls per request",
        source: "`INFO commandstats`",
        digits: 3,
        figure: |r, _| Some(r.script_calls? / r.requests.max(1.0)),
    },
    Stage {
        name: "Redis commands per request",
        source: "`INFO commandstats`, the script's own included",
        digits: 2,
        figure: |r, _| Some(r.commands? / r.requests.max(1.0)),
    },
    Stage {
        name: "total (CPU µs per request)",
        source: "every process and the rest of the machine",
        digits: 1,
        figure: |r, _| Some(r.cpu.values().sum()),
    },
];

/// A benchmark run's phase-a records at `connections`, by configuration, and its commit.
#[derive(Debug, Default)]
pub struct Results {
    pub commit: String,
    pub runs: BTreeMap<String, Vec<Run>>,
}

/// Reads what the stages need from a `results.json`; an error names what is missing.
pub fn parse(json: &str, connections: u64) -> Result<Results, String> {
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let runs = doc
        .get("runs")
        .and_then(Value::as_array)
        .ok_or("no \"runs\" array")?;
    let commit = doc
        .pointer("/provenance/commit")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let mut out = Results {
        commit,
        runs: BTreeMap::new(),
    };
    for r in runs {
        let phase = r.get("phase").and_then(Value::as_str);
        let conns = r.get("connections").and_then(Value::as_u64);
        if phase != Some("a") || conns != Some(connections) {
            continue;
        }
        let Some(variant) = r.get("variant").and_then(Value::as_str) else {
            continue;
        };
        let num = |path: &str| r.pointer(path).and_then(Value::as_f64);
        let cpu = r
            .get("cpu_us_per_request")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        out.runs.entry(variant.to_string()).or_default().push(Run {
            rps: num("/load/rps").ok_or("a run without load.rps")?,
            requests: num("/load/requests").unwrap_or(0.0),
            decisions: num("/decisions"),
            cpu,
            redis_cpu_us: num("/redis/cpu_us"),
            script_calls: num("/redis/script_calls"),
            commands: num("/redis/commands"),
        });
    }
    Ok(out)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Configuration 1 of a run as the stages compare with it: the medians of its starts'
/// throughput and Envoy CPU.
fn passthrough(results: &Results) -> Option<Run> {
    let runs = results.runs.get(PASSTHROUGH)?;
    let envoy = median(runs.iter().filter_map(|r| r.cpu("envoy")).collect());
    Some(Run {
        rps: median(runs.iter().map(|r| r.rps).collect()).unwrap_or(0.0),
        cpu: envoy
            .map(|e| ("envoy".to_string(), e))
            .into_iter()
            .collect(),
        ..Run::default()
    })
}

/// A configuration's median of a stage over its starts, each against `base`.
fn stage_median(results: &Results, base: &Run, variant: &str, stage: &Stage) -> Option<f64> {
    let runs = results.runs.get(variant)?;
    median(
        runs.iter()
            .filter_map(|r| (stage.figure)(r, base))
            .collect(),
    )
}

/// The markdown table: one row per stage, a before and an after column per configuration
/// both runs measured (configuration 1 first).
pub fn render(before: &Results, after: &Results, connections: u64) -> String {
    let mut variants: Vec<&String> = before
        .runs
        .keys()
        .filter(|v| after.runs.contains_key(*v))
        .collect();
    variants.sort_by_key(|v| (v.as_str() != PASSTHROUGH, v.to_string()));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Phase a, {connections} connections, medians over each run's starts. Before: commit \
         `{}`; after: commit `{}`. Written by `compare_runs` from the two runs' \
         `results.json`.\n",
        before.commit, after.commit
    );
    let _ = write!(s, "| stage | source |");
    for v in &variants {
        let _ = write!(s, " {v} before | {v} after |");
    }
    let _ = write!(s, "\n|---|---|");
    for _ in &variants {
        s.push_str("---:|---:|");
    }
    s.push('\n');
    let runs = [(before, passthrough(before)), (after, passthrough(after))];
    for stage in STAGES {
        let _ = write!(s, "| {} | {} |", stage.name, stage.source);
        for v in &variants {
            for (results, base) in &runs {
                let figure = base
                    .as_ref()
                    .and_then(|base| stage_median(results, base, v, stage));
                match figure {
                    Some(x) => {
                        let _ = write!(s, " {x:.*} |", stage.digits);
                    }
                    None => s.push_str(" n/a |"),
                }
            }
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests;
