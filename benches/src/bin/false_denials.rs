//! Measures slotted counters' false-denial rate against the exact rule (see
//! `rl_benches::false_denials`) and writes `false-denials.md` and `false-denials.json`.
//! Run it with `bash scripts/false-denials.sh` (writes to docs/benchmarks/).

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use rl_benches::false_denials::{Scenario, Tally, run};
use serde::Serialize;

const USAGE: &str = "\
false_denials: slotted counters' false denials against the exact rule (docs/benchmarks/)

  --out DIR      false-denials.md and false-denials.json (default: target/false-denials)
  --windows N    windows of traffic per run, after a first one not counted (default 100)
  --seeds N      runs per scenario, each with its own arrivals (default 5)
";

const LIMITS: [u64; 2] = [100, 1_000];
const WINDOW_SECONDS: u64 = 60;
/// The coarsest precision validation accepts, the default, the finest.
const SLOTS: [u64; 3] = [10, 60, 120];
const LOADS: [f64; 4] = [0.5, 1.0, 1.5, 3.0];

struct Options {
    out: PathBuf,
    windows: u64,
    seeds: u64,
}

fn options() -> Result<Option<Options>, String> {
    let mut opts = Options {
        out: PathBuf::from("target/false-denials"),
        windows: 100,
        seeds: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{arg}: a positive whole number, not {v:?}"))
        };
        match arg.as_str() {
            "--out" => opts.out = PathBuf::from(value()?),
            "--windows" => opts.windows = number(value()?)?,
            "--seeds" => opts.seeds = number(value()?)?,
            "--help" | "-h" => return Ok(None),
            other => return Err(format!("unknown option {other}\n\n{USAGE}")),
        }
    }
    Ok(Some(opts))
}

/// Median and range of a figure over the seeds.
#[derive(Debug, Clone, Copy, Serialize)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

fn spread(mut xs: Vec<f64>) -> Spread {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let median = if n == 0 {
        0.0
    } else if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    };
    Spread {
        median,
        min: xs.first().copied().unwrap_or(0.0),
        max: xs.last().copied().unwrap_or(0.0),
    }
}

#[derive(Serialize)]
struct Row {
    scenario: Scenario,
    runs: Vec<Tally>,
    /// Shares of all requests (after the first window).
    slotted_denied: Spread,
    exact_denied: Spread,
    /// Slotted minus exact denials, a share of all requests (per seed, then median): what an
    /// identity loses to slots.
    extra_denied: Spread,
    false_denied: Spread,
    /// Share of the slotted counter's denials that the exact rule would have admitted.
    false_share_of_denials: Spread,
    max_admitted_in_window: u64,
}

fn percent(x: f64) -> String {
    format!("{:.2} %", 100.0 * x)
}

fn cell(s: Spread) -> String {
    format!(
        "{} ({}–{})",
        percent(s.median),
        percent(s.min),
        percent(s.max)
    )
}

fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn report(rows: &[Row], opts: &Options, commit: &str) -> String {
    let mut s = format!(
        "# Slotted counters: false denials\n\n\
         Written by `bash scripts/false-denials.sh` (`benches/src/bin/false_denials.rs`, \
         `benches/src/false_denials.rs`) at commit `{commit}`; deterministic for its seeds.\n\n\
         One identity, one window of {WINDOW_SECONDS} s, Poisson arrivals at a share of the \
         limit (load 100 % = `limit` requests per window on average), {windows} windows per \
         run after a first one that is not counted, {seeds} runs (seeds) per row: median \
         (min–max). The slotted counter is the control plane's in-memory store on a manual \
         clock (the Redis script keeps the same slots; the oracle tests hold both to the same \
         rule). A **false denial** is a slotted denial that the exact rule would admit on the \
         same history: fewer than `limit` admitted requests in (t − W, t]. The exact column is \
         an exact counter fed the same arrivals (its own history), for reference, and \
         *slotted − exact* the difference (median of the per-seed differences): the share of \
         requests an identity loses to slots. Under overload most false denials change which \
         requests are admitted, not how many: the room a slotted counter refuses early it \
         grants when the slot leaves. Shares are of all requests; *false / slotted denials* is \
         the share of the slotted denials that were false. \
         Slotted counters never admitted more than the limit in any window (largest count \
         seen: the `max in window` column).\n\n\
         | limit | slots (g) | load | slotted denied | exact denied | slotted − exact | false denials | false / slotted denials | max in window |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        windows = opts.windows,
        seeds = opts.seeds,
    );
    for r in rows {
        let sc = r.scenario;
        s.push_str(&format!(
            "| {} | {} ({} s) | {:.0} % | {} | {} | {} | {} | {} | {} |\n",
            sc.limit,
            sc.slots,
            WINDOW_SECONDS as f64 / sc.slots as f64,
            sc.load * 100.0,
            cell(r.slotted_denied),
            cell(r.exact_denied),
            cell(r.extra_denied),
            cell(r.false_denied),
            cell(r.false_share_of_denials),
            r.max_admitted_in_window,
        ));
    }
    s
}

async fn measure(opts: &Options) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for limit in LIMITS {
        for slots in SLOTS {
            for load in LOADS {
                let scenario = Scenario {
                    limit,
                    window_seconds: WINDOW_SECONDS,
                    slots,
                    load,
                };
                let mut runs = Vec::new();
                for seed in 1..=opts.seeds {
                    runs.push(run(scenario, seed * 7_919 + limit + slots, opts.windows).await?);
                }
                let of = |f: fn(&Tally) -> (u64, u64)| {
                    spread(
                        runs.iter()
                            .map(|t| {
                                let (part, whole) = f(t);
                                Tally::share(part, whole)
                            })
                            .collect(),
                    )
                };
                let row = Row {
                    scenario,
                    slotted_denied: of(|t| (t.slotted_denied, t.requests)),
                    exact_denied: of(|t| (t.exact_denied, t.requests)),
                    extra_denied: spread(
                        runs.iter()
                            .map(|t| {
                                Tally::share(t.slotted_denied, t.requests)
                                    - Tally::share(t.exact_denied, t.requests)
                            })
                            .collect(),
                    ),
                    false_denied: of(|t| (t.false_denied, t.requests)),
                    false_share_of_denials: of(|t| (t.false_denied, t.slotted_denied)),
                    max_admitted_in_window: runs
                        .iter()
                        .map(|t| t.max_admitted_in_window)
                        .max()
                        .unwrap_or(0),
                    runs,
                };
                eprintln!(
                    "limit {limit}, {slots} slots, load {:.0} %: false denials {}",
                    load * 100.0,
                    cell(row.false_denied)
                );
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let opts = match options() {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("false_denials: {err}");
            return ExitCode::from(2);
        }
    };
    let rows = match measure(&opts).await {
        Ok(rows) => rows,
        Err(err) => {
            eprintln!("false_denials: {err}");
            return ExitCode::FAILURE;
        }
    };
    let commit = commit();
    let json = serde_json::json!({
        "commit": commit,
        "window_seconds": WINDOW_SECONDS,
        "windows": opts.windows,
        "seeds": opts.seeds,
        "rows": rows,
    });
    let written = std::fs::create_dir_all(&opts.out)
        .and_then(|()| {
            std::fs::write(
                opts.out.join("false-denials.md"),
                report(&rows, &opts, &commit),
            )
        })
        .and_then(|()| {
            std::fs::write(
                opts.out.join("false-denials.json"),
                serde_json::to_string_pretty(&json).unwrap_or_default() + "\n",
            )
        });
    if let Err(err) = written {
        eprintln!("false_denials: {}: {err}", opts.out.display());
        return ExitCode::FAILURE;
    }
    eprintln!(
        "false_denials: wrote {}/false-denials.{{md,json}}",
        opts.out.display()
    );
    if rows
        .iter()
        .any(|r| r.max_admitted_in_window > r.scenario.limit)
    {
        eprintln!("false_denials: a slotted counter admitted more than its limit in a window");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
