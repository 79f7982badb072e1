//! `recent_activity`: each user's latest events (the "footprint").
//!
//! Input: [`RecentEvent`]s, exchanged by (app, user). State: per user, the
//! `keep` latest events by event time (ties broken by source position). Changed
//! users are emitted every `updates` of processing time and when the input
//! ends. A user silent for `ttl` of event time (by the watermark) is dropped,
//! as the store's copy expires with the same TTL.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};

use crate::Time;
use crate::metrics::Metrics;
use crate::result::{Output, RecentEntry, RecentRow};
use crate::route::RecentEvent;
use crate::spec::RecentSpec;

/// Extension trait: keep each user's recent activity.
pub trait RecentActivity<'s> {
    /// Keeps the latest `spec.keep` events per user and emits changed users.
    fn recent_activity(
        self,
        spec: RecentSpec,
        metrics: Arc<Metrics>,
    ) -> StreamVec<'s, Time, Output>;
}

struct User {
    events: Vec<RecentEntry>,
    last_ts: i64,
    dirty: bool,
}

impl<'s> RecentActivity<'s> for StreamVec<'s, Time, RecentEvent> {
    fn recent_activity(
        self,
        spec: RecentSpec,
        metrics: Arc<Metrics>,
    ) -> StreamVec<'s, Time, Output> {
        let scope = self.scope();
        let pact = Exchange::new(|e: &RecentEvent| e.route_hash());
        self.unary_frontier::<CapacityContainerBuilder<Vec<Output>>, _, _, _>(
            pact,
            "RecentActivity",
            move |_initial, info| {
                let activator = scope.activator_for(info.address);
                let mut users: HashMap<(String, String), User> = HashMap::new();
                let mut dirty: Vec<(String, String)> = Vec::new();
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
                            let key = (app_id, user_id);
                            let user = users.entry(key.clone()).or_insert_with(|| User {
                                events: Vec::with_capacity(spec.keep + 1),
                                last_ts: ts,
                                dirty: false,
                            });
                            user.last_ts = user.last_ts.max(ts);
                            let entry = RecentEntry {
                                ts,
                                partition,
                                offset,
                                event,
                                item_id,
                            };
                            // Newest first; keep the `keep` greatest entries.
                            let pos = user.events.partition_point(|x| x > &entry);
                            if pos < spec.keep && user.events.get(pos) != Some(&entry) {
                                user.events.insert(pos, entry);
                                user.events.truncate(spec.keep);
                            }
                            if !user.dirty {
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
                                rows.push(Output::Recent(RecentRow {
                                    app_id: key.0.clone(),
                                    user_id: key.1.clone(),
                                    events: user.events.clone(),
                                }));
                            }
                        }
                        metrics
                            .recent_updates
                            .fetch_add(rows.len() as u64, Ordering::Relaxed);
                        next_emit = Some(now + every);
                        unsent = None;
                    }
                    if let Some(w) = watermark {
                        let horizon = i64::try_from(w)
                            .unwrap_or(i64::MAX)
                            .saturating_sub(i64::try_from(spec.ttl).unwrap_or(i64::MAX));
                        users.retain(|_, u| u.dirty || u.last_ts >= horizon);
                    } else {
                        users.clear();
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
