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
    /// Sink modes.
    pub switches: BTreeMap<String, String>,
    /// Rows diverted to the retry topic per sink.
    pub diverted: BTreeMap<String, u64>,
    /// Retry records waiting in the local journal.
    pub journal_records: usize,
    /// Ranges of source offsets this run does not read (skip to latest,
    /// out-of-range checkpoints).
    pub skipped: Vec<footprint_connectors::offsets::Skipped>,
    /// Whether the broker serves this process.
    pub broker: crate::health::BrokerHealth,
}
