//! Driving the configurations. Each start of a configuration (repeats are interleaved, see
//! `configs::interleave`) gets a fresh Envoy and a warm-up, then every run of its phases.
//! A configuration with a control plane gets a fresh control plane before every run (and
//! Redis an empty database), started with limits sized for that run: the run's identities
//! start from nothing and reach a known share of their limit, and after the run the control
//! plane's status endpoint says what it counted for some of them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rl_tests::envoy::admin_get;
use rl_tests::free_port;

use crate::configs::{FilterKind, StoreKind, Variant};
use crate::http::Http;
use crate::measure::{self, HistDelta, Prom};
use crate::plan::{self, KeyFiles, Keys, Limits};
use crate::record::{AbuseStart, Errors, IdentityCheck, RedisRun, RunRecord, SampleCount};
use crate::stack::{self, EnvoyPorts, Spawned};
use crate::summary::median;
use crate::tools::{LoadResult, OpenLoop, Wrk};
use crate::{Options, Phase, report};

/// wrk threads (the machine's cores are shared with what is measured).
pub const WRK_THREADS: u32 = 2;
/// The warm-up after each control-plane start (its own identities).
const REWARM_SECS: u64 = 1;
/// Pushing the abuse identities over their limit before phase c.
const EXHAUST_SECS: u64 = 2;
/// Abuse identities read back after that.
const ABUSE_CHECKS: usize = 5;
/// Envoy merges histograms at each stats flush (1 s): a run's figures are complete after it.
const STATS_FLUSH: Duration = Duration::from_millis(1200);

/// One run of a configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunSpec {
    pub phase: Phase,
    pub connections: u32,
    /// Fixed-rate runs: the rate as a share of configuration 1's throughput.
    pub rate_share: Option<f64>,
}

/// The runs of one start of `variant`, in order: the phases of `opts` it runs; phase b at
/// the largest connection count only (SC-003's).
pub fn runs(opts: &Options, variant: &Variant) -> Vec<RunSpec> {
    let mut out = Vec::new();
    let most = opts.conns.iter().copied().max().unwrap_or(1000);
    for &phase in &opts.phases {
        if !variant.runs(phase) {
            continue;
        }
        let spec = |connections, rate_share| RunSpec {
            phase,
            connections,
            rate_share,
        };
        match phase {
            Phase::A | Phase::C => out.extend(opts.conns.iter().map(|&c| spec(c, None))),
            Phase::B => out.push(spec(most, None)),
            Phase::Fixed => out.extend(
                opts.rates
                    .iter()
                    .map(|&share| spec(opts.rate_conns, Some(share))),
            ),
            Phase::Memory => {}
        }
    }
    out
}

/// The processes whose CPU is measured.
struct Pids {
    envoy: u32,
    control_plane: Option<u32>,
    redis: Option<u32>,
    upstream: u32,
}

impl Pids {
    fn cpu(&self) -> Vec<(&'static str, f64)> {
        let mut v = vec![("envoy", measure::process_cpu_us(self.envoy).unwrap_or(0.0))];
        if let Some(pid) = self.control_plane {
            v.push(("control_plane", measure::process_cpu_us(pid).unwrap_or(0.0)));
        }
        if let Some(pid) = self.redis {
            v.push(("redis", measure::process_cpu_us(pid).unwrap_or(0.0)));
        }
        v.push((
            "upstream",
            measure::process_cpu_us(self.upstream).unwrap_or(0.0),
        ));
        v
    }
}

/// One running start of a configuration.
struct Live<'a> {
    variant: &'a Variant,
    repeat: u32,
    /// `<configuration>-<repeat>`: names its logs.
    tag: String,
    url: String,
    admin: SocketAddr,
    cp_port: u16,
    /// The control plane's gRPC listener (configuration 5's Envoy asks there).
    grpc_port: Option<u16>,
    cp: Option<Spawned>,
    cp_starts: u32,
    cp_rss_start_kib: Option<u64>,
    envoy_pid: u32,
    warm_rps: f64,
}

impl Live<'_> {
    fn cp_addr(&self) -> Option<SocketAddr> {
        self.cp.as_ref().map(|_| stack::local(self.cp_port))
    }
}

pub struct Bench {
    pub opts: Options,
    pub logs: PathBuf,
    pub keys: Keys,
    pub files: KeyFiles,
    pub keys_lua: PathBuf,
    pub abuse_lua: PathBuf,
    pub upstream_port: u16,
    pub upstream_pid: u32,
    pub redis_pid: Option<u32>,
    pub redis_url: Option<String>,
    pub http: Http,
    /// Configuration 1's throughput (phase a, first connection count): the fixed rates and
    /// the good tier's limit are derived from it.
    pub ceiling: f64,
    pub ceiling_source: String,
    pub ceiling_measured: bool,
    pub records: Vec<RunRecord>,
    pub failures: Vec<String>,
    pub run_no: u32,
}

fn envoy_prom(admin: SocketAddr) -> Prom {
    Prom::parse(&admin_get(admin, "/stats/prometheus").unwrap_or_default())
}

fn cp_prom(addr: Option<SocketAddr>) -> Option<Prom> {
    addr.and_then(|a| admin_get(a, "/metrics"))
        .map(|t| Prom::parse(&t))
}

/// The rate the limits of a run are sized for: earlier runs of this configuration (same
/// phase and connections, else same connections, else any closed-loop run), else `fallback`
/// (its warm-up).
pub fn predict_rps(records: &[RunRecord], variant: &str, spec: RunSpec, fallback: f64) -> f64 {
    let of = |keep: &dyn Fn(&RunRecord) -> bool| {
        median(
            records
                .iter()
                .filter(|r| r.variant == variant && r.load.rps > 0.0 && keep(r))
                .map(|r| r.load.rps)
                .collect(),
        )
    };
    let closed = |r: &RunRecord| matches!(r.phase, Phase::A | Phase::B);
    of(&|r| r.phase == spec.phase && r.connections == spec.connections)
        .or_else(|| of(&|r| closed(r) && r.connections == spec.connections))
        .or_else(|| of(&closed))
        .unwrap_or(fallback)
}

impl Bench {
    fn log_path(&mut self, what: &str) -> PathBuf {
        self.run_no += 1;
        self.logs.join(format!("{:03}-{what}.log", self.run_no))
    }

    fn wrk(&self, url: &str, connections: u32, duration_s: u64, script: &Path) -> Wrk {
        Wrk {
            bin: self.opts.wrk.clone(),
            url: url.to_string(),
            threads: WRK_THREADS,
            connections,
            duration_s,
            script: script.to_path_buf(),
            args: Vec::new(),
        }
    }

    /// Unmeasured load through `live` with the keys of `file`, each in turn.
    fn unmeasured(
        &mut self,
        live: &Live,
        what: &str,
        file: &Path,
        secs: u64,
    ) -> Result<LoadResult, String> {
        let log = self.log_path(&format!("{}-{what}", live.tag));
        let mut wrk = self.wrk(&live.url, 100, secs, &self.keys_lua);
        wrk.args = vec![file.display().to_string(), "cycle".into()];
        wrk.run(&log)
    }

    /// Starts (or replaces) the control plane of `live` with `limits`; Redis starts empty.
    fn restart_control_plane(&mut self, live: &mut Live, limits: &Limits) -> Result<(), String> {
        if let Some(cp) = live.cp.take() {
            cp.kill();
        }
        if live.variant.store == StoreKind::Redis {
            let url = self
                .redis_url
                .as_deref()
                .ok_or("configuration needs Redis but none was started")?;
            stack::redis_cmd(url, &["FLUSHALL"])?;
        }
        live.cp_starts += 1;
        let cp = stack::start_control_plane(
            live.variant,
            live.cp_port,
            live.grpc_port,
            &self
                .keys
                .control_plane_config(limits, live.variant.counters, live.variant.charging),
            self.redis_url.as_deref(),
            &self.logs,
            &format!("{}-{}", live.tag, live.cp_starts),
        )?;
        live.cp_rss_start_kib = measure::rss_kib(cp.pid());
        live.cp = Some(cp);
        Ok(())
    }

    pub fn run_instance(&mut self, variant: &Variant, repeat: u32) -> Result<(), String> {
        eprintln!(
            "==> configuration {} ({}), start {repeat} (Envoy --concurrency {})",
            variant.name, variant.label, variant.envoy_concurrency
        );
        let ports = EnvoyPorts {
            admin: free_port(),
            listener: free_port(),
            upstream: self.upstream_port,
        };
        let mut live = Live {
            variant,
            repeat,
            tag: format!("{}-{repeat}", variant.name),
            url: format!("http://127.0.0.1:{}{}", ports.listener, plan::PATH),
            admin: stack::local(ports.admin),
            cp_port: free_port(),
            grpc_port: (variant.filter == FilterKind::NativeRateLimit).then(free_port),
            cp: None,
            cp_starts: 0,
            cp_rss_start_kib: None,
            envoy_pid: 0,
            warm_rps: 0.0,
        };
        if variant.uses_control_plane() {
            self.restart_control_plane(&mut live, &Limits::generous(self.opts.duration))?;
        }
        let envoy = stack::start_envoy(
            &self.opts.envoy,
            variant,
            &ports,
            live.grpc_port.unwrap_or(live.cp_port),
            &self.logs,
            &live.tag,
        );
        let envoy = match envoy {
            Ok(envoy) => envoy,
            Err(err) => {
                if let Some(cp) = live.cp.take() {
                    cp.kill();
                }
                return Err(err);
            }
        };
        live.envoy_pid = envoy.pid();
        let result = self.drive(&mut live);
        envoy.stop(Duration::from_secs(5));
        if let Some(cp) = live.cp.take() {
            cp.kill();
        }
        result
    }

    fn drive(&mut self, live: &mut Live) -> Result<(), String> {
        if self.opts.warmup > 0 {
            let bulk = self.files.bulk.clone();
            let warm = self.unmeasured(live, "warmup", &bulk, self.opts.warmup)?;
            live.warm_rps = warm.rps;
        }
        for spec in runs(&self.opts, live.variant) {
            self.one_run(live, spec);
        }
        Ok(())
    }

    fn one_run(&mut self, live: &mut Live, spec: RunSpec) {
        let d = self.opts.duration;
        let variant = live.variant;
        let identities = match spec.phase {
            Phase::A => plan::BULK_IDENTITIES,
            Phase::B => plan::SMALL_IDENTITIES,
            _ => 0,
        };
        let fallback = if live.warm_rps > 0.0 {
            live.warm_rps
        } else {
            self.ceiling
        };
        let predicted = predict_rps(&self.records, &variant.name, spec, fallback);
        let per_identity = if identities > 0 {
            predicted * d as f64 / identities as f64
        } else {
            0.0
        };
        let window_s = plan::window_for(d);
        let limits = match spec.phase {
            Phase::A | Phase::B => Limits {
                bulk: plan::bulk_limit(per_identity),
                good: plan::NEVER,
                window_s,
            },
            Phase::C => Limits {
                bulk: plan::NEVER,
                good: plan::good_limit(self.ceiling, d),
                window_s,
            },
            Phase::Fixed | Phase::Memory => Limits::generous(d),
        };
        let quota = plan::sample_quota(per_identity);
        let what = format!(
            "configuration {} start {} phase {} c={}",
            variant.name,
            live.repeat,
            spec.phase.name(),
            spec.connections
        );

        let mut abuse_start = None;
        if variant.uses_control_plane() {
            let warm = self.files.warm.clone();
            let prepared = self.restart_control_plane(live, &limits).and_then(|()| {
                self.unmeasured(live, "rewarm", &warm, REWARM_SECS)
                    .map(drop)
            });
            if let Err(err) = prepared {
                self.fail(&format!("{what}: {err}"));
                return;
            }
            if spec.phase == Phase::C {
                let abuse = self.files.abuse.clone();
                if let Err(err) = self.unmeasured(live, "exhaust", &abuse, EXHAUST_SECS) {
                    self.fail(&format!("{what}: {err}"));
                    return;
                }
                abuse_start = Some(self.check_abuse_start(live));
            }
        }

        let Some(mut record) = self.measured(live, spec, limits, quota) else {
            return;
        };
        record.limits = variant.uses_control_plane().then_some(limits);
        record.predicted_rps = (identities > 0).then_some(predicted);
        record.abuse_start = abuse_start;
        if variant.uses_control_plane() && identities > 0 {
            record.identities = Some(self.check_identities(
                live,
                spec.phase,
                limits.bulk,
                quota,
                &record.load.samples,
            ));
        }
        if spec.phase == Phase::A
            && variant.name == "1"
            && !self.ceiling_measured
            && self.opts.ceiling.is_none()
            && Some(spec.connections) == self.opts.conns.first().copied()
            && record.load.rps > 0.0
        {
            self.ceiling = record.load.rps;
            self.ceiling_measured = true;
            self.ceiling_source = format!(
                "measured: configuration 1, start {}, phase a, {} connections",
                live.repeat, spec.connections
            );
        }
        eprintln!("   {}", report::progress_line(&record));
        self.records.push(record);
    }

    fn fail(&mut self, msg: &str) {
        eprintln!("!! {msg}");
        self.failures.push(msg.to_string());
    }

    /// The load of one run, measured.
    fn measured(
        &mut self,
        live: &Live,
        spec: RunSpec,
        limits: Limits,
        quota: u64,
    ) -> Option<RunRecord> {
        let variant = live.variant;
        let log = self.log_path(&format!(
            "{}-{}-c{}{}",
            live.tag,
            spec.phase.name(),
            spec.connections,
            spec.rate_share
                .map(|s| format!("-r{:.0}", s * 100.0))
                .unwrap_or_default()
        ));
        let d = self.opts.duration;
        let threads = WRK_THREADS.to_string();
        type Load = Box<dyn FnOnce(&Bench) -> Result<LoadResult, String>>;
        let (tool, load): (&str, Load) = match spec.phase {
            Phase::A | Phase::B => {
                let (file, n) = if spec.phase == Phase::A {
                    (&self.files.bulk, plan::BULK_IDENTITIES)
                } else {
                    (&self.files.small, plan::SMALL_IDENTITIES)
                };
                let args = vec![
                    file.display().to_string(),
                    "cycle".into(),
                    plan::sample_every(n).to_string(),
                    quota.to_string(),
                    threads,
                ];
                let url = live.url.clone();
                let log = log.clone();
                (
                    "wrk",
                    Box::new(move |b: &Bench| {
                        let mut wrk = b.wrk(&url, spec.connections, d, &b.keys_lua);
                        wrk.args = args;
                        wrk.run(&log)
                    }),
                )
            }
            Phase::C => {
                let args = vec![
                    self.files.good.display().to_string(),
                    self.files.abuse.display().to_string(),
                    plan::GOOD_EVERY.to_string(),
                    plan::good_quota(limits.good).to_string(),
                    threads,
                    plan::GOOD_ACTIVE.to_string(),
                ];
                let url = live.url.clone();
                let log = log.clone();
                (
                    "wrk",
                    Box::new(move |b: &Bench| {
                        let mut wrk = b.wrk(&url, spec.connections, d, &b.abuse_lua);
                        wrk.args = args;
                        wrk.run(&log)
                    }),
                )
            }
            Phase::Fixed | Phase::Memory => {
                let rate = (spec.rate_share.unwrap_or(0.0) * self.ceiling).round();
                let url = live.url.clone();
                let log = log.clone();
                (
                    "open_loop",
                    Box::new(move |b: &Bench| {
                        OpenLoop {
                            bin: &b.opts.open_loop,
                            url: &url,
                            keys: &b.files.bulk,
                            connections: spec.connections,
                            duration_s: d,
                            rate,
                        }
                        .run(&log)
                    }),
                )
            }
        };

        sleep(STATS_FLUSH);
        let redis_url = self
            .redis_url
            .clone()
            .filter(|_| variant.store == StoreKind::Redis);
        if let Some(url) = &redis_url {
            let _ = stack::redis_cmd(url, &["CONFIG", "RESETSTAT"]);
        }
        let pids = Pids {
            envoy: live.envoy_pid,
            control_plane: live.cp.as_ref().map(Spawned::pid),
            redis: self.redis_pid.filter(|_| redis_url.is_some()),
            upstream: self.upstream_pid,
        };
        let envoy_before = envoy_prom(live.admin);
        let cp_before = cp_prom(live.cp_addr());
        let cpu_before = pids.cpu();
        let children_before = measure::children_cpu_us();
        let self_before = measure::process_cpu_us(std::process::id()).unwrap_or(0.0);
        let busy_before = measure::machine_busy_us();
        let started = Instant::now();

        let result = load(self);

        let wall = started.elapsed().as_secs_f64();
        let cpu_after = pids.cpu();
        let children = measure::children_cpu_us() - children_before;
        let own = measure::process_cpu_us(std::process::id()).unwrap_or(0.0) - self_before;
        let busy = measure::machine_busy_us() - busy_before;
        let load = match result {
            Ok(load) => load,
            Err(err) => {
                self.fail(&format!(
                    "configuration {} start {} phase {} c={}: {err}",
                    variant.name,
                    live.repeat,
                    spec.phase.name(),
                    spec.connections
                ));
                return None;
            }
        };
        sleep(STATS_FLUSH);
        let envoy_after = envoy_prom(live.admin);
        let cp_after = cp_prom(live.cp_addr());
        let commands = redis_url
            .as_deref()
            .and_then(|u| stack::redis_cmd(u, &["INFO", "commandstats"]).ok())
            .and_then(|info| measure::redis_commands(&info));

        let n = load.requests.max(1) as f64;
        let mut cpu = BTreeMap::new();
        let mut ours = 0.0;
        let mut redis_cpu = None;
        for ((name, after), (_, before)) in cpu_after.iter().zip(&cpu_before) {
            cpu.insert(name.to_string(), (after - before) / n);
            ours += after - before;
            if *name == "redis" {
                redis_cpu = Some(after - before);
            }
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
            .filter(|_| variant.uses_control_plane());
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
        let counter = |name: &str| filter_counters.get(name).copied().unwrap_or(0.0) as u64;
        let native_counter = |name: &str| {
            (envoy_after.sum(name, &[]).unwrap_or(0.0) - envoy_before.sum(name, &[]).unwrap_or(0.0))
                as u64
        };
        let errors = Errors {
            socket: load.socket_errors,
            timeouts: load.timeouts,
            // Envoy's native filter counts its own: admitted unchecked, and calls that failed.
            failed_open: counter("failed_open")
                + native_counter("envoy_cluster_ratelimit_failure_mode_allowed"),
            control_plane: counter("control_plane_errors")
                + counter("unauthorized")
                + native_counter("envoy_cluster_ratelimit_error"),
        };
        let (cp_check, decisions) = match (&cp_before, &cp_after) {
            (Some(b), Some(a)) => (
                HistDelta::between(b, a, "rate_limit_check_duration_seconds", &[]),
                a.sum("rate_limit_requests_total", &[])
                    .map(|after| after - b.sum("rate_limit_requests_total", &[]).unwrap_or(0.0)),
            ),
            _ => (None, None),
        };
        let redis = match (commands, redis_cpu) {
            (Some(commands), Some(cpu_us)) => Some(RedisRun { commands, cpu_us }),
            _ => None,
        };
        Some(RunRecord {
            variant: variant.name.clone(),
            label: variant.label.clone(),
            repeat: live.repeat,
            phase: spec.phase,
            connections: spec.connections,
            rate_share: spec.rate_share,
            tool: tool.to_string(),
            limits: None,
            predicted_rps: None,
            load,
            errors,
            cpu_us_per_request: cpu,
            busy_cores: if wall > 0.0 { busy / 1e6 / wall } else { 0.0 },
            callout,
            callout_connections_opened,
            envoy_request,
            filter_counters,
            cp_check,
            decisions,
            redis,
            cp_rss_start_kib: live.cp_rss_start_kib,
            cp_rss_kib: live.cp.as_ref().and_then(|cp| measure::rss_kib(cp.pid())),
            identities: None,
            abuse_start: None,
        })
    }

    /// The counters of `identity` in the control plane: (count, limit) of each.
    fn status(&self, live: &Live, identity: &str) -> Result<Vec<(u64, u64)>, String> {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/rate-limit/status/{identity}",
            live.cp_port
        );
        let (status, body) = self.http.get(&url, &[("x-api-key", stack::ADMIN_KEY)])?;
        match status {
            // Nothing counted for it.
            404 => Ok(vec![(0, 0)]),
            200 => body["counters"]
                .as_array()
                .map(|counters| {
                    counters
                        .iter()
                        .map(|c| {
                            (
                                c["count"].as_u64().unwrap_or(u64::MAX),
                                c["limit"].as_u64().unwrap_or(0),
                            )
                        })
                        .collect()
                })
                .ok_or_else(|| format!("{url}: no counters in {body}")),
            other => Err(format!("{url}: HTTP {other}: {body}")),
        }
    }

    /// After a run of phase a or b: what the control plane counted for the sample identities
    /// (each must be exactly what was sent), and the share of their limit the identities
    /// between them reached.
    fn check_identities(
        &self,
        live: &Live,
        phase: Phase,
        limit: u64,
        quota: u64,
        sent: &BTreeMap<usize, u64>,
    ) -> IdentityCheck {
        let list = if phase == Phase::A {
            &self.keys.bulk[..]
        } else {
            self.keys.small()
        };
        let mut check = IdentityCheck {
            limit,
            sample_quota: quota,
            ..IdentityCheck::default()
        };
        for line in plan::sample_lines(list.len()) {
            let key = &list[line - 1];
            let counted = match self.status(live, &key.identity()) {
                Ok(counters) => counters.into_iter().map(|(count, _)| count).collect(),
                Err(err) => {
                    check.problems.push(err);
                    Vec::new()
                }
            };
            check.samples.push(SampleCount {
                identity: key.identity(),
                sent: sent.get(&line).copied().unwrap_or(0),
                counted,
            });
        }
        for line in plan::probe_lines(list.len()) {
            match self.status(live, &list[line - 1].identity()) {
                Ok(counters) => check.shares.push(
                    counters
                        .iter()
                        .filter(|(_, limit)| *limit > 0)
                        .map(|(count, limit)| *count as f64 / *limit as f64)
                        .fold(0.0, f64::max),
                ),
                Err(err) => check.problems.push(err),
            }
        }
        check
    }

    /// Before phase c: some abuse identities, read back: none should have a request left.
    fn check_abuse_start(&self, live: &Live) -> AbuseStart {
        let step = (self.keys.abuse.len() / ABUSE_CHECKS).max(1);
        let mut start = AbuseStart::default();
        for key in self.keys.abuse.iter().step_by(step).take(ABUSE_CHECKS) {
            match self.status(live, &key.identity()) {
                Ok(counters) => {
                    start.checked += 1;
                    if counters
                        .iter()
                        .any(|(count, limit)| *limit > 0 && count >= limit)
                    {
                        start.over_limit += 1;
                    }
                }
                Err(_) => start.unreadable += 1,
            }
        }
        start
    }
}

#[cfg(test)]
mod tests;
