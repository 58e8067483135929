//! The load benchmark's orchestrator (run it with `bash scripts/load-bench.sh`; what it
//! measures and how to read it: docs/BENCHMARKS.md).
//!
//! It starts Redis and the demo upstream once, then for each configuration (1 passthrough,
//! 2 Envoy's local_ratelimit, 3 our filter + in-memory control plane, 4 our filter + Redis)
//! a control plane and an Envoy, and drives the same traffic through each: wrk closed loop
//! (phases a, b, c at each connection count) and oha at fixed rates. Around every run it
//! reads CPU time per process, Envoy's and the control plane's histograms and Redis's
//! command statistics, and writes a report (Markdown) and the raw figures (JSON).

mod measure;
mod plan;
mod report;
mod stack;
mod tools;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

use rl_tests::envoy::admin_get;
use rl_tests::free_port;

use measure::{HistDelta, Prom};
use plan::{KeyFiles, Keys};
use stack::{EnvoyPorts, FilterKind, Spawned, StoreKind, Variant};
use tools::{LoadResult, Oha, Wrk};

const USAGE: &str = "\
load_bench: the load benchmark (use `bash scripts/load-bench.sh [OPTIONS]`; docs/BENCHMARKS.md)

  --out DIR               report, raw results, logs (default: <target>/load-bench)
  --duration SECS         length of each measured run (default 10)
  --warmup SECS           unmeasured run after each start (default 3)
  --configs LIST          configurations to run, in order (default 1,2,3,4 then every --variant)
  --phases LIST           a (10,000 identities), b (100), c (abuse mix), fixed (oha) (default all)
  --conns LIST            connection counts of phases a-c (default 100,1000)
  --rates LIST            fixed rates as fractions of configuration 1's max (default 0.1,0.2,0.5)
  --rate-conns N          connections of the fixed-rate runs (default 100)
  --ceiling RPS           configuration 1's max when it is not measured in this run
  --envoy-concurrency N   Envoy worker threads (default 2)
  --variant SPEC          an extra configuration, e.g. for experiments:
                          name=NAME,base=1|2|3|4[,label=TEXT][,cp-bin=PATH][,wasm=PATH]
                          [,envoy-concurrency=N][,cluster-extra=YAML_FILE][,filter-yaml=YAML_FILE]
                          [,cp-env=KEY=VALUE]...[,cp-arg=ARG]...
  --envoy, --control-plane, --upstream, --wasm, --wrk, --oha, --redis-server PATH
                          programs (defaults: the workspace's release builds, .venv Envoy, PATH)
";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    A,
    B,
    C,
    Fixed,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::A => "a",
            Phase::B => "b",
            Phase::C => "c",
            Phase::Fixed => "fixed",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Phase::A => "10,000 identities",
            Phase::B => "100 identities",
            Phase::C => "abuse mix",
            Phase::Fixed => "fixed rate",
        }
    }
}

pub struct Options {
    pub out: PathBuf,
    pub duration: u64,
    pub warmup: u64,
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
    pub oha: PathBuf,
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
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse(s.trim()).ok_or_else(|| format!("bad list item `{s}`")))
        .collect()
}

fn parse_options() -> Result<Options, String> {
    let target = target_dir();
    let oha_default = {
        let p = on_path("oha");
        if p.is_file() {
            p
        } else {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cargo/bin/oha"))
                .unwrap_or(p)
        }
    };
    let mut o = Options {
        out: target.join("load-bench"),
        duration: 10,
        warmup: 3,
        configs: None,
        phases: vec![Phase::A, Phase::B, Phase::C, Phase::Fixed],
        conns: vec![100, 1000],
        rates: vec![0.1, 0.2, 0.5],
        rate_conns: 100,
        ceiling: None,
        envoy_concurrency: 2,
        variant_specs: Vec::new(),
        envoy: PathBuf::new(),
        control_plane: target.join("release/control-plane"),
        upstream: target.join("release/demo-upstream"),
        wasm: target.join("wasm32-wasip1/release/rate_limit_filter.wasm"),
        wrk: on_path("wrk"),
        oha: oha_default,
        redis_server: PathBuf::new(),
    };
    let mut envoy = None;
    let mut redis = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            print!("{USAGE}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--out" => o.out = PathBuf::from(value),
            "--duration" => o.duration = num(&value)?.max(1),
            "--warmup" => o.warmup = num(&value)?,
            "--configs" => o.configs = Some(list(&value, |s| Some(s.to_string()))?),
            "--phases" => {
                o.phases = list(&value, |s| match s {
                    "a" => Some(Phase::A),
                    "b" => Some(Phase::B),
                    "c" => Some(Phase::C),
                    "fixed" | "f" => Some(Phase::Fixed),
                    _ => None,
                })?
            }
            "--conns" => o.conns = list(&value, |s| s.parse().ok().filter(|&c| c > 0))?,
            "--rates" => o.rates = list(&value, |s| s.parse().ok().filter(|&r: &f64| r > 0.0))?,
            "--rate-conns" => o.rate_conns = num(&value)?.max(1) as u32,
            "--ceiling" => o.ceiling = Some(num(&value)? as f64),
            "--envoy-concurrency" => o.envoy_concurrency = num(&value)?.max(1) as u32,
            "--variant" => o.variant_specs.push(value),
            "--envoy" => envoy = Some(PathBuf::from(value)),
            "--control-plane" => o.control_plane = PathBuf::from(value),
            "--upstream" => o.upstream = PathBuf::from(value),
            "--wasm" => o.wasm = PathBuf::from(value),
            "--wrk" => o.wrk = PathBuf::from(value),
            "--oha" => o.oha = PathBuf::from(value),
            "--redis-server" => redis = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown option {flag}\n\n{USAGE}")),
        }
    }
    o.envoy = envoy.unwrap_or_else(rl_tests::prereq::envoy);
    o.redis_server = redis.unwrap_or_else(rl_tests::prereq::redis_server);
    Ok(o)
}

fn base_variants(o: &Options) -> Vec<Variant> {
    let v = |name: &str, label: &str, filter, store| Variant {
        name: name.to_string(),
        label: label.to_string(),
        filter,
        store,
        control_plane: o.control_plane.clone(),
        wasm: o.wasm.clone(),
        envoy_concurrency: o.envoy_concurrency,
        cluster_extra: String::new(),
        filter_yaml: None,
        cp_env: Vec::new(),
        cp_args: Vec::new(),
    };
    vec![
        v("1", "Envoy passthrough", FilterKind::None, StoreKind::None),
        v(
            "2",
            "Envoy local_ratelimit",
            FilterKind::LocalRateLimit,
            StoreKind::None,
        ),
        v(
            "3",
            "filter + control plane, memory",
            FilterKind::Wasm,
            StoreKind::Memory,
        ),
        v(
            "4",
            "filter + control plane, Redis",
            FilterKind::Wasm,
            StoreKind::Redis,
        ),
    ]
}

fn parse_variant(spec: &str, bases: &[Variant]) -> Result<Variant, String> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("--variant {spec}: `{part}` is not key=value"))?;
        fields.push((k.trim().to_string(), v.to_string()));
    }
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let name = get("name").ok_or_else(|| format!("--variant {spec}: name= is required"))?;
    let base = get("base").ok_or_else(|| format!("--variant {spec}: base= is required"))?;
    let mut v = bases
        .iter()
        .find(|b| b.name == base)
        .cloned()
        .ok_or_else(|| format!("--variant {spec}: base must be 1, 2, 3 or 4"))?;
    v.label = format!("{} ({name})", v.label);
    v.name = name;
    let read = |path: &str| {
        std::fs::read_to_string(path).map_err(|e| format!("--variant {spec}: {path}: {e}"))
    };
    for (key, value) in &fields {
        match key.as_str() {
            "name" | "base" => {}
            "label" => v.label = value.clone(),
            "cp-bin" => v.control_plane = PathBuf::from(value),
            "wasm" => v.wasm = PathBuf::from(value),
            "envoy-concurrency" => {
                v.envoy_concurrency = value
                    .parse()
                    .map_err(|_| format!("--variant {spec}: envoy-concurrency"))?
            }
            "cluster-extra" => {
                let mut text = read(value)?;
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                v.cluster_extra = text;
            }
            "filter-yaml" => v.filter_yaml = Some(read(value)?),
            "cp-env" => {
                let (k, val) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--variant {spec}: cp-env=KEY=VALUE"))?;
                v.cp_env.push((k.to_string(), val.to_string()));
            }
            "cp-arg" => v.cp_args.push(value.clone()),
            other => return Err(format!("--variant {spec}: unknown field {other}")),
        }
    }
    Ok(v)
}

/// Everything measured in one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    pub variant: String,
    pub label: String,
    pub phase: Phase,
    pub connections: u32,
    pub target_rate: Option<f64>,
    pub tool: &'static str,
    pub load: LoadResult,
    /// CPU µs per request: envoy, control_plane, redis, upstream, load_generator, other.
    pub cpu_us_per_request: BTreeMap<String, f64>,
    /// Average busy cores of the whole machine during the run.
    pub busy_cores: f64,
    /// Envoy → control plane calls (`upstream_rq_time`, ms).
    pub callout: Option<HistDelta>,
    pub callout_connections_opened: Option<f64>,
    /// Envoy's whole request time (`downstream_rq_time`, ms).
    pub envoy_request: Option<HistDelta>,
    /// The filter's counters (`wasmcustom.rate_limit_filter.*`) over the run.
    pub filter_counters: BTreeMap<String, f64>,
    /// `rate_limit_check_duration_seconds` of the control plane, if it exports it.
    pub cp_check: Option<HistDelta>,
    /// Redis `cmdstat_evalsha`: calls and µs per call.
    pub redis_script: Option<(f64, f64)>,
}

/// Processes whose CPU is accounted per run.
struct Pids {
    envoy: u32,
    control_plane: Option<u32>,
    redis: Option<u32>,
    upstream: u32,
}

impl Pids {
    fn cpu(&self) -> Vec<(&'static str, f64)> {
        let mut v = vec![("envoy", self.envoy), ("upstream", self.upstream)];
        if let Some(p) = self.control_plane {
            v.push(("control_plane", p));
        }
        if let Some(p) = self.redis {
            v.push(("redis", p));
        }
        v.into_iter()
            .map(|(name, pid)| (name, measure::process_cpu_us(pid).unwrap_or(0.0)))
            .collect()
    }
}

struct Ctx {
    opts: Options,
    logs: PathBuf,
    keys: Keys,
    files: KeyFiles,
    keys_lua: PathBuf,
    abuse_lua: PathBuf,
    upstream_port: u16,
    upstream_pid: u32,
    redis_url: Option<String>,
    redis_pid: Option<u32>,
    ceiling: f64,
    ceiling_source: String,
    records: Vec<RunRecord>,
    failures: Vec<String>,
    run_no: usize,
}

/// The stack of one configuration while it runs.
struct Live<'a> {
    variant: &'a Variant,
    url: String,
    admin: SocketAddr,
    control_plane: Option<SocketAddr>,
    pids: Pids,
}

fn envoy_prom(admin: SocketAddr) -> Prom {
    Prom::parse(&admin_get(admin, "/stats/prometheus").unwrap_or_default())
}

fn cp_prom(addr: Option<SocketAddr>) -> Option<Prom> {
    addr.and_then(|a| admin_get(a, "/metrics"))
        .map(|t| Prom::parse(&t))
}

impl Ctx {
    fn log_path(&mut self, what: &str) -> PathBuf {
        self.run_no += 1;
        self.logs.join(format!("{:03}-{what}.txt", self.run_no))
    }

    fn wrk(
        &self,
        url: &str,
        connections: u32,
        duration_s: u64,
        script: &Path,
        args: Vec<String>,
    ) -> Wrk {
        Wrk {
            bin: self.opts.wrk.clone(),
            url: url.to_string(),
            threads: 2,
            connections,
            duration_s,
            script: script.to_path_buf(),
            args,
        }
    }

    /// One measured run: counters before, the load, counters after.
    fn measured(
        &mut self,
        live: &Live,
        phase: Phase,
        connections: u32,
        target_rate: Option<f64>,
        tool: &'static str,
        run: impl FnOnce(&Ctx, &Path) -> Result<LoadResult, String>,
    ) {
        let log = self.log_path(&format!(
            "{}-{}-c{connections}{}",
            live.variant.name,
            phase.name(),
            target_rate.map(|r| format!("-q{r:.0}")).unwrap_or_default()
        ));
        // Envoy merges histograms at each stats flush (1 s): let the previous run's land.
        sleep(Duration::from_millis(1200));
        if live.variant.store == StoreKind::Redis
            && let Some(url) = &self.redis_url
        {
            let _ = stack::redis_cmd(url, &["CONFIG", "RESETSTAT"]);
        }
        let envoy_before = envoy_prom(live.admin);
        let cp_before = cp_prom(live.control_plane);
        let cpu_before = live.pids.cpu();
        let children_before = measure::children_cpu_us();
        let self_before = measure::process_cpu_us(std::process::id()).unwrap_or(0.0);
        let busy_before = measure::machine_busy_us();
        let started = Instant::now();

        let result = run(self, &log);

        let wall = started.elapsed().as_secs_f64();
        let cpu_after = live.pids.cpu();
        let children = measure::children_cpu_us() - children_before;
        let own = measure::process_cpu_us(std::process::id()).unwrap_or(0.0) - self_before;
        let busy = measure::machine_busy_us() - busy_before;
        let load = match result {
            Ok(load) => load,
            Err(err) => {
                let msg = format!(
                    "configuration {} phase {} c={connections}: {err}",
                    live.variant.name,
                    phase.name()
                );
                eprintln!("!! {msg}");
                self.failures.push(msg);
                return;
            }
        };
        sleep(Duration::from_millis(1200));
        let envoy_after = envoy_prom(live.admin);
        let cp_after = cp_prom(live.control_plane);
        let redis_script = if live.variant.store == StoreKind::Redis {
            self.redis_url
                .as_deref()
                .and_then(|u| stack::redis_cmd(u, &["INFO", "commandstats"]).ok())
                .and_then(|info| measure::redis_script_stats(&info))
        } else {
            None
        };

        let n = load.requests.max(1) as f64;
        let mut cpu = BTreeMap::new();
        let mut ours = 0.0;
        for ((name, after), (_, before)) in cpu_after.iter().zip(&cpu_before) {
            cpu.insert(name.to_string(), (after - before) / n);
            ours += after - before;
        }
        cpu.insert("load_generator".to_string(), children / n);
        cpu.insert(
            "other".to_string(),
            (busy - ours - children - own).max(0.0) / n,
        );
        let cp_cluster = [("envoy_cluster_name", "rate_limit_control_plane")];
        let callout = HistDelta::between(
            &envoy_before,
            &envoy_after,
            "envoy_cluster_upstream_rq_time",
            &cp_cluster,
        )
        .filter(|h| h.count > 0.0);
        let callout_connections_opened = envoy_after
            .sum("envoy_cluster_upstream_cx_total", &cp_cluster)
            .map(|a| {
                a - envoy_before
                    .sum("envoy_cluster_upstream_cx_total", &cp_cluster)
                    .unwrap_or(0.0)
            })
            .filter(|_| live.variant.uses_control_plane());
        let envoy_request = HistDelta::between(
            &envoy_before,
            &envoy_after,
            "envoy_http_downstream_rq_time",
            &[("envoy_http_conn_manager_prefix", "ingress")],
        );
        let mut filter_counters = BTreeMap::new();
        for name in envoy_after.names_containing("rate_limit_filter_") {
            let after = envoy_after.sum(&name, &[]).unwrap_or(0.0);
            let before = envoy_before.sum(&name, &[]).unwrap_or(0.0);
            if let Some((_, short)) = name.split_once("rate_limit_filter_") {
                filter_counters.insert(short.to_string(), after - before);
            }
        }
        let cp_check = match (&cp_before, &cp_after) {
            (Some(b), Some(a)) => {
                HistDelta::between(b, a, "rate_limit_check_duration_seconds", &[])
            }
            _ => None,
        };
        let record = RunRecord {
            variant: live.variant.name.clone(),
            label: live.variant.label.clone(),
            phase,
            connections,
            target_rate,
            tool,
            load,
            cpu_us_per_request: cpu,
            busy_cores: if wall > 0.0 { busy / 1e6 / wall } else { 0.0 },
            callout,
            callout_connections_opened,
            envoy_request,
            filter_counters,
            cp_check,
            redis_script,
        };
        eprintln!("   {}", report::progress_line(&record));
        self.records.push(record);
    }

    fn run_variant(&mut self, variant: &Variant) -> Result<(), String> {
        eprintln!(
            "==> configuration {}: {} (Envoy --concurrency {})",
            variant.name, variant.label, variant.envoy_concurrency
        );
        let cp_port = free_port();
        let ports = EnvoyPorts {
            admin: free_port(),
            listener: free_port(),
            upstream: self.upstream_port,
        };
        if variant.store == StoreKind::Redis {
            let url = self
                .redis_url
                .clone()
                .ok_or("configuration needs Redis but none was started")?;
            stack::redis_cmd(&url, &["FLUSHALL"])?;
        }
        let good_limit = plan::good_limit(self.ceiling, self.opts.duration);
        let control_plane = if variant.uses_control_plane() {
            Some(stack::start_control_plane(
                variant,
                cp_port,
                &self.keys.control_plane_config(good_limit),
                self.redis_url.as_deref(),
                &self.logs,
            )?)
        } else {
            None
        };
        let envoy = stack::start_envoy(&self.opts.envoy, variant, &ports, cp_port, &self.logs)?;
        let live = Live {
            variant,
            url: format!("http://127.0.0.1:{}/api/v1/request", ports.listener),
            admin: stack::local(ports.admin),
            control_plane: control_plane.as_ref().map(|_| stack::local(cp_port)),
            pids: Pids {
                envoy: envoy.pid(),
                control_plane: control_plane.as_ref().map(Spawned::pid),
                redis: self.redis_pid.filter(|_| variant.store == StoreKind::Redis),
                upstream: self.upstream_pid,
            },
        };
        let result = self.drive(&live);
        envoy.stop(Duration::from_secs(5));
        if let Some(cp) = control_plane {
            cp.stop(Duration::from_secs(5));
        }
        result
    }

    /// Warm-up, then every phase against the running configuration.
    fn drive(&mut self, live: &Live) -> Result<(), String> {
        let bulk = self.files.bulk.display().to_string();
        let small = self.files.small.display().to_string();
        let abuse = self.files.abuse.display().to_string();
        if self.opts.warmup > 0 {
            let log = self.log_path(&format!("{}-warmup", live.variant.name));
            self.wrk(
                &live.url,
                100,
                self.opts.warmup,
                &self.keys_lua,
                vec![bulk.clone()],
            )
            .run(&log)?;
        }
        let phases = self.opts.phases.clone();
        let conns = self.opts.conns.clone();
        for phase in phases {
            match phase {
                Phase::A | Phase::B => {
                    let file = if phase == Phase::A { &bulk } else { &small };
                    for (i, &c) in conns.iter().enumerate() {
                        let args = vec![file.clone(), "random".to_string()];
                        let script = self.keys_lua.clone();
                        let url = live.url.clone();
                        let d = self.opts.duration;
                        self.measured(live, phase, c, None, "wrk", |ctx, log| {
                            ctx.wrk(&url, c, d, &script, args).run(log)
                        });
                        if phase == Phase::A
                            && i == 0
                            && live.variant.name == "1"
                            && self.opts.ceiling.is_none()
                            && let Some(r) = self.records.last().filter(|r| r.variant == "1")
                        {
                            self.ceiling = r.load.rps;
                            self.ceiling_source =
                                format!("measured: configuration 1, phase a, {c} connections");
                        }
                    }
                }
                Phase::C => {
                    if live.variant.uses_control_plane() {
                        // Push every abuse identity over its limit first (each key in turn).
                        let log = self.log_path(&format!("{}-exhaust", live.variant.name));
                        self.wrk(
                            &live.url,
                            100,
                            2,
                            &self.keys_lua,
                            vec![abuse.clone(), "cycle".into()],
                        )
                        .run(&log)?;
                    }
                    for (i, &c) in conns.iter().enumerate() {
                        let good = self.files.good[i].display().to_string();
                        let args = vec![good, abuse.clone(), plan::GOOD_EVERY.to_string()];
                        let script = self.abuse_lua.clone();
                        let url = live.url.clone();
                        let d = self.opts.duration;
                        self.measured(live, phase, c, None, "wrk", |ctx, log| {
                            ctx.wrk(&url, c, d, &script, args).run(log)
                        });
                    }
                }
                Phase::Fixed => {
                    for &fraction in &self.opts.rates.clone() {
                        let rate = (fraction * self.ceiling).round();
                        let url = live.url.clone();
                        let header = format!("x-api-key: {}", self.keys.latency.secret);
                        let c = self.opts.rate_conns;
                        let d = self.opts.duration;
                        self.measured(live, phase, c, Some(rate), "oha", |ctx, log| {
                            Oha {
                                bin: &ctx.opts.oha,
                                url: &url,
                                connections: c,
                                duration_s: d,
                                rate,
                                headers: vec![header],
                            }
                            .run(log)
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_program(what: &str, path: &Path, hint: &str) -> Result<(), String> {
    if path.is_file() {
        Ok(())
    } else {
        Err(format!("{what} not found at {} ({hint})", path.display()))
    }
}

fn run() -> Result<bool, String> {
    let started = Instant::now();
    let opts = parse_options()?;
    let build = "bash scripts/load-bench.sh builds it";
    check_program("wrk", &opts.wrk, "apt-get install -y wrk")?;
    if opts.phases.contains(&Phase::Fixed) {
        check_program("oha", &opts.oha, "cargo install oha --locked")?;
    }
    check_program("the demo upstream", &opts.upstream, build)?;
    let bases = base_variants(&opts);
    let mut all = bases.clone();
    for spec in &opts.variant_specs {
        all.push(parse_variant(spec, &bases)?);
    }
    let selected: Vec<Variant> = match &opts.configs {
        Some(names) => names
            .iter()
            .map(|n| {
                all.iter()
                    .find(|v| &v.name == n)
                    .cloned()
                    .ok_or_else(|| format!("--configs: no configuration named {n}"))
            })
            .collect::<Result<_, _>>()?,
        None => all.clone(),
    };
    for v in &selected {
        if v.uses_control_plane() {
            check_program("the control plane", &v.control_plane, build)?;
        }
        if v.filter == FilterKind::Wasm {
            check_program("the filter", &v.wasm, build)?;
        }
    }

    let out = opts.out.clone();
    let logs = out.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let keys = Keys::generate(opts.conns.len());
    let files = keys
        .write_files(&logs)
        .map_err(|e| format!("writing key files: {e}"))?;
    let keys_lua = logs.join("keys.lua");
    let abuse_lua = logs.join("abuse.lua");
    std::fs::write(&keys_lua, tools::KEYS_LUA).map_err(|e| e.to_string())?;
    std::fs::write(&abuse_lua, tools::ABUSE_LUA).map_err(|e| e.to_string())?;

    let upstream_port = free_port();
    let upstream = stack::start_upstream(&opts.upstream, upstream_port, &logs)?;
    let needs_redis = selected.iter().any(|v| v.store == StoreKind::Redis);
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
            "assumed (configuration 1 was not measured in this run)".to_string(),
        ),
    };
    let mut ctx = Ctx {
        logs,
        keys,
        files,
        keys_lua,
        abuse_lua,
        upstream_port,
        upstream_pid: upstream.pid(),
        redis_pid: redis.as_ref().map(Spawned::pid),
        redis_url,
        ceiling,
        ceiling_source,
        records: Vec::new(),
        failures: Vec::new(),
        run_no: 0,
        opts,
    };
    for variant in &selected {
        if let Err(err) = ctx.run_variant(variant) {
            let msg = format!("configuration {}: {err}", variant.name);
            eprintln!("!! {msg}");
            ctx.failures.push(msg);
        }
    }
    drop(redis);
    drop(upstream);

    let elapsed = started.elapsed();
    let text = report::render(&report::Input {
        opts: &ctx.opts,
        variants: &selected,
        records: &ctx.records,
        failures: &ctx.failures,
        ceiling: ctx.ceiling,
        ceiling_source: &ctx.ceiling_source,
        elapsed,
    });
    println!("{text}");
    let report_path = out.join("report.md");
    std::fs::write(&report_path, &text).map_err(|e| format!("{}: {e}", report_path.display()))?;
    let json = serde_json::to_string_pretty(&ctx.records).map_err(|e| e.to_string())?;
    std::fs::write(out.join("results.json"), json).map_err(|e| e.to_string())?;
    eprintln!(
        "report: {} (raw figures: results.json, logs: logs/) in {:.0} s",
        report_path.display(),
        elapsed.as_secs_f64()
    );
    Ok(ctx.failures.is_empty())
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(err) => {
            eprintln!("load_bench: {err}");
            ExitCode::FAILURE
        }
    }
}
