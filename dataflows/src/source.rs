//! `partition_source`: the timely source that reads partitions, stamps each
//! event with its partition's watermark, routes it, and holds the worker's
//! capability at the worker's watermark.
//!
//! The reading itself is behind [`PartitionReader`], so the same stamping
//! logic runs over Kafka (`footprint-connectors`) and over in-memory
//! partitions ([`MemoryReader`], for tests and the engine benchmark).
//!
//! Per activation the source reads up to `batch × weight` messages from each
//! of its partitions, sends everything at its current capability (which is
//! at most every stamp it hands out; the round's contributions merged per
//! group and windows, see [`crate::combine`]), and then downgrades the
//! capability to the new worker watermark. The frontier downstream is therefore the minimum
//! watermark over every partition of every worker.
//!
//! Partitions are aligned: one whose watermark is more than
//! [`SourceSettings::max_drift`] ahead of the slowest partition with a
//! backlog anywhere in the cluster (as the watermark board tells) is skipped
//! until that one catches up, so a catch-up does not open windows that only
//! wait. While the store writers hold the source back (back-pressure, see
//! [`Flow`]), it reads nothing, and the process's reading-time clock
//! ([`Flow::held`]) stands still.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use footprint_telemetry::{GaugeShare, InternalEvent};

use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, StreamVec};
use timely::progress::frontier::MutableAntichain;

use crate::Time;
use crate::board::Board;
use crate::checkpoint::{Checkpoint, OffsetLedger};
use crate::combine::Combiner;
use crate::control::RunControl;
use crate::event::{BadInput, Event};
use crate::events::{DataflowMetrics, EventLate, EventRejected, MessagesRead};
use crate::flow::Flow;
use crate::partitions::{PartitionState, PartitionTable, PartitionView};
use crate::route::{Contribution, Late, RecentEvent, Record, route, route_tail};
use crate::spec::PipelineSpec;
use crate::watermark::WatermarkTracker;

/// One message as read from a partition.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Payload bytes.
    pub payload: &'a [u8],
    /// Offset within the partition.
    pub offset: i64,
    /// The broker's timestamp of the message, ms since the epoch, if known.
    pub timestamp_ms: Option<i64>,
    /// Past a bounded backfill's range: read only to complete the windows
    /// the range touched (see [`PartitionReader::range_end`]).
    pub tail: bool,
}

/// What the source decided about one message.
#[derive(Debug)]
pub enum Verdict {
    /// Routed; counted in all its windows.
    Accepted,
    /// Routed, but some of its windows were already final.
    Late {
        /// The stamp (partition watermark) it was read at.
        stamp: Time,
        /// Which aggregates it missed windows of.
        late: Vec<Late>,
    },
    /// Rejected as bad input.
    Bad(BadInput),
}

/// How a read of one partition ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadStatus {
    /// Messages handed to the handler.
    pub read: usize,
    /// The partition has no more messages right now.
    pub at_end: bool,
    /// The partition will never have more (a bounded run reached its end).
    pub finished: bool,
}

/// A worker's share of the partitions. Implementations own their I/O and
/// forward rejected and late messages where they belong.
pub trait PartitionReader: 'static {
    /// Why a commit failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// How many partitions this worker reads.
    fn partitions(&self) -> usize;
    /// Reads up to `max` messages of partition `idx`, calling `handle` on each
    /// in offset order and acting on its verdict (dead-letter, late topic).
    fn read(
        &mut self,
        idx: usize,
        max: usize,
        handle: &mut dyn FnMut(&Message<'_>) -> Verdict,
    ) -> ReadStatus;
    /// Partition `idx`'s number among all source partitions (over every
    /// source topic, in config order): part of each recent-activity entry's
    /// identity.
    fn partition_id(&self, idx: usize) -> u32 {
        idx as u32
    }
    /// For a bounded backfill: the offset partition `idx`'s range ends
    /// before. Such a reader keeps reading past it (messages flagged
    /// [`Message::tail`]) until every worker's range is settled, that is
    /// read and with every row derived from it written; `None` otherwise.
    fn range_end(&self, _idx: usize) -> Option<i64> {
        None
    }
    /// What the reader's client has fetched that was not read yet, if it
    /// knows (shown as `footprint_source_read_ahead_messages` and `_bytes`).
    fn read_ahead(&self) -> Option<ReadAhead> {
        None
    }
    /// Called after each round over all partitions.
    fn after_round(&mut self) {}
    /// The source is held back by its stores (back-pressure) and reads
    /// nothing until `hold(false)`. A reader may stop fetching meanwhile and
    /// drop what it read ahead, as long as reading then goes on at the first
    /// message not yet read.
    fn hold(&mut self, _held: bool) {}
    /// Where partition `idx` resumes and its largest event time before that,
    /// when it resumes from a checkpoint.
    fn resume_point(&self, _idx: usize) -> Option<(i64, Option<i64>)> {
        None
    }
    /// Records that every message before each checkpoint is done (Kafka:
    /// commits the offsets, after delivering the dead-letter and late records).
    fn commit(&mut self, _points: &[Checkpoint]) -> Result<(), Self::Error> {
        Ok(())
    }
    /// Called once when the source stops.
    fn close(&mut self) {}
}

/// Messages a reader's client fetched ahead of what the source read: memory
/// that a catch-up holds beyond its open windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadAhead {
    /// Messages fetched and not read yet.
    pub messages: u64,
    /// Their payload bytes.
    pub bytes: u64,
}

/// How long the stores must hold the source back before its reader is told
/// to ([`PartitionReader::hold`]): a catch-up that waits for its stores then
/// drops the consumers' read-ahead instead of filling it, while shorter
/// waits leave it alone.
pub const HOLD_AFTER: Duration = Duration::from_millis(20);

/// A source held back by its stores, counted in [`Flow::held`] from its
/// start until it is dropped.
struct Pressed {
    flow: Arc<Flow>,
    since: Instant,
}

impl Pressed {
    fn new(flow: Arc<Flow>, since: Instant) -> Self {
        flow.held().hold(since);
        Pressed { flow, since }
    }
}

impl Drop for Pressed {
    fn drop(&mut self) {
        self.flow.held().release(Instant::now());
    }
}

/// Source settings.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Messages per partition per activation.
    pub batch: usize,
    /// Relative read weights per partition (cycled); all 1 when empty.
    pub weights: Vec<usize>,
    /// How long a partition read to its end stays silent before it stops holding the watermark back.
    pub idle_timeout: Duration,
    /// How far, in event time (ms), a partition's watermark may run ahead of
    /// the slowest partition any worker of the cluster reads; a partition
    /// further ahead is not read until the slowest catches up. `None` reads
    /// every partition as fast as it comes.
    ///
    /// Windows close only once the slowest partition passes them, so a
    /// partition read ahead of it only opens windows that wait: in a
    /// catch-up, where partitions are read at whatever speed their worker
    /// and broker allow, the open windows (and their early rows) would grow
    /// with the drift.
    pub max_drift: Option<u64>,
}

/// The default of [`SourceSettings::max_drift`], ms.
pub const MAX_DRIFT: u64 = 10_000;

impl Default for SourceSettings {
    fn default() -> Self {
        SourceSettings {
            batch: 1024,
            weights: Vec::new(),
            idle_timeout: Duration::from_secs(10),
            max_drift: Some(MAX_DRIFT),
        }
    }
}

/// What a worker's source works with, beside the spec.
pub struct SourceParts<R> {
    /// The worker's partitions.
    pub reader: Rc<RefCell<R>>,
    /// Which offsets are done, shared with the worker's
    /// [`Checkpoints`](crate::pipeline::Checkpoints), which commits them.
    pub ledger: Rc<RefCell<OffsetLedger>>,
    /// The worker's watermark board.
    pub board: Board,
}

/// The source's two streams: what the windowed aggregates count, and what
/// recent activity keeps (empty when the spec keeps none).
pub struct SourceStreams<'s> {
    /// Contributions to the windowed aggregates.
    pub windows: StreamVec<'s, Time, Contribution>,
    /// Events for recent activity.
    pub recent: StreamVec<'s, Time, RecentEvent>,
}

/// Builds the source operator for one worker.
///
/// It has one output per kind of record, so each record is handed to its
/// consumer's exchange as it was routed, without a partitioning operator
/// between them. It pauses while `flow` says the store writers are behind.
pub fn partition_source<'s, R: PartitionReader>(
    scope: Scope<'s, Time>,
    parts: SourceParts<R>,
    spec: Arc<PipelineSpec>,
    settings: SourceSettings,
    control: Arc<RunControl>,
    flow: Arc<Flow>,
    metrics: Arc<DataflowMetrics>,
) -> SourceStreams<'s> {
    let mut builder = OperatorBuilder::new("PartitionSource".to_owned(), scope);
    let info = builder.operator_info();
    let (mut window_out, windows) = builder.new_output::<Vec<Contribution>>();
    let (mut recent_out, recent) = builder.new_output::<Vec<RecentEvent>>();
    builder.build(move |caps| {
        let SourceParts {
            reader,
            ledger,
            mut board,
        } = parts;
        let activator = scope.activator_for(info.address);
        let now = Instant::now();
        let n = reader.borrow().partitions();
        let mut tracker =
            WatermarkTracker::new(n, spec.max_out_of_order, settings.idle_timeout, now);
        for idx in 0..n {
            if let Some((offset, max_ts)) = reader.borrow().resume_point(idx) {
                ledger.borrow_mut().start(idx, offset, max_ts);
                if let Some(ts) = max_ts {
                    tracker.seed(idx, ts);
                }
            }
        }
        // One capability per output, always at the same time.
        let mut cap = if n == 0 { None } else { Some(caps) };
        if n == 0 {
            board.publish(None, 0, true, None, None);
            board.close();
        }
        let mut late: Vec<Late> = Vec::new();
        let mut contributions = Combiner::default();
        let mut recents: Vec<RecentEvent> = Vec::new();
        // Since when the stores have held the source back, and whether the
        // reader was told so (`PartitionReader::hold`).
        let mut pressed: Option<Pressed> = None;
        let [ahead, messages, bytes] = metrics.source_gauges();
        let mut ahead_gauge = GaugeShare::new(ahead);
        let mut read_ahead_messages = GaugeShare::new(messages);
        let mut read_ahead_bytes = GaugeShare::new(bytes);
        let mut held = false;
        // Which partitions alignment held back this round, and when the
        // partition table was last told (see `crate::partitions`).
        let mut aligned_out = vec![false; n];
        let mut shown: Option<Instant> = None;
        let table = Arc::clone(metrics.partitions());
        move |_frontiers: &[MutableAntichain<Time>]| {
            let Some(c) = cap.as_mut() else { return };
            let mut reader = reader.borrow_mut();
            let mut ledger = ledger.borrow_mut();
            if control.stop_requested() {
                control.mark_interrupted();
                reader.close();
                pressed = None;
                cap = None;
                board.publish(None, 0, true, tracker.floor(Instant::now()), None);
                board.close();
                return;
            }
            if flow.must_wait() {
                // The stores are behind: read on once they catch up.
                // Nothing else changes meanwhile (no watermark, no
                // idleness), so the pause is invisible to the results.
                let now = Instant::now();
                let since = pressed
                    .get_or_insert_with(|| Pressed::new(Arc::clone(&flow), now))
                    .since;
                if !held && now.duration_since(since) >= HOLD_AFTER {
                    reader.hold(true);
                    held = true;
                }
                if shown.is_none_or(|t| now.duration_since(t) >= PartitionTable::EVERY) {
                    publish_partitions(&table, &tracker, &*reader, None, now);
                    shown = Some(now);
                }
                activator.activate_after(Duration::from_millis(1));
                return;
            }
            pressed = None;
            if held {
                reader.hold(false);
                held = false;
            }
            let floor = *c[0].time();
            let mut read_any = false;
            // Watermark alignment: partitions too far ahead of the slowest
            // one read anywhere wait for it.
            let limit = settings
                .max_drift
                .and_then(|drift| Some(board.slowest()?.saturating_add(drift)));
            let mut ahead = 0;
            let mut read = MessagesRead {
                events: 0,
                tail: 0,
                max_event_ms: None,
            };
            for (idx, aligned) in aligned_out.iter_mut().enumerate() {
                if tracker.is_finished(idx) {
                    continue;
                }
                *aligned = limit.is_some_and(|l| tracker.partition(idx) > l);
                if *aligned {
                    ahead += 1;
                    continue;
                }
                let weight = if settings.weights.is_empty() {
                    1
                } else {
                    settings.weights[idx % settings.weights.len()].max(1)
                };
                let max = settings.batch.saturating_mul(weight);
                let partition = reader.partition_id(idx);
                let status = reader.read(idx, max, &mut |msg| {
                    if msg.tail {
                        // Only completes windows the range touched: no
                        // side outputs, no recent activity, nothing to commit.
                        read.tail += 1;
                        let ts = Event::decode(msg.payload).ok().map(|ev| {
                            let stamp = tracker.observe(idx, ev.ts, Instant::now()).max(floor);
                            let append_ms = msg.timestamp_ms.unwrap_or(0);
                            route_tail(&spec, &ev, stamp, &mut |r| match r {
                                Record::Window(mut c) => {
                                    c.append_ms = append_ms;
                                    contributions.push(&spec, c);
                                }
                                Record::Recent(e) => recents.push(e),
                            });
                            ev.ts
                        });
                        ledger.note(idx, msg.offset, None, ts);
                        return Verdict::Accepted;
                    }
                    read.events += 1;
                    match Event::decode(msg.payload) {
                        Ok(ev) => {
                            let now = Instant::now();
                            let stamp = tracker.observe(idx, ev.ts, now).max(floor);
                            read.max_event_ms =
                                Some(read.max_event_ms.map_or(ev.ts, |t| t.max(ev.ts)));
                            late.clear();
                            let append_ms = msg.timestamp_ms.unwrap_or(0);
                            let need = route(
                                &spec,
                                &ev,
                                stamp,
                                &mut |r| match r {
                                    Record::Window(mut c) => {
                                        c.append_ms = append_ms;
                                        contributions.push(&spec, c);
                                    }
                                    Record::Recent(mut e) => {
                                        e.partition = partition;
                                        e.offset = msg.offset;
                                        recents.push(e);
                                    }
                                },
                                &mut late,
                            );
                            ledger.note(idx, msg.offset, need, Some(ev.ts));
                            if late.is_empty() {
                                Verdict::Accepted
                            } else {
                                for l in &late {
                                    EventLate {
                                        agg: l.agg,
                                        windows: l.windows,
                                    }
                                    .emit(&metrics);
                                }
                                Verdict::Late {
                                    stamp,
                                    late: late.clone(),
                                }
                            }
                        }
                        Err(bad) => {
                            ledger.note(idx, msg.offset, None, None);
                            EventRejected {
                                reason: bad.reason,
                                partition,
                                offset: msg.offset,
                                detail: &bad.detail,
                            }
                            .emit(&metrics);
                            Verdict::Bad(bad)
                        }
                    }
                });
                read_any |= status.read > 0;
                let now = Instant::now();
                if status.finished {
                    tracker.finish(idx);
                } else if status.at_end {
                    tracker.mark_end(idx, now);
                }
            }
            read.emit(&metrics);
            ahead_gauge.set(ahead);
            reader.after_round();
            if let Some(r) = reader.read_ahead() {
                read_ahead_messages.set(i64::try_from(r.messages).unwrap_or(i64::MAX));
                read_ahead_bytes.set(i64::try_from(r.bytes).unwrap_or(i64::MAX));
            }
            // Each batch goes out as it is, contributions merged by group
            // and windows (see `crate::combine`): no copy into another buffer.
            if !contributions.is_empty() {
                contributions.flush(|merged| window_out.activate().give(&c[0], merged));
            }
            if !recents.is_empty() {
                recent_out.activate().give(&c[1], &mut recents);
                recents.clear();
            }
            // A backfill stops once every worker's range is settled.
            let backfill = n > 0 && (0..n).all(|idx| reader.range_end(idx).is_some());
            let settled = backfill
                && (0..n).all(|idx| {
                    reader
                        .range_end(idx)
                        .is_some_and(|to| ledger.settled(idx, to, tracker.is_finished(idx)))
                });
            let now = Instant::now();
            if shown.is_none_or(|t| now.duration_since(t) >= PartitionTable::EVERY) {
                publish_partitions(&table, &tracker, &*reader, Some(&aligned_out), now);
                shown = Some(now);
            }
            let (active, idle) = tracker.summary(now);
            board.publish(active, idle, settled, tracker.floor(now), tracker.reading());
            if settled && board.all_settled() {
                for idx in 0..n {
                    tracker.finish(idx);
                }
            }
            let Some(mut w) = tracker.advance(now) else {
                // What every one of this worker's partitions closed by the
                // end of its input (not the watermark reached, which a
                // partition stops holding back once it is finished); one
                // without events vouches for nothing. A worker without
                // partitions constrains nothing.
                if n > 0 {
                    flow.input_ended(tracker.closed_by_all().unwrap_or(0));
                }
                publish_partitions(&table, &tracker, &*reader, Some(&aligned_out), now);
                reader.close();
                cap = None;
                board.publish(None, 0, true, tracker.floor(now), None);
                board.close();
                return;
            };
            if active.is_none() {
                // Only idle partitions here: follow the other workers.
                w = tracker.raise(board.follow());
            }
            for c in c.iter_mut() {
                if w > *c.time() {
                    c.downgrade(&w);
                }
            }
            if read_any {
                activator.activate();
            } else {
                activator.activate_after(Duration::from_millis(2));
            }
        }
    });
    SourceStreams { windows, recent }
}

/// Tells `table` what each of the source's partitions is doing now:
/// `aligned_out[idx]` when alignment held partition `idx` back this round,
/// `None` while the stores hold the whole source back.
fn publish_partitions<R: PartitionReader>(
    table: &PartitionTable,
    tracker: &WatermarkTracker,
    reader: &R,
    aligned_out: Option<&[bool]>,
    now: Instant,
) {
    table.publish((0..reader.partitions()).map(|idx| PartitionView {
        id: reader.partition_id(idx),
        watermark_ms: tracker.partition(idx),
        max_event_ms: tracker.max_ts(idx),
        state: match aligned_out {
            _ if tracker.is_finished(idx) => PartitionState::Finished,
            None => PartitionState::Paused,
            Some(a) if a.get(idx).copied().unwrap_or(false) => PartitionState::Held,
            Some(_) if tracker.is_idle(idx, now) => PartitionState::Idle,
            Some(_) => PartitionState::Reading,
        },
    }));
}

/// Resume points by global partition id: (offset, largest event time before it).
pub type ResumePoints = std::collections::BTreeMap<usize, (i64, Option<i64>)>;

/// A late message seen by a [`MemoryReader`]: (partition, offset, aggregates missed).
pub type LateMessage = (usize, i64, Vec<Late>);

/// In-memory partitions, read at chosen speeds: for tests, and for the engine
/// benchmark that measures the dataflow without a broker.
#[derive(Debug, Default)]
pub struct MemoryReader {
    partitions: Vec<Vec<Vec<u8>>>,
    positions: Vec<usize>,
    speeds: Vec<usize>,
    /// Rejected messages: (partition, offset, reason text).
    pub dead_letters: Arc<std::sync::Mutex<Vec<(usize, i64, String)>>>,
    /// Late messages: (partition, offset, aggregates missed).
    pub late: Arc<std::sync::Mutex<Vec<LateMessage>>>,
    /// Committed checkpoints by global partition id: (offset, largest event time before it).
    pub commits: Arc<std::sync::Mutex<ResumePoints>>,
    resume: Vec<Option<(i64, Option<i64>)>>,
    ids: Vec<usize>,
    streaming: bool,
    /// Per partition, where a backfill range ends (reading goes on past it).
    ends: Vec<Option<i64>>,
}

impl MemoryReader {
    /// Keeps partitions open at their end (like a live topic) instead of finishing them.
    pub fn streaming(mut self) -> Self {
        self.streaming = true;
        self
    }

    /// Resumes each partition from a checkpoint, by global partition id
    /// (partitions not listed start at 0).
    pub fn resume_from(
        mut self,
        points: &std::collections::BTreeMap<usize, (i64, Option<i64>)>,
    ) -> Self {
        self.resume = self.ids.iter().map(|id| points.get(id).copied()).collect();
        for (pos, point) in self.positions.iter_mut().zip(&self.resume) {
            if let Some((offset, _)) = point {
                *pos = usize::try_from(*offset).unwrap_or(0);
            }
        }
        self
    }

    /// Reads like a bounded backfill: each partition, by global partition
    /// id, from `from` (with the watermark seed `max_ts`) with its range
    /// ending before `to`, then on past it (see [`PartitionReader::range_end`]).
    /// A partition not listed has an empty range at its end.
    pub fn backfill(
        mut self,
        ranges: &std::collections::BTreeMap<usize, (i64, i64, Option<i64>)>,
    ) -> Self {
        let n = self.partitions.len();
        self.resume = vec![None; n];
        self.ends = vec![None; n];
        for i in 0..n {
            let len = self.partitions[i].len() as i64;
            let (from, to, seed) = ranges
                .get(&self.ids[i])
                .copied()
                .unwrap_or((len, len, None));
            self.positions[i] = usize::try_from(from).unwrap_or(0);
            self.resume[i] = Some((from, seed));
            self.ends[i] = Some(to);
        }
        self
    }

    /// Reads `partitions` (global partition ids `ids`), taking at most
    /// `speeds[i % len]` messages from partition i per call (unbounded when empty).
    pub fn new(ids: Vec<usize>, partitions: Vec<Vec<Vec<u8>>>, speeds: Vec<usize>) -> Self {
        let n = partitions.len();
        MemoryReader {
            partitions,
            positions: vec![0; n],
            speeds,
            ids,
            ..Default::default()
        }
    }
}

/// A commit to a [`MemoryReader`] found its lock poisoned.
#[derive(Debug, thiserror::Error)]
#[error("the in-memory commits' lock is poisoned")]
pub struct PoisonedCommits;

impl PartitionReader for MemoryReader {
    type Error = PoisonedCommits;

    fn partitions(&self) -> usize {
        self.partitions.len()
    }

    fn resume_point(&self, idx: usize) -> Option<(i64, Option<i64>)> {
        self.resume.get(idx).copied().flatten()
    }

    fn partition_id(&self, idx: usize) -> u32 {
        self.ids[idx] as u32
    }

    fn range_end(&self, idx: usize) -> Option<i64> {
        self.ends.get(idx).copied().flatten()
    }

    fn commit(&mut self, points: &[Checkpoint]) -> Result<(), PoisonedCommits> {
        let mut commits = self.commits.lock().map_err(|_| PoisonedCommits)?;
        for c in points {
            commits.insert(self.ids[c.idx], (c.offset, c.max_ts));
        }
        Ok(())
    }

    fn read(
        &mut self,
        idx: usize,
        max: usize,
        handle: &mut dyn FnMut(&Message<'_>) -> Verdict,
    ) -> ReadStatus {
        let speed = if self.speeds.is_empty() {
            usize::MAX
        } else {
            self.speeds[idx % self.speeds.len()]
        };
        let part = &self.partitions[idx];
        let from = self.positions[idx];
        let to = part.len().min(from.saturating_add(max.min(speed)));
        for (offset, payload) in part.iter().enumerate().take(to).skip(from) {
            let end = self.ends.get(idx).copied().flatten();
            let msg = Message {
                payload,
                offset: offset as i64,
                timestamp_ms: None,
                tail: end.is_some_and(|e| offset as i64 >= e),
            };
            match handle(&msg) {
                Verdict::Accepted => {}
                Verdict::Late { late, .. } => {
                    if let Ok(mut l) = self.late.lock() {
                        l.push((self.ids[idx], msg.offset, late));
                    }
                }
                Verdict::Bad(bad) => {
                    if let Ok(mut d) = self.dead_letters.lock() {
                        d.push((self.ids[idx], msg.offset, bad.to_string()));
                    }
                }
            }
        }
        self.positions[idx] = to;
        let at_end = to == part.len();
        ReadStatus {
            read: to - from,
            at_end,
            finished: at_end && !self.streaming,
        }
    }
}
