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
use footprint_connectors::checkpoints::CheckpointWriter;
use footprint_connectors::compacted;
use footprint_connectors::control::{self, ControlPublisher};
use footprint_connectors::reader::{KafkaReader, PartitionRange};
use footprint_connectors::retry::RetryTopic;
use footprint_connectors::side::{DLQ_SUFFIX, LATE_SUFFIX, SideOutputs};
use footprint_dataflows::control::RunControl;
use footprint_dataflows::metrics::Metrics;
use footprint_dataflows::pipeline::{assigned, build_with_checkpoints};
use footprint_dataflows::source::SourceSettings;
use footprint_sinks::file::FileSinkFactory;
use footprint_sinks::mysql::MySqlSinkFactory;
use footprint_sinks::operator::{Routing, WriteTo};
use footprint_sinks::redis::RedisSinkFactory;
use footprint_sinks::util::breaker::BreakerConfig;
use footprint_sinks::util::guard::{Divert, GuardedSink};
use footprint_sinks::util::retry::RetryPolicy;
use footprint_sinks::util::switch::Switches;
use footprint_sinks::{Sink, SinkFactory};
use timely::dataflow::operators::Probe;

use crate::admin::{AdminState, serve as serve_admin};
use crate::cluster::Cluster;
use crate::config::Config;

mod reporters;
mod start;
use reporters::{report_lag, report_progress};
pub use start::BackfillRange;

/// One worker's reader and sinks, prepared before timely starts.
type WorkerParts = (KafkaReader, Vec<Box<dyn Sink>>);

/// The sinks the config declares, by name, built once per process.
pub fn sink_factories(
    cfg: &Config,
    spec: &Arc<footprint_dataflows::PipelineSpec>,
) -> Result<Vec<(String, Arc<dyn SinkFactory>)>> {
    let mut out: Vec<(String, Arc<dyn SinkFactory>)> = Vec::new();
    if let Some(f) = &cfg.sinks.file {
        out.push(("file".into(), Arc::new(FileSinkFactory::new(&f.path))));
    }
    if let Some(r) = &cfg.sinks.redis {
        let recent_ttl = spec
            .recent
            .as_ref()
            .map_or(Duration::ZERO, |r| Duration::from_millis(r.ttl));
        let keep = spec.recent.as_ref().map_or(0, |r| r.keep);
        let f = RedisSinkFactory::new(&r.url, &r.prefix, r.ttl.0, recent_ttl, keep)
            .context("sinks.redis")?;
        out.push(("redis".into(), Arc::new(f)));
    }
    if let Some(m) = &cfg.sinks.mysql {
        let f = MySqlSinkFactory::new(&m.url, Arc::clone(spec), &m.table_prefix)
            .context("sinks.mysql: preparing tables")?;
        out.push(("mysql".into(), Arc::new(f)));
    }
    Ok(out)
}

/// How to run.
pub struct RunOptions {
    /// Worker threads (overrides the config when set).
    pub threads: Option<usize>,
    /// This process's place in a timely cluster (`None`: a single process).
    pub cluster: Option<Cluster>,
    /// Read each partition until it is caught up, finalise every window, and exit.
    pub until_end: bool,
    /// Start every partition from its end, recording what is skipped.
    pub skip_to_latest: bool,
    /// Read exactly these ranges (a bounded backfill) instead of the checkpoints.
    pub backfill: Option<Vec<BackfillRange>>,
    /// Stop flag (Ctrl-C, demo shutdown).
    pub control: Arc<RunControl>,
    /// Extra sinks that receive every row (the demo's live view, tests).
    pub extra_sinks: Vec<Arc<dyn SinkFactory>>,
    /// Log progress every this often (`None`: quiet).
    pub progress: Option<Duration>,
    /// The degrade switches of the store sinks (all `auto` when not given).
    pub switches: Option<Arc<Switches>>,
    /// Serve the admin API on `admin.listen` while running.
    pub serve_admin: bool,
    /// Receives the address the admin API listens on.
    pub admin_addr: Option<Arc<std::sync::OnceLock<std::net::SocketAddr>>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            threads: None,
            cluster: None,
            until_end: false,
            skip_to_latest: false,
            backfill: None,
            control: Arc::new(RunControl::default()),
            extra_sinks: Vec::new(),
            progress: Some(Duration::from_secs(5)),
            switches: None,
            serve_admin: false,
            admin_addr: None,
        }
    }
}

/// Follows the control topic into `switches` (after reading it to its end),
/// until `stop` is set.
pub fn follow_switches(
    cfg: &Config,
    runtime: &tokio::runtime::Runtime,
    switches: &Arc<Switches>,
    stop: &Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let settings = cfg.kafka();
    runtime
        .block_on(compacted::ensure(&settings, &cfg.admin.control_topic))
        .context("control topic")?;
    let handle = control::follow(
        &settings,
        &cfg.admin.control_topic,
        Arc::clone(switches),
        Arc::clone(stop),
    )?;
    for (sink, mode) in switches.all() {
        tracing::info!(sink = %sink, %mode, "switch at start-up");
    }
    Ok(handle)
}

/// Names of the sinks that write to stores and run behind the guard.
pub const STORE_SINKS: [&str; 2] = ["redis", "mysql"];

/// The switches of the store sinks the config declares.
pub fn store_switches(cfg: &Config) -> Arc<Switches> {
    Arc::new(Switches::new(
        cfg.sink_names()
            .into_iter()
            .filter(|n| STORE_SINKS.contains(n)),
    ))
}

/// The retry topic with its journal, created if missing, with any journal
/// left by an earlier run resent.
pub fn retry_topic(cfg: &Config, runtime: &tokio::runtime::Runtime) -> Result<Arc<RetryTopic>> {
    let settings = cfg.retry_kafka();
    // When the retry topic's broker is down, start anyway: the journal takes the records.
    match runtime.block_on(admin::ensure_topic(&settings, &cfg.retry.topic, 4, 1)) {
        Ok(true) => tracing::info!(topic = %cfg.retry.topic, "created the retry topic"),
        Ok(false) => {}
        Err(e) => tracing::error!(
            topic = %cfg.retry.topic,
            error = %e,
            "the retry topic is not reachable; diverted writes go to the journal until it is"
        ),
    }
    let retry = RetryTopic::new(
        &settings,
        &cfg.retry.topic,
        std::path::Path::new(&cfg.retry.journal),
        cfg.retry.ack_timeout.0,
    )?;
    if retry.journal_len() > 0 {
        match retry.resend_journal() {
            Ok(n) => {
                tracing::info!(records = n, journal = %cfg.retry.journal, "resent journaled retry records")
            }
            Err(e) => {
                tracing::error!(error = %e, journal = %cfg.retry.journal, "journaled retry records could not be resent yet")
            }
        }
    }
    Ok(Arc::new(retry))
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Messages read (for a backfill: in its ranges).
    pub events_in: u64,
    /// Messages a backfill read past its ranges to complete their windows.
    pub tail: u64,
    /// Bad messages.
    pub bad: u64,
    /// Late (event, aggregate) pairs.
    pub late: u64,
    /// Final window rows emitted.
    pub windows: u64,
    /// Wall time from the dataflow's start until every worker finished,
    /// with all its rows written or diverted (the helper threads' shutdown
    /// after that is not counted).
    pub elapsed: Duration,
    /// The cores this process, the broker and the stores used over
    /// [`RunReport::elapsed`].
    pub cpu: crate::cpu::CpuUse,
}

/// Runs the worker until the input ends (`until_end`) or a stop is requested.
pub fn run(cfg: &Config, opts: RunOptions, metrics: Arc<Metrics>) -> Result<RunReport> {
    let local_cfg = for_this_process(cfg, opts.cluster.as_ref(), opts.backfill.is_some());
    let cfg = &local_cfg;
    let mut spec = cfg.spec()?;
    if opts.backfill.is_some() {
        // A backfill writes final rows only.
        for a in &mut spec.aggregates {
            a.early_updates = None;
        }
    }
    let spec = Arc::new(spec);
    let settings = cfg.kafka();
    let threads = opts.threads.unwrap_or(cfg.worker.threads).max(1);
    let (process, processes) = opts
        .cluster
        .as_ref()
        .map_or((0, 1), |c| (c.process, c.processes()));
    // Timely numbers the workers of process i from i × threads.
    let peers = threads * processes;
    let first_worker = process * threads;

    let plan = match &opts.backfill {
        Some(ranges) => start::plan_backfill(cfg, ranges)?,
        None => start::plan(
            cfg,
            start::mode(cfg, opts.skip_to_latest),
            opts.until_end,
            &metrics,
        )?,
    };
    let ranges = plan.ranges;
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
    runtime
        .block_on(compacted::ensure(&settings, &cfg.source.checkpoint_topic))
        .context("checkpoint topic")?;
    tracing::info!(brokers = %settings.brokers, partitions = ranges.len(), threads, process, processes, until_end = opts.until_end, "starting worker");

    // Sinks: configured ones by name, then the extra ones (which get every row).
    let mut factories: Vec<(String, Arc<dyn SinkFactory>)> = Vec::new();
    for (name, f) in sink_factories(cfg, &spec)? {
        factories.push((name, f));
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
        recent_keep: spec.recent.as_ref().map(|r| r.keep),
    };

    let switches = opts.switches.clone().unwrap_or_else(|| store_switches(cfg));
    let has_store = factories[..configured]
        .iter()
        .any(|(n, _)| STORE_SINKS.contains(&n.as_str()));
    let retry = if has_store {
        Some(retry_topic(cfg, &runtime)?)
    } else {
        None
    };
    let done = Arc::new(AtomicBool::new(false));
    // Whatever way this function returns, the helper threads stop.
    let _stop_helpers = StopOnDrop(Arc::clone(&done));
    let follower = if has_store {
        Some(follow_switches(cfg, &runtime, &switches, &done)?)
    } else {
        None
    };
    let admin = if opts.serve_admin {
        let state = AdminState {
            switches: Arc::clone(&switches),
            metrics: Arc::clone(&metrics),
            publisher: Some(Arc::new(ControlPublisher::new(
                &settings,
                &cfg.admin.control_topic,
            )?)),
            journal: retry.clone(),
            token: cfg.admin.token.as_deref().map(Arc::from),
        };
        let server = serve_admin(cfg.admin.listen, state)?;
        if let Some(slot) = &opts.admin_addr {
            let _ = slot.set(server.addr);
        }
        eprintln!(
            "admin API: http://{}/status  (switches: /switches, metrics: /metrics)",
            server.addr
        );
        Some(server)
    } else {
        None
    };
    let breaker = BreakerConfig {
        failures_to_open: cfg.retry.breaker_failures,
        open_for: cfg.retry.breaker_open_for.0,
    };
    let policy = RetryPolicy {
        attempts: cfg.retry.attempts,
        ..RetryPolicy::default()
    };
    let names: Arc<[String]> = spec.aggregates.iter().map(|a| a.name.clone()).collect();
    let mut per_worker: Vec<Option<WorkerParts>> = Vec::new();
    for w in first_worker..first_worker + threads {
        let mine: Vec<PartitionRange> = assigned(ranges.len(), w, peers)
            .into_iter()
            .map(|i| ranges[i].clone())
            .collect();
        let side = SideOutputs::new(&settings, Arc::clone(&names), Arc::clone(&metrics))?;
        let mut reader = KafkaReader::open(&settings, &cfg.source.group_id, mine, side)?;
        if opts.backfill.is_none() {
            reader = reader.with_checkpoints(CheckpointWriter::new(
                &settings,
                &cfg.source.checkpoint_topic,
                &cfg.source.group_id,
            )?);
        }
        let mut sinks = Vec::with_capacity(factories.len());
        for (i, (name, f)) in factories.iter().enumerate() {
            let inner = f.build(w, peers)?;
            let guarded = i < configured && STORE_SINKS.contains(&name.as_str());
            sinks.push(match (&retry, guarded) {
                (Some(retry), true) => Box::new(
                    GuardedSink::new(
                        inner,
                        Arc::clone(&switches),
                        breaker,
                        policy,
                        Arc::clone(retry) as Arc<dyn Divert>,
                        w as u64 + 1,
                    )
                    .with_metrics(Arc::clone(&metrics)),
                ) as Box<dyn Sink>,
                _ => inner,
            });
        }
        per_worker.push(Some((reader, sinks)));
    }
    // Each worker takes its own reader and sinks, exactly once.
    let per_worker = Arc::new(Mutex::new(per_worker));
    let source_settings = SourceSettings {
        batch: cfg.source.batch,
        weights: cfg.source.read_weights.clone(),
        idle_timeout: cfg.watermark.idle_timeout.0,
        max_sink_rows_waiting: cfg.sinks.max_rows_waiting,
        max_drift: Some(cfg.watermark.max_drift.0.as_millis() as u64).filter(|ms| *ms > 0),
    };

    let started = Instant::now();
    let cpu_clock = crate::cpu::CpuClock::start();
    let range_total: Option<u64> = opts.backfill.as_ref().map(|_| {
        ranges
            .iter()
            .map(|r| r.to.map_or(0, |to| (to - r.from).max(0) as u64))
            .sum()
    });
    let reporter = opts.progress.map(|every| {
        let metrics = Arc::clone(&metrics);
        let done = Arc::clone(&done);
        std::thread::spawn(move || report_progress(&metrics, every, &done, range_total))
    });

    let lag_reporter = {
        let metrics = Arc::clone(&metrics);
        let done = Arc::clone(&done);
        let settings = settings.clone();
        let group = cfg.source.group_id.clone();
        let sources: Vec<(String, i32)> = ranges
            .iter()
            .map(|r| (r.topic.clone(), r.partition))
            .collect();
        let retry_topic = has_store.then(|| (cfg.retry_kafka(), cfg.retry.topic.clone()));
        std::thread::spawn(move || {
            report_lag(
                &settings,
                &group,
                &sources,
                retry_topic.as_ref(),
                &metrics,
                &done,
            )
        })
    };
    let resender = retry.as_ref().map(|retry| {
        let retry = Arc::clone(retry);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(500));
                if retry.journal_len() > 0
                    && let Err(e) = retry.resend_journal()
                {
                    tracing::warn!(error = %e, "journaled retry records are still waiting for the retry topic");
                }
            }
        })
    });
    let control = Arc::clone(&opts.control);
    let worker_metrics = Arc::clone(&metrics);
    let commit_every = cfg.source.commit_interval.0;
    let timely_config = match &opts.cluster {
        Some(c) => c.timely(threads),
        None => timely::Config::process(threads),
    };
    let guards = timely::execute(
        timely_config,
        move |worker| -> Result<(), String> {
            let local = worker
                .index()
                .checked_sub(first_worker)
                .ok_or_else(|| format!("worker {} is not one of this process's", worker.index()))?;
            let taken = per_worker
                .lock()
                .map_err(|_| "worker set-up lock poisoned".to_owned())?
                .get_mut(local)
                .and_then(Option::take);
            let Some((reader, sinks)) = taken else {
                return Err(format!("no reader prepared for worker {}", worker.index()));
            };
            let spec = Arc::clone(&spec);
            let control = Arc::clone(&control);
            let metrics = Arc::clone(&worker_metrics);
            let routing = routing.clone();
            let settings = source_settings.clone();
            let mut checkpoints = worker.dataflow::<u64, _, _>(move |scope| {
                let (rows, checkpoints) = build_with_checkpoints(
                    scope,
                    reader,
                    spec,
                    settings,
                    control,
                    Arc::clone(&metrics),
                );
                rows.write_to(sinks, routing, metrics)
                    .probe_with(checkpoints.probe());
                checkpoints
            });
            let mut commit = |every: Duration| {
                if let Err(e) = checkpoints.poll(every) {
                    tracing::warn!(error = %e, "source offsets were not committed; the next commit covers them");
                }
            };
            while worker.step_or_park(Some(commit_every)) {
                commit(commit_every);
            }
            commit(Duration::ZERO);
            Ok(())
        },
    )
    .map_err(|e| anyhow!("starting timely (process {process} of {processes}): {e}"))?;
    let failure = join_workers(guards, processes);
    let elapsed = started.elapsed();
    let cpu = cpu_clock.stop();
    done.store(true, Ordering::SeqCst);
    if let Some(h) = reporter {
        let _ = h.join();
    }
    if let Some(h) = resender {
        let _ = h.join();
    }
    let _ = lag_reporter.join();
    if let Some(h) = follower {
        let _ = h.join();
    }
    drop(admin);
    if let Some(retry) = &retry
        && retry.journal_len() > 0
    {
        // Keep trying for a while, so that a clean exit leaves nothing behind
        // whenever Kafka takes the records (a just-created retry topic can
        // take a few seconds to accept them).
        let deadline = Instant::now() + Duration::from_secs(15);
        while retry.journal_len() > 0 && Instant::now() < deadline {
            match retry.resend_journal() {
                Ok(n) => {
                    tracing::info!(records = n, "resent journaled retry records before exiting")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "journaled retry records not resent yet; retrying before exit");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
    if let Some(retry) = &retry
        && retry.journal_len() > 0
    {
        tracing::error!(records = retry.journal_len(), journal = %cfg.retry.journal, "retry records are still in the journal; the next run resends them");
    }
    if let Some(e) = failure {
        bail!("a worker failed: {e}");
    }
    let report = RunReport {
        events_in: metrics.events_in.load(Ordering::Relaxed),
        tail: metrics.events_tail.load(Ordering::Relaxed),
        bad: metrics.bad_total(),
        late: metrics.late_total(),
        windows: metrics
            .windows_emitted
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum(),
        elapsed,
        cpu,
    };
    tracing::info!(
        events_in = report.events_in,
        bad = report.bad,
        late = report.late,
        windows_final = report.windows,
        seconds = report.elapsed.as_secs_f64(),
        cores = %report.cpu.own.map_or_else(|| "unknown".to_owned(), |c| format!("{c:.2}")),
        "worker stopped"
    );
    Ok(report)
}

/// The config as this process uses it: in a cluster, the journal gets a
/// per-process file name and the admin port is offset by the process index;
/// a backfill has a journal of its own.
fn for_this_process(cfg: &Config, cluster: Option<&Cluster>, backfill: bool) -> Config {
    let mut cfg = cfg.clone();
    if backfill {
        // A backfill may run beside the live workers of the same machine.
        cfg.retry.journal = crate::cluster::tagged_path(&cfg.retry.journal, "backfill");
    }
    if let Some(c) = cluster {
        cfg.retry.journal = c.local_path(&cfg.retry.journal);
        cfg.admin.listen = c.admin_listen(cfg.admin.listen);
    }
    cfg
}

/// Waits for the workers and returns the first failure. In a cluster, a
/// worker thread stops (timely panics) when another process goes away and
/// its connection breaks; that is reported as such, because the whole
/// cluster must then be restarted, each process resuming from the committed
/// offsets. The panic itself is on stderr.
fn join_workers(
    guards: timely::communication::WorkerGuards<Result<(), String>>,
    processes: usize,
) -> Option<String> {
    // Dropping the guards joins timely's communication threads, which have
    // panicked too when a peer went away: keep that inside this function.
    let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guards.join()));
    let Ok(results) = joined else {
        return Some(peer_lost(processes));
    };
    let mut failure = None;
    for r in results {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(_) if processes > 1 => failure = Some(peer_lost(processes)),
            Err(e) => failure = Some(format!("a worker thread panicked: {e}")),
        }
    }
    failure
}

fn peer_lost(processes: usize) -> String {
    format!(
        "a worker thread stopped: in a {processes}-process cluster this happens when another process stops; restart every process of the cluster: each resumes from the committed offsets"
    )
}

/// Sets its flag when dropped, so helper threads stop on every return path.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// `footprint admin`: the admin API without a pipeline (switches, health).
pub fn serve_admin_alone(cfg: &Config, control: &Arc<RunControl>) -> Result<()> {
    let spec = cfg.spec()?;
    let switches = store_switches(cfg);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let follower = follow_switches(cfg, &runtime, &switches, &stop)?;
    let _stop_follower = StopOnDrop(Arc::clone(&stop));
    let state = AdminState {
        switches,
        metrics: Arc::new(Metrics::new(
            spec.aggregates.iter().map(|a| a.name.clone()).collect(),
        )),
        publisher: Some(Arc::new(ControlPublisher::new(
            &cfg.kafka(),
            &cfg.admin.control_topic,
        )?)),
        journal: None,
        token: cfg.admin.token.as_deref().map(Arc::from),
    };
    let server = serve_admin(cfg.admin.listen, state)?;
    eprintln!("admin API: http://{}/switches", server.addr);
    while !control.stop_requested() {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::SeqCst);
    let _ = follower.join();
    Ok(())
}
