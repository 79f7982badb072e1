//! Result rows: what leaves the dataflow for the sinks (`docs/design.md#results-and-the-version-rule`).
//!
//! A window row's identity is (aggregate, key, window_start). Its `version`
//! is the number of events counted in it so far: it grows with every new
//! value, it is the same in every run over the same input, and a store keeps
//! the row with the highest version.
//!
//! A recent-activity row has no version: its entries carry the identity of
//! the message they came from (partition, offset), and a store *merges* an
//! incoming list into the stored one (union, newest first, the `keep`
//! newest kept). Merging is idempotent, commutative and associative, so
//! rows written twice, out of order, from a replay, or by a worker that
//! restarted and read some messages again all end in the same list, the
//! newest `keep` events the user ever had. See [`RecentEntry::merge`].

use std::sync::Arc;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The value of one measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MeasureValue {
    /// An event count.
    Count(u64),
    /// An exact distinct count.
    Distinct(u64),
    /// An exact sum, in micro-units (millionths).
    Sum(i128),
}

impl MeasureValue {
    /// The value as a JSON number (sums as decimals).
    pub fn to_json(self) -> Value {
        match self {
            MeasureValue::Count(n) | MeasureValue::Distinct(n) => json!(n),
            MeasureValue::Sum(micros) => json!(micros as f64 / 1e6),
        }
    }
}

/// One windowed aggregate result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowRow {
    /// Index of the aggregate in the pipeline spec.
    pub agg: u16,
    /// Aggregate name.
    pub aggregate: Arc<str>,
    /// Group-by field names and values, in key order.
    pub key: Vec<(Arc<str>, CompactString)>,
    /// Window start (inclusive), ms since the epoch.
    pub window_start: i64,
    /// Window end (exclusive), ms since the epoch.
    pub window_end: i64,
    /// Measure names and values, in config order. Names are shared by every
    /// row of the aggregate, like the aggregate's and the fields' names.
    pub measures: Vec<(Arc<str>, MeasureValue)>,
    /// Grows with every new value of this identity.
    pub version: u64,
    /// Whether the window is final (no more events can change it).
    pub is_final: bool,
    /// Broker timestamp of the newest message counted in this row and in no
    /// earlier row of its window, ms since the epoch: where end-to-end
    /// latency is measured from, so each message counts at the first row
    /// that brings it to the stores. `None` when the row only restates an
    /// earlier one (a final row with nothing new since the window's last
    /// early row). Not part of the row's value: it is neither stored nor
    /// compared.
    #[serde(skip)]
    pub freshest_append_ms: Option<i64>,
}

impl WindowRow {
    /// The version rule (`docs/design.md#results-and-the-version-rule`): whether this row, written over `stored`
    /// (the same identity), replaces it. It does when its `(version, final)`
    /// pair is not lower than the stored one.
    pub fn replaces(&self, stored: &WindowRow) -> bool {
        (self.version, self.is_final) >= (stored.version, stored.is_final)
    }
}

impl PartialEq for WindowRow {
    fn eq(&self, other: &Self) -> bool {
        self.agg == other.agg
            && self.aggregate == other.aggregate
            && self.key == other.key
            && self.window_start == other.window_start
            && self.window_end == other.window_end
            && self.measures == other.measures
            && self.version == other.version
            && self.is_final == other.is_final
    }
}

/// One entry of a user's recent activity, ordered by event time, then by
/// where the message was read (which makes the order total: the source
/// position of an event is unique).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecentEntry {
    /// Event time.
    pub ts: i64,
    /// Source partition, numbered over the source topics in config order.
    pub partition: u32,
    /// Offset of the message in its partition.
    pub offset: i64,
    /// Behaviour type.
    pub event: CompactString,
    /// Item, if any.
    pub item_id: Option<CompactString>,
}

impl RecentEntry {
    /// Merges `incoming` into `stored` (both newest first): the union, newest
    /// first, without duplicates, cut to `keep` entries.
    pub fn merge(stored: &mut Vec<RecentEntry>, incoming: &[RecentEntry], keep: usize) {
        stored.extend(incoming.iter().cloned());
        stored.sort_by(|a, b| b.cmp(a));
        stored.dedup();
        stored.truncate(keep);
    }

    /// The newest `keep` of `entries` (in any order, repeats allowed),
    /// newest first, each once.
    pub fn newest(entries: &[RecentEntry], keep: usize) -> Vec<RecentEntry> {
        let mut out = Vec::new();
        RecentEntry::merge(&mut out, entries, keep);
        out
    }
}

/// A user's latest events, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentRow {
    /// Tenant.
    pub app_id: String,
    /// User.
    pub user_id: String,
    /// Latest events, newest first.
    pub events: Vec<RecentEntry>,
}

impl RecentRow {
    /// One row per (app, user) of `rows`, sorted by (app, user), each the
    /// merge of that user's rows (see [`RecentEntry::merge`]).
    pub fn merge_by_user(rows: impl IntoIterator<Item = RecentRow>, keep: usize) -> Vec<RecentRow> {
        let mut users: std::collections::BTreeMap<(String, String), Vec<RecentEntry>> =
            std::collections::BTreeMap::new();
        for r in rows {
            let events = users.entry((r.app_id, r.user_id)).or_default();
            RecentEntry::merge(events, &r.events, keep);
        }
        users
            .into_iter()
            .map(|((app_id, user_id), events)| RecentRow {
                app_id,
                user_id,
                events,
            })
            .collect()
    }
}

/// A row for the sinks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Output {
    /// A windowed aggregate result.
    Window(WindowRow),
    /// A user's recent activity.
    Recent(RecentRow),
}

impl Output {
    /// The JSON form written by the file sink, one object per line.
    pub fn to_json(&self) -> Value {
        match self {
            Output::Window(w) => {
                let key: Map<String, Value> = w
                    .key
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                    .collect();
                let measures: Map<String, Value> = w
                    .measures
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_json()))
                    .collect();
                json!({
                    "kind": "window",
                    "aggregate": w.aggregate,
                    "key": key,
                    "window_start": w.window_start,
                    "window_end": w.window_end,
                    "measures": measures,
                    "version": w.version,
                    "final": w.is_final,
                })
            }
            Output::Recent(r) => json!({
                "kind": "recent",
                "app_id": r.app_id,
                "user_id": r.user_id,
                "events": r.events.iter().map(|e| json!({"ts": e.ts, "partition": e.partition, "offset": e.offset, "event": e.event, "item_id": e.item_id})).collect::<Vec<_>>(),
            }),
        }
    }
}
