//! What each source partition is doing, for the admin API's `/status`, the
//! operator console and `/metrics`.
//!
//! Each source operator publishes its partitions' watermarks and states
//! into one shared [`PartitionTable`] at most every
//! [`PartitionTable::EVERY`], also while the stores hold it back (one short
//! lock per publication, never per message). The table is read at scrape
//! time:
//!
//! | metric | labels | value |
//! |---|---|---|
//! | `footprint_partition_watermark_seconds` | `topic`, `partition` | the partition's own watermark |
//! | `footprint_partition_idle` | `topic`, `partition` | 1 while it is idle (read to its end for `watermark.idle_timeout`) |
//! | `footprint_partition_held` | `topic`, `partition` | 1 while watermark alignment holds it back (`watermark.max_drift`) |
//!
//! Partitions are known to the dataflow by their global number (every
//! source topic's partitions in config order); [`PartitionTable::name`]
//! gives them their topic and partition once the process knows them.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use footprint_telemetry::prometheus_client::collector::Collector;
use footprint_telemetry::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use footprint_telemetry::prometheus_client::metrics::gauge::ConstGauge;
use serde::Serialize;

use crate::Time;

/// What a partition's source is doing with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionState {
    /// Read, and holding the watermark.
    Reading,
    /// Read to its end for longer than the idle timeout: it no longer holds
    /// the watermark back.
    Idle,
    /// Not read, because its watermark ran further than
    /// `watermark.max_drift` ahead of the slowest partition (alignment).
    Held,
    /// Not read, because the stores are behind: the source waits until
    /// the rows waiting for them drop (back-pressure, `sinks.max_rows_waiting`).
    Paused,
    /// A bounded run read all it will read of it.
    Finished,
}

impl PartitionState {
    /// The name `/status` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionState::Reading => "reading",
            PartitionState::Idle => "idle",
            PartitionState::Held => "held",
            PartitionState::Paused => "paused",
            PartitionState::Finished => "finished",
        }
    }
}

/// One partition, as its source last published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartitionView {
    /// Global partition number.
    pub id: u32,
    /// The partition's watermark, ms since the epoch (0 before its first
    /// event).
    pub watermark_ms: Time,
    /// The largest event time read from it, if any.
    pub max_event_ms: Option<i64>,
    /// What its source is doing with it.
    pub state: PartitionState,
}

/// Every partition this process reads, as its sources last published them.
#[derive(Debug, Default)]
pub struct PartitionTable {
    views: Mutex<BTreeMap<u32, PartitionView>>,
    /// (topic, partition) by global partition number.
    names: Mutex<BTreeMap<u32, (String, i32)>>,
}

impl PartitionTable {
    /// How often a source publishes its partitions at most.
    pub const EVERY: Duration = Duration::from_millis(250);

    /// Records `views` (one source's partitions), replacing what that
    /// source published before.
    pub fn publish(&self, views: impl IntoIterator<Item = PartitionView>) {
        let mut table = self.views.lock().unwrap_or_else(PoisonError::into_inner);
        for v in views {
            table.insert(v.id, v);
        }
    }

    /// Names the partitions: each `(id, topic, partition)` gives global
    /// partition `id`'s topic and partition.
    pub fn name(&self, names: impl IntoIterator<Item = (u32, String, i32)>) {
        let mut table = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, topic, partition) in names {
            table.insert(id, (topic, partition));
        }
    }

    /// The topic and partition of global partition `id`: its name once
    /// [`PartitionTable::name`] gave one, else `("", id)`.
    pub fn name_of(&self, id: u32) -> (String, i32) {
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| (String::new(), i32::try_from(id).unwrap_or(i32::MAX)))
    }

    /// Every partition published so far, by global number.
    pub fn views(&self) -> Vec<PartitionView> {
        self.views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .copied()
            .collect()
    }
}

/// A metric family of the table: name, help, and its value for a partition.
type Family = (&'static str, &'static str, fn(&PartitionView) -> f64);

/// Shows the table at scrape time.
#[derive(Debug)]
pub(crate) struct PartitionCollector(pub(crate) std::sync::Arc<PartitionTable>);

impl Collector for PartitionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let views = self.0.views();
        if views.is_empty() {
            return Ok(());
        }
        let named: Vec<((String, String), PartitionView)> = views
            .into_iter()
            .map(|v| {
                let (topic, p) = self.0.name_of(v.id);
                ((topic, p.to_string()), v)
            })
            .collect();
        let families: [Family; 3] = [
            (
                "partition_watermark_seconds",
                "Per source partition, its own watermark, seconds since the epoch (0 before its first event).",
                |v| v.watermark_ms as f64 / 1000.0,
            ),
            (
                "partition_idle",
                "Per source partition, 1 while it is idle: read to its end for longer than watermark.idle_timeout, so it no longer holds the watermark.",
                |v| f64::from(u8::from(v.state == PartitionState::Idle)),
            ),
            (
                "partition_held",
                "Per source partition, 1 while watermark alignment holds it back (its watermark ran more than watermark.max_drift ahead of the slowest).",
                |v| f64::from(u8::from(v.state == PartitionState::Held)),
            ),
        ];
        for (name, help, value) in families {
            let mut family =
                encoder.encode_descriptor(name, help, None, ConstGauge::new(0.0).metric_type())?;
            for ((topic, partition), v) in &named {
                let labels = [("topic", topic.as_str()), ("partition", partition.as_str())];
                let e = family.encode_family(&labels)?;
                ConstGauge::new(value(v)).encode(e)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: u32, watermark_ms: Time, state: PartitionState) -> PartitionView {
        PartitionView {
            id,
            watermark_ms,
            max_event_ms: Some(i64::try_from(watermark_ms).unwrap_or(0) + 3_000),
            state,
        }
    }

    #[test]
    fn a_publication_replaces_only_its_own_partitions() {
        let t = PartitionTable::default();
        t.publish([
            view(0, 1_000, PartitionState::Reading),
            view(2, 2_000, PartitionState::Idle),
        ]);
        t.publish([view(1, 5_000, PartitionState::Held)]);
        t.publish([view(0, 1_500, PartitionState::Reading)]);
        let ids: Vec<(u32, Time, PartitionState)> = t
            .views()
            .into_iter()
            .map(|v| (v.id, v.watermark_ms, v.state))
            .collect();
        assert_eq!(
            ids,
            vec![
                (0, 1_500, PartitionState::Reading),
                (1, 5_000, PartitionState::Held),
                (2, 2_000, PartitionState::Idle),
            ]
        );
    }

    #[test]
    fn partitions_are_named_once_known() {
        let t = PartitionTable::default();
        assert_eq!(t.name_of(3), (String::new(), 3));
        t.name([(0, "a".into(), 0), (1, "a".into(), 1), (2, "b".into(), 0)]);
        assert_eq!(t.name_of(2), ("b".to_owned(), 0));
        assert_eq!(t.name_of(7), (String::new(), 7));
    }
}
