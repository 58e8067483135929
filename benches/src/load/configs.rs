//! The configurations under test: one table row each ([`TABLE`]), and `--variant` for
//! experiments derived from a row. A new configuration is a new row (and, if it needs them, a
//! new `FilterKind` / `StoreKind`).

use std::path::PathBuf;

use crate::Phase;

/// The HTTP filter in front of the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterKind {
    None,
    LocalRateLimit,
    /// Our filter, asking the control plane.
    Wasm,
    /// Our filter with `benchmark_no_callout`: evidence and fixed headers, no call.
    WasmNoCallout,
    /// Envoy's native `envoy.filters.http.ratelimit`, asking the control plane over gRPC.
    NativeRateLimit,
}

/// The control plane's counter store (none: no control plane at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    None,
    Memory,
    Redis,
}

/// How the control plane's counters keep their windows (the tiers' `algorithm`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Counters {
    /// The exact log (the default).
    #[default]
    Exact,
    /// Slotted windows at the default precision (W/60).
    Slotted,
}

impl Counters {
    /// The tier-level configuration line (empty for the default).
    pub fn tier_line(self) -> &'static str {
        match self {
            Counters::Exact => "",
            Counters::Slotted => "  algorithm: slotted\n",
        }
    }
}

/// One row of the table.
pub struct Spec {
    pub name: &'static str,
    pub label: &'static str,
    pub filter: FilterKind,
    pub store: StoreKind,
    pub counters: Counters,
    /// The phases this configuration runs (`--phases` narrows them further).
    pub phases: &'static [Phase],
    /// Every response charges after the fact ([`CHARGE_HEADER`], one unit, added by Envoy's
    /// route to the upstream's answer; the endpoint rule takes charges, `max_charge`): what
    /// usage reports cost on top of a decision.
    pub charging: bool,
}

/// The charge header of a charging configuration (the filter's default `charge_header`) and
/// the units each response charges.
pub const CHARGE_HEADER: &str = "x-ratelimit-charge";
pub const CHARGE_UNITS: u64 = 1;

const ALL: &[Phase] = &[Phase::A, Phase::B, Phase::C, Phase::Fixed];

/// Every configuration. Configuration 1 is the ceiling every other one is compared with: it
/// runs every phase, so each verdict has passthrough figures from the same run.
pub const TABLE: &[Spec] = &[
    Spec {
        name: "1",
        label: "Envoy passthrough",
        filter: FilterKind::None,
        store: StoreKind::None,
        counters: Counters::Exact,
        phases: ALL,
        charging: false,
    },
    Spec {
        name: "2",
        label: "Envoy local_ratelimit",
        filter: FilterKind::LocalRateLimit,
        store: StoreKind::None,
        counters: Counters::Exact,
        phases: &[Phase::A],
        charging: false,
    },
    Spec {
        name: "3",
        label: "filter + control plane, memory",
        filter: FilterKind::Wasm,
        store: StoreKind::Memory,
        counters: Counters::Exact,
        phases: ALL,
        charging: false,
    },
    Spec {
        name: "4",
        label: "filter + control plane, Redis",
        filter: FilterKind::Wasm,
        store: StoreKind::Redis,
        counters: Counters::Exact,
        phases: ALL,
        charging: false,
    },
    // Throughput and hot identities only: phase c's verdicts judge admissions by the exact
    // rule, which slotted counters do not follow by design (they may deny early).
    Spec {
        name: "4s",
        label: "filter + control plane, Redis, slotted counters",
        filter: FilterKind::Wasm,
        store: StoreKind::Redis,
        counters: Counters::Slotted,
        phases: &[Phase::A, Phase::B],
        charging: false,
    },
    // Envoy's own rate-limit filter into our control plane: how Limitador and
    // envoyproxy/ratelimit are deployed. Throughput and hot identities.
    Spec {
        name: "5",
        label: "Envoy ratelimit filter + control plane (gRPC), Redis",
        filter: FilterKind::NativeRateLimit,
        store: StoreKind::Redis,
        counters: Counters::Exact,
        phases: &[Phase::A, Phase::B],
        charging: false,
    },
    // Charges after the response at a fixed rate only: a response charging a unit doubles what
    // each request takes, which the closed-loop phases' admission checks do not expect.
    Spec {
        name: "4c",
        label: "filter + control plane, Redis, a charge per response",
        filter: FilterKind::Wasm,
        store: StoreKind::Redis,
        counters: Counters::Exact,
        phases: &[Phase::Fixed],
        charging: true,
    },
    Spec {
        name: "w",
        label: "filter without callout (Wasm floor)",
        filter: FilterKind::WasmNoCallout,
        store: StoreKind::None,
        counters: Counters::Exact,
        phases: &[Phase::A, Phase::Fixed],
        charging: false,
    },
];

/// The default `--configs`: one round of the interleaving (repeated `--repeats` times).
pub const DEFAULT_ROUND: &[&str] = &["1", "4", "4s", "5", "3", "w", "2"];

/// One configuration under test.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Variant {
    /// Short name used in tables ("1" … "5", "4s", "w", or an experiment's name).
    pub name: String,
    pub label: String,
    pub filter: FilterKind,
    pub store: StoreKind,
    pub counters: Counters,
    pub phases: Vec<Phase>,
    /// See [`Spec::charging`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub charging: bool,
    pub control_plane: PathBuf,
    pub wasm: PathBuf,
    pub envoy_concurrency: u32,
    /// YAML lines added to the control-plane cluster (e.g. HTTP/2 protocol options).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster_extra: String,
    /// Replaces the filter snippet (benches/load/filter-*.yaml).
    #[serde(skip)]
    pub filter_yaml: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cp_env: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cp_args: Vec<String>,
}

impl Variant {
    pub fn uses_control_plane(&self) -> bool {
        self.store != StoreKind::None
    }

    pub fn runs(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }
}

/// Programs every row shares unless a variant says otherwise.
pub struct Programs {
    pub control_plane: PathBuf,
    pub wasm: PathBuf,
    pub envoy_concurrency: u32,
}

pub fn table(programs: &Programs) -> Vec<Variant> {
    TABLE
        .iter()
        .map(|spec| Variant {
            name: spec.name.to_string(),
            label: spec.label.to_string(),
            filter: spec.filter,
            store: spec.store,
            counters: spec.counters,
            phases: spec.phases.to_vec(),
            charging: spec.charging,
            control_plane: programs.control_plane.clone(),
            wasm: programs.wasm.clone(),
            envoy_concurrency: programs.envoy_concurrency,
            cluster_extra: String::new(),
            filter_yaml: None,
            cp_env: Vec::new(),
            cp_args: Vec::new(),
        })
        .collect()
}

/// `--variant name=NAME,base=ROW[,field=value]...`: a configuration derived from a row.
/// `read` reads the files some fields name.
pub fn parse_variant(
    spec: &str,
    bases: &[Variant],
    read: impl Fn(&str) -> Result<String, String>,
) -> Result<Variant, String> {
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
    if bases.iter().any(|b| b.name == name) {
        return Err(format!(
            "--variant {spec}: {name} is already a configuration"
        ));
    }
    let mut v = bases
        .iter()
        .find(|b| b.name == base)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = bases.iter().map(|b| b.name.as_str()).collect();
            format!("--variant {spec}: base must be one of {}", names.join(", "))
        })?;
    v.label = format!("{} ({name})", v.label);
    v.name = name;
    for (key, value) in &fields {
        match key.as_str() {
            "name" | "base" => {}
            "label" => v.label = value.clone(),
            "cp-bin" => v.control_plane = PathBuf::from(value),
            "wasm" => v.wasm = PathBuf::from(value),
            "envoy-concurrency" => {
                v.envoy_concurrency = value
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--variant {spec}: envoy-concurrency"))?
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
            "counters" => {
                v.counters = match value.as_str() {
                    "exact" => Counters::Exact,
                    "slotted" => Counters::Slotted,
                    _ => return Err(format!("--variant {spec}: counters=exact|slotted")),
                }
            }
            other => return Err(format!("--variant {spec}: unknown field {other}")),
        }
    }
    Ok(v)
}

/// The order configurations start in: `round` (names) `repeats` times, so that repeats of one
/// configuration are spread over the whole run (1, 4, 3, 1, 4, 3, …). A name listed twice in
/// `round` runs twice per round. Each entry: (variant, its repeat number from 1).
pub fn interleave<'a>(round: &[&'a Variant], repeats: u32) -> Vec<(&'a Variant, u32)> {
    let mut seen: std::collections::BTreeMap<&str, u32> = Default::default();
    let mut order = Vec::new();
    for _ in 0..repeats {
        for v in round {
            let n = seen.entry(v.name.as_str()).or_default();
            *n += 1;
            order.push((*v, *n));
        }
    }
    order
}

#[cfg(test)]
mod tests;
