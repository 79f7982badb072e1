//! Backlog replay is exact: a pre-loaded 4-partition topic whose partitions
//! are read at very different speeds loses nothing. The watermark is the
//! minimum over partitions, so a fast partition never makes a slow one's
//! events late.

use footprint::config::Config;
use footprint_dataflows::clickstream::GenConfig;
use footprint_dataflows::event::Event;
use footprint_dataflows::reference::{Collected, compute};
use footprint_dataflows::{MeasureValue, PipelineSpec};
use footprint_tests::{brokers, preload, run_to_end, unique};

const EVENTS: u64 = 200_000;
const WEIGHTS: [usize; 4] = [1, 4, 16, 64];
const BATCH: usize = 16;

/// How many events a watermark taken as the maximum over partitions (what
/// stream processors that race ahead on the fastest partition do) would
/// declare late, reading partitions in the same weighted rounds.
fn late_under_max_watermark(spec: &PipelineSpec, parts: &[Vec<Vec<u8>>]) -> usize {
    let agg = &spec.aggregates[0];
    let mut pos = vec![0usize; parts.len()];
    let mut max_ts = i64::MIN;
    let mut late = 0;
    while pos.iter().zip(parts).any(|(p, part)| *p < part.len()) {
        for (i, part) in parts.iter().enumerate() {
            let to = part.len().min(pos[i] + BATCH * WEIGHTS[i]);
            for payload in &part[pos[i]..to] {
                let Ok(ev) = Event::decode(payload) else {
                    continue;
                };
                max_ts = max_ts.max(ev.ts);
                let watermark = max_ts - spec.max_out_of_order as i64;
                let start = agg.window.starts(ev.ts).last().unwrap_or(0);
                if agg.window.end(start) + agg.allowed_lateness as i64 <= watermark {
                    late += 1;
                }
            }
            pos[i] = to;
        }
    }
    late
}

#[test]
fn replays_a_skewed_backlog_exactly() {
    let topic = unique("backlog");
    let gen_cfg = GenConfig {
        seed: 2026,
        partitions: 4,
        disorder: 0.05,
        max_disorder_ms: 3_000,
        ..GenConfig::default()
    };
    let (parts, produced) = preload(&topic, &gen_cfg, EVENTS).expect("preload");
    assert_eq!(produced.good, EVENTS);

    let toml = format!(
        r#"
[source]
brokers = "{brokers}"
topics = ["{topic}"]
batch = {BATCH}
read_weights = [1, 4, 16, 64]

[watermark]
max_out_of_order = "0s"

[[aggregate]]
name = "count_1m"
group_by = ["app_id", "event", "item_id"]
window = {{ tumbling = "1m" }}
measures = ["count", "distinct(user_id)"]
allowed_lateness = "5s"
sinks = []

[[aggregate]]
name = "app_events_10m"
group_by = ["app_id", "event"]
window = {{ sliding = "10m", every = "1m" }}
measures = ["count"]
allowed_lateness = "5s"
sinks = []
"#,
        brokers = brokers()
    );
    let mut cfg = Config::from_layers(Some(&toml), Vec::<(String, String)>::new()).expect("config");
    cfg.recent = None;
    let spec = cfg.spec().expect("spec");
    let naive = late_under_max_watermark(&spec, &parts);
    assert!(
        naive > 1_000,
        "the skew must be large enough to trip a max-over-partitions watermark (it would drop {naive})"
    );

    let (report, rows) = run_to_end(&cfg, 2).expect("worker run");
    assert_eq!(report.events_in, EVENTS);
    assert_eq!(
        report.late, 0,
        "nothing is late by the definition, so nothing may be reported late"
    );

    let got = Collected::from_outputs(rows, cfg.spec().expect("spec").recent.map_or(0, |r| r.keep));
    let total: u64 = got
        .windows
        .values()
        .filter(|w| &*w.aggregate == "count_1m")
        .map(|w| match w.measures[0].1 {
            MeasureValue::Count(c) => c,
            _ => 0,
        })
        .sum();
    assert_eq!(
        total, EVENTS,
        "the sum of final counts equals the number of good events"
    );
    let expected = compute(&spec, &parts);
    assert!(expected.late.is_empty());
    assert_eq!(got.windows, expected.windows);
    println!(
        "backlog: {EVENTS} events, 0 late; a max-over-partitions watermark would have made {naive} late"
    );
}
