//! The collector's own work per request, without HTTP or Kafka: a gzip'd
//! NDJSON batch of 100 events decompressed, split, checked, deduplicated
//! by event id, handed to an outlet that acknowledges at once, and its
//! answer serialized. Run with
//! `cargo bench -p footprint-benches --bench collect_path`.

#![allow(missing_docs)] // criterion_group! generates an undocumented function.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use footprint_benches::payloads;
use footprint_collect::body::{self, Encoding, Form};
use footprint_collect::events::CollectMetrics;
use footprint_collect::limits::Sender;
use footprint_collect::{CollectSettings, Collector, Delivery, Outlet, OutletError};

/// Acknowledges every record at once and keeps nothing.
struct Instant;

impl Outlet for Instant {
    fn send(&self, _key: &[u8], _value: &[u8]) -> Result<Delivery, OutletError> {
        Ok(Box::pin(async { Ok(()) }))
    }

    fn queue_depth(&self) -> u64 {
        0
    }
}

/// 100 events whose ids no earlier batch had.
fn batch(template: &[Vec<u8>], next: &AtomicU64) -> Vec<u8> {
    let mut body = Vec::new();
    for p in template {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let text = String::from_utf8_lossy(p);
        // The generator's ids are `e{n}`: give each a fresh one.
        let fresh = match text.find("\"event_id\":\"") {
            Some(at) => {
                let start = at + 12;
                let end = text[start..].find('"').map_or(start, |e| start + e);
                format!("{}b{n}{}", &text[..start], &text[end..])
            }
            None => text.into_owned(),
        };
        body.extend_from_slice(fresh.as_bytes());
        body.push(b'\n');
    }
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(&body);
    e.finish().unwrap_or_default()
}

fn request(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("fp-bench-collect-{}", std::process::id()));
    let mut registry = footprint_telemetry::registry();
    let metrics = CollectMetrics::register(&mut registry);
    let settings = CollectSettings::new(dir.clone());
    let Ok((collector, _)) = Collector::open(settings.clone(), Arc::new(Instant), metrics) else {
        panic!(
            "the collector could not open its spill in {}",
            dir.display()
        );
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let template: Vec<Vec<u8>> = payloads(100).into_iter().collect();
    let next = AtomicU64::new(0);
    let mut g = c.benchmark_group("collect_request");
    g.throughput(Throughput::Elements(100));
    g.bench_function("gzip_ndjson_100_events", |b| {
        b.iter_batched(
            || batch(&template, &next),
            |gz| {
                let Ok(raw) = body::decompress(
                    &gz,
                    Encoding::Gzip,
                    settings.max_body,
                    settings.max_decompressed,
                ) else {
                    panic!("the batch does not decompress");
                };
                let Ok(items) = body::split(&raw, Form::Ndjson) else {
                    panic!("the batch does not split");
                };
                let answer = runtime.block_on(collector.take(&Sender::Anyone, &items));
                assert_eq!(answer.status, 200);
                serde_json::to_vec(&answer.outcomes)
                    .map(|v| v.len())
                    .unwrap_or(0)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    collector.stop();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, request);
criterion_main!(benches);
