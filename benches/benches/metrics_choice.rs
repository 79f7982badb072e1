//! Which metrics library: the cost of counting on the hot path.
//!
//! The source counts messages once per read round and the operators count
//! rows once per batch, but bad and late events, and every sink outcome,
//! are counted as they happen, so the per-increment cost matters. This
//! bench compares, per increment:
//!
//! - a bare `AtomicU64` (what the hand-written metrics used);
//! - `prometheus-client`: a `Counter` handle kept by its owner, and a
//!   labelled `Family` looked up on every increment;
//! - the `metrics` facade with `metrics-exporter-prometheus` installed as the
//!   global recorder: a registered `Counter` handle, and the `counter!`
//!   macro on every increment.
//!
//! Run with `cargo bench -p footprint-benches --bench metrics_choice`.

#![allow(missing_docs)] // criterion_group! generates an undocumented function.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

const N: u64 = 10_000;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Sink {
    sink: String,
}

fn counting(c: &mut Criterion) {
    let mut g = c.benchmark_group("count_one");
    g.throughput(Throughput::Elements(N));
    let atomic = AtomicU64::new(0);
    g.bench_function("atomic_u64", |b| {
        b.iter(|| {
            for _ in 0..N {
                atomic.fetch_add(black_box(1), Ordering::Relaxed);
            }
        })
    });
    let counter: Counter = Counter::default();
    g.bench_function("prometheus_client_counter", |b| {
        b.iter(|| {
            for _ in 0..N {
                counter.inc_by(black_box(1));
            }
        })
    });
    let family = Family::<Sink, Counter>::default();
    let label = Sink {
        sink: "mysql".into(),
    };
    g.bench_function("prometheus_client_family_lookup", |b| {
        b.iter(|| {
            for _ in 0..N {
                family.get_or_create(black_box(&label)).inc();
            }
        })
    });
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let _ = metrics::set_global_recorder(recorder);
    let handle = metrics::counter!("footprint_bench_total", "sink" => "mysql");
    g.bench_function("metrics_counter_handle", |b| {
        b.iter(|| {
            for _ in 0..N {
                handle.increment(black_box(1));
            }
        })
    });
    g.bench_function("metrics_counter_macro", |b| {
        b.iter(|| {
            for _ in 0..N {
                metrics::counter!("footprint_bench_total", "sink" => "mysql")
                    .increment(black_box(1));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, counting);
criterion_main!(benches);
