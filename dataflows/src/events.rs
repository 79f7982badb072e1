//! What the dataflow reports: its metrics, and the internal events that
//! move them.
//!
//! [`DataflowMetrics`] holds the handles of every metric the dataflow's
//! operators move, registered once in the process's registry. The events
//! below are what the operators emit; each one updates its metric (and
//! logs, when it is worth a line) in one step. Counting happens per read
//! round or per batch of rows, never per message behind a lock.
//!
//! The flow-control state ([`Flow`]) and the watermark are shown through a
//! collector that reads them at scrape time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use footprint_telemetry::InternalEvent;
use footprint_telemetry::Registry;
use footprint_telemetry::prometheus_client::collector::Collector;
use footprint_telemetry::prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric,
};
use footprint_telemetry::prometheus_client::metrics::counter::{ConstCounter, Counter};
use footprint_telemetry::prometheus_client::metrics::family::Family;
use footprint_telemetry::prometheus_client::metrics::gauge::{ConstGauge, Gauge};

use crate::event::BadReason;
use crate::flow::Flow;
use crate::partitions::{PartitionCollector, PartitionTable};

/// Label set of the rejected-events counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// [`BadReason::as_str`].
    pub reason: String,
}

/// Label set of per-aggregate metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AggregateLabels {
    /// The aggregate's name.
    pub aggregate: String,
}

/// The dataflow's metrics in one process.
#[derive(Debug)]
pub struct DataflowMetrics {
    aggregates: Vec<String>,
    events_in: Counter,
    backfill_tail: Counter,
    /// Indexed by [`BadReason::index`].
    events_bad: Vec<Counter>,
    /// Indexed by aggregate.
    events_late: Vec<Counter>,
    /// Indexed by aggregate.
    windows_emitted: Vec<Counter>,
    window_updates: Counter,
    recent_updates: Counter,
    windows_open: Gauge,
    partitions_ahead: Gauge,
    read_ahead_messages: Gauge,
    read_ahead_bytes: Gauge,
    progress: Arc<Progress>,
    partitions: Arc<PartitionTable>,
}

/// The global watermark and the newest event time, ms since the epoch.
#[derive(Debug, Default)]
struct Progress {
    watermark_ms: AtomicU64,
    max_event_ms: AtomicI64,
}

impl DataflowMetrics {
    /// Metrics for a pipeline with these aggregates, not registered
    /// anywhere: for tests and benchmarks that read them directly.
    pub fn new(aggregates: Vec<String>) -> Self {
        Self::build(aggregates, None)
    }

    /// Metrics for a pipeline with these aggregates, registered in
    /// `registry`, with the flow-control state of `flow` shown beside them.
    pub fn register(
        registry: &mut Registry,
        aggregates: Vec<String>,
        flow: Arc<Flow>,
    ) -> Arc<Self> {
        let m = Arc::new(Self::build(aggregates, Some(registry)));
        registry.register_collector(Box::new(FlowCollector {
            flow,
            progress: Arc::clone(&m.progress),
        }));
        registry.register_collector(Box::new(PartitionCollector(Arc::clone(&m.partitions))));
        m
    }

    fn build(aggregates: Vec<String>, registry: Option<&mut Registry>) -> Self {
        let bad = Family::<ReasonLabels, Counter>::default();
        let late = Family::<AggregateLabels, Counter>::default();
        let emitted = Family::<AggregateLabels, Counter>::default();
        let per_aggregate = |f: &Family<AggregateLabels, Counter>| -> Vec<Counter> {
            aggregates
                .iter()
                .map(|a| {
                    f.get_or_create_owned(&AggregateLabels {
                        aggregate: a.clone(),
                    })
                })
                .collect()
        };
        let m = DataflowMetrics {
            events_in: Counter::default(),
            backfill_tail: Counter::default(),
            events_bad: BadReason::ALL
                .iter()
                .map(|r| {
                    bad.get_or_create_owned(&ReasonLabels {
                        reason: r.as_str().to_owned(),
                    })
                })
                .collect(),
            events_late: per_aggregate(&late),
            windows_emitted: per_aggregate(&emitted),
            window_updates: Counter::default(),
            recent_updates: Counter::default(),
            windows_open: Gauge::default(),
            partitions_ahead: Gauge::default(),
            read_ahead_messages: Gauge::default(),
            read_ahead_bytes: Gauge::default(),
            progress: Arc::default(),
            partitions: Arc::default(),
            aggregates,
        };
        if let Some(r) = registry {
            r.register(
                "events_in",
                "Messages read from the source topics, good and bad",
                m.events_in.clone(),
            );
            r.register(
                "backfill_tail_events",
                "Messages a bounded backfill read past its ranges, only to complete the windows its ranges touched",
                m.backfill_tail.clone(),
            );
            r.register("events_bad", "Rejected messages, by reason", bad);
            r.register(
                "events_late",
                "Events that missed at least one final window, by aggregate",
                late,
            );
            r.register(
                "windows_emitted",
                "Final window rows emitted, by aggregate",
                emitted,
            );
            r.register(
                "window_updates",
                "Early (not final) window rows emitted",
                m.window_updates.clone(),
            );
            r.register(
                "recent_updates",
                "Recent-activity rows emitted",
                m.recent_updates.clone(),
            );
            r.register(
                "windows_open",
                "Windows open in this process's aggregate operators",
                m.windows_open.clone(),
            );
            r.register(
                "partitions_ahead",
                "Source partitions not read because their watermark ran more than watermark.max_drift ahead of the slowest",
                m.partitions_ahead.clone(),
            );
            r.register(
                "source_read_ahead_messages",
                "Messages the sources' Kafka clients fetched and the sources have not read yet",
                m.read_ahead_messages.clone(),
            );
            r.register(
                "source_read_ahead_bytes",
                "Payload bytes of the messages read ahead",
                m.read_ahead_bytes.clone(),
            );
        }
        m
    }

    /// Names of the aggregates, in spec order.
    pub fn aggregates(&self) -> &[String] {
        &self.aggregates
    }

    /// Messages read from the source topics (a backfill: in its ranges).
    pub fn events_in(&self) -> u64 {
        self.events_in.get()
    }

    /// Messages a backfill read past its ranges.
    pub fn backfill_tail(&self) -> u64 {
        self.backfill_tail.get()
    }

    /// Rejected messages over every reason.
    pub fn bad_total(&self) -> u64 {
        self.events_bad.iter().map(Counter::get).sum()
    }

    /// Rejected messages for one reason.
    pub fn bad(&self, reason: BadReason) -> u64 {
        self.events_bad.get(reason.index()).map_or(0, Counter::get)
    }

    /// Late (event, aggregate) pairs over every aggregate.
    pub fn late_total(&self) -> u64 {
        self.events_late.iter().map(Counter::get).sum()
    }

    /// Late events of one aggregate, by index.
    pub fn late(&self, agg: usize) -> u64 {
        self.events_late.get(agg).map_or(0, Counter::get)
    }

    /// Final window rows emitted over every aggregate.
    pub fn windows_emitted_total(&self) -> u64 {
        self.windows_emitted.iter().map(Counter::get).sum()
    }

    /// Final window rows emitted by one aggregate, by index.
    pub fn windows_emitted(&self, agg: usize) -> u64 {
        self.windows_emitted.get(agg).map_or(0, Counter::get)
    }

    /// Early window rows emitted.
    pub fn window_updates(&self) -> u64 {
        self.window_updates.get()
    }

    /// Recent-activity rows emitted.
    pub fn recent_updates(&self) -> u64 {
        self.recent_updates.get()
    }

    /// Windows open now.
    pub fn windows_open(&self) -> i64 {
        self.windows_open.get()
    }

    /// Source partitions left unread now because they ran ahead.
    pub fn partitions_ahead(&self) -> i64 {
        self.partitions_ahead.get()
    }

    /// What the sources' clients have read ahead: (messages, bytes).
    pub fn read_ahead(&self) -> (i64, i64) {
        (self.read_ahead_messages.get(), self.read_ahead_bytes.get())
    }

    /// The gauge of windows open, for an operator's share of it.
    pub fn windows_open_gauge(&self) -> Gauge {
        self.windows_open.clone()
    }

    /// The gauges of partitions ahead and of the read-ahead (messages,
    /// bytes), for a source's shares of them.
    pub fn source_gauges(&self) -> [Gauge; 3] {
        [
            self.partitions_ahead.clone(),
            self.read_ahead_messages.clone(),
            self.read_ahead_bytes.clone(),
        ]
    }

    /// Each source partition's watermark and state, as the sources last
    /// published them.
    pub fn partitions(&self) -> &Arc<PartitionTable> {
        &self.partitions
    }

    /// The global watermark, ms since the epoch (0 before the first).
    pub fn watermark_ms(&self) -> u64 {
        self.progress.watermark_ms.load(Ordering::Relaxed)
    }

    /// The largest event time read, ms since the epoch (0 before the first).
    pub fn max_event_ms(&self) -> i64 {
        self.progress.max_event_ms.load(Ordering::Relaxed)
    }

    /// How far the watermark is behind the newest event read, ms.
    pub fn watermark_delay_ms(&self) -> i64 {
        self.progress.delay_ms()
    }
}

impl Progress {
    fn delay_ms(&self) -> i64 {
        let watermark =
            i64::try_from(self.watermark_ms.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        self.max_event_ms
            .load(Ordering::Relaxed)
            .saturating_sub(watermark)
            .max(0)
    }
}

/// Shows the flow-control state and the watermark at scrape time.
#[derive(Debug)]
struct FlowCollector {
    flow: Arc<Flow>,
    progress: Arc<Progress>,
}

impl Collector for FlowCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        fn gauge<N>(
            encoder: &mut DescriptorEncoder,
            name: &str,
            help: &str,
            v: N,
        ) -> Result<(), std::fmt::Error>
        where
            ConstGauge<N>: EncodeMetric,
        {
            let g = ConstGauge::new(v);
            let e = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(e)
        }
        let waiting = self.flow.rows_waiting();
        let held = self.flow.held();
        let now = Instant::now();
        gauge(
            &mut encoder,
            "sink_rows_waiting",
            "Result rows handed to the store writers and not yet written or diverted; the sources pause at sinks.max_rows_waiting.",
            i64::try_from(waiting).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut encoder,
            "sources_held",
            "Source operators the stores hold back (back-pressure).",
            i64::try_from(held.sources_held()).unwrap_or(i64::MAX),
        )?;
        let c = ConstCounter::new(held.held_for(now).as_secs_f64());
        let e = encoder.encode_descriptor(
            "sources_held_seconds",
            "Seconds during which at least one source was held back by its stores.",
            None,
            c.metric_type(),
        )?;
        c.encode(e)?;
        let wm = self.progress.watermark_ms.load(Ordering::Relaxed);
        let newest = self.progress.max_event_ms.load(Ordering::Relaxed);
        gauge(
            &mut encoder,
            "watermark_seconds",
            "The global watermark, seconds since the epoch.",
            wm as f64 / 1000.0,
        )?;
        gauge(
            &mut encoder,
            "max_event_time_seconds",
            "The largest event time read, seconds since the epoch.",
            newest as f64 / 1000.0,
        )?;
        gauge(
            &mut encoder,
            "watermark_delay_seconds",
            "How far the watermark is behind the newest event read, seconds.",
            self.progress.delay_ms() as f64 / 1000.0,
        )
    }
}

/// A source finished a read round.
pub struct MessagesRead {
    /// Messages read in the range (good and bad).
    pub events: u64,
    /// Messages read past a backfill's range.
    pub tail: u64,
    /// The largest event time among them, if any was good.
    pub max_event_ms: Option<i64>,
}

impl InternalEvent<DataflowMetrics> for MessagesRead {
    fn emit(self, m: &DataflowMetrics) {
        if self.events > 0 {
            m.events_in.inc_by(self.events);
        }
        if self.tail > 0 {
            m.backfill_tail.inc_by(self.tail);
        }
        if let Some(ts) = self.max_event_ms {
            m.progress.max_event_ms.fetch_max(ts, Ordering::Relaxed);
        }
    }
}

/// A message was rejected as bad input (it goes to the dead-letter topic).
pub struct EventRejected<'a> {
    /// Why.
    pub reason: BadReason,
    /// Its partition (the worker's index) and offset.
    pub partition: u32,
    /// Its offset.
    pub offset: i64,
    /// The decoder's detail.
    pub detail: &'a str,
}

impl InternalEvent<DataflowMetrics> for EventRejected<'_> {
    fn emit(self, m: &DataflowMetrics) {
        if let Some(c) = m.events_bad.get(self.reason.index()) {
            c.inc();
        }
        tracing::debug!(reason = %self.reason, partition = self.partition, offset = self.offset, detail = self.detail, "event rejected");
    }
}

/// An event missed final windows of an aggregate (it goes to the late topic).
pub struct EventLate {
    /// The aggregate's index.
    pub agg: u16,
    /// How many of its windows were final.
    pub windows: u32,
}

impl InternalEvent<DataflowMetrics> for EventLate {
    fn emit(self, m: &DataflowMetrics) {
        if let Some(c) = m.events_late.get(usize::from(self.agg)) {
            c.inc();
        }
        tracing::trace!(agg = self.agg, windows = self.windows, "event late");
    }
}

/// What kind of result rows an operator emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emitted {
    /// Final window rows of the aggregate with this index.
    Final(u16),
    /// Early rows of open windows.
    Early,
    /// Recent-activity rows.
    Recent,
}

/// Result rows left an operator.
pub struct RowsEmitted {
    /// What they are.
    pub kind: Emitted,
    /// How many.
    pub rows: u64,
}

impl InternalEvent<DataflowMetrics> for RowsEmitted {
    fn emit(self, m: &DataflowMetrics) {
        let counter = match self.kind {
            Emitted::Final(agg) => m.windows_emitted.get(usize::from(agg)),
            Emitted::Early => Some(&m.window_updates),
            Emitted::Recent => Some(&m.recent_updates),
        };
        if let Some(c) = counter {
            c.inc_by(self.rows);
        }
    }
}

/// The global watermark the aggregates see moved.
pub struct WatermarkAdvanced {
    /// The new watermark, ms since the epoch.
    pub watermark_ms: u64,
}

impl InternalEvent<DataflowMetrics> for WatermarkAdvanced {
    fn emit(self, m: &DataflowMetrics) {
        m.progress
            .watermark_ms
            .fetch_max(self.watermark_ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_move_their_metrics_and_the_registry_shows_them_in_base_units() {
        let mut registry = footprint_telemetry::registry();
        let flow = Arc::new(Flow::new(10));
        let m = DataflowMetrics::register(
            &mut registry,
            vec!["a".into(), "b".into()],
            Arc::clone(&flow),
        );
        MessagesRead {
            events: 5,
            tail: 2,
            max_event_ms: Some(61_500),
        }
        .emit(&m);
        EventRejected {
            reason: BadReason::WrongType,
            partition: 0,
            offset: 3,
            detail: "x",
        }
        .emit(&m);
        EventLate { agg: 1, windows: 2 }.emit(&m);
        RowsEmitted {
            kind: Emitted::Final(0),
            rows: 4,
        }
        .emit(&m);
        WatermarkAdvanced {
            watermark_ms: 60_000,
        }
        .emit(&m);
        WatermarkAdvanced {
            watermark_ms: 1_000,
        }
        .emit(&m);
        flow.rows_queued(7);
        assert_eq!(
            (
                m.events_in(),
                m.backfill_tail(),
                m.bad_total(),
                m.late(1),
                m.windows_emitted(0)
            ),
            (5, 2, 1, 1, 4)
        );
        assert_eq!(m.watermark_ms(), 60_000, "the watermark never goes back");
        assert_eq!(m.watermark_delay_ms(), 1_500);
        let text = footprint_telemetry::encode(&registry).expect("encode");
        for line in [
            "footprint_events_in_total 5",
            "footprint_events_bad_total{reason=\"wrong_type\"} 1",
            "footprint_events_late_total{aggregate=\"b\"} 1",
            "footprint_windows_emitted_total{aggregate=\"a\"} 4",
            "footprint_sink_rows_waiting 7",
            "footprint_watermark_seconds 60.0",
            "footprint_watermark_delay_seconds 1.5",
            "footprint_max_event_time_seconds 61.5",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
