//! Early rows are paced window by window: a window is refreshed at most once
//! per `early_updates`, counted from when it opened or was last emitted, so a
//! window that closes within its first interval is written once, as final.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use footprint_dataflows::aggregate::AggregateWindows;
use footprint_dataflows::control::RunControl;
use footprint_dataflows::events::DataflowMetrics;
use footprint_dataflows::flow::Flow;
use footprint_dataflows::key::GroupKey;
use footprint_dataflows::{
    AggregateSpec, Contribution, Measure, Output, PipelineSpec, WindowRow, WindowSpec,
};
use timely::dataflow::operators::{Input, Inspect, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};

const MINUTE: i64 = 60_000;

fn spec(early_ms: u64) -> Arc<PipelineSpec> {
    Arc::new(PipelineSpec {
        aggregates: vec![AggregateSpec {
            name: "count_1m".into(),
            group_by: vec![],
            window: WindowSpec::tumbling(MINUTE as u64).expect("valid window"),
            measures: vec![Measure::Count],
            allowed_lateness: 0,
            early_updates: Some(early_ms),
            sinks: vec![],
        }],
        recent: None,
        max_out_of_order: 0,
    })
}

fn contribution(ts: i64) -> Contribution {
    Contribution {
        agg: 0,
        key: GroupKey::default(),
        ts,
        first_start: i64::MIN,
        count: 1,
        distinct: Default::default(),
        value: 0,
        append_ms: 0,
        touches: true,
    }
}

/// Runs the operator on one worker. `feed` gets the input and a `step`
/// function that runs the worker for a moment.
fn run_operator(
    early_ms: u64,
    feed: impl FnOnce(&mut InputHandleVec<u64, Contribution>, &mut dyn FnMut()) + Send + 'static,
) -> Vec<WindowRow> {
    let rows = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&rows);
    let feed = Mutex::new(Some(feed));
    timely::execute_directly(move |worker| {
        let mut input = InputHandleVec::new();
        let probe = ProbeHandle::new();
        worker.dataflow::<u64, _, _>(|scope| {
            let metrics = Arc::new(DataflowMetrics::new(vec!["count_1m".into()]));
            scope
                .input_from(&mut input)
                .aggregate_windows(
                    spec(early_ms),
                    Arc::new(RunControl::default()),
                    Arc::new(Flow::default()),
                    metrics,
                )
                .inspect(move |row| {
                    if let Output::Window(w) = row {
                        sink.lock().expect("lock").push(w.clone());
                    }
                })
                .probe_with(&probe);
        });
        let Some(feed) = feed.lock().expect("lock").take() else {
            return;
        };
        let mut step = || {
            for _ in 0..20 {
                worker.step();
            }
        };
        feed(&mut input, &mut step);
        input.close();
        while !probe.done() {
            worker.step();
        }
    });
    std::mem::take(&mut *rows.lock().expect("lock"))
}

#[test]
fn a_window_that_closes_within_its_first_interval_is_written_once_as_final() {
    // Three minutes of event time pass in far less than the hour-long interval.
    let rows = run_operator(3_600_000, |input, step| {
        for minute in 0..3 {
            for s in 0..60 {
                input.send(contribution(minute * MINUTE + s * 1_000));
            }
            input.advance_to(((minute + 1) * MINUTE) as u64);
            step();
        }
    });
    let starts: Vec<(i64, u64, bool)> = rows
        .iter()
        .map(|r| (r.window_start, r.version, r.is_final))
        .collect();
    assert_eq!(
        starts,
        vec![(0, 60, true), (MINUTE, 60, true), (2 * MINUTE, 60, true)]
    );
}

#[test]
fn a_window_open_longer_than_its_interval_gets_early_rows() {
    // The second event comes after the first early row and is closed over at
    // once: it shows only in the final row.
    let rows = run_operator(100, |input, step| {
        input.send(contribution(1_000));
        input.flush();
        step();
        std::thread::sleep(Duration::from_millis(300));
        step();
        input.send(contribution(2_000));
    });
    let got: Vec<(u64, bool)> = rows.iter().map(|r| (r.version, r.is_final)).collect();
    assert_eq!(got, vec![(1, false), (2, true)]);
}

#[test]
fn a_row_carries_the_freshest_append_that_no_earlier_row_of_its_window_did() {
    let appended = |ts, append_ms| Contribution {
        append_ms,
        ..contribution(ts)
    };
    // Both windows get an early row; only the second gets a message after
    // it, so only its final row brings something new to the stores.
    let rows = run_operator(100, move |input, step| {
        input.send(appended(1_000, 111));
        input.send(appended(MINUTE + 1_000, 112));
        input.flush();
        step();
        std::thread::sleep(Duration::from_millis(300));
        step();
        input.send(appended(MINUTE + 2_000, 333));
    });
    let mut got: Vec<(i64, bool, Option<i64>)> = rows
        .iter()
        .map(|r| (r.window_start, r.is_final, r.freshest_append_ms))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (0, false, Some(111)),
            (0, true, None),
            (MINUTE, false, Some(112)),
            (MINUTE, true, Some(333)),
        ]
    );
}

#[test]
fn a_changing_window_is_refreshed_at_most_once_per_interval() {
    let every = Duration::from_millis(20);
    let elapsed = Arc::new(Mutex::new(Duration::ZERO));
    let timer = Arc::clone(&elapsed);
    let rows = run_operator(every.as_millis() as u64, move |input, step| {
        let started = Instant::now();
        let mut ts = 0;
        while started.elapsed() < Duration::from_millis(200) {
            input.send(contribution(ts));
            input.flush();
            ts += 1;
            step();
            std::thread::sleep(Duration::from_millis(1));
        }
        *timer.lock().expect("lock") = started.elapsed();
    });
    let early = rows.iter().filter(|r| !r.is_final).count();
    let intervals = elapsed.lock().expect("lock").as_millis() / every.as_millis();
    assert!(early >= 1, "a window open for 200 ms got no early row");
    assert!(
        early as u128 <= intervals,
        "{early} early rows in {intervals} intervals"
    );
    // One final row, last, with every event; versions never go back.
    let finals: Vec<usize> = (0..rows.len()).filter(|i| rows[*i].is_final).collect();
    assert_eq!(finals, vec![rows.len() - 1]);
    assert!(rows.windows(2).all(|w| w[0].version <= w[1].version));
    assert!(
        rows.windows(2)
            .all(|w| w[0].version < w[1].version || w[1].is_final)
    );
}
