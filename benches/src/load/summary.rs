//! The runs of one configuration, phase, connection count and rate (a cell) taken together:
//! median and spread over the repeats. Ratios between configurations are ratios of medians;
//! their spread pairs the repeats (start n of one configuration with start n of the other,
//! which ran next to each other).

use serde::Serialize;

use crate::Phase;
use crate::record::{Errors, RunRecord};

/// Median and range of one figure over the repeats.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn median(values: Vec<f64>) -> Option<f64> {
    spread(values).map(|s| s.median)
}

/// `None` when no value is finite.
pub fn spread(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    Some(Spread {
        median,
        min: v[0],
        max: v[v.len() - 1],
        n: v.len(),
    })
}

/// Which runs belong together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellKey {
    pub variant: String,
    pub phase: Phase,
    pub connections: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_share: Option<f64>,
}

impl CellKey {
    fn of(r: &RunRecord) -> CellKey {
        CellKey {
            variant: r.variant.clone(),
            phase: r.phase,
            connections: r.connections,
            rate_share: r.rate_share,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Cell<'a> {
    pub key: CellKey,
    /// In the order they ran.
    pub runs: Vec<&'a RunRecord>,
}

impl<'a> Cell<'a> {
    pub fn figure(&self, f: impl Fn(&RunRecord) -> Option<f64>) -> Option<Spread> {
        spread(self.runs.iter().filter_map(|r| f(r)))
    }

    pub fn rps(&self) -> Option<Spread> {
        self.figure(|r| Some(r.load.rps))
    }

    pub fn p50(&self) -> Option<Spread> {
        self.figure(|r| Some(r.load.p50_ms))
    }

    pub fn p95(&self) -> Option<Spread> {
        self.figure(|r| Some(r.load.p95_ms))
    }

    pub fn p99(&self) -> Option<Spread> {
        self.figure(|r| Some(r.load.p99_ms))
    }

    /// Errors summed over the repeats.
    pub fn errors(&self) -> Errors {
        let mut total = Errors::default();
        for r in &self.runs {
            total.add(&r.errors);
        }
        total
    }

    pub fn non_2xx(&self) -> u64 {
        self.runs.iter().map(|r| r.load.non_2xx).sum()
    }

    /// The run of repeat `n`.
    pub fn repeat(&self, n: u32) -> Option<&'a RunRecord> {
        self.runs.iter().copied().find(|r| r.repeat == n)
    }
}

/// Every cell of a benchmark run, in the order they first ran.
#[derive(Debug, Clone, Default)]
pub struct Cells<'a> {
    cells: Vec<Cell<'a>>,
}

impl<'a> Cells<'a> {
    pub fn new(records: &'a [RunRecord]) -> Cells<'a> {
        let mut cells: Vec<Cell<'a>> = Vec::new();
        for r in records {
            let key = CellKey::of(r);
            match cells.iter_mut().find(|c| c.key == key) {
                Some(cell) => cell.runs.push(r),
                None => cells.push(Cell { key, runs: vec![r] }),
            }
        }
        Cells { cells }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Cell<'a>> {
        self.cells.iter()
    }

    pub fn get(
        &self,
        variant: &str,
        phase: Phase,
        connections: u32,
        rate_share: Option<f64>,
    ) -> Option<&Cell<'a>> {
        self.cells.iter().find(|c| {
            c.key.variant == variant
                && c.key.phase == phase
                && c.key.connections == connections
                && c.key.rate_share == rate_share
        })
    }

    /// The cell of configuration 1 with the same phase, connections and rate as `cell`.
    pub fn passthrough(&self, cell: &Cell) -> Option<&Cell<'a>> {
        self.get(
            crate::PASSTHROUGH,
            cell.key.phase,
            cell.key.connections,
            cell.key.rate_share,
        )
    }
}

/// `a / b` of one figure: the ratio of the medians, and the range of the ratios of runs with
/// the same repeat number.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ratio {
    pub of_medians: f64,
    pub paired: Option<Spread>,
}

pub fn ratio(a: &Cell, b: &Cell, f: impl Fn(&RunRecord) -> Option<f64>) -> Option<Ratio> {
    let (ma, mb) = (a.figure(&f)?.median, b.figure(&f)?.median);
    if mb == 0.0 {
        return None;
    }
    let paired = spread(a.runs.iter().filter_map(|ra| {
        let rb = b.repeat(ra.repeat)?;
        let (x, y) = (f(ra)?, f(rb)?);
        (y != 0.0).then(|| x / y)
    }));
    Some(Ratio {
        of_medians: ma / mb,
        paired,
    })
}

/// `a − b` of one figure: the difference of the medians, and the range of the paired
/// differences.
pub fn difference(a: &Cell, b: &Cell, f: impl Fn(&RunRecord) -> Option<f64>) -> Option<Ratio> {
    let (ma, mb) = (a.figure(&f)?.median, b.figure(&f)?.median);
    let paired = spread(a.runs.iter().filter_map(|ra| {
        let rb = b.repeat(ra.repeat)?;
        Some(f(ra)? - f(rb)?)
    }));
    Some(Ratio {
        of_medians: ma - mb,
        paired,
    })
}

/// A cell's figures for results.json.
#[derive(Debug, Clone, Serialize)]
pub struct CellSummary {
    #[serde(flatten)]
    pub key: CellKey,
    pub runs: usize,
    pub rps: Option<Spread>,
    pub p50_ms: Option<Spread>,
    pub p95_ms: Option<Spread>,
    pub p99_ms: Option<Spread>,
    pub non_2xx: u64,
    pub errors: Errors,
    /// Ratio to configuration 1 in the same cell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rps_vs_passthrough: Option<Ratio>,
}

pub fn summaries(cells: &Cells) -> Vec<CellSummary> {
    cells
        .iter()
        .map(|c| CellSummary {
            key: c.key.clone(),
            runs: c.runs.len(),
            rps: c.rps(),
            p50_ms: c.p50(),
            p95_ms: c.p95(),
            p99_ms: c.p99(),
            non_2xx: c.non_2xx(),
            errors: c.errors(),
            rps_vs_passthrough: cells
                .passthrough(c)
                .filter(|_| c.key.variant != crate::PASSTHROUGH)
                .and_then(|b| ratio(c, b, |r| Some(r.load.rps))),
        })
        .collect()
}

#[cfg(test)]
mod tests;
