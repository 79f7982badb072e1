//! The timely side of a run: each worker's reader and sinks, prepared before
//! timely starts, and the dataflow every worker builds and steps.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Result, anyhow};
use footprint_connectors::checkpoints::CheckpointWriter;
use footprint_connectors::events::{CommitFailed, ConnectorMetrics};
use footprint_connectors::reader::{KafkaReader, PartitionRange};
use footprint_connectors::side::SideOutputs;
use footprint_dataflows::PipelineSpec;
use footprint_dataflows::pipeline::{Shared, assigned, build_with_checkpoints};
use footprint_dataflows::source::SourceSettings;
use footprint_sinks::Sink;
use footprint_sinks::events::SinkMetrics;
use footprint_sinks::operator::{Routing, WriteTo};
use footprint_telemetry::InternalEvent;
use timely::dataflow::operators::Probe;

use super::layout::Layout;
use super::sinks::Sinks;
use crate::config::Config;

/// One worker's reader and sinks.
type WorkerParts = (KafkaReader, Vec<Box<dyn Sink>>);

/// Opens the reader and builds the sinks of every worker of this process,
/// before timely starts, so that a bad broker address or an unwritable file
/// fails at once instead of leaving other workers waiting.
pub(super) fn prepare(
    cfg: &Config,
    settings: &footprint_connectors::client::KafkaSettings,
    layout: &Layout,
    ranges: &[PartitionRange],
    sinks: &Sinks,
    aggregates: &Arc<[String]>,
    backfill: bool,
) -> Result<Vec<WorkerParts>> {
    let mut parts = Vec::with_capacity(layout.threads);
    for w in layout.workers() {
        let mine: Vec<PartitionRange> = assigned(ranges.len(), w, layout.peers())
            .into_iter()
            .map(|i| ranges[i].clone())
            .collect();
        let side = SideOutputs::new(settings, Arc::clone(aggregates))?;
        let mut reader = KafkaReader::open(settings, &cfg.source.group_id, mine, side)?;
        if !backfill {
            reader = reader.with_checkpoints(CheckpointWriter::new(
                settings,
                &cfg.source.checkpoint_topic,
                &cfg.source.group_id,
            )?);
        }
        parts.push((reader, sinks.build(w, layout.peers())?));
    }
    Ok(parts)
}

/// What every worker of the dataflow needs.
pub(super) struct Dataflow {
    pub spec: Arc<PipelineSpec>,
    pub settings: SourceSettings,
    pub routing: Routing,
    pub shared: Shared,
    pub sink_metrics: Arc<SinkMetrics>,
    pub connector_metrics: Arc<ConnectorMetrics>,
    pub commit_every: Duration,
    /// Where each local worker posts the sinks' output frontier.
    pub frontiers: Arc<super::marks::Frontiers>,
    /// A bounded run: its frontier is posted only at the end (see below).
    pub until_end: bool,
}

/// Runs the dataflow on timely: every worker takes its own reader and sinks
/// (exactly once), builds the pipeline with the sinks after it and the
/// offset checkpoints probing their output, and steps it until its input
/// ends or a stop is requested. Returns the first failure, if any.
pub(super) fn execute(
    layout: &Layout,
    parts: Vec<WorkerParts>,
    dataflow: Dataflow,
) -> Result<Option<String>> {
    let first_worker = layout.first_worker();
    let per_worker = Arc::new(Mutex::new(parts.into_iter().map(Some).collect::<Vec<_>>()));
    let guards = timely::execute(layout.timely(), move |worker| -> Result<(), String> {
        let local = worker
            .index()
            .checked_sub(first_worker)
            .ok_or_else(|| format!("worker {} is not one of this process's", worker.index()))?;
        let taken = per_worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(local)
            .and_then(Option::take);
        let Some((reader, sinks)) = taken else {
            return Err(format!("no reader prepared for worker {}", worker.index()));
        };
        let shared = dataflow.shared.clone();
        let connectors = Arc::clone(&dataflow.connector_metrics);
        let flow = Arc::clone(&shared.flow);
        let input_end = Arc::clone(&shared.flow);
        let sink_metrics = Arc::clone(&dataflow.sink_metrics);
        let routing = dataflow.routing.clone();
        let spec = Arc::clone(&dataflow.spec);
        let settings = dataflow.settings.clone();
        let mut checkpoints = worker.dataflow::<u64, _, _>(move |scope| {
            let (rows, checkpoints) = build_with_checkpoints(scope, reader, spec, settings, shared);
            rows.write_to(sinks, routing, flow, sink_metrics)
                .probe_with(checkpoints.probe());
            checkpoints
        });
        let every = dataflow.commit_every;
        let until_end = dataflow.until_end;
        let frontiers = Arc::clone(&dataflow.frontiers);
        let mut commit = |every: Duration| {
            if let Err(e) = checkpoints.poll(every) {
                CommitFailed { error: &e }.emit(&connectors);
            }
            // A bounded run's frontier passes partitions once they are
            // finished, which a later run may still extend: it is posted
            // at the end only.
            if !until_end {
                frontiers.set(
                    local,
                    checkpoints.probe().with_frontier(|f| f.first().copied()),
                );
            }
        };
        while worker.step_or_park(Some(every)) {
            commit(every);
        }
        commit(Duration::ZERO);
        // The dataflow is done, every row written or diverted: what is
        // complete is what the sources' own watermarks closed before the
        // end of their input (not the windows the end itself emitted).
        if let Some(end) = input_end.input_end() {
            frontiers.set(local, Some(end));
        }
        Ok(())
    })
    .map_err(|e| anyhow!("starting timely ({}): {e}", layout.describe()))?;
    Ok(join(guards, layout.processes))
}

/// Waits for the workers and returns the first failure. In a cluster, a
/// worker thread stops (timely panics) when another process goes away and
/// its connection breaks; that is reported as such, because the whole
/// cluster must then be restarted, each process resuming from the committed
/// offsets. The panic itself is on stderr.
fn join(
    guards: timely::communication::WorkerGuards<Result<(), String>>,
    processes: usize,
) -> Option<String> {
    // Dropping the guards joins timely's communication threads, which have
    // panicked too when a peer went away: keep that inside this function.
    let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guards.join()));
    let Ok(results) = joined else {
        return Some(peer_lost(processes));
    };
    let mut failure = None;
    for r in results {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(_) if processes > 1 => failure = Some(peer_lost(processes)),
            Err(e) => failure = Some(format!("a worker thread panicked: {e}")),
        }
    }
    failure
}

fn peer_lost(processes: usize) -> String {
    format!(
        "a worker thread stopped: in a {processes}-process cluster this happens when another process stops; restart every process of the cluster: each resumes from the committed offsets"
    )
}
