//! Side outputs: the dead-letter topic (`<topic>.dlq`) and the late-events
//! topic (`<topic>.late`).
//!
//! A rejected or late message is forwarded unchanged (same key and payload)
//! with headers that say why: `footprint.reason` and `footprint.error` for bad
//! input, `footprint.late` (`aggregate:windows,…`) and `footprint.watermark`
//! for late events, and `footprint.source` (`topic/partition/offset`) on both.
//! A record that cannot be produced is counted and logged at ERROR.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use footprint_dataflows::BadInput;
use footprint_dataflows::metrics::Metrics;
use footprint_dataflows::route::Late;
use rdkafka::ClientContext;
use rdkafka::Message as _;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::ConnectorError;
use crate::client::KafkaSettings;

/// Suffix of dead-letter topics.
pub const DLQ_SUFFIX: &str = ".dlq";
/// Suffix of late-event topics.
pub const LATE_SUFFIX: &str = ".late";

/// Counts and logs side records that Kafka did not accept.
pub struct SideContext {
    metrics: Arc<Metrics>,
}

impl ClientContext for SideContext {}

impl ProducerContext for SideContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((err, msg)) = result {
            self.metrics
                .side_output_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(topic = msg.topic(), error = %err, "a dead-letter or late record was not accepted by Kafka");
        }
    }
}

/// A message being forwarded, with where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Forward<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Original key.
    pub key: Option<&'a [u8]>,
    /// Original payload.
    pub payload: &'a [u8],
}

/// The producer for dead-letter and late records.
pub struct SideOutputs {
    producer: ThreadedProducer<SideContext>,
    aggregates: Arc<[String]>,
    metrics: Arc<Metrics>,
}

impl SideOutputs {
    /// A producer using `settings`; `aggregates` names the aggregates for headers.
    pub fn new(
        settings: &KafkaSettings,
        aggregates: Arc<[String]>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConnectorError> {
        let producer = settings
            .client_config(&[("linger.ms", "20"), ("message.timeout.ms", "60000")])
            .create_with_context(SideContext {
                metrics: Arc::clone(&metrics),
            })
            .map_err(|e| ConnectorError::Config(e.to_string()))?;
        Ok(SideOutputs {
            producer,
            aggregates,
            metrics,
        })
    }

    /// Forwards a rejected message to `<topic>.dlq`.
    pub fn dead_letter(&self, msg: Forward<'_>, bad: &BadInput) {
        let source = format!("{}/{}/{}", msg.topic, msg.partition, msg.offset);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "footprint.reason",
                value: Some(bad.reason.as_str()),
            })
            .insert(Header {
                key: "footprint.error",
                value: Some(bad.detail.as_str()),
            })
            .insert(Header {
                key: "footprint.source",
                value: Some(source.as_str()),
            });
        self.send(&format!("{}{DLQ_SUFFIX}", msg.topic), msg, headers);
    }

    /// Forwards a late message to `<topic>.late`.
    pub fn late(&self, msg: Forward<'_>, watermark: u64, late: &[Late]) {
        let source = format!("{}/{}/{}", msg.topic, msg.partition, msg.offset);
        let which: Vec<String> = late
            .iter()
            .map(|l| {
                let name = self
                    .aggregates
                    .get(usize::from(l.agg))
                    .map_or("?", String::as_str);
                format!("{name}:{}", l.windows)
            })
            .collect();
        let which = which.join(",");
        let watermark = watermark.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "footprint.late",
                value: Some(which.as_str()),
            })
            .insert(Header {
                key: "footprint.watermark",
                value: Some(watermark.as_str()),
            })
            .insert(Header {
                key: "footprint.source",
                value: Some(source.as_str()),
            });
        self.send(&format!("{}{LATE_SUFFIX}", msg.topic), msg, headers);
    }

    fn send(&self, topic: &str, msg: Forward<'_>, headers: OwnedHeaders) {
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(topic).payload(msg.payload).headers(headers);
        if let Some(k) = msg.key {
            record = record.key(k);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if Instant::now() < deadline =>
                {
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    self.metrics
                        .side_output_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(topic, error = %e, source = %format!("{}/{}/{}", msg.topic, msg.partition, msg.offset),
                        "could not produce a dead-letter or late record");
                    return;
                }
            }
        }
    }

    /// Waits until every record is delivered (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> Result<(), ConnectorError> {
        self.producer
            .flush(timeout)
            .map_err(|e| ConnectorError::Request(format!("flush side outputs: {e}")))
    }
}
