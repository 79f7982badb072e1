//! Topics: pre-loading, live-producing and reading them back, and the
//! offsets a consumer group committed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use footprint::generate::{GenPlan, GenReport, produce};
use footprint_connectors::admin::Admin;
use footprint_connectors::client::KafkaSettings;
use footprint_dataflows::clickstream::{GenConfig, Generator};
use footprint_dataflows::control::RunControl;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::services::kafka;

/// Produces `count` generated messages to a new `topic` and returns the
/// payloads per partition, in offset order, as the broker holds them.
pub fn preload(topic: &str, cfg: &GenConfig, count: u64) -> Result<(Vec<Vec<Vec<u8>>>, GenReport)> {
    let plan = GenPlan {
        topic: topic.to_owned(),
        count: Some(count),
        rate: None,
        duration: None,
        progress: None,
    };
    let report = produce(
        &kafka(),
        cfg.clone(),
        &plan,
        &Arc::new(RunControl::default()),
    )?;
    let mut generator = Generator::new(cfg.clone());
    let mut parts = vec![Vec::new(); cfg.partitions as usize];
    for _ in 0..count {
        let e = generator.next_event();
        parts[e.partition as usize].push(e.payload);
    }
    Ok((parts, report))
}

/// One message read back from a topic.
#[derive(Debug, Clone)]
pub struct Read {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Payload.
    pub payload: Vec<u8>,
    /// Headers, by key.
    pub headers: BTreeMap<String, String>,
}

/// Reads every message of `topic` (all partitions, until each is caught up:
/// its partition end reported, and its true end offset, found then,
/// reached; a broker may report the end of a partition before it has
/// handed out its last batch).
pub fn read_all(topic: &str) -> Result<Vec<Read>> {
    read_all_from(&kafka(), topic)
}

/// [`read_all`] from the brokers of `settings`.
pub fn read_all_from(settings: &KafkaSettings, topic: &str) -> Result<Vec<Read>> {
    let parts = Admin::new(settings)?
        .partitions(topic)?
        .with_context(|| format!("topic {topic} does not exist"))?;
    let consumer = settings.consumer("footprint-tests", &[])?;
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut open: Vec<i32> = parts.clone();
    // The next offset to read, and the end once the partition said it was there.
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !open.is_empty() {
        if Instant::now() > deadline {
            bail!(
                "timed out reading {topic}; partitions not caught up: {open:?} (read up to {next:?}, ends {ends:?})"
            );
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                // The end the broker reports may lag (tansu 0.6 reports one
                // past the base offset of the last batch; seen here: 138 for
                // a true end of 139), and librdkafka signals the partition
                // end at the end reported: read on up to the true end.
                let (low, reported) = consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .with_context(|| format!("the end offset of {topic}/{p}"))?;
                let end = footprint_connectors::positions::true_end(settings, topic, p, reported)
                    .with_context(|| format!("the true end of {topic}/{p}"))?;
                ends.insert(p, end);
                if next.get(&p).copied().unwrap_or(low) >= end {
                    open.retain(|x| *x != p);
                }
            }
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                let p = m.partition();
                next.insert(p, m.offset() + 1);
                if ends.get(&p).is_some_and(|end| m.offset() + 1 >= *end) {
                    open.retain(|x| *x != p);
                }
                let mut headers = BTreeMap::new();
                if let Some(h) = m.headers() {
                    for i in 0..h.count() {
                        let hd = h.get(i);
                        headers.insert(
                            hd.key.to_owned(),
                            String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(Read {
                    partition: m.partition(),
                    offset: m.offset(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
        }
    }
    Ok(out)
}

/// Every message `topic` holds, per partition (`partitions` of them), in
/// offset order: the input a reference should be computed from, since the
/// pipeline reads what the broker holds, whatever was produced.
pub fn held_parts(
    settings: &KafkaSettings,
    topic: &str,
    partitions: usize,
) -> Result<Vec<Vec<Vec<u8>>>> {
    let mut held = read_all_from(settings, topic)?;
    held.sort_by_key(|m| (m.partition, m.offset));
    let mut parts = vec![Vec::new(); partitions];
    for m in held {
        let slot = parts
            .get_mut(usize::try_from(m.partition).unwrap_or(usize::MAX))
            .with_context(|| format!("{topic} has a partition {}", m.partition))?;
        slot.push(m.payload);
    }
    Ok(parts)
}

/// Every message of the first `count` generated by `cfg`, per partition, in order.
pub fn generated(cfg: &GenConfig, count: u64) -> Vec<Vec<Vec<u8>>> {
    let mut generator = Generator::new(cfg.clone());
    let mut parts = vec![Vec::new(); cfg.partitions as usize];
    for _ in 0..count {
        let e = generator.next_event();
        parts[e.partition as usize].push(e.payload);
    }
    parts
}

/// Produces messages `skip..skip + count` of the stream `cfg` generates to
/// `topic` (created if missing), so that a test can feed one stream in parts.
pub fn produce_slice(topic: &str, cfg: &GenConfig, skip: u64, count: u64) -> Result<()> {
    let settings = kafka();
    Admin::new(&settings)?.ensure_topic(topic, cfg.partitions as i32, 1)?;
    let producer = footprint_connectors::producer::EventProducer::new(&settings)?;
    let mut generator = Generator::new(cfg.clone());
    for i in 0..skip + count {
        let e = generator.next_event();
        if i >= skip {
            producer.send(topic, e.partition as i32, e.key.as_bytes(), &e.payload)?;
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}

/// Creates `topic` on the brokers of `settings` and starts producing the
/// first `count` messages that `cfg` generates to it, at about `rate`
/// messages a second, in a thread of its own: a live stream for drills.
/// Join the thread to wait for the end; it returns how many it produced.
pub fn produce_live(
    settings: &KafkaSettings,
    topic: &str,
    cfg: &GenConfig,
    count: u64,
    rate: u64,
) -> Result<std::thread::JoinHandle<Result<u64>>> {
    let never = Arc::new(std::sync::atomic::AtomicBool::new(false));
    produce_live_until(settings, topic, cfg, count..=count, rate, never)
}

/// [`produce_live`] of a stream that lasts as long as a drill needs it: at
/// least `count.start()` messages, then until `stop` is set, and at most
/// `count.end()`. The thread returns how many it produced: the first that
/// many of what `cfg` generates.
pub fn produce_live_until(
    settings: &KafkaSettings,
    topic: &str,
    cfg: &GenConfig,
    count: std::ops::RangeInclusive<u64>,
    rate: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<std::thread::JoinHandle<Result<u64>>> {
    let settings = settings.clone();
    Admin::new(&settings)?.ensure_topic(topic, cfg.partitions as i32, 1)?;
    let producer = footprint_connectors::producer::EventProducer::new(&settings)?;
    let (topic, cfg) = (topic.to_owned(), cfg.clone());
    Ok(std::thread::spawn(move || {
        let mut generator = Generator::new(cfg);
        let started = Instant::now();
        let mut produced = 0;
        let (least, most) = (*count.start(), *count.end());
        while produced < most
            && (produced < least || !stop.load(std::sync::atomic::Ordering::SeqCst))
        {
            let due = started + Duration::from_secs_f64(produced as f64 / rate.max(1) as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let e = generator.next_event();
            producer.send(&topic, e.partition as i32, e.key.as_bytes(), &e.payload)?;
            produced += 1;
        }
        producer.flush(Duration::from_secs(60))?;
        Ok(produced)
    }))
}

/// The sum of the offsets `group` has committed over `topic`'s partitions 0..`partitions`.
pub fn committed_total(group: &str, topic: &str, partitions: i32) -> Result<i64> {
    committed_total_at(&kafka(), group, topic, partitions)
}

/// [`committed_total`] on the brokers of `settings`.
pub fn committed_total_at(
    settings: &KafkaSettings,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<i64> {
    let pairs: Vec<(String, i32)> = (0..partitions).map(|p| (topic.to_owned(), p)).collect();
    Ok(Admin::new(settings)?
        .committed(group, &pairs)?
        .iter()
        .map(|c| c.map_or(0, |c| c.offset))
        .sum())
}

/// A generated stream produced to a topic in stages that a test decides:
/// the next `n` messages at a time, each stage acknowledged by the broker
/// before `produce` returns. The test then knows exactly what a worker can
/// have read.
pub struct StagedStream {
    producer: footprint_connectors::producer::EventProducer,
    generator: Generator,
    topic: String,
    produced: u64,
}

impl StagedStream {
    /// The stream `cfg` generates, to `topic` (created if missing) on the
    /// brokers of `settings`.
    pub fn new(settings: &KafkaSettings, topic: &str, cfg: &GenConfig) -> Result<Self> {
        Admin::new(settings)?.ensure_topic(topic, cfg.partitions as i32, 1)?;
        Ok(StagedStream {
            producer: footprint_connectors::producer::EventProducer::new(settings)?,
            generator: Generator::new(cfg.clone()),
            topic: topic.to_owned(),
            produced: 0,
        })
    }

    /// Produces the next `n` messages and waits for the broker's acknowledgements.
    pub fn produce(&mut self, n: u64) -> Result<()> {
        for _ in 0..n {
            let e = self.generator.next_event();
            self.producer.send(
                &self.topic,
                e.partition as i32,
                e.key.as_bytes(),
                &e.payload,
            )?;
        }
        self.producer.flush(Duration::from_secs(60))?;
        self.produced += n;
        Ok(())
    }

    /// Messages produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }
}
