//! What the sinks report: their metrics, and the internal events that move
//! them.
//!
//! Every sink write ends in one of three events: [`RowsWritten`] (in the
//! store), [`RowsDiverted`] (acknowledged by the retry topic or the journal)
//! or [`RowsLost`] (neither: data at risk, logged at ERROR). The breaker and
//! the store writers report through the others. Repeated warnings during an
//! outage are rate-limited: the first is logged at once, then one line per
//! interval says how many happened since it began.

use std::sync::Arc;
use std::time::Duration;

use footprint_dataflows::Output;
use footprint_telemetry::prometheus_client::collector::Collector;
use footprint_telemetry::prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric,
};
use footprint_telemetry::prometheus_client::metrics::counter::Counter;
use footprint_telemetry::prometheus_client::metrics::family::Family;
use footprint_telemetry::prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use footprint_telemetry::{InternalEvent, Latency, Registry, Throttle, log_repeated};

use crate::util::breaker::BreakerState;
use crate::util::switch::{Mode, Switches};

/// Label set of per-sink metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    /// The sink's name (`redis`, `mysql`, `file`, …).
    pub sink: String,
}

fn labels(sink: &str) -> SinkLabels {
    SinkLabels {
        sink: sink.to_owned(),
    }
}

/// The sinks' metrics in one process.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    writes: Family<SinkLabels, Counter>,
    failures: Family<SinkLabels, Counter>,
    diverted: Family<SinkLabels, Counter>,
    folded: Family<SinkLabels, Counter>,
    breaker_opened: Family<SinkLabels, Counter>,
    flush_failures: Family<SinkLabels, Counter>,
    breaker_state: Family<SinkLabels, Gauge>,
    write_latency: Family<SinkLabels, Latency>,
    end_to_end: Family<SinkLabels, Latency>,
    final_delay: Family<SinkLabels, Latency>,
    throttle: Throttle,
}

impl SinkMetrics {
    /// The sinks' metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = SinkMetrics::default();
        registry.register("sink_writes", "Rows written by each sink", m.writes.clone());
        registry.register(
            "sink_failures",
            "Rows a sink neither wrote nor diverted (data at risk)",
            m.failures.clone(),
        );
        registry.register(
            "sink_diverted",
            "Rows diverted to the retry topic (or journal) instead of their store",
            m.diverted.clone(),
        );
        registry.register(
            "sink_folded",
            "Rows left unwritten because a newer row of the same identity replaced them while they waited for a busy store",
            m.folded.clone(),
        );
        registry.register(
            "sink_breaker_opened",
            "Times a sink's circuit breaker opened",
            m.breaker_opened.clone(),
        );
        registry.register(
            "sink_flush_failures",
            "Times a sink could not flush what it wrote",
            m.flush_failures.clone(),
        );
        registry.register(
            "sink_breaker_state",
            "Each store sink's circuit breaker: 0 closed, 1 half-open, 2 open",
            m.breaker_state.clone(),
        );
        registry.register(
            "sink_write_latency_seconds",
            "Time to write one batch to a store, retries included",
            m.write_latency.clone(),
        );
        registry.register(
            "end_to_end_latency_seconds",
            "From a message's broker timestamp to the store write that first shows it",
            m.end_to_end.clone(),
        );
        registry.register(
            "final_delay_seconds",
            "From a window's end to the store write of its final row",
            m.final_delay.clone(),
        );
        Arc::new(m)
    }

    /// Shows each sink's switch as `footprint_sink_degraded` (1 degraded).
    pub fn register_switches(registry: &mut Registry, switches: Arc<Switches>) {
        registry.register_collector(Box::new(SwitchCollector(switches)));
    }

    /// Rows written by `sink`.
    pub fn written(&self, sink: &str) -> u64 {
        self.writes.get(&labels(sink)).map_or(0, |c| c.get())
    }

    /// Rows `sink` neither wrote nor diverted.
    pub fn failed(&self, sink: &str) -> u64 {
        self.failures.get(&labels(sink)).map_or(0, |c| c.get())
    }

    /// Rows diverted from `sink`.
    pub fn diverted(&self, sink: &str) -> u64 {
        self.diverted.get(&labels(sink)).map_or(0, |c| c.get())
    }

    /// Rows folded away while waiting for `sink`.
    pub fn folded(&self, sink: &str) -> u64 {
        self.folded.get(&labels(sink)).map_or(0, |c| c.get())
    }

    /// Times `sink`'s breaker opened.
    pub fn breaker_openings(&self, sink: &str) -> u64 {
        self.breaker_opened
            .get(&labels(sink))
            .map_or(0, |c| c.get())
    }

    /// Makes `sink`'s series exist from the moment the sink is built: its
    /// row counters at zero and its breaker closed, as a new breaker is.
    /// A scrape then shows every configured sink, written to or not, and
    /// a series never appears out of nothing when the first batch lands.
    /// A series some other instance of the sink already set is left as it
    /// is.
    pub fn sink_built(&self, sink: &str) {
        let key = labels(sink);
        // The guards each call returns are dropped at once: creating the
        // series is the point.
        drop(self.writes.get_or_create(&key));
        drop(self.failures.get_or_create(&key));
        drop(self.diverted.get_or_create(&key));
        drop(self.breaker_state.get_or_create(&key));
    }

    /// `sink`'s breaker as last seen, if it was.
    pub fn breaker_state(&self, sink: &str) -> Option<BreakerState> {
        let code = self.breaker_state.get(&labels(sink))?.get();
        Some(match code {
            0 => BreakerState::Closed,
            1 => BreakerState::HalfOpen,
            _ => BreakerState::Open,
        })
    }

    /// The write latency of `sink`.
    pub fn write_latency(&self, sink: &str) -> Latency {
        self.write_latency.get_or_create_owned(&labels(sink))
    }

    /// The write latency of `sink` if it ever wrote (unlike
    /// [`SinkMetrics::write_latency`], this adds nothing to `/metrics`).
    pub fn write_latency_seen(&self, sink: &str) -> Option<Latency> {
        self.write_latency.get(&labels(sink)).map(|l| l.clone())
    }

    /// The broker-append to store-write latency of `sink`.
    pub fn end_to_end_latency(&self, sink: &str) -> Latency {
        self.end_to_end.get_or_create_owned(&labels(sink))
    }

    /// The window-end to final-row-write delay of `sink`.
    pub fn final_delay(&self, sink: &str) -> Latency {
        self.final_delay.get_or_create_owned(&labels(sink))
    }

    /// Adds `n` to `sink`'s counter in `family`.
    fn add(family: &Family<SinkLabels, Counter>, sink: &str, n: u64) {
        family.get_or_create(&labels(sink)).inc_by(n);
    }

    /// A counter summed over every sink seen.
    fn total(family: &Family<SinkLabels, Counter>, sinks: &[&str]) -> u64 {
        sinks
            .iter()
            .map(|s| family.get(&labels(s)).map_or(0, |c| c.get()))
            .sum()
    }

    /// Rows written by any of `sinks`.
    pub fn written_total(&self, sinks: &[&str]) -> u64 {
        Self::total(&self.writes, sinks)
    }

    /// Rows diverted from any of `sinks`.
    pub fn diverted_total(&self, sinks: &[&str]) -> u64 {
        Self::total(&self.diverted, sinks)
    }

    /// Rows folded away for any of `sinks`.
    pub fn folded_total(&self, sinks: &[&str]) -> u64 {
        Self::total(&self.folded, sinks)
    }
}

/// Shows the switches at scrape time.
#[derive(Debug)]
struct SwitchCollector(Arc<Switches>);

impl Collector for SwitchCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut e = encoder.encode_descriptor(
            "sink_degraded",
            "1 when a sink's switch is degraded.",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for (sink, mode) in self.0.all() {
            let g = ConstGauge::new(i64::from(mode == Mode::Degraded));
            g.encode(e.encode_family(&labels(&sink))?)?;
        }
        Ok(())
    }
}

/// A batch reached its store.
pub struct RowsWritten<'a> {
    /// The sink.
    pub sink: &'a str,
    /// The rows written.
    pub rows: &'a [Output],
    /// How long the write took, retries included, when measured.
    pub took: Option<Duration>,
}

impl InternalEvent<SinkMetrics> for RowsWritten<'_> {
    fn emit(self, m: &SinkMetrics) {
        let l = labels(self.sink);
        m.writes.get_or_create(&l).inc_by(self.rows.len() as u64);
        let Some(took) = self.took else { return };
        m.write_latency.get_or_create(&l).record(took);
        let now = footprint_telemetry::now_ms();
        let ms = |t: i64| (now - t).max(0) as u64 * 1000;
        m.end_to_end
            .get_or_create(&l)
            .record_micros(self.rows.iter().filter_map(|r| match r {
                Output::Window(w) => w.freshest_append_ms.map(|t| (ms(t), 1)),
                Output::Recent(_) => None,
            }));
        m.final_delay
            .get_or_create(&l)
            .record_micros(self.rows.iter().filter_map(|r| match r {
                Output::Window(w) if w.is_final => Some((ms(w.window_end), 1)),
                _ => None,
            }));
    }
}

/// A batch went to the retry topic (or the journal) instead of its store.
pub struct RowsDiverted<'a> {
    /// The sink the rows were meant for.
    pub sink: &'a str,
    /// How many.
    pub rows: u64,
    /// Why.
    pub reason: &'a str,
}

impl InternalEvent<SinkMetrics> for RowsDiverted<'_> {
    fn emit(self, m: &SinkMetrics) {
        SinkMetrics::add(&m.diverted, self.sink, self.rows);
        log_repeated! {
            info, m.throttle, format!("diverted/{}", self.sink),
            sink = self.sink, rows = self.rows, reason = self.reason,
            "rows go to the retry topic instead of the store"
        }
    }
}

/// Rows were neither written nor diverted: they are at risk, and the
/// process stops committing source offsets.
pub struct RowsLost<'a> {
    /// The sink.
    pub sink: &'a str,
    /// How many.
    pub rows: u64,
    /// What failed.
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent<SinkMetrics> for RowsLost<'_> {
    fn emit(self, m: &SinkMetrics) {
        SinkMetrics::add(&m.failures, self.sink, self.rows);
        log_repeated! {
            error, m.throttle, format!("lost/{}", self.sink),
            sink = self.sink, rows = self.rows, error = %self.error,
            "result rows were neither written nor diverted; source offsets are no longer committed, so a restart reads them again"
        }
    }
}

/// Rows waiting for a busy store were folded into newer rows of their
/// identity.
pub struct RowsFolded<'a> {
    /// The sink.
    pub sink: &'a str,
    /// Rows folded away.
    pub rows: u64,
}

impl InternalEvent<SinkMetrics> for RowsFolded<'_> {
    fn emit(self, m: &SinkMetrics) {
        SinkMetrics::add(&m.folded, self.sink, self.rows);
    }
}

/// A store write failed, and its batch is diverted: after its retries, or
/// at once when the store refused the rows for good (the replay job then
/// sends them to the retry topic's dead-letter topic).
pub struct WriteFailed<'a> {
    /// The sink.
    pub sink: &'a str,
    /// Attempts made.
    pub attempts: u32,
    /// Whether the store answered and refused the rows for good.
    pub refused: bool,
    /// The last error.
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent<SinkMetrics> for WriteFailed<'_> {
    fn emit(self, m: &SinkMetrics) {
        let (sink, attempts, error) = (self.sink, self.attempts, self.error);
        if self.refused {
            log_repeated! { warn, m.throttle, format!("refused/{sink}"), sink, error = %error,
            "the store refused rows; diverting the batch to the retry topic" }
        } else {
            log_repeated! { warn, m.throttle, format!("failed/{sink}"), sink, attempts, error = %error,
            "store write failed; diverting to the retry topic" }
        }
    }
}

/// A sink's circuit breaker opened: writes are diverted without touching
/// the store until a probe succeeds.
pub struct BreakerOpened<'a> {
    /// The sink.
    pub sink: &'a str,
}

impl InternalEvent<SinkMetrics> for BreakerOpened<'_> {
    fn emit(self, m: &SinkMetrics) {
        m.breaker_opened.get_or_create(&labels(self.sink)).inc();
        tracing::warn!(sink = self.sink, "circuit breaker opened");
    }
}

/// A sink's breaker was looked at after a write.
pub struct BreakerSeen<'a> {
    /// The sink.
    pub sink: &'a str,
    /// Its state.
    pub state: BreakerState,
}

impl InternalEvent<SinkMetrics> for BreakerSeen<'_> {
    fn emit(self, m: &SinkMetrics) {
        let code = match self.state {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        let before = m.breaker_state.get_or_create(&labels(self.sink)).set(code);
        if before == 2 && code == 0 {
            tracing::info!(
                sink = self.sink,
                "circuit breaker closed: the store takes writes again"
            );
            if let Some(r) = m.throttle.end(&format!("failed/{}", self.sink)) {
                tracing::info!(
                    sink = self.sink,
                    failed_writes = r.total,
                    seconds = r.seconds_since_began(),
                    "the store's outage ended"
                );
            }
        }
    }
}

/// Flushing a sink failed: what it wrote may not be durable.
pub struct SinkFlushFailed<'a> {
    /// The sink.
    pub sink: &'a str,
    /// What failed.
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent<SinkMetrics> for SinkFlushFailed<'_> {
    fn emit(self, m: &SinkMetrics) {
        m.flush_failures.get_or_create(&labels(self.sink)).inc();
        let (sink, error) = (self.sink, self.error);
        log_repeated! { error, m.throttle, format!("flush/{sink}"), sink, error = %error,
        "flushing the sink failed" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails unless each of `lines` is a line of `registry`'s page.
    fn assert_shown(registry: &Registry, lines: &[&str]) {
        let text = footprint_telemetry::encode(registry).expect("encode");
        let shown: std::collections::BTreeSet<&str> = text.lines().collect();
        let missing: Vec<&&str> = lines.iter().filter(|l| !shown.contains(**l)).collect();
        assert!(missing.is_empty(), "{missing:?} missing from\n{text}");
    }

    #[test]
    fn sink_events_move_their_metrics_and_the_switches_are_shown() {
        let mut registry = footprint_telemetry::registry();
        let m = SinkMetrics::register(&mut registry);
        let switches = Arc::new(Switches::new(["redis", "mysql"]));
        switches.set("mysql", Mode::Degraded);
        SinkMetrics::register_switches(&mut registry, Arc::clone(&switches));
        RowsWritten {
            sink: "redis",
            rows: &[],
            took: Some(Duration::from_millis(3)),
        }
        .emit(&m);
        RowsDiverted {
            sink: "mysql",
            rows: 4,
            reason: "switch degraded",
        }
        .emit(&m);
        RowsLost {
            sink: "mysql",
            rows: 2,
            error: &"x",
        }
        .emit(&m);
        BreakerOpened { sink: "mysql" }.emit(&m);
        BreakerSeen {
            sink: "mysql",
            state: BreakerState::Open,
        }
        .emit(&m);
        assert_eq!(
            (
                m.diverted("mysql"),
                m.failed("mysql"),
                m.breaker_openings("mysql")
            ),
            (4, 2, 1)
        );
        assert_eq!(m.breaker_state("mysql"), Some(BreakerState::Open));
        assert_eq!(m.write_latency("redis").count(), 1);
        assert_shown(
            &registry,
            &[
                "footprint_sink_diverted_total{sink=\"mysql\"} 4",
                "footprint_sink_failures_total{sink=\"mysql\"} 2",
                "footprint_sink_breaker_state{sink=\"mysql\"} 2",
                "footprint_sink_degraded{sink=\"mysql\"} 1",
                "footprint_sink_degraded{sink=\"redis\"} 0",
                "footprint_sink_write_latency_seconds_count{sink=\"redis\"} 1",
            ],
        );
    }

    #[test]
    fn a_built_sink_shows_a_closed_breaker_and_zero_rows_before_its_first_write() {
        let mut registry = footprint_telemetry::registry();
        let m = SinkMetrics::register(&mut registry);
        assert_eq!(m.breaker_state("mysql"), None, "nothing seen yet");
        BreakerSeen {
            sink: "redis",
            state: BreakerState::Open,
        }
        .emit(&m);
        m.sink_built("mysql");
        m.sink_built("redis");
        assert_eq!(m.breaker_state("mysql"), Some(BreakerState::Closed));
        assert_eq!(
            m.breaker_state("redis"),
            Some(BreakerState::Open),
            "another instance's state is kept"
        );
        assert_shown(
            &registry,
            &[
                "footprint_sink_breaker_state{sink=\"mysql\"} 0",
                "footprint_sink_breaker_state{sink=\"redis\"} 2",
                "footprint_sink_writes_total{sink=\"mysql\"} 0",
                "footprint_sink_diverted_total{sink=\"mysql\"} 0",
                "footprint_sink_failures_total{sink=\"mysql\"} 0",
            ],
        );
    }
}
