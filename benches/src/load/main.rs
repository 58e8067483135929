//! The load benchmark's orchestrator (run it with `bash scripts/load-bench.sh`; what it
//! measures and how to read it: docs/BENCHMARKS.md).
//!
//! It starts Redis and the demo upstream once, then starts each configuration of
//! `configs::TABLE` several times, interleaved, and drives the same traffic through each
//! start: wrk closed loop (phases a, b, c) and the open-loop generator at fixed rates. Around
//! every run it reads CPU time per process, Envoy's and the control plane's histograms and
//! counters and Redis's command statistics; after it, what the control plane counted. Once,
//! it measures what a saturated counter costs in Redis. It writes `report.md` (verdicts
//! computed from the runs, medians and spreads) and `results.json` (every run, the summaries,
//! the verdicts, and the commit measured).

mod bench;
mod configs;
mod http;
mod measure;
mod memory;
mod plan;
mod provenance;
mod record;
mod report;
mod stack;
mod summary;
mod tools;
mod verdicts;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use rl_tests::free_port;

use bench::Bench;
use configs::{Programs, StoreKind, Variant};
use provenance::Provenance;
use stack::Spawned;
use summary::Cells;

/// The configuration every other one is compared with.
pub const PASSTHROUGH: &str = "1";

const USAGE: &str = "\
load_bench: the load benchmark (use `bash scripts/load-bench.sh [OPTIONS]`; docs/BENCHMARKS.md)

  --out DIR               report.md, results.json, logs/ (default: <target>/load-bench)
  --duration SECS         length of each measured run (default 15)
  --warmup SECS           unmeasured load after each Envoy start (default 3)
  --repeats N             starts of each configuration, interleaved (default 3)
  --configs LIST          one round of configurations, in order (default 1,4,4s,5,3,w,2 then every
                          --variant); a name listed twice runs twice per round
  --phases LIST           a (10,000 identities), b (100), c (abuse mix), fixed (open loop),
                          memory (Redis MEMORY USAGE of saturated counters) (default all)
  --conns LIST            connection counts of phases a and c; b runs at the largest
                          (default 100,1000)
  --rates LIST            fixed rates as shares of configuration 1's throughput
                          (default 0.1,0.25)
  --rate-conns N          connections of the fixed-rate runs (default 100)
  --ceiling RPS           configuration 1's throughput when it is not measured in this run
  --envoy-concurrency N   Envoy worker threads (default 2)
  --variant SPEC          an extra configuration, e.g. for experiments:
                          name=NAME,base=1|2|3|4|4s|5|w[,label=TEXT][,cp-bin=PATH][,wasm=PATH]
                          [,envoy-concurrency=N][,cluster-extra=YAML_FILE][,filter-yaml=YAML_FILE]
                          [,cp-env=KEY=VALUE]...[,cp-arg=ARG]...[,counters=exact|slotted]
  --envoy, --control-plane, --upstream, --wasm, --wrk, --open-loop, --redis-server PATH
                          programs (defaults: the workspace's release builds, .venv Envoy,
                          PATH)
";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    A,
    B,
    C,
    Fixed,
    Memory,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::A => "a",
            Phase::B => "b",
            Phase::C => "c",
            Phase::Fixed => "fixed",
            Phase::Memory => "memory",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Phase::A => "10,000 identities",
            Phase::B => "100 identities",
            Phase::C => "abuse mix",
            Phase::Fixed => "fixed rate",
            Phase::Memory => "saturated counters",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Options {
    pub out: PathBuf,
    pub duration: u64,
    pub warmup: u64,
    pub repeats: u32,
    pub configs: Option<Vec<String>>,
    pub phases: Vec<Phase>,
    pub conns: Vec<u32>,
    pub rates: Vec<f64>,
    pub rate_conns: u32,
    pub ceiling: Option<f64>,
    pub envoy_concurrency: u32,
    pub variant_specs: Vec<String>,
    pub envoy: PathBuf,
    pub control_plane: PathBuf,
    pub upstream: PathBuf,
    pub wasm: PathBuf,
    pub wrk: PathBuf,
    pub open_loop: PathBuf,
    pub redis_server: PathBuf,
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| rl_tests::repo_root().join("target"))
}

fn on_path(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|c| c.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(program))
}

fn list<T>(text: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    let items: Vec<T> = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse(s.trim()).ok_or_else(|| format!("bad list item `{s}`")))
        .collect::<Result<_, _>>()?;
    if items.is_empty() {
        return Err(format!("empty list `{text}`"));
    }
    Ok(items)
}

/// The options from the command line (`args` without the program name); `None`: help.
pub fn parse_options(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let target = target_dir();
    let mut o = Options {
        out: target.join("load-bench"),
        duration: 15,
        warmup: 3,
        repeats: 3,
        configs: None,
        phases: vec![Phase::A, Phase::B, Phase::C, Phase::Fixed, Phase::Memory],
        conns: vec![100, 1000],
        rates: vec![0.1, 0.25],
        rate_conns: 100,
        ceiling: None,
        envoy_concurrency: 2,
        variant_specs: Vec::new(),
        envoy: PathBuf::new(),
        control_plane: target.join("release/control-plane"),
        upstream: target.join("release/demo-upstream"),
        wasm: target.join("wasm32-wasip1/release/rate_limit_filter.wasm"),
        wrk: on_path("wrk"),
        open_loop: target.join("release/open_loop"),
        redis_server: PathBuf::new(),
    };
    let mut envoy = None;
    let mut redis = None;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--out" => o.out = PathBuf::from(value),
            "--duration" => o.duration = num(&value)?.max(1),
            "--warmup" => o.warmup = num(&value)?,
            "--repeats" => o.repeats = num(&value)?.clamp(1, 100) as u32,
            "--configs" => o.configs = Some(list(&value, |s| Some(s.to_string()))?),
            "--phases" => {
                o.phases = list(&value, |s| match s {
                    "a" => Some(Phase::A),
                    "b" => Some(Phase::B),
                    "c" => Some(Phase::C),
                    "fixed" | "f" => Some(Phase::Fixed),
                    "memory" | "m" => Some(Phase::Memory),
                    _ => None,
                })?
            }
            "--conns" => o.conns = list(&value, |s| s.parse().ok().filter(|&c| c > 0))?,
            "--rates" => {
                o.rates = list(&value, |s| {
                    s.parse().ok().filter(|&r: &f64| r > 0.0 && r.is_finite())
                })?
            }
            "--rate-conns" => o.rate_conns = num(&value)?.max(1) as u32,
            "--ceiling" => o.ceiling = Some(num(&value)?.max(1) as f64),
            "--envoy-concurrency" => o.envoy_concurrency = num(&value)?.max(1) as u32,
            "--variant" => o.variant_specs.push(value),
            "--envoy" => envoy = Some(PathBuf::from(value)),
            "--control-plane" => o.control_plane = PathBuf::from(value),
            "--upstream" => o.upstream = PathBuf::from(value),
            "--wasm" => o.wasm = PathBuf::from(value),
            "--wrk" => o.wrk = PathBuf::from(value),
            "--open-loop" => o.open_loop = PathBuf::from(value),
            "--redis-server" => redis = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown option {flag}\n\n{USAGE}")),
        }
    }
    o.envoy = envoy.unwrap_or_else(rl_tests::prereq::envoy);
    o.redis_server = redis.unwrap_or_else(rl_tests::prereq::redis_server);
    Ok(Some(o))
}

fn check_program(what: &str, path: &Path, hint: &str) -> Result<(), String> {
    if path.is_file() {
        Ok(())
    } else {
        Err(format!("{what} not found at {} ({hint})", path.display()))
    }
}

/// The round of configurations to run, and each configuration once (in round order).
fn select(opts: &Options) -> Result<(Vec<Variant>, Vec<String>), String> {
    let bases = configs::table(&Programs {
        control_plane: opts.control_plane.clone(),
        wasm: opts.wasm.clone(),
        envoy_concurrency: opts.envoy_concurrency,
    });
    let mut all = bases.clone();
    for spec in &opts.variant_specs {
        let read = |path: &str| {
            std::fs::read_to_string(path).map_err(|e| format!("--variant {spec}: {path}: {e}"))
        };
        all.push(configs::parse_variant(spec, &bases, read)?);
    }
    let round: Vec<String> = match &opts.configs {
        Some(names) => names.clone(),
        None => configs::DEFAULT_ROUND
            .iter()
            .map(|s| s.to_string())
            .chain(all[bases.len()..].iter().map(|v| v.name.clone()))
            .collect(),
    };
    let mut unique: Vec<Variant> = Vec::new();
    for name in &round {
        let v = all
            .iter()
            .find(|v| &v.name == name)
            .ok_or_else(|| format!("--configs: no configuration named {name}"))?;
        if !unique.iter().any(|u| u.name == v.name) {
            unique.push(v.clone());
        }
    }
    Ok((unique, round))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn run(opts: Options) -> Result<bool, String> {
    let started = Instant::now();
    let build = "bash scripts/load-bench.sh builds it";
    check_program("wrk", &opts.wrk, "apt-get install -y wrk")?;
    check_program("the demo upstream", &opts.upstream, build)?;
    if opts.phases.contains(&Phase::Fixed) {
        check_program("the open-loop generator", &opts.open_loop, build)?;
    }
    let (variants, round) = select(&opts)?;
    for v in &variants {
        if v.uses_control_plane() {
            check_program("the control plane", &v.control_plane, build)?;
        }
        if matches!(
            v.filter,
            configs::FilterKind::Wasm | configs::FilterKind::WasmNoCallout
        ) {
            check_program("the filter", &v.wasm, build)?;
        }
    }
    let memory_variant = variants
        .iter()
        .find(|v| v.store == StoreKind::Redis)
        .cloned()
        .filter(|_| opts.phases.contains(&Phase::Memory));
    if opts.phases.contains(&Phase::Memory) && memory_variant.is_none() {
        eprintln!("note: no configuration on Redis selected: the memory phase does not run");
    }

    let out = opts.out.clone();
    let logs = out.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let provenance = Provenance::collect(
        &rl_tests::repo_root(),
        &opts.envoy,
        &opts.redis_server,
        &opts.wrk,
    );
    if provenance.dirty {
        eprintln!(
            "note: the working tree has uncommitted changes; the report says so ({} paths)",
            provenance.changes.len()
        );
    }
    let keys = plan::Keys::generate();
    let files = keys
        .write_files(&logs)
        .map_err(|e| format!("writing key files: {e}"))?;
    let keys_lua = logs.join("keys.lua");
    let abuse_lua = logs.join("abuse.lua");
    write(&keys_lua, tools::KEYS_LUA)?;
    write(&abuse_lua, tools::ABUSE_LUA)?;

    let upstream_port = free_port();
    let upstream = stack::start_upstream(&opts.upstream, upstream_port, &logs)?;
    let needs_redis = variants.iter().any(|v| v.store == StoreKind::Redis);
    let (redis, redis_url) = if needs_redis {
        let port = free_port();
        let proc = stack::start_redis(&opts.redis_server, port, &logs)?;
        (Some(proc), Some(stack::redis_url(port)))
    } else {
        (None, None)
    };
    let (ceiling, ceiling_source) = match opts.ceiling {
        Some(c) => (c, "given with --ceiling".to_string()),
        None => (
            25_000.0,
            "assumed: configuration 1 did not run before the runs that needed it".to_string(),
        ),
    };
    let mut bench = Bench {
        logs: logs.clone(),
        keys,
        files,
        keys_lua,
        abuse_lua,
        upstream_port,
        upstream_pid: upstream.pid(),
        redis_pid: redis.as_ref().map(Spawned::pid),
        redis_url,
        http: http::Http::new()?,
        ceiling,
        ceiling_source,
        ceiling_measured: false,
        records: Vec::new(),
        failures: Vec::new(),
        run_no: 0,
        opts,
    };
    let by_name = |name: &String| variants.iter().find(|v| &v.name == name);
    let round_variants: Vec<&Variant> = round.iter().filter_map(by_name).collect();
    for (variant, repeat) in configs::interleave(&round_variants, bench.opts.repeats) {
        if let Err(err) = bench.run_instance(variant, repeat) {
            let msg = format!("configuration {} start {repeat}: {err}", variant.name);
            eprintln!("!! {msg}");
            bench.failures.push(msg);
        }
    }
    let memory = match (&memory_variant, &bench.redis_url) {
        (Some(v), Some(url)) => {
            eprintln!("==> memory: saturated counters in Redis");
            match memory::measure(v, url, &logs, &bench.http) {
                Ok(m) => Some(m),
                Err(err) => {
                    let msg = format!("memory phase: {err}");
                    eprintln!("!! {msg}");
                    bench.failures.push(msg);
                    None
                }
            }
        }
        _ => None,
    };
    drop(redis);
    drop(upstream);

    let elapsed = started.elapsed();
    let cells = Cells::new(&bench.records);
    let verdicts = verdicts::all(&verdicts::Evidence {
        variants: &variants,
        cells: &cells,
        conns: &bench.opts.conns,
        rates: &bench.opts.rates,
        rate_conns: bench.opts.rate_conns,
        ceiling: bench.ceiling,
    });
    let text = report::render(&report::Input {
        opts: &bench.opts,
        provenance: &provenance,
        variants: &variants,
        round: &round,
        records: &bench.records,
        cells: &cells,
        verdicts: &verdicts,
        memory: memory.as_deref(),
        failures: &bench.failures,
        ceiling: bench.ceiling,
        ceiling_source: &bench.ceiling_source,
        elapsed,
    });
    println!("{text}");
    let report_path = out.join("report.md");
    write(&report_path, &text)?;
    let results = serde_json::json!({
        "provenance": provenance,
        "options": bench.opts,
        "elapsed_s": elapsed.as_secs_f64(),
        "ceiling": {"rps": bench.ceiling, "source": bench.ceiling_source},
        "configurations": variants,
        "round": round,
        "verdicts": verdicts,
        "summary": summary::summaries(&cells),
        "memory": memory,
        "runs": bench.records,
        "failures": bench.failures,
    });
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    write(&out.join("results.json"), &json)?;
    eprintln!(
        "report: {} (raw figures: results.json, logs: logs/) in {:.0} s",
        report_path.display(),
        elapsed.as_secs_f64()
    );
    Ok(bench.failures.is_empty())
}

fn main() -> ExitCode {
    let opts = match parse_options(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("load_bench: {err}");
            return ExitCode::FAILURE;
        }
    };
    match run(opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(err) => {
            eprintln!("load_bench: {err}");
            ExitCode::FAILURE
        }
    }
}
