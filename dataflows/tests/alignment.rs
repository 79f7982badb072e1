//! Watermark alignment: a partition read much faster than another is held
//! within `max_drift` of it, and the results are those of a run without
//! alignment.

use std::sync::{Arc, Mutex};

use footprint_dataflows::clickstream::{GenConfig, Generator};
use footprint_dataflows::pipeline::Shared;
use footprint_dataflows::source::{MemoryReader, SourceSettings};
use footprint_dataflows::{Field, Measure};

mod common;

/// What a run gave: its final rows, sorted, and the largest gap seen
/// between the newest event read and the watermark (ms).
struct Run {
    finals: Vec<(String, i64, u64)>,
    widest_gap: i64,
    ahead_seen: bool,
}

/// Reads partition 0 32 times faster than partition 1.
fn run(parts: Vec<Vec<Vec<u8>>>, max_drift: Option<u64>) -> Run {
    let rows = Arc::new(Mutex::new(Vec::new()));
    let out = Arc::clone(&rows);
    let (widest_gap, ahead_seen) = timely::execute_directly(move |worker| {
        let reader = MemoryReader::new(vec![0, 1], parts, vec![256, 8]);
        let shared = Shared::unregistered(vec!["app_events_1m".into()]);
        let metrics = Arc::clone(&shared.metrics);
        let settings = SourceSettings {
            max_drift,
            ..common::memory_settings(256)
        };
        let spec =
            common::app_events_per_minute(vec![Measure::Count, Measure::Distinct(Field::UserId)]);
        common::build_into(worker, reader, spec, settings, &shared, &out);
        let mut widest = 0i64;
        let mut ahead = false;
        while worker.step() {
            let watermark = metrics.watermark_ms() as i64;
            if watermark > 0 {
                widest = widest.max(metrics.max_event_ms() - watermark);
            }
            ahead |= metrics.partitions_ahead() > 0;
        }
        assert_eq!(metrics.events_in(), 40_000);
        assert_eq!(metrics.partitions_ahead(), 0);
        (widest, ahead)
    });
    let mut finals = std::mem::take(&mut *rows.lock().expect("lock"));
    finals.sort();
    Run {
        finals,
        widest_gap,
        ahead_seen,
    }
}

#[test]
fn a_fast_partition_waits_within_max_drift_of_the_slow_one_and_results_do_not_change() {
    let mut generator = Generator::new(GenConfig {
        partitions: 2,
        ..GenConfig::default()
    });
    let mut parts = vec![Vec::new(); 2];
    for _ in 0..40_000 {
        let e = generator.next_event();
        parts[e.partition as usize].push(e.payload);
    }
    let free = run(parts.clone(), None);
    let aligned = run(parts, Some(10_000));
    assert!(!free.finals.is_empty());
    assert_eq!(aligned.finals, free.finals);
    assert!(!free.ahead_seen);
    assert!(aligned.ahead_seen, "partition 0 never had to wait");
    // 40,000 events span 40 s of event time: unaligned, partition 0 is read
    // to its end while partition 1 is near its start.
    assert!(free.widest_gap > 30_000, "gap {} ms", free.widest_gap);
    // Aligned: the drift, the out-of-order bound and one batch of
    // partition 0 (256 events, about half a second), plus the generator's
    // disorder (up to 3 s).
    assert!(
        aligned.widest_gap <= 20_000,
        "gap {} ms",
        aligned.widest_gap
    );
}
