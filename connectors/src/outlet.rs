//! [`KafkaOutlet`]: the collector's producer, an implementation of
//! [`footprint_collect::Outlet`].
//!
//! It is idempotent with `acks=all`, so its retries never duplicate or
//! reorder a partition's messages, and a message never expires in it: a
//! record waits in the producer until the broker takes it. Records are
//! keyed (`app_id:user_id`) and partitioned by the key's murmur2 hash, the
//! Java client's default, so the same key lands in the same partition from
//! any client. A producer that failed for good (an idempotent one whose
//! state the broker lost or refused) is replaced by a new one; what the old
//! one still held fails, and the collector produces it again from its
//! spill.

use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use footprint_collect::{Delivery, Outlet, OutletError};
use footprint_telemetry::InternalEvent;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::ConnectorError;
use crate::client::{Delivery as Guarantee, FootprintContext, KafkaSettings};
use crate::events::ProducerRenewed;

type Inner = FutureProducer<FootprintContext>;

/// The collector's Kafka producer, writing to one topic.
pub struct KafkaOutlet {
    producer: RwLock<Inner>,
    config: ClientConfig,
    settings: KafkaSettings,
    topic: String,
}

impl KafkaOutlet {
    /// A producer of `topic`, tuned for many small requests: a short
    /// linger, a large queue.
    pub fn new(settings: &KafkaSettings, topic: &str) -> Result<Self, ConnectorError> {
        let config = settings.producer_config(
            Guarantee::Idempotent,
            &[
                ("acks", "all"),
                ("linger.ms", "2"),
                ("batch.num.messages", "10000"),
                ("queue.buffering.max.messages", "1000000"),
                ("queue.buffering.max.kbytes", "1048576"),
                ("partitioner", "murmur2_random"),
                ("compression.type", "none"),
            ],
        );
        let producer: Inner = config
            .create_with_context(settings.context())
            .map_err(ConnectorError::Config)?;
        // Learn the topic's partitions now, so that the first requests do
        // not wait for it; a broker that is down is found out later.
        if let Err(e) = producer
            .client()
            .fetch_metadata(Some(topic), std::time::Duration::from_secs(2))
        {
            tracing::debug!(error = %e, topic, "the topic's metadata is not known yet");
        }
        Ok(KafkaOutlet {
            producer: RwLock::new(producer),
            config,
            settings: settings.clone(),
            topic: topic.to_owned(),
        })
    }

    fn producer(&self) -> RwLockReadGuard<'_, Inner> {
        self.producer.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces a producer that failed for good; true if it did.
    fn renew_if_fatal(&self) -> bool {
        let Some((code, reason)) = self.producer().client().fatal_error() else {
            return false;
        };
        let mut current = self
            .producer
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Another sender may have replaced it meanwhile: replacing the
        // fresh one would drop what it was given.
        if current.client().fatal_error().is_none() {
            return true;
        }
        match self.config.create_with_context(self.settings.context()) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut *current, fresh);
                drop(current);
                drop(old);
                ProducerRenewed {
                    producer: "collect",
                    reason: &format!("{code:?}: {reason}"),
                }
                .emit(&self.settings.metrics);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "the collector's producer failed for good and a new one could not be made");
                false
            }
        }
    }
}

impl Outlet for KafkaOutlet {
    fn send(&self, key: &[u8], value: &[u8]) -> Result<Delivery, OutletError> {
        let mut renewed = false;
        loop {
            let sent = self
                .producer()
                .send_result(FutureRecord::to(&self.topic).key(key).payload(value));
            match sent {
                Ok(future) => {
                    return Ok(Box::pin(async move {
                        match future.await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((e, _))) => Err(OutletError::Failed(e.to_string())),
                            Err(_) => Err(OutletError::Failed("the producer was closed".into())),
                        }
                    }));
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(OutletError::QueueFull);
                }
                Err(_) if !renewed && self.renew_if_fatal() => renewed = true,
                Err((e, _)) => return Err(OutletError::Failed(e.to_string())),
            }
        }
    }

    fn queue_depth(&self) -> u64 {
        u64::try_from(self.producer().in_flight_count()).unwrap_or(0)
    }
}
