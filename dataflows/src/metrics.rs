//! Metric names and the process-wide counters behind them.
//!
//! Every metric Footprint reports is declared here, so names stay in one
//! place. Counters are plain atomics shared by the operators of a process;
//! rendering them (terminal view, Prometheus text) happens elsewhere.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
/// Gauge: source operators of this process that the stores hold back
/// (their rows waiting are at the limit), so they read nothing.
pub const SOURCES_HELD: &str = "footprint_sources_held";
/// Seconds during which at least one source of this process was held back
/// by its stores. Early-update intervals do not run meanwhile.
pub const SOURCES_HELD_SECONDS: &str = "footprint_sources_held_seconds_total";
/// Gauge: windows open in this process's aggregate operators.
pub const WINDOWS_OPEN: &str = "footprint_windows_open";
/// Gauge: source partitions of this process not read because their
/// watermark ran more than `max_drift` ahead of the slowest partition read.
pub const PARTITIONS_AHEAD: &str = "footprint_partitions_ahead";
/// Gauge: messages the sources' Kafka clients fetched ahead of what the
/// sources read (librdkafka's fetch queues, as of its last statistics).
pub const READ_AHEAD_MESSAGES: &str = "footprint_source_read_ahead_messages";
/// Gauge: the payload bytes of [`READ_AHEAD_MESSAGES`].
pub const READ_AHEAD_BYTES: &str = "footprint_source_read_ahead_bytes";
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
    /// See [`SOURCES_HELD`] and [`SOURCES_HELD_SECONDS`].
    pub held: HeldClock,
    /// See [`WINDOWS_OPEN`].
    pub windows_open: AtomicI64,
    /// See [`PARTITIONS_AHEAD`].
    pub partitions_ahead: AtomicI64,
    /// See [`READ_AHEAD_MESSAGES`].
    pub read_ahead_messages: AtomicI64,
    /// See [`READ_AHEAD_BYTES`].
    pub read_ahead_bytes: AtomicI64,
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
            held: HeldClock::default(),
            windows_open: AtomicI64::new(0),
            partitions_ahead: AtomicI64::new(0),
            read_ahead_messages: AtomicI64::new(0),
            read_ahead_bytes: AtomicI64::new(0),
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

    /// How far the watermark is behind the newest event read, ms (see
    /// [`WATERMARK_DELAY`]).
    pub fn watermark_delay_ms(&self) -> i64 {
        let watermark = i64::try_from(self.watermark.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        self.max_event_ts
            .load(Ordering::Relaxed)
            .saturating_sub(watermark)
            .max(0)
    }

    /// Raises the watermark gauge (it never goes back).
    pub fn raise_watermark(&self, w: u64) {
        self.watermark.fetch_max(w, Ordering::Relaxed);
    }
}

/// One operator's share of a process-wide gauge: the operator sets its own
/// value, the gauge holds the sum over operators, and the share is taken
/// back when the operator is dropped.
pub struct GaugeShare {
    metrics: std::sync::Arc<Metrics>,
    gauge: fn(&Metrics) -> &AtomicI64,
    reported: i64,
}

impl GaugeShare {
    /// A share of `gauge`, at 0.
    pub fn new(metrics: std::sync::Arc<Metrics>, gauge: fn(&Metrics) -> &AtomicI64) -> Self {
        GaugeShare {
            metrics,
            gauge,
            reported: 0,
        }
    }

    /// Sets this operator's value.
    pub fn set(&mut self, value: i64) {
        if value != self.reported {
            (self.gauge)(&self.metrics).fetch_add(value - self.reported, Ordering::Relaxed);
            self.reported = value;
        }
    }
}

impl Drop for GaugeShare {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// When the stores held the sources of a process back, and the clock that
/// leaves those spells out ("reading time"), by which early updates are paced.
///
/// A spell runs from the moment the first source is held to the moment the
/// last one reads again. Reading time never goes back, and stands still
/// during a spell.
#[derive(Debug)]
pub struct HeldClock {
    inner: std::sync::Mutex<HeldSpells>,
}

#[derive(Debug)]
struct HeldSpells {
    /// Sources held now.
    held: u64,
    /// Start of the current spell, while `held > 0`.
    since: Option<Instant>,
    /// Length of the spells that ended.
    total: Duration,
    /// Reading time starts here.
    created: Instant,
}

impl Default for HeldClock {
    fn default() -> Self {
        HeldClock {
            inner: std::sync::Mutex::new(HeldSpells {
                held: 0,
                since: None,
                total: Duration::ZERO,
                created: Instant::now(),
            }),
        }
    }
}

impl HeldClock {
    /// A source is held back from `now` on.
    pub fn hold(&self, now: Instant) {
        if let Ok(mut s) = self.inner.lock() {
            s.held += 1;
            if s.since.is_none() {
                s.since = Some(now);
            }
        }
    }

    /// A source that was held reads again from `now` on.
    pub fn release(&self, now: Instant) {
        if let Ok(mut s) = self.inner.lock() {
            s.held = s.held.saturating_sub(1);
            if s.held == 0
                && let Some(since) = s.since.take()
            {
                s.total += now.saturating_duration_since(since);
            }
        }
    }

    /// Sources held now.
    pub fn sources_held(&self) -> u64 {
        self.inner.lock().map_or(0, |s| s.held)
    }

    /// Time held so far, the current spell included up to `now`.
    pub fn held_for(&self, now: Instant) -> Duration {
        self.inner
            .lock()
            .map_or(Duration::ZERO, |s| s.held_for(now))
    }

    /// Reading time at `now`: `now` moved back by [`Self::held_for`], so it
    /// stands still while a source is held. Every caller in a process gets
    /// the same clock, and it never goes back for a `now` that does not.
    pub fn reading_time(&self, now: Instant) -> Instant {
        let Ok(s) = self.inner.lock() else {
            return now;
        };
        s.created
            + now
                .saturating_duration_since(s.created)
                .saturating_sub(s.held_for(now))
    }
}

impl HeldSpells {
    fn held_for(&self, now: Instant) -> Duration {
        self.total
            + self
                .since
                .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_time_stands_still_while_any_source_is_held() {
        let clock = HeldClock::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let r0 = clock.reading_time(t0);
        assert_eq!(clock.reading_time(t0 + ms(100)), r0 + ms(100));
        // Two sources held, overlapping: one spell, from 100 ms to 400 ms.
        clock.hold(t0 + ms(100));
        clock.hold(t0 + ms(200));
        assert_eq!(clock.sources_held(), 2);
        assert_eq!(clock.reading_time(t0 + ms(250)), r0 + ms(100));
        clock.release(t0 + ms(300));
        assert_eq!(clock.reading_time(t0 + ms(350)), r0 + ms(100));
        clock.release(t0 + ms(400));
        assert_eq!(clock.sources_held(), 0);
        assert_eq!(clock.held_for(t0 + ms(500)), ms(300));
        assert_eq!(clock.reading_time(t0 + ms(500)), r0 + ms(200));
        // A second spell adds to the first.
        clock.hold(t0 + ms(600));
        clock.release(t0 + ms(650));
        assert_eq!(clock.reading_time(t0 + ms(700)), r0 + ms(350));
    }
}
