//! `aggregate_windows`: the windowed-aggregate operator.
//!
//! Input: [`Contribution`]s, exchanged so that every contribution of one
//! (aggregate, group key) meets on one worker. State: one slot per open
//! (aggregate, key, window) with its count, exact distinct sets and sum.
//!
//! A window closes when the input frontier (the global watermark) reaches
//! `end + allowed_lateness`: no on-time contribution for it can still be in
//! flight, because the source stamps every contribution below its own
//! lateness bound. Closing emits the final row and frees the slot. Between
//! closes, changed windows are re-emitted as early updates, each window at
//! most once every `early_updates` of reading time, counted from when it
//! opened or was last emitted (see the private `early` module). Reading time
//! is processing time less the spells in which the stores held the sources
//! back ([`Flow::held`](crate::flow::Flow::held)): an early row is worth its
//! write only while the stores keep up.
//!
//! When the input ends, remaining windows are emitted as final if the data
//! ran out, and their latest values as early rows if a source was stopped
//! first (see [`RunControl`]).
//!
//! ```
//! use std::sync::Arc;
//! use timely::dataflow::operators::{Capture, ToStream};
//! use timely::dataflow::operators::capture::Event;
//! use footprint_dataflows::aggregate::AggregateWindows;
//! use footprint_dataflows::{control::RunControl, events::DataflowMetrics, flow::Flow, key::GroupKey};
//! use footprint_dataflows::{AggregateSpec, Contribution, Measure, Output, PipelineSpec, WindowSpec};
//!
//! let spec = Arc::new(PipelineSpec {
//!     aggregates: vec![AggregateSpec {
//!         name: "clicks_1m".into(),
//!         group_by: vec![],
//!         window: WindowSpec::tumbling(60_000).unwrap(),
//!         measures: vec![Measure::Count],
//!         allowed_lateness: 0,
//!         early_updates: None,
//!         sinks: vec![],
//!     }],
//!     recent: None,
//!     max_out_of_order: 0,
//! });
//! let metrics = Arc::new(DataflowMetrics::new(vec!["clicks_1m".into()]));
//! let contribution = |ts| Contribution {
//!     agg: 0, key: GroupKey::default(), ts, first_start: i64::MIN, count: 1, distinct: Default::default(), value: 0, append_ms: 0,
//!     touches: true,
//! };
//! let captured = timely::example(move |scope| {
//!     vec![contribution(1_000), contribution(2_000), contribution(61_000)]
//!         .to_stream(scope)
//!         .aggregate_windows(spec, Arc::new(RunControl::default()), Arc::new(Flow::default()), metrics)
//!         .capture()
//! });
//! let rows: Vec<Output> = captured
//!     .try_iter()
//!     .filter_map(|e| match e { Event::Messages(_, rows) => Some(rows), _ => None })
//!     .flatten()
//!     .collect();
//! let counts: Vec<(i64, u64)> = rows.iter().map(|r| match r {
//!     Output::Window(w) => (w.window_start, w.version),
//!     Output::Recent(_) => unreachable!(),
//! }).collect();
//! assert_eq!(counts, vec![(0, 2), (60_000, 1)]);
//! ```

use std::collections::BTreeMap;

use compact_str::CompactString;
use hashbrown::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use footprint_telemetry::{GaugeShare, InternalEvent};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};

use crate::Time;
use crate::control::RunControl;
use crate::events::{DataflowMetrics, Emitted, RowsEmitted, WatermarkAdvanced};
use crate::flow::Flow;
use crate::key::GroupKey;
use crate::result::{MeasureValue, Output, WindowRow};
use crate::route::Contribution;
use crate::spec::{Measure, PipelineSpec};

mod distinct;
mod early;
use distinct::{DistinctSet, Interner};
use early::EarlyQueue;

/// Extension trait: keep windowed aggregates over a stream of contributions.
pub trait AggregateWindows<'s> {
    /// Aggregates contributions into window rows (early updates and finals).
    fn aggregate_windows(
        self,
        spec: Arc<PipelineSpec>,
        control: Arc<RunControl>,
        flow: Arc<Flow>,
        metrics: Arc<DataflowMetrics>,
    ) -> StreamVec<'s, Time, Output>;
}

impl<'s> AggregateWindows<'s> for StreamVec<'s, Time, Contribution> {
    fn aggregate_windows(
        self,
        spec: Arc<PipelineSpec>,
        control: Arc<RunControl>,
        flow: Arc<Flow>,
        metrics: Arc<DataflowMetrics>,
    ) -> StreamVec<'s, Time, Output> {
        let scope = self.scope();
        let pact = Exchange::new(|c: &Contribution| c.route_hash());
        self.unary_frontier::<CapacityContainerBuilder<Vec<Output>>, _, _, _>(
            pact,
            "AggregateWindows",
            move |_initial, info| {
                let activator = scope.activator_for(info.address);
                let mut windows = Windows::new(spec);
                let mut cap: Option<Capability<Time>> = None;
                let mut rows = Vec::new();
                let mut open = GaugeShare::new(metrics.windows_open_gauge());
                move |(input, frontier), output| {
                    // Early rows are paced in reading time: while the stores
                    // hold the sources back, no window comes due, so a
                    // catch-up that waits on its stores does not add early
                    // rows for them to write.
                    let now = flow.held().reading_time(Instant::now());
                    input.for_each(|stamp, data| {
                        if let Some(t) = stamp.least()
                            && cap.as_ref().is_none_or(|c| t < c.time())
                        {
                            cap = stamp.retain_least(output.output_index());
                        }
                        for c in data.drain(..) {
                            windows.add(c, now);
                        }
                    });
                    let watermark = frontier.frontier().iter().min().copied();
                    match watermark {
                        // Once a source has stopped early, the frontier moves
                        // because capabilities are dropped, not because the
                        // watermark passed: nothing may become final.
                        Some(_) if control.interrupted() => {}
                        Some(w) => {
                            WatermarkAdvanced { watermark_ms: w }.emit(&metrics);
                            windows.close_until(w, &mut rows, &metrics);
                            windows.early(now, &mut rows, &metrics);
                        }
                        None if control.interrupted() => {
                            windows.flush_open(&mut rows, &metrics);
                            windows.clear();
                        }
                        None => windows.close_all(&mut rows, &metrics),
                    }
                    if let Some(c) = cap.as_mut() {
                        if !rows.is_empty() {
                            output.session(c).give_iterator(rows.drain(..));
                        }
                        match watermark {
                            Some(_) if windows.is_empty() => cap = None,
                            Some(w) if w > *c.time() => c.downgrade(&w),
                            Some(_) => {}
                            None => cap = None,
                        }
                    }
                    open.set(windows.live as i64);
                    if let Some(mut delay) = windows.next_early_in(now) {
                        if flow.held().sources_held() > 0 {
                            // Reading time stands still: look again once the
                            // sources may be reading.
                            delay = delay.max(HELD_POLL);
                        }
                        activator.activate_after(delay);
                    }
                }
            },
        )
    }
}

/// How often an operator with early rows to show looks again while the
/// sources are held (reading time does not move meanwhile).
const HELD_POLL: Duration = Duration::from_millis(10);

struct Slot {
    agg: u16,
    key: GroupKey,
    start: i64,
    count: u64,
    distinct: Vec<DistinctSet>,
    sum: i128,
    dirty: bool,
    /// Tells this window's entries in the early queue from those of the
    /// closed windows that had its slot before.
    generation: u32,
    freshest_append_ms: Option<i64>,
    /// Some contribution touched it: only touched windows emit rows (see
    /// [`Contribution::touches`]).
    touched: bool,
}

/// The open windows of one worker.
struct Windows {
    spec: Arc<PipelineSpec>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Per (aggregate, key), its open windows as (start, slot), sorted by start.
    keys: HashMap<(u16, GroupKey), Vec<(i64, usize)>>,
    closing: BTreeMap<Time, Vec<usize>>,
    /// Per aggregate with early updates, its open windows by refresh time.
    early: Vec<Option<EarlyQueue>>,
    next_generation: u32,
    interner: Interner,
    live: usize,
    /// The ids of the contribution being added (kept for its memory).
    ids: Vec<Option<u32>>,
    /// Per aggregate, the names rows carry.
    names: Vec<Names>,
}

/// An aggregate's own, field and measure names, as rows carry them.
struct Names {
    aggregate: Arc<str>,
    fields: Vec<Arc<str>>,
    measures: Vec<Arc<str>>,
}

impl Windows {
    fn new(spec: Arc<PipelineSpec>) -> Self {
        Windows {
            spec: Arc::clone(&spec),
            slots: Vec::new(),
            free: Vec::new(),
            keys: HashMap::new(),
            closing: BTreeMap::new(),
            early: spec
                .aggregates
                .iter()
                .map(|a| {
                    a.early_updates
                        .map(|ms| EarlyQueue::new(Duration::from_millis(ms)))
                })
                .collect(),
            next_generation: 0,
            interner: Interner::default(),
            live: 0,
            ids: Vec::new(),
            names: spec
                .aggregates
                .iter()
                .map(|a| Names {
                    aggregate: Arc::from(a.name.as_str()),
                    fields: a
                        .group_by
                        .iter()
                        .map(|f| Arc::from(f.to_string()))
                        .collect(),
                    measures: a
                        .measures
                        .iter()
                        .map(|m| Arc::from(m.to_string()))
                        .collect(),
                })
                .collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Adds one contribution, arrived at processing time `now`.
    fn add(&mut self, c: Contribution, now: Instant) {
        let Contribution {
            agg,
            key,
            ts,
            first_start,
            count,
            distinct,
            value,
            append_ms,
            touches,
        } = c;
        let Windows {
            spec,
            slots,
            free,
            keys,
            closing,
            early,
            next_generation,
            interner,
            live,
            ids,
            ..
        } = self;
        let Some(aspec) = spec.aggregates.get(usize::from(agg)) else {
            return;
        };
        // The distinct measures' values, for each event in turn (see
        // `Contribution::distinct`), as ids.
        let measures = aspec.distinct_fields().count();
        ids.clear();
        ids.extend(distinct.into_iter().map(|d| d.map(|v| interner.id(v))));
        let k = (agg, key);
        let windows = match keys.get_mut(&k) {
            Some(w) => w,
            None => keys.entry(k.clone()).or_default(),
        };
        // A key's windows are sorted by start, and so are the event's: walk both.
        let mut j = 0;
        for start in aspec.window.starts(ts).filter(|s| *s >= first_start) {
            while windows.get(j).is_some_and(|(s, _)| *s < start) {
                j += 1;
            }
            let idx = match windows.get(j) {
                Some((s, idx)) if *s == start => *idx,
                _ => {
                    let slot = Slot {
                        agg,
                        key: k.1.clone(),
                        start,
                        count: 0,
                        distinct: (0..measures).map(|_| DistinctSet::default()).collect(),
                        sum: 0,
                        dirty: false,
                        generation: *next_generation,
                        freshest_append_ms: None,
                        touched: false,
                    };
                    let generation = *next_generation;
                    *next_generation = next_generation.wrapping_add(1);
                    let idx = match free.pop() {
                        Some(i) => {
                            slots[i] = Some(slot);
                            i
                        }
                        None => {
                            slots.push(Some(slot));
                            slots.len() - 1
                        }
                    };
                    *live += 1;
                    if let Some(q) = early[usize::from(agg)].as_mut() {
                        q.schedule(now, idx, generation);
                    }
                    closing
                        .entry(aspec.close_time(start))
                        .or_default()
                        .push(idx);
                    windows.insert(j, (start, idx));
                    idx
                }
            };
            let Some(slot) = slots[idx].as_mut() else {
                continue;
            };
            slot.count += count;
            slot.touched |= touches;
            if measures > 0 {
                for event in ids.chunks(measures) {
                    for (set, id) in slot.distinct.iter_mut().zip(event) {
                        if let Some(id) = id
                            && set.insert(*id)
                        {
                            interner.retain(*id);
                        }
                    }
                }
            }
            slot.sum += value;
            if append_ms > 0 {
                slot.freshest_append_ms = Some(
                    slot.freshest_append_ms
                        .map_or(append_ms, |t| t.max(append_ms)),
                );
            }
            if !slot.dirty && slot.touched {
                slot.dirty = true;
                if let Some(q) = early[usize::from(agg)].as_mut() {
                    q.mark_dirty();
                }
            }
        }
        // A value that no window took (all its windows already had it) is not kept.
        for id in ids.drain(..).flatten() {
            interner.forget_if_unused(id);
        }
    }

    fn row(&self, slot: &Slot, is_final: bool) -> WindowRow {
        window_row(&self.spec, &self.names, slot, is_final)
    }

    fn remove(&mut self, idx: usize) -> Option<Slot> {
        let slot = self.slots.get_mut(idx)?.take()?;
        if slot.dirty
            && let Some(q) = self.early[usize::from(slot.agg)].as_mut()
        {
            q.mark_clean();
        }
        for set in &slot.distinct {
            for id in set.ids() {
                self.interner.release(id);
            }
        }
        self.free.push(idx);
        self.live -= 1;
        let k = (slot.agg, slot.key.clone());
        if let Some(list) = self.keys.get_mut(&k) {
            list.retain(|(_, i)| *i != idx);
            if list.is_empty() {
                self.keys.remove(&k);
            }
        }
        Some(slot)
    }

    /// Emits and drops every window whose close time the watermark has reached.
    fn close_until(&mut self, watermark: Time, rows: &mut Vec<Output>, metrics: &DataflowMetrics) {
        while let Some(entry) = self.closing.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            let idxs = entry.remove();
            self.close(idxs, rows, metrics);
        }
        debug_assert!(
            self.live > 0 || self.interner.len() == 0,
            "interned values outlived their windows"
        );
    }

    fn close_all(&mut self, rows: &mut Vec<Output>, metrics: &DataflowMetrics) {
        while let Some((_, idxs)) = self.closing.pop_first() {
            self.close(idxs, rows, metrics);
        }
        self.clear();
    }

    fn close(&mut self, idxs: Vec<usize>, rows: &mut Vec<Output>, metrics: &DataflowMetrics) {
        let mut closed = vec![0u64; self.spec.aggregates.len()];
        for idx in idxs {
            if let Some(slot) = self.remove(idx)
                && slot.touched
            {
                rows.push(Output::Window(self.row(&slot, true)));
                if let Some(n) = closed.get_mut(usize::from(slot.agg)) {
                    *n += 1;
                }
            }
        }
        for (agg, rows) in closed.into_iter().enumerate() {
            if rows > 0 {
                RowsEmitted {
                    kind: Emitted::Final(agg as u16),
                    rows,
                }
                .emit(metrics);
            }
        }
    }

    fn clear(&mut self) {
        *self = Windows::new(Arc::clone(&self.spec));
    }

    /// Emits every changed open window as an early row, whatever its
    /// aggregate's interval: the input was interrupted, so none is final.
    fn flush_open(&mut self, rows: &mut Vec<Output>, metrics: &DataflowMetrics) {
        let before = rows.len();
        for slot in self.slots.iter().flatten() {
            if slot.dirty {
                rows.push(Output::Window(self.row(slot, false)));
            }
        }
        RowsEmitted {
            kind: Emitted::Early,
            rows: (rows.len() - before) as u64,
        }
        .emit(metrics);
    }

    /// Emits each changed open window whose refresh is due, and schedules
    /// every window that came due for one interval later.
    fn early(&mut self, now: Instant, rows: &mut Vec<Output>, metrics: &DataflowMetrics) {
        let before = rows.len();
        let Windows {
            spec,
            slots,
            early,
            names,
            ..
        } = self;
        for queue in early.iter_mut().flatten() {
            while let Some((idx, generation)) = queue.pop_due(now) {
                let Some(slot) = slots.get_mut(idx).and_then(Option::as_mut) else {
                    continue;
                };
                if slot.generation != generation {
                    continue;
                }
                if slot.dirty {
                    rows.push(Output::Window(window_row(spec, names, slot, false)));
                    // The next row carries what this one did not: a final
                    // row that only restates it is not an event's latency.
                    slot.freshest_append_ms = None;
                    slot.dirty = false;
                    queue.mark_clean();
                }
                queue.schedule(now, idx, generation);
            }
        }
        let emitted = (rows.len() - before) as u64;
        if emitted > 0 {
            RowsEmitted {
                kind: Emitted::Early,
                rows: emitted,
            }
            .emit(metrics);
        }
    }

    /// How long until the next early row may be due, if any window changed.
    fn next_early_in(&self, now: Instant) -> Option<Duration> {
        self.early
            .iter()
            .flatten()
            .filter_map(|q| q.wake_in(now))
            .min()
    }
}

/// The row of `slot`, with the names of its aggregate.
fn window_row(spec: &PipelineSpec, names: &[Names], slot: &Slot, is_final: bool) -> WindowRow {
    let agg = usize::from(slot.agg);
    let aspec = &spec.aggregates[agg];
    let names = &names[agg];
    let mut distinct = slot.distinct.iter();
    let measures = aspec
        .measures
        .iter()
        .zip(&names.measures)
        .map(|(m, name)| {
            let v = match m {
                Measure::Count => MeasureValue::Count(slot.count),
                Measure::Distinct(_) => {
                    MeasureValue::Distinct(distinct.next().map_or(0, |s| s.len() as u64))
                }
                Measure::SumValue => MeasureValue::Sum(slot.sum),
            };
            (name.clone(), v)
        })
        .collect();
    WindowRow {
        agg: slot.agg,
        aggregate: Arc::clone(&names.aggregate),
        key: names
            .fields
            .iter()
            .cloned()
            .zip(slot.key.part_strs().map(CompactString::from))
            .collect(),
        window_start: slot.start,
        window_end: aspec.window.end(slot.start),
        measures,
        version: slot.count,
        is_final,
        freshest_append_ms: slot.freshest_append_ms,
    }
}
