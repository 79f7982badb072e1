//! The retry replay job: applies the retry topic's records to their stores.
//!
//! Records are applied through the same sinks, so the version rule fences
//! them: replaying an old record over a newer value changes nothing. Per
//! partition, records are applied in offset order and the consumer offset is
//! committed only past records that were applied. A record whose sink is
//! degraded, or whose store is failing, stops its partition until that
//! changes: the job waits (checking every `poll_interval`) and neither drops
//! nor spins; the later records of that partition, whatever their sink, wait
//! behind it. A record that can never be applied (undecodable, or refused by
//! its store for good) goes to `<retry topic>.dlq` with the reason, and only
//! then is it committed past. With `once`, the job exits when every partition is caught up
//! and everything read has been applied.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use footprint_dataflows::Output;
use footprint_sinks::Sink;
use footprint_sinks::util::switch::{Mode, Switches};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::ConnectorError;
use crate::admin;
use crate::client::{FootprintConsumer, KafkaSettings};
use crate::retry::RetryRecord;

/// The replay job's consumer group: its commits mark what was applied.
pub const REPLAY_GROUP: &str = "footprint-replay";

/// Replay settings.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The retry topic.
    pub topic: String,
    /// Consumer group whose committed offsets mark what was applied.
    pub group_id: String,
    /// Exit once caught up.
    pub once: bool,
    /// How often a waiting job checks the switch and the store again.
    pub poll_interval: Duration,
    /// Log progress this often.
    pub progress: Option<Duration>,
    /// Most records held in memory while waiting.
    pub max_pending: usize,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            topic: crate::retry::RETRY_TOPIC.into(),
            group_id: REPLAY_GROUP.into(),
            once: false,
            poll_interval: Duration::from_millis(200),
            progress: Some(Duration::from_secs(5)),
            max_pending: 50_000,
        }
    }
}

/// What a replay run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records applied to their store.
    pub applied: u64,
    /// Records that could not be decoded (sent to the dead-letter topic).
    pub undecodable: u64,
    /// Records their store refuses for good (sent to the dead-letter topic).
    pub rejected: u64,
}

/// A record read from the retry topic, waiting its turn in its partition.
enum Entry {
    /// To apply to its store.
    Apply(RetryRecord),
    /// To forward to the dead-letter topic.
    DeadLetter { payload: Vec<u8>, reason: String },
}

/// The retry topic's dead-letter topic: records that can never be applied.
struct DeadLetters {
    producer: rdkafka::producer::FutureProducer,
    topic: String,
}

impl DeadLetters {
    fn new(settings: &KafkaSettings, topic: &str) -> Result<Self, ConnectorError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ConnectorError::Request(e.to_string()))?;
        runtime.block_on(crate::admin::ensure_topic(settings, topic, 1, 1))?;
        let producer = settings
            .client_config(&[
                ("enable.idempotence", "true"),
                ("message.timeout.ms", "30000"),
            ])
            .create()
            .map_err(|e| ConnectorError::Config(e.to_string()))?;
        Ok(DeadLetters {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// Forwards a record and waits until Kafka has it.
    fn send(&self, payload: &[u8], reason: &str, source: &str) -> Result<(), ConnectorError> {
        use rdkafka::message::{Header, OwnedHeaders};
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "footprint.reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "footprint.source",
                value: Some(source),
            });
        let record = rdkafka::producer::FutureRecord::<(), [u8]>::to(&self.topic)
            .payload(payload)
            .headers(headers);
        let delivery = self
            .producer
            .send_result(record)
            .map_err(|(e, _)| ConnectorError::Request(format!("dead-letter {source}: {e}")))?;
        match futures::executor::block_on(delivery) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(ConnectorError::Request(format!(
                "dead-letter {source}: {e}"
            ))),
            Err(_) => Err(ConnectorError::Request(format!(
                "dead-letter {source}: delivery cancelled"
            ))),
        }
    }
}

/// Records of `topic` not yet read by `consumer`, by the brokers' end offsets.
fn unread(consumer: &FootprintConsumer, topic: &str, next: &BTreeMap<i32, i64>) -> u64 {
    let positions = consumer.position().ok();
    next.iter()
        .map(|(p, n)| {
            let pos = match positions
                .as_ref()
                .and_then(|t| t.find_partition(topic, *p))
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => o.max(*n),
                _ => *n,
            };
            let high = consumer
                .fetch_watermarks(topic, *p, Duration::from_secs(5))
                .map_or(pos, |(_, h)| h);
            (high - pos).max(0) as u64
        })
        .sum()
}

/// Runs the replay job until `stop` returns true or, with `once`, until caught up.
pub fn replay(
    settings: &KafkaSettings,
    opts: &ReplayOptions,
    mut sinks: HashMap<String, Box<dyn Sink>>,
    switches: Arc<Switches>,
    stop: &dyn Fn() -> bool,
) -> Result<ReplayReport, ConnectorError> {
    let partitions = admin::partitions(settings, &opts.topic)?
        .ok_or_else(|| ConnectorError::MissingTopic(opts.topic.clone()))?;
    let consumer = settings.consumer(&opts.group_id, &[("auto.offset.reset", "earliest")])?;
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(&opts.topic, *p, Offset::Stored)
            .map_err(|e| ConnectorError::Request(e.to_string()))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| ConnectorError::Request(format!("assign {}: {e}", opts.topic)))?;

    let mut pending: BTreeMap<i32, VecDeque<(i64, Entry)>> = BTreeMap::new();
    let mut one_at_a_time: BTreeMap<i32, bool> = BTreeMap::new();
    let dead_letters = DeadLetters::new(
        settings,
        &format!("{}{}", opts.topic, crate::side::DLQ_SUFFIX),
    )?;
    let mut at_end: BTreeMap<i32, bool> = partitions.iter().map(|p| (*p, false)).collect();
    let mut next: BTreeMap<i32, i64> = partitions.iter().map(|p| (*p, 0)).collect();
    let mut unhealthy: HashMap<String, (Instant, Duration)> = HashMap::new();
    let mut report = ReplayReport::default();
    let mut last_log = Instant::now();
    let mut waiting_logged: HashMap<String, bool> = HashMap::new();
    loop {
        if stop() {
            return Ok(report);
        }
        let mut progressed = false;
        // Read while there is room.
        let held: usize = pending.values().map(VecDeque::len).sum();
        if held < opts.max_pending {
            let deadline = Instant::now() + opts.poll_interval;
            while Instant::now() < deadline
                && pending.values().map(VecDeque::len).sum::<usize>() < opts.max_pending
            {
                match consumer.poll(Duration::from_millis(20)) {
                    None => {
                        if at_end.values().all(|e| *e) {
                            break;
                        }
                    }
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        at_end.insert(p, true);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(topic = %opts.topic, error = %e, "error reading the retry topic")
                    }
                    Some(Ok(m)) => {
                        progressed = true;
                        at_end.insert(m.partition(), false);
                        next.insert(m.partition(), m.offset() + 1);
                        let payload = m.payload().unwrap_or_default();
                        let entry = match RetryRecord::decode(payload) {
                            Ok(r) => Entry::Apply(r),
                            Err(e) => {
                                report.undecodable += 1;
                                tracing::error!(partition = m.partition(), offset = m.offset(), error = %e, "an undecodable retry record goes to the dead-letter topic");
                                Entry::DeadLetter {
                                    payload: payload.to_vec(),
                                    reason: e.to_string(),
                                }
                            }
                        };
                        // In offset order: it is dealt with (and committed past) only once
                        // every record before it is.
                        pending
                            .entry(m.partition())
                            .or_default()
                            .push_back((m.offset(), entry));
                    }
                }
            }
        }
        // Apply, per partition, in offset order, as far as possible.
        let now = Instant::now();
        for (partition, queue) in pending.iter_mut() {
            let mut committed_to = None;
            while let Some((offset, front)) = queue.front() {
                let front = match front {
                    Entry::DeadLetter { payload, reason } => {
                        dead_letters.send(
                            payload,
                            reason,
                            &format!("{}/{partition}/{offset}", opts.topic),
                        )?;
                        committed_to = Some(offset + 1);
                        queue.pop_front();
                        progressed = true;
                        continue;
                    }
                    Entry::Apply(r) => r,
                };
                let sink_name = front.sink.clone();
                let blocked = match switches.get(&sink_name) {
                    Some(Mode::Degraded) => Some("switch degraded"),
                    None => Some("no such sink configured"),
                    Some(Mode::Auto)
                        if unhealthy
                            .get(&sink_name)
                            .is_some_and(|(at, back)| now < *at + *back) =>
                    {
                        Some("store unavailable")
                    }
                    Some(Mode::Auto) if !sinks.contains_key(&sink_name) => {
                        Some("no such sink configured")
                    }
                    Some(Mode::Auto) => None,
                };
                if let Some(why) = blocked {
                    if !waiting_logged
                        .insert(sink_name.clone(), true)
                        .unwrap_or(false)
                    {
                        tracing::info!(sink = %sink_name, reason = why, "replay is waiting; later records of this partition wait too");
                    }
                    break;
                }
                // A run of consecutive records for the same sink goes in one write
                // (one at a time after a rejection, to find the rejected record).
                let single = one_at_a_time.get(partition).copied().unwrap_or(false);
                let run: Vec<Output> = queue
                    .iter()
                    .map_while(|(_, e)| match e {
                        Entry::Apply(r) if r.sink == sink_name => Some(r.row.clone()),
                        _ => None,
                    })
                    .take(if single { 1 } else { 500 })
                    .collect();
                let n = run.len();
                let Some(sink) = sinks.get_mut(&sink_name) else {
                    break;
                };
                match sink.write(&run).and_then(|()| sink.flush()) {
                    Ok(()) => {
                        unhealthy.remove(&sink_name);
                        waiting_logged.remove(&sink_name);
                        one_at_a_time.remove(partition);
                        let mut last = 0;
                        for _ in 0..n {
                            if let Some((off, _)) = queue.pop_front() {
                                last = off;
                            }
                        }
                        report.applied += n as u64;
                        progressed = true;
                        committed_to = Some(last + 1);
                    }
                    Err(e) if !e.is_retryable() && n > 1 => {
                        // Find the record the store refuses: retry this run one by one.
                        one_at_a_time.insert(*partition, true);
                    }
                    Err(e) if !e.is_retryable() => {
                        // The store will never take this record: keep it, in the dead-letter topic.
                        report.rejected += 1;
                        let record = front.encode().1;
                        tracing::error!(sink = %sink_name, identity = %front.identity, error = %e, "the store rejects a retry record; it goes to the dead-letter topic");
                        dead_letters.send(
                            &record,
                            &e.to_string(),
                            &format!("{}/{partition}/{offset}", opts.topic),
                        )?;
                        committed_to = Some(offset + 1);
                        queue.pop_front();
                        one_at_a_time.remove(partition);
                        progressed = true;
                    }
                    Err(e) => {
                        let back = unhealthy
                            .get(&sink_name)
                            .map_or(Duration::from_millis(500), |(_, b)| {
                                (*b * 2).min(Duration::from_secs(10))
                            });
                        tracing::warn!(sink = %sink_name, error = %e, retry_in_ms = back.as_millis() as u64, "replay could not apply records; will retry");
                        unhealthy.insert(sink_name.clone(), (Instant::now(), back));
                        break;
                    }
                }
            }
            if let Some(offset) = committed_to {
                commit(&consumer, &opts.topic, *partition, offset)?;
            }
        }
        let held: usize = pending.values().map(VecDeque::len).sum();
        if let Some(every) = opts.progress
            && last_log.elapsed() >= every
        {
            let caught_up = at_end.values().filter(|e| **e).count();
            let backlog = held as u64 + unread(&consumer, &opts.topic, &next);
            tracing::info!(
                applied = report.applied,
                pending = held,
                backlog,
                partitions_caught_up = caught_up,
                partitions = at_end.len(),
                "replay progress"
            );
            last_log = Instant::now();
        }
        if opts.once && held == 0 && at_end.values().all(|e| *e) {
            return Ok(report);
        }
        if !progressed {
            // Nothing new and nothing applicable: wait instead of spinning.
            std::thread::sleep(opts.poll_interval);
        }
    }
}

fn commit(
    consumer: &FootprintConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(), ConnectorError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .map_err(|e| ConnectorError::Request(e.to_string()))?;
    consumer
        .commit(&tpl, CommitMode::Sync)
        .map_err(|e| ConnectorError::Request(format!("commit {topic}/{partition}@{offset}: {e}")))
}
