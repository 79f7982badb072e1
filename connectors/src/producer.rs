//! `EventProducer`: writes generated (or replayed) events to a topic, to
//! explicit partitions, with back-pressure instead of loss. The producer is
//! idempotent, so retries never reorder or duplicate a partition's messages.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::ConnectorError;
use crate::client::KafkaSettings;

/// A producer of raw messages.
pub struct EventProducer {
    producer: ThreadedProducer<DefaultProducerContext>,
}

impl EventProducer {
    /// A producer tuned for throughput.
    pub fn new(settings: &KafkaSettings) -> Result<Self, ConnectorError> {
        let producer = settings
            .client_config(&[
                ("linger.ms", "10"),
                ("batch.num.messages", "10000"),
                ("queue.buffering.max.messages", "200000"),
                ("compression.type", "none"),
                ("enable.idempotence", "true"),
                ("message.timeout.ms", "120000"),
            ])
            .create()
            .map_err(|e| ConnectorError::Config(e.to_string()))?;
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
                    return Err(ConnectorError::Request(format!(
                        "produce to {topic}/{partition}: {e}"
                    )));
                }
            }
        }
    }

    /// Waits until every queued message is acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<(), ConnectorError> {
        self.producer
            .flush(timeout)
            .map_err(|e| ConnectorError::Request(format!("flush: {e}")))?;
        let left = self.producer.in_flight_count();
        if left > 0 {
            return Err(ConnectorError::Request(format!(
                "{left} messages were not acknowledged"
            )));
        }
        Ok(())
    }
}
