//! The end-to-end and latency benchmarks, against the real broker, Redis
//! and MySQL.
//!
//! - **End to end**: a topic pre-loaded with the clickstream is read by as
//!   many plain consumers as the worker has threads, doing no work (the raw
//!   read rate), and then by the worker into the stores to its end, in the
//!   same run.
//! - **Latency**: the generator produces at a fixed rate, with event time on
//!   the wall clock, while a worker with early updates every 250 ms writes
//!   to the stores; the histograms of broker append → store write and of
//!   window end → final row written are read at the end.
//!
//! Every run uses a consumer group, a Redis prefix and a MySQL database of
//! its own, dropped afterwards.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Workload;
use anyhow::{Context, Result};
use footprint_connectors::admin::Admin;
use footprint_connectors::reader::{KafkaReader, PartitionRange};
use footprint_dataflows::control::RunControl;
use footprint_dataflows::pipeline::assigned;
use footprint_dataflows::source::{PartitionReader, Verdict};
use footprint_telemetry::Latency;

use crate::config::{Config, Dur, MySqlSinkConfig, RedisSinkConfig, Start};
use crate::cpu::{CpuClock, CpuUse};
use crate::generate::{GenPlan, produce};
use crate::process::Process;
use crate::run::{RunOptions, run};

/// Partitions of the bench topics.
pub const PARTITIONS: u32 = 4;

/// The bench topic holding `events` messages of the `workload`
/// clickstream, produced now unless it is already complete.
pub fn preloaded_topic(cfg: &Config, events: u64, workload: Workload) -> Result<String> {
    let topic = format!("footprint-bench-{}-{events}", workload.name());
    let settings = cfg.kafka();
    let admin = Admin::new(&settings)?;
    if let Some(parts) = admin.partitions(&topic)? {
        let mut total = 0;
        for p in &parts {
            let (low, high) = admin.watermarks(&topic, *p)?;
            total += footprint_connectors::positions::true_end(&settings, &topic, *p, high)? - low;
        }
        if total == events as i64 {
            return Ok(topic);
        }
        anyhow::bail!(
            "topic {topic} holds {total} messages, not {events}: delete it, or bench another --events"
        );
    }
    eprintln!("bench: producing {events} events to {topic}");
    let plan = GenPlan {
        topic: topic.clone(),
        count: Some(events),
        rate: None,
        duration: None,
        progress: Some(Duration::from_secs(5)),
    };
    produce(
        &settings,
        workload.config(PARTITIONS),
        &plan,
        &Arc::new(RunControl::default()),
    )?;
    Ok(topic)
}

/// Names a run owns, and the stores' addresses.
pub(super) struct Owned {
    id: String,
    redis: String,
    mysql: String,
}

impl Owned {
    pub(super) fn new(what: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Owned {
            id: format!("fpbench_{what}_{}_{nanos}", std::process::id()),
            redis: std::env::var("FOOTPRINT_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            mysql: std::env::var("FOOTPRINT_MYSQL_URL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
                .trim_end_matches('/')
                .to_owned(),
        }
    }

    /// `cfg` reading `topic` into this run's stores, with every aggregate and
    /// recent activity written to `stores` (`redis`, `mysql`).
    pub(super) fn config(&self, base: &Config, topic: &str, stores: &[String]) -> Config {
        let mut cfg = base.clone();
        cfg.source.topics = vec![topic.to_owned()];
        cfg.source.group_id = self.id.clone();
        cfg.source.start = Start::Earliest;
        cfg.retry.topic = format!("{}-retry", self.id);
        cfg.retry.journal = std::env::temp_dir()
            .join(format!("{}.journal", self.id))
            .display()
            .to_string();
        cfg.admin.control_topic = format!("{}-control", self.id);
        cfg.admin.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        cfg.sinks.file = None;
        let wants = |name: &str| stores.iter().any(|s| s == name);
        cfg.sinks.redis = wants("redis").then(|| RedisSinkConfig {
            url: self.redis.clone(),
            prefix: self.id.clone(),
            ttl: Dur(Duration::from_secs(3_600)),
            top: Vec::new(),
        });
        cfg.sinks.mysql = wants("mysql").then(|| MySqlSinkConfig {
            url: format!("{}/{}", self.mysql, self.id),
            table_prefix: "fp_".into(),
        });
        for a in &mut cfg.aggregate {
            a.sinks = stores.to_vec();
        }
        if let Some(r) = &mut cfg.recent {
            r.sinks = stores.to_vec();
        }
        cfg
    }

    /// Drops the database and the Redis keys (best effort).
    pub(super) fn drop_stores(&self) {
        use mysql::prelude::Queryable;
        if let Ok(opts) = mysql::Opts::from_url(&self.mysql)
            && let Ok(mut c) = mysql::Conn::new(opts)
        {
            let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.id));
        }
        if let Ok(mut c) = redis::Client::open(self.redis.as_str()).and_then(|c| c.get_connection())
        {
            // A page of keys at a time: a run leaves millions of them.
            let _ =
                footprint_sinks::redis::scan_pages(&mut c, &format!("{}:*", self.id), |c, keys| {
                    redis::cmd("DEL").arg(&keys).query::<()>(c)
                });
        }
        let _ = std::fs::remove_file(std::env::temp_dir().join(format!("{}.journal", self.id)));
    }
}

/// One end-to-end run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EndToEndRun {
    /// Messages the plain consumers read.
    pub raw_events: u64,
    /// Its wall time.
    pub raw_seconds: f64,
    /// Messages the worker read.
    pub events: u64,
    /// The worker's wall time, from its dataflow's start to its end.
    pub seconds: f64,
    /// Peak resident memory of the process, bytes (Linux).
    pub peak_rss: Option<u64>,
    /// The worker's result rows.
    #[serde(default)]
    pub rows: Rows,
    /// The worker's memory as the run went on.
    #[serde(default)]
    pub memory: Vec<MemoryPoint>,
    /// The cores used during the raw read.
    #[serde(default)]
    pub raw_cpu: Option<CpuUse>,
    /// The cores used during the worker's run.
    #[serde(default)]
    pub cpu: Option<CpuUse>,
}

/// The worker process's memory when it had read a share of a run's events.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemoryPoint {
    /// Share of the run's events read, in percent.
    pub percent: u8,
    /// Messages read then.
    pub events: u64,
    /// Resident memory, bytes.
    pub rss: u64,
    /// Windows open in the aggregate operators.
    pub windows_open: i64,
    /// Result rows waiting for the store writers.
    pub rows_waiting: u64,
    /// How far the watermark was behind the newest event read, ms.
    #[serde(default)]
    pub watermark_delay_ms: i64,
    /// Payload bytes the worker's Kafka clients had read ahead.
    #[serde(default)]
    pub read_ahead_bytes: i64,
}

/// The shares of a run at which [`MemoryPoint`]s are reported.
pub const MEMORY_AT: [u8; 4] = [25, 50, 75, 100];

/// Samples the process's memory and the run's metrics every 100 ms until
/// finished, in a thread of its own.
struct Sampler {
    done: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<MemoryPoint>>>,
}

impl Sampler {
    fn start(process: Arc<Process>) -> Self {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = Arc::clone(&done);
        let thread = std::thread::Builder::new()
            .name("bench-sampler".into())
            .spawn(move || {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = super::current_rss() {
                        let metrics = &process.dataflow;
                        let (read_ahead_messages, read_ahead_bytes) = metrics.read_ahead();
                        let point = MemoryPoint {
                            percent: 0,
                            events: metrics.events_in(),
                            rss,
                            windows_open: metrics.windows_open(),
                            rows_waiting: process.flow.rows_waiting(),
                            watermark_delay_ms: metrics.watermark_delay_ms(),
                            read_ahead_bytes,
                        };
                        if samples.len() % 10 == 0 {
                            tracing::debug!(
                                events = point.events,
                                rss = point.rss,
                                read_ahead_bytes = point.read_ahead_bytes,
                                read_ahead_messages,
                                windows_open = point.windows_open,
                                rows_waiting = point.rows_waiting,
                                "worker memory"
                            );
                        }
                        samples.push(point);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                samples
            })
            .ok();
        Sampler { done, thread }
    }

    /// Stops sampling; the samples at [`MEMORY_AT`] of `events`.
    fn finish(mut self, events: u64) -> Vec<MemoryPoint> {
        self.done.store(true, Ordering::Relaxed);
        let samples = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        at_shares(&samples, events)
    }
}

/// Of samples in the order taken, the first that had read each share of
/// `events`.
fn at_shares(samples: &[MemoryPoint], events: u64) -> Vec<MemoryPoint> {
    MEMORY_AT
        .iter()
        .filter_map(|&percent| {
            let want = (events.saturating_mul(u64::from(percent)) / 100).max(1);
            samples
                .iter()
                .find(|s| s.events >= want)
                .map(|s| MemoryPoint { percent, ..*s })
        })
        .collect()
}

/// Reads every partition of `topic` to its end with `threads` plain
/// consumers that do nothing with the messages, each on the partitions the
/// worker of the same index reads: the rate the broker and the client allow
/// at the worker's parallelism. Returns the messages read, and the wall
/// time and cores of the read.
pub fn raw_read(cfg: &Config, topic: &str, threads: usize) -> Result<(u64, CpuUse)> {
    let settings = cfg.kafka();
    let admin = Admin::new(&settings)?;
    let parts = admin
        .partitions(topic)?
        .context("the bench topic is missing")?;
    let mut ranges = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let (low, _) = admin.watermarks(topic, *p)?;
        ranges.push(PartitionRange {
            topic: topic.to_owned(),
            partition: *p,
            id: i as u32,
            from: low,
            max_ts: None,
            to: None,
            until_caught_up: true,
            tail: false,
        });
    }
    let threads = threads.max(1);
    let mut readers = Vec::with_capacity(threads);
    for w in 0..threads {
        let mine: Vec<PartitionRange> = assigned(ranges.len(), w, threads)
            .into_iter()
            .map(|i| ranges[i].clone())
            .collect();
        if !mine.is_empty() {
            let n = mine.len();
            readers.push((
                KafkaReader::open_plain(&settings, &Owned::new("raw").id, mine)?,
                n,
            ));
        }
    }
    let clock = CpuClock::start();
    let read = std::thread::scope(|s| {
        let handles: Vec<_> = readers
            .into_iter()
            .map(|(mut reader, n)| s.spawn(move || read_to_end(&mut reader, n)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(0))
            .sum::<u64>()
    });
    Ok((read, clock.stop()))
}

/// Reads `n` partitions of `reader` to their ends; the messages read.
fn read_to_end(reader: &mut KafkaReader, n: usize) -> u64 {
    let mut done = vec![false; n];
    let mut read = 0u64;
    while done.iter().any(|d| !d) {
        let mut any = false;
        for (idx, d) in done.iter_mut().enumerate() {
            if *d {
                continue;
            }
            let status = reader.read(idx, 1024, &mut |m| {
                std::hint::black_box(m.payload.len());
                Verdict::Accepted
            });
            read += status.read as u64;
            any |= status.read > 0;
            *d = status.finished;
        }
        if !any {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    read
}

/// What [`worker_run`] measured.
#[derive(Debug, Clone)]
pub struct WorkerRun {
    /// Messages read.
    pub events: u64,
    /// Seconds from the dataflow's start to its end.
    pub seconds: f64,
    /// Peak resident memory once the run ended, before the bench dropped
    /// the run's stores (bytes; Linux).
    pub peak_rss: Option<u64>,
    /// Result rows, summed over the stores.
    pub rows: Rows,
    /// Its memory at [`MEMORY_AT`] of the run.
    pub memory: Vec<MemoryPoint>,
    /// The cores it, the broker and the stores used meanwhile.
    pub cpu: CpuUse,
}

/// The worker over `topic` into fresh stores, to the end, on `threads` workers.
pub fn worker_run(
    cfg: &Config,
    topic: &str,
    threads: usize,
    pipeline: &str,
    stores: &[String],
) -> Result<WorkerRun> {
    let owned = Owned::new("e2e");
    let mut cfg = owned.config(cfg, topic, stores);
    super::narrow(&mut cfg, pipeline)?;
    let process = Process::new(&cfg)?;
    let opts = RunOptions {
        threads: Some(threads),
        until_end: true,
        progress: None,
        ..RunOptions::default()
    };
    let sampler = Sampler::start(Arc::clone(&process));
    let result = run(&cfg, opts, &process);
    let memory = sampler.finish(process.dataflow.events_in());
    // Before the clean-up, whose memory is the bench's, not the worker's.
    let peak_rss = super::peak_rss();
    owned.drop_stores();
    let report = result?;
    Ok(WorkerRun {
        events: report.events_in,
        seconds: report.elapsed.as_secs_f64(),
        peak_rss,
        rows: Rows {
            written: process.sinks.written_total(&STORES),
            redis_written: process.sinks.written_total(&["redis"]),
            mysql_written: process.sinks.written_total(&["mysql"]),
            diverted: process.sinks.diverted_total(&STORES),
            folded: process.sinks.folded_total(&STORES),
            finals: process.dataflow.windows_emitted_total(),
            early: process.dataflow.window_updates(),
        },
        memory,
        cpu: report.cpu,
    })
}

/// Result rows of a run, summed over its stores.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Rows {
    /// Written to the store.
    pub written: u64,
    /// Of those, written to Redis.
    #[serde(default)]
    pub redis_written: u64,
    /// Of those, written to MySQL.
    #[serde(default)]
    pub mysql_written: u64,
    /// Diverted to the retry topic.
    pub diverted: u64,
    /// Replaced by a newer row of the same identity while the store was busy.
    pub folded: u64,
    /// Final window rows the aggregates emitted (each goes to every store).
    #[serde(default)]
    pub finals: u64,
    /// Early window rows the aggregates emitted.
    #[serde(default)]
    pub early: u64,
}

/// One latency run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LatencyRun {
    /// Messages per second asked of the generator.
    pub rate: u64,
    /// Messages produced, over the run's seconds: below `rate` × seconds
    /// when the machine could not produce that fast beside the pipeline.
    pub produced: u64,
    /// Messages the worker read.
    pub events: u64,
    /// Broker append → store write, ms, per sink.
    pub append_to_write_ms: Vec<SinkQuantiles>,
    /// Window end → final row written, ms, per sink.
    pub window_end_to_final_ms: Vec<SinkQuantiles>,
    /// Peak resident memory of the process, bytes (Linux).
    pub peak_rss: Option<u64>,
}

/// One sink's latency quantiles, ms.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SinkQuantiles {
    /// Sink.
    pub sink: String,
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
}

/// The stores a bench run can write to.
const STORES: [&str; 2] = ["redis", "mysql"];

/// The quantiles of each store that recorded something, ms.
fn quantiles(latency: impl Fn(&str) -> Latency) -> Vec<SinkQuantiles> {
    STORES
        .iter()
        .filter_map(|sink| {
            let q = latency(sink).quantiles();
            (q.count > 0).then(|| SinkQuantiles {
                sink: (*sink).to_owned(),
                count: q.count,
                p50: q.p50.as_millis() as u64,
                p99: q.p99.as_millis() as u64,
                p999: q.p999.as_millis() as u64,
            })
        })
        .collect()
}

/// Produces at `rate` messages a second for `seconds`, with early updates
/// every 250 ms, while a worker on `threads` workers writes to the stores.
pub fn latency_run(
    cfg: &Config,
    rate: u64,
    seconds: u64,
    threads: usize,
    pipeline: &str,
    stores: &[String],
    workload: Workload,
) -> Result<LatencyRun> {
    let owned = Owned::new("latency");
    let topic = format!("{}-events", owned.id);
    let mut cfg = owned.config(cfg, &topic, stores);
    super::narrow(&mut cfg, pipeline)?;
    cfg.source.start = Start::Latest;
    for a in &mut cfg.aggregate {
        a.early_updates = Some(Dur(Duration::from_millis(250)));
    }
    if let Some(r) = &mut cfg.recent {
        r.updates = Dur(Duration::from_millis(250));
    }
    let settings = cfg.kafka();
    Admin::new(&settings)?.ensure_topic(&topic, PARTITIONS as i32, 1)?;
    let process = Process::new(&cfg)?;
    let control = Arc::new(RunControl::default());
    let worker = {
        let (cfg, process, control) = (cfg.clone(), Arc::clone(&process), Arc::clone(&control));
        std::thread::spawn(move || {
            let opts = RunOptions {
                threads: Some(threads),
                control,
                progress: None,
                ..RunOptions::default()
            };
            run(&cfg, opts, &process)
        })
    };
    // Let the worker set up (topics, stores, assignment) before producing.
    std::thread::sleep(Duration::from_secs(3));
    let plan = GenPlan {
        topic: topic.clone(),
        count: None,
        rate: Some(rate),
        duration: Some(Duration::from_secs(seconds)),
        progress: Some(Duration::from_secs(10)),
    };
    let produced = produce(
        &settings,
        workload.config(PARTITIONS),
        &plan,
        &Arc::new(RunControl::default()),
    );
    // The last early updates land within a second or so.
    std::thread::sleep(Duration::from_secs(3));
    control.request_stop();
    let report = worker
        .join()
        .map_err(|_| anyhow::anyhow!("the worker thread panicked"));
    let peak_rss = super::peak_rss();
    owned.drop_stores();
    let produced = produced?.messages;
    report??;
    Ok(LatencyRun {
        rate,
        produced,
        events: process.dataflow.events_in(),
        append_to_write_ms: quantiles(|s| process.sinks.end_to_end_latency(s)),
        window_end_to_final_ms: quantiles(|s| process.sinks.final_delay(s)),
        peak_rss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(events: u64, rss: u64) -> MemoryPoint {
        MemoryPoint {
            events,
            rss,
            ..MemoryPoint::default()
        }
    }

    #[test]
    fn memory_is_reported_at_the_first_sample_past_each_share() {
        let samples: Vec<_> = [0, 10, 30, 49, 50, 80, 100, 100]
            .into_iter()
            .enumerate()
            .map(|(i, e)| sample(e, i as u64))
            .collect();
        let at = at_shares(&samples, 100);
        let got: Vec<(u8, u64, u64)> = at.iter().map(|m| (m.percent, m.events, m.rss)).collect();
        assert_eq!(
            got,
            vec![(25, 30, 2), (50, 50, 4), (75, 80, 5), (100, 100, 6)]
        );
        // A run sampled too briefly reports only the shares it reached.
        assert_eq!(at_shares(&samples[..3], 100).len(), 1);
        assert!(at_shares(&[], 100).is_empty());
    }
}
