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

    /// Waits until every queued message is acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<(), ConnectorError> {
        self.producer
            .flush(timeout)
            .map_err(ConnectorError::kafka("flush"))?;
        let left = self.producer.in_flight_count();
        if left > 0 {
            return Err(ConnectorError::Unacknowledged {
                what: "produce".into(),
                left: usize::try_from(left).unwrap_or(usize::MAX),
            });
        }
        Ok(())
    }
}
