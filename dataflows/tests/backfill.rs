//! Bounded backfill (`docs/design.md#offsets-and-recovery`): a run over explicit offset ranges reads past
//! them only to complete the windows they touched, emits rows of those
//! windows only, and stops once every worker's range is settled.
//!
//! Applied the way stores apply rows (highest version per window, merged
//! recent activity), a backfill over ranges already processed changes
//! nothing, and a backfill of everything equals the sequential reference;
//! at 1 worker and at 4.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use footprint_dataflows::clickstream::{GenConfig, Generator};
use footprint_dataflows::control::RunControl;
use footprint_dataflows::event::Event;
use footprint_dataflows::pipeline::Shared;
use footprint_dataflows::pipeline::{assigned, build, build_with_checkpoints};
use footprint_dataflows::reference::{Collected, compute};
use footprint_dataflows::source::{MemoryReader, SourceSettings};
use footprint_dataflows::{
    AggregateSpec, Field, Measure, Output, PipelineSpec, RecentSpec, WindowSpec,
};
use timely::dataflow::operators::{Inspect, Probe};

/// By global partition id: (from, to, largest event time before `from`).
type Ranges = BTreeMap<usize, (i64, i64, Option<i64>)>;

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
                early_updates: None,
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

/// 60,000 events over 50 minutes of event time, in 3 partitions.
fn clickstream() -> Vec<Vec<Vec<u8>>> {
    let cfg = GenConfig {
        seed: 31,
        partitions: 3,
        users: 300,
        items: 40,
        events_per_sec: 20,
        disorder: 0.1,
        max_disorder_ms: 1_500,
        late: 0.02,
        late_by_ms: 62_000,
        bad: 0.01,
        ..GenConfig::default()
    };
    let mut generator = Generator::new(cfg.clone());
    let mut parts = vec![Vec::new(); cfg.partitions as usize];
    for _ in 0..60_000 {
        let e = generator.next_event();
        parts[e.partition as usize].push(e.payload);
    }
    parts
}

/// The largest event time among a partition's messages before `offset`,
/// as the checkpoint at that offset would carry it.
fn max_ts_before(messages: &[Vec<u8>], offset: i64) -> Option<i64> {
    messages
        .iter()
        .take(offset as usize)
        .filter_map(|m| Event::decode(m).ok().map(|e| e.ts))
        .max()
}

/// Each partition's range `[from × len, to × len)`, with its seed.
fn ranges(parts: &[Vec<Vec<u8>>], from: f64, to: f64) -> Ranges {
    parts
        .iter()
        .enumerate()
        .map(|(p, m)| {
            let len = m.len() as f64;
            let (f, t) = ((len * from) as i64, (len * to) as i64);
            (p, (f, t, max_ts_before(m, f)))
        })
        .collect()
}

struct Backfilled {
    outputs: Vec<Output>,
    tail: u64,
    /// Whether it had to be stopped from outside (it should stop by itself).
    stopped: bool,
}

/// Runs a backfill over `ranges` at `workers` workers. On a `live` topic
/// the partitions never end, so only settling can stop the run.
fn backfill(parts: &[Vec<Vec<u8>>], workers: usize, ranges: &Ranges, live: bool) -> Backfilled {
    let spec = Arc::new(spec());
    let outputs = Arc::new(Mutex::new(Vec::new()));
    let control = Arc::new(RunControl::default());
    let tail = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (parts, ranges) = (parts.to_vec(), ranges.clone());
    let (o, c, t) = (
        Arc::clone(&outputs),
        Arc::clone(&control),
        Arc::clone(&tail),
    );
    let names: Vec<String> = spec.aggregates.iter().map(|a| a.name.clone()).collect();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let ids = assigned(parts.len(), worker.index(), worker.peers());
        let mine: Vec<Vec<Vec<u8>>> = ids.iter().map(|p| parts[*p].clone()).collect();
        let speeds = ids.iter().map(|p| [7, 40, 150][*p % 3]).collect();
        let mut reader = MemoryReader::new(ids, mine, speeds).backfill(&ranges);
        if live {
            reader = reader.streaming();
        }
        let settings = SourceSettings {
            batch: 64,
            weights: vec![],
            idle_timeout: Duration::from_secs(3600),
            ..SourceSettings::default()
        };
        let shared = Shared {
            control: Arc::clone(&c),
            ..Shared::unregistered(names.clone())
        };
        let (sink, m) = (Arc::clone(&o), Arc::clone(&shared.metrics));
        let mut checkpoints = worker.dataflow::<u64, _, _>(|scope| {
            let (rows, checkpoints) =
                build_with_checkpoints(scope, reader, Arc::clone(&spec), settings, shared);
            rows.inspect(move |row| sink.lock().expect("lock").push(row.clone()))
                .probe_with(checkpoints.probe());
            checkpoints
        });
        while worker.step_or_park(Some(Duration::from_millis(1))) {
            checkpoints.poll(Duration::ZERO).expect("poll");
        }
        t.fetch_add(m.backfill_tail(), Ordering::Relaxed);
    })
    .expect("timely runs");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut stopped = false;
    while !guards.guards().iter().all(|g| g.is_finished()) {
        if Instant::now() > deadline && !stopped {
            control.request_stop();
            stopped = true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(guards.join());
    let outputs = std::mem::take(&mut *outputs.lock().expect("lock"));
    Backfilled {
        outputs,
        tail: tail.load(Ordering::Relaxed),
        stopped,
    }
}

/// Every row of a plain run to the end.
fn full_run(parts: &[Vec<Vec<u8>>]) -> Vec<Output> {
    let spec = Arc::new(spec());
    let outputs = Arc::new(Mutex::new(Vec::new()));
    let (parts, o) = (parts.to_vec(), Arc::clone(&outputs));
    timely::execute(timely::Config::process(2), move |worker| {
        let ids = assigned(parts.len(), worker.index(), worker.peers());
        let mine: Vec<Vec<Vec<u8>>> = ids.iter().map(|p| parts[*p].clone()).collect();
        let reader = MemoryReader::new(ids, mine, vec![]);
        let names = spec.aggregates.iter().map(|a| a.name.clone()).collect();
        let sink = Arc::clone(&o);
        worker.dataflow::<u64, _, _>(|scope| {
            build(
                scope,
                reader,
                Arc::clone(&spec),
                SourceSettings::default(),
                Shared::unregistered(names),
            )
            .inspect(move |row| sink.lock().expect("lock").push(row.clone()));
        });
    })
    .expect("timely runs");
    std::mem::take(&mut *outputs.lock().expect("lock"))
}

fn a_backfill_of_everything_equals_the_reference(workers: usize) {
    let parts = clickstream();
    let expected = compute(&spec(), &parts);
    let all = ranges(&parts, 0.0, 1.0);
    let got = backfill(&parts, workers, &all, false);
    assert!(!got.stopped);
    assert_eq!(got.tail, 0, "nothing lies past ranges that end at the end");
    let c = Collected::from_outputs(got.outputs, 5);
    assert_eq!(c.duplicate_finals, 0);
    assert!(c.windows == expected.windows, "windows equal the reference");
    assert!(
        c.recent == expected.recent,
        "recent activity equals the reference"
    );
}

#[test]
fn a_backfill_of_everything_equals_the_reference_at_one_worker() {
    a_backfill_of_everything_equals_the_reference(1);
}

#[test]
fn a_backfill_of_everything_equals_the_reference_at_four_workers() {
    a_backfill_of_everything_equals_the_reference(4);
}

fn a_backfill_over_processed_ranges_changes_nothing(workers: usize) {
    let parts = clickstream();
    let expected = compute(&spec(), &parts);
    let middle = ranges(&parts, 0.3, 0.6);
    let got = backfill(&parts, workers, &middle, false);
    assert!(!got.stopped);
    assert!(
        got.tail > 0,
        "it read past its ranges to complete their windows"
    );
    let rows = got.outputs.len();
    let mut outputs = full_run(&parts);
    outputs.extend(got.outputs);
    let c = Collected::from_outputs(outputs, 5);
    assert!(rows > 100, "the backfill wrote rows ({rows})");
    assert!(c.windows == expected.windows, "the windows did not change");
    assert!(
        c.recent == expected.recent,
        "recent activity did not change"
    );
}

#[test]
fn a_backfill_over_processed_ranges_changes_nothing_at_one_worker() {
    a_backfill_over_processed_ranges_changes_nothing(1);
}

#[test]
fn a_backfill_over_processed_ranges_changes_nothing_at_four_workers() {
    a_backfill_over_processed_ranges_changes_nothing(4);
}

/// On a topic that never ends, the backfill stops by itself once its
/// ranges are settled, having read only part of what follows them; every
/// window it wrote is complete.
#[test]
fn a_backfill_on_a_live_topic_stops_once_settled() {
    let parts = clickstream();
    let expected = compute(&spec(), &parts);
    let first_half = ranges(&parts, 0.0, 0.5);
    let got = backfill(&parts, 4, &first_half, true);
    assert!(!got.stopped, "it stopped by itself");
    let after: u64 = first_half
        .iter()
        .map(|(p, (_, to, _))| parts[*p].len() as u64 - *to as u64)
        .sum();
    assert!(
        got.tail > 0 && got.tail < after,
        "read {} of the {after} messages past the ranges",
        got.tail
    );
    let c = Collected::from_outputs(got.outputs, 5);
    assert!(c.not_final == 0, "every row it wrote is final");
    // The ranges start at the beginning, so every window they touched holds
    // all its events: the ones past the ranges were read to complete it.
    for (id, row) in &c.windows {
        let reference = expected
            .windows
            .get(id)
            .expect("a window the reference has");
        assert_eq!(row, reference, "{id:?}");
    }
    let last_start = c
        .windows
        .values()
        .map(|w| w.window_start)
        .max()
        .unwrap_or(0);
    let range_end = first_half
        .iter()
        .filter_map(|(p, (_, to, _))| max_ts_before(&parts[*p], *to))
        .max()
        .unwrap_or(0);
    assert!(
        last_start <= range_end,
        "no window only the messages past the ranges touched"
    );
    assert!(c.windows.len() > 100, "{} windows", c.windows.len());
}
