//! Where a run reads: one [`PartitionRange`] per source partition, planned
//! in one call from the checkpoints and the start policy of
//! [`crate::positions`] ([`plan`]), or from explicit backfill ranges
//! ([`plan_backfill`]).
//!
//! Starting elsewhere than the checkpoint (skip to latest, an out-of-range
//! checkpoint) is reported ([`OffsetsSkipped`]: logged with the offsets
//! skipped and counted by reason), kept in the checkpoint topic, and
//! committed at once, so that a crash before the first regular commit does
//! not go back. A checkpoint out of range is logged at ERROR: data was lost
//! or will not be read unless an operator backfills it.

use footprint_telemetry::InternalEvent;

use crate::ConnectorError;
use crate::admin::Admin;
use crate::checkpoints::{self, CheckpointWriter};
use crate::events::OffsetsSkipped;
use crate::offsets::{Saved, Skipped};
use crate::positions::{self, Seed, StartMode};
use crate::reader::PartitionRange;

/// How many messages before a start offset are read to rebuild the
/// partition's watermark when no checkpoint describes that offset.
pub const LOOK_BACK: i64 = 10_000;

/// What a run reads and from where it resumes.
#[derive(Debug, Clone)]
pub struct StartRequest<'a> {
    /// The source topics, in config order (partition ids number them in this order).
    pub topics: &'a [String],
    /// The consumer group whose checkpoints are resumed.
    pub group: &'a str,
    /// The compacted topic that keeps the checkpoints.
    pub checkpoint_topic: &'a str,
    /// The start policy.
    pub mode: StartMode,
    /// Stop each partition once it is caught up (a bounded run).
    pub until_caught_up: bool,
}

/// Where a run reads, and what it skips.
#[derive(Debug, Clone, Default)]
pub struct StartPlan {
    /// One range per partition read, in partition-id order.
    pub ranges: Vec<PartitionRange>,
    /// The ranges skipped by this start (already reported and recorded).
    pub skipped: Vec<Skipped>,
}

impl StartPlan {
    /// The skipped ranges a backfill can fill in.
    pub fn fillable(&self) -> impl Iterator<Item = &Skipped> {
        self.skipped.iter().filter(|s| s.reason.fillable())
    }
}

/// Plans a streaming (or bounded, `until_caught_up`) run over every source
/// partition: resumes checkpoints by the start policy, reports and records
/// what is skipped, and commits the new starts at once.
pub fn plan(admin: &Admin, req: &StartRequest<'_>) -> Result<StartPlan, ConnectorError> {
    let settings = admin.settings();
    let uses_checkpoints = matches!(req.mode, StartMode::Committed | StartMode::SkipToLatest);
    let saved = if uses_checkpoints {
        checkpoints::load(admin, req.checkpoint_topic, req.group)?.points
    } else {
        Default::default()
    };
    let mut out = StartPlan::default();
    let mut moved: Vec<(String, i32, Saved)> = Vec::new();
    for topic in req.topics {
        let parts = admin
            .partitions(topic)?
            .ok_or_else(|| ConnectorError::MissingTopic(topic.clone()))?;
        let pairs: Vec<(String, i32)> = parts.iter().map(|p| (topic.clone(), *p)).collect();
        let committed = if uses_checkpoints {
            admin.committed(req.group, &pairs)?
        } else {
            vec![None; pairs.len()]
        };
        for (p, committed) in parts.into_iter().zip(committed) {
            let (low, high) = admin.watermarks(topic, p)?;
            // The checkpoint topic's copy keeps offset and event time together.
            let checkpoint = saved
                .get(&(topic.clone(), p))
                .copied()
                .or(committed.map(|c| Saved {
                    offset: c.offset,
                    max_ts: c.max_ts,
                }));
            let needs_true_end =
                req.mode == StartMode::SkipToLatest || checkpoint.is_some_and(|c| c.offset > high);
            let end = if needs_true_end {
                positions::true_end(settings, topic, p, high)?
            } else {
                high
            };
            let start = positions::start_at(req.mode, checkpoint, low, end);
            let max_ts = match start.seed {
                Seed::Known(ts) => ts,
                Seed::LookBack => {
                    positions::look_back_max_ts(settings, topic, p, low, start.offset, LOOK_BACK)?
                }
            };
            if let Some(c) = checkpoint
                && start.skipped.is_empty()
                && req.mode == StartMode::Committed
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
                OffsetsSkipped {
                    skipped: &s,
                    committed: checkpoint.map(|c| c.offset),
                    start: start.offset,
                }
                .emit(&settings.metrics);
                out.skipped.push(s);
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
            out.ranges.push(PartitionRange {
                topic: topic.clone(),
                partition: p,
                id: out.ranges.len() as u32,
                from: start.offset,
                max_ts,
                to: None,
                until_caught_up: req.until_caught_up,
                tail: false,
            });
        }
    }
    if !moved.is_empty() {
        let points: Vec<(&str, i32, Saved)> =
            moved.iter().map(|(t, p, s)| (t.as_str(), *p, *s)).collect();
        checkpoints::save_now(settings, req.checkpoint_topic, req.group, &points)?;
        let writer = CheckpointWriter::new(settings, req.checkpoint_topic, req.group)?;
        for s in &out.skipped {
            writer.save_skipped(s)?;
        }
    }
    Ok(out)
}

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

/// Plans a bounded backfill over `ranges` of `req`'s topics. Each
/// partition's watermark starts from what the checkpoint topic knows about
/// its first offset (a recorded skipped range or checkpoint starting
/// there), from nothing at the partition's first offset, or else from a
/// look-back read.
pub fn plan_backfill(
    admin: &Admin,
    req: &StartRequest<'_>,
    ranges: &[BackfillRange],
) -> Result<Vec<PartitionRange>, ConnectorError> {
    let settings = admin.settings();
    let loaded = checkpoints::load(admin, req.checkpoint_topic, req.group)?;
    let mut ids = Vec::new();
    for topic in req.topics {
        let parts = admin
            .partitions(topic)?
            .ok_or_else(|| ConnectorError::MissingTopic(topic.clone()))?;
        ids.extend(parts.into_iter().map(|p| (topic.clone(), p)));
    }
    let mut out = Vec::new();
    for r in ranges {
        let Some(id) = ids
            .iter()
            .position(|(t, p)| *t == r.topic && *p == r.partition)
        else {
            return Err(ConnectorError::UnknownPartition {
                topic: r.topic.clone(),
                partition: r.partition,
            });
        };
        let (low, high) = admin.watermarks(&r.topic, r.partition)?;
        let end = positions::true_end(settings, &r.topic, r.partition, high)?;
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
                positions::look_back_max_ts(settings, &r.topic, r.partition, low, from, LOOK_BACK)?
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
    Ok(out)
}
