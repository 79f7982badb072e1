//! Back-pressure from the store writers: while the rows waiting for them are
//! at the limit, the source reads nothing, and once they drain it reads on
//! to the same results as a run that never paused. Meanwhile no early row is
//! due: early updates are paced in reading time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use footprint_dataflows::Measure;
use footprint_dataflows::clickstream::{GenConfig, Generator};
use footprint_dataflows::flow::MAX_ROWS_WAITING;
use footprint_dataflows::pipeline::Shared;
use footprint_dataflows::source::MemoryReader;

mod common;

fn spec() -> footprint_dataflows::PipelineSpec {
    common::app_events_per_minute(vec![Measure::Count])
}

/// Final rows of a run over `parts`; `paused` holds the writers' gauge at
/// the limit for the first 200 ms, and checks that nothing is read meanwhile.
fn run(parts: Vec<Vec<Vec<u8>>>, paused: bool) -> Vec<(String, i64, u64)> {
    let rows = Arc::new(Mutex::new(Vec::new()));
    let out = Arc::clone(&rows);
    timely::execute_directly(move |worker| {
        let ids: Vec<usize> = (0..parts.len()).collect();
        let speeds = vec![64; parts.len()];
        let reader = MemoryReader::new(ids, parts, speeds);
        let shared = Shared::unregistered(vec!["app_events_1m".into()]);
        let (flow, metrics) = (Arc::clone(&shared.flow), Arc::clone(&shared.metrics));
        if paused {
            flow.rows_queued(MAX_ROWS_WAITING);
        }
        let settings = common::memory_settings(64);
        common::build_into(worker, reader, spec(), settings, &shared, &out);
        if paused {
            let until = Instant::now() + Duration::from_millis(200);
            while Instant::now() < until {
                worker.step_or_park(Some(Duration::from_millis(5)));
            }
            assert_eq!(
                metrics.events_in(),
                0,
                "the source reads nothing while the writers are full"
            );
            flow.rows_settled(MAX_ROWS_WAITING);
        }
        while worker.step_or_park(None) {}
        assert!(metrics.events_in() > 0);
    });
    let mut rows = std::mem::take(&mut *rows.lock().expect("lock"));
    rows.sort();
    rows
}

#[test]
fn a_paused_source_reads_nothing_then_reads_on_to_the_same_results() {
    let cfg = GenConfig {
        partitions: 2,
        ..GenConfig::default()
    };
    let mut generator = Generator::new(cfg.clone());
    let mut parts = vec![Vec::new(); 2];
    for _ in 0..20_000 {
        let e = generator.next_event();
        parts[e.partition as usize].push(e.payload);
    }
    let unpaused = run(parts.clone(), false);
    assert!(!unpaused.is_empty());
    assert_eq!(run(parts, true), unpaused);
}

/// Holds the source once it has read a first batch, for 400 ms (four early
/// intervals). Windows the batch changed would be due 100 ms after they
/// opened if early updates followed the wall clock; paced in reading time,
/// none is due until the source reads again.
#[test]
fn no_early_row_comes_due_while_the_stores_hold_the_source() {
    let cfg = GenConfig {
        partitions: 1,
        ..GenConfig::default()
    };
    let mut generator = Generator::new(cfg);
    let events: Vec<Vec<u8>> = (0..100_000)
        .map(|_| generator.next_event().payload)
        .collect();
    let mut spec = spec();
    spec.aggregates[0].early_updates = Some(100);
    timely::execute_directly(move |worker| {
        let reader = MemoryReader::new(vec![0], vec![events], vec![64]);
        let shared = Shared::unregistered(vec!["app_events_1m".into()]);
        let (flow, metrics) = (Arc::clone(&shared.flow), Arc::clone(&shared.metrics));
        let finals: common::Finals = Arc::default();
        common::build_into(
            worker,
            reader,
            spec,
            common::memory_settings(64),
            &shared,
            &finals,
        );
        let step_for = |worker: &mut timely::worker::Worker, ms: u64| {
            let until = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < until {
                worker.step_or_park(Some(Duration::from_millis(5)));
            }
        };
        while metrics.events_in() == 0 {
            worker.step();
        }
        flow.rows_queued(MAX_ROWS_WAITING);
        step_for(worker, 20);
        let read = metrics.events_in();
        let updates = metrics.window_updates();
        assert_eq!(flow.held().sources_held(), 1);
        assert!(metrics.windows_open() > 0);
        step_for(worker, 400);
        assert_eq!(metrics.events_in(), read);
        assert_eq!(
            metrics.window_updates(),
            updates,
            "an early row came due while the source was held"
        );
        assert!(flow.held().held_for(Instant::now()) >= Duration::from_millis(400));
        flow.rows_settled(MAX_ROWS_WAITING);
        while worker.step_or_park(None) {}
        assert_eq!(flow.held().sources_held(), 0);
        assert_eq!(metrics.windows_open(), 0);
        assert_eq!(metrics.events_in(), 100_000);
        assert!(!finals.lock().expect("lock").is_empty());
    });
}
