//! Fixtures shared by the dataflow tests.

use footprint_dataflows::{AggregateSpec, Measure, PipelineSpec, WindowSpec};

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
