//! `recent_activity`: each user's latest events (the "footprint").
//!
//! Input: [`RecentEvent`]s, exchanged by (app, user). State: only the users
//! with events not emitted yet, each with the `keep` latest of those events
//! by event time (ties broken by source position), oldest first, so that
//! the usual in-order event is appended in O(1). Every `updates` of
//! processing time, and when the input ends, each such user's row is
//! emitted, newest first, and the user leaves the operator: the stores
//! merge rows into what they hold (union without duplicates, newest first,
//! cut to `keep`), which gives the same list whatever the order and number
//! of rows, so the worker needs nothing of what it sent. Its memory
//! follows the users active within one update interval, not all users.
//! The due users' rows go out [`USERS_PER_ACTIVATION`] at a time, the
//! operator asking to run again at once until all have left, so the rows
//! waiting in the dataflow for the next operator never number more than
//! that, however many users one interval held. An operator with
//! [`MAX_PENDING_USERS`] users pending emits them at once, without waiting
//! for the interval to end, so that its table stays bounded too.
//! (An event older than the user's `keep` latest in the store is sent all
//! the same, and the store's merge cuts it.)

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

/// Users whose rows one activation of the operator emits at most.
pub const USERS_PER_ACTIVATION: usize = 8_192;

/// Pending users at which an operator emits their rows without waiting for
/// the end of the update interval, so that its table stays bounded however
/// many users one interval brings.
pub const MAX_PENDING_USERS: usize = 131_072;

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
    item_id: Option<CompactString>,
}

impl Kept {
    /// The order of [`RecentEntry`]: time, then source position (which is
    /// unique, so the rest of an entry never decides).
    fn order(&self) -> (i64, u32, i64) {
        (self.ts, self.partition, self.offset)
    }
}

/// One user's latest events not emitted yet, oldest first.
#[derive(Default)]
struct User {
    events: VecDeque<Kept>,
}

impl User {
    /// Inserts `entry` in order unless it is a duplicate or older than the
    /// `keep` latest; returns whether it was kept.
    fn insert(&mut self, entry: Kept, keep: usize) -> bool {
        let at = entry.order();
        // A user's events mostly come in order: the newest goes last.
        let mut pos = match self.events.back() {
            None => 0,
            Some(last) if last.order() < at => self.events.len(),
            Some(_) => self.events.partition_point(|x| x.order() < at),
        };
        if self.events.get(pos).is_some_and(|x| x.order() == at) {
            return false;
        }
        if self.events.len() >= keep {
            if pos == 0 {
                return false;
            }
            // Full: the oldest leaves first, so the list never grows past
            // `keep` to take the new one.
            self.events.pop_front();
            pos -= 1;
        }
        if self.events.len() == self.events.capacity() {
            // Grow by doubling from one, never past `keep`: most users have
            // one event in an update interval, and a list with room for four
            // would hold three empty slots for each of them.
            let target = (self.events.len() * 2).max(1).min(keep.max(1));
            self.events
                .reserve_exact(target.saturating_sub(self.events.len()).max(1));
        }
        if pos == self.events.len() {
            self.events.push_back(entry);
        } else {
            self.events.insert(pos, entry);
        }
        true
    }

    /// The entries, newest first.
    fn into_entries(self, names: &[CompactString]) -> Vec<RecentEntry> {
        self.events
            .into_iter()
            .rev()
            .map(|e| RecentEntry {
                ts: e.ts,
                partition: e.partition,
                offset: e.offset,
                event: names.get(e.event as usize).cloned().unwrap_or_default(),
                item_id: e.item_id,
            })
            .collect()
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
                // Only users with events not emitted yet.
                let mut users: HashMap<(CompactString, CompactString), User> = HashMap::new();
                // The users of the last interval whose rows are going out,
                // and the least time of their events.
                let mut emitting: Option<(Pending, Time)> = None;
                let mut names = EventNames::default();
                let mut next_emit: Option<Instant> = None;
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
                                item_id,
                            };
                            users
                                .entry((app_id, user_id))
                                .or_default()
                                .insert(entry, spec.keep);
                        }
                    });
                    let now = Instant::now();
                    let watermark = frontier.frontier().iter().min().copied();
                    let due = watermark.is_none()
                        || next_emit.is_none_or(|t| now >= t)
                        || users.len() >= MAX_PENDING_USERS;
                    if due && emitting.is_none() && !users.is_empty() {
                        // The interval's users leave the table at once; new
                        // events start a table of their own.
                        // (Every pending user came with a stamp, so `unsent`
                        // is set whenever `users` is not empty.)
                        if let Some(least) = unsent.take() {
                            emitting = Some((std::mem::take(&mut users).into_iter(), least));
                        }
                        next_emit = Some(now + every);
                    }
                    if let (Some((due_users, _)), Some(c)) = (emitting.as_mut(), cap.as_ref()) {
                        let mut rows =
                            Vec::with_capacity(USERS_PER_ACTIVATION.min(due_users.len()));
                        for ((app_id, user_id), user) in due_users.take(USERS_PER_ACTIVATION) {
                            let events = user.into_entries(&names.names);
                            if !events.is_empty() {
                                rows.push(Output::Recent(RecentRow {
                                    app_id: app_id.into(),
                                    user_id: user_id.into(),
                                    events,
                                }));
                            }
                        }
                        if due_users.len() == 0 {
                            emitting = None;
                        }
                        RowsEmitted {
                            kind: Emitted::Recent,
                            rows: rows.len() as u64,
                        }
                        .emit(&metrics);
                        if !rows.is_empty() {
                            output.session(c).give_iterator(rows.drain(..));
                        }
                    }
                    if let Some(c) = cap.as_mut() {
                        let pending = unsent
                            .into_iter()
                            .chain(emitting.as_ref().map(|(_, t)| *t))
                            .min();
                        let hold = match (watermark, pending) {
                            (Some(w), Some(p)) => Some(w.min(p)),
                            (w, _) => w,
                        };
                        let waiting = !users.is_empty() || emitting.is_some();
                        match hold {
                            Some(_) if !waiting => cap = None,
                            Some(w) if w > *c.time() => c.downgrade(&w),
                            Some(_) => {}
                            // The input ended with rows still to go out.
                            None if waiting => {}
                            None => cap = None,
                        }
                    }
                    if emitting.is_some() || (watermark.is_none() && !users.is_empty()) {
                        activator.activate();
                    } else if !users.is_empty()
                        && let Some(t) = next_emit
                    {
                        activator.activate_after(t.saturating_duration_since(now));
                    }
                }
            },
        )
    }
}

/// The users of one interval whose rows are being emitted.
type Pending = hashbrown::hash_map::IntoIter<(CompactString, CompactString), User>;

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ts: i64, offset: i64) -> Kept {
        Kept {
            ts,
            offset,
            partition: 0,
            event: 0,
            item_id: None,
        }
    }

    /// A view by user `u{user}` of app `a`.
    fn view(user: usize, ts: i64, offset: i64) -> RecentEvent {
        RecentEvent {
            app_id: "a".into(),
            user_id: format!("u{user}").into(),
            ts,
            event: "view".into(),
            item_id: None,
            partition: 0,
            offset,
        }
    }

    /// Five entries per user, emitted every `updates` ms.
    fn keep_5(updates: u64) -> RecentSpec {
        RecentSpec {
            keep: 5,
            ttl: 0,
            updates,
            sinks: Vec::new(),
        }
    }

    #[test]
    fn a_user_keeps_the_latest_pending_entries_newest_first() {
        let names = [CompactString::from("view")];
        let mut u = User::default();
        for (ts, off) in [(10, 0), (30, 1), (20, 2), (40, 3)] {
            assert!(u.insert(entry(ts, off), 3));
        }
        assert!(!u.insert(entry(5, 4), 3), "older than the 3 latest");
        assert!(!u.insert(entry(30, 1), 3), "a duplicate");
        let first: Vec<i64> = u.into_entries(&names).iter().map(|e| e.ts).collect();
        assert_eq!(first, vec![40, 30, 20], "newest first, the 3 latest");
    }

    #[test]
    fn a_pending_list_holds_room_for_what_it_has_and_never_more_than_keep() {
        let mut u = User::default();
        assert!(u.insert(entry(10, 0), 5));
        assert_eq!(u.events.capacity(), 1, "one event, room for one");
        assert!(u.insert(entry(20, 1), 5));
        assert_eq!(u.events.capacity(), 2);
        assert!(u.insert(entry(30, 2), 5));
        assert_eq!(u.events.capacity(), 4);
        for (ts, off) in [(40, 3), (50, 4), (60, 5), (70, 6)] {
            assert!(u.insert(entry(ts, off), 5));
        }
        assert_eq!(u.events.len(), 5);
        assert_eq!(u.events.capacity(), 5, "never past keep");
    }

    /// An interval with more due users than one activation emits: every
    /// user's row goes out exactly once, whole, and no step of the worker
    /// sees more than [`USERS_PER_ACTIVATION`] of them.
    #[test]
    fn many_due_users_go_out_a_bounded_number_per_step_and_each_once() {
        use std::cell::RefCell;
        use std::rc::Rc;
        use timely::dataflow::operators::{Inspect, ToStream};

        let users = 2 * USERS_PER_ACTIVATION + 100;
        let (per_step, rows) = timely::execute_directly(move |worker| {
            let seen = Rc::new(RefCell::new(Vec::<RecentRow>::new()));
            let sink = Rc::clone(&seen);
            worker.dataflow::<Time, _, _>(|scope| {
                let events: Vec<RecentEvent> = (0..users)
                    .flat_map(|u| (0..2i64).map(move |k| view(u, 1_000 + k, 2 * u as i64 + k)))
                    .collect();
                events
                    .to_stream(scope)
                    .recent_activity(keep_5(1_000), Arc::new(DataflowMetrics::new(Vec::new())))
                    .inspect(move |o| {
                        if let Output::Recent(r) = o {
                            sink.borrow_mut().push(r.clone());
                        }
                    });
            });
            let mut per_step = Vec::new();
            let mut before = 0;
            while worker.step() {
                let now = seen.borrow().len();
                per_step.push(now - before);
                before = now;
            }
            (per_step, seen.take())
        });
        assert!(
            per_step.iter().all(|n| *n <= USERS_PER_ACTIVATION),
            "rows per step: {per_step:?}"
        );
        assert!(
            per_step.iter().filter(|n| **n > 0).count() >= 3,
            "three steps at least: {per_step:?}"
        );
        assert_eq!(rows.len(), users, "one row per user");
        let distinct: std::collections::BTreeSet<&str> =
            rows.iter().map(|r| r.user_id.as_str()).collect();
        assert_eq!(distinct.len(), users, "each user once");
        for r in &rows {
            let ts: Vec<i64> = r.events.iter().map(|e| e.ts).collect();
            assert_eq!(
                ts,
                vec![1_001, 1_000],
                "{}: both events, newest first",
                r.user_id
            );
        }
    }

    /// With the update interval far off, users pending below the bound
    /// wait for it, and reaching the bound emits them at once.
    #[test]
    fn reaching_the_pending_bound_emits_before_the_interval_ends() {
        use std::cell::RefCell;
        use std::rc::Rc;
        use timely::dataflow::InputHandleVec;
        use timely::dataflow::operators::{Input, Inspect};

        let users_now = |first: usize, n: usize| -> Vec<RecentEvent> {
            (first..first + n)
                .map(|u| view(u, 1_000, u as i64))
                .collect()
        };
        let seen_after = timely::execute_directly(move |worker| {
            let seen = Rc::new(RefCell::new(0usize));
            let sink = Rc::clone(&seen);
            let mut input = InputHandleVec::<Time, RecentEvent>::new();
            worker.dataflow::<Time, _, _>(|scope| {
                scope
                    .input_from(&mut input)
                    .recent_activity(
                        keep_5(3_600_000),
                        Arc::new(DataflowMetrics::new(Vec::new())),
                    )
                    .inspect(move |_| *sink.borrow_mut() += 1);
            });
            let mut run = |events: Vec<RecentEvent>, steps: usize| {
                for e in events {
                    input.send(e);
                }
                input.flush();
                for _ in 0..steps {
                    worker.step();
                }
                *seen.borrow()
            };
            // The first activation emits at once and starts the hour.
            let first = run(users_now(0, 10), 10);
            let below = run(users_now(10, 10), 10);
            let at_bound = run(users_now(20, MAX_PENDING_USERS), 100);
            (first, below, at_bound)
        });
        assert_eq!(seen_after.0, 10, "the first activation emits");
        assert_eq!(
            seen_after.1, 10,
            "below the bound, users wait for the interval"
        );
        assert_eq!(
            seen_after.2,
            20 + MAX_PENDING_USERS,
            "at the bound, every pending user is emitted"
        );
    }
}
