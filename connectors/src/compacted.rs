//! Small compacted topics that a process reads to their end at start-up:
//! the control topic (degrade switches) and the checkpoint topic (source
//! resume points). The latest record per key wins, which is what compaction
//! keeps; on a broker that does not compact, reading is still correct, only
//! longer.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::ConnectorError;
use crate::admin;
use crate::client::{FootprintConsumer, KafkaSettings};

/// Creates `topic` (one partition, compacted) unless it exists.
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

/// Reads every partition of `topic` from its beginning to its end, calling
/// `apply(key, value)` on each record in order, and returns the consumer
/// (in `group`, with `extra` properties), positioned at the end, for a
/// caller that keeps following the topic. Fails when the topic is missing,
/// or when it could not be read to its end within `timeout`.
pub fn read_to_end(
    settings: &KafkaSettings,
    topic: &str,
    group: &str,
    extra: &[(&str, &str)],
    timeout: Duration,
    mut apply: impl FnMut(&[u8], &[u8]),
) -> Result<FootprintConsumer, ConnectorError> {
    let consumer = settings.consumer(group, extra)?;
    let parts = admin::partitions(settings, topic)?
        .ok_or_else(|| ConnectorError::MissingTopic(topic.to_owned()))?;
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(|e| ConnectorError::Request(e.to_string()))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| ConnectorError::Request(e.to_string()))?;
    let mut open = parts;
    let deadline = Instant::now() + timeout;
    while !open.is_empty() {
        if Instant::now() > deadline {
            return Err(ConnectorError::Unreachable {
                brokers: settings.brokers.clone(),
                detail: format!("topic {topic} could not be read to its end"),
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => apply(m.key().unwrap_or_default(), m.payload().unwrap_or_default()),
            Some(Err(KafkaError::PartitionEOF(p))) => open.retain(|x| *x != p),
            Some(Err(e)) => tracing::warn!(topic, error = %e, "reading a compacted topic"),
            None => {}
        }
    }
    Ok(consumer)
}
