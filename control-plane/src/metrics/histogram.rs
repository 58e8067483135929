//! Latency histogram with fixed buckets and atomic counts.
//!
//! prometheus-client's own histogram takes a mutex on every observation; this one is
//! lock-free (one relaxed increment per bucket hit), is exposed through prometheus-client's
//! encoder, and also answers the quantiles of the JSON metrics endpoint, so both views come
//! from the same counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Cheap to clone: clones share the counts (one is registered for scraping, one observed).
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Upper bounds in seconds, ascending; an implicit +Inf bucket follows.
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    /// `count` exponential buckets from `start` seconds, each `factor` times the previous.
    pub fn exponential(start: f64, factor: f64, count: usize) -> Self {
        let bounds: Vec<f64> = (0..count).map(|i| start * factor.powi(i as i32)).collect();
        let counts = (0..=count).map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(Inner {
                bounds,
                counts,
                sum_ns: AtomicU64::new(0),
            }),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let index = self.inner.bounds.partition_point(|&b| b < secs);
        self.inner.counts[index].fetch_add(1, Ordering::Relaxed);
        self.inner
            .sum_ns
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> (Vec<u64>, f64) {
        let counts = self
            .inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        (
            counts,
            self.inner.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        )
    }

    pub fn count(&self) -> u64 {
        self.inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Mean in seconds (0 when empty).
    pub fn mean(&self) -> f64 {
        let (counts, sum) = self.snapshot();
        let n: u64 = counts.iter().sum();
        if n == 0 { 0.0 } else { sum / n as f64 }
    }

    /// Quantile estimate in seconds, interpolating linearly inside the bucket that holds it
    /// (as Prometheus' `histogram_quantile` does); 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        let (counts, _) = self.snapshot();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &n) in counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let lower = if i == 0 {
                    0.0
                } else {
                    self.inner.bounds[i - 1]
                };
                // The +Inf bucket has no upper bound: report its lower edge.
                let Some(&upper) = self.inner.bounds.get(i) else {
                    return lower;
                };
                let within = (rank - seen as f64) / n as f64;
                return lower + (upper - lower) * within;
            }
            seen += n;
        }
        self.inner.bounds.last().copied().unwrap_or(0.0)
    }
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (counts, sum) = self.snapshot();
        let total = counts.iter().sum();
        let buckets: Vec<(f64, u64)> = self
            .inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(counts)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(sum, total, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests;
