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
//! [`ConnectorError::Undelivered`]. A producer that failed for good (an
//! idempotent one whose state the broker lost, or refused) is replaced by a
//! new one, so the messages after it go through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use footprint_telemetry::InternalEvent;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::ConnectorError;
use crate::client::{Delivery, FootprintContext, KafkaSettings};
use crate::events::ProducerRenewed;

/// Deliveries that failed since the last flush, and the first reason.
#[derive(Default)]
struct Refused {
    failed: AtomicU64,
    first: Mutex<Option<String>>,
}

/// Reports client errors, and counts the deliveries that failed.
struct Deliveries {
    client: FootprintContext,
    refused: Arc<Refused>,
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
            self.refused.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self
                .refused
                .first
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

type Inner = ThreadedProducer<Deliveries>;

/// A producer of raw messages.
pub struct EventProducer {
    /// Replaced when it fails for good (see [`EventProducer::send`]).
    producer: RwLock<Inner>,
    config: ClientConfig,
    settings: KafkaSettings,
    refused: Arc<Refused>,
    name: &'static str,
}

impl EventProducer {
    /// An idempotent producer tuned for throughput: for events.
    pub fn new(settings: &KafkaSettings) -> Result<Self, ConnectorError> {
        Self::with_delivery(settings, Delivery::Idempotent, "events")
    }

    /// A producer tuned for throughput, with `delivery`; `name` names it in
    /// logs and metrics.
    pub fn with_delivery(
        settings: &KafkaSettings,
        delivery: Delivery,
        name: &'static str,
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
        let config = settings.producer_config(delivery, &extra);
        let refused = Arc::new(Refused::default());
        let producer = Self::create(&config, settings, &refused)?;
        Ok(EventProducer {
            producer: RwLock::new(producer),
            config,
            settings: settings.clone(),
            refused,
            name,
        })
    }

    fn create(
        config: &ClientConfig,
        settings: &KafkaSettings,
        refused: &Arc<Refused>,
    ) -> Result<Inner, ConnectorError> {
        config
            .create_with_context(Deliveries {
                client: settings.context(),
                refused: Arc::clone(refused),
            })
            .map_err(ConnectorError::Config)
    }

    fn producer(&self) -> RwLockReadGuard<'_, Inner> {
        self.producer.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idempotent producer that hit a fatal error (the broker lost its
    /// state, or refused it for good) refuses every message from then on:
    /// it is replaced by a new one. What the old one still held is counted
    /// as refused, and reported by the next flush.
    fn renew_if_fatal(&self) -> bool {
        let Some((code, reason)) = self.producer().client().fatal_error() else {
            return false;
        };
        match Self::create(&self.config, &self.settings, &self.refused) {
            Ok(fresh) => {
                let old = std::mem::replace(
                    &mut *self
                        .producer
                        .write()
                        .unwrap_or_else(PoisonError::into_inner),
                    fresh,
                );
                drop(old);
                ProducerRenewed {
                    producer: self.name,
                    reason: &format!("{code:?}: {reason}"),
                }
                .emit(&self.settings.metrics);
                true
            }
            Err(e) => {
                tracing::error!(producer = self.name, error = %e, "a producer failed for good and a new one could not be made");
                false
            }
        }
    }

    /// Queues one message, waiting while the local queue is full. A
    /// producer that failed for good is replaced first.
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
        let mut renewed = false;
        loop {
            let result = self.producer().send(record);
            match result {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer().poll(Duration::from_millis(5));
                }
                Err((_, r)) if !renewed && self.renew_if_fatal() => {
                    record = r;
                    renewed = true;
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
        usize::try_from(self.producer().in_flight_count()).unwrap_or(0)
    }

    /// Waits until every queued message is acknowledged, at most `timeout`;
    /// fails if some are still waiting then, or if Kafka refused any since
    /// the last flush.
    pub fn flush(&self, timeout: Duration) -> Result<(), ConnectorError> {
        let flushed = self.producer().flush(timeout);
        match flushed {
            Ok(()) | Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {}
            Err(e) if self.renew_if_fatal() => {
                tracing::debug!(producer = self.name, error = %e, "flush of a failed producer");
            }
            Err(e) => return Err(ConnectorError::kafka("flush")(e)),
        }
        self.renew_if_fatal();
        let failed = self.refused.failed.swap(0, Ordering::Relaxed);
        if failed > 0 {
            let first = self
                .refused
                .first
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .unwrap_or_default();
            return Err(ConnectorError::Undelivered {
                what: format!("produce ({})", self.name),
                failed,
                first,
            });
        }
        let left = self.waiting();
        if left > 0 {
            return Err(ConnectorError::Unacknowledged {
                what: format!("produce ({})", self.name),
                left,
            });
        }
        Ok(())
    }
}
