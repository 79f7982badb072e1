//! `write_to`: the dataflow operator that hands result rows to the sinks.
//!
//! Rows stay on the worker that produced them (each identity belongs to one
//! worker) and are grouped by sink according to [`Routing`]. Each batch is
//! written once: store sinks run behind
//! [`GuardedSink`](crate::util::guard::GuardedSink), which owns retries and
//! diversion. A write that still fails is counted and logged at ERROR, since
//! its data is then at risk.
//!
//! # Store writers
//! A sink whose store keeps one value per identity ([`Sink::folds`]: Redis
//! and MySQL) is written on a thread of its own, so the worker goes on
//! reading and aggregating while a store is busy. The operator holds a
//! capability for the rows it has handed to that thread, and for those
//! waiting for it, until the thread reports them written (or diverted): the
//! output frontier, which the source's offset commits wait for, therefore
//! still passes a time only once every row at that time is in its store.
//!
//! One batch is in flight per store writer. Rows that arrive meanwhile wait,
//! folded by identity: a window row replaces a waiting row of the same
//! (aggregate, key, window) whose (version, final) pair is not higher, and
//! recent-activity rows of the same user are merged (union, newest first,
//! cut to `keep`). The stores apply exactly these rules to every write
//! (`docs/design.md#results-and-the-version-rule`), so a folded batch
//! leaves them as the unfolded rows would; a
//! slow store gets fewer, larger writes instead of holding back the
//! dataflow, and what waits is bounded by the number of identities.
//! Folded-away rows are counted in `footprint_sink_folded_total`. A row
//! that several stores receive is kept once, shared by their folds; each
//! writer thread takes its own copy a chunk at a time.
//!
//! Rows waiting or in flight are counted in the process's
//! [`Flow`]; at its limit (config `sinks.max_rows_waiting`) the process's
//! sources pause reading
//! until the writers catch up, so a backlog read faster than the stores take
//! it does not grow the memory; a pause that lasts
//! [`HOLD_AFTER`](footprint_dataflows::source::HOLD_AFTER) also pauses their
//! Kafka partitions, dropping what librdkafka read ahead.
//!
//! A write that fails (neither written nor diverted), or a writer thread
//! that dies (a sink that panics), is reported as [`RowsLost`] and sets the
//! flow's rows-lost latch, so the process stops committing source offsets;
//! the dataflow is not held back.
//!
//! Other sinks (files, memory) take every row, in order, on the worker
//! thread.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};

use footprint_dataflows::crashpoint;
use footprint_dataflows::flow::Flow;
use footprint_dataflows::{Output, RecentEntry, Time};
use footprint_telemetry::InternalEvent;
use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};
use timely::scheduling::SyncActivator;

use crate::Sink;
use crate::events::{RowsFolded, RowsLost, RowsWritten, SinkFlushFailed, SinkMetrics};

/// Rows per call to a store writer's sink: the switch and breaker are
/// consulted between chunks, so a flipped switch takes effect within one.
const WRITE_CHUNK: usize = 2_000;

/// Which sinks receive which rows: indices into the worker's sink list.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Per aggregate index, the sinks of its window rows.
    pub windows: Vec<Vec<usize>>,
    /// The sinks of recent-activity rows.
    pub recent: Vec<usize>,
    /// Entries kept per user in recent activity (the spec's `keep`), which
    /// folded recent rows are cut to; `None` keeps every entry.
    pub recent_keep: Option<usize>,
}

/// Extension trait: write a stream of rows to sinks.
pub trait WriteTo<'s> {
    /// Writes every row to the sinks `routing` names for it. The returned
    /// stream carries no data; its frontier passes a time once every row at
    /// that time has been written or diverted, which is what a probe on it
    /// (the source's offset checkpoints) waits for. Rows waiting for the
    /// store writers are counted in `flow`.
    fn write_to(
        self,
        sinks: Vec<Box<dyn Sink>>,
        routing: Routing,
        flow: Arc<Flow>,
        metrics: Arc<SinkMetrics>,
    ) -> StreamVec<'s, Time, ()>;
}

impl<'s> WriteTo<'s> for StreamVec<'s, Time, Output> {
    fn write_to(
        self,
        sinks: Vec<Box<dyn Sink>>,
        routing: Routing,
        flow: Arc<Flow>,
        metrics: Arc<SinkMetrics>,
    ) -> StreamVec<'s, Time, ()> {
        let scope = self.scope();
        let keep = routing.recent_keep;
        self.unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Pipeline,
            "WriteTo",
            move |_cap, info| {
                let worker = scope.worker();
                let mut lanes: Vec<Lane> = sinks
                    .into_iter()
                    .map(|sink| {
                        if sink.folds() {
                            let activator = worker.sync_activator_for(info.address.to_vec());
                            Lane::Writer(Writer::spawn(
                                sink,
                                keep,
                                activator,
                                Arc::clone(&flow),
                                Arc::clone(&metrics),
                            ))
                        } else {
                            Lane::Inline {
                                sink,
                                batch: Vec::new(),
                            }
                        }
                    })
                    .collect();
                let mut flushed = true;
                move |input, _output| {
                    input.for_each(|cap, data| {
                        for row in data.drain(..) {
                            let targets = match &row {
                                Output::Window(w) => routing
                                    .windows
                                    .get(usize::from(w.agg))
                                    .map_or(&[][..], Vec::as_slice),
                                Output::Recent(_) => routing.recent.as_slice(),
                            };
                            // One copy of the row, whichever stores wait for it.
                            let row = Arc::new(row);
                            if let Some((last, rest)) = targets.split_last() {
                                for t in rest {
                                    lanes[*t].push(Arc::clone(&row), &cap);
                                }
                                lanes[*last].push(row, &cap);
                            }
                        }
                    });
                    for lane in &mut lanes {
                        if let Lane::Writer(w) = lane {
                            w.poll();
                        }
                    }
                    let mut wrote_one = false;
                    for lane in &mut lanes {
                        let Lane::Inline { sink, batch } = lane else {
                            continue;
                        };
                        if batch.is_empty() {
                            continue;
                        }
                        if wrote_one {
                            crashpoint::reached("sink.mid_batch");
                        }
                        wrote_one = true;
                        flushed = false;
                        write_counted(sink.as_mut(), batch, &flow, &metrics);
                        batch.clear();
                    }
                    if wrote_one {
                        crashpoint::reached("sink.after_write");
                    }
                    // Flush after every burst: files stay readable while a job runs.
                    if !flushed {
                        for lane in &mut lanes {
                            let Lane::Inline { sink, .. } = lane else {
                                continue;
                            };
                            if let Err(e) = sink.flush() {
                                SinkFlushFailed {
                                    sink: sink.name(),
                                    error: &e,
                                }
                                .emit(&metrics);
                            }
                        }
                        flushed = true;
                    }
                }
            },
        )
    }
}

/// Writes `rows` once, reporting the outcome unless the sink reports it
/// itself; rows neither written nor diverted set the rows-lost latch.
fn write_counted(sink: &mut dyn Sink, rows: &[Output], flow: &Flow, metrics: &SinkMetrics) {
    match sink.write(rows) {
        Ok(()) if sink.counts_itself() => {}
        Ok(()) => RowsWritten {
            sink: sink.name(),
            rows,
            took: None,
        }
        .emit(metrics),
        Err(e) => {
            flow.lose_rows();
            RowsLost {
                sink: sink.name(),
                rows: rows.len() as u64,
                error: &e,
            }
            .emit(metrics);
        }
    }
}

/// How one sink is driven.
enum Lane {
    /// On the worker thread, every row in order.
    Inline {
        sink: Box<dyn Sink>,
        batch: Vec<Output>,
    },
    /// On a writer thread, folding rows while it is busy.
    Writer(Writer),
}

impl Lane {
    fn push(&mut self, row: Arc<Output>, cap: &timely::dataflow::operators::InputCapability<Time>) {
        match self {
            Lane::Inline { batch, .. } => batch.push(Arc::unwrap_or_clone(row)),
            Lane::Writer(w) => {
                if w.waiting.push(row) {
                    w.flow.rows_queued(1);
                }
                // One capability, at the least time of the waiting rows.
                if let Some(t) = cap.least()
                    && w.waiting_cap.as_ref().is_none_or(|c| *t < *c.time())
                {
                    w.waiting_cap = Some(cap.delayed(t, 0));
                }
            }
        }
    }
}

/// A batch handed to a store writer's thread.
struct InFlight {
    /// Held until the thread reports the batch written.
    _cap: Option<Capability<Time>>,
    rows: u64,
}

/// A store sink on a thread of its own, with one batch in flight.
struct Writer {
    name: String,
    /// Batches to the thread; `None` once it has stopped.
    jobs: Option<Sender<Vec<Arc<Output>>>>,
    /// One message per batch the thread has finished.
    done: Receiver<()>,
    /// The batch the thread is writing, if any.
    in_flight: Option<InFlight>,
    /// Counts the rows waiting or in flight.
    flow: Arc<Flow>,
    /// Reports the outcomes.
    metrics: Arc<SinkMetrics>,
    /// Rows waiting for the thread, folded by identity.
    waiting: Fold,
    /// Held for the waiting rows.
    waiting_cap: Option<Capability<Time>>,
}

impl Writer {
    fn spawn(
        mut sink: Box<dyn Sink>,
        keep: Option<usize>,
        activator: SyncActivator,
        flow: Arc<Flow>,
        metrics: Arc<SinkMetrics>,
    ) -> Writer {
        let name = sink.name().to_owned();
        let (jobs, batches) = mpsc::channel::<Vec<Arc<Output>>>();
        let (finished, done) = mpsc::channel();
        let thread_metrics = Arc::clone(&metrics);
        let thread_flow = Arc::clone(&flow);
        let spawned = std::thread::Builder::new()
            .name(format!("footprint-{name}-writer"))
            .spawn(move || {
                // Declared first, so dropped last: however the thread ends,
                // even by a panic, the operator wakes and sees it gone.
                let wake = WakeOnExit(activator);
                let finished = finished;
                for batch in batches {
                    // Rows are shared with the other stores' writers until
                    // the last of them takes its own: copied a chunk at a time.
                    let mut rows = batch.into_iter();
                    loop {
                        let chunk: Vec<Output> = rows
                            .by_ref()
                            .take(WRITE_CHUNK)
                            .map(Arc::unwrap_or_clone)
                            .collect();
                        if chunk.is_empty() {
                            break;
                        }
                        write_counted(sink.as_mut(), &chunk, &thread_flow, &thread_metrics);
                    }
                    if let Err(e) = sink.flush() {
                        SinkFlushFailed {
                            sink: sink.name(),
                            error: &e,
                        }
                        .emit(&thread_metrics);
                    }
                    crashpoint::reached("sink.mid_batch");
                    if finished.send(()).is_err() {
                        break;
                    }
                    // The operator may be parked with nothing else to do.
                    let _ = wake.0.activate();
                }
            });
        let jobs = match spawned {
            Ok(_) => Some(jobs),
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "the store writer thread did not start; its rows will not be written");
                None
            }
        };
        Writer {
            name,
            jobs,
            done,
            in_flight: None,
            flow,
            metrics,
            waiting: Fold::new(keep),
            waiting_cap: None,
        }
    }

    /// Takes finished batches, and hands the waiting rows to an idle thread.
    fn poll(&mut self) {
        loop {
            match self.done.try_recv() {
                Ok(()) => {
                    if let Some(batch) = self.in_flight.take() {
                        self.release(batch.rows);
                        crashpoint::reached("sink.after_write");
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    // The thread is gone (a sink panicked): what it held is
                    // not written, and must not hold the dataflow back.
                    self.jobs = None;
                    if let Some(batch) = self.in_flight.take() {
                        self.fail(batch.rows);
                    }
                    break;
                }
            }
        }
        let folded = std::mem::take(&mut self.waiting.folded);
        if folded > 0 {
            RowsFolded {
                sink: &self.name,
                rows: folded,
            }
            .emit(&self.metrics);
        }
        if self.in_flight.is_some() || self.waiting.rows.is_empty() {
            return;
        }
        let rows = self.waiting.take();
        let batch = InFlight {
            _cap: self.waiting_cap.take(),
            rows: rows.len() as u64,
        };
        match &self.jobs {
            Some(jobs) if jobs.send(rows).is_ok() => self.in_flight = Some(batch),
            _ => {
                self.jobs = None;
                self.fail(batch.rows);
            }
        }
    }

    /// `n` rows are no longer waiting.
    fn release(&self, n: u64) {
        self.flow.rows_settled(n);
    }

    /// `n` rows will not be written: the thread has stopped.
    fn fail(&self, n: u64) {
        self.release(n);
        self.flow.lose_rows();
        RowsLost {
            sink: &self.name,
            rows: n,
            error: &"the store writer has stopped",
        }
        .emit(&self.metrics);
    }
}

/// Activates the operator when dropped.
struct WakeOnExit(SyncActivator);

impl Drop for WakeOnExit {
    fn drop(&mut self) {
        let _ = self.0.activate();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // A dataflow torn down with rows still here no longer holds them.
        let in_flight = self.in_flight.as_ref().map_or(0, |b| b.rows);
        self.release(in_flight + self.waiting.rows.len() as u64);
    }
}

/// Rows waiting for a store writer, at most one per identity. A row that
/// several stores receive is shared by their folds (one copy in memory);
/// merging into it copies it for this fold only.
struct Fold {
    rows: Vec<Arc<Output>>,
    /// Indices into `rows`, by the hash of the row's identity.
    index: HashTable<usize>,
    hasher: DefaultHashBuilder,
    keep: Option<usize>,
    /// Rows replaced or merged since last counted.
    folded: u64,
}

impl Fold {
    fn new(keep: Option<usize>) -> Self {
        Fold {
            rows: Vec::new(),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            keep,
            folded: 0,
        }
    }

    fn identity_hash(hasher: &DefaultHashBuilder, row: &Output) -> u64 {
        let mut h = hasher.build_hasher();
        match row {
            Output::Window(w) => {
                0u8.hash(&mut h);
                w.agg.hash(&mut h);
                w.window_start.hash(&mut h);
                for (_, v) in &w.key {
                    v.hash(&mut h);
                }
            }
            Output::Recent(r) => {
                1u8.hash(&mut h);
                r.app_id.hash(&mut h);
                r.user_id.hash(&mut h);
            }
        }
        h.finish()
    }

    fn same_identity(a: &Output, b: &Output) -> bool {
        match (a, b) {
            (Output::Window(a), Output::Window(b)) => {
                a.agg == b.agg
                    && a.window_start == b.window_start
                    && a.key.len() == b.key.len()
                    && a.key.iter().zip(&b.key).all(|((_, x), (_, y))| x == y)
            }
            (Output::Recent(a), Output::Recent(b)) => {
                a.app_id == b.app_id && a.user_id == b.user_id
            }
            _ => false,
        }
    }

    /// Adds `row`; true when it is a new identity, false when it was folded
    /// into the waiting row of its identity.
    fn push(&mut self, row: Arc<Output>) -> bool {
        let hash = Self::identity_hash(&self.hasher, &row);
        let rows = &self.rows;
        if let Some(&i) = self
            .index
            .find(hash, |&i| Self::same_identity(&rows[i], &row))
        {
            self.folded += 1;
            let slot = &mut self.rows[i];
            match (&**slot, &*row) {
                (Output::Window(old), Output::Window(new)) if new.replaces(old) => {
                    // The waiting row was never written: its messages reach
                    // the store with the newer one.
                    let freshest = old.freshest_append_ms.max(new.freshest_append_ms);
                    let carry = freshest != new.freshest_append_ms;
                    *slot = row;
                    if carry && let Output::Window(w) = Arc::make_mut(slot) {
                        w.freshest_append_ms = freshest;
                    }
                }
                (Output::Recent(_), Output::Recent(new)) => {
                    if let Output::Recent(old) = Arc::make_mut(slot) {
                        RecentEntry::merge(
                            &mut old.events,
                            &new.events,
                            self.keep.unwrap_or(usize::MAX),
                        );
                    }
                }
                // An older window row changes nothing (and the same
                // identity implies the same kind).
                _ => {}
            }
            return false;
        }
        let i = self.rows.len();
        self.rows.push(row);
        let rows = &self.rows;
        let hasher = &self.hasher;
        self.index
            .insert_unique(hash, i, |&j| Self::identity_hash(hasher, &rows[j]));
        true
    }

    fn take(&mut self) -> Vec<Arc<Output>> {
        self.index.clear();
        std::mem::take(&mut self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use footprint_dataflows::{MeasureValue, RecentRow, WindowRow};

    fn taken(f: &mut Fold) -> Vec<Output> {
        f.take().into_iter().map(Arc::unwrap_or_clone).collect()
    }

    fn window(key: &str, start: i64, version: u64, is_final: bool) -> Output {
        Output::Window(WindowRow {
            agg: 0,
            aggregate: "a".into(),
            key: vec![("k".into(), key.into())],
            window_start: start,
            window_end: start + 60_000,
            measures: vec![("count".into(), MeasureValue::Count(version))],
            version,
            is_final,
            freshest_append_ms: None,
        })
    }

    fn entry(ts: i64) -> RecentEntry {
        RecentEntry {
            ts,
            partition: 0,
            offset: ts,
            event: "view".into(),
            item_id: None,
        }
    }

    fn recent(user: &str, ts: &[i64]) -> Output {
        Output::Recent(RecentRow {
            app_id: "app".into(),
            user_id: user.into(),
            events: ts.iter().rev().map(|t| entry(*t)).collect(),
        })
    }

    #[test]
    fn keeps_the_highest_version_of_each_window_in_first_arrival_order() {
        let mut f = Fold::new(None);
        f.push(window("x", 0, 3, false).into());
        f.push(window("y", 0, 1, false).into());
        f.push(window("x", 0, 5, false).into());
        f.push(window("x", 60_000, 1, false).into());
        f.push(window("x", 0, 4, false).into()); // older: changes nothing
        f.push(window("x", 0, 5, true).into()); // same version, now final
        assert_eq!(f.folded, 3);
        assert_eq!(
            taken(&mut f),
            vec![
                window("x", 0, 5, true),
                window("y", 0, 1, false),
                window("x", 60_000, 1, false)
            ]
        );
        assert!(taken(&mut f).is_empty(), "taking empties the fold");
    }

    #[test]
    fn merges_recent_rows_of_a_user_and_cuts_them_to_keep() {
        let mut f = Fold::new(Some(3));
        f.push(recent("u1", &[1, 2]).into());
        f.push(recent("u2", &[7]).into());
        f.push(recent("u1", &[2, 3, 4]).into());
        assert_eq!(f.folded, 1);
        assert_eq!(
            taken(&mut f),
            vec![recent("u1", &[2, 3, 4]), recent("u2", &[7])]
        );
    }

    #[test]
    fn rows_of_different_kinds_or_aggregates_never_fold() {
        let mut f = Fold::new(None);
        let mut other = window("x", 0, 1, false);
        if let Output::Window(w) = &mut other {
            w.agg = 1;
        }
        f.push(window("x", 0, 1, false).into());
        f.push(other.clone().into());
        f.push(recent("x", &[0]).into());
        assert_eq!(f.folded, 0);
        assert_eq!(f.take().len(), 3);
    }

    #[test]
    fn a_folded_row_passes_its_freshest_append_to_the_row_that_replaces_it() {
        let fresh = |row: Output, t: Option<i64>| -> Arc<Output> {
            let mut row = row;
            if let Output::Window(w) = &mut row {
                w.freshest_append_ms = t;
            }
            row.into()
        };
        let freshest = |rows: Vec<Output>| -> Vec<Option<i64>> {
            rows.into_iter()
                .map(|r| match r {
                    Output::Window(w) => w.freshest_append_ms,
                    Output::Recent(_) => None,
                })
                .collect()
        };
        // An early row waits; the final row restating it brings nothing new.
        let mut f = Fold::new(None);
        f.push(fresh(window("x", 0, 5, false), Some(700)));
        f.push(fresh(window("x", 0, 5, true), None));
        assert_eq!(freshest(taken(&mut f)), vec![Some(700)]);
        // A newer row with newer messages keeps its own.
        f.push(fresh(window("x", 0, 5, false), Some(700)));
        f.push(fresh(window("x", 0, 6, true), Some(900)));
        assert_eq!(freshest(taken(&mut f)), vec![Some(900)]);
        // A row shared with another fold is not changed under it.
        let mut other = Fold::new(None);
        let shared = fresh(window("y", 0, 2, true), None);
        f.push(fresh(window("y", 0, 1, false), Some(300)));
        f.push(Arc::clone(&shared));
        other.push(shared);
        assert_eq!(freshest(taken(&mut f)), vec![Some(300)]);
        assert_eq!(freshest(taken(&mut other)), vec![None]);
    }

    #[test]
    fn a_row_shared_by_two_folds_is_merged_in_one_only() {
        let (mut a, mut b) = (Fold::new(None), Fold::new(None));
        let first: Arc<Output> = recent("u1", &[1]).into();
        a.push(Arc::clone(&first));
        b.push(first);
        a.push(recent("u1", &[2]).into());
        assert_eq!(taken(&mut a), vec![recent("u1", &[1, 2])]);
        assert_eq!(taken(&mut b), vec![recent("u1", &[1])]);
    }
}
