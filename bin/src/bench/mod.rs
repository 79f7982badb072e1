//! `footprint bench`: the numbers a user asks for (`docs/design.md#figures`), measured.
//!
//! - **engine**: decoding, windowing and aggregation of a file batch of the
//!   generated clickstream, at each worker count asked for, for three
//!   workloads: the 1-minute tumbling count alone (`count_1m`), the issue's
//!   workload (`aggregates`: the 1-minute tumbling count, distinct users and
//!   sum by app, event and item, and the 10-minute/1-minute sliding count by
//!   app and event), and the embedded default pipeline (`default`: both
//!   aggregates with distinct users, and recent activity);
//! - **end-to-end**: a pipeline (`--pipeline`: `aggregates`, the issue's
//!   workload, by default; `default` adds recent activity) from a
//!   pre-loaded topic on the broker into Redis and MySQL (`--stores`: one,
//!   both, or `none` for the worker alone), beside the raw read rate of the
//!   same topic measured in the same run by as many plain consumers as the
//!   worker has threads, each on the partitions that thread reads, and the
//!   cores each part used meanwhile ([`crate::cpu`]);
//! - **latency**: the generator at a fixed rate (half the raw read rate by
//!   default) for 60 s, with early updates every 250 ms: broker append →
//!   store write (each message counted at the first row that brings it to
//!   the store), and window end → final row written.
//!
//! Every measurement runs in a child process of its own (`footprint bench
//! --child …`), so that each has its own peak resident memory and none
//! inherits another's heap. The table shows the median of the runs; the JSON
//! file (`--json`) has every run.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use footprint_dataflows::PipelineSpec;
use footprint_dataflows::clickstream::{GenConfig, Profile};

mod collect;
pub mod e2e;
pub mod engine;
mod load;
mod serve;

/// Which measurements to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Everything.
    All,
    /// The dataflow alone, from a file batch.
    Engine,
    /// Broker → worker → Redis and MySQL, beside the raw read rate.
    E2e,
    /// End-to-end latency at a fixed rate.
    Latency,
    /// The query service over stores a run loaded (not part of `all`).
    Serve,
    /// The event collector beside `footprint gen` straight to Kafka (not
    /// part of `all`).
    Collect,
}

/// `footprint bench` settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// What to measure.
    pub mode: Mode,
    /// Events of the clickstream (engine and end-to-end).
    pub events: u64,
    /// The clickstream (engine, end-to-end, latency, serve).
    pub workload: Workload,
    /// Runs of each measurement; the table shows their median.
    pub runs: usize,
    /// Worker counts for the engine.
    pub workers: Vec<usize>,
    /// Worker threads of the end-to-end and latency runs.
    pub threads: usize,
    /// Pipeline of the end-to-end and latency runs: `aggregates` or `default`.
    pub pipeline: String,
    /// Stores of the end-to-end and latency runs (`redis`, `mysql`; none
    /// for the worker alone).
    pub stores: Vec<String>,
    /// Messages per second of the latency run (default: half the raw read rate).
    pub rate: Option<u64>,
    /// How long the latency run produces.
    pub seconds: u64,
    /// How long each query-service loop runs.
    pub serve_seconds: u64,
    /// Keep-alive connections of the collector's load generator.
    pub connections: usize,
    /// Only the query-service scenarios whose name contains this.
    pub serve_only: Option<String>,
    /// Where the JSON report goes.
    pub json: PathBuf,
    /// Where the engine's clickstream files go.
    pub dir: PathBuf,
}

/// The clickstream a bench runs on: a profile, with its users or others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// `skewed` or `uniform`.
    #[serde(with = "profile_name")]
    pub profile: Profile,
    /// Users, when not the profile's.
    pub users: Option<u32>,
}

impl Workload {
    /// Its name in topics, files and tables: the profile's, and the users
    /// when they are not the profile's (`skewed-2000000-users`).
    pub fn name(&self) -> String {
        match self.users {
            None => self.profile.name().to_owned(),
            Some(u) => format!("{}-{u}-users", self.profile.name()),
        }
    }

    /// The generator settings over `partitions` partitions.
    pub fn config(&self, partitions: u32) -> GenConfig {
        let base = self.profile.config(partitions);
        GenConfig {
            users: self.users.unwrap_or(base.users),
            ..base
        }
    }
}

mod profile_name {
    use footprint_dataflows::clickstream::Profile;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Profile, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Profile, D::Error> {
        let name = String::deserialize(d)?;
        Profile::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown profile `{name}`")))
    }
}

/// One measurement, as a child process runs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Child {
    /// An engine run of a workload.
    Engine {
        /// `count_1m`, `aggregates` or `default`.
        workload: String,
        /// Worker threads.
        workers: usize,
        /// Clickstream files.
        files: Vec<PathBuf>,
    },
    /// The raw read of the end-to-end topic.
    RawRead {
        /// Topic.
        topic: String,
        /// Plain consumers, one per worker thread of the runs it is beside.
        threads: usize,
    },
    /// The worker over the end-to-end topic.
    Worker {
        /// Topic.
        topic: String,
        /// Worker threads.
        threads: usize,
        /// `aggregates` or `default`.
        pipeline: String,
        /// Stores written.
        stores: Vec<String>,
    },
    /// A latency run.
    Latency {
        /// The clickstream.
        workload: Workload,
        /// Messages per second.
        rate: u64,
        /// Seconds of production.
        seconds: u64,
        /// Worker threads.
        threads: usize,
        /// `aggregates` or `default`.
        pipeline: String,
        /// Stores written.
        stores: Vec<String>,
    },
}

/// What a child measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Measured {
    /// See [`engine::EngineRun`].
    Engine(engine::EngineRun),
    /// Messages and seconds of a plain read or of the worker, and the peak RSS.
    Read {
        /// Messages.
        events: u64,
        /// Seconds.
        seconds: f64,
        /// Peak resident memory, bytes.
        peak_rss: Option<u64>,
        /// The worker's result rows (none for a plain read).
        #[serde(default)]
        rows: e2e::Rows,
        /// The worker's memory as its run went on (none for a plain read).
        #[serde(default)]
        memory: Vec<e2e::MemoryPoint>,
        /// The cores the child, the broker and the stores used meanwhile.
        #[serde(default)]
        cpu: Option<crate::cpu::CpuUse>,
    },
    /// See [`e2e::LatencyRun`].
    Latency(e2e::LatencyRun),
}

const RESULT: &str = "footprint-bench-result: ";

/// The engine's workloads, by name: the embedded defaults narrowed to it.
pub fn workload(name: &str) -> Result<PipelineSpec> {
    let mut cfg = Config::from_layers(None, Vec::<(String, String)>::new())?;
    narrow(&mut cfg, name)?;
    Ok(cfg.spec()?)
}

/// Narrows a default-shaped config (the 1-minute aggregate first, the
/// sliding one second) to a bench workload: `default` keeps it whole;
/// `aggregates` (the workload) drops recent activity and keeps only
/// the count of the sliding aggregate; `count_1m` keeps only the count of
/// the 1-minute aggregate.
pub fn narrow(cfg: &mut Config, name: &str) -> Result<()> {
    let count_only = |measures: &mut Vec<String>| measures.retain(|m| m == "count");
    match name {
        "default" => {}
        "aggregates" => {
            cfg.recent = None;
            if let Some(sliding) = cfg.aggregate.get_mut(1) {
                count_only(&mut sliding.measures);
            }
        }
        "count_1m" => {
            cfg.recent = None;
            cfg.aggregate.truncate(1);
            if let Some(tumbling) = cfg.aggregate.first_mut() {
                count_only(&mut tumbling.measures);
            }
        }
        other => bail!("unknown workload `{other}`: count_1m, aggregates or default"),
    }
    Ok(())
}

/// Runs one measurement in this process and prints its result (for the parent).
pub fn child(cfg: &Config, spec: &str) -> Result<()> {
    let child: Child = serde_json::from_str(spec).context("decoding the child's task")?;
    let measured = match child {
        Child::Engine {
            workload: w,
            workers,
            files,
        } => Measured::Engine(engine::run(workload(&w)?, files, workers)?),
        Child::RawRead { topic, threads } => {
            let (events, cpu) = e2e::raw_read(cfg, &topic, threads)?;
            Measured::Read {
                events,
                seconds: cpu.seconds,
                peak_rss: peak_rss(),
                rows: e2e::Rows::default(),
                memory: Vec::new(),
                cpu: Some(cpu),
            }
        }
        Child::Worker {
            topic,
            threads,
            pipeline,
            stores,
        } => {
            let run = e2e::worker_run(cfg, &topic, threads, &pipeline, &stores)?;
            Measured::Read {
                events: run.events,
                seconds: run.seconds,
                peak_rss: run.peak_rss,
                rows: run.rows,
                memory: run.memory,
                cpu: Some(run.cpu),
            }
        }
        Child::Latency {
            workload,
            rate,
            seconds,
            threads,
            pipeline,
            stores,
        } => Measured::Latency(e2e::latency_run(
            cfg, rate, seconds, threads, &pipeline, &stores, workload,
        )?),
    };
    println!("{RESULT}{}", serde_json::to_string(&measured)?);
    Ok(())
}

/// Runs `task` in a child process and returns what it measured.
fn in_child(config: Option<&std::path::Path>, task: &Child) -> Result<Measured> {
    let exe = std::env::current_exe().context("finding the footprint binary")?;
    let mut cmd = std::process::Command::new(exe);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd
        .arg("bench")
        .arg("--child")
        .arg(serde_json::to_string(task)?)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running a bench child")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find_map(|l| l.strip_prefix(RESULT)) else {
        bail!("a bench child failed ({}): {task:?}", out.status);
    };
    Ok(serde_json::from_str(line)?)
}

/// The process's peak resident memory, from `/proc/self/status` (Linux).
pub fn peak_rss() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// The process's resident memory now, from `/proc/self/status` (Linux).
pub fn current_rss() -> Option<u64> {
    proc_status_bytes("VmRSS:")
}

/// A `/proc/self/status` field given in kB, in bytes.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `Redis and MySQL`, `Redis`, `no store`.
fn stores_text(stores: &[String]) -> String {
    let names: Vec<&str> = stores
        .iter()
        .map(|s| match s.as_str() {
            "redis" => "Redis",
            "mysql" => "MySQL",
            other => other,
        })
        .collect();
    match names.as_slice() {
        [] => "no store".into(),
        [one] => (*one).into(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The median (NaN of nothing).
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn median_bytes(v: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    let m = median(v.flatten().map(|b| b as f64).collect());
    m.is_finite().then_some(m as u64)
}

fn mb(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "–".into(), |b| format!("{:.0} MB", b as f64 / 1e6))
}

fn rate(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else {
        format!("{:.0}k", n / 1e3)
    }
}

/// The report: every run, and the medians the table shows.
#[derive(Debug, Default, Serialize)]
struct Report {
    events: u64,
    workload: String,
    runs: usize,
    cores: usize,
    engine: Vec<EngineRow>,
    end_to_end: Option<EndToEndRow>,
    latency: Option<LatencyRow>,
    serve: Vec<serve::ServeRow>,
    collect: Vec<collect::CollectRun>,
}

#[derive(Debug, Serialize)]
struct EngineRow {
    workload: String,
    workers: usize,
    median_events_per_sec: f64,
    median_events_per_sec_per_core: f64,
    median_peak_rss: Option<u64>,
    runs: Vec<engine::EngineRun>,
}

#[derive(Debug, Serialize)]
struct EndToEndRow {
    pipeline: String,
    stores: Vec<String>,
    threads: usize,
    median_events_per_sec: f64,
    median_raw_read_per_sec: f64,
    median_ratio: f64,
    median_peak_rss: Option<u64>,
    runs: Vec<e2e::EndToEndRun>,
}

#[derive(Debug, Serialize)]
struct LatencyRow {
    pipeline: String,
    stores: Vec<String>,
    threads: usize,
    rate: u64,
    seconds: u64,
    runs: Vec<e2e::LatencyRun>,
}

/// `footprint bench`.
pub fn bench(cfg: &Config, config_path: Option<&std::path::Path>, o: &BenchOptions) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut report = Report {
        events: o.events,
        workload: o.workload.name(),
        runs: o.runs,
        cores,
        ..Report::default()
    };
    let all = o.mode == Mode::All;
    if all || o.mode == Mode::Engine {
        let files = engine::clickstream_files(&o.dir, o.events, o.workload)?;
        for w in ["count_1m", "aggregates", "default"] {
            for &workers in &o.workers {
                let mut runs = Vec::new();
                for i in 0..o.runs {
                    eprintln!(
                        "bench: engine {w}, {workers} workers, run {}/{}",
                        i + 1,
                        o.runs
                    );
                    let task = Child::Engine {
                        workload: w.into(),
                        workers,
                        files: files.clone(),
                    };
                    match in_child(config_path, &task)? {
                        Measured::Engine(r) => runs.push(r),
                        other => bail!("unexpected result {other:?}"),
                    }
                }
                let eps = median(runs.iter().map(|r| r.events as f64 / r.seconds).collect());
                report.engine.push(EngineRow {
                    workload: w.into(),
                    workers,
                    median_events_per_sec: eps,
                    median_events_per_sec_per_core: eps / workers.min(cores) as f64,
                    median_peak_rss: median_bytes(runs.iter().map(|r| r.peak_rss)),
                    runs,
                });
            }
        }
    }
    let mut raw_rate = None;
    if all || o.mode == Mode::E2e {
        let topic = e2e::preloaded_topic(cfg, o.events, o.workload)?;
        let mut runs = Vec::new();
        for i in 0..o.runs {
            eprintln!("bench: end-to-end, run {}/{}", i + 1, o.runs);
            let Measured::Read {
                events: raw_events,
                seconds: raw_seconds,
                cpu: raw_cpu,
                ..
            } = in_child(
                config_path,
                &Child::RawRead {
                    topic: topic.clone(),
                    threads: o.threads,
                },
            )?
            else {
                bail!("unexpected raw read result");
            };
            let Measured::Read {
                events,
                seconds,
                peak_rss,
                rows,
                memory,
                cpu,
            } = in_child(
                config_path,
                &Child::Worker {
                    topic: topic.clone(),
                    threads: o.threads,
                    pipeline: o.pipeline.clone(),
                    stores: o.stores.clone(),
                },
            )?
            else {
                bail!("unexpected worker result");
            };
            runs.push(e2e::EndToEndRun {
                raw_events,
                raw_seconds,
                events,
                seconds,
                peak_rss,
                rows,
                memory,
                raw_cpu,
                cpu,
            });
        }
        let raw = median(
            runs.iter()
                .map(|r| r.raw_events as f64 / r.raw_seconds)
                .collect(),
        );
        raw_rate = Some(raw);
        report.end_to_end = Some(EndToEndRow {
            pipeline: o.pipeline.clone(),
            stores: o.stores.clone(),
            threads: o.threads,
            median_events_per_sec: median(
                runs.iter().map(|r| r.events as f64 / r.seconds).collect(),
            ),
            median_raw_read_per_sec: raw,
            median_ratio: median(
                runs.iter()
                    .map(|r| (r.events as f64 / r.seconds) / (r.raw_events as f64 / r.raw_seconds))
                    .collect(),
            ),
            median_peak_rss: median_bytes(runs.iter().map(|r| r.peak_rss)),
            runs,
        });
    }
    if all || o.mode == Mode::Latency {
        let rate = match (o.rate, raw_rate) {
            (Some(r), _) => r,
            (None, Some(raw)) => (raw / 2.0) as u64,
            (None, None) => {
                let topic = e2e::preloaded_topic(cfg, o.events, o.workload)?;
                let Measured::Read {
                    events, seconds, ..
                } = in_child(
                    config_path,
                    &Child::RawRead {
                        topic,
                        threads: o.threads,
                    },
                )?
                else {
                    bail!("unexpected raw read result");
                };
                (events as f64 / seconds / 2.0) as u64
            }
        };
        let mut runs = Vec::new();
        for i in 0..o.runs {
            eprintln!(
                "bench: latency at {rate} events/s for {} s, run {}/{}",
                o.seconds,
                i + 1,
                o.runs
            );
            let task = Child::Latency {
                workload: o.workload,
                rate,
                seconds: o.seconds,
                threads: o.threads,
                pipeline: o.pipeline.clone(),
                stores: o.stores.clone(),
            };
            match in_child(config_path, &task)? {
                Measured::Latency(r) => runs.push(r),
                other => bail!("unexpected result {other:?}"),
            }
        }
        report.latency = Some(LatencyRow {
            pipeline: o.pipeline.clone(),
            stores: o.stores.clone(),
            threads: o.threads,
            rate,
            seconds: o.seconds,
            runs,
        });
    }
    if o.mode == Mode::Serve {
        report.serve = serve::bench_serve(
            cfg,
            o.events,
            o.workload,
            o.runs,
            o.serve_seconds,
            o.serve_only.as_deref(),
        )?;
    } else if o.mode == Mode::Collect {
        report.collect =
            collect::bench_collect(cfg, o.events, o.runs, o.serve_seconds, o.connections)?;
    } else {
        print_table(&report);
    }
    std::fs::write(&o.json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", o.json.display()))?;
    println!("\nEvery run is in {}.", o.json.display());
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "\nFootprint bench: {} events of the {} clickstream (5% disorder up to 3 s), median of {} runs, {} cores\n",
        r.events, r.workload, r.runs, r.cores
    );
    if !r.engine.is_empty() {
        println!(
            "{:<12} {:<11} {:>7} {:>12} {:>14} {:>9}",
            "engine", "workload", "workers", "events/s", "per core", "peak RSS"
        );
        for e in &r.engine {
            println!(
                "{:<12} {:<11} {:>7} {:>12} {:>14} {:>9}",
                "",
                e.workload,
                e.workers,
                rate(e.median_events_per_sec),
                rate(e.median_events_per_sec_per_core),
                mb(e.median_peak_rss)
            );
        }
        println!();
    }
    if let Some(e) = &r.end_to_end {
        println!(
            "end-to-end   {} pipeline into {}, {} workers: {} events/s; raw read of the same topic by {} plain consumers {} msgs/s; ratio {:.0}%; peak RSS {}",
            e.pipeline,
            stores_text(&e.stores),
            e.threads,
            rate(e.median_events_per_sec),
            e.threads,
            rate(e.median_raw_read_per_sec),
            e.median_ratio * 100.0,
            mb(e.median_peak_rss)
        );
        let median_rows = |f: fn(&e2e::Rows) -> u64| {
            median(e.runs.iter().map(|r| f(&r.rows) as f64).collect()) as u64
        };
        println!(
            "             result rows per run (median): {} final and {} early rows emitted; summed over the stores, {} written, {} diverted, {} folded into newer rows while a store was busy",
            median_rows(|r| r.finals),
            median_rows(|r| r.early),
            median_rows(|r| r.written),
            median_rows(|r| r.diverted),
            median_rows(|r| r.folded)
        );
        if let Some(line) = cpu_lines(e) {
            println!("{line}");
        }
        let at = |percent: u8, f: fn(&e2e::MemoryPoint) -> f64| {
            median(
                e.runs
                    .iter()
                    .filter_map(|r| r.memory.iter().find(|m| m.percent == percent).map(f))
                    .collect(),
            )
        };
        if e.runs.iter().any(|r| !r.memory.is_empty()) {
            let row = |f: fn(&e2e::MemoryPoint) -> f64, unit: &dyn Fn(f64) -> String| {
                e2e::MEMORY_AT
                    .iter()
                    .map(|&p| unit(at(p, f)))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            let whole = |v: f64| {
                if v.is_nan() {
                    "-".to_owned()
                } else {
                    format!("{v:.0}")
                }
            };
            println!(
                "             as the worker read {}% of the events (median): RSS {} MB, of which read ahead by the Kafka clients {} MB of payload; open windows {}; rows waiting {}; watermark behind the newest event {} s",
                e2e::MEMORY_AT.map(|p| p.to_string()).join("/"),
                row(|m| m.rss as f64 / 1e6, &whole),
                row(|m| m.read_ahead_bytes as f64 / 1e6, &whole),
                row(|m| m.windows_open as f64, &whole),
                row(|m| m.rows_waiting as f64, &whole),
                row(|m| m.watermark_delay_ms as f64 / 1e3, &whole),
            );
        }
    }
    if let Some(l) = &r.latency {
        println!(
            "latency      {} pipeline into {}, {} events/s asked for {} s ({} produced, median), early updates every 250 ms, {} workers (medians over the runs, ms):",
            l.pipeline,
            stores_text(&l.stores),
            l.rate,
            l.seconds,
            produced_rate(l),
            l.threads
        );
        let mut sinks: Vec<String> = l
            .runs
            .iter()
            .flat_map(|run| run.append_to_write_ms.iter().map(|q| q.sink.clone()))
            .collect();
        sinks.sort();
        sinks.dedup();
        for sink in sinks {
            let pick = |of: fn(&e2e::LatencyRun) -> &[e2e::SinkQuantiles],
                        at: fn(&e2e::SinkQuantiles) -> u64| {
                median(
                    l.runs
                        .iter()
                        .filter_map(|run| {
                            of(run)
                                .iter()
                                .find(|q| q.sink == sink)
                                .map(|q| at(q) as f64)
                        })
                        .collect(),
                )
            };
            let append = |at| pick(|r| &r.append_to_write_ms, at);
            let fin = |at| pick(|r| &r.window_end_to_final_ms, at);
            let finals = if fin(|q| q.p50).is_nan() {
                "no window became final during the run".to_owned()
            } else {
                format!(
                    "p50 {:.0}, p99 {:.0}, p999 {:.0}",
                    fin(|q| q.p50),
                    fin(|q| q.p99),
                    fin(|q| q.p999)
                )
            };
            println!(
                "             {sink:<6} broker append → store write p50 {:.0}, p99 {:.0}, p999 {:.0}; window end → final written {finals}",
                append(|q| q.p50),
                append(|q| q.p99),
                append(|q| q.p999),
            );
        }
    }
}

/// Default `--dir`.
pub fn default_dir() -> PathBuf {
    PathBuf::from(".footprint/bench")
}

/// The rate the generator reached, which is below the one asked when the
/// machine cannot produce that fast beside the pipeline.
fn produced_rate(l: &LatencyRow) -> String {
    let seconds = l.seconds.max(1) as f64;
    let m = median(l.runs.iter().map(|r| r.produced as f64 / seconds).collect());
    if m.is_nan() {
        "none".to_owned()
    } else {
        format!("{m:.0} events/s")
    }
}

/// The cores the end-to-end runs used, and the CPU each event cost, split
/// by process: what bounds the ratio on a machine that runs everything.
fn cpu_lines(e: &EndToEndRow) -> Option<String> {
    // Per run: (cores busy, CPU µs per event) of one part of one phase.
    let phase =
        |run: &e2e::EndToEndRun, raw: bool, part: &dyn Fn(&crate::cpu::CpuUse) -> Option<f64>| {
            let (cpu, events) = if raw {
                (run.raw_cpu.as_ref()?, run.raw_events)
            } else {
                (run.cpu.as_ref()?, run.events)
            };
            let cores = part(cpu)?;
            Some((cores, cores * cpu.seconds / events.max(1) as f64 * 1e6))
        };
    let cpus = e
        .runs
        .iter()
        .find_map(|r| r.cpu.as_ref().and_then(|c| c.cpus))?;
    let show = |raw: bool, name: &str, part: &dyn Fn(&crate::cpu::CpuUse) -> Option<f64>| {
        let per_run: Vec<(f64, f64)> = e.runs.iter().filter_map(|r| phase(r, raw, part)).collect();
        if per_run.is_empty() {
            return None;
        }
        let cores = median(per_run.iter().map(|p| p.0).collect());
        let us = median(per_run.iter().map(|p| p.1).collect());
        // A store's CPU per row it was sent, in the worker's runs.
        let rows = |r: &e2e::EndToEndRun| match name {
            "Redis" => r.rows.redis_written,
            "MySQL" => r.rows.mysql_written,
            _ => 0,
        };
        let per_row: Vec<f64> = e
            .runs
            .iter()
            .filter(|r| !raw && rows(r) > 0)
            .filter_map(|r| {
                let (cores, _) = phase(r, false, part)?;
                let seconds = r.cpu.as_ref()?.seconds;
                Some(cores * seconds / rows(r) as f64 * 1e6)
            })
            .collect();
        if per_row.is_empty() {
            Some(format!("{name} {cores:.2} ({us:.2} µs/event)"))
        } else {
            let row_us = median(per_row);
            Some(format!(
                "{name} {cores:.2} ({us:.2} µs/event, {row_us:.2} µs/row)"
            ))
        }
    };
    let parts = |raw: bool, own: &str| {
        let mut out = vec![
            show(raw, "machine", &|c| c.machine),
            show(raw, "stolen by the host", &|c| c.stolen),
            show(raw, own, &|c| c.own),
        ];
        for (label, _) in crate::cpu::WATCHED {
            out.push(show(raw, label, &|c| c.process(label)));
        }
        out.into_iter().flatten().collect::<Vec<_>>().join(", ")
    };
    Some(format!(
        "             cores busy of {cpus} (median), and CPU per event read: raw read: {}\n             worker run: {}",
        parts(true, "plain consumers"),
        parts(false, "worker"),
    ))
}
