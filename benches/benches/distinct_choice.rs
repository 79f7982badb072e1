//! Why the windowed aggregates use a timely operator instead of differential
//! arrangements: the same work (1-minute tumbling and 10-minute/1-minute
//! sliding windows, count and exact distinct users) over the same 200,000
//! routed events, fed in rounds of 2,000 with the watermark advancing, done
//! once by `aggregate_windows` and once by differential's `count_total` and
//! `distinct_total`. The differential version keeps every window forever
//! (no retractions), which only flatters it.
//!
//! `cargo bench -p footprint-benches --bench distinct_choice` prints the
//! median events/s of 5 runs of each.

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use differential_dataflow::input::Input as _;
use differential_dataflow::operators::{CountTotal, ThresholdTotal};
use footprint_benches::{default_spec, payloads};
use footprint_dataflows::aggregate::AggregateWindows;
use footprint_dataflows::control::RunControl;
use footprint_dataflows::event::Event;
use footprint_dataflows::events::DataflowMetrics;
use footprint_dataflows::flow::Flow;
use footprint_dataflows::key::GroupKey;
use footprint_dataflows::route::route;
use footprint_dataflows::{Contribution, PipelineSpec, Record};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::core::Input as _;

const EVENTS: usize = 200_000;
const ROUND: usize = 2_000;

fn spec() -> PipelineSpec {
    let mut s = default_spec();
    s.recent = None;
    for a in &mut s.aggregates {
        a.measures
            .retain(|m| !matches!(m, footprint_dataflows::Measure::SumValue));
        a.early_updates = Some(1);
        a.allowed_lateness = 0;
    }
    s
}

/// Routed contributions in arrival order, with the watermark after each.
fn contributions(spec: &PipelineSpec) -> Vec<(Contribution, u64)> {
    let mut out = Vec::new();
    let mut max_ts = 0i64;
    let mut late = Vec::new();
    for p in payloads(EVENTS) {
        let Ok(ev) = Event::decode(&p) else { continue };
        max_ts = max_ts.max(ev.ts);
        let wm = (max_ts - spec.max_out_of_order as i64).max(0) as u64;
        route(
            spec,
            &ev,
            0,
            &mut |r| {
                if let Record::Window(c) = r {
                    out.push((c, wm))
                }
            },
            &mut late,
        );
    }
    out
}

fn run_timely(spec: &PipelineSpec, input: &[(Contribution, u64)]) -> f64 {
    let spec = Arc::new(spec.clone());
    let input = input.to_vec();
    let started = Instant::now();
    timely::execute(timely::Config::thread(), move |worker| {
        let mut handle = InputHandle::<u64, CapacityContainerBuilder<Vec<Contribution>>>::new();
        let probe = worker.dataflow::<u64, _, _>(|scope| {
            let metrics = Arc::new(DataflowMetrics::new(
                spec.aggregates.iter().map(|a| a.name.clone()).collect(),
            ));
            let (probe, _) = scope
                .input_from(&mut handle)
                .aggregate_windows(
                    Arc::clone(&spec),
                    Arc::new(RunControl::default()),
                    Arc::new(Flow::default()),
                    metrics,
                )
                .probe();
            probe
        });
        for chunk in input.chunks(ROUND) {
            let wm = chunk.last().map_or(0, |c| c.1);
            for (c, _) in chunk {
                handle.send(c.clone());
            }
            if wm > *handle.time() {
                handle.advance_to(wm);
            }
            worker.step_while(|| probe.less_than(handle.time()));
        }
    })
    .map(|g| drop(g.join()))
    .unwrap_or_else(|e| panic!("timely: {e}"));
    EVENTS as f64 / started.elapsed().as_secs_f64()
}

type WindowId = (u16, GroupKey, i64);

fn run_differential(spec: &PipelineSpec, input: &[(Contribution, u64)]) -> f64 {
    let spec = Arc::new(spec.clone());
    let input = input.to_vec();
    let started = Instant::now();
    timely::execute(timely::Config::thread(), move |worker| {
        let spec2 = Arc::clone(&spec);
        let (mut handle, probe) = worker.dataflow::<u64, _, _>(move |scope| {
            let (handle, contributions) =
                scope.new_collection::<(u16, GroupKey, i64, Option<String>), isize>();
            let per_window = contributions.flat_map(move |(agg, key, ts, user)| {
                spec2.aggregates[usize::from(agg)]
                    .window
                    .starts(ts)
                    .map(|s| ((agg, key.clone(), s), user.clone()))
                    .collect::<Vec<(WindowId, Option<String>)>>()
            });
            let counts = per_window.clone().map(|(id, _)| id).count_total();
            let distinct = per_window
                .filter(|(_, u)| u.is_some())
                .distinct_total()
                .map(|(id, _)| id)
                .count_total();
            let (probe, _) = counts.concat(distinct).inner.probe();
            (handle, probe)
        });
        for chunk in input.chunks(ROUND) {
            let wm = chunk.last().map_or(0, |c| c.1);
            for (c, _) in chunk {
                let user = c.distinct.first().cloned().flatten().map(String::from);
                handle.insert((c.agg, c.key.clone(), c.ts, user));
            }
            if wm > *handle.time() {
                handle.advance_to(wm);
            }
            handle.flush();
            worker.step_while(|| probe.less_than(handle.time()));
        }
    })
    .map(|g| drop(g.join()))
    .unwrap_or_else(|e| panic!("timely: {e}"));
    EVENTS as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("distinct_choice: bench");
        return;
    }
    let spec = spec();
    let input = contributions(&spec);
    let timely: Vec<f64> = (0..5).map(|_| run_timely(&spec, &input)).collect();
    let differential: Vec<f64> = (0..5).map(|_| run_differential(&spec, &input)).collect();
    let (t, d) = (median(timely), median(differential));
    println!("windowed count + exact distinct, {EVENTS} events, 1 worker, median of 5 runs:");
    println!(
        "  timely aggregate_windows:             {:>10.0} events/s",
        t
    );
    println!(
        "  differential count_total+distinct:    {:>10.0} events/s",
        d
    );
    println!("  ratio timely / differential:           {:>10.2}", t / d);
}
