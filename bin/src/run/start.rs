//! Where a run reads: one [`PartitionRange`] per source partition, from the
//! checkpoints and the start policy of [`footprint_connectors::positions`],
//! or from an explicit backfill range.
//!
//! Starting somewhere else than the checkpoint (skip to latest, an
//! out-of-range checkpoint) is logged with the offsets skipped, recorded in
//! the metrics (and so in `/status`), kept in the checkpoint topic, and
//! committed at once, so a crash before the first regular commit does not go
//! back. A checkpoint out of range is logged at ERROR: data was lost or will
//! not be read unless an operator backfills it.

use anyhow::{Context, Result, bail};
use footprint_connectors::admin;
use footprint_connectors::checkpoints::{self, Saved};
use footprint_connectors::client::KafkaSettings;
use footprint_connectors::positions::{self, Seed, SkipReason, Skipped, StartMode};
use footprint_connectors::reader::PartitionRange;
use footprint_dataflows::metrics::{Metrics, SkippedRange};

use crate::UsageError;
use crate::config::{Config, Start};

/// How many messages before a start offset are read to rebuild the
/// partition's watermark when no checkpoint describes that offset.
pub const LOOK_BACK: i64 = 10_000;

/// One partition of a bounded backfill: `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillRange {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset.
    pub from: i64,
    /// Offset to stop before.
    pub to: i64,
}

impl BackfillRange {
    /// Pairs `--from` and `--to` lists (`P:OFFSET` with one source topic,
    /// `TOPIC:P:OFFSET` otherwise, comma-separated). Both must name the same
    /// partitions, and each range must not end before it starts.
    pub fn parse(from: &str, to: &str, topics: &[String]) -> Result<Vec<Self>, UsageError> {
        let from = parse_points("--from", from, topics)?;
        let to = parse_points("--to", to, topics)?;
        let mut out = Vec::new();
        for (topic, partition, start) in &from {
            let Some((_, _, end)) = to.iter().find(|(t, p, _)| t == topic && p == partition) else {
                return Err(UsageError(format!(
                    "--from names {topic}:{partition}, but --to does not"
                )));
            };
            if end < start {
                return Err(UsageError(format!(
                    "{topic}:{partition}: --to {end} is before --from {start}"
                )));
            }
            out.push(BackfillRange {
                topic: topic.clone(),
                partition: *partition,
                from: *start,
                to: *end,
            });
        }
        if let Some((t, p, _)) = to
            .iter()
            .find(|(t, p, _)| !out.iter().any(|r| &r.topic == t && r.partition == *p))
        {
            return Err(UsageError(format!(
                "--to names {t}:{p}, but --from does not"
            )));
        }
        Ok(out)
    }
}

fn parse_points(
    flag: &str,
    list: &str,
    topics: &[String],
) -> Result<Vec<(String, i32, i64)>, UsageError> {
    let mut out: Vec<(String, i32, i64)> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parts: Vec<&str> = item.split(':').collect();
        let (topic, partition, offset) = match parts.as_slice() {
            [p, o] if topics.len() == 1 => (topics[0].clone(), *p, *o),
            [p, o] => {
                return Err(UsageError(format!(
                    "{flag} {item}: with several source topics, write TOPIC:{p}:{o}"
                )));
            }
            [t, p, o] => {
                if !topics.iter().any(|x| x == t) {
                    return Err(UsageError(format!(
                        "{flag} {item}: `{t}` is not a source topic ({})",
                        topics.join(", ")
                    )));
                }
                ((*t).to_owned(), *p, *o)
            }
            _ => {
                return Err(UsageError(format!(
                    "{flag} {item}: expected PARTITION:OFFSET or TOPIC:PARTITION:OFFSET"
                )));
            }
        };
        let partition: i32 = partition.parse().map_err(|_| {
            UsageError(format!(
                "{flag} {item}: `{partition}` is not a partition number"
            ))
        })?;
        let offset: i64 = offset
            .parse()
            .ok()
            .filter(|o: &i64| *o >= 0)
            .ok_or_else(|| UsageError(format!("{flag} {item}: `{offset}` is not an offset")))?;
        if out.iter().any(|(t, p, _)| *t == topic && *p == partition) {
            return Err(UsageError(format!(
                "{flag} names {topic}:{partition} twice"
            )));
        }
        out.push((topic, partition, offset));
    }
    if out.is_empty() {
        return Err(UsageError(format!("{flag} lists no partition")));
    }
    Ok(out)
}

/// The ranges a run reads.
pub(super) struct Plan {
    /// One per partition read.
    pub ranges: Vec<PartitionRange>,
}

/// The start mode the config and the command line ask for.
pub(super) fn mode(cfg: &Config, skip_to_latest: bool) -> StartMode {
    if skip_to_latest {
        return StartMode::SkipToLatest;
    }
    match cfg.source.start {
        Start::Committed => StartMode::Committed,
        Start::Earliest => StartMode::Earliest,
        Start::Latest => StartMode::Latest,
    }
}

/// Plans a streaming (or `until_end`) run over every source partition.
pub(super) fn plan(
    cfg: &Config,
    mode: StartMode,
    until_end: bool,
    metrics: &Metrics,
) -> Result<Plan> {
    let settings = cfg.kafka();
    let group = &cfg.source.group_id;
    let uses_checkpoints = matches!(mode, StartMode::Committed | StartMode::SkipToLatest);
    let saved = if uses_checkpoints {
        checkpoints::load(&settings, &cfg.source.checkpoint_topic, group)
            .context("reading checkpoints")?
    } else {
        Default::default()
    };
    let mut ranges = Vec::new();
    let mut moved: Vec<(String, i32, Saved)> = Vec::new();
    let mut skipped: Vec<Skipped> = Vec::new();
    for topic in &cfg.source.topics {
        let parts = admin::partitions(&settings, topic)?
            .ok_or_else(|| footprint_connectors::ConnectorError::MissingTopic(topic.clone()))?;
        let pairs: Vec<(String, i32)> = parts.iter().map(|p| (topic.clone(), *p)).collect();
        let committed = if uses_checkpoints {
            admin::committed(&settings, group, &pairs)?
        } else {
            vec![None; pairs.len()]
        };
        for (p, committed) in parts.into_iter().zip(committed) {
            let (low, high) = admin::watermarks(&settings, topic, p)?;
            // The checkpoint topic's copy keeps offset and event time together.
            let checkpoint = saved
                .get(&(topic.clone(), p))
                .copied()
                .or(committed.map(|c| Saved {
                    offset: c.offset,
                    max_ts: c.max_ts,
                }));
            let needs_true_end =
                mode == StartMode::SkipToLatest || checkpoint.is_some_and(|c| c.offset > high);
            let end = if needs_true_end {
                positions::true_end(&settings, topic, p, high)?
            } else {
                high
            };
            let start = positions::start_at(mode, checkpoint, low, end);
            let max_ts = match start.seed {
                Seed::Known(ts) => ts,
                Seed::LookBack => {
                    positions::look_back_max_ts(&settings, topic, p, low, start.offset, LOOK_BACK)?
                }
            };
            if let Some(c) = checkpoint
                && start.skipped.is_empty()
                && mode == StartMode::Committed
            {
                if c.max_ts.is_none() {
                    tracing::warn!(topic = %topic, partition = p, offset = c.offset, "the committed offset carries no watermark; the partition's watermark restarts from the messages read again");
                }
                tracing::info!(topic = %topic, partition = p, offset = c.offset, max_ts = ?c.max_ts, "resuming from the checkpoint");
            }
            for (from, to, reason, from_max_ts) in &start.skipped {
                let s = Skipped {
                    topic: topic.clone(),
                    partition: p,
                    from: *from,
                    to: *to,
                    from_max_ts: *from_max_ts,
                    reason: *reason,
                };
                report_skip(&s, checkpoint, start.offset);
                skipped.push(s);
            }
            if !start.skipped.is_empty() {
                moved.push((
                    topic.clone(),
                    p,
                    Saved {
                        offset: start.offset,
                        max_ts,
                    },
                ));
            }
            ranges.push(PartitionRange {
                topic: topic.clone(),
                partition: p,
                id: ranges.len() as u32,
                from: start.offset,
                max_ts,
                to: None,
                until_caught_up: until_end,
                tail: false,
            });
        }
    }
    if !moved.is_empty() {
        let points: Vec<(&str, i32, Saved)> =
            moved.iter().map(|(t, p, s)| (t.as_str(), *p, *s)).collect();
        checkpoints::save_now(&settings, &cfg.source.checkpoint_topic, group, &points)
            .context("recording the new start offsets")?;
        let writer =
            checkpoints::CheckpointWriter::new(&settings, &cfg.source.checkpoint_topic, group)?;
        for s in &skipped {
            writer
                .save_skipped(s)
                .context("recording a skipped range")?;
        }
    }
    record(metrics, &skipped);
    if skipped.iter().any(|s| s.reason != SkipReason::BeforeStart) {
        tracing::warn!(
            command = %backfill_command(&skipped, cfg.source.topics.len() > 1),
            "to fill the skipped ranges in later, run a backfill"
        );
    }
    Ok(Plan { ranges })
}

fn report_skip(s: &Skipped, checkpoint: Option<Saved>, start: i64) {
    let committed = checkpoint.map(|c| c.offset);
    match s.reason {
        SkipReason::SkipToLatest => tracing::warn!(
            topic = %s.topic, partition = s.partition, from = s.from, to = s.to, skipped = s.len(),
            "skipping to the latest offset, as asked: the range is not read now"
        ),
        SkipReason::PastEnd => tracing::error!(
            topic = %s.topic, partition = s.partition, ?committed, end = start, skipped = s.len(),
            "the committed offset is past the partition's end (was the topic recreated?): restarting from the latest offset; the offsets before it are not read"
        ),
        SkipReason::BeforeStart => tracing::error!(
            topic = %s.topic, partition = s.partition, ?committed, first = start, skipped = s.len(),
            "the committed offset is before the partition's first offset (deleted by retention?): restarting from the earliest offset; the deleted offsets are lost"
        ),
    }
}

/// Adds the skipped ranges to the metrics (counted by reason, shown in `/status`).
fn record(metrics: &Metrics, skipped: &[Skipped]) {
    if let Ok(mut m) = metrics.skipped.lock() {
        m.extend(skipped.iter().map(|s| SkippedRange {
            topic: s.topic.clone(),
            partition: s.partition,
            from: s.from,
            to: s.to,
            reason: s.reason.as_str().to_owned(),
        }));
    }
}

/// The `footprint worker --from … --to …` that reads the fillable skipped ranges.
fn backfill_command(skipped: &[Skipped], name_topics: bool) -> String {
    let spec = |s: &Skipped, offset: i64| {
        if name_topics {
            format!("{}:{}:{offset}", s.topic, s.partition)
        } else {
            format!("{}:{offset}", s.partition)
        }
    };
    let fillable: Vec<&Skipped> = skipped
        .iter()
        .filter(|s| s.reason != SkipReason::BeforeStart)
        .collect();
    let from: Vec<String> = fillable.iter().map(|s| spec(s, s.from)).collect();
    let to: Vec<String> = fillable.iter().map(|s| spec(s, s.to)).collect();
    format!(
        "footprint worker --from {} --to {}",
        from.join(","),
        to.join(",")
    )
}

/// Plans a bounded backfill over `ranges`. Each partition's watermark
/// starts from what the checkpoint topic knows about its first offset (a
/// recorded skipped range or checkpoint starting there), from nothing at
/// the partition's first offset, or else from a look-back read.
pub(super) fn plan_backfill(cfg: &Config, ranges: &[BackfillRange]) -> Result<Plan> {
    let settings = cfg.kafka();
    let loaded = checkpoints::load_all(
        &settings,
        &cfg.source.checkpoint_topic,
        &cfg.source.group_id,
    )
    .context("reading checkpoints")?;
    let ids = source_ids(&settings, cfg)?;
    let mut out = Vec::new();
    for r in ranges {
        let Some(id) = ids
            .iter()
            .position(|(t, p)| *t == r.topic && *p == r.partition)
        else {
            bail!(
                "{}/{} is not a partition of the source topics",
                r.topic,
                r.partition
            );
        };
        let (low, high) = admin::watermarks(&settings, &r.topic, r.partition)?;
        let end = positions::true_end(&settings, &r.topic, r.partition, high)?;
        let from = if r.from < low {
            tracing::warn!(topic = %r.topic, partition = r.partition, from = r.from, first = low, "the range starts before the partition's first offset: the offsets before it are gone");
            low
        } else {
            r.from
        };
        if r.to > end {
            tracing::warn!(topic = %r.topic, partition = r.partition, to = r.to, end, "the range ends past the partition's end: it is read to the end");
        }
        let recorded = loaded
            .skipped
            .iter()
            .rev()
            .find(|s| s.topic == r.topic && s.partition == r.partition && s.from == from)
            .map(|s| s.from_max_ts)
            .or_else(|| {
                loaded
                    .points
                    .get(&(r.topic.clone(), r.partition))
                    .filter(|c| c.offset == from)
                    .map(|c| c.max_ts)
            });
        let max_ts = match recorded {
            Some(ts) => ts,
            None if from <= low => {
                if low > 0 {
                    tracing::warn!(topic = %r.topic, partition = r.partition, from, "the messages before the range are gone: its watermark starts from its own first messages");
                }
                None
            }
            None => {
                tracing::info!(topic = %r.topic, partition = r.partition, from, look_back = LOOK_BACK, "no checkpoint starts at this offset: rebuilding the watermark from the messages before it");
                positions::look_back_max_ts(&settings, &r.topic, r.partition, low, from, LOOK_BACK)?
            }
        };
        tracing::info!(topic = %r.topic, partition = r.partition, from, to = r.to, max_ts = ?max_ts, "backfill range");
        out.push(PartitionRange {
            topic: r.topic.clone(),
            partition: r.partition,
            id: id as u32,
            from,
            max_ts,
            to: Some(r.to.max(from)),
            until_caught_up: true,
            tail: true,
        });
    }
    Ok(Plan { ranges: out })
}

/// Every source partition in id order (topics in config order).
fn source_ids(settings: &KafkaSettings, cfg: &Config) -> Result<Vec<(String, i32)>> {
    let mut ids = Vec::new();
    for topic in &cfg.source.topics {
        let parts = admin::partitions(settings, topic)?
            .ok_or_else(|| footprint_connectors::ConnectorError::MissingTopic(topic.clone()))?;
        ids.extend(parts.into_iter().map(|p| (topic.clone(), p)));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one() -> Vec<String> {
        vec!["events".into()]
    }

    #[test]
    fn backfill_ranges_pair_up_by_partition() {
        let r = BackfillRange::parse("0:100,1:5", "1:50, 0:300", &one()).expect("valid");
        assert_eq!(
            r,
            vec![
                BackfillRange {
                    topic: "events".into(),
                    partition: 0,
                    from: 100,
                    to: 300
                },
                BackfillRange {
                    topic: "events".into(),
                    partition: 1,
                    from: 5,
                    to: 50
                },
            ]
        );
        let two = vec!["a".to_owned(), "b".to_owned()];
        let r = BackfillRange::parse("b:2:7", "b:2:9", &two).expect("valid");
        assert_eq!(r[0].topic, "b");
    }

    #[test]
    fn bad_backfill_ranges_say_what_is_wrong() {
        let err = |from: &str, to: &str, topics: &[String]| {
            BackfillRange::parse(from, to, topics)
                .expect_err("invalid")
                .0
        };
        assert!(err("0:10", "1:20", &one()).contains("--from names events:0, but --to does not"));
        assert!(err("0:10,1:1", "0:20,1:2,2:3", &one()).contains("--to names events:2"));
        assert!(err("0:30", "0:20", &one()).contains("--to 20 is before --from 30"));
        assert!(err("0:x", "0:20", &one()).contains("`x` is not an offset"));
        assert!(err("0:-1", "0:20", &one()).contains("`-1` is not an offset"));
        assert!(err("p:1", "0:20", &one()).contains("`p` is not a partition number"));
        assert!(err("zz:0:1", "0:20", &one()).contains("`zz` is not a source topic"));
        let two = vec!["a".to_owned(), "b".to_owned()];
        assert!(err("0:1", "0:2", &two).contains("with several source topics"));
        assert!(err("0:1,0:2", "0:3", &one()).contains("twice"));
    }
}
