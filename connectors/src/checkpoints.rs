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
//! Ranges a run skipped ([`Skipped`]) are kept beside them, keyed
//! `GROUP/TOPIC/PARTITION/skipped/FROM`, so that a later backfill of such a
//! range knows the watermark it starts from.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::ConnectorError;
use crate::admin::Admin;
use crate::client::{Delivery, FootprintConsumer, KafkaSettings};
use crate::compacted;
use crate::offsets::{Saved, Skipped, checkpoint_metadata};
use crate::producer::EventProducer;

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
            producer: EventProducer::with_delivery(settings, Delivery::Ordered, "checkpoints")?,
            topic: topic.to_owned(),
            group: group.to_owned(),
        })
    }

    /// Writes checkpoints ((topic, partition, checkpoint) triples) and waits
    /// until the broker has acknowledged them.
    pub fn save(&self, points: &[(&str, i32, Saved)]) -> Result<(), ConnectorError> {
        for (topic, partition, saved) in points {
            let value = serde_json::to_vec(saved).map_err(|source| ConnectorError::Encode {
                what: "checkpoint",
                source,
            })?;
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

impl CheckpointWriter {
    /// Records a skipped range (see [`crate::start`]) and waits for the
    /// broker's acknowledgement.
    pub fn save_skipped(&self, skipped: &Skipped) -> Result<(), ConnectorError> {
        let value = serde_json::to_vec(skipped).map_err(|source| ConnectorError::Encode {
            what: "skipped range",
            source,
        })?;
        let key = format!(
            "{}/skipped/{}",
            key(&self.group, &skipped.topic, skipped.partition),
            skipped.from
        );
        self.producer.send(&self.topic, 0, key.as_bytes(), &value)?;
        self.producer.flush(Duration::from_secs(10))
    }
}

/// Commits `points` ((topic, partition, checkpoint) triples) to the
/// consumer group of `consumer`, each with the partition's largest event
/// time in the commit's metadata (see [`checkpoint_metadata`]).
pub fn commit_group(
    consumer: &FootprintConsumer,
    points: &[(&str, i32, Saved)],
) -> Result<(), ConnectorError> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, saved) in points {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(saved.offset))
            .map_err(ConnectorError::kafka(format!("{topic}/{partition}")))?;
        if let Some(mut elem) = tpl.find_partition(topic, *partition) {
            elem.set_metadata(checkpoint_metadata(saved.max_ts));
        }
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .map_err(ConnectorError::kafka("commit offsets"))
}

/// Records new resume points at once, in the checkpoint topic and in the
/// consumer group: used when a run starts somewhere else than its
/// checkpoints (skip to latest, an out-of-range checkpoint), so that a
/// crash before its first regular commit does not go back.
pub fn save_now(
    settings: &KafkaSettings,
    topic: &str,
    group: &str,
    points: &[(&str, i32, Saved)],
) -> Result<(), ConnectorError> {
    CheckpointWriter::new(settings, topic, group)?.save(points)?;
    commit_group(&settings.consumer(group, &[])?, points)
}

/// What the checkpoint topic holds for one consumer group.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The latest checkpoint per (topic, partition).
    pub points: HashMap<(String, i32), Saved>,
    /// Every range recorded as skipped, in the order recorded.
    pub skipped: Vec<Skipped>,
}

/// Reads the checkpoints and the skipped ranges of `group` from `topic`
/// (read to its end). An absent topic holds none.
pub fn load(admin: &Admin, topic: &str, group: &str) -> Result<Loaded, ConnectorError> {
    let mut out = Loaded::default();
    if admin.partitions(topic)?.is_none() {
        return Ok(out);
    }
    let prefix = format!("{group}/");
    let mut skipped: HashMap<String, Skipped> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    compacted::read_to_end(
        admin,
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
            // Topic names cannot hold '/': TOPIC/PARTITION, or TOPIC/PARTITION/skipped/FROM.
            let parts: Vec<&str> = rest.split('/').collect();
            match parts.as_slice() {
                [t, p] => {
                    let Ok(p) = p.parse::<i32>() else { return };
                    match serde_json::from_slice::<Saved>(value) {
                        Ok(saved) => {
                            out.points.insert(((*t).to_owned(), p), saved);
                        }
                        Err(e) => {
                            tracing::warn!(topic, key = rest, error = %e, "ignoring an unreadable checkpoint")
                        }
                    }
                }
                [_, _, "skipped", _] => match serde_json::from_slice::<Skipped>(value) {
                    Ok(s) => {
                        if !skipped.contains_key(rest) {
                            order.push(rest.to_owned());
                        }
                        skipped.insert(rest.to_owned(), s);
                    }
                    Err(e) => {
                        tracing::warn!(topic, key = rest, error = %e, "ignoring an unreadable skipped range")
                    }
                },
                _ => {}
            }
        },
    )?;
    out.skipped = order
        .into_iter()
        .filter_map(|k| skipped.remove(&k))
        .collect();
    Ok(out)
}
