//! The control topic (`footprint.control`): where degrade-switch changes are
//! published, so every worker process and the replay job see them, and so
//! they survive restarts.
//!
//! Each record's key is a sink name and its value the mode (`auto` or
//! `degraded`); the latest record per key wins, which is exactly what a
//! compacted topic keeps. At start-up a process reads the topic to its end
//! before it writes anything, then keeps following it; a change reaches
//! every follower well within a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use footprint_sinks::util::switch::{Mode, Switches};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::ConnectorError;
use crate::admin;
use crate::client::KafkaSettings;

/// The default control topic.
pub const CONTROL_TOPIC: &str = "footprint.control";

/// Creates the control topic (one partition, compacted) unless it exists.
pub async fn ensure(settings: &KafkaSettings, topic: &str) -> Result<(), ConnectorError> {
    if admin::partitions(settings, topic)?.is_some() {
        return Ok(());
    }
    let client: AdminClient<DefaultClientContext> = settings
        .client_config(&[])
        .create()
        .map_err(|e| ConnectorError::Config(e.to_string()))?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let compacted =
        NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    let created = client.create_topics([&compacted], &opts).await;
    if !matches!(created.as_deref(), Ok([Ok(_)])) {
        // Brokers that refuse the topic config still get a topic; the latest
        // record per key wins either way.
        let plain = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
        let _ = client.create_topics([&plain], &opts).await;
    }
    for _ in 0..50 {
        if admin::partitions(settings, topic)?.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ConnectorError::Request(format!(
        "topic {topic} did not appear"
    )))
}

/// Publishes switch changes.
pub struct ControlPublisher {
    producer: FutureProducer,
    topic: String,
}

impl ControlPublisher {
    /// A publisher to `topic`.
    pub fn new(settings: &KafkaSettings, topic: &str) -> Result<Self, ConnectorError> {
        let producer = settings
            .client_config(&[
                ("enable.idempotence", "true"),
                ("linger.ms", "0"),
                ("message.timeout.ms", "10000"),
            ])
            .create()
            .map_err(|e| ConnectorError::Config(e.to_string()))?;
        Ok(ControlPublisher {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// Publishes `sink`'s new mode and waits until Kafka has it.
    pub async fn publish(&self, sink: &str, mode: Mode) -> Result<(), ConnectorError> {
        let record = FutureRecord::to(&self.topic)
            .key(sink)
            .payload(mode.as_str());
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map(|_| ())
            .map_err(|(e, _)| {
                ConnectorError::Request(format!("publish {sink}={mode} to {}: {e}", self.topic))
            })
    }
}

fn follower(settings: &KafkaSettings, topic: &str) -> Result<BaseConsumer, ConnectorError> {
    let consumer = settings.consumer("footprint-control", &[("fetch.wait.max.ms", "50")])?;
    let parts = admin::partitions(settings, topic)?
        .ok_or_else(|| ConnectorError::MissingTopic(topic.to_owned()))?;
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| ConnectorError::Request(e.to_string()))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| ConnectorError::Request(e.to_string()))?;
    Ok(consumer)
}

fn apply(switches: &Switches, key: &[u8], value: &[u8]) {
    let (Ok(sink), Ok(text)) = (std::str::from_utf8(key), std::str::from_utf8(value)) else {
        return;
    };
    match text.parse::<Mode>() {
        Ok(mode) => {
            if let Some(old) = switches.set(sink, mode)
                && old != mode
            {
                tracing::info!(sink, %mode, "switch changed");
            }
        }
        Err(e) => tracing::warn!(sink, error = %e, "ignoring a bad control record"),
    }
}

/// Follows the control topic: reads it to its end (so `switches` hold the
/// persisted modes when this returns), then keeps applying changes on a
/// thread until `stop` is set.
pub fn follow(
    settings: &KafkaSettings,
    topic: &str,
    switches: Arc<Switches>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, ConnectorError> {
    let consumer = follower(settings, topic)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => apply(
                &switches,
                m.key().unwrap_or_default(),
                m.payload().unwrap_or_default(),
            ),
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => tracing::warn!(error = %e, "reading the control topic"),
            None if Instant::now() > deadline => {
                return Err(ConnectorError::Unreachable {
                    brokers: settings.brokers.clone(),
                    detail: format!("control topic {topic} could not be read to its end"),
                });
            }
            None => {}
        }
    }
    let handle = std::thread::Builder::new()
        .name("control-topic".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => apply(
                        &switches,
                        m.key().unwrap_or_default(),
                        m.payload().unwrap_or_default(),
                    ),
                    Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                    Some(Err(e)) => tracing::warn!(error = %e, "reading the control topic"),
                }
            }
        })
        .map_err(|e| ConnectorError::Request(format!("start the control-topic thread: {e}")))?;
    Ok(handle)
}
