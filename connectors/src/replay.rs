//! The Kafka side of the retry replay job: reading the retry topic back,
//! committing past what was dealt with, and forwarding records that can
//! never be applied to `<retry topic>.dlq`.
//!
//! Applying records to their stores is not done here: the replay job (wired
//! in the binary) decides when a record's sink can take it, writes it
//! through the sink, and only then asks this reader to commit past it. Per
//! partition, records arrive in offset order, and a commit names the first
//! offset *not* dealt with, so a restart resumes exactly there.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::ConnectorError;
use crate::admin::Admin;
use crate::client::{Delivery, FootprintConsumer, FootprintContext};
use crate::retry::RetryRecord;
use crate::side::DLQ_SUFFIX;

/// The replay job's consumer group: its commits mark what was applied.
pub const REPLAY_GROUP: &str = "footprint-replay";

/// A record read from the retry topic.
#[derive(Debug)]
pub enum Entry {
    /// To apply to its store.
    Apply(RetryRecord),
    /// Undecodable: to forward to the dead-letter topic.
    Undecodable {
        /// The record as read.
        payload: Vec<u8>,
        /// Why it cannot be decoded.
        reason: String,
    },
}

/// One record and where it was read.
#[derive(Debug)]
pub struct Read {
    /// Retry-topic partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The record.
    pub entry: Entry,
}

/// Reads the retry topic from the replay group's commits.
pub struct RetryReader {
    consumer: FootprintConsumer,
    topic: String,
    /// Per partition, whether it was read to its end.
    at_end: BTreeMap<i32, bool>,
    /// Per partition, the offset after the last record read.
    next: BTreeMap<i32, i64>,
    dead_letters: FutureProducer<FootprintContext>,
    dlq: String,
}

impl RetryReader {
    /// Opens `topic` in `group`, from its commits (the beginning where there
    /// are none), and makes sure its dead-letter topic exists.
    pub fn open(admin: &Admin, topic: &str, group: &str) -> Result<Self, ConnectorError> {
        let settings = admin.settings();
        let (consumer, partitions) = admin.assigned(
            group,
            &[("auto.offset.reset", "earliest")],
            topic,
            Offset::Stored,
        )?;
        let dlq = format!("{topic}{DLQ_SUFFIX}");
        admin.ensure_topic(&dlq, 1, 1)?;
        let dead_letters = settings
            .producer_config(Delivery::AtLeastOnce, &[("message.timeout.ms", "30000")])
            .create_with_context(settings.context())
            .map_err(ConnectorError::Config)?;
        Ok(RetryReader {
            consumer,
            topic: topic.to_owned(),
            at_end: partitions.iter().map(|p| (*p, false)).collect(),
            next: partitions.iter().map(|p| (*p, 0)).collect(),
            dead_letters,
            dlq,
        })
    }

    /// The next record, waiting at most `timeout`; `None` when nothing came.
    pub fn poll(&mut self, timeout: Duration) -> Option<Read> {
        match self.consumer.poll(timeout) {
            None => None,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                self.at_end.insert(p, true);
                None
            }
            Some(Err(e)) => {
                tracing::debug!(topic = %self.topic, error = %e, "error reading the retry topic");
                None
            }
            Some(Ok(m)) => {
                self.at_end.insert(m.partition(), false);
                self.next.insert(m.partition(), m.offset() + 1);
                let payload = m.payload().unwrap_or_default();
                let entry = match RetryRecord::decode(payload) {
                    Ok(r) => Entry::Apply(r),
                    Err(e) => Entry::Undecodable {
                        payload: payload.to_vec(),
                        reason: e.to_string(),
                    },
                };
                Some(Read {
                    partition: m.partition(),
                    offset: m.offset(),
                    entry,
                })
            }
        }
    }

    /// Whether every partition was read to its end.
    pub fn caught_up(&self) -> bool {
        self.at_end.values().all(|e| *e)
    }

    /// (partitions read to their end, partitions).
    pub fn partitions_caught_up(&self) -> (usize, usize) {
        (
            self.at_end.values().filter(|e| **e).count(),
            self.at_end.len(),
        )
    }

    /// Records not read yet, by the brokers' end offsets.
    pub fn unread(&self) -> u64 {
        let positions = self.consumer.position().ok();
        self.next
            .iter()
            .map(|(p, n)| {
                let pos = match positions
                    .as_ref()
                    .and_then(|t| t.find_partition(&self.topic, *p))
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(o)) => o.max(*n),
                    _ => *n,
                };
                let high = self
                    .consumer
                    .fetch_watermarks(&self.topic, *p, Duration::from_secs(5))
                    .map_or(pos, |(_, h)| h);
                (high - pos).max(0) as u64
            })
            .sum()
    }

    /// Commits `partition` up to `offset`: every record before it was dealt with.
    pub fn commit(&self, partition: i32, offset: i64) -> Result<(), ConnectorError> {
        let topic = &self.topic;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(ConnectorError::kafka(format!("{topic}/{partition}")))?;
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(ConnectorError::kafka(format!(
                "commit {topic}/{partition}@{offset}"
            )))
    }

    /// Forwards a record that can never be applied to the dead-letter topic,
    /// with `reason`, and waits until Kafka has it.
    pub fn dead_letter(
        &self,
        payload: &[u8],
        reason: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(), ConnectorError> {
        let source = format!("{}/{partition}/{offset}", self.topic);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "footprint.reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "footprint.source",
                value: Some(source.as_str()),
            });
        let record = FutureRecord::<(), [u8]>::to(&self.dlq)
            .payload(payload)
            .headers(headers);
        let what = || format!("dead-letter {source}");
        let delivery = self
            .dead_letters
            .send_result(record)
            .map_err(|(e, _)| ConnectorError::kafka(what())(e))?;
        match futures::executor::block_on(delivery) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(ConnectorError::kafka(what())(e)),
            Err(_) => Err(ConnectorError::Unacknowledged {
                what: what(),
                left: 1,
            }),
        }
    }
}
