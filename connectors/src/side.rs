//! Side outputs: the dead-letter topic (`<topic>.dlq`) and the late-events
//! topic (`<topic>.late`).
//!
//! A rejected or late message is forwarded unchanged (same key and payload)
//! with headers that say why: `footprint.reason` and `footprint.error` for bad
//! input, `footprint.late` (`aggregate:windows,…`) and `footprint.watermark`
//! for late events, and `footprint.source` (`topic/partition/offset`) on both.
//! A record that cannot be produced is reported ([`SideRecordFailed`]:
//! counted, and logged at ERROR), and from then on [`SideOutputs::flush`]
//! fails: the reader commits no more source offsets, so that a restart
//! reads the messages of the lost records again and forwards them anew.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use footprint_dataflows::BadInput;
use footprint_dataflows::route::Late;
use footprint_telemetry::InternalEvent;
use rdkafka::ClientContext;
use rdkafka::Message as _;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::ConnectorError;
use crate::client::{Delivery, FootprintContext, KafkaSettings};
use crate::events::{ConnectorMetrics, SideRecordFailed};

/// Suffix of dead-letter topics.
pub const DLQ_SUFFIX: &str = ".dlq";
/// Suffix of late-event topics.
pub const LATE_SUFFIX: &str = ".late";

/// Reports side records that Kafka did not accept, and client errors.
pub struct SideContext {
    client: FootprintContext,
    metrics: Arc<ConnectorMetrics>,
    lost: Arc<Lost>,
}

/// Records of one producer that were not delivered, and why the first was not.
#[derive(Debug, Default)]
struct Lost {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Lost {
    fn record(&self, error: &dyn std::fmt::Display) {
        if self.count.fetch_add(1, Ordering::SeqCst) == 0 {
            *self.first.lock().unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
        }
    }
}

impl ClientContext for SideContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.client.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.client.error(error, reason);
    }
}

impl ProducerContext for SideContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((err, msg)) = result {
            self.lost.record(err);
            SideRecordFailed {
                topic: msg.topic(),
                error: err,
            }
            .emit(&self.metrics);
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
    metrics: Arc<ConnectorMetrics>,
    lost: Arc<Lost>,
}

impl SideOutputs {
    /// A producer using `settings` (and reporting to their metrics);
    /// `aggregates` names the aggregates for headers.
    pub fn new(
        settings: &KafkaSettings,
        aggregates: Arc<[String]>,
    ) -> Result<Self, ConnectorError> {
        let metrics = Arc::clone(&settings.metrics);
        let lost = Arc::new(Lost::default());
        let producer = settings
            .producer_config(
                Delivery::AtLeastOnce,
                &[("linger.ms", "20"), ("message.timeout.ms", "60000")],
            )
            .create_with_context(SideContext {
                client: settings.context(),
                metrics: Arc::clone(&metrics),
                lost: Arc::clone(&lost),
            })
            .map_err(ConnectorError::Config)?;
        Ok(SideOutputs {
            producer,
            aggregates,
            metrics,
            lost,
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
                    self.lost.record(&e);
                    SideRecordFailed { topic, error: &e }.emit(&self.metrics);
                    return;
                }
            }
        }
    }

    /// Waits until every record is delivered (or `timeout` passes). Fails
    /// when a record was not delivered, now or at any time before: the
    /// source offsets of its message must then not be committed.
    pub fn flush(&self, timeout: Duration) -> Result<(), ConnectorError> {
        const WHAT: &str = "deliver the dead-letter and late records";
        self.producer
            .flush(timeout)
            .map_err(ConnectorError::kafka(WHAT))?;
        match self.lost.count.load(Ordering::SeqCst) {
            0 => Ok(()),
            failed => Err(ConnectorError::Undelivered {
                what: WHAT.to_owned(),
                failed,
                first: self
                    .lost
                    .first
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                    .unwrap_or_default(),
            }),
        }
    }
}
