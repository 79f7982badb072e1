//! `KafkaReader`: one worker's share of the source partitions.
//!
//! The reader assigns its partitions explicitly (no consumer-group
//! rebalancing: timely decides who reads what) and gives each partition its
//! own queue, so the source can read partitions at controlled rates and
//! knows when each one is read to its end (partition EOF). A bounded run
//! stops each partition at its end offset or when it has caught up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use footprint_dataflows::checkpoint::Checkpoint;
use footprint_dataflows::source::{Message, PartitionReader, ReadAhead, ReadStatus, Verdict};
use rdkafka::consumer::Consumer;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use crate::ConnectorError;
use crate::checkpoints::{CheckpointWriter, commit_group};
use crate::client::{FootprintConsumer, FootprintContext, KafkaSettings};
use crate::events::ReadFailed;
use crate::offsets::Saved;
use crate::side::{Forward, SideOutputs};
use footprint_telemetry::InternalEvent;

/// Where one partition is read from, and where it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRange {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The partition's number among all source partitions (every source
    /// topic's, in config order).
    pub id: u32,
    /// First offset to read.
    pub from: i64,
    /// The partition's largest event time before `from`, restored from a
    /// checkpoint, so that its watermark resumes where it was.
    pub max_ts: Option<i64>,
    /// Offset to stop before (explicit ranges), or `None`.
    pub to: Option<i64>,
    /// Stop once the partition is read to its end (partition EOF): a run
    /// that catches up and exits. Works on brokers whose reported end offset
    /// lags behind the log (tansu 0.6 reports the last batch's base offset).
    pub until_caught_up: bool,
    /// A bounded backfill: past `to`, keep reading (messages flagged as
    /// tail, with no side outputs) until the source says the range is
    /// settled, or the partition's end.
    pub tail: bool,
}

impl PartitionRange {
    /// Whether `offset` is past the range's end, where reading stops (or,
    /// for a backfill, goes on as tail).
    fn past_end(&self, offset: i64) -> bool {
        self.to.is_some_and(|to| offset >= to)
    }
}

/// Reads a set of partitions for one worker.
pub struct KafkaReader {
    consumer: Arc<FootprintConsumer>,
    ranges: Vec<PartitionRange>,
    queues: Vec<PartitionQueue<FootprintContext>>,
    positions: Vec<i64>,
    /// Per partition, while the first message at the start offset is still
    /// awaited: how far back the last rewind went, and since when.
    starting: Vec<Option<Starting>>,
    side: Option<SideOutputs>,
    checkpoints: Option<CheckpointWriter>,
}

/// A partition whose first message (at its start offset) has not arrived yet.
#[derive(Debug, Clone, Copy)]
struct Starting {
    /// How far before the start offset the last rewind went (0: none yet).
    back: i64,
    /// When the partition was assigned or last sought.
    since: Instant,
}

/// How long a starting partition may stay silent before it is read from
/// further back: some brokers answer a fetch from inside their last record
/// batch with nothing at all.
const START_PATIENCE: Duration = Duration::from_secs(1);

/// What to do with a message read while a partition is starting.
enum StartCheck {
    /// Process it.
    Take,
    /// It is before the start offset: drop it.
    Skip,
    /// The read began past the start offset; the partition was sought back.
    Rewound,
}

/// The reader's consumer settings, before the user's `source.properties`.
///
/// - `fetch.wait.max.ms` 10: how long a broker may hold a fetch that finds
///   too little data. Apache Kafka answers at once when data is there, so
///   this only paces fetches at the end of the log (up to 100 a second per
///   consumer and broker). tansu 0.6 holds every fetch for all of it below
///   250 ms, data or not (half of it above), which capped a reader at one
///   fetch per 250 ms at librdkafka's 500 ms, and at one per 50–80 ms at
///   50 ms: in paired runs a worker read a skewed backlog 1.18–1.33 times
///   as fast at 10 ms as at 50, and the plain consumers of the bench's raw
///   read 2.1–2.2 times.
/// - `queued.min.messages` 5,000: librdkafka reads ahead into a queue per
///   partition until it holds this many messages (100,000 by default), at
///   some 400 bytes of bookkeeping per message beyond its payload. A
///   partition the source leaves unread for a while (it runs ahead of the
///   slowest, see `watermark.max_drift`) sits on a full queue. With the
///   short fetch round trip above, a small queue costs no speed and keeps
///   memory level.
/// - `fetch.queue.backoff.ms` 10: a full queue is looked at again after
///   10 ms rather than after librdkafka's second, so that a worker as fast
///   as its broker does not wait for a refill.
/// - `statistics.interval.ms` 1000: librdkafka reports what it holds read
///   ahead every second ([`PartitionReader::read_ahead`]).
///
/// Measured in docs/performance.md ("The broker's fetch wait" and "The
/// fetch wait, again").
const READ_AHEAD: &[(&str, &str)] = &[
    ("auto.offset.reset", "earliest"),
    ("fetch.wait.max.ms", "10"),
    ("queued.min.messages", "5000"),
    ("fetch.queue.backoff.ms", "10"),
    ("statistics.interval.ms", "1000"),
];

impl KafkaReader {
    /// Opens a consumer over `ranges`; bad and late messages go to `side`.
    pub fn open(
        settings: &KafkaSettings,
        group_id: &str,
        ranges: Vec<PartitionRange>,
        side: SideOutputs,
    ) -> Result<Self, ConnectorError> {
        Self::open_with(settings, group_id, ranges, Some(side))
    }

    /// Opens a consumer over `ranges` that forwards nothing and commits
    /// nothing: for tools that only look at messages.
    pub fn open_plain(
        settings: &KafkaSettings,
        group_id: &str,
        ranges: Vec<PartitionRange>,
    ) -> Result<Self, ConnectorError> {
        Self::open_with(settings, group_id, ranges, None)
    }

    fn open_with(
        settings: &KafkaSettings,
        group_id: &str,
        ranges: Vec<PartitionRange>,
        side: Option<SideOutputs>,
    ) -> Result<Self, ConnectorError> {
        let consumer = Arc::new(settings.consumer(group_id, READ_AHEAD)?);
        let mut tpl = TopicPartitionList::new();
        for r in &ranges {
            tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.from))
                .map_err(ConnectorError::kafka(format!(
                    "{}/{}",
                    r.topic, r.partition
                )))?;
        }
        consumer
            .assign(&tpl)
            .map_err(ConnectorError::kafka("assign partitions"))?;
        let mut queues = Vec::with_capacity(ranges.len());
        for r in &ranges {
            let q = consumer
                .split_partition_queue(&r.topic, r.partition)
                .ok_or_else(|| ConnectorError::Kafka {
                    what: format!("a queue of its own for {}/{}", r.topic, r.partition),
                    source: rdkafka::error::KafkaError::Subscription(
                        "the partition is not assigned".into(),
                    ),
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
        let starting = vec![
            Some(Starting {
                back: 0,
                since: Instant::now(),
            });
            ranges.len()
        ];
        Ok(KafkaReader {
            consumer,
            ranges,
            queues,
            starting,
            positions,
            side,
            checkpoints: None,
        })
    }

    /// Also writes each commit to the checkpoint topic (see [`crate::checkpoints`]).
    pub fn with_checkpoints(mut self, writer: CheckpointWriter) -> Self {
        self.checkpoints = Some(writer);
        self
    }
}

impl PartitionReader for KafkaReader {
    type Error = ConnectorError;

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
        if !range.tail && range.past_end(self.positions[idx]) {
            status.finished = true;
            return status;
        }
        while status.read < max {
            match self.queues[idx].poll(Duration::ZERO) {
                None => {
                    if let Some(st) = self.starting[idx]
                        && st.since.elapsed() >= START_PATIENCE
                    {
                        let expected = self.positions[idx];
                        rewind(
                            &self.consumer,
                            range,
                            expected,
                            &mut self.starting[idx],
                            None,
                        );
                    }
                    break;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    // At the end: nothing between the start offset and here was skipped.
                    self.starting[idx] = None;
                    status.at_end = true;
                    status.finished = range.until_caught_up;
                    break;
                }
                Some(Err(e)) => {
                    ReadFailed {
                        what: &format!("{}/{}", range.topic, range.partition),
                        error: &e,
                    }
                    .emit(self.consumer.context().metrics());
                    break;
                }
                Some(Ok(m)) => {
                    let offset = m.offset();
                    let expected = self.positions[idx];
                    match start_check(
                        &self.consumer,
                        range,
                        expected,
                        &mut self.starting[idx],
                        offset,
                    ) {
                        StartCheck::Take => {}
                        StartCheck::Skip => continue,
                        StartCheck::Rewound => break,
                    }
                    if offset < self.positions[idx] {
                        // Offsets only grow: this one was handled already (some
                        // brokers answer a fetch again after a rewind).
                        tracing::debug!(topic = %range.topic, partition = range.partition, offset, position = self.positions[idx], "dropping a message delivered twice");
                        continue;
                    }
                    let tail = range.past_end(offset);
                    if tail && !range.tail {
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
                        tail,
                    });
                    let fwd = Forward {
                        topic: &range.topic,
                        partition: range.partition,
                        offset,
                        key: m.key(),
                        payload,
                    };
                    match (&self.side, verdict) {
                        (_, Verdict::Accepted) | (None, _) => {}
                        _ if tail => {}
                        (Some(side), Verdict::Late { stamp, late }) => side.late(fwd, stamp, &late),
                        (Some(side), Verdict::Bad(bad)) => side.dead_letter(fwd, &bad),
                    }
                    self.positions[idx] = offset + 1;
                    if !range.tail && range.past_end(offset + 1) {
                        status.finished = true;
                        break;
                    }
                }
            }
        }
        status
    }

    fn partition_id(&self, idx: usize) -> u32 {
        self.ranges[idx].id
    }

    fn range_end(&self, idx: usize) -> Option<i64> {
        let r = self.ranges.get(idx)?;
        if r.tail { r.to } else { None }
    }

    fn resume_point(&self, idx: usize) -> Option<(i64, Option<i64>)> {
        self.ranges.get(idx).map(|r| (r.from, r.max_ts))
    }

    /// Delivers the dead-letter and late records first (they are results of
    /// the messages being committed), then commits each offset with the
    /// partition's largest event time before it as the commit's metadata.
    /// Once a side record was not delivered, no commit goes through: a
    /// restart reads its message again and forwards it anew.
    fn commit(&mut self, points: &[Checkpoint]) -> Result<(), ConnectorError> {
        let Some(side) = &self.side else {
            return Ok(());
        };
        side.flush(Duration::from_secs(10))?;
        if self.ranges.iter().any(|r| r.tail) {
            // A backfill moves no consumer group: only the side records are delivered.
            return Ok(());
        }
        let saved: Vec<(&str, i32, Saved)> = points
            .iter()
            .map(|c| {
                let r = &self.ranges[c.idx];
                let s = Saved {
                    offset: c.offset,
                    max_ts: c.max_ts,
                };
                (r.topic.as_str(), r.partition, s)
            })
            .collect();
        if let Some(writer) = &self.checkpoints {
            writer.save(&saved)?;
            footprint_dataflows::crashpoint::reached("commit.between");
        }
        tracing::debug!(?points, "committing source offsets");
        commit_group(&self.consumer, &saved)
    }

    /// Pauses every partition in librdkafka, which drops what it read ahead
    /// (`queued.min.messages` per partition and what its last fetch brought), and
    /// on release resumes each from the next message the reader has not
    /// taken. A resumed partition is checked like a starting one: its first
    /// message must be the one expected, or it is read from further back
    /// (brokers that answer a fetch from inside a record batch with the next
    /// batch would otherwise skip messages).
    fn hold(&mut self, held: bool) {
        let mut tpl = TopicPartitionList::new();
        for r in &self.ranges {
            tpl.add_partition(&r.topic, r.partition);
        }
        let done = if held {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = done {
            tracing::warn!(held, error = %e, "could not pause or resume the source partitions");
            return;
        }
        tracing::debug!(
            held,
            partitions = self.ranges.len(),
            "source partitions paused or resumed"
        );
        if !held {
            for st in &mut self.starting {
                let back = st.map_or(0, |s| s.back);
                *st = Some(Starting {
                    back,
                    since: Instant::now(),
                });
            }
        }
    }

    fn read_ahead(&self) -> Option<ReadAhead> {
        self.consumer.context().fetch_queues().get()
    }

    fn after_round(&mut self) {
        // Serve the main queue (errors, statistics); messages arrive on the partition queues.
        match self.consumer.poll(Duration::ZERO) {
            None => {}
            Some(Err(e)) => ReadFailed {
                what: "the source consumer",
                error: &e,
            }
            .emit(self.consumer.context().metrics()),
            Some(Ok(m)) => tracing::error!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                "a message arrived outside its partition queue and was not processed"
            ),
        }
    }

    fn close(&mut self) {
        if let Some(side) = &self.side
            && let Err(e) = side.flush(Duration::from_secs(30))
        {
            tracing::error!(error = %e, "dead-letter and late records were not all delivered: the source offsets of their messages are not committed, so a restart forwards them again");
        }
    }
}

/// Makes sure a partition's reading begins exactly at the offset expected
/// next (`expected`): its start offset, or where it stood when it was held
/// (see [`PartitionReader::hold`]).
///
/// Some Kafka-compatible brokers (tansu 0.6) answer a fetch from an offset
/// inside a record batch with the *next* batch, which would silently skip
/// the messages between, or with nothing at all when it is the last batch.
/// So when the first message is past the start offset, or nothing comes
/// for [`START_PATIENCE`], the partition is sought back (1,000 offsets, then
/// 4 times further each time, down to 0) and what comes before the start
/// offset is dropped. On Apache Kafka the first fetch already begins at the
/// start offset, and a real gap (compaction, transaction markers) only
/// costs one rewind.
fn start_check(
    consumer: &FootprintConsumer,
    r: &PartitionRange,
    expected: i64,
    starting: &mut Option<Starting>,
    offset: i64,
) -> StartCheck {
    let Some(st) = *starting else {
        return StartCheck::Take;
    };
    if offset < expected {
        return StartCheck::Skip;
    }
    if offset == expected || expected.saturating_sub(st.back) <= 0 {
        *starting = None;
        return StartCheck::Take;
    }
    if rewind(consumer, r, expected, starting, Some(offset)) {
        StartCheck::Rewound
    } else {
        StartCheck::Take
    }
}

/// Seeks a starting partition further back (see [`start_check`]). Returns
/// false when it could not, and the partition then reads on from where it is.
fn rewind(
    consumer: &FootprintConsumer,
    r: &PartitionRange,
    expected: i64,
    starting: &mut Option<Starting>,
    first: Option<i64>,
) -> bool {
    let Some(st) = *starting else {
        return false;
    };
    if expected.saturating_sub(st.back) <= 0 {
        // Already reading from the beginning: nothing is before it.
        *starting = None;
        return false;
    }
    let back = if st.back == 0 {
        1_000
    } else {
        st.back.saturating_mul(4)
    };
    let to = expected.saturating_sub(back).max(0);
    tracing::debug!(topic = %r.topic, partition = r.partition, expected, ?first, rewind_to = to, "the first fetch did not begin at the expected offset; reading back");
    match consumer.seek(
        &r.topic,
        r.partition,
        Offset::Offset(to),
        Duration::from_secs(10),
    ) {
        Ok(()) => {
            *starting = Some(Starting {
                back,
                since: Instant::now(),
            });
            true
        }
        Err(e) => {
            tracing::error!(topic = %r.topic, partition = r.partition, error = %e, expected, ?first, "could not seek back to the expected offset; messages between may be skipped");
            *starting = None;
            false
        }
    }
}
