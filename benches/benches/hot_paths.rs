//! Criterion benches of the per-event hot paths: decoding (the fast path and
//! `serde_json`), window assignment, routing, the aggregate update, and the
//! encoding of result rows for Redis and MySQL. Run with
//! `cargo bench -p footprint-benches --bench hot_paths`.

#![allow(missing_docs)] // criterion_group! generates an undocumented function.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use footprint_benches::{default_spec, payloads};
use footprint_dataflows::aggregate::AggregateWindows;
use footprint_dataflows::control::RunControl;
use footprint_dataflows::event::Event;
use footprint_dataflows::events::DataflowMetrics;
use footprint_dataflows::flow::Flow;
use footprint_dataflows::reference::compute;
use footprint_dataflows::route::route;
use footprint_dataflows::window::WindowSpec;
use footprint_dataflows::{Contribution, Output, Record};
use std::hint::black_box;
use timely::dataflow::operators::{Inspect, ToStream};

fn decode(c: &mut Criterion) {
    let input = payloads(10_000);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(input.len() as u64));
    g.bench_function("event", |b| {
        b.iter(|| {
            input
                .iter()
                .filter(|p| Event::decode(black_box(p)).is_ok())
                .count()
        })
    });
    g.bench_function("serde_json_only", |b| {
        b.iter(|| {
            input
                .iter()
                .filter(|p| Event::decode_serde(black_box(p)).is_some())
                .count()
        })
    });
    g.finish();
}

fn windows(c: &mut Criterion) {
    let tumbling = WindowSpec::tumbling(60_000).unwrap_or_else(|e| panic!("{e}"));
    let sliding = WindowSpec::sliding(600_000, 60_000).unwrap_or_else(|e| panic!("{e}"));
    let ts: Vec<i64> = (0..10_000).map(|i| 1_767_225_600_000 + i * 997).collect();
    let mut g = c.benchmark_group("window_assignment");
    g.throughput(Throughput::Elements(ts.len() as u64));
    g.bench_function("tumbling_1m", |b| {
        b.iter(|| {
            ts.iter()
                .map(|t| tumbling.starts(black_box(*t)).count())
                .sum::<usize>()
        })
    });
    g.bench_function("sliding_10m_every_1m", |b| {
        b.iter(|| {
            ts.iter()
                .map(|t| sliding.starts(black_box(*t)).count())
                .sum::<usize>()
        })
    });
    g.finish();
}

fn routing(c: &mut Criterion) {
    let input = payloads(10_000);
    let spec = default_spec();
    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(input.len() as u64));
    g.bench_function("decode_and_route_default_pipeline", |b| {
        let mut late = Vec::new();
        b.iter(|| {
            let mut n = 0usize;
            for p in &input {
                if let Ok(ev) = Event::decode(p) {
                    late.clear();
                    route(
                        &spec,
                        &ev,
                        0,
                        &mut |r| n += black_box(matches!(r, Record::Window(_))) as usize,
                        &mut late,
                    );
                }
            }
            n
        })
    });
    g.finish();
}

/// The window contributions of `n` events of the default pipeline.
fn contributions(n: usize) -> Vec<Contribution> {
    let spec = default_spec();
    let mut out = Vec::new();
    let mut late = Vec::new();
    for p in payloads(n) {
        if let Ok(ev) = Event::decode(&p) {
            route(
                &spec,
                &ev,
                0,
                &mut |r| {
                    if let Record::Window(c) = r {
                        out.push(c);
                    }
                },
                &mut late,
            );
        }
    }
    out
}

fn aggregate(c: &mut Criterion) {
    let mut spec = default_spec();
    spec.recent = None;
    let spec = Arc::new(spec);
    let input = contributions(20_000);
    let mut g = c.benchmark_group("aggregate");
    g.throughput(Throughput::Elements(input.len() as u64));
    g.sample_size(20);
    g.bench_function("update_default_windows", |b| {
        b.iter_batched(
            || input.clone(),
            |batch| {
                let spec = Arc::clone(&spec);
                let names = spec.aggregates.iter().map(|a| a.name.clone()).collect();
                timely::execute_directly(move |worker| {
                    worker.dataflow::<u64, _, _>(|scope| {
                        batch
                            .to_stream(scope)
                            .aggregate_windows(
                                spec,
                                Arc::new(RunControl::default()),
                                Arc::new(Flow::default()),
                                Arc::new(DataflowMetrics::new(names)),
                            )
                            .inspect(|r| {
                                black_box(r);
                            });
                    });
                })
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn sink_encoding(c: &mut Criterion) {
    let mut spec = default_spec();
    spec.recent = None;
    let parts: Vec<Vec<Vec<u8>>> = vec![payloads(50_000)];
    let rows: Vec<Output> = compute(&spec, &parts)
        .windows
        .into_values()
        .map(Output::Window)
        .collect();
    let spec = Arc::new(spec);
    let redis = footprint_sinks::redis::RedisSinkFactory::new(
        "redis://127.0.0.1:6379",
        "fp",
        std::time::Duration::from_secs(3_600),
        std::time::Duration::ZERO,
        50,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("sink_encoding");
    g.throughput(Throughput::Elements(rows.len() as u64));
    g.bench_function("redis_pipeline", |b| {
        b.iter(|| redis.encode(black_box(&rows)).len())
    });
    g.bench_function("mysql_statements", |b| {
        b.iter(|| {
            footprint_sinks::mysql::encode_windows(&spec, "fp_", black_box(&rows))
                .map(|(_, bytes)| bytes)
                .unwrap_or(0)
        })
    });
    g.finish();
}

criterion_group!(benches, decode, windows, routing, aggregate, sink_encoding);
criterion_main!(benches);
