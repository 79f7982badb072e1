//! The start policy: where each source partition starts reading, and what
//! is skipped (`docs/design.md#offsets-and-recovery`). [`crate::start`]
//! applies it to every source partition.
//!
//! [`start_at`] is the policy, a pure function of the partition's bounds and
//! its checkpoint:
//!
//! - `committed` resumes from the checkpoint. A checkpoint that is out of
//!   range follows a fixed rule: one **past the end** (the topic was
//!   recreated) restarts from the latest offset, and one **before the start**
//!   (retention deleted what it pointed at) restarts from the earliest. Both
//!   are reported as skipped ranges.
//! - `skip-to-latest` starts from the end, and reports the range between the
//!   checkpoint and the end as skipped, so that a bounded backfill can fill it
//!   in later.
//! - `earliest` and `latest` ignore checkpoints.
//!
//! When a partition starts somewhere no checkpoint describes, its watermark
//! is seeded from a look-back read ([`look_back_max_ts`]): the largest event
//! time among the messages just before the start, so that the messages read
//! next are stamped as a run that never stopped would have stamped them
//! (exact whenever the partition's running maximum was reached within the
//! look-back, which bounded disorder makes the normal case).
//!
//! Offsets here are true ones: [`true_end`] reads past a broker's reported
//! end offset when that lags the log (tansu 0.6 reports one past the base
//! offset of its last record batch).

use std::time::{Duration, Instant};

use footprint_dataflows::event::Event;
use footprint_dataflows::source::{PartitionReader, Verdict};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::ConnectorError;
use crate::client::KafkaSettings;
use crate::offsets::{Saved, SkipReason};
use crate::reader::{KafkaReader, PartitionRange};

/// How a run chooses where partitions start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// From each partition's checkpoint (the oldest retained offset where there is none).
    Committed,
    /// From the oldest retained offset.
    Earliest,
    /// From the end.
    Latest,
    /// From the end, reporting what lies between the checkpoint and the end as skipped.
    SkipToLatest,
}

/// Where the watermark of a partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    /// A known largest event time before the start (`None`: nothing before it).
    Known(Option<i64>),
    /// Unknown: seed it with [`look_back_max_ts`] over the messages before the start.
    LookBack,
}

/// A skipped range as [`start_at`] reports it: `[from, to)`, why, and the
/// largest event time before `from` when known.
pub type Gap = (i64, i64, SkipReason, Option<i64>);

/// Where one partition starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// First offset to read.
    pub offset: i64,
    /// Its watermark seed.
    pub seed: Seed,
    /// The ranges skipped by this decision.
    pub skipped: Vec<Gap>,
}

/// The policy: where a partition whose retained offsets are `[low, end)`
/// starts, given its checkpoint.
pub fn start_at(mode: StartMode, checkpoint: Option<Saved>, low: i64, end: i64) -> Start {
    let at = |offset, seed, skipped| Start {
        offset,
        seed,
        skipped,
    };
    let latest = |from: i64, from_max_ts, mut skipped: Vec<Gap>| {
        if end > from {
            skipped.push((from, end, SkipReason::SkipToLatest, from_max_ts));
        }
        at(end, Seed::LookBack, skipped)
    };
    match (mode, checkpoint) {
        (StartMode::Earliest, _) | (StartMode::Committed, None) => {
            at(low, Seed::Known(None), vec![])
        }
        (StartMode::Latest, _) => at(end, Seed::Known(None), vec![]),
        (StartMode::Committed | StartMode::SkipToLatest, Some(c)) if c.offset > end => {
            let recreated = if end > low {
                vec![(low, end, SkipReason::PastEnd, None)]
            } else {
                vec![]
            };
            at(end, Seed::LookBack, recreated)
        }
        (StartMode::Committed, Some(c)) if c.offset < low => at(
            low,
            Seed::Known(c.max_ts),
            vec![(c.offset, low, SkipReason::BeforeStart, c.max_ts)],
        ),
        (StartMode::SkipToLatest, Some(c)) if c.offset < low => {
            // What retention deleted is lost; the rest is skipped on request.
            let deleted = vec![(c.offset, low, SkipReason::BeforeStart, c.max_ts)];
            latest(low, None, deleted)
        }
        (StartMode::Committed, Some(c)) => at(c.offset, Seed::Known(c.max_ts), vec![]),
        (StartMode::SkipToLatest, c) => {
            let from = c.map_or(low, |c| c.offset);
            let from_max_ts = c.and_then(|c| c.max_ts);
            if end > from {
                latest(from, from_max_ts, vec![])
            } else {
                at(from, Seed::Known(from_max_ts), vec![])
            }
        }
    }
}

/// The partition's true end offset (one past its last message), given the
/// end the broker reports: reads from the message before it to the end,
/// because some brokers report one past the base offset of their last record
/// batch instead (tansu 0.6), and answer a fetch from inside that batch
/// with nothing.
pub fn true_end(
    settings: &KafkaSettings,
    topic: &str,
    partition: i32,
    reported: i64,
) -> Result<i64, ConnectorError> {
    let consumer = settings.consumer("footprint-positions", &[("auto.offset.reset", "latest")])?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset((reported - 1).max(0)))
        .map_err(ConnectorError::kafka(format!("{topic}/{partition}")))?;
    consumer
        .assign(&tpl)
        .map_err(ConnectorError::kafka(format!("assign {topic}/{partition}")))?;
    let mut end = reported;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => end = end.max(m.offset() + 1),
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(end),
            Some(Err(e)) => {
                return Err(ConnectorError::Kafka {
                    what: format!("reading the end of {topic}/{partition}"),
                    source: e,
                });
            }
            None if Instant::now() > deadline => {
                return Err(ConnectorError::Unreachable {
                    brokers: settings.brokers.clone(),
                    detail: format!("{topic}/{partition} could not be read to its end"),
                });
            }
            None => {}
        }
    }
}

/// The largest event time among the (up to) `count` messages before offset
/// `before` of a partition whose first retained offset is `low`; `None` when
/// none of them is a good event.
pub fn look_back_max_ts(
    settings: &KafkaSettings,
    topic: &str,
    partition: i32,
    low: i64,
    before: i64,
    count: i64,
) -> Result<Option<i64>, ConnectorError> {
    let from = before.saturating_sub(count).max(low);
    if from >= before {
        return Ok(None);
    }
    let range = PartitionRange {
        topic: topic.to_owned(),
        partition,
        id: 0,
        from,
        max_ts: None,
        to: Some(before),
        until_caught_up: true,
        tail: false,
    };
    let mut reader = KafkaReader::open_plain(settings, "footprint-positions", vec![range])?;
    let mut max_ts: Option<i64> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = reader.read(0, 10_000, &mut |m| {
            if let Ok(ev) = Event::decode(m.payload) {
                max_ts = Some(max_ts.map_or(ev.ts, |t| t.max(ev.ts)));
            }
            Verdict::Accepted
        });
        if status.finished {
            return Ok(max_ts);
        }
        if Instant::now() > deadline {
            return Err(ConnectorError::Unreachable {
                brokers: settings.brokers.clone(),
                detail: format!("{topic}/{partition}: offsets {from}..{before} could not be read"),
            });
        }
        if status.read == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(offset: i64) -> Option<Saved> {
        Some(Saved {
            offset,
            max_ts: Some(42),
        })
    }

    #[test]
    fn a_checkpoint_in_range_is_resumed_with_its_watermark() {
        let s = start_at(StartMode::Committed, saved(500), 100, 900);
        assert_eq!(
            s,
            Start {
                offset: 500,
                seed: Seed::Known(Some(42)),
                skipped: vec![]
            }
        );
        assert_eq!(start_at(StartMode::Committed, None, 100, 900).offset, 100);
    }

    #[test]
    fn a_checkpoint_past_the_end_restarts_from_the_latest_offset() {
        let s = start_at(StartMode::Committed, saved(5_000), 0, 1_200);
        assert_eq!(s.offset, 1_200);
        assert_eq!(s.seed, Seed::LookBack);
        assert_eq!(s.skipped, vec![(0, 1_200, SkipReason::PastEnd, None)]);
    }

    #[test]
    fn a_checkpoint_before_the_start_restarts_from_the_earliest_offset() {
        let s = start_at(StartMode::Committed, saved(100), 400, 900);
        assert_eq!(s.offset, 400);
        assert_eq!(
            s.seed,
            Seed::Known(Some(42)),
            "a lower bound of the true watermark"
        );
        assert_eq!(
            s.skipped,
            vec![(100, 400, SkipReason::BeforeStart, Some(42))]
        );
    }

    #[test]
    fn skip_to_latest_reports_the_range_it_skips() {
        let s = start_at(StartMode::SkipToLatest, saved(300), 0, 900);
        assert_eq!(s.offset, 900);
        assert_eq!(
            s.skipped,
            vec![(300, 900, SkipReason::SkipToLatest, Some(42))]
        );
        let none = start_at(StartMode::SkipToLatest, saved(900), 0, 900);
        assert!(none.skipped.is_empty(), "nothing to skip at the end");
        assert_eq!(none.seed, Seed::Known(Some(42)));
        let fresh = start_at(StartMode::SkipToLatest, None, 50, 900);
        assert_eq!(
            fresh.skipped,
            vec![(50, 900, SkipReason::SkipToLatest, None)]
        );
        let both = start_at(StartMode::SkipToLatest, saved(10), 50, 900);
        assert_eq!(
            both.skipped,
            vec![
                (10, 50, SkipReason::BeforeStart, Some(42)),
                (50, 900, SkipReason::SkipToLatest, None)
            ]
        );
    }

    #[test]
    fn earliest_and_latest_ignore_checkpoints() {
        assert_eq!(
            start_at(StartMode::Earliest, saved(500), 100, 900).offset,
            100
        );
        assert_eq!(
            start_at(StartMode::Latest, saved(500), 100, 900).offset,
            900
        );
    }
}
