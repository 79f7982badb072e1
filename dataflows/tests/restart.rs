//! Restarting from committed checkpoints gives the results of a run with no
//! stop (`docs/design.md#offsets-and-recovery`).
//!
//! Each run reads slowly, is stopped after a chosen number of steps, and is
//! then cut at a chosen point of its log of written rows and commits, as a
//! `kill -9` would cut it: rows written after the cut are lost with the
//! process, and only the checkpoints committed before the cut survive. The
//! next run resumes from those checkpoints. After several such runs a last
//! one reads to the end. The rows that survived, applied as the stores apply
//! them (version rule for windows, merge for recent activity), must equal
//! the sequential reference.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use footprint_dataflows::clickstream::{GenConfig, Generator};
use footprint_dataflows::control::RunControl;
use footprint_dataflows::pipeline::Shared;
use footprint_dataflows::pipeline::{assigned, build_with_checkpoints};
use footprint_dataflows::reference::{Collected, compute};
use footprint_dataflows::source::{MemoryReader, SourceSettings};
use footprint_dataflows::{
    AggregateSpec, Field, Measure, Output, PipelineSpec, RecentSpec, WindowSpec,
};
use timely::dataflow::operators::{Inspect, Probe};

type Points = BTreeMap<usize, (i64, Option<i64>)>;

enum Entry {
    Row(Output),
    /// A sink reported rows it could neither write nor divert.
    Lost,
    Commit(usize, i64, Option<i64>),
}

fn spec() -> PipelineSpec {
    PipelineSpec {
        aggregates: vec![
            AggregateSpec {
                name: "item_activity_1m".into(),
                group_by: vec![Field::AppId, Field::Event, Field::ItemId],
                window: WindowSpec::tumbling(60_000).expect("valid"),
                measures: vec![
                    Measure::Count,
                    Measure::Distinct(Field::UserId),
                    Measure::SumValue,
                ],
                allowed_lateness: 5_000,
                early_updates: Some(1),
                sinks: vec![],
            },
            AggregateSpec {
                name: "app_events_10m".into(),
                group_by: vec![Field::AppId, Field::Event],
                window: WindowSpec::sliding(600_000, 60_000).expect("valid"),
                measures: vec![Measure::Count, Measure::Distinct(Field::UserId)],
                allowed_lateness: 0,
                early_updates: None,
                sinks: vec![],
            },
        ],
        recent: Some(RecentSpec {
            keep: 5,
            ttl: 7 * 86_400_000,
            updates: 1,
            sinks: vec![],
        }),
        max_out_of_order: 2_000,
    }
}

/// One run from `from`; stops after `stop_after` steps of worker 0 (`None`:
/// reads to the end). Returns the run's log, in the order things happened.
fn run(
    spec: &Arc<PipelineSpec>,
    parts: &[Vec<Vec<u8>>],
    workers: usize,
    from: &Points,
    stop_after: Option<u64>,
) -> Vec<Entry> {
    run_failing(spec, parts, workers, from, stop_after, None)
}

/// [`run`], where the `fail_at`-th row written counts as lost by its sink.
fn run_failing(
    spec: &Arc<PipelineSpec>,
    parts: &[Vec<Vec<u8>>],
    workers: usize,
    from: &Points,
    stop_after: Option<u64>,
    fail_at: Option<usize>,
) -> Vec<Entry> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let control = Arc::new(RunControl::default());
    let names: Vec<String> = spec.aggregates.iter().map(|a| a.name.clone()).collect();
    let (spec, parts, from, l) = (
        Arc::clone(spec),
        parts.to_vec(),
        from.clone(),
        Arc::clone(&log),
    );
    timely::execute(timely::Config::process(workers), move |worker| {
        let ids = assigned(parts.len(), worker.index(), worker.peers());
        let mine: Vec<Vec<Vec<u8>>> = ids.iter().map(|p| parts[*p].clone()).collect();
        let speeds = ids.iter().map(|p| [3, 20, 70][*p % 3]).collect();
        let mut reader = MemoryReader::new(ids.clone(), mine, speeds).resume_from(&from);
        if stop_after.is_some() {
            reader = reader.streaming();
        }
        let settings = SourceSettings {
            batch: 64,
            weights: vec![],
            idle_timeout: Duration::from_secs(3600),
            ..SourceSettings::default()
        };
        let control = Arc::clone(&control);
        let shared = Shared {
            control: Arc::clone(&control),
            ..Shared::unregistered(names.clone())
        };
        let rows_log = Arc::clone(&l);
        let flow = Arc::clone(&shared.flow);
        let mut checkpoints = worker.dataflow::<u64, _, _>(|scope| {
            let (rows, checkpoints) =
                build_with_checkpoints(scope, reader, Arc::clone(&spec), settings, shared);
            rows.inspect(move |row| {
                let mut log = rows_log.lock().expect("lock");
                log.push(Entry::Row(row.clone()));
                if fail_at == Some(log.len()) {
                    flow.lose_rows();
                    log.push(Entry::Lost);
                }
            })
            .probe_with(checkpoints.probe());
            checkpoints
        });
        let mut steps = 0u64;
        let commit = |checkpoints: &mut footprint_dataflows::pipeline::Checkpoints<_>| {
            for c in checkpoints.poll(Duration::ZERO).expect("commit") {
                l.lock()
                    .expect("lock")
                    .push(Entry::Commit(ids[c.idx], c.offset, c.max_ts));
            }
        };
        while worker.step_or_park(Some(Duration::from_millis(1))) {
            steps += 1;
            if worker.index() == 0 && stop_after == Some(steps) {
                control.request_stop();
            }
            commit(&mut checkpoints);
        }
        commit(&mut checkpoints);
    })
    .expect("timely runs");
    std::mem::take(&mut *log.lock().expect("lock"))
}

fn clickstream(n: usize) -> Vec<Vec<Vec<u8>>> {
    clickstream_at(n, 20)
}

/// `n` events at `per_sec` events per second of event time.
fn clickstream_at(n: usize, per_sec: u32) -> Vec<Vec<Vec<u8>>> {
    let cfg = GenConfig {
        seed: 11,
        partitions: 3,
        users: 300,
        items: 40,
        events_per_sec: per_sec,
        disorder: 0.1,
        max_disorder_ms: 1_500,
        late: 0.05,
        late_by_ms: 62_000,
        bad: 0.01,
        ..GenConfig::default()
    };
    let mut generator = Generator::new(cfg.clone());
    let mut parts = vec![Vec::new(); cfg.partitions as usize];
    for _ in 0..n {
        let e = generator.next_event();
        parts[e.partition as usize].push(e.payload);
    }
    parts
}

fn restarts_give_the_reference(workers: usize, cuts: &[(u64, f64)]) {
    restarts_give_the_reference_for(spec(), workers, cuts);
}

fn restarts_give_the_reference_for(spec: PipelineSpec, workers: usize, cuts: &[(u64, f64)]) {
    let spec = Arc::new(spec);
    let parts = clickstream(12_000);
    let expected = compute(&spec, &parts);
    let mut kept: Vec<Output> = Vec::new();
    let mut from = Points::new();
    for (stop_after, cut) in cuts {
        let log = run(&spec, &parts, workers, &from, Some(*stop_after));
        let cut_at = ((log.len() as f64) * cut) as usize;
        for entry in log.into_iter().take(cut_at) {
            match entry {
                Entry::Row(r) => kept.push(r),
                Entry::Lost => {}
                Entry::Commit(p, offset, max_ts) => {
                    let before = from.insert(p, (offset, max_ts));
                    assert!(
                        before.is_none_or(|(o, _)| o < offset),
                        "checkpoints only move forward"
                    );
                }
            }
        }
    }
    for entry in run(&spec, &parts, workers, &from, None) {
        if let Entry::Row(r) = entry {
            kept.push(r);
        }
    }
    let collected = Collected::from_outputs(kept, 5);
    assert_eq!(collected.not_final, 0, "a window never became final");
    assert_eq!(
        collected.windows.len(),
        expected.windows.len(),
        "number of windows"
    );
    for (id, row) in &expected.windows {
        assert_eq!(collected.windows.get(id), Some(row), "window {id:?}");
    }
    assert_eq!(collected.recent, expected.recent, "recent activity");
}

#[test]
fn stops_and_cuts_at_one_worker_change_nothing() {
    restarts_give_the_reference(1, &[(40, 1.0), (90, 0.5), (25, 0.9), (150, 0.3), (60, 1.0)]);
}

#[test]
fn stops_and_cuts_at_three_workers_change_nothing() {
    restarts_give_the_reference(3, &[(70, 0.8), (30, 1.0), (120, 0.4), (50, 0.95)]);
}

/// Recent activity alone: entries wait for their (slow) emission before
/// their offsets may be committed.
#[test]
fn stops_and_cuts_change_nothing_for_recent_activity_alone() {
    let mut spec = spec();
    spec.aggregates.clear();
    if let Some(r) = &mut spec.recent {
        r.updates = 30;
    }
    restarts_give_the_reference_for(spec, 2, &[(60, 0.7), (40, 0.5), (90, 0.8), (30, 0.6)]);
}

/// Once a sink loses rows, nothing more is committed: a restart reads them again.
#[test]
fn nothing_is_committed_after_a_sink_loses_rows() {
    let spec = Arc::new(spec());
    let parts = clickstream(12_000);
    let log = run_failing(&spec, &parts, 1, &Points::new(), None, Some(3_000));
    let lost = log
        .iter()
        .position(|e| matches!(e, Entry::Lost))
        .expect("the failure happened");
    let commits = |entries: &[Entry]| {
        entries
            .iter()
            .filter(|e| matches!(e, Entry::Commit(..)))
            .count()
    };
    assert!(
        commits(&log[..lost]) > 0,
        "commits happened before the loss"
    );
    assert_eq!(commits(&log[lost..]), 0, "no commit after the loss");
}

/// A partition resumed from a checkpoint gets its watermark back: an event
/// that was late before the stop is late after it too.
#[test]
fn a_resumed_partition_keeps_its_watermark() {
    let spec = Arc::new(common::count_per_second());
    const T0: i64 = common::T0;
    let event = |ts: i64| common::view_at(T0 + ts);
    let parts = vec![vec![event(10_500), event(500), event(10_600)]];
    let finals = |from: &Points| -> Vec<(i64, u64)> {
        run(&spec, &parts, 1, from, None)
            .into_iter()
            .filter_map(|e| match e {
                Entry::Row(Output::Window(w)) if w.is_final => Some((w.window_start, w.version)),
                _ => None,
            })
            .collect()
    };
    // The control: a run that never stopped finds the event at 500 late.
    assert_eq!(
        finals(&Points::new()),
        vec![(T0 + 10_000, 2)],
        "without a stop, the event at 500 is late"
    );
    // Resumed after the first event, with the checkpoint's watermark.
    let from = Points::from([(0, (1, Some(T0 + 10_500)))]);
    assert_eq!(
        finals(&from),
        vec![(T0 + 10_000, 1)],
        "the event at 500 is late, as it was"
    );
    // Without the watermark the checkpoint carries, it would not be.
    let bare = Points::from([(0, (1, None))]);
    assert_eq!(
        finals(&bare),
        vec![(T0, 1), (T0 + 10_000, 1)],
        "a resume without the watermark counts the event at 500"
    );
}

/// A bounded run emits its last open windows as final when its input ends,
/// but commits only the messages of windows the watermark closed: a later
/// run over more data resumes before those windows and rebuilds them whole.
fn a_run_to_the_end_then_more_data_give_the_reference(workers: usize) {
    let spec = Arc::new(spec());
    // 40 minutes of event time, so that the first run's watermark passes
    // whole 10-minute windows.
    let parts = clickstream_at(12_000, 5);
    let expected = compute(&spec, &parts);
    // The first run sees the first 60% of each partition, then its end.
    let first: Vec<Vec<Vec<u8>>> = parts
        .iter()
        .map(|p| p[..p.len() * 6 / 10].to_vec())
        .collect();
    let mut kept = Vec::new();
    let mut from = Points::new();
    for entry in run(&spec, &first, workers, &Points::new(), None) {
        match entry {
            Entry::Row(r) => kept.push(r),
            Entry::Commit(p, offset, max_ts) => {
                from.insert(p, (offset, max_ts));
            }
            Entry::Lost => {}
        }
    }
    let read: usize = first.iter().map(Vec::len).sum();
    let committed: i64 = from.values().map(|(o, _)| *o).sum();
    assert!(
        committed > 0 && committed < read as i64,
        "commits stop where the watermark stopped ({committed} of {read})"
    );
    for entry in run(&spec, &parts, workers, &from, None) {
        if let Entry::Row(r) = entry {
            kept.push(r);
        }
    }
    let collected = Collected::from_outputs(kept, 5);
    for (id, row) in &expected.windows {
        assert_eq!(collected.windows.get(id), Some(row), "window {id:?}");
    }
    assert_eq!(collected.windows.len(), expected.windows.len());
    assert_eq!(collected.recent, expected.recent, "recent activity");
}

#[test]
fn a_run_to_the_end_then_more_data_give_the_reference_at_one_worker() {
    a_run_to_the_end_then_more_data_give_the_reference(1);
}

#[test]
fn a_run_to_the_end_then_more_data_give_the_reference_at_three_workers() {
    a_run_to_the_end_then_more_data_give_the_reference(3);
}
