//! Fixtures shared by the dataflow tests.

// Each test file compiles this module on its own and uses only some of it.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use footprint_dataflows::pipeline::{Shared, build};
use footprint_dataflows::source::{PartitionReader, SourceSettings};
use footprint_dataflows::{AggregateSpec, Field, Measure, Output, PipelineSpec, WindowSpec};
use timely::dataflow::operators::Inspect;

/// 2026-01-01T00:00:00Z, ms: where hand-written events start.
pub const T0: i64 = 1_767_225_600_000;

/// One aggregate, `count_1s`: a count per 1-second tumbling window, no
/// grouping, no lateness, no disorder, finals only.
pub fn count_per_second() -> PipelineSpec {
    PipelineSpec {
        aggregates: vec![AggregateSpec {
            name: "count_1s".into(),
            group_by: vec![],
            window: WindowSpec::tumbling(1_000).expect("valid"),
            measures: vec![Measure::Count],
            allowed_lateness: 0,
            early_updates: None,
            sinks: vec![],
        }],
        recent: None,
        max_out_of_order: 0,
    }
}

/// A valid view event of user `u` at `ts`.
pub fn view_at(ts: i64) -> Vec<u8> {
    format!(r#"{{"app_id":"a","user_id":"u","event":"view","ts":{ts}}}"#).into_bytes()
}

/// One aggregate, `app_events_1m`: `measures` per (app_id, event) and
/// 1-minute tumbling window, 5 s of disorder, finals only.
pub fn app_events_per_minute(measures: Vec<Measure>) -> PipelineSpec {
    PipelineSpec {
        aggregates: vec![AggregateSpec {
            name: "app_events_1m".into(),
            group_by: vec![Field::AppId, Field::Event],
            window: WindowSpec::tumbling(60_000).expect("valid"),
            measures,
            allowed_lateness: 0,
            early_updates: None,
            sinks: vec![],
        }],
        recent: None,
        max_out_of_order: 5_000,
    }
}

/// Source settings for in-memory partitions: `batch` messages per
/// partition and round, no partition ever idle.
pub fn memory_settings(batch: usize) -> SourceSettings {
    SourceSettings {
        batch,
        weights: vec![],
        idle_timeout: Duration::from_secs(3600),
        ..SourceSettings::default()
    }
}

/// A final window row as (key values joined by `/`, window start, version);
/// `None` for any other row.
pub fn final_row(row: &Output) -> Option<(String, i64, u64)> {
    match row {
        Output::Window(w) if w.is_final => {
            let key: Vec<&str> = w.key.iter().map(|(_, v)| v.as_str()).collect();
            Some((key.join("/"), w.window_start, w.version))
        }
        _ => None,
    }
}

/// Final rows as [`final_row`] gives them.
pub type Finals = Arc<Mutex<Vec<(String, i64, u64)>>>;

/// Builds the pipeline over `reader` in a dataflow of `worker`, and pushes
/// its final rows to `finals`.
pub fn build_into(
    worker: &mut timely::worker::Worker,
    reader: impl PartitionReader,
    spec: PipelineSpec,
    settings: SourceSettings,
    shared: &Shared,
    finals: &Finals,
) {
    let sink = Arc::clone(finals);
    worker.dataflow::<u64, _, _>(|scope| {
        build(scope, reader, Arc::new(spec), settings, shared.clone()).inspect(move |row| {
            if let Some(f) = final_row(row) {
                sink.lock().expect("lock").push(f);
            }
        });
    });
}
