//! Metric names and the process-wide counters behind them.
//!
//! Every metric Footprint reports is declared here, so names stay in one
//! place. Counters are plain atomics shared by the operators of a process;
//! rendering them (terminal view, Prometheus text) happens elsewhere.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::event::BadReason;

/// Messages read from the source topics (good and bad).
pub const EVENTS_IN: &str = "footprint_events_in_total";
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
/// Times a sink's circuit breaker opened, labelled by `sink`.
pub const SINK_BREAKER_OPENED: &str = "footprint_sink_breaker_opened_total";
/// 1 when a sink's switch is degraded, labelled by `sink`.
pub const SINK_DEGRADED: &str = "footprint_sink_degraded";
/// Retry records waiting in the local journal.
pub const JOURNAL_RECORDS: &str = "footprint_journal_records";
/// How far the watermark is behind the newest event read, ms.
pub const WATERMARK_DELAY: &str = "footprint_watermark_delay_ms";
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
    /// See [`SINK_BREAKER_OPENED`], by sink name.
    pub sink_breaker_opened: std::sync::Mutex<Vec<(String, u64)>>,
    /// See [`WATERMARK`].
    pub watermark: AtomicU64,
    /// See [`MAX_EVENT_TS`].
    pub max_event_ts: AtomicI64,
}

impl Metrics {
    /// Counters for a pipeline with these aggregates.
    pub fn new(aggregates: Vec<String>) -> Self {
        let n = aggregates.len();
        Metrics {
            aggregates,
            events_in: AtomicU64::new(0),
            events_bad: Default::default(),
            events_late: (0..n).map(|_| AtomicU64::new(0)).collect(),
            windows_emitted: (0..n).map(|_| AtomicU64::new(0)).collect(),
            window_updates: AtomicU64::new(0),
            recent_updates: AtomicU64::new(0),
            side_output_failures: AtomicU64::new(0),
            sink_writes: Default::default(),
            sink_failures: Default::default(),
            sink_diverted: Default::default(),
            sink_breaker_opened: Default::default(),
            watermark: AtomicU64::new(0),
            max_event_ts: AtomicI64::new(0),
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

    /// The value of a per-sink counter.
    pub fn sink_count(counter: &std::sync::Mutex<Vec<(String, u64)>>, sink: &str) -> u64 {
        counter.lock().map_or(0, |v| {
            v.iter().find(|(s, _)| s == sink).map_or(0, |(_, n)| *n)
        })
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
