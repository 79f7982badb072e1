//! [`Latency`]: a latency distribution kept in an hdrhistogram and served
//! as a Prometheus histogram.
//!
//! The hdrhistogram keeps every value to 3 significant digits, from 1 µs to
//! an hour, so percentiles (p50, p99, p999) are exact enough to quote; they
//! are what `/status` and the benchmarks print. `/metrics` serves the same
//! data as a classic histogram with fixed buckets in seconds, which a
//! Prometheus server can aggregate across processes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds of the buckets `/metrics` shows, in seconds.
pub const BUCKETS: [f64; 18] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 1800.0,
];

/// Largest value kept, µs (an hour); larger ones are clamped to it.
const MAX_MICROS: u64 = 3_600_000_000;

#[derive(Debug)]
struct Inner {
    histogram: Histogram<u64>,
    /// Exact sum of the recorded values, µs.
    sum_micros: u128,
}

/// A latency distribution. Clones share the same data.
#[derive(Debug, Clone)]
pub struct Latency {
    inner: Arc<Mutex<Option<Inner>>>,
}

impl Default for Latency {
    fn default() -> Self {
        let inner = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .ok()
            .map(|histogram| Inner {
                histogram,
                sum_micros: 0,
            });
        Latency {
            inner: Arc::new(Mutex::new(inner)),
        }
    }
}

/// Percentiles of a [`Latency`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quantiles {
    /// Values recorded.
    pub count: u64,
    /// Their sum.
    pub sum: Duration,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
}

impl Latency {
    /// Records one value.
    pub fn record(&self, value: Duration) {
        self.record_n(value, 1);
    }

    /// Records `value` `n` times.
    pub fn record_n(&self, value: Duration, n: u64) {
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.record_micros(std::iter::once((micros, n)));
    }

    /// Records several values (µs, times) under one lock.
    pub fn record_micros(&self, values: impl IntoIterator<Item = (u64, u64)>) {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(inner) = guard.as_mut() else { return };
        for (micros, n) in values {
            let v = micros.clamp(1, MAX_MICROS);
            inner.histogram.saturating_record_n(v, n);
            inner.sum_micros += u128::from(v) * u128::from(n);
        }
    }

    /// Values recorded so far.
    pub fn count(&self) -> u64 {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().map_or(0, |i| i.histogram.len())
    }

    /// The percentiles of what was recorded.
    pub fn quantiles(&self) -> Quantiles {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(inner) = guard.as_ref() else {
            return Quantiles::default();
        };
        let h = &inner.histogram;
        let at = |q: f64| {
            Duration::from_micros(if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            })
        };
        Quantiles {
            count: h.len(),
            sum: Duration::from_micros(u64::try_from(inner.sum_micros).unwrap_or(u64::MAX)),
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
        }
    }

    /// (sum in seconds, count, per-bucket counts) as `/metrics` shows them.
    fn buckets(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut buckets: Vec<(f64, u64)> = BUCKETS.iter().map(|b| (*b, 0)).collect();
        let Some(inner) = guard.as_ref() else {
            return (0.0, 0, buckets);
        };
        for v in inner.histogram.iter_recorded() {
            // The bin a value fell in, by its lowest value: off by at most
            // one part in a thousand, and exact for values on a bound.
            let seconds = inner.histogram.lowest_equivalent(v.value_iterated_to()) as f64 / 1e6;
            if let Some(b) = buckets.iter_mut().find(|(le, _)| seconds <= *le) {
                b.1 += v.count_at_value();
            }
        }
        (
            inner.sum_micros as f64 / 1e6,
            inner.histogram.len(),
            buckets,
        )
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.buckets();
        encoder.encode_histogram::<NoLabelSet>(
            sum,
            count,
            &buckets,
            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_buckets_describe_the_same_values() {
        let l = Latency::default();
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        let q = l.quantiles();
        assert_eq!(q.count, 1000);
        let within = |d: Duration, ms: u64| {
            (d.as_micros() as f64 / 1000.0 - ms as f64).abs() <= ms as f64 * 0.001 + 0.001
        };
        assert!(within(q.p50, 500), "{q:?}");
        assert!(within(q.p99, 990), "{q:?}");
        assert!(within(q.p999, 999), "{q:?}");
        assert_eq!(q.sum, Duration::from_millis(500_500));
        let (sum, count, buckets) = l.buckets();
        assert_eq!(count, 1000);
        assert!((sum - 500.5).abs() < 1e-9);
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 1000);
        let upto = |le: f64| -> u64 { buckets.iter().filter(|b| b.0 <= le).map(|b| b.1).sum() };
        assert_eq!(upto(0.001), 1);
        assert_eq!(upto(0.01), 10);
        assert_eq!(upto(0.1), 100);
        assert_eq!(upto(0.5), 500);
        assert_eq!(upto(1.0), 1000);
    }

    #[test]
    fn values_past_an_hour_are_clamped_not_lost() {
        let l = Latency::default();
        l.record(Duration::from_secs(7200));
        l.record(Duration::ZERO);
        let q = l.quantiles();
        assert_eq!(q.count, 2);
        assert!(q.p999 >= Duration::from_secs(3599));
    }
}
