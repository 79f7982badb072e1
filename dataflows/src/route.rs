//! Routing: what one decoded event contributes to the dataflow.
//!
//! [`route`] runs in the source, right where the event is read, because that
//! is where the event's *stamp* is known: the watermark of its partition when
//! it was read. For each aggregate, the windows whose `end + allowed_lateness`
//! the stamp has reached are late for this event; the others receive it. So
//! lateness depends only on the order of the event's own partition, never on
//! how partitions interleave, how many workers run, or how fast each is read.
//!
//! Every (event, window) pair ends up either counted (through a
//! [`Contribution`]) or reported in a [`Late`], never both and never neither.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::Time;
use crate::event::Event;
use crate::hash::Fnv;
use crate::key::{GroupKey, KeyBuf};
use crate::spec::{Measure, PipelineSpec};

/// The values of the `distinct(...)` measures of the events a contribution
/// stands for, event by event: inline for one event's one or two.
pub type Distinct = SmallVec<[Option<CompactString>; 2]>;

/// What one event, or several events that fall into the same windows of the
/// same group (see [`crate::combine`]), add to one aggregate: the windows
/// from `first_start` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// Index of the aggregate in the pipeline spec.
    pub agg: u16,
    /// Group key.
    pub key: GroupKey,
    /// Event time (of the first event, when it stands for several: they all
    /// fall into the same windows).
    pub ts: i64,
    /// Windows of this event that start before this are late and not counted.
    pub first_start: i64,
    /// Events it stands for.
    #[serde(default = "one")]
    pub count: u64,
    /// One entry per `distinct(...)` measure, in measure order (`None` when
    /// absent), for each event it stands for in turn: event i's value of
    /// measure m is entry i × (distinct measures) + m.
    pub distinct: Distinct,
    /// `value` in micro-units, summed over its events (0 when absent or not summed).
    pub value: i128,
    /// Broker timestamp of the message, ms since the epoch (0 when unknown);
    /// the latest of its events'.
    #[serde(default)]
    pub append_ms: i64,
    /// Whether this contribution may make its windows emit rows. A bounded
    /// backfill reads past its range only to complete the windows its range
    /// touched; contributions from past the range do not touch.
    #[serde(default = "touches")]
    pub touches: bool,
}

fn touches() -> bool {
    true
}

fn one() -> u64 {
    1
}

impl Contribution {
    /// Routing hash: every contribution of one (aggregate, key) meets on one worker.
    pub fn route_hash(&self) -> u64 {
        Fnv::default()
            .write_u64(u64::from(self.agg))
            .write(self.key.as_str().as_bytes())
            .finish()
    }

    /// Adds `other`'s events to this one's. Only for a contribution of the
    /// same aggregate, group, `first_start` and `touches` whose event falls
    /// into the same windows (see [`crate::combine`]): then the aggregate
    /// counts the two as it would count them one by one.
    pub fn absorb(&mut self, other: Contribution) {
        self.count += other.count;
        self.distinct.extend(other.distinct);
        self.value += other.value;
        self.append_ms = self.append_ms.max(other.append_ms);
    }
}

/// One event for a user's recent activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentEvent {
    /// Tenant.
    pub app_id: CompactString,
    /// User.
    pub user_id: CompactString,
    /// Event time.
    pub ts: i64,
    /// Behaviour type.
    pub event: CompactString,
    /// Item, if any.
    pub item_id: Option<CompactString>,
    /// Source partition (numbered over the source topics), set by the source.
    pub partition: u32,
    /// Offset of the message, set by the source.
    pub offset: i64,
}

impl RecentEvent {
    /// Routing hash: one user's events meet on one worker.
    pub fn route_hash(&self) -> u64 {
        Fnv::default()
            .write(self.app_id.as_bytes())
            .write(&[0xff])
            .write(self.user_id.as_bytes())
            .finish()
    }
}

/// A record leaving the source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// A contribution to a windowed aggregate.
    Window(Contribution),
    /// An event for recent activity.
    Recent(RecentEvent),
}

/// The windows of one aggregate that an event missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late {
    /// Index of the aggregate.
    pub agg: u16,
    /// How many of the event's windows were already final.
    pub windows: u32,
}

/// Routes `ev`, read at watermark `stamp`, into `out`, and lists in `late`
/// the aggregates for which some of its windows were already final.
///
/// Returns the event's *need*: the time by which every row it contributes to
/// has left the dataflow (the latest close time of the windows it is counted
/// in, and its stamp when it feeds recent activity), or `None` when it
/// contributes nothing. See [`checkpoint`](crate::checkpoint).
pub fn route(
    spec: &PipelineSpec,
    ev: &Event<'_>,
    stamp: Time,
    out: &mut impl FnMut(Record),
    late: &mut Vec<Late>,
) -> Option<Time> {
    route_with(spec, ev, stamp, out, late, true)
}

/// Routes an event read past a bounded backfill's range: it only completes
/// windows (its contributions do not touch, see [`Contribution::touches`]),
/// feeds no recent activity, and its late windows are not reported.
pub fn route_tail(spec: &PipelineSpec, ev: &Event<'_>, stamp: Time, out: &mut impl FnMut(Record)) {
    let mut late = Vec::new();
    route_with(spec, ev, stamp, out, &mut late, false);
}

fn route_with(
    spec: &PipelineSpec,
    ev: &Event<'_>,
    stamp: Time,
    out: &mut impl FnMut(Record),
    late: &mut Vec<Late>,
    in_range: bool,
) -> Option<Time> {
    let mut need: Option<Time> = None;
    for (idx, agg) in spec.aggregates.iter().enumerate() {
        let first_open = agg.first_open_start(stamp);
        let mut missed = 0u32;
        let mut open = 0u32;
        for start in agg.window.starts(ev.ts) {
            if start < first_open {
                missed += 1;
            } else {
                open += 1;
                let close = agg.close_time(start);
                need = Some(need.map_or(close, |n| n.max(close)));
            }
        }
        let agg_id = idx as u16;
        if missed > 0 {
            late.push(Late {
                agg: agg_id,
                windows: missed,
            });
        }
        if open == 0 {
            continue;
        }
        let mut buf = KeyBuf::default();
        for f in &agg.group_by {
            buf.push(f.get(ev).as_deref().unwrap_or(""));
        }
        let key = buf.finish();
        let distinct = agg
            .measures
            .iter()
            .filter_map(|m| match m {
                Measure::Distinct(f) => Some(f.get(ev).map(|v| CompactString::from(v.as_ref()))),
                _ => None,
            })
            .collect();
        let value = if agg.sums_value() {
            ev.value_micros()
        } else {
            0
        };
        out(Record::Window(Contribution {
            agg: agg_id,
            key,
            ts: ev.ts,
            first_start: first_open,
            count: 1,
            distinct,
            value,
            append_ms: 0,
            touches: in_range,
        }));
    }
    if in_range && spec.recent.is_some() {
        out(Record::Recent(RecentEvent {
            app_id: CompactString::from(ev.app_id.as_ref()),
            user_id: CompactString::from(ev.user_id.as_ref()),
            ts: ev.ts,
            event: CompactString::from(ev.event.as_ref()),
            item_id: ev.item_id.as_deref().map(CompactString::from),
            partition: 0,
            offset: 0,
        }));
        need = Some(need.map_or(stamp, |n| n.max(stamp)));
    }
    need
}
