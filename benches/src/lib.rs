//! Shared inputs for Footprint's benchmarks: a generated clickstream and the
//! default pipeline's spec, so every bench measures the same workload.

use footprint_dataflows::clickstream::{GenConfig, Generator};
use footprint_dataflows::{AggregateSpec, Field, Measure, PipelineSpec, RecentSpec, WindowSpec};

/// `n` generated payloads of the default clickstream (5% disorder up to 3 s).
pub fn payloads(n: usize) -> Vec<Vec<u8>> {
    let mut g = Generator::new(GenConfig::default());
    (0..n).map(|_| g.next_event().payload).collect()
}

/// The default pipeline: a 1-minute tumbling count, distinct users and sum by
/// (app_id, event, item_id), and a 10-minute/1-minute sliding count and
/// distinct users by (app_id, event).
pub fn default_spec() -> PipelineSpec {
    let window = |size, every| {
        WindowSpec::sliding(size, every).unwrap_or_else(|e| panic!("bench window: {e}"))
    };
    PipelineSpec {
        aggregates: vec![
            AggregateSpec {
                name: "item_activity_1m".into(),
                group_by: vec![Field::AppId, Field::Event, Field::ItemId],
                window: window(60_000, 60_000),
                measures: vec![
                    Measure::Count,
                    Measure::Distinct(Field::UserId),
                    Measure::SumValue,
                ],
                allowed_lateness: 30_000,
                early_updates: Some(1_000),
                sinks: vec![],
            },
            AggregateSpec {
                name: "app_events_10m".into(),
                group_by: vec![Field::AppId, Field::Event],
                window: window(600_000, 60_000),
                measures: vec![Measure::Count, Measure::Distinct(Field::UserId)],
                allowed_lateness: 0,
                early_updates: Some(1_000),
                sinks: vec![],
            },
        ],
        recent: Some(RecentSpec {
            keep: 50,
            ttl: 7 * 86_400_000,
            updates: 1_000,
            sinks: vec![],
        }),
        max_out_of_order: 5_000,
    }
}
