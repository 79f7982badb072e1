//! Kafka client settings shared by every client Footprint creates.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use footprint_dataflows::source::ReadAhead;
use footprint_telemetry::InternalEvent;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;

use crate::ConnectorError;
use crate::events::{ConnectorMetrics, KafkaClientError, LibrdkafkaLogged};

/// The context of Footprint's clients: librdkafka reports every error
/// event, partition EOF included, as a "global error"; rdkafka's default
/// logs them all at ERROR. Reaching the end of a partition is routine (the
/// readers ask for it), so it is logged at DEBUG; other client errors are
/// retried by librdkafka itself, and are counted and logged at WARN through
/// a throttle ([`KafkaClientError`]). Data at risk is reported where it is
/// at risk.
///
/// With `statistics.interval.ms` set, it also keeps what librdkafka holds
/// in the consumer's fetch queues ([`FetchQueues`]).
#[derive(Debug, Clone, Default)]
pub struct FootprintContext {
    fetch_queues: Arc<FetchQueues>,
    metrics: Arc<ConnectorMetrics>,
}

impl FootprintContext {
    /// A context that reports to `metrics`.
    pub fn new(metrics: Arc<ConnectorMetrics>) -> Self {
        FootprintContext {
            fetch_queues: Arc::default(),
            metrics,
        }
    }

    /// Where this client reports.
    pub fn metrics(&self) -> &Arc<ConnectorMetrics> {
        &self.metrics
    }

    /// What the consumer read ahead, as of its last statistics.
    pub fn fetch_queues(&self) -> &FetchQueues {
        &self.fetch_queues
    }
}

/// Messages librdkafka fetched that the application has not taken yet,
/// summed over a consumer's partitions: its read-ahead. librdkafka reports
/// them in its statistics, every `statistics.interval.ms`.
#[derive(Debug, Default)]
pub struct FetchQueues {
    reported: AtomicBool,
    messages: AtomicU64,
    bytes: AtomicU64,
}

impl FetchQueues {
    /// The messages and their payload bytes in the fetch queues, once
    /// librdkafka has reported statistics.
    pub fn get(&self) -> Option<ReadAhead> {
        self.reported.load(Ordering::Acquire).then(|| ReadAhead {
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        })
    }

    fn record(&self, statistics: &Statistics) {
        let (mut messages, mut bytes) = (0u64, 0u64);
        for partition in statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
        {
            messages += u64::try_from(partition.fetchq_cnt).unwrap_or(0);
            bytes += partition.fetchq_size;
        }
        self.messages.store(messages, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        self.reported.store(true, Ordering::Release);
    }
}

impl ClientContext for FootprintContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        LibrdkafkaLogged {
            level,
            facility: fac,
            message: log_message,
        }
        .emit(&self.metrics);
    }

    fn stats(&self, statistics: Statistics) {
        self.fetch_queues.record(&statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        {
            tracing::debug!(%error, reason, "librdkafka");
        } else {
            KafkaClientError {
                error: &error,
                reason,
            }
            .emit(&self.metrics);
        }
    }
}

impl ConsumerContext for FootprintContext {}

/// What a producer's retries may do to the log, chosen per producer by
/// what its records need (the README's "Delivery guarantees" table).
///
/// librdkafka retries a request whose answer it did not get. Without
/// idempotence, a retry of a request the broker had written duplicates its
/// records; with more than one request in flight, a retry can also land
/// after a later request. An idempotent producer lets the broker drop such
/// duplicates, but it ties the producer to state the broker keeps: when one
/// of its messages expires in the queue, librdkafka bumps the producer's
/// epoch itself, and tansu 0.6's SQLite store cannot serve an epoch it did
/// not hand out (its storage task panics, and from then on the broker
/// answers every request with an error). So only the producer whose
/// duplicates would be counted is idempotent, and its messages never expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Retries never duplicate or reorder a partition's messages while the
    /// producer lives; a message waits in the producer until the broker
    /// takes it, however long that is (the caller decides how long to wait
    /// for acknowledgements). For events, which would be counted twice.
    Idempotent,
    /// At least once, in order: a retry can duplicate a message, never put
    /// it after a later one (one request in flight per broker). For records
    /// where the last one per key wins: switch changes, checkpoints.
    Ordered,
    /// At least once: a retry can duplicate a message or put it after a
    /// later one. For records that are safe either way: retry-topic rows
    /// (the version rule), dead letters and late events.
    AtLeastOnce,
}

/// The consumers Footprint creates.
pub type FootprintConsumer = BaseConsumer<FootprintContext>;

/// Where Kafka is and how to talk to it, and where its clients report.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Extra librdkafka properties (security, timeouts, …), applied last.
    pub properties: BTreeMap<String, String>,
    /// Where the clients made from these settings report.
    pub metrics: Arc<ConnectorMetrics>,
}

impl PartialEq for KafkaSettings {
    fn eq(&self, other: &Self) -> bool {
        self.brokers == other.brokers && self.properties == other.properties
    }
}

impl Eq for KafkaSettings {}

impl KafkaSettings {
    /// Settings for `brokers` with no extra properties, whose clients report
    /// to metrics of their own.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSettings {
            brokers: brokers.into(),
            properties: BTreeMap::new(),
            metrics: Arc::default(),
        }
    }

    /// The same settings, reporting to `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<ConnectorMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// A client context that reports to these settings' metrics.
    pub fn context(&self) -> FootprintContext {
        FootprintContext::new(Arc::clone(&self.metrics))
    }

    /// A consumer in `group_id` that commits only when told to and reports
    /// when each partition is read to its end (`enable.partition.eof`,
    /// pinned whatever the user's properties say: readers rely on it).
    /// `extra` comes before the user's properties.
    pub fn consumer(
        &self,
        group_id: &str,
        extra: &[(&str, &str)],
    ) -> Result<FootprintConsumer, ConnectorError> {
        let mut defaults = vec![("group.id", group_id), ("enable.auto.commit", "false")];
        defaults.extend_from_slice(extra);
        let mut config = self.client_config(&defaults);
        config.set("enable.partition.eof", "true");
        config
            .create_with_context(self.context())
            .map_err(ConnectorError::Config)
    }

    /// A producer config for `delivery`, with `extra` (batching, timeouts)
    /// after it and the user's properties last.
    pub fn producer_config(&self, delivery: Delivery, extra: &[(&str, &str)]) -> ClientConfig {
        let mut defaults: Vec<(&str, &str)> = match delivery {
            Delivery::Idempotent => vec![
                ("enable.idempotence", "true"),
                // A message never expires in the producer: an expiry would
                // make librdkafka bump the producer's epoch on its own.
                ("message.timeout.ms", "0"),
            ],
            Delivery::Ordered => vec![
                ("enable.idempotence", "false"),
                ("acks", "all"),
                ("max.in.flight.requests.per.connection", "1"),
            ],
            Delivery::AtLeastOnce => vec![("enable.idempotence", "false"), ("acks", "all")],
        };
        defaults.extend_from_slice(extra);
        self.client_config(&defaults)
    }

    /// A client config with the bootstrap servers, `defaults`, and then the
    /// user's properties (which win).
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("log_level", "3");
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}
