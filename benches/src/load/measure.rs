//! Counters read before and after each run: CPU time per process (/proc), Envoy's and the
//! control plane's Prometheus output, Redis `INFO commandstats`.

use std::collections::BTreeMap;

/// Clock ticks per second of /proc times (`getconf CLK_TCK`).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Fields of /proc/<pid>/stat after the command name (field 3, `state`, is index 0).
fn stat_fields(path: &str) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// User + system CPU of a process (all its threads), in µs.
pub fn process_cpu_us(pid: u32) -> Option<f64> {
    let f = stat_fields(&format!("/proc/{pid}/stat"))?;
    // utime, stime are fields 14 and 15.
    Some((f.get(11)? + f.get(12)?) as f64 * 1e6 / ticks_per_second())
}

/// CPU of this process's waited-for children (the load generators), in µs.
pub fn children_cpu_us() -> f64 {
    stat_fields("/proc/self/stat")
        .and_then(|f| Some((f.get(13)? + f.get(14)?) as f64 * 1e6 / ticks_per_second()))
        .unwrap_or(0.0)
}

/// Busy CPU of the whole machine (all cores), in µs.
pub fn machine_busy_us() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle) as f64 * 1e6 / ticks_per_second()
}

/// One Prometheus text exposition, flattened.
#[derive(Debug, Default, Clone)]
pub struct Prom {
    samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Prom {
    pub fn parse(text: &str) -> Prom {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = match line.rsplit_once(' ') {
                Some(parts) => parts,
                None => continue,
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
        Prom { samples }
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
    }

    /// Sum over every series of `name` carrying `labels`; `None` when there is none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = false;
        let mut total = 0.0;
        for s in self.matching(name, labels) {
            found = true;
            total += s.value;
        }
        found.then_some(total)
    }

    /// Cumulative histogram buckets `(le, count)` of `name` (without `_bucket`), summed over
    /// the other labels.
    pub fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for s in self.matching(&bucket, labels) {
            let Some(le) = s.labels.get("le") else {
                continue;
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            let entry = by_le.entry(le.to_bits()).or_insert((le, 0.0));
            entry.1 += s.value;
        }
        let mut v: Vec<(f64, f64)> = by_le.into_values().collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    }

    /// Names of the series whose name contains `part`.
    pub fn names_containing(&self, part: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.name.contains(part))
            .map(|s| s.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    labels
}

/// A histogram over one run: the difference of two cumulative snapshots.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HistDelta {
    pub count: f64,
    pub sum: f64,
    /// Cumulative bucket counts over the run.
    #[serde(skip)]
    pub buckets: Vec<(f64, f64)>,
}

impl HistDelta {
    pub fn between(
        before: &Prom,
        after: &Prom,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<Self> {
        let count_name = format!("{name}_count");
        let sum_name = format!("{name}_sum");
        let count =
            after.sum(&count_name, labels)? - before.sum(&count_name, labels).unwrap_or(0.0);
        let sum = after.sum(&sum_name, labels).unwrap_or(0.0)
            - before.sum(&sum_name, labels).unwrap_or(0.0);
        let old = before.buckets(name, labels);
        let buckets = after
            .buckets(name, labels)
            .into_iter()
            .map(|(le, c)| {
                let prev = old
                    .iter()
                    .find(|(l, _)| l.to_bits() == le.to_bits())
                    .map_or(0.0, |(_, c)| *c);
                (le, c - prev)
            })
            .collect();
        Some(HistDelta {
            count,
            sum,
            buckets,
        })
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// Quantile by linear interpolation inside the bucket (coarse: Envoy's buckets are
    /// 0.5, 1, 5, 10, 25 … ms).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let target = q * self.count;
        let mut lower = 0.0;
        let mut below = 0.0;
        for &(le, cumulative) in &self.buckets {
            if cumulative >= target {
                if le.is_infinite() {
                    return Some(lower);
                }
                let inside = cumulative - below;
                let frac = if inside > 0.0 {
                    (target - below) / inside
                } else {
                    1.0
                };
                return Some(lower + frac * (le - lower));
            }
            lower = le;
            below = cumulative;
        }
        Some(lower)
    }
}

/// What `INFO commandstats` says about one run (after `CONFIG RESETSTAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct RedisCommands {
    /// Script calls (`EVALSHA`, `EVAL`): what the control plane sends, one per decision call
    /// (a whole batch on a single node).
    pub script_calls: f64,
    /// µs per `EVALSHA` (the sliding-window script).
    pub evalsha_us_per_call: f64,
    /// Every command Redis executed, the script's own calls included.
    pub commands: f64,
}

/// Parses `INFO commandstats`; `None` when it has no `cmdstat_` line at all.
pub fn redis_commands(info: &str) -> Option<RedisCommands> {
    let mut stats = RedisCommands::default();
    let mut found = false;
    for line in info.lines() {
        let Some((name, fields)) = line.trim().split_once(':') else {
            continue;
        };
        let Some(command) = name.strip_prefix("cmdstat_") else {
            continue;
        };
        found = true;
        let field = |key: &str| -> f64 {
            fields
                .split(',')
                .filter_map(|f| f.split_once('='))
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        let calls = field("calls");
        stats.commands += calls;
        if command == "evalsha" || command == "eval" {
            stats.script_calls += calls;
        }
        if command == "evalsha" {
            stats.evalsha_us_per_call = field("usec_per_call");
        }
    }
    found.then_some(stats)
}

/// Resident memory of a process (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_rss_kib(&status)
}

fn parse_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests;
