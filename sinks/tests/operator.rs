//! `write_to` with a slow store on a writer thread of its own: rows that wait
//! for it are folded by identity, the store ends with the newest value of
//! every identity, and the output frontier passes a time only once every row
//! at that time is in the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use footprint_dataflows::flow::Flow;
use footprint_dataflows::{MeasureValue, Output, RecentEntry, RecentRow, WindowRow};
use footprint_sinks::events::SinkMetrics;
use footprint_sinks::operator::{Routing, WriteTo};
use footprint_sinks::{Sink, SinkError};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

/// What the slow store holds: the highest (version, final) per window, and
/// each user's merged recent entries.
#[derive(Default)]
struct Store {
    windows: HashMap<(String, i64), (u64, bool)>,
    recent: HashMap<String, Vec<RecentEntry>>,
    writes: usize,
    rows: usize,
}

/// A store that applies the version rule and the recent merge, and takes
/// `delay` per write.
struct Slow {
    store: Arc<Mutex<Store>>,
    delay: Duration,
}

impl Sink for Slow {
    fn name(&self) -> &str {
        "slow"
    }

    fn write(&mut self, rows: &[Output]) -> Result<(), SinkError> {
        std::thread::sleep(self.delay);
        let mut s = self.store.lock().expect("store lock");
        s.writes += 1;
        s.rows += rows.len();
        for row in rows {
            match row {
                Output::Window(w) => {
                    let stored = s
                        .windows
                        .entry((w.key[0].1.to_string(), w.window_start))
                        .or_insert((0, false));
                    if (w.version, w.is_final) >= *stored {
                        *stored = (w.version, w.is_final);
                    }
                }
                Output::Recent(r) => {
                    let stored = s.recent.entry(r.user_id.clone()).or_default();
                    RecentEntry::merge(stored, &r.events, KEEP);
                }
            }
        }
        Ok(())
    }

    fn folds(&self) -> bool {
        true
    }
}

const KEEP: usize = 5;

fn window(key: &str, start: i64, version: u64, is_final: bool) -> Output {
    Output::Window(WindowRow {
        agg: 0,
        aggregate: "clicks".into(),
        key: vec![("item_id".into(), key.into())],
        window_start: start,
        window_end: start + 60_000,
        measures: vec![("count".into(), MeasureValue::Count(version))],
        version,
        is_final,
        freshest_append_ms: None,
    })
}

fn recent(user: &str, ts: i64) -> Output {
    Output::Recent(RecentRow {
        app_id: "app".into(),
        user_id: user.into(),
        events: vec![RecentEntry {
            ts,
            partition: 0,
            offset: ts,
            event: "view".into(),
            item_id: None,
        }],
    })
}

/// An input of rows written by `write_to` to `sink` (window rows of
/// aggregate 0 and recent rows, cut to `KEEP`), and a probe on its output.
fn writing_to(
    worker: &mut timely::worker::Worker,
    sink: Box<dyn Sink>,
    flow: &Arc<Flow>,
    metrics: &Arc<SinkMetrics>,
) -> (
    InputHandle<u64, CapacityContainerBuilder<Vec<Output>>>,
    ProbeHandle<u64>,
) {
    let mut input = InputHandle::new();
    let probe = ProbeHandle::new();
    let routing = Routing {
        windows: vec![vec![0]],
        recent: vec![0],
        recent_keep: Some(KEEP),
    };
    worker.dataflow(|scope| {
        scope
            .input_from(&mut input)
            .write_to(vec![sink], routing, Arc::clone(flow), Arc::clone(metrics))
            .probe_with(&probe);
    });
    (input, probe)
}

#[test]
fn a_slow_store_gets_folded_batches_and_the_frontier_waits_for_its_writes() {
    let store = Arc::new(Mutex::new(Store::default()));
    let metrics = Arc::new(SinkMetrics::default());
    let flow = Arc::new(Flow::default());
    let sink_store = Arc::clone(&store);
    let sink_metrics = Arc::clone(&metrics);
    let sink_flow = Arc::clone(&flow);
    timely::execute_directly(move |worker| {
        let slow = Slow {
            store: Arc::clone(&sink_store),
            delay: Duration::from_millis(20),
        };
        let (mut input, probe) = writing_to(worker, Box::new(slow), &sink_flow, &sink_metrics);
        // The newest row sent per window, and the time it was sent at.
        let mut sent: Vec<(String, i64, u64, bool, u64)> = Vec::new();
        let mut frontier_passed_unwritten = 0;
        let mut checked_passed = 0;
        let mut max_waiting = 0;
        for round in 0..60u64 {
            for k in 0..20 {
                let key = format!("i{k}");
                let start = (round / 10) as i64 * 60_000;
                let is_final = round % 10 == 9;
                let version = round + 1;
                input.send(window(&key, start, version, is_final));
                sent.push((key, start, version, is_final, round));
            }
            input.send(recent(&format!("u{}", round % 3), round as i64));
            input.advance_to(round + 1);
            max_waiting = max_waiting.max(sink_flow.rows_waiting());
            // A round every 5 ms against 20 ms writes: rows wait, and fold.
            std::thread::sleep(Duration::from_millis(5));
            for _ in 0..3 {
                worker.step();
            }
            // Whatever the frontier has passed must already be in the store.
            let s = sink_store.lock().expect("store lock");
            for (key, start, version, is_final, t) in &sent {
                if !probe.less_equal(t) {
                    checked_passed += 1;
                    let stored = s.windows.get(&(key.clone(), *start)).copied();
                    if stored.is_none_or(|v| v < (*version, *is_final)) {
                        frontier_passed_unwritten += 1;
                    }
                }
            }
        }
        drop(input);
        while !probe.done() {
            worker.step_or_park(Some(Duration::from_millis(10)));
        }
        assert!(max_waiting > 0, "rows waiting for the store are counted");
        assert!(
            checked_passed > 0,
            "the frontier passed some times during the run"
        );
        assert_eq!(
            sink_flow.rows_waiting(),
            0,
            "nothing waits once every row is written"
        );
        assert!(!sink_flow.rows_lost(), "no row was lost");
        assert_eq!(
            frontier_passed_unwritten, 0,
            "the frontier passed times whose rows were not yet written"
        );
    });

    let s = store.lock().expect("store lock");
    for k in 0..20 {
        for w in 0..6i64 {
            assert_eq!(
                s.windows.get(&(format!("i{k}"), w * 60_000)),
                Some(&(w as u64 * 10 + 10, true)),
                "window {w} of i{k} ends final at its highest version"
            );
        }
    }
    for u in 0..3i64 {
        let newest: Vec<i64> = (0..60i64).rev().filter(|t| t % 3 == u).take(KEEP).collect();
        let stored: Vec<i64> = s.recent[&format!("u{u}")].iter().map(|e| e.ts).collect();
        assert_eq!(stored, newest, "u{u} keeps its {KEEP} newest entries");
    }
    let sent = 60 * 21;
    let folded = metrics.folded("slow") as usize;
    assert_eq!(
        s.rows + folded,
        sent,
        "every row is written or folded into a newer one"
    );
    assert!(
        folded > 0 && s.writes < 60,
        "rows waiting for the slow store were folded ({folded} folded, {} writes)",
        s.writes
    );
    assert_eq!(
        metrics.written("slow") as usize,
        s.rows,
        "written rows are counted"
    );
}

/// A sink that panics on every write.
struct Panics;

impl Sink for Panics {
    fn name(&self) -> &str {
        "panics"
    }

    fn write(&mut self, _rows: &[Output]) -> Result<(), SinkError> {
        panic!("a store client bug");
    }

    fn folds(&self) -> bool {
        true
    }
}

#[test]
fn a_writer_that_dies_fails_its_rows_and_does_not_hold_the_dataflow_back() {
    let metrics = Arc::new(SinkMetrics::default());
    let flow = Arc::new(Flow::default());
    let sink_metrics = Arc::clone(&metrics);
    let sink_flow = Arc::clone(&flow);
    timely::execute_directly(move |worker| {
        let (mut input, probe) = writing_to(worker, Box::new(Panics), &sink_flow, &sink_metrics);
        for round in 0..5u64 {
            input.send(window("i0", 0, round + 1, false));
            input.send(window(&format!("i{}", round + 1), 0, 1, false));
            input.advance_to(round + 1);
            worker.step();
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(input);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !probe.done() && std::time::Instant::now() < deadline {
            worker.step_or_park(Some(Duration::from_millis(10)));
        }
        assert!(
            probe.done(),
            "the dataflow completes (failed {}, folded {}, waiting {})",
            sink_metrics.failed("panics"),
            sink_metrics.folded("panics"),
            sink_flow.rows_waiting()
        );
    });
    let failed = metrics.failed("panics");
    let folded = metrics.folded("panics");
    assert_eq!(
        failed + folded,
        10,
        "every row is failed or folded, none silently lost"
    );
    assert!(failed > 0);
    assert!(flow.rows_lost(), "failed rows stop the commits");
    assert_eq!(flow.rows_waiting(), 0);
}
