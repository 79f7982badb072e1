//! Request and response bodies of the admin API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `PUT /switches/{sink}` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModeBody {
    /// `auto` or `degraded`.
    pub mode: String,
}

/// An error answer.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// `GET /status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// When this answer was made, ms since the epoch.
    pub now_ms: i64,
    /// The global watermark, ms since the epoch.
    pub watermark_ms: u64,
    /// The newest event time read, ms since the epoch.
    pub max_event_ts_ms: i64,
    /// How far the watermark is behind the newest event, ms.
    pub watermark_delay_ms: i64,
    /// Messages read.
    pub events_in: u64,
    /// Bad messages.
    pub events_bad: u64,
    /// Late (event, aggregate) pairs.
    pub events_late: u64,
    /// Sink modes (also in `sinks`; kept here for existing readers).
    pub switches: BTreeMap<String, String>,
    /// Rows diverted to the retry topic per sink (also in `sinks`; kept
    /// here for existing readers).
    pub diverted: BTreeMap<String, u64>,
    /// Each switchable sink: mode, breaker, rows, write latency.
    pub sinks: BTreeMap<String, SinkStatus>,
    /// Retry records waiting in the local journal (also in `retry`; kept
    /// here for existing readers).
    pub journal_records: usize,
    /// The retry topic's backlog and the replay job's progress.
    pub retry: RetryStatus,
    /// Each source partition this process reads.
    pub partitions: Vec<PartitionStatus>,
    /// Ranges of source offsets this run does not read (skip to latest,
    /// out-of-range checkpoints), each with the command that backfills it.
    pub skipped: Vec<SkippedStatus>,
    /// Whether the broker serves this process.
    pub broker: crate::health::BrokerHealth,
}

/// One sink in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct SinkStatus {
    /// `auto` or `degraded`.
    pub mode: String,
    /// `closed`, `open`, `half_open`, or `unknown` before its first write.
    pub breaker: String,
    /// Rows written to the store.
    pub written: u64,
    /// Rows diverted to the retry topic.
    pub diverted: u64,
    /// Rows neither written nor diverted.
    pub failed: u64,
    /// Writes timed.
    pub writes_timed: u64,
    /// 99th percentile of the write latency since start, ms (`None` before
    /// the first write).
    pub write_p99_ms: Option<f64>,
}

/// The retry topic in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct RetryStatus {
    /// Records the replay job's group has not committed past (`None` until
    /// measured, or without a retry topic).
    pub backlog_records: Option<u64>,
    /// Records waiting in the local journal for the retry topic.
    pub journal_records: usize,
    /// The replay job's position: the sum of its committed offsets.
    pub replay_position: Option<u64>,
    /// When that position last rose, ms since the epoch.
    pub replay_moved_ms: Option<i64>,
    /// How recently the position must have risen to count as `applying`, ms.
    pub replay_active_ms: i64,
    /// `applying` (the position rose in the last
    /// [`REPLAY_ACTIVE_MS`](super::handlers::REPLAY_ACTIVE_MS)), `caught_up`
    /// (nothing waits), `waiting` (records wait and no replay job has
    /// committed lately), or `unknown` (not measured).
    pub replay: &'static str,
}

/// One source partition in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Its watermark, ms since the epoch (0 before its first event).
    pub watermark_ms: u64,
    /// The largest event time read from it.
    pub max_event_ms: Option<i64>,
    /// `reading`, `idle`, `held` (by watermark alignment) or `finished`.
    pub state: &'static str,
    /// Its end offset minus the group's committed offset, as last measured.
    pub lag: Option<i64>,
}

/// A skipped range in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedStatus {
    /// The range.
    #[serde(flatten)]
    pub range: footprint_connectors::offsets::Skipped,
    /// The `footprint worker --from … --to …` that reads it; `None` when
    /// its offsets no longer exist (deleted by retention).
    pub backfill: Option<String>,
}

/// `GET /history`: the process's counters, sampled.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryBody {
    /// How often a sample is taken, ms.
    pub interval_ms: u64,
    /// Oldest first.
    pub samples: Vec<super::history::Sample>,
}
