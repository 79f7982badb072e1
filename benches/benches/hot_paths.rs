//! Criterion benches of the per-event hot paths: decoding, window assignment
//! and routing. Run with `cargo bench -p footprint-benches`.

#![allow(missing_docs)] // criterion_group! generates an undocumented function.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use footprint_benches::{default_spec, payloads};
use footprint_dataflows::event::Event;
use footprint_dataflows::route::route;
use footprint_dataflows::window::WindowSpec;
use std::hint::black_box;

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
                        &mut |r| {
                            n += black_box(matches!(r, footprint_dataflows::Record::Window(_)))
                                as usize
                        },
                        &mut late,
                    );
                }
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, decode, windows, routing);
criterion_main!(benches);
