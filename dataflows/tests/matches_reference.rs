//! The dataflow's final results equal the sequential reference on seeded
//! random clickstreams (disorder, late and bad events, several aggregates,
//! tumbling and sliding windows), at 1 worker and at 4, with partitions read
//! at very different speeds.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use footprint_dataflows::clickstream::{GenConfig, Generator, Kind};
use footprint_dataflows::control::RunControl;
use footprint_dataflows::pipeline::Shared;
use footprint_dataflows::pipeline::{assigned, build};
use footprint_dataflows::reference::{Collected, compute};
use footprint_dataflows::source::{MemoryReader, SourceSettings};
use footprint_dataflows::{
    AggregateSpec, Field, Measure, Output, PipelineSpec, RecentSpec, WindowSpec,
};
use proptest::prelude::*;
use timely::dataflow::operators::Inspect;

fn spec(max_out_of_order: u64, lateness: u64) -> PipelineSpec {
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
                allowed_lateness: lateness,
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
            AggregateSpec {
                name: "country_30s".into(),
                group_by: vec![Field::Prop("country".into())],
                window: WindowSpec::tumbling(30_000).expect("valid"),
                measures: vec![Measure::Count, Measure::Distinct(Field::ItemId)],
                allowed_lateness: 2_000,
                early_updates: Some(5),
                sinks: vec![],
            },
        ],
        recent: Some(RecentSpec {
            keep: 5,
            ttl: 7 * 86_400_000,
            updates: 1,
            sinks: vec![],
        }),
        max_out_of_order,
    }
}

/// A late report: (partition, offset, aggregate, windows missed).
type LateReport = (usize, i64, String, u32);

struct Run {
    outputs: Vec<Output>,
    dead_letters: Vec<(usize, i64, String)>,
    late: Vec<LateReport>,
}

fn run(spec: &PipelineSpec, partitions: &[Vec<Vec<u8>>], workers: usize, speeds: &[usize]) -> Run {
    let spec = Arc::new(spec.clone());
    let outputs = Arc::new(Mutex::new(Vec::new()));
    let dead = Arc::new(Mutex::new(Vec::new()));
    let late = Arc::new(Mutex::new(Vec::new()));
    let names: Vec<String> = spec.aggregates.iter().map(|a| a.name.clone()).collect();
    let parts = partitions.to_vec();
    let speeds = speeds.to_vec();
    let (o, d, l) = (Arc::clone(&outputs), Arc::clone(&dead), Arc::clone(&late));
    timely::execute(timely::Config::process(workers), move |worker| {
        let ids = assigned(parts.len(), worker.index(), worker.peers());
        let mine: Vec<Vec<Vec<u8>>> = ids.iter().map(|p| parts[*p].clone()).collect();
        let my_speeds: Vec<usize> = ids.iter().map(|p| speeds[*p % speeds.len()]).collect();
        let mut reader = MemoryReader::new(ids, mine, my_speeds);
        reader.dead_letters = Arc::clone(&d);
        reader.late = Arc::new(Mutex::new(Vec::new()));
        let my_late = Arc::clone(&reader.late);
        let sink = Arc::clone(&o);
        let settings = common::memory_settings(64);
        worker.dataflow::<u64, _, _>(|scope| {
            build(
                scope,
                reader,
                Arc::clone(&spec),
                settings,
                Shared::unregistered(names.clone()),
            )
            .inspect(move |row| sink.lock().expect("lock").push(row.clone()));
        });
        while worker.step_or_park(None) {}
        let aggs: Vec<String> = spec.aggregates.iter().map(|a| a.name.clone()).collect();
        let mut l2 = l.lock().expect("lock");
        for (p, off, lates) in my_late.lock().expect("lock").drain(..) {
            for x in lates {
                l2.push((p, off, aggs[usize::from(x.agg)].clone(), x.windows));
            }
        }
    })
    .expect("timely runs");
    Run {
        outputs: take(&outputs),
        dead_letters: take(&dead),
        late: take(&late),
    }
}

/// The reference's late reports, sorted as [`LateReport`]s.
fn late_reports(reference: &footprint_dataflows::reference::Reference) -> Vec<LateReport> {
    let mut v: Vec<LateReport> = reference
        .late
        .iter()
        .map(|l| (l.partition, l.index as i64, l.aggregate.clone(), l.windows))
        .collect();
    v.sort();
    v
}

fn take<T>(m: &Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *m.lock().expect("lock"))
}

fn clickstream(cfg: GenConfig, n: usize) -> (Vec<Vec<Vec<u8>>>, usize) {
    let mut generator = Generator::new(cfg.clone());
    let mut parts = vec![Vec::new(); cfg.partitions as usize];
    let mut late = 0;
    for _ in 0..n {
        let e = generator.next_event();
        late += usize::from(e.kind == Kind::Late);
        parts[e.partition as usize].push(e.payload);
    }
    (parts, late)
}

fn check(spec: &PipelineSpec, parts: &[Vec<Vec<u8>>], workers: usize, speeds: &[usize]) {
    let expected = compute(spec, parts);
    let got = run(spec, parts, workers, speeds);
    let collected = Collected::from_outputs(got.outputs, 5);
    assert_eq!(
        collected.duplicate_finals, 0,
        "a window was finalised twice"
    );
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
    let mut bad: Vec<(usize, i64)> = got.dead_letters.iter().map(|(p, o, _)| (*p, *o)).collect();
    bad.sort();
    let expected_bad: Vec<(usize, i64)> = expected
        .bad
        .iter()
        .map(|(p, i, _)| (*p, *i as i64))
        .collect();
    assert_eq!(bad, expected_bad, "dead letters");
    let mut late = got.late;
    late.sort();
    assert_eq!(
        late,
        late_reports(&expected),
        "late events, each with the aggregates and the number of windows it missed"
    );
}

fn disorderly() -> GenConfig {
    GenConfig {
        seed: 7,
        partitions: 4,
        users: 500,
        items: 50,
        events_per_sec: 20,
        disorder: 0.1,
        max_disorder_ms: 8_000,
        late: 0.01,
        late_by_ms: 900_000,
        bad: 0.01,
        ..GenConfig::default()
    }
}

#[test]
fn matches_reference_at_one_worker() {
    let (parts, late) = clickstream(disorderly(), 30_000);
    assert!(late > 0);
    check(&spec(2_000, 5_000), &parts, 1, &[1, 5, 40, 300]);
}

#[test]
fn matches_reference_at_four_workers() {
    let (parts, _) = clickstream(disorderly(), 30_000);
    check(&spec(2_000, 5_000), &parts, 4, &[1, 5, 40, 300]);
}

#[test]
fn matches_reference_with_partitions_read_at_the_same_speed() {
    let (parts, _) = clickstream(
        GenConfig {
            seed: 99,
            ..disorderly()
        },
        20_000,
    );
    check(&spec(0, 0), &parts, 2, &[usize::MAX]);
}

/// The final windows of a streaming run over one busy partition and one
/// empty one (read to its end, then idle), on two workers placed by
/// `configs` (one entry per timely process), stopped once 9 finals arrived
/// or 30 s passed.
fn finals_with_an_idle_partition(configs: Vec<timely::Config>) -> Vec<i64> {
    let spec = Arc::new(common::count_per_second());
    let busy: Vec<Vec<u8>> = (0..100)
        .map(|i| common::view_at(common::T0 + i * 100))
        .collect();
    let partitions = Arc::new([busy, Vec::new()]);
    let finals = Arc::new(Mutex::new(Vec::new()));
    let control = Arc::new(RunControl::default());
    let mut processes = Vec::new();
    for config in configs {
        let (f, c, spec, partitions) = (
            Arc::clone(&finals),
            Arc::clone(&control),
            Arc::clone(&spec),
            Arc::clone(&partitions),
        );
        // Each timely process is started from its own thread, as separate
        // processes would be.
        processes.push(std::thread::spawn(move || {
            let guards = timely::execute(config, move |worker| {
                let ids = assigned(2, worker.index(), worker.peers());
                let mine: Vec<Vec<Vec<u8>>> = ids.iter().map(|p| partitions[*p].clone()).collect();
                let reader = MemoryReader::new(ids, mine, vec![]).streaming();
                let settings = SourceSettings {
                    batch: 64,
                    weights: vec![],
                    idle_timeout: Duration::from_millis(50),
                    ..SourceSettings::default()
                };
                let sink = Arc::clone(&f);
                let shared = Shared {
                    control: Arc::clone(&c),
                    ..Shared::unregistered(vec!["count_1s".into()])
                };
                worker.dataflow::<u64, _, _>(|scope| {
                    build(scope, reader, Arc::clone(&spec), settings, shared).inspect(move |row| {
                        if let Output::Window(w) = row
                            && w.is_final
                        {
                            sink.lock().expect("lock").push(w.window_start);
                        }
                    });
                });
                while worker.step_or_park(Some(Duration::from_millis(10))) {}
            })
            .expect("timely runs");
            drop(guards.join());
        }));
    }
    // The stream never ends by itself; wait (bounded) for the finals, then stop it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while finals.lock().expect("lock").len() < 9 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    control.request_stop();
    for p in processes {
        p.join().expect("process thread");
    }
    let mut got = take(&finals);
    got.sort_unstable();
    got
}

/// Events span 10 seconds; the last window holds the watermark, the 9
/// before it are final.
fn nine_finals() -> Vec<i64> {
    (0..9).map(|i| common::T0 + i * 1_000).collect()
}

/// A worker whose only partition is empty (read to its end, then idle) must
/// not hold the other workers back: windows of the busy partition become
/// final while the stream stays open.
#[test]
fn an_idle_partition_on_another_worker_does_not_stall_finalisation() {
    assert_eq!(
        finals_with_an_idle_partition(vec![timely::Config::process(2)]),
        nine_finals()
    );
}

/// The same across the processes of a timely cluster: the idle worker learns
/// the busy one's watermark through the watermark board, which crosses
/// process boundaries.
#[test]
fn an_idle_partition_on_another_process_does_not_stall_finalisation() {
    let addresses: Vec<String> = (0..2)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            format!("127.0.0.1:{}", l.local_addr().expect("address").port())
        })
        .collect();
    let configs = (0..2)
        .map(|process| timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads: 1,
                process,
                addresses: addresses.clone(),
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        })
        .collect();
    assert_eq!(finals_with_an_idle_partition(configs), nine_finals());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Every (event, window) pair is either counted or reported late, never
    /// both and never neither: per aggregate, the counts in all final windows
    /// plus the windows the pipeline itself reported late equal the good
    /// events times windows per event, and each late report (event,
    /// aggregate, windows missed) is the reference's.
    #[test]
    fn every_event_window_pair_is_counted_or_late(
        seed in 0u64..1_000_000,
        ooo in 0u64..5_000,
        lateness in 0u64..5_000,
        workers in 1usize..4,
        slow in 1usize..20,
    ) {
        let cfg = GenConfig { seed, users: 50, items: 10, partitions: 3, late: 0.05, late_by_ms: 700_000, ..disorderly() };
        let (parts, _) = clickstream(cfg, 2_000);
        let spec = spec(ooo, lateness);
        let reference = compute(&spec, &parts);
        let good = reference.good;
        let got = run(&spec, &parts, workers, &[slow, 1_000]);
        let mut reported: Vec<LateReport> = got.late.clone();
        reported.sort();
        prop_assert_eq!(&reported, &late_reports(&reference));
        let collected = Collected::from_outputs(got.outputs, 5);
        for agg in &spec.aggregates {
            let counted: u64 = collected.windows.values()
                .filter(|w| *w.aggregate == *agg.name)
                .map(|w| w.version)
                .sum();
            let missed: u64 = reported
                .iter()
                .filter(|l| l.2 == agg.name)
                .map(|l| u64::from(l.3))
                .sum();
            prop_assert_eq!(counted + missed, good * agg.window.windows_per_event());
        }
    }
}
