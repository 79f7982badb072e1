//! `recent_activity`: each user's latest events (the "footprint").
//!
//! Input: [`RecentEvent`]s, exchanged by (app, user). State: per user, the
//! `keep` latest events by event time (ties broken by source position),
//! oldest first, so that the usual in-order event is appended in O(1).
//! Changed users are emitted every `updates` of processing time and when the
//! input ends. A row carries the user's entries that are new since the
//! user's last row and still among the `keep` latest, newest first: stores
//! merge rows into what they hold (union, newest first, cut to `keep`), so
//! the entries sent before need not be sent again. A user silent for `ttl`
//! of event time (by the watermark) is dropped, as the store's copy expires
//! with the same TTL.

use std::collections::VecDeque;
use std::sync::Arc;

use compact_str::CompactString;
use hashbrown::HashMap;
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};

use footprint_telemetry::InternalEvent;

use crate::Time;
use crate::events::{DataflowMetrics, Emitted, RowsEmitted};
use crate::result::{Output, RecentEntry, RecentRow};
use crate::route::RecentEvent;
use crate::spec::RecentSpec;

/// Extension trait: keep each user's recent activity.
pub trait RecentActivity<'s> {
    /// Keeps the latest `spec.keep` events per user and emits changed users.
    fn recent_activity(
        self,
        spec: RecentSpec,
        metrics: Arc<DataflowMetrics>,
    ) -> StreamVec<'s, Time, Output>;
}

/// One kept event: its source position orders it (with its time) and
/// identifies it; the behaviour type is an index into the operator's names.
#[derive(Debug, Clone)]
struct Kept {
    ts: i64,
    offset: i64,
    partition: u32,
    event: u32,
    sent: bool,
    item_id: Option<CompactString>,
}

impl Kept {
    /// The order of [`RecentEntry`]: time, then source position (which is
    /// unique, so the rest of an entry never decides).
    fn order(&self) -> (i64, u32, i64) {
        (self.ts, self.partition, self.offset)
    }
}

/// One user's latest events, oldest first.
struct User {
    events: VecDeque<Kept>,
    last_ts: i64,
    dirty: bool,
}

impl User {
    fn new(ts: i64) -> Self {
        User {
            events: VecDeque::new(),
            last_ts: ts,
            dirty: false,
        }
    }

    /// Inserts `entry` in order unless it is a duplicate or older than the
    /// `keep` latest; returns whether it was kept.
    fn insert(&mut self, entry: Kept, keep: usize) -> bool {
        let at = entry.order();
        // A user's events mostly come in order: the newest goes last.
        let pos = match self.events.back() {
            None => 0,
            Some(last) if last.order() < at => self.events.len(),
            Some(_) => self.events.partition_point(|x| x.order() < at),
        };
        if self.events.get(pos).is_some_and(|x| x.order() == at) {
            return false;
        }
        if self.events.len() >= keep && pos == 0 {
            return false;
        }
        if self.events.len() == self.events.capacity() {
            // Grow by doubling, but never past `keep`.
            let target = (self.events.len() * 2).max(4).min(keep.max(1));
            self.events
                .reserve_exact(target.saturating_sub(self.events.len()).max(1));
        }
        if pos == self.events.len() {
            self.events.push_back(entry);
        } else {
            self.events.insert(pos, entry);
        }
        while self.events.len() > keep {
            self.events.pop_front();
        }
        true
    }

    /// The entries not emitted yet, newest first, marked as emitted.
    fn take_unsent(&mut self, names: &[CompactString]) -> Vec<RecentEntry> {
        let mut out = Vec::new();
        for e in self.events.iter_mut().rev() {
            if !e.sent {
                e.sent = true;
                out.push(RecentEntry {
                    ts: e.ts,
                    partition: e.partition,
                    offset: e.offset,
                    event: names.get(e.event as usize).cloned().unwrap_or_default(),
                    item_id: e.item_id.clone(),
                });
            }
        }
        out
    }
}

/// Behaviour types by index, so that kept events hold a number instead of a name.
#[derive(Default)]
struct EventNames {
    names: Vec<CompactString>,
    ids: HashMap<CompactString, u32>,
}

impl EventNames {
    fn id(&mut self, name: CompactString) -> u32 {
        if let Some(id) = self.ids.get(&name) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }
}

impl<'s> RecentActivity<'s> for StreamVec<'s, Time, RecentEvent> {
    fn recent_activity(
        self,
        spec: RecentSpec,
        metrics: Arc<DataflowMetrics>,
    ) -> StreamVec<'s, Time, Output> {
        let scope = self.scope();
        let pact = Exchange::new(|e: &RecentEvent| e.route_hash());
        self.unary_frontier::<CapacityContainerBuilder<Vec<Output>>, _, _, _>(
            pact,
            "RecentActivity",
            move |_initial, info| {
                let activator = scope.activator_for(info.address);
                let mut users: HashMap<(CompactString, CompactString), User> = HashMap::new();
                let mut dirty: Vec<(CompactString, CompactString)> = Vec::new();
                let mut names = EventNames::default();
                let mut next_emit: Option<Instant> = None;
                let mut next_evict = Instant::now();
                let mut cap: Option<Capability<Time>> = None;
                // The least time of the events not emitted yet: the capability
                // stays there, so their rows leave no later than their stamps
                // (what the source's offset checkpoints rely on).
                let mut unsent: Option<Time> = None;
                let every = Duration::from_millis(spec.updates);
                move |(input, frontier), output| {
                    input.for_each(|stamp, data| {
                        if let Some(t) = stamp.least() {
                            if cap.as_ref().is_none_or(|c| t < c.time()) {
                                cap = stamp.retain_least(output.output_index());
                            }
                            unsent = Some(unsent.map_or(*t, |u| u.min(*t)));
                        }
                        for e in data.drain(..) {
                            let RecentEvent {
                                app_id,
                                user_id,
                                ts,
                                event,
                                item_id,
                                partition,
                                offset,
                            } = e;
                            let entry = Kept {
                                ts,
                                offset,
                                partition,
                                event: names.id(event),
                                sent: false,
                                item_id,
                            };
                            let key = (app_id, user_id);
                            let user = match users.get_mut(&key) {
                                Some(u) => u,
                                None => users.entry(key.clone()).or_insert_with(|| User::new(ts)),
                            };
                            user.last_ts = user.last_ts.max(ts);
                            if user.insert(entry, spec.keep) && !user.dirty {
                                user.dirty = true;
                                dirty.push(key);
                            }
                        }
                    });
                    let now = Instant::now();
                    let watermark = frontier.frontier().iter().min().copied();
                    let due = watermark.is_none() || next_emit.is_none_or(|t| now >= t);
                    let mut rows = Vec::new();
                    if due && !dirty.is_empty() {
                        for key in dirty.drain(..) {
                            if let Some(user) = users.get_mut(&key)
                                && user.dirty
                            {
                                user.dirty = false;
                                let events = user.take_unsent(&names.names);
                                if !events.is_empty() {
                                    rows.push(Output::Recent(RecentRow {
                                        app_id: key.0.into(),
                                        user_id: key.1.into(),
                                        events,
                                    }));
                                }
                            }
                        }
                        RowsEmitted {
                            kind: Emitted::Recent,
                            rows: rows.len() as u64,
                        }
                        .emit(&metrics);
                        next_emit = Some(now + every);
                        unsent = None;
                    }
                    match watermark {
                        // Users silent past the TTL go; checked once a second.
                        Some(w) if now >= next_evict => {
                            let horizon = i64::try_from(w)
                                .unwrap_or(i64::MAX)
                                .saturating_sub(i64::try_from(spec.ttl).unwrap_or(i64::MAX));
                            users.retain(|_, u| u.dirty || u.last_ts >= horizon);
                            next_evict = now + Duration::from_secs(1);
                        }
                        Some(_) => {}
                        None => users.clear(),
                    }
                    if let Some(c) = cap.as_mut() {
                        if !rows.is_empty() {
                            output.session(c).give_iterator(rows.drain(..));
                        }
                        let hold = match (watermark, unsent) {
                            (Some(w), Some(u)) => Some(w.min(u)),
                            (w, _) => w,
                        };
                        match hold {
                            Some(_) if users.is_empty() => cap = None,
                            Some(w) if w > *c.time() => c.downgrade(&w),
                            Some(_) => {}
                            None => cap = None,
                        }
                    }
                    if !dirty.is_empty()
                        && let Some(t) = next_emit
                    {
                        activator.activate_after(t.saturating_duration_since(now));
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ts: i64, offset: i64) -> Kept {
        Kept {
            ts,
            offset,
            partition: 0,
            event: 0,
            sent: false,
            item_id: None,
        }
    }

    #[test]
    fn a_user_keeps_the_latest_entries_and_sends_each_once() {
        let names = [CompactString::from("view")];
        let mut u = User::new(0);
        for (ts, off) in [(10, 0), (30, 1), (20, 2), (40, 3)] {
            assert!(u.insert(entry(ts, off), 3));
        }
        assert!(!u.insert(entry(5, 4), 3), "older than the 3 latest");
        assert!(!u.insert(entry(30, 1), 3), "a duplicate");
        let first: Vec<i64> = u.take_unsent(&names).iter().map(|e| e.ts).collect();
        assert_eq!(first, vec![40, 30, 20], "newest first, the 3 latest");
        assert!(u.insert(entry(35, 5), 3));
        let second: Vec<i64> = u.take_unsent(&names).iter().map(|e| e.ts).collect();
        assert_eq!(second, vec![35], "only what is new since");
        assert!(u.take_unsent(&names).is_empty());
    }
}
