//! What one measured run recorded (results.json holds every one).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Phase;
use crate::measure::{HistDelta, RedisCommands};
use crate::plan::Limits;
use crate::tools::LoadResult;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RunRecord {
    pub variant: String,
    pub label: String,
    /// 1 for a configuration's first start, 2 for its second, …
    pub repeat: u32,
    pub phase: Phase,
    pub connections: u32,
    /// Fixed-rate runs: the rate as a share of configuration 1's throughput.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_share: Option<f64>,
    pub tool: String,
    /// The control plane's limits during the run (configurations with a control plane).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// The rate the limits were sized for (a previous run of this configuration, or its
    /// warm-up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_rps: Option<f64>,
    pub load: LoadResult,
    pub errors: Errors,
    /// CPU µs per request of each process ("envoy", "control_plane", "redis", "upstream",
    /// "load_generator", "other").
    pub cpu_us_per_request: BTreeMap<String, f64>,
    pub busy_cores: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callout: Option<HistDelta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callout_connections_opened: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_request: Option<HistDelta>,
    /// The filter's counters over the run (`allowed`, `failed_open`, …).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub filter_counters: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cp_check: Option<HistDelta>,
    /// Decisions the control plane made (`rate_limit_requests_total` over the run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decisions: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisRun>,
    /// The control plane's resident memory when it started (before any traffic) and after
    /// the run, KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cp_rss_start_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cp_rss_kib: Option<u64>,
    /// Phases a and b: the control plane's counts of some identities after the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identities: Option<IdentityCheck>,
    /// Phase c: the abuse identities' state before the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abuse_start: Option<AbuseStart>,
}

impl RunRecord {
    /// CPU µs per request of one process (`envoy`, `control_plane`, `redis`, …).
    pub fn cpu(&self, name: &str) -> Option<f64> {
        self.cpu_us_per_request.get(name).copied()
    }

    /// `total` (a count or µs over the run) per decision the control plane counted in it.
    pub fn per_decision(&self, total: f64) -> Option<f64> {
        let d = self.decisions.filter(|d| *d > 0.0)?;
        Some(total / d)
    }
}

/// Requests that did not get a decision of ours, or no answer at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Errors {
    /// Connect, read and write errors of the load generator.
    pub socket: u64,
    /// Requests the load generator gave up on.
    pub timeouts: u64,
    /// Requests the filter let through unchecked (`failed_open`: the control plane could not
    /// answer, or its store failed open).
    pub failed_open: u64,
    /// Decision calls that failed (`control_plane_errors` and `unauthorized`).
    pub control_plane: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.socket + self.timeouts + self.failed_open + self.control_plane
    }

    pub fn add(&mut self, other: &Errors) {
        self.socket += other.socket;
        self.timeouts += other.timeouts;
        self.failed_open += other.failed_open;
        self.control_plane += other.control_plane;
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RedisRun {
    #[serde(flatten)]
    pub commands: RedisCommands,
    /// CPU of redis-server over the run (user + system), µs.
    pub cpu_us: f64,
}

/// The control plane's own count of what sample identities were sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IdentityCheck {
    /// The bulk tier's limit in this run, and the requests a sample identity was given.
    pub limit: u64,
    pub sample_quota: u64,
    pub samples: Vec<SampleCount>,
    /// Identities between the samples: the share of their limit they reached (their
    /// highest counter).
    pub shares: Vec<f64>,
    /// Status reads that failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SampleCount {
    pub identity: String,
    /// Requests the load generator sent with its key.
    pub sent: u64,
    /// The count of each of its counters in the control plane.
    pub counted: Vec<u64>,
}

impl SampleCount {
    pub fn matches(&self) -> bool {
        !self.counted.is_empty() && self.counted.iter().all(|&c| c == self.sent)
    }
}

impl IdentityCheck {
    pub fn mismatches(&self) -> Vec<&SampleCount> {
        self.samples.iter().filter(|s| !s.matches()).collect()
    }

    /// Lowest and highest share of the limit the probed identities reached.
    pub fn share_range(&self) -> Option<(f64, f64)> {
        let min = self.shares.iter().copied().reduce(f64::min)?;
        let max = self.shares.iter().copied().reduce(f64::max)?;
        Some((min, max))
    }
}

/// Abuse identities read from the control plane after they were pushed over their limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AbuseStart {
    /// Identities read.
    pub checked: usize,
    /// Of those, how many had no request left.
    pub over_limit: usize,
    /// Reads that failed.
    pub unreadable: usize,
}
