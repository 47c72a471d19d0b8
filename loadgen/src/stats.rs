//! Statistics: HDR histograms of nanosecond latencies, their percentile
//! summaries (in microseconds, as reported), error counters, and medians
//! across rounds.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest trackable latency (100 s); larger values saturate.
pub const HIST_MAX_NS: u64 = 100_000_000_000;

/// A latency histogram in nanoseconds, 4 significant digits. Three are not
/// enough for what loadgen compares: a 48 ms round trip would resolve only to
/// 33 µs steps, coarser than the relay overhead being measured; four give
/// 4 µs there (and 1.6 MB per histogram; there is one per thread).
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 4).expect("static bounds are valid")
}

/// Percentile summary of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
}

impl Summary {
    /// None for an empty histogram.
    pub fn from_hist(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Self {
            count: h.len(),
            min: us(h.min()),
            mean: h.mean() / 1000.0,
            stdev: h.stdev() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            p9999: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
        })
    }
}

/// Everything that went wrong in a run. Any non-zero counter other than
/// `timeouts` makes the run fail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// Sum of the error counters below (excluding `timeouts`).
    pub total: u64,
    /// Sent, never echoed (gaps in the sequence, or missing at the end).
    pub lost: u64,
    /// Echoed more than once (or arriving after a later one).
    pub duplicated: u64,
    /// Echoed with a damaged header or payload, or the wrong length/opcode.
    pub corrupted: u64,
    /// Intact messages this connection never sent.
    pub unexpected: u64,
    /// Connections that failed mid-run: I/O or WebSocket protocol errors,
    /// unexpected close frames.
    pub protocol: u64,
    /// Connections that could not be established (connect mode).
    pub connect: u64,
    /// Informational: times the sender stopped waiting for an echo after
    /// `--timeout-ms` (the message is then either late or lost).
    pub timeouts: u64,
    /// The first error seen, in words.
    pub first: Option<String>,
}

impl ErrorCounts {
    pub fn note(&mut self, what: impl FnOnce() -> String) {
        if self.first.is_none() {
            self.first = Some(what());
        }
    }

    pub fn recompute_total(&mut self) {
        self.total = self.lost
            + self.duplicated
            + self.corrupted
            + self.unexpected
            + self.protocol
            + self.connect;
    }

    pub fn merge(&mut self, o: &ErrorCounts) {
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.corrupted += o.corrupted;
        self.unexpected += o.unexpected;
        self.protocol += o.protocol;
        self.connect += o.connect;
        self.timeouts += o.timeouts;
        if self.first.is_none() {
            self.first.clone_from(&o.first);
        }
        self.recompute_total();
    }
}

/// Median of a list (mean of the middle two for even lengths); NaN if empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_in_microseconds() {
        let mut h = new_hist();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let s = Summary::from_hist(&h).unwrap();
        assert_eq!(s.count, 1000);
        assert!((s.p50 - 500.0).abs() < 1.0, "{}", s.p50);
        assert!((s.max - 1000.0).abs() < 1.0);
        assert!(Summary::from_hist(&new_hist()).is_none());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
