//! A plain, sequential implementation of Footprint's semantics, used as the
//! oracle in tests and drills.
//!
//! It reads each partition's messages in order, one partition after another,
//! and applies the rules of `docs/design.md#watermarks-and-lateness`
//! directly: an event's stamp is its partition's
//! watermark (`max ts so far − max_out_of_order`) when read; a window is late
//! for it when `end + allowed_lateness <= stamp`. It shares only decoding and
//! window assignment with the dataflow, both of which are tested on their own.
//! It assumes no partition goes idle and no user is silent for the recent TTL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use compact_str::CompactString;

use crate::event::{BadReason, Event};
use crate::result::{MeasureValue, Output, RecentEntry, RecentRow, WindowRow};
use crate::spec::{Measure, PipelineSpec};

/// Identity of a window row: (aggregate, key, window start).
pub type WindowId = (Arc<str>, Vec<(Arc<str>, CompactString)>, i64);

/// An event that missed some windows of one aggregate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LateRecord {
    /// Partition of the event.
    pub partition: usize,
    /// Position of the event within its partition.
    pub index: usize,
    /// Aggregate name.
    pub aggregate: String,
    /// How many of its windows were already final.
    pub windows: u32,
}

/// What the reference computes.
#[derive(Debug, Default)]
pub struct Reference {
    /// Final window rows by identity.
    pub windows: BTreeMap<WindowId, WindowRow>,
    /// Latest recent-activity row per (app, user).
    pub recent: BTreeMap<(String, String), RecentRow>,
    /// Late (event, aggregate) pairs.
    pub late: Vec<LateRecord>,
    /// Rejected messages: (partition, index, reason).
    pub bad: Vec<(usize, usize, BadReason)>,
    /// Number of good events.
    pub good: u64,
}

#[derive(Default)]
struct Acc {
    count: u64,
    distinct: Vec<BTreeSet<String>>,
    sum: i128,
}

/// Computes the final results of `spec` over `partitions` (each a list of
/// message payloads in offset order).
pub fn compute(spec: &PipelineSpec, partitions: &[Vec<Vec<u8>>]) -> Reference {
    let mut out = Reference::default();
    let mut acc: BTreeMap<(usize, Vec<String>, i64), Acc> = BTreeMap::new();
    let mut users: BTreeMap<(String, String), Vec<RecentEntry>> = BTreeMap::new();
    for (p, messages) in partitions.iter().enumerate() {
        let mut max_ts: Option<i64> = None;
        for (i, payload) in messages.iter().enumerate() {
            let ev = match Event::decode(payload) {
                Ok(ev) => ev,
                Err(bad) => {
                    out.bad.push((p, i, bad.reason));
                    continue;
                }
            };
            out.good += 1;
            max_ts = Some(max_ts.map_or(ev.ts, |m| m.max(ev.ts)));
            let stamp = max_ts.map_or(0i128, |m| {
                (m as i128 - spec.max_out_of_order as i128).max(0)
            });
            for (a, agg) in spec.aggregates.iter().enumerate() {
                let mut missed = 0;
                for start in agg.window.starts(ev.ts) {
                    let end = start + agg.window.size() as i64;
                    if end as i128 + agg.allowed_lateness as i128 <= stamp {
                        missed += 1;
                        continue;
                    }
                    let key: Vec<String> = agg
                        .group_by
                        .iter()
                        .map(|f| f.get(&ev).map(|v| v.into_owned()).unwrap_or_default())
                        .collect();
                    let w = acc.entry((a, key, start)).or_default();
                    w.count += 1;
                    let mut d = 0;
                    for m in &agg.measures {
                        match m {
                            Measure::Distinct(f) => {
                                if w.distinct.len() <= d {
                                    w.distinct.push(BTreeSet::new());
                                }
                                if let Some(v) = f.get(&ev) {
                                    w.distinct[d].insert(v.into_owned());
                                }
                                d += 1;
                            }
                            Measure::SumValue => {
                                w.sum += ev.value.map_or(0, |v| (v * 1e6).round() as i128);
                            }
                            Measure::Count => {}
                        }
                    }
                }
                if missed > 0 {
                    out.late.push(LateRecord {
                        partition: p,
                        index: i,
                        aggregate: agg.name.clone(),
                        windows: missed,
                    });
                }
            }
            if spec.recent.is_some() {
                let u = users
                    .entry((ev.app_id.to_string(), ev.user_id.to_string()))
                    .or_default();
                u.push(RecentEntry {
                    ts: ev.ts,
                    partition: p as u32,
                    offset: i as i64,
                    event: ev.event.as_ref().into(),
                    item_id: ev.item_id.as_deref().map(Into::into),
                });
            }
        }
    }
    for ((a, key, start), w) in acc {
        let agg = &spec.aggregates[a];
        let mut d = 0;
        let measures = agg
            .measures
            .iter()
            .map(|m| {
                let v = match m {
                    Measure::Count => MeasureValue::Count(w.count),
                    Measure::Distinct(_) => {
                        d += 1;
                        MeasureValue::Distinct(w.distinct.get(d - 1).map_or(0, |s| s.len() as u64))
                    }
                    Measure::SumValue => MeasureValue::Sum(w.sum),
                };
                (Arc::from(m.to_string()), v)
            })
            .collect();
        let named: Vec<(Arc<str>, CompactString)> = agg
            .group_by
            .iter()
            .map(|f| Arc::from(f.to_string()))
            .zip(key.into_iter().map(CompactString::from))
            .collect();
        let name: Arc<str> = Arc::from(agg.name.as_str());
        let row = WindowRow {
            agg: a as u16,
            aggregate: Arc::clone(&name),
            key: named.clone(),
            window_start: start,
            window_end: start + agg.window.size() as i64,
            measures,
            version: w.count,
            is_final: true,
            freshest_append_ms: None,
        };
        out.windows.insert((name, named, start), row);
    }
    if let Some(recent) = &spec.recent {
        for ((app, user), mut events) in users {
            events.sort_by(|a, b| b.cmp(a));
            events.truncate(recent.keep);
            out.recent.insert(
                (app.clone(), user.clone()),
                RecentRow {
                    app_id: app,
                    user_id: user,
                    events,
                },
            );
        }
    }
    out
}

/// The final state a store would hold after receiving `outputs`: for each
/// window identity the row with the highest version, and for each user the
/// merge of every recent row (see [`RecentEntry::merge`]).
#[derive(Debug, Default)]
pub struct Collected {
    /// Highest-version row per window identity.
    pub windows: BTreeMap<WindowId, WindowRow>,
    /// Merged recent activity per (app, user).
    pub recent: BTreeMap<(String, String), RecentRow>,
    /// Number of final rows received for an identity that already had one.
    pub duplicate_finals: u64,
    /// Window identities that never received a final row.
    pub not_final: u64,
}

impl Collected {
    /// Applies rows in order, keeping the highest version per window
    /// identity and merging recent rows, cut to `keep` entries per user, as
    /// the stores do.
    pub fn from_outputs(outputs: impl IntoIterator<Item = Output>, keep: usize) -> Self {
        let mut c = Collected::default();
        let mut finals: BTreeSet<WindowId> = BTreeSet::new();
        for o in outputs {
            match o {
                Output::Window(w) => {
                    let id = (w.aggregate.clone(), w.key.clone(), w.window_start);
                    if w.is_final && !finals.insert(id.clone()) {
                        c.duplicate_finals += 1;
                    }
                    if c.windows.get(&id).is_none_or(|old| w.replaces(old)) {
                        c.windows.insert(id, w);
                    }
                }
                Output::Recent(mut r) => {
                    let id = (r.app_id.clone(), r.user_id.clone());
                    match c.recent.get_mut(&id) {
                        Some(old) => RecentEntry::merge(&mut old.events, &r.events, keep),
                        None => {
                            r.events.truncate(keep);
                            c.recent.insert(id, r);
                        }
                    }
                }
            }
        }
        c.not_final = c.windows.values().filter(|w| !w.is_final).count() as u64;
        c
    }
}
