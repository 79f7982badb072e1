//! Assembles one worker's dataflow: source → routing → windowed aggregates
//! and recent activity → one stream of result rows.
//!
//! The binary adds the sinks after this; tests and the engine benchmark
//! capture the rows directly.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::operators::Concat;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::{Scope, StreamVec};

use crate::Time;
use crate::aggregate::AggregateWindows;
use crate::board::{BoardView, watermark_board};
use crate::checkpoint::{Checkpoint, OffsetLedger};
use crate::control::RunControl;
use crate::events::DataflowMetrics;
use crate::flow::Flow;
use crate::recent::RecentActivity;
use crate::result::Output;
use crate::source::{PartitionReader, SourceParts, SourceSettings, partition_source};
use crate::spec::PipelineSpec;

/// What a worker's pipeline shares with the rest of its process: the stop
/// flag, the flow control and the metrics.
#[derive(Clone)]
pub struct Shared {
    /// Stop requests.
    pub control: Arc<RunControl>,
    /// Back-pressure, the held clock and the rows-lost latch.
    pub flow: Arc<Flow>,
    /// What the operators report.
    pub metrics: Arc<DataflowMetrics>,
}

impl Shared {
    /// Everything fresh, with metrics for these aggregates (not registered
    /// anywhere): for tests and benchmarks.
    pub fn unregistered(aggregates: Vec<String>) -> Self {
        Shared {
            control: Arc::default(),
            flow: Arc::default(),
            metrics: Arc::new(DataflowMetrics::new(aggregates)),
        }
    }
}

/// Builds the pipeline for one worker over `reader`'s partitions.
pub fn build<'s, R: PartitionReader>(
    scope: Scope<'s, Time>,
    reader: R,
    spec: Arc<PipelineSpec>,
    settings: SourceSettings,
    shared: Shared,
) -> StreamVec<'s, Time, Output> {
    build_with_checkpoints(scope, reader, spec, settings, shared).0
}

/// Builds the pipeline for one worker, and the [`Checkpoints`] that commit
/// its source offsets once the rows derived from them are written. Attach
/// [`Checkpoints::probe`] after the operator that writes the rows.
pub fn build_with_checkpoints<'s, R: PartitionReader>(
    scope: Scope<'s, Time>,
    reader: R,
    spec: Arc<PipelineSpec>,
    settings: SourceSettings,
    shared: Shared,
) -> (StreamVec<'s, Time, Output>, Checkpoints<R>) {
    let Shared {
        control,
        flow,
        metrics,
    } = shared;
    let reader = Rc::new(RefCell::new(reader));
    let ledger = Rc::new(RefCell::new(OffsetLedger::new(
        reader.borrow().partitions(),
    )));
    let board = watermark_board(scope);
    let checkpoints = Checkpoints {
        board: board.view(),
        reader: Rc::clone(&reader),
        ledger: Rc::clone(&ledger),
        probe: ProbeHandle::new(),
        control: Arc::clone(&control),
        flow: Arc::clone(&flow),
        written: vec![0],
        frozen: false,
        last: None,
    };
    let streams = partition_source(
        scope,
        SourceParts {
            reader,
            ledger,
            board,
        },
        Arc::clone(&spec),
        settings,
        Arc::clone(&control),
        Arc::clone(&flow),
        Arc::clone(&metrics),
    );
    // The window operator runs even when the spec has no aggregates: its
    // frontier follows the source's, which the checkpoints rely on.
    let windows = streams.windows.aggregate_windows(
        Arc::clone(&spec),
        Arc::clone(&control),
        flow,
        Arc::clone(&metrics),
    );
    let rows = match &spec.recent {
        Some(rs) => windows.concat(
            streams
                .recent
                .recent_activity(rs.clone(), Arc::clone(&metrics)),
        ),
        None => windows,
    };
    (rows, checkpoints)
}

/// Commits one worker's source offsets once every row derived from the
/// messages before them has been written (`docs/design.md#offsets-and-recovery`).
///
/// The probe must sit after the operator that writes rows to the sinks: its
/// frontier passing a time means every row at that time was handed to a sink
/// and the sink returned (written, or diverted to the retry topic or journal).
///
/// A message counts as done only once the windows it counts in closed
/// because the watermark passed them ([`BoardView::commit_cap`]): when a
/// bounded run reaches its end it emits its open windows as final, but
/// their messages stay uncommitted, so that a later run over more data
/// rebuilds those windows whole.
///
/// A stop request makes capabilities drop, which moves the frontier without
/// anything being written, so from the moment a stop is seen only the last
/// frontier read *before* it counts. Likewise, once a sink has failed a
/// write that was neither applied nor diverted ([`Flow::rows_lost`]), those
/// rows are lost to this process: nothing more is committed, and a restart
/// reads them again from the last checkpoint.
pub struct Checkpoints<R> {
    reader: Rc<RefCell<R>>,
    board: BoardView,
    ledger: Rc<RefCell<OffsetLedger>>,
    probe: ProbeHandle<Time>,
    control: Arc<RunControl>,
    flow: Arc<Flow>,
    /// The last frontier known to mean "written" (empty: everything).
    written: Vec<Time>,
    frozen: bool,
    last: Option<Instant>,
}

impl<R: PartitionReader> Checkpoints<R> {
    /// The probe to attach after the sinks.
    pub fn probe(&self) -> &ProbeHandle<Time> {
        &self.probe
    }

    /// Commits what is done, when `every` has passed since the last commit
    /// (always when `every` is zero). Returns the checkpoints committed.
    pub fn poll(&mut self, every: Duration) -> Result<Vec<Checkpoint>, R::Error> {
        let frontier = self.probe.with_frontier(|f| f.to_vec());
        if self.control.stop_requested() {
            self.frozen = true;
        }
        if !self.frozen && self.flow.rows_lost() {
            tracing::error!(
                "a sink lost rows (neither written nor diverted); source offsets are no longer committed, so a restart reads them again"
            );
            self.frozen = true;
        }
        if !self.frozen {
            self.written = frontier;
        }
        if !every.is_zero() && self.last.is_some_and(|t| t.elapsed() < every) {
            return Ok(Vec::new());
        }
        self.last = Some(Instant::now());
        let written = &self.written;
        // Only windows the watermark closed count: a bounded run's last
        // windows are emitted at its end but their messages stay uncommitted.
        let cap = self.board.commit_cap();
        let points = self
            .ledger
            .borrow_mut()
            .advance(|t| written.iter().all(|f| t < *f) && cap.is_none_or(|c| t <= c));
        if points.is_empty() {
            return Ok(points);
        }
        crate::crashpoint::reached("commit.before");
        self.reader.borrow_mut().commit(&points)?;
        self.ledger.borrow_mut().committed(&points);
        Ok(points)
    }

    /// Entries waiting for their rows to be written (running maxima only).
    pub fn pending(&self) -> usize {
        self.ledger.borrow().pending()
    }
}

/// Which of `partitions` global partitions worker `index` of `peers` reads:
/// partition p goes to worker p mod peers.
pub fn assigned(partitions: usize, index: usize, peers: usize) -> Vec<usize> {
    (0..partitions)
        .filter(|p| p % peers.max(1) == index)
        .collect()
}
