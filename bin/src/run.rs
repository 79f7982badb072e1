//! Running the dataflow worker: discover partitions, open one reader and one
//! set of sinks per timely worker, run the dataflow, report progress.
//!
//! All I/O set-up happens before timely starts, so a bad broker address or
//! an unwritable results file fails fast with a clear error instead of
//! leaving other workers waiting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use footprint_connectors::admin;
use footprint_connectors::reader::{KafkaReader, PartitionRange};
use footprint_connectors::side::{DLQ_SUFFIX, LATE_SUFFIX, SideOutputs};
use footprint_dataflows::control::RunControl;
use footprint_dataflows::metrics::Metrics;
use footprint_dataflows::pipeline::{assigned, build};
use footprint_dataflows::source::SourceSettings;
use footprint_dataflows::watermark::WatermarkBoard;
use footprint_sinks::file::FileSinkFactory;
use footprint_sinks::operator::{Routing, WriteTo};
use footprint_sinks::{Sink, SinkFactory};

use crate::config::{Config, Start};

/// One worker's reader and sinks, prepared before timely starts.
type WorkerParts = (KafkaReader, Vec<Box<dyn Sink>>);

/// How to run.
pub struct RunOptions {
    /// Worker threads (overrides the config when set).
    pub threads: Option<usize>,
    /// Read each partition until it is caught up, finalise every window, and exit.
    pub until_end: bool,
    /// Stop flag (Ctrl-C, demo shutdown).
    pub control: Arc<RunControl>,
    /// Extra sinks that receive every row (the demo's live view, tests).
    pub extra_sinks: Vec<Arc<dyn SinkFactory>>,
    /// Log progress every this often (`None`: quiet).
    pub progress: Option<Duration>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            threads: None,
            until_end: false,
            control: Arc::new(RunControl::default()),
            extra_sinks: Vec::new(),
            progress: Some(Duration::from_secs(5)),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Messages read.
    pub events_in: u64,
    /// Bad messages.
    pub bad: u64,
    /// Late (event, aggregate) pairs.
    pub late: u64,
    /// Final window rows emitted.
    pub windows: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs the worker until the input ends (`until_end`) or a stop is requested.
pub fn run(cfg: &Config, opts: RunOptions, metrics: Arc<Metrics>) -> Result<RunReport> {
    let spec = Arc::new(cfg.spec()?);
    let settings = cfg.kafka();
    let threads = opts.threads.unwrap_or(cfg.worker.threads).max(1);

    let mut ranges = Vec::new();
    for topic in &cfg.source.topics {
        let parts = admin::partitions(&settings, topic)?
            .ok_or_else(|| footprint_connectors::ConnectorError::MissingTopic(topic.clone()))?;
        for p in parts {
            let (low, high) = admin::watermarks(&settings, topic, p)?;
            let from = match cfg.source.start {
                Start::Earliest => low,
                Start::Latest => high,
            };
            ranges.push(PartitionRange {
                topic: topic.clone(),
                partition: p,
                from,
                to: None,
                until_caught_up: opts.until_end,
            });
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start runtime")?;
    for topic in &cfg.source.topics {
        let n = ranges.iter().filter(|r| &r.topic == topic).count() as i32;
        for suffix in [DLQ_SUFFIX, LATE_SUFFIX] {
            let name = format!("{topic}{suffix}");
            if runtime.block_on(admin::ensure_topic(&settings, &name, n, 1))? {
                tracing::info!(topic = %name, partitions = n, "created topic");
            }
        }
    }
    tracing::info!(brokers = %settings.brokers, partitions = ranges.len(), threads, until_end = opts.until_end, "starting worker");

    // Sinks: configured ones by name, then the extra ones (which get every row).
    let mut factories: Vec<(String, Arc<dyn SinkFactory>)> = Vec::new();
    if let Some(f) = &cfg.sinks.file {
        factories.push(("file".into(), Arc::new(FileSinkFactory::new(&f.path))));
    }
    let configured = factories.len();
    for f in &opts.extra_sinks {
        factories.push((f.name().to_owned(), Arc::clone(f)));
    }
    let extra: Vec<usize> = (configured..factories.len()).collect();
    let index_of = |names: &[String]| -> Vec<usize> {
        let mut v: Vec<usize> = names
            .iter()
            .filter_map(|n| factories[..configured].iter().position(|(f, _)| f == n))
            .collect();
        v.extend(&extra);
        v
    };
    let routing = Routing {
        windows: spec.aggregates.iter().map(|a| index_of(&a.sinks)).collect(),
        recent: spec
            .recent
            .as_ref()
            .map(|r| index_of(&r.sinks))
            .unwrap_or_default(),
    };

    let names: Arc<[String]> = spec.aggregates.iter().map(|a| a.name.clone()).collect();
    let mut per_worker: Vec<Option<WorkerParts>> = Vec::new();
    for w in 0..threads {
        let mine: Vec<PartitionRange> = assigned(ranges.len(), w, threads)
            .into_iter()
            .map(|i| ranges[i].clone())
            .collect();
        let side = SideOutputs::new(&settings, Arc::clone(&names), Arc::clone(&metrics))?;
        let reader = KafkaReader::open(&settings, &cfg.source.group_id, mine, side)?;
        let sinks = factories
            .iter()
            .map(|(_, f)| f.build(w, threads))
            .collect::<Result<Vec<_>, _>>()?;
        per_worker.push(Some((reader, sinks)));
    }
    // Each worker takes its own reader and sinks, exactly once.
    let per_worker = Arc::new(Mutex::new(per_worker));
    let source_settings = SourceSettings {
        board: Some(Arc::new(WatermarkBoard::new(threads))),
        batch: cfg.source.batch,
        weights: cfg.source.read_weights.clone(),
        idle_timeout: cfg.watermark.idle_timeout.0,
    };

    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let reporter = opts.progress.map(|every| {
        let metrics = Arc::clone(&metrics);
        let done = Arc::clone(&done);
        std::thread::spawn(move || report_progress(&metrics, every, &done))
    });

    let control = Arc::clone(&opts.control);
    let worker_metrics = Arc::clone(&metrics);
    let guards = timely::execute(
        timely::Config::process(threads),
        move |worker| -> Result<(), String> {
            let taken = per_worker
                .lock()
                .map_err(|_| "worker set-up lock poisoned".to_owned())?[worker.index()]
            .take();
            let Some((reader, sinks)) = taken else {
                return Err(format!("no reader prepared for worker {}", worker.index()));
            };
            let spec = Arc::clone(&spec);
            let control = Arc::clone(&control);
            let metrics = Arc::clone(&worker_metrics);
            let routing = routing.clone();
            let settings = source_settings.clone();
            worker.dataflow::<u64, _, _>(move |scope| {
                build(scope, reader, spec, settings, control, Arc::clone(&metrics))
                    .write_to(sinks, routing, metrics);
            });
            while worker.step_or_park(None) {}
            Ok(())
        },
    )
    .map_err(|e| anyhow!("starting timely: {e}"))?;
    let mut failure = None;
    for r in guards.join() {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => failure = Some(e),
        }
    }
    done.store(true, Ordering::SeqCst);
    if let Some(h) = reporter {
        let _ = h.join();
    }
    if let Some(e) = failure {
        bail!("a worker failed: {e}");
    }
    let report = RunReport {
        events_in: metrics.events_in.load(Ordering::Relaxed),
        bad: metrics.bad_total(),
        late: metrics.late_total(),
        windows: metrics
            .windows_emitted
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum(),
        elapsed: started.elapsed(),
    };
    tracing::info!(
        events_in = report.events_in,
        bad = report.bad,
        late = report.late,
        windows_final = report.windows,
        seconds = report.elapsed.as_secs_f64(),
        "worker stopped"
    );
    Ok(report)
}

fn report_progress(metrics: &Metrics, every: Duration, done: &AtomicBool) {
    let mut last = Instant::now();
    let mut last_in = 0;
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        if last.elapsed() < every {
            continue;
        }
        let n = metrics.events_in.load(Ordering::Relaxed);
        let rate = (n - last_in) as f64 / last.elapsed().as_secs_f64();
        let wm = metrics.watermark.load(Ordering::Relaxed) as i64;
        let lag = metrics.max_event_ts.load(Ordering::Relaxed) - wm;
        tracing::info!(
            events_in = n,
            per_sec = rate.round(),
            bad = metrics.bad_total(),
            late = metrics.late_total(),
            watermark_lag_ms = lag,
            "progress"
        );
        last = Instant::now();
        last_in = n;
    }
}
