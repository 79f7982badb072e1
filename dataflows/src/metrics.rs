//! Metric names and the process-wide counters behind them.
//!
//! Every metric Footprint reports is declared here, so names stay in one
//! place. Counters are plain atomics shared by the operators of a process;
//! rendering them (terminal view, Prometheus text) happens elsewhere.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::event::BadReason;

/// Messages read from the source topics (good and bad).
pub const EVENTS_IN: &str = "footprint_events_in_total";
/// Messages a bounded backfill read past its range, only to complete the
/// windows its range touched.
pub const BACKFILL_TAIL: &str = "footprint_backfill_tail_events_total";
/// Rejected messages, labelled by `reason`.
pub const EVENTS_BAD: &str = "footprint_events_bad_total";
/// Events that missed at least one final window, labelled by `aggregate`.
pub const EVENTS_LATE: &str = "footprint_events_late_total";
/// Final window rows emitted, labelled by `aggregate`.
pub const WINDOWS_EMITTED: &str = "footprint_windows_emitted_total";
/// Early (non-final) window rows emitted.
pub const WINDOW_UPDATES: &str = "footprint_window_updates_total";
/// Recent-activity rows emitted.
pub const RECENT_UPDATES: &str = "footprint_recent_updates_total";
/// Dead-letter or late-topic records that could not be produced.
pub const SIDE_OUTPUT_FAILURES: &str = "footprint_side_output_failures_total";
/// Rows written by each sink, labelled by `sink`.
pub const SINK_WRITES: &str = "footprint_sink_writes_total";
/// Failed sink writes, labelled by `sink`.
pub const SINK_FAILURES: &str = "footprint_sink_failures_total";
/// Rows diverted to the retry topic (or journal) instead of their store, labelled by `sink`.
pub const SINK_DIVERTED: &str = "footprint_sink_diverted_total";
/// Rows left unwritten because a newer row of the same identity replaced
/// them while they waited for a busy store, labelled by `sink`.
pub const SINK_FOLDED: &str = "footprint_sink_folded_total";
/// Gauge: result rows handed to the store writers and not yet written or
/// diverted, summed over this process's workers and stores. The sources
/// pause while it is at [`crate::source::SourceSettings::max_sink_rows_waiting`].
pub const SINK_ROWS_WAITING: &str = "footprint_sink_rows_waiting";
/// Times a sink's circuit breaker opened, labelled by `sink`.
pub const SINK_BREAKER_OPENED: &str = "footprint_sink_breaker_opened_total";
/// 1 when a sink's switch is degraded, labelled by `sink`.
pub const SINK_DEGRADED: &str = "footprint_sink_degraded";
/// Gauge: each store sink's circuit breaker, 0 closed, 1 half-open, 2 open.
pub const SINK_BREAKER_STATE: &str = "footprint_sink_breaker_state";
/// Gauge: per source partition, its end offset minus the committed offset.
pub const CONSUMER_LAG: &str = "footprint_consumer_lag_messages";
/// Gauge: retry-topic records the replay job has not committed past.
pub const RETRY_BACKLOG: &str = "footprint_retry_backlog_records";
/// Retry records waiting in the local journal.
pub const JOURNAL_RECORDS: &str = "footprint_journal_records";
/// How far the watermark is behind the newest event read, ms.
pub const WATERMARK_DELAY: &str = "footprint_watermark_delay_ms";
/// Time to write one batch to a store (retries included), labelled by
/// `sink`; a Prometheus summary with p50, p99 and p999.
pub const SINK_WRITE_LATENCY: &str = "footprint_sink_write_latency_seconds";
/// From a message's broker timestamp to the store write that first shows
/// it, labelled by `sink`; a summary with p50, p99 and p999.
pub const END_TO_END_LATENCY: &str = "footprint_end_to_end_latency_seconds";
/// Source partitions that started somewhere else than their checkpoint,
/// labelled by `reason` (`skip_to_latest`, `past_end`, `before_start`).
pub const OFFSET_RESETS: &str = "footprint_offset_resets_total";
/// Offsets not read because of those starts, labelled by `reason`.
pub const OFFSETS_SKIPPED: &str = "footprint_offsets_skipped_total";
/// From a window's end (its event time read as wall-clock time) to the
/// store write of its final row, labelled by `sink`; a summary with p50,
/// p99 and p999. On a live stream it is the time a final result takes to
/// appear: `max_out_of_order` and `allowed_lateness` by design, plus the
/// pipeline's own delay.
pub const FINAL_DELAY: &str = "footprint_final_delay_seconds";
/// The global watermark, ms since the epoch.
pub const WATERMARK: &str = "footprint_watermark_ms";
/// The largest event time read, ms since the epoch.
pub const MAX_EVENT_TS: &str = "footprint_max_event_ts_ms";

/// The counters of one process.
#[derive(Debug)]
pub struct Metrics {
    /// Names of the aggregates, in spec order (labels).
    pub aggregates: Vec<String>,
    /// See [`EVENTS_IN`].
    pub events_in: AtomicU64,
    /// See [`BACKFILL_TAIL`].
    pub events_tail: AtomicU64,
    /// See [`EVENTS_BAD`], indexed by [`BadReason::index`].
    pub events_bad: [AtomicU64; BadReason::ALL.len()],
    /// See [`EVENTS_LATE`], indexed by aggregate.
    pub events_late: Vec<AtomicU64>,
    /// See [`WINDOWS_EMITTED`], indexed by aggregate.
    pub windows_emitted: Vec<AtomicU64>,
    /// See [`WINDOW_UPDATES`].
    pub window_updates: AtomicU64,
    /// See [`RECENT_UPDATES`].
    pub recent_updates: AtomicU64,
    /// See [`SIDE_OUTPUT_FAILURES`].
    pub side_output_failures: AtomicU64,
    /// See [`SINK_WRITES`], by sink name.
    pub sink_writes: std::sync::Mutex<Vec<(String, u64)>>,
    /// See [`SINK_FAILURES`], by sink name.
    pub sink_failures: std::sync::Mutex<Vec<(String, u64)>>,
    /// See [`SINK_DIVERTED`], by sink name.
    pub sink_diverted: std::sync::Mutex<Vec<(String, u64)>>,
    /// See [`SINK_ROWS_WAITING`].
    pub sink_rows_waiting: AtomicU64,
    /// See [`SINK_FOLDED`], by sink name.
    pub sink_folded: std::sync::Mutex<Vec<(String, u64)>>,
    /// See [`SINK_BREAKER_OPENED`], by sink name.
    pub sink_breaker_opened: std::sync::Mutex<Vec<(String, u64)>>,
    /// See [`SINK_WRITE_LATENCY`]: microseconds, by sink name.
    pub sink_write_us: Latencies,
    /// See [`END_TO_END_LATENCY`]: milliseconds, by sink name.
    pub end_to_end_ms: Latencies,
    /// See [`FINAL_DELAY`]: milliseconds, by sink name.
    pub final_delay_ms: Latencies,
    /// See [`SINK_BREAKER_STATE`].
    pub sink_breaker_state: std::sync::Mutex<Vec<(String, u64)>>,
    /// See [`CONSUMER_LAG`]: (topic, partition, lag), refreshed every few seconds.
    pub consumer_lag: std::sync::Mutex<Vec<(String, i32, u64)>>,
    /// See [`RETRY_BACKLOG`]; -1 until first measured.
    pub retry_backlog: AtomicI64,
    /// See [`WATERMARK`].
    pub watermark: AtomicU64,
    /// See [`MAX_EVENT_TS`].
    pub max_event_ts: AtomicI64,
    /// Ranges of source offsets this run does not read (see [`OFFSET_RESETS`]).
    pub skipped: std::sync::Mutex<Vec<SkippedRange>>,
}

/// A range of one source partition's offsets, `[from, to)`, that a run does
/// not read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SkippedRange {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset not read.
    pub from: i64,
    /// First offset read again.
    pub to: i64,
    /// `skip_to_latest`, `past_end` or `before_start`.
    pub reason: String,
}

impl Metrics {
    /// Counters for a pipeline with these aggregates.
    pub fn new(aggregates: Vec<String>) -> Self {
        let n = aggregates.len();
        Metrics {
            aggregates,
            events_in: AtomicU64::new(0),
            events_tail: AtomicU64::new(0),
            events_bad: Default::default(),
            events_late: (0..n).map(|_| AtomicU64::new(0)).collect(),
            windows_emitted: (0..n).map(|_| AtomicU64::new(0)).collect(),
            window_updates: AtomicU64::new(0),
            recent_updates: AtomicU64::new(0),
            side_output_failures: AtomicU64::new(0),
            sink_writes: Default::default(),
            sink_failures: Default::default(),
            sink_diverted: Default::default(),
            sink_folded: Default::default(),
            sink_rows_waiting: AtomicU64::new(0),
            sink_breaker_opened: Default::default(),
            sink_write_us: Latencies::default(),
            end_to_end_ms: Latencies::default(),
            final_delay_ms: Latencies::default(),
            sink_breaker_state: Default::default(),
            consumer_lag: Default::default(),
            retry_backlog: AtomicI64::new(-1),
            watermark: AtomicU64::new(0),
            max_event_ts: AtomicI64::new(0),
            skipped: Default::default(),
        }
    }

    /// Adds `n` to a per-sink counter.
    pub fn add_sink(counter: &std::sync::Mutex<Vec<(String, u64)>>, sink: &str, n: u64) {
        if let Ok(mut v) = counter.lock() {
            match v.iter_mut().find(|(s, _)| s == sink) {
                Some((_, c)) => *c += n,
                None => v.push((sink.to_owned(), n)),
            }
        }
    }

    /// Sets a per-sink gauge.
    pub fn set_sink(gauge: &std::sync::Mutex<Vec<(String, u64)>>, sink: &str, value: u64) {
        if let Ok(mut v) = gauge.lock() {
            match v.iter_mut().find(|(s, _)| s == sink) {
                Some((_, c)) => *c = value,
                None => v.push((sink.to_owned(), value)),
            }
        }
    }

    /// The value of a per-sink counter.
    pub fn sink_count(counter: &std::sync::Mutex<Vec<(String, u64)>>, sink: &str) -> u64 {
        counter.lock().map_or(0, |v| {
            v.iter().find(|(s, _)| s == sink).map_or(0, |(_, n)| *n)
        })
    }

    /// Rows that failed to reach a sink (neither written nor diverted), over all sinks.
    pub fn sink_failures_total(&self) -> u64 {
        Self::sink_total(&self.sink_failures)
    }

    /// A per-sink counter summed over every sink.
    pub fn sink_total(counter: &std::sync::Mutex<Vec<(String, u64)>>) -> u64 {
        counter
            .lock()
            .map_or(0, |v| v.iter().map(|(_, n)| *n).sum())
    }

    /// Total bad events over all reasons.
    pub fn bad_total(&self) -> u64 {
        self.events_bad
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Total late events over all aggregates.
    pub fn late_total(&self) -> u64 {
        self.events_late
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Raises the watermark gauge (it never goes back).
    pub fn raise_watermark(&self, w: u64) {
        self.watermark.fetch_max(w, Ordering::Relaxed);
    }
}

/// Latency histograms (hdrhistogram, 3 significant digits) by label.
#[derive(Debug, Default)]
pub struct Latencies {
    by_label: std::sync::Mutex<std::collections::BTreeMap<String, hdrhistogram::Histogram<u64>>>,
}

/// Quantiles of one histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantiles {
    /// Recorded values.
    pub count: u64,
    /// Sum of the recorded values (approximate: the mean times the count).
    pub sum: f64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
}

impl Latencies {
    /// Records `value` under `label` (values past one hour are clamped).
    pub fn record(&self, label: &str, value: u64) {
        self.record_n(label, value, 1);
    }

    /// Records `value` `n` times under `label`.
    pub fn record_n(&self, label: &str, value: u64, n: u64) {
        let Ok(mut map) = self.by_label.lock() else {
            return;
        };
        if !map.contains_key(label) {
            let Ok(h) = hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3) else {
                return;
            };
            map.insert(label.to_owned(), h);
        }
        if let Some(h) = map.get_mut(label) {
            h.saturating_record_n(value.max(1), n);
        }
    }

    /// Quantiles per label.
    pub fn snapshot(&self) -> Vec<(String, Quantiles)> {
        let Ok(map) = self.by_label.lock() else {
            return Vec::new();
        };
        map.iter()
            .map(|(k, h)| {
                let q = Quantiles {
                    count: h.len(),
                    sum: h.mean() * h.len() as f64,
                    p50: h.value_at_quantile(0.5),
                    p99: h.value_at_quantile(0.99),
                    p999: h.value_at_quantile(0.999),
                };
                (k.clone(), q)
            })
            .collect()
    }

    /// Values recorded under `label`.
    pub fn count(&self, label: &str) -> u64 {
        self.by_label
            .lock()
            .map_or(0, |m| m.get(label).map_or(0, |h| h.len()))
    }
}
