//! The plain data of source positions: a checkpoint ([`Saved`]), a range a
//! run skipped ([`Skipped`]) and why ([`SkipReason`]), and the metadata a
//! commit carries.
//!
//! This is a leaf: it imports nothing else of this crate, so that the
//! modules that read and write positions (admin, checkpoints, positions,
//! reader, start) all depend on it and not on each other.

use serde::{Deserialize, Serialize};

/// One partition's checkpoint: where a restart reads, and the watermark
/// that goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The first offset a restart reads.
    pub offset: i64,
    /// The partition's largest event time before `offset`.
    pub max_ts: Option<i64>,
}

/// Why a range of offsets is not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// An operator asked for fresh data first (`--skip-to-latest`).
    SkipToLatest,
    /// The checkpoint was past the partition's end (topic recreated).
    PastEnd,
    /// The checkpoint was before the partition's first offset (deleted by retention).
    BeforeStart,
}

impl SkipReason {
    /// Every reason, in metric label order.
    pub const ALL: [SkipReason; 3] = [
        SkipReason::SkipToLatest,
        SkipReason::PastEnd,
        SkipReason::BeforeStart,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::SkipToLatest => "skip_to_latest",
            SkipReason::PastEnd => "past_end",
            SkipReason::BeforeStart => "before_start",
        }
    }

    /// Whether a backfill can fill the range in (its offsets still exist).
    pub fn fillable(self) -> bool {
        self != SkipReason::BeforeStart
    }
}

/// A range of one partition's offsets that a run does not read, `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset not read.
    pub from: i64,
    /// First offset read again.
    pub to: i64,
    /// The partition's largest event time before `from`, when known: what a
    /// backfill of this range seeds its watermark with.
    pub from_max_ts: Option<i64>,
    /// Why.
    pub reason: SkipReason,
}

impl Skipped {
    /// How many offsets the range holds.
    pub fn len(&self) -> i64 {
        (self.to - self.from).max(0)
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const MAX_TS_KEY: &str = "footprint.max_ts=";

/// The metadata committed with an offset: the partition's largest event time
/// before it, which a restart needs to give every message its old stamp.
pub fn checkpoint_metadata(max_ts: Option<i64>) -> String {
    max_ts.map_or_else(String::new, |ts| format!("{MAX_TS_KEY}{ts}"))
}

/// Reads [`checkpoint_metadata`] back; `None` when absent or written by
/// another tool.
pub fn parse_checkpoint_metadata(metadata: &str) -> Option<i64> {
    metadata.strip_prefix(MAX_TS_KEY)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_metadata_round_trips_and_ignores_foreign_text() {
        for ts in [None, Some(0), Some(1_767_225_600_123), Some(-5)] {
            assert_eq!(parse_checkpoint_metadata(&checkpoint_metadata(ts)), ts);
        }
        assert_eq!(parse_checkpoint_metadata("written by something else"), None);
    }
}
