//! Small compacted topics that a process reads to their end at start-up:
//! the control topic (degrade switches) and the checkpoint topic (source
//! resume points). The latest record per key wins, which is what compaction
//! keeps; on a broker that does not compact, reading is still correct, only
//! longer.

use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;

use crate::ConnectorError;
use crate::admin::Admin;
use crate::client::FootprintConsumer;
use crate::events::ReadFailed;
use footprint_telemetry::InternalEvent;

/// Reads every partition of `topic` from its beginning to its end, calling
/// `apply(key, value)` on each record in order, and returns the consumer
/// (in `group`, with `extra` properties), positioned at the end, for a
/// caller that keeps following the topic. Fails when the topic is missing,
/// or when it could not be read to its end within `timeout`. (Create the
/// topic with [`Admin::ensure_compacted`].)
pub fn read_to_end(
    admin: &Admin,
    topic: &str,
    group: &str,
    extra: &[(&str, &str)],
    timeout: Duration,
    mut apply: impl FnMut(&[u8], &[u8]),
) -> Result<FootprintConsumer, ConnectorError> {
    let settings = admin.settings();
    let (consumer, mut open) = admin.assigned(group, extra, topic, Offset::Beginning)?;
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
            Some(Err(e)) => ReadFailed {
                what: topic,
                error: &e,
            }
            .emit(consumer.context().metrics()),
            None => {}
        }
    }
    Ok(consumer)
}
