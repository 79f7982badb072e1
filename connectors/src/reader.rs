//! `KafkaReader`: one worker's share of the source partitions.
//!
//! The reader assigns its partitions explicitly (no consumer-group
//! rebalancing: timely decides who reads what) and gives each partition its
//! own queue, so the source can read partitions at controlled rates and
//! knows when each one is read to its end (partition EOF). A bounded run
//! stops each partition at its end offset or when it has caught up.

use std::sync::Arc;
use std::time::Duration;

use footprint_dataflows::source::{Message, PartitionReader, ReadStatus, Verdict};
use rdkafka::consumer::DefaultConsumerContext;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use crate::ConnectorError;
use crate::client::KafkaSettings;
use crate::side::{Forward, SideOutputs};

/// Where one partition is read from, and where it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRange {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset to read.
    pub from: i64,
    /// Offset to stop before (explicit ranges), or `None`.
    pub to: Option<i64>,
    /// Stop once the partition is read to its end (partition EOF): a run
    /// that catches up and exits. Works on brokers whose reported end offset
    /// lags behind the log (tansu 0.6 reports the last batch's base offset).
    pub until_caught_up: bool,
}

/// Reads a set of partitions for one worker.
pub struct KafkaReader {
    consumer: Arc<BaseConsumer>,
    ranges: Vec<PartitionRange>,
    queues: Vec<PartitionQueue<DefaultConsumerContext>>,
    positions: Vec<i64>,
    side: SideOutputs,
}

impl KafkaReader {
    /// Opens a consumer over `ranges`.
    pub fn open(
        settings: &KafkaSettings,
        group_id: &str,
        ranges: Vec<PartitionRange>,
        side: SideOutputs,
    ) -> Result<Self, ConnectorError> {
        let consumer = Arc::new(settings.consumer(group_id, &[("auto.offset.reset", "earliest")])?);
        let mut tpl = TopicPartitionList::new();
        for r in &ranges {
            tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.from))
                .map_err(|e| ConnectorError::Request(e.to_string()))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| ConnectorError::Request(format!("assign partitions: {e}")))?;
        let mut queues = Vec::with_capacity(ranges.len());
        for r in &ranges {
            let q = consumer
                .split_partition_queue(&r.topic, r.partition)
                .ok_or_else(|| {
                    ConnectorError::Request(format!("no queue for {}/{}", r.topic, r.partition))
                })?;
            queues.push(q);
        }
        // Messages fetched between `assign` and the split could still sit on
        // the main queue; seeking discards them and refetches from `from`.
        for r in &ranges {
            if let Err(e) = consumer.seek(
                &r.topic,
                r.partition,
                Offset::Offset(r.from),
                Duration::from_secs(10),
            ) {
                tracing::debug!(topic = %r.topic, partition = r.partition, error = %e, "seek after split");
            }
        }
        let positions = ranges.iter().map(|r| r.from).collect();
        Ok(KafkaReader {
            consumer,
            ranges,
            queues,
            positions,
            side,
        })
    }
}

impl PartitionReader for KafkaReader {
    fn partitions(&self) -> usize {
        self.ranges.len()
    }

    fn read(
        &mut self,
        idx: usize,
        max: usize,
        handle: &mut dyn FnMut(&Message<'_>) -> Verdict,
    ) -> ReadStatus {
        let range = &self.ranges[idx];
        let mut status = ReadStatus::default();
        if range.to.is_some_and(|to| self.positions[idx] >= to) {
            status.finished = true;
            return status;
        }
        while status.read < max {
            match self.queues[idx].poll(Duration::ZERO) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    status.at_end = true;
                    status.finished = range.until_caught_up;
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(topic = %range.topic, partition = range.partition, error = %e, "error reading partition");
                    break;
                }
                Some(Ok(m)) => {
                    let offset = m.offset();
                    if range.to.is_some_and(|to| offset >= to) {
                        status.finished = true;
                        break;
                    }
                    let payload = m.payload().unwrap_or(&[]);
                    status.read += 1;
                    let timestamp_ms = m.timestamp().to_millis();
                    let verdict = handle(&Message {
                        payload,
                        offset,
                        timestamp_ms,
                    });
                    let fwd = Forward {
                        topic: &range.topic,
                        partition: range.partition,
                        offset,
                        key: m.key(),
                        payload,
                    };
                    match verdict {
                        Verdict::Accepted => {}
                        Verdict::Late { stamp, late } => self.side.late(fwd, stamp, &late),
                        Verdict::Bad(bad) => self.side.dead_letter(fwd, &bad),
                    }
                    self.positions[idx] = offset + 1;
                    if range.to.is_some_and(|to| offset + 1 >= to) {
                        status.finished = true;
                        break;
                    }
                }
            }
        }
        status
    }

    fn after_round(&mut self) {
        // Serve the main queue (errors, statistics); messages arrive on the partition queues.
        match self.consumer.poll(Duration::ZERO) {
            None => {}
            Some(Err(e)) => tracing::warn!(error = %e, "Kafka consumer error"),
            Some(Ok(m)) => tracing::error!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                "a message arrived outside its partition queue and was not processed"
            ),
        }
    }

    fn close(&mut self) {
        if let Err(e) = self.side.flush(Duration::from_secs(30)) {
            tracing::error!(error = %e, "dead-letter and late records may not all have been delivered");
        }
    }
}
