//! The checkpoint topic: where each partition's safe resume point is kept
//! with the watermark that goes with it.
//!
//! A checkpoint is (offset, largest event time before it). The offset alone
//! is also committed to the consumer group, which is what lag monitors read,
//! and the event time travels in the commit's metadata; but not every
//! Kafka-compatible broker returns commit metadata (tansu 0.6 stores it and
//! answers OffsetFetch with none), so the pair is also written, as one
//! record, to a compacted topic of its own. Either copy is a safe resume
//! point on its own; a restart prefers the topic's, because its offset and
//! event time always belong together.
//!
//! Records are keyed `GROUP/TOPIC/PARTITION`; the latest per key wins.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConnectorError;
use crate::client::KafkaSettings;
use crate::compacted;
use crate::producer::EventProducer;

/// One partition's checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The first offset a restart reads.
    pub offset: i64,
    /// The partition's largest event time before `offset`.
    pub max_ts: Option<i64>,
}

fn key(group: &str, topic: &str, partition: i32) -> String {
    format!("{group}/{topic}/{partition}")
}

/// Writes checkpoints of one consumer group.
pub struct CheckpointWriter {
    producer: EventProducer,
    topic: String,
    group: String,
}

impl CheckpointWriter {
    /// A writer to `topic` for `group`.
    pub fn new(settings: &KafkaSettings, topic: &str, group: &str) -> Result<Self, ConnectorError> {
        Ok(CheckpointWriter {
            producer: EventProducer::new(settings)?,
            topic: topic.to_owned(),
            group: group.to_owned(),
        })
    }

    /// Writes checkpoints ((topic, partition, checkpoint) triples) and waits
    /// until the broker has acknowledged them.
    pub fn save(&self, points: &[(&str, i32, Saved)]) -> Result<(), ConnectorError> {
        for (topic, partition, saved) in points {
            let value = serde_json::to_vec(saved)
                .map_err(|e| ConnectorError::Request(format!("encode checkpoint: {e}")))?;
            self.producer.send(
                &self.topic,
                0,
                key(&self.group, topic, *partition).as_bytes(),
                &value,
            )?;
        }
        self.producer.flush(Duration::from_secs(10))
    }
}

/// Reads the latest checkpoint of every partition of `group` from `topic`
/// (read to its end). An absent topic holds none.
pub fn load(
    settings: &KafkaSettings,
    topic: &str,
    group: &str,
) -> Result<HashMap<(String, i32), Saved>, ConnectorError> {
    let mut out = HashMap::new();
    if crate::admin::partitions(settings, topic)?.is_none() {
        return Ok(out);
    }
    let prefix = format!("{group}/");
    compacted::read_to_end(
        settings,
        topic,
        "footprint-checkpoints",
        &[],
        Duration::from_secs(60),
        |key, value| {
            let Some(rest) = std::str::from_utf8(key)
                .ok()
                .and_then(|k| k.strip_prefix(&prefix))
            else {
                return;
            };
            let Some((t, p)) = rest.rsplit_once('/') else {
                return;
            };
            let Ok(p) = p.parse::<i32>() else {
                return;
            };
            match serde_json::from_slice::<Saved>(value) {
                Ok(saved) => {
                    out.insert((t.to_owned(), p), saved);
                }
                Err(e) => {
                    tracing::warn!(topic, key = rest, error = %e, "ignoring an unreadable checkpoint")
                }
            }
        },
    )?;
    Ok(out)
}
