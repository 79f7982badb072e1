//! `footprint bench --mode collect`: the event collector under load, beside
//! `footprint gen` producing the same events straight into Kafka.
//!
//! Each run, on the same broker and the same events (the bench's
//! clickstream, with its event ids):
//! - **straight to Kafka**: `footprint gen`'s producer writes the events
//!   to a topic of its own, and the rate counts until Kafka acknowledged
//!   the last one;
//! - **NDJSON batches of 100, gzip**: a fresh collector in this process
//!   takes the same events, each request answered once Kafka acknowledged
//!   its events; closed loop over `--connections` keep-alive connections
//!   (64 by default), each batch sent once;
//! - **single-event requests**: one event per request, uncompressed, for
//!   `--serve-seconds`;
//! - **latency at half the batch rate**: open loop of gzip'd batches at
//!   half the batch rate this run measured, for `--serve-seconds`; p50,
//!   p99 and p999 from each request's scheduled time.
//!
//! Every scenario gets a collector, a topic and a spill of its own, so no
//! event id repeats within a collector, warmed up by 20,000 events of ids
//! of their own before it is measured. The load generator shares the
//! machine with the collector and the broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use footprint_dataflows::clickstream::{GenConfig, Generator};
use footprint_dataflows::control::RunControl;
use serde::Serialize;

use super::e2e::PARTITIONS;
use super::load::{Requests, Use, closed_loop, open_loop, post};
use super::median;
use crate::config::Config;
use crate::generate::{GenPlan, produce};

/// Events per batch request.
const BATCH: usize = 100;

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct CollectRun {
    /// Events per second, `footprint gen` straight to Kafka.
    pub straight_per_sec: f64,
    /// Events per second through the collector, gzip'd NDJSON batches.
    pub batch_per_sec: f64,
    /// Requests per second of one event each.
    pub single_per_sec: f64,
    /// Batch requests per second of the open loop.
    pub half_rate: f64,
    /// Its latencies, ms.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// See `p50_ms`.
    pub p999_ms: f64,
    /// Answers other than 200.
    pub errors: u64,
}

fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("fpbench-collect-{what}-{}-{nanos}", std::process::id())
}

/// A collector of its own (topic, spill, port) for one scenario, warmed
/// up by `warm_up` (batches of ids no measured request has).
fn collector(
    cfg: &Config,
    what: &str,
    runtime: &tokio::runtime::Runtime,
    warm_up: &[Vec<u8>],
) -> Result<(footprint_collect::CollectServer, tempfile::TempDir)> {
    let spill = tempfile::tempdir()?;
    let mut cfg = cfg.clone();
    cfg.source.topics = vec![unique(what)];
    cfg.collect.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.collect.partitions = PARTITIONS as i32;
    cfg.collect.spill.dir = spill.path().display().to_string();
    cfg.collect.dedup_max_ids = 10_000_000;
    let server = crate::collect::start(&cfg)?;
    let requests = Requests::new(warm_up.to_vec(), Use::Once);
    runtime.block_on(closed_loop(
        server.addr,
        &requests,
        8,
        Duration::from_secs(60),
    ))?;
    Ok((server, spill))
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes)?;
    Ok(e.finish()?)
}

/// `events` events of the bench's clickstream, from `start_ts`.
fn payloads(events: u64, start_ts: i64) -> Vec<Vec<u8>> {
    let mut g = Generator::new(GenConfig {
        partitions: PARTITIONS,
        start_ts,
        ..GenConfig::default()
    });
    (0..events).map(|_| g.next_event().payload).collect()
}

/// `payloads` with `"event_id":"e…"` turned into `"event_id":"{first}…"`.
fn renamed(payloads: Vec<Vec<u8>>, first: u8) -> Vec<Vec<u8>> {
    payloads
        .into_iter()
        .map(|mut v| {
            if let Some(at) = v.windows(12).position(|w| w == b"\"event_id\":\"") {
                v[at + 12] = first;
            }
            v
        })
        .collect()
}

fn batches(payloads: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
    payloads
        .chunks(BATCH)
        .map(|chunk| {
            let mut body = Vec::new();
            for p in chunk {
                body.extend_from_slice(p);
                body.push(b'\n');
            }
            Ok(post(
                "/v1/events",
                &[
                    ("content-type", "application/x-ndjson"),
                    ("content-encoding", "gzip"),
                ],
                &gzip(&body)?,
            ))
        })
        .collect()
}

/// Measures `runs` times; prints the table and returns the runs.
pub fn bench_collect(
    cfg: &Config,
    events: u64,
    runs: usize,
    seconds: u64,
    connections: usize,
) -> Result<Vec<CollectRun>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let how_long = Duration::from_secs(seconds);
    eprintln!("bench: collect: preparing {events} events");
    let events_ = payloads(events, GenConfig::default().start_ts);
    let batch_requests = batches(&events_)?;
    let singles: Vec<Vec<u8>> = events_
        .iter()
        .map(|p| post("/v1/events", &[("content-type", "application/json")], p))
        .collect();
    // More streams with ids of their own: for the latency loop, and to
    // warm each collector up (its producer's id, the connections) before
    // it is measured.
    let latency_requests = batches(&renamed(
        payloads(events, GenConfig::default().start_ts + 86_400_000),
        b'l',
    ))?;
    let warm_up = batches(&renamed(
        payloads(20_000, GenConfig::default().start_ts),
        b'w',
    ))?;
    let mut out = Vec::new();
    for run in 0..runs {
        eprintln!("bench: collect: run {}/{runs}: straight to Kafka", run + 1);
        let topic = unique("straight");
        let plan = GenPlan {
            topic,
            count: Some(events),
            rate: None,
            duration: None,
            progress: None,
        };
        let gen_cfg = GenConfig {
            partitions: PARTITIONS,
            ..GenConfig::default()
        };
        let started = Instant::now();
        produce(
            &cfg.kafka(),
            gen_cfg,
            &plan,
            &Arc::new(RunControl::default()),
        )?;
        let straight = events as f64 / started.elapsed().as_secs_f64();

        eprintln!(
            "bench: collect: run {}/{runs}: batches of {BATCH}, gzip",
            run + 1
        );
        let (server, _spill) = collector(cfg, "batch", &runtime, &warm_up)?;
        let requests = Requests::new(batch_requests.clone(), Use::Once);
        let (ok, errors_batch, took) = runtime.block_on(closed_loop(
            server.addr,
            &requests,
            connections,
            Duration::from_secs(3600),
        ))?;
        if ok as usize != requests.len() {
            bail!("the collector took {ok} of {} batches", requests.len());
        }
        let batch = events as f64 / took.as_secs_f64();
        drop(server);

        eprintln!(
            "bench: collect: run {}/{runs}: single-event requests",
            run + 1
        );
        let (server, _spill) = collector(cfg, "single", &runtime, &warm_up)?;
        let requests = Requests::new(singles.clone(), Use::Once);
        let (ok, errors_single, took) =
            runtime.block_on(closed_loop(server.addr, &requests, connections, how_long))?;
        let single = ok as f64 / took.as_secs_f64();
        drop(server);

        let half = (batch / BATCH as f64 / 2.0).max(1.0);
        eprintln!(
            "bench: collect: run {}/{runs}: latency at {half:.0} batches/s",
            run + 1
        );
        let (server, _spill) = collector(cfg, "latency", &runtime, &warm_up)?;
        let requests = Requests::new(latency_requests.clone(), Use::Once);
        let (latency, errors_latency) = runtime.block_on(open_loop(
            server.addr,
            &requests,
            connections,
            half,
            how_long,
        ))?;
        drop(server);
        let q = latency.quantiles();
        let r = CollectRun {
            straight_per_sec: straight,
            batch_per_sec: batch,
            single_per_sec: single,
            half_rate: half,
            p50_ms: q.p50.as_secs_f64() * 1e3,
            p99_ms: q.p99.as_secs_f64() * 1e3,
            p999_ms: q.p999.as_secs_f64() * 1e3,
            errors: errors_batch + errors_single + errors_latency,
        };
        eprintln!("bench: collect: {r:?}");
        out.push(r);
    }
    print_table(&out, seconds, connections);
    Ok(out)
}

fn print_table(runs: &[CollectRun], seconds: u64, connections: usize) {
    let m = |f: fn(&CollectRun) -> f64| median(runs.iter().map(f).collect());
    let ratios = median(
        runs.iter()
            .map(|r| r.batch_per_sec / r.straight_per_sec)
            .collect(),
    );
    println!();
    println!(
        "collector: medians of {} runs; {connections} keep-alive connections, load generator on this machine; timed loops {seconds} s",
        runs.len()
    );
    println!("| scenario | median |");
    println!("|---|---|");
    println!(
        "| `footprint gen` straight to Kafka | {:.0} events/s |",
        m(|r| r.straight_per_sec)
    );
    println!(
        "| NDJSON batches of {BATCH}, gzip | {:.0} events/s ({:.0}% of straight, median of the runs' ratios) |",
        m(|r| r.batch_per_sec),
        ratios * 100.0
    );
    println!(
        "| single-event requests | {:.0} req/s |",
        m(|r| r.single_per_sec)
    );
    println!(
        "| batches at half the batch rate ({:.0} req/s) | p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms |",
        m(|r| r.half_rate),
        m(|r| r.p50_ms),
        m(|r| r.p99_ms),
        m(|r| r.p999_ms)
    );
    println!(
        "| answers other than 200 | {} |",
        runs.iter().map(|r| r.errors).sum::<u64>()
    );
}
