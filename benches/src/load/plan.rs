//! What the benchmark sends: the API keys of every phase, the control plane's configuration of
//! each run, and the limits sized so that the success criteria's checks can fail.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::configs::Counters;

/// Registered identities of phase a, the fixed-rate runs and the warm-up (and, the first
/// `SMALL_IDENTITIES` of them, phase b).
pub const BULK_IDENTITIES: usize = 10_000;
/// Identities of phase b (SC-003 compares its p95 with phase a's).
pub const SMALL_IDENTITIES: usize = 100;
/// Identities of the short warm-up after each control-plane start (their own tier, so the
/// measured identities start from nothing).
pub const WARM_IDENTITIES: usize = 100;
/// Phase c: one request in `GOOD_EVERY` comes from a good identity.
pub const GOOD_EVERY: u64 = 10;
/// Phase c: good identities available to one run (each is used until it reaches its quota).
pub const GOOD_POOL: usize = 400;
/// Phase c: good identities in use at once per wrk thread.
pub const GOOD_ACTIVE: usize = 10;
/// Phase c: the share of its limit a good identity is taken to (SC-005: clients at ≤ 80 % of
/// their limit are never throttled).
pub const GOOD_QUOTA_SHARE: f64 = 0.8;
/// Phase c: identities pushed over their limit before the run.
pub const ABUSE_IDENTITIES: usize = 200;
/// Phase c: the abuse tier's budget per `ABUSE_WINDOW_SECONDS`.
pub const ABUSE_LIMIT: u64 = 5;
pub const ABUSE_WINDOW_SECONDS: u64 = 3_600;
/// Phases a and b: the share of its limit an identity is expected to reach within the run
/// (SC-003 asks for identities between 50 % and 80 %).
pub const SC003_TARGET_SHARE: f64 = 0.65;
pub const SC003_SHARE_RANGE: (f64, f64) = (0.5, 0.8);
/// Phases a and b: every `SAMPLE_EVERY`-th identity of the key list is a sample whose count
/// in the control plane is compared with what was sent; it gets `1 / SAMPLE_QUOTA_DIVISOR`
/// of an ordinary identity's share, so it is done well before the run ends.
pub const SAMPLES_PER_RUN: usize = 10;
pub const SAMPLE_QUOTA_DIVISOR: f64 = 3.0;
/// A limit no run reaches (warm-up, fixed-rate runs): the largest the exact log accepts. The
/// busiest identity of those runs sees a few thousand requests a window.
pub const NEVER: u64 = control_plane::config::MAX_EXACT_LOG_LIMIT;
/// An endpoint rule under a budget over the same window must stay below it (at the budget it
/// could never bind, and the configuration refuses it): every decision of phases a and b still
/// takes two counters, as with the sample configuration's tiers.
fn rule_below(budget: u64) -> u64 {
    budget.saturating_sub(1).max(1)
}

/// Tier names (they come back in `X-RateLimit-Tier`; abuse.lua matches the last two).
pub const BULK_TIER: &str = "b";
pub const WARM_TIER: &str = "w";
pub const GOOD_TIER: &str = "lb_good";
pub const ABUSE_TIER: &str = "lb_abuse";
/// The path every request asks for; the bulk and warm tiers have an endpoint rule on it, so a
/// decision updates two counters, as with the sample configuration's tiers.
pub const PATH: &str = "/api/v1/request";

/// One API key: its id in the configuration and the key clients send.
#[derive(Debug, Clone)]
pub struct Key {
    pub id: String,
    pub secret: String,
}

impl Key {
    fn new(id: String) -> Key {
        // Deterministic, key-looking secrets (16 hex characters after the prefix).
        let digest = Sha256::digest(format!("load-bench secret {id}").as_bytes());
        let secret = format!("lbk_{}", hex::encode(&digest[..8]));
        Key { id, secret }
    }

    /// The identifier the control plane's status endpoint knows it by.
    pub fn identity(&self) -> String {
        format!("key:{}", self.id)
    }
}

pub struct Keys {
    pub bulk: Vec<Key>,
    pub warm: Vec<Key>,
    pub good: Vec<Key>,
    pub abuse: Vec<Key>,
}

/// Files the load generators read (one key per line).
pub struct KeyFiles {
    pub bulk: PathBuf,
    pub small: PathBuf,
    pub warm: PathBuf,
    pub good: PathBuf,
    pub abuse: PathBuf,
}

/// The limits of one control-plane start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Budget and endpoint limit of the bulk tier (phases a, b and the fixed rates).
    pub bulk: u64,
    /// Budget of the good tier (phase c).
    pub good: u64,
    /// Window of the bulk and good tiers: longer than a run and the reads after it.
    pub window_s: u64,
}

impl Limits {
    /// Nothing is ever throttled but the abuse tier (warm-up, fixed-rate runs).
    pub fn generous(duration_s: u64) -> Limits {
        Limits {
            bulk: NEVER,
            good: NEVER,
            window_s: window_for(duration_s),
        }
    }
}

/// A window that holds a whole run and the status reads after it.
pub fn window_for(duration_s: u64) -> u64 {
    (duration_s + 45).max(60)
}

impl Keys {
    pub fn generate() -> Keys {
        let set = |prefix: &str, n: usize| -> Vec<Key> {
            (0..n)
                .map(|i| Key::new(format!("{prefix}{i:04}")))
                .collect()
        };
        Keys {
            bulk: set("k", BULK_IDENTITIES),
            warm: set("w", WARM_IDENTITIES),
            good: set("g", GOOD_POOL),
            abuse: set("a", ABUSE_IDENTITIES),
        }
    }

    pub fn small(&self) -> &[Key] {
        &self.bulk[..SMALL_IDENTITIES]
    }

    pub fn write_files(&self, dir: &Path) -> std::io::Result<KeyFiles> {
        let write = |name: &str, keys: &[Key]| -> std::io::Result<PathBuf> {
            let path = dir.join(name);
            let mut text = String::new();
            for key in keys {
                text.push_str(&key.secret);
                text.push('\n');
            }
            std::fs::write(&path, text)?;
            Ok(path)
        };
        Ok(KeyFiles {
            bulk: write("keys-bulk.txt", &self.bulk)?,
            small: write("keys-small.txt", self.small())?,
            warm: write("keys-warm.txt", &self.warm)?,
            good: write("keys-good.txt", &self.good)?,
            abuse: write("keys-abuse.txt", &self.abuse)?,
        })
    }

    /// The control plane's configuration for one start: four tiers and every key. Keys are
    /// written as `key` (20 characters), not `key_sha256` (64): 10,700 of them must fit the
    /// control plane's 1 MiB limit on a configuration file, and both forms are looked up the
    /// same way (by the SHA-256 of the presented key).
    /// `counters`: how every tier's windows are kept; `charging`: the endpoint rules take a
    /// charge after each response (`max_charge`).
    pub fn control_plane_config(
        &self,
        limits: &Limits,
        counters: Counters,
        charging: bool,
    ) -> String {
        let Limits {
            bulk,
            good,
            window_s,
        } = *limits;
        let (bulk_rule, never_rule) = (rule_below(bulk), rule_below(NEVER));
        let rule = |limit: u64| {
            if charging {
                format!(
                    "{{limits: [{{limit: {limit}, window_seconds: {window_s}}}], max_charge: {}}}",
                    crate::configs::CHARGE_UNITS
                )
            } else {
                limit.to_string()
            }
        };
        let (bulk_rule, never_rule) = (rule(bulk_rule), rule(never_rule));
        let algorithm = counters.tier_line();
        let mut yaml = format!(
            "# Generated by load_bench (scripts/load-bench.sh).\n\
             enabled: true\n\
             default_tier: {WARM_TIER}\n\
             fail_open: true\n\
             tiers:\n\
             - name: {BULK_TIER}\n\
             \x20 description: phases a and b (sized per run), fixed rates\n\
             \x20 requests_per_window: {bulk}\n\
             {algorithm}\
             \x20 window_size_seconds: {window_s}\n\
             \x20 endpoints:\n\
             \x20   {PATH}: {bulk_rule}\n\
             - name: {WARM_TIER}\n\
             \x20 description: warm-up after each start, never throttles\n\
             \x20 requests_per_window: {NEVER}\n\
             {algorithm}\
             \x20 window_size_seconds: {window_s}\n\
             \x20 endpoints:\n\
             \x20   {PATH}: {never_rule}\n\
             - name: {GOOD_TIER}\n\
             \x20 description: phase c, taken to {quota:.0}% of the limit\n\
             \x20 requests_per_window: {good}\n\
             {algorithm}\
             \x20 window_size_seconds: {window_s}\n\
             - name: {ABUSE_TIER}\n\
             \x20 description: phase c, over the limit from the start\n\
             \x20 requests_per_window: {ABUSE_LIMIT}\n\
             {algorithm}\
             \x20 window_size_seconds: {ABUSE_WINDOW_SECONDS}\n\
             api_keys:\n",
            quota = GOOD_QUOTA_SHARE * 100.0,
        );
        let sets = [
            (&self.bulk, BULK_TIER),
            (&self.warm, WARM_TIER),
            (&self.good, GOOD_TIER),
            (&self.abuse, ABUSE_TIER),
        ];
        for (keys, tier) in sets {
            for key in keys.iter() {
                let _ = writeln!(
                    yaml,
                    "- {{id: {},tier: {tier},key: {}}}",
                    key.id, key.secret
                );
            }
        }
        yaml
    }
}

/// Phases a and b: the bulk tier's limit for identities expected to get `per_identity`
/// requests each within the run, so that they reach `SC003_TARGET_SHARE` of it.
pub fn bulk_limit(per_identity: f64) -> u64 {
    ((per_identity / SC003_TARGET_SHARE).ceil() as u64).max(2)
}

/// Phases a and b: what a sample identity gets (a third of an ordinary identity's share, so
/// it is reached early in the run and every sample request has been answered at its end).
pub fn sample_quota(per_identity: f64) -> u64 {
    ((per_identity / SAMPLE_QUOTA_DIVISOR).floor() as u64).max(1)
}

/// Phases a and b: one key in `sample_every` of a list of `identities` is a sample.
pub fn sample_every(identities: usize) -> usize {
    (identities / SAMPLES_PER_RUN).max(1)
}

/// 1-based line numbers of the sample keys of a list of `identities` (keys.lua's choice).
pub fn sample_lines(identities: usize) -> Vec<usize> {
    (1..=identities).step_by(sample_every(identities)).collect()
}

/// 1-based line numbers of identities between the samples, whose counts show the share of
/// the limit ordinary identities reached.
pub fn probe_lines(identities: usize) -> Vec<usize> {
    let every = sample_every(identities);
    if every < 2 {
        return Vec::new();
    }
    sample_lines(identities)
        .into_iter()
        .map(|line| line + every / 2)
        .filter(|&line| line <= identities)
        .collect()
}

/// Phase c: the good tier's limit. A good identity is used until it has sent
/// `GOOD_QUOTA_SHARE` of it; the pool must last a run at `ceiling` req/s (with room to spare).
pub fn good_limit(ceiling: f64, duration_s: u64) -> u64 {
    let good_requests = ceiling * duration_s as f64 / GOOD_EVERY as f64;
    let usable = (GOOD_POOL / 2) as f64;
    let limit = (good_requests / usable / GOOD_QUOTA_SHARE).ceil() as u64;
    limit.max(50)
}

/// Phase c: requests a good identity sends (its quota).
pub fn good_quota(limit: u64) -> u64 {
    (limit as f64 * GOOD_QUOTA_SHARE).floor() as u64
}

#[cfg(test)]
mod tests;
