//! Assembles one worker's dataflow: source → routing → windowed aggregates
//! and recent activity → one stream of result rows.
//!
//! The binary adds the sinks after this; tests and the engine benchmark
//! capture the rows directly.

use std::sync::Arc;

use timely::dataflow::operators::Concat;
use timely::dataflow::operators::vec::{Map, Partition};
use timely::dataflow::{Scope, StreamVec};

use crate::Time;
use crate::aggregate::AggregateWindows;
use crate::control::RunControl;
use crate::metrics::Metrics;
use crate::recent::RecentActivity;
use crate::result::Output;
use crate::route::Record;
use crate::source::{PartitionReader, SourceSettings, partition_source};
use crate::spec::PipelineSpec;

/// Builds the pipeline for one worker over `reader`'s partitions.
pub fn build<'s, R: PartitionReader>(
    scope: Scope<'s, Time>,
    reader: R,
    spec: Arc<PipelineSpec>,
    settings: SourceSettings,
    control: Arc<RunControl>,
    metrics: Arc<Metrics>,
) -> StreamVec<'s, Time, Output> {
    let records = partition_source(
        scope,
        reader,
        Arc::clone(&spec),
        settings,
        Arc::clone(&control),
        Arc::clone(&metrics),
    );
    let mut parts = records.partition(2, |r| match r {
        Record::Window(_) => (0, r),
        Record::Recent(_) => (1, r),
    });
    let recent_records = parts.pop();
    let window_records = parts.pop();
    let windows = window_records.map(|s| {
        s.flat_map(|r| match r {
            Record::Window(c) => Some(c),
            Record::Recent(_) => None,
        })
        .aggregate_windows(
            Arc::clone(&spec),
            Arc::clone(&control),
            Arc::clone(&metrics),
        )
    });
    let recent = match (&spec.recent, recent_records) {
        (Some(rs), Some(s)) => Some(
            s.flat_map(|r| match r {
                Record::Recent(e) => Some(e),
                Record::Window(_) => None,
            })
            .recent_activity(rs.clone(), Arc::clone(&metrics)),
        ),
        _ => None,
    };
    match (windows, recent) {
        (Some(w), Some(r)) => w.concat(r),
        (Some(w), None) => w,
        (None, Some(r)) => r,
        (None, None) => timely::dataflow::operators::generic::operator::empty(scope),
    }
}

/// Which of `partitions` global partitions worker `index` of `peers` reads:
/// partition p goes to worker p mod peers.
pub fn assigned(partitions: usize, index: usize, peers: usize) -> Vec<usize> {
    (0..partitions)
        .filter(|p| p % peers.max(1) == index)
        .collect()
}
