//! `footprint gen`: produce a deterministic clickstream to a topic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use footprint_connectors::ConnectorError;
use footprint_connectors::admin::Admin;
use footprint_connectors::client::KafkaSettings;
use footprint_connectors::producer::EventProducer;
use footprint_dataflows::clickstream::{GenConfig, Generator, Kind};
use footprint_dataflows::control::RunControl;

/// How much to produce, and how fast.
#[derive(Debug, Clone)]
pub struct GenPlan {
    /// Target topic (created with `partitions` partitions if missing).
    pub topic: String,
    /// Stop after this many messages (`None`: until stopped or `duration`).
    pub count: Option<u64>,
    /// Messages per second of wall time; `None`: as fast as possible, with
    /// event time following the generator's own clock (deterministic).
    /// With a rate, event time follows the wall clock.
    pub rate: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Log progress every this often.
    pub progress: Option<Duration>,
}

/// What was produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenReport {
    /// Messages produced.
    pub messages: u64,
    /// Good events among them.
    pub good: u64,
    /// Events made late.
    pub late: u64,
    /// Bad messages.
    pub bad: u64,
    /// Random garbage (usually bad input, sometimes still a valid event).
    pub garbage: u64,
}

/// Produces a clickstream; returns once `plan` is done or `control` asks to stop.
pub fn produce(
    settings: &KafkaSettings,
    cfg: GenConfig,
    plan: &GenPlan,
    control: &Arc<RunControl>,
) -> Result<GenReport> {
    let admin = Admin::new(settings)?;
    let partitions = cfg.partitions as i32;
    if admin.ensure_topic(&plan.topic, partitions, 1)? {
        tracing::info!(topic = %plan.topic, partitions, "created topic");
    }
    let existing = admin.partitions(&plan.topic)?.map_or(0, |p| p.len());
    anyhow::ensure!(
        existing >= cfg.partitions as usize,
        "topic {} has {existing} partitions, fewer than the {} asked for",
        plan.topic,
        cfg.partitions
    );
    let producer = EventProducer::new(settings)?;
    let mut generator = Generator::new(cfg);
    let mut report = GenReport::default();
    let started = Instant::now();
    let mut last_log = Instant::now();
    loop {
        if plan.count.is_some_and(|c| report.messages >= c)
            || plan.duration.is_some_and(|d| started.elapsed() >= d)
            || control.stop_requested()
        {
            break;
        }
        let event = match plan.rate {
            Some(rate) => {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                if report.messages >= due {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                generator.next_at(now_ms)
            }
            None => generator.next_event(),
        };
        producer
            .send(
                &plan.topic,
                event.partition as i32,
                event.key.as_bytes(),
                &event.payload,
            )
            .with_context(|| format!("producing to {}", plan.topic))?;
        report.messages += 1;
        match event.kind {
            Kind::Good => report.good += 1,
            Kind::Late => {
                report.good += 1;
                report.late += 1;
            }
            Kind::Bad(_) => report.bad += 1,
            Kind::Garbage => report.garbage += 1,
        }
        if let Some(every) = plan.progress
            && last_log.elapsed() >= every
        {
            tracing::info!(produced = report.messages, topic = %plan.topic, per_sec = (report.messages as f64 / started.elapsed().as_secs_f64()).round(), "generating");
            last_log = Instant::now();
        }
    }
    wait_acknowledged(&producer, &plan.topic, control)?;
    Ok(report)
}

/// Waits until the broker has acknowledged every message: however long it
/// takes (the producer keeps them; a broker that is down is waited for),
/// saying so every 10 s, until `control` asks to stop.
fn wait_acknowledged(
    producer: &EventProducer,
    topic: &str,
    control: &Arc<RunControl>,
) -> Result<()> {
    let started = Instant::now();
    loop {
        match producer.flush(Duration::from_secs(10)) {
            Ok(()) => return Ok(()),
            Err(ConnectorError::Unacknowledged { left, .. }) if !control.stop_requested() => {
                tracing::warn!(
                    topic,
                    waiting = left,
                    seconds = started.elapsed().as_secs(),
                    "waiting for the broker to acknowledge"
                );
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("messages to {topic} were not all written")));
            }
        }
    }
}
