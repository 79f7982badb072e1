//! `EventProducer`: writes messages to explicit partitions, with
//! back-pressure instead of loss, and says which ones Kafka refused.
//!
//! Made with [`Delivery::Idempotent`] (events: [`EventProducer::new`]), its
//! retries never duplicate or reorder a partition's messages, and a message
//! waits in the producer until the broker takes it. Made with
//! [`Delivery::Ordered`] (checkpoints), a retry may duplicate a message but
//! never reorder them.
//!
//! A message whose delivery failed is never dropped silently: it is counted,
//! and the next [`EventProducer::flush`] fails with
//! [`ConnectorError::Undelivered`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::ConnectorError;
use crate::client::{Delivery, FootprintContext, KafkaSettings};

/// Counts deliveries that failed, and keeps the first reason.
struct Deliveries {
    client: FootprintContext,
    failed: AtomicU64,
    first: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.client.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.client.error(error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self
                .first
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// A producer of raw messages.
pub struct EventProducer {
    producer: ThreadedProducer<Deliveries>,
}

impl EventProducer {
    /// An idempotent producer tuned for throughput: for events.
    pub fn new(settings: &KafkaSettings) -> Result<Self, ConnectorError> {
        Self::with_delivery(settings, Delivery::Idempotent)
    }

    /// A producer tuned for throughput, with `delivery`.
    pub fn with_delivery(
        settings: &KafkaSettings,
        delivery: Delivery,
    ) -> Result<Self, ConnectorError> {
        let mut extra = vec![
            ("linger.ms", "10"),
            ("batch.num.messages", "10000"),
            ("queue.buffering.max.messages", "200000"),
            ("compression.type", "none"),
        ];
        if delivery != Delivery::Idempotent {
            extra.push(("message.timeout.ms", "120000"));
        }
        let producer = settings
            .producer_config(delivery, &extra)
            .create_with_context(Deliveries {
                client: settings.context(),
                failed: AtomicU64::new(0),
                first: Mutex::new(None),
            })
            .map_err(ConnectorError::Config)?;
        Ok(EventProducer { producer })
    }

    /// Queues one message, waiting while the local queue is full.
    pub fn send(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        payload: &[u8],
    ) -> Result<(), ConnectorError> {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .key(key)
            .payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(ConnectorError::Kafka {
                        what: format!("produce to {topic}/{partition}"),
                        source: e,
                    });
                }
            }
        }
    }

    /// Messages queued or in flight: not yet acknowledged.
    pub fn waiting(&self) -> usize {
        usize::try_from(self.producer.in_flight_count()).unwrap_or(0)
    }

    /// Waits until every queued message is acknowledged, at most `timeout`;
    /// fails if some are still waiting then, or if Kafka refused any since
    /// the last flush.
    pub fn flush(&self, timeout: Duration) -> Result<(), ConnectorError> {
        match self.producer.flush(timeout) {
            Ok(()) | Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {}
            Err(e) => return Err(ConnectorError::kafka("flush")(e)),
        }
        let context = self.producer.context();
        let failed = context.failed.swap(0, Ordering::Relaxed);
        if failed > 0 {
            let first = context
                .first
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .unwrap_or_default();
            return Err(ConnectorError::Undelivered {
                what: "produce".into(),
                failed,
                first,
            });
        }
        let left = self.waiting();
        if left > 0 {
            return Err(ConnectorError::Unacknowledged {
                what: "produce".into(),
                left,
            });
        }
        Ok(())
    }
}
