//! What the connectors report: their metrics, and the internal events that
//! move them.
//!
//! Kafka clients report errors through librdkafka's callbacks, many times a
//! second while a broker is down. Those are counted and logged through a
//! throttle: the first at once, then one line per interval with how many
//! happened since it began, and one line when it ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use footprint_telemetry::prometheus_client::collector::Collector;
use footprint_telemetry::prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric,
};
use footprint_telemetry::prometheus_client::metrics::counter::Counter;
use footprint_telemetry::prometheus_client::metrics::family::Family;
use footprint_telemetry::prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use footprint_telemetry::{InternalEvent, Registry, Throttle, log_repeated};

use crate::offsets::{SkipReason, Skipped};

/// Label set of per-partition metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

/// Label set of per-reason metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why.
    pub reason: String,
}

/// Label set of per-producer metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProducerLabels {
    /// Which producer (`retry`, `side`, `checkpoints`, `control`, …).
    pub producer: String,
}

/// A gauge that is not shown until it was first measured.
#[derive(Debug, Clone)]
struct Measured(Arc<AtomicI64>);

impl Default for Measured {
    fn default() -> Self {
        Measured(Arc::new(AtomicI64::new(-1)))
    }
}

/// The connectors' metrics in one process.
#[derive(Debug, Default)]
pub struct ConnectorMetrics {
    /// Which repeated warnings are logged.
    throttle: Throttle,
    side_failures: Counter,
    client_errors: Counter,
    commit_failures: Counter,
    producers_renewed: Family<ProducerLabels, Counter>,
    consumer_lag: Family<PartitionLabels, Gauge>,
    journal_records: Gauge,
    journaled: Counter,
    retry_backlog: Measured,
    replay_position: Measured,
    /// When `replay_position` last rose, ms since the epoch (-1: never seen).
    replay_moved_ms: Measured,
    offset_resets: Family<ReasonLabels, Counter>,
    offsets_skipped: Family<ReasonLabels, Counter>,
}

impl ConnectorMetrics {
    /// The connectors' metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = ConnectorMetrics::default();
        registry.register(
            "side_output_failures",
            "Dead-letter or late-topic records that Kafka did not accept",
            m.side_failures.clone(),
        );
        registry.register(
            "kafka_client_errors",
            "Errors Kafka clients reported (connections refused, requests failed, …)",
            m.client_errors.clone(),
        );
        registry.register(
            "commit_failures",
            "Commits of source offsets that failed (the next one covers them, unless a dead-letter or late record was lost: then none goes through)",
            m.commit_failures.clone(),
        );
        registry.register(
            "kafka_producers_renewed",
            "Producers replaced after they failed for good",
            m.producers_renewed.clone(),
        );
        registry.register(
            "consumer_lag_messages",
            "Per source partition, its end offset minus the committed offset",
            m.consumer_lag.clone(),
        );
        registry.register(
            "journal_records",
            "Retry records waiting in the local journal",
            m.journal_records.clone(),
        );
        registry.register(
            "journaled_records",
            "Retry records written to the local journal because the retry topic did not take them",
            m.journaled.clone(),
        );
        registry.register(
            "offset_resets",
            "Source partitions that started elsewhere than their checkpoint, by reason",
            m.offset_resets.clone(),
        );
        registry.register(
            "offsets_skipped",
            "Offsets not read because of those starts, by reason",
            m.offsets_skipped.clone(),
        );
        for reason in SkipReason::ALL {
            let l = ReasonLabels {
                reason: reason.as_str().to_owned(),
            };
            drop(m.offset_resets.get_or_create(&l));
            drop(m.offsets_skipped.get_or_create(&l));
        }
        let m = Arc::new(m);
        registry.register_collector(Box::new(BacklogCollector {
            backlog: m.retry_backlog.clone(),
            position: m.replay_position.clone(),
        }));
        m
    }

    /// Records the side outputs could not deliver.
    pub fn side_failures(&self) -> u64 {
        self.side_failures.get()
    }

    /// Errors Kafka clients reported.
    pub fn client_errors(&self) -> u64 {
        self.client_errors.get()
    }

    /// The replay job's position on the retry topic, once measured (see
    /// [`RetryBacklogMeasured::position`]).
    pub fn replay_position(&self) -> Option<u64> {
        u64::try_from(self.replay_position.0.load(Ordering::Relaxed)).ok()
    }

    /// When the replay position last rose, ms since the epoch, if it rose
    /// since this process started.
    pub fn replay_moved_ms(&self) -> Option<i64> {
        let v = self.replay_moved_ms.0.load(Ordering::Relaxed);
        (v >= 0).then_some(v)
    }

    /// Retry records in the journal, as last reported.
    pub fn journal_records(&self) -> i64 {
        self.journal_records.get()
    }

    /// The retry backlog, once measured.
    pub fn retry_backlog(&self) -> Option<u64> {
        u64::try_from(self.retry_backlog.0.load(Ordering::Relaxed)).ok()
    }

    /// The consumer lag of one source partition, once measured.
    pub fn consumer_lag(&self, topic: &str, partition: i32) -> Option<i64> {
        let l = PartitionLabels {
            topic: topic.to_owned(),
            partition,
        };
        self.consumer_lag.get(&l).map(|g| g.get())
    }

    /// Offsets skipped for `reason`.
    pub fn offsets_skipped(&self, reason: SkipReason) -> u64 {
        let l = ReasonLabels {
            reason: reason.as_str().to_owned(),
        };
        self.offsets_skipped.get(&l).map_or(0, |c| c.get())
    }
}

/// Shows the retry backlog and the replay position once they were measured.
#[derive(Debug)]
struct BacklogCollector {
    backlog: Measured,
    position: Measured,
}

impl Collector for BacklogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauges = [
            (
                &self.backlog,
                "retry_backlog_records",
                "Retry-topic records the replay job's group has not committed past.",
            ),
            (
                &self.position,
                "replay_position_records",
                "Sum over the retry topic's partitions of the replay job's committed offset: it rises while a replay job applies records.",
            ),
        ];
        for (measured, name, help) in gauges {
            let v = measured.0.load(Ordering::Relaxed);
            if v < 0 {
                continue;
            }
            let g = ConstGauge::new(v);
            let e = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(e)?;
        }
        Ok(())
    }
}

/// A Kafka client reported an error (librdkafka retries most on its own).
pub struct KafkaClientError<'a> {
    /// The error.
    pub error: &'a rdkafka::error::KafkaError,
    /// librdkafka's detail.
    pub reason: &'a str,
}

impl InternalEvent<ConnectorMetrics> for KafkaClientError<'_> {
    fn emit(self, m: &ConnectorMetrics) {
        m.client_errors.inc();
        let kind = self
            .error
            .rdkafka_error_code()
            .map_or_else(|| "other".to_owned(), |c| format!("{c:?}"));
        log_repeated! {
            warn, m.throttle, format!("client/{kind}"),
            error = %self.error, reason = self.reason, "Kafka client error"
        }
    }
}

/// librdkafka logged something (at `log_level`, errors only by default):
/// its reconnect attempts repeat while a broker is away, so lines are
/// rate-limited per facility.
pub struct LibrdkafkaLogged<'a> {
    /// librdkafka's level.
    pub level: rdkafka::config::RDKafkaLogLevel,
    /// Its facility (`FAIL`, `BROKERFAIL`, …).
    pub facility: &'a str,
    /// The line.
    pub message: &'a str,
}

impl InternalEvent<ConnectorMetrics> for LibrdkafkaLogged<'_> {
    fn emit(self, m: &ConnectorMetrics) {
        use rdkafka::config::RDKafkaLogLevel as L;
        let kind = format!("librdkafka/{}", self.facility);
        let (facility, message) = (self.facility, self.message);
        match self.level {
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => {
                log_repeated! { warn, m.throttle, kind, facility, message, "librdkafka" }
            }
            L::Notice | L::Info => {
                log_repeated! { info, m.throttle, kind, facility, message, "librdkafka" }
            }
            L::Debug => tracing::debug!(facility, message, "librdkafka"),
        }
    }
}

/// Reading from Kafka failed (librdkafka goes on trying by itself).
pub struct ReadFailed<'a> {
    /// What was read (a topic, a partition).
    pub what: &'a str,
    /// What librdkafka said.
    pub error: &'a rdkafka::error::KafkaError,
}

impl InternalEvent<ConnectorMetrics> for ReadFailed<'_> {
    fn emit(self, m: &ConnectorMetrics) {
        KafkaClientError {
            error: self.error,
            reason: self.what,
        }
        .emit(m);
    }
}

/// Source offsets were not committed; the next commit covers them.
pub struct CommitFailed<'a> {
    /// What failed.
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent<ConnectorMetrics> for CommitFailed<'_> {
    fn emit(self, m: &ConnectorMetrics) {
        m.commit_failures.inc();
        log_repeated! { warn, m.throttle, "commit", error = %self.error,
        "source offsets were not committed; the next commit covers them" }
    }
}

/// A dead-letter or late record was not accepted by Kafka.
pub struct SideRecordFailed<'a> {
    /// The topic it was meant for.
    pub topic: &'a str,
    /// What failed.
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent<ConnectorMetrics> for SideRecordFailed<'_> {
    fn emit(self, m: &ConnectorMetrics) {
        m.side_failures.inc();
        log_repeated! {
            error, m.throttle, format!("side/{}", self.topic),
            topic = self.topic, error = %self.error,
            "a dead-letter or late record was not accepted by Kafka"
        }
    }
}

/// Records the retry topic did not take went to the journal.
pub struct RecordsJournaled<'a> {
    /// The sink they were diverted from.
    pub sink: &'a str,
    /// How many.
    pub records: usize,
    /// The journal's size after.
    pub journal: usize,
}

impl InternalEvent<ConnectorMetrics> for RecordsJournaled<'_> {
    fn emit(self, m: &ConnectorMetrics) {
        m.journal_records.set(self.journal as i64);
        m.journaled.inc_by(self.records as u64);
        log_repeated! {
            warn, m.throttle, "journaled",
            sink = self.sink, records = self.records, journal = self.journal,
            "the retry topic did not take these records; they are in the journal"
        }
    }
}

/// The journal was resent (some or all of it).
pub struct JournalResent {
    /// Records the retry topic took.
    pub records: usize,
    /// The journal's size after.
    pub journal: usize,
}

impl InternalEvent<ConnectorMetrics> for JournalResent {
    fn emit(self, m: &ConnectorMetrics) {
        m.journal_records.set(self.journal as i64);
        if self.records > 0 {
            tracing::info!(
                records = self.records,
                left = self.journal,
                "resent journaled records to the retry topic"
            );
        }
        if self.journal == 0 {
            m.throttle.end("journaled");
        }
    }
}

/// The retry topic refused records (they stay in the journal).
pub struct RetryTopicRefused<'a> {
    /// How many.
    pub records: usize,
    /// The topic.
    pub topic: &'a str,
    /// The first error.
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent<ConnectorMetrics> for RetryTopicRefused<'_> {
    fn emit(self, m: &ConnectorMetrics) {
        log_repeated! {
            warn, m.throttle, "retry refused",
            topic = self.topic, records = self.records, error = %self.error,
            "the retry topic refused records"
        }
    }
}

/// A producer failed for good and was replaced by a new one.
pub struct ProducerRenewed<'a> {
    /// Which producer.
    pub producer: &'a str,
    /// Why.
    pub reason: &'a str,
}

impl InternalEvent<ConnectorMetrics> for ProducerRenewed<'_> {
    fn emit(self, m: &ConnectorMetrics) {
        m.producers_renewed
            .get_or_create(&ProducerLabels {
                producer: self.producer.to_owned(),
            })
            .inc();
        tracing::warn!(
            producer = self.producer,
            reason = self.reason,
            "a Kafka producer failed for good; a new one replaces it"
        );
    }
}

/// The consumer lag of the source partitions was measured.
pub struct ConsumerLagMeasured<'a> {
    /// (topic, partition, lag).
    pub lags: &'a [(String, i32, u64)],
}

impl InternalEvent<ConnectorMetrics> for ConsumerLagMeasured<'_> {
    fn emit(self, m: &ConnectorMetrics) {
        for (topic, partition, lag) in self.lags {
            m.consumer_lag
                .get_or_create(&PartitionLabels {
                    topic: topic.clone(),
                    partition: *partition,
                })
                .set(i64::try_from(*lag).unwrap_or(i64::MAX));
        }
    }
}

/// The retry backlog was measured.
pub struct RetryBacklogMeasured {
    /// Records the replay job's group has not committed past.
    pub records: u64,
    /// Where the replay job's group stands: the sum over the retry topic's
    /// partitions of its committed offsets (0 where it committed nothing).
    pub position: u64,
    /// When it was measured, ms since the epoch.
    pub at_ms: i64,
}

impl InternalEvent<ConnectorMetrics> for RetryBacklogMeasured {
    fn emit(self, m: &ConnectorMetrics) {
        m.retry_backlog.0.store(
            i64::try_from(self.records).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        let position = i64::try_from(self.position).unwrap_or(i64::MAX);
        let before = m.replay_position.0.swap(position, Ordering::Relaxed);
        // The first measurement only sets the mark: a rise is what shows
        // that a replay job is at work.
        if before >= 0 && position > before {
            m.replay_moved_ms.0.store(self.at_ms, Ordering::Relaxed);
        }
    }
}

/// A source partition starts elsewhere than its checkpoint.
pub struct OffsetsSkipped<'a> {
    /// The range not read.
    pub skipped: &'a Skipped,
    /// The checkpoint's offset, if there was one.
    pub committed: Option<i64>,
    /// Where the partition starts.
    pub start: i64,
}

impl InternalEvent<ConnectorMetrics> for OffsetsSkipped<'_> {
    fn emit(self, m: &ConnectorMetrics) {
        let s = self.skipped;
        let l = ReasonLabels {
            reason: s.reason.as_str().to_owned(),
        };
        m.offset_resets.get_or_create(&l).inc();
        m.offsets_skipped
            .get_or_create(&l)
            .inc_by(u64::try_from(s.len()).unwrap_or(0));
        let committed = self.committed;
        match s.reason {
            SkipReason::SkipToLatest => tracing::warn!(
                topic = %s.topic, partition = s.partition, from = s.from, to = s.to, skipped = s.len(),
                "skipping to the latest offset, as asked: the range is not read now"
            ),
            SkipReason::PastEnd => tracing::error!(
                topic = %s.topic, partition = s.partition, ?committed, end = self.start, skipped = s.len(),
                "the committed offset is past the partition's end (was the topic recreated?): restarting from the latest offset; the offsets before it are not read"
            ),
            SkipReason::BeforeStart => tracing::error!(
                topic = %s.topic, partition = s.partition, ?committed, first = self.start, skipped = s.len(),
                "the committed offset is before the partition's first offset (deleted by retention?): restarting from the earliest offset; the deleted offsets are lost"
            ),
        }
    }
}
