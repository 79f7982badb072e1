//! `footprint worker`: plan where each partition starts, set up the topics,
//! the stores and the helpers, run the dataflow on timely, and report.
//!
//! All I/O set-up happens before timely starts, so a bad broker address or
//! an unwritable results file fails fast with a clear error instead of
//! leaving other workers waiting.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use footprint_connectors::admin::Admin;
use footprint_connectors::offsets::Skipped;
use footprint_connectors::reader::PartitionRange;
use footprint_connectors::retry::RetryTopic;
use footprint_connectors::side::{DLQ_SUFFIX, LATE_SUFFIX};
use footprint_dataflows::PipelineSpec;
use footprint_dataflows::control::RunControl;
use footprint_dataflows::pipeline::assigned;
use footprint_dataflows::source::SourceSettings;
use footprint_sinks::SinkFactory;
use footprint_sinks::util::guard::Divert;

use crate::admin::{AdminServer, AdminState, serve as serve_admin};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::process::Process;
use crate::stores::{Guard, retry_topic};

mod helpers;
mod layout;
pub mod marks;
mod sinks;
mod start;
mod workers;

use helpers::Helpers;
use layout::Layout;
use sinks::Sinks;
pub use start::{BackfillRange, backfill_command, parse_backfill};

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
    /// Serve the admin API on `admin.listen` while running.
    pub serve_admin: bool,
    /// Receives the address the admin API listens on.
    pub admin_addr: Option<Arc<OnceLock<SocketAddr>>>,
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
            serve_admin: false,
            admin_addr: None,
        }
    }
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
    /// Dead-letter and late records Kafka did not take (their messages'
    /// offsets were then not committed).
    pub side_failures: u64,
    /// Wall time from the dataflow's start until every worker finished,
    /// with all its rows written or diverted (the helper threads' shutdown
    /// after that is not counted).
    pub elapsed: Duration,
    /// The cores this process, the broker and the stores used over
    /// [`RunReport::elapsed`].
    pub cpu: crate::cpu::CpuUse,
}

/// Runs the worker until the input ends (`until_end`) or a stop is
/// requested, reporting through `process`.
pub fn run(cfg: &Config, opts: RunOptions, process: &Arc<Process>) -> Result<RunReport> {
    let backfill = opts.backfill.is_some();
    let cfg = &for_this_process(cfg, opts.cluster.as_ref(), backfill);
    let spec = pipeline_spec(cfg, backfill)?;
    let layout = Layout::new(
        opts.threads.unwrap_or(cfg.worker.threads),
        opts.cluster.as_ref(),
    );
    let settings = process.kafka(cfg.kafka());
    let admin = Admin::new(&settings)?;

    let plan = start::plan(
        cfg,
        &admin,
        start::mode(cfg, opts.skip_to_latest),
        opts.until_end,
        opts.backfill.as_deref(),
    )
    .context("planning where each partition starts")?;
    prepare_topics(cfg, &admin, &plan.ranges)?;
    tracing::info!(brokers = %settings.brokers, partitions = plan.ranges.len(), threads = layout.threads, process = layout.process, processes = layout.processes, until_end = opts.until_end, "starting worker");

    let mut sinks = Sinks::new(cfg, &spec, &opts.extra_sinks)?;
    let mut helpers = Helpers::new();
    let retry = if sinks.has_store() {
        let retry_admin = retry_admin(cfg, process, &admin)?;
        let retry = retry_topic(cfg, &retry_admin)?;
        sinks.guarded_by(Guard::new(
            cfg,
            Arc::clone(&process.switches),
            Arc::clone(&retry) as Arc<dyn Divert>,
            Arc::clone(&process.sinks),
            Some(Arc::clone(&process.holds)),
        ));
        helpers.follow_switches(cfg, &admin, &process.switches)?;
        // Before the first rows: a run whose retry topic is drained may
        // publish completeness marks from its first round.
        helpers::measure_retry(&retry_admin, &cfg.retry.topic, &retry, &process.holds);
        let resent = Arc::clone(&retry);
        helpers.spawn(move |stop| helpers::resend_journal(&resent, stop));
        Some((retry, retry_admin))
    } else {
        None
    };
    start_progress(&mut helpers, &opts, process, &plan.ranges);
    start_lag_watch(
        &mut helpers,
        cfg,
        process,
        &admin,
        retry.as_ref(),
        &layout,
        &plan.ranges,
    );
    let frontiers = Arc::new(marks::Frontiers::new(layout.threads));
    if !backfill {
        start_marks(
            &mut helpers,
            &mut sinks,
            process,
            &spec,
            &frontiers,
            &layout,
        );
    }
    let retry = retry.map(|r| r.0);
    let admin_server = if opts.serve_admin {
        Some(serve_admin_api(
            cfg,
            &opts,
            process,
            &settings,
            retry.clone(),
            plan.skipped,
        )?)
    } else {
        None
    };

    let aggregates: Arc<[String]> = spec.aggregates.iter().map(|a| a.name.clone()).collect();
    let parts = workers::prepare(
        cfg,
        &settings,
        &layout,
        &plan.ranges,
        &sinks,
        &aggregates,
        backfill,
    )?;
    let started = Instant::now();
    let cpu_clock = crate::cpu::CpuClock::start();
    let failure = workers::execute(
        &layout,
        parts,
        workers::Dataflow {
            routing: sinks.routing(&spec),
            spec,
            settings: source_settings(cfg),
            shared: process.dataflow_shared(Arc::clone(&opts.control)),
            sink_metrics: Arc::clone(&process.sinks),
            connector_metrics: Arc::clone(&process.connectors),
            commit_every: cfg.source.commit_interval.0,
            frontiers,
            until_end: opts.until_end,
        },
    )?;
    let elapsed = started.elapsed();
    let cpu = cpu_clock.stop();

    helpers.stop();
    drop(admin_server);
    if let Some(retry) = &retry {
        helpers::drain_journal(retry, &cfg.retry.journal);
    }
    if let Some(e) = failure {
        bail!("a worker failed: {e}");
    }
    Ok(report(process, elapsed, cpu))
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

/// The pipeline; a backfill writes final rows only.
fn pipeline_spec(cfg: &Config, backfill: bool) -> Result<Arc<PipelineSpec>> {
    let mut spec = cfg.spec()?;
    if backfill {
        for a in &mut spec.aggregates {
            a.early_updates = None;
        }
    }
    Ok(Arc::new(spec))
}

/// The source settings the config asks for.
fn source_settings(cfg: &Config) -> SourceSettings {
    SourceSettings {
        batch: cfg.source.batch,
        weights: cfg.source.read_weights.clone(),
        idle_timeout: cfg.watermark.idle_timeout.0,
        max_drift: Some(cfg.watermark.max_drift.0.as_millis() as u64).filter(|ms| *ms > 0),
    }
}

/// Creates what the sources write to: each source topic's dead-letter and
/// late topics (as many partitions as the source), and the checkpoint topic.
fn prepare_topics(cfg: &Config, admin: &Admin, ranges: &[PartitionRange]) -> Result<()> {
    for topic in &cfg.source.topics {
        let n = ranges.iter().filter(|r| &r.topic == topic).count() as i32;
        for suffix in [DLQ_SUFFIX, LATE_SUFFIX] {
            let name = format!("{topic}{suffix}");
            if admin.ensure_topic(&name, n, 1)? {
                tracing::info!(topic = %name, partitions = n, "created topic");
            }
        }
    }
    admin
        .ensure_compacted(&cfg.source.checkpoint_topic)
        .context("checkpoint topic")
}

/// The admin client of the retry topic's brokers (the source's when they
/// are the same).
fn retry_admin(cfg: &Config, process: &Process, admin: &Arc<Admin>) -> Result<Arc<Admin>> {
    let settings = process.kafka(cfg.retry_kafka());
    if settings == *admin.settings() {
        Ok(Arc::clone(admin))
    } else {
        Ok(Admin::new(&settings)?)
    }
}

/// Progress logs, every `opts.progress`.
fn start_progress(
    helpers: &mut Helpers,
    opts: &RunOptions,
    process: &Arc<Process>,
    ranges: &[PartitionRange],
) {
    if let Some(every) = opts.progress {
        let range_total: Option<u64> = opts.backfill.as_ref().map(|_| {
            ranges
                .iter()
                .map(|r| r.to.map_or(0, |to| (to - r.from).max(0) as u64))
                .sum()
        });
        let metrics = Arc::clone(&process.dataflow);
        helpers.spawn(move |stop| helpers::report_progress(&metrics, every, stop, range_total));
    }
}

/// The publisher of the stores' completeness marks, when the run writes
/// to a store.
fn start_marks(
    helpers: &mut Helpers,
    sinks: &mut Sinks,
    process: &Arc<Process>,
    spec: &Arc<PipelineSpec>,
    frontiers: &Arc<marks::Frontiers>,
    layout: &Layout,
) {
    let writers = sinks.take_marks();
    if writers.is_empty() {
        return;
    }
    let publisher = marks::Publisher {
        writers,
        holds: Arc::clone(&process.holds),
        frontiers: Arc::clone(frontiers),
        spec: Arc::clone(spec),
        switches: Arc::clone(&process.switches),
        flow: Arc::clone(&process.flow),
        writer: u32::try_from(layout.process).unwrap_or(u32::MAX),
        writers_total: u32::try_from(layout.processes).unwrap_or(u32::MAX),
        run: process.started_ms,
    };
    helpers.spawn(move |stop| marks::publish_marks(publisher, stop));
}

/// The reporter of the consumer lag, the broker's health and (with the
/// retry topic) the retry backlog.
fn start_lag_watch(
    helpers: &mut Helpers,
    cfg: &Config,
    process: &Arc<Process>,
    admin: &Arc<Admin>,
    retry: Option<&(Arc<RetryTopic>, Arc<Admin>)>,
    layout: &Layout,
    ranges: &[PartitionRange],
) {
    let mine: Vec<usize> = layout
        .workers()
        .flat_map(|w| assigned(ranges.len(), w, layout.peers()))
        .collect();
    process
        .health
        .started_at(mine.iter().map(|i| ranges[*i].from).sum());
    process
        .dataflow
        .partitions()
        .name(ranges.iter().map(|r| (r.id, r.topic.clone(), r.partition)));
    let watch = helpers::LagWatch {
        admin: Arc::clone(admin),
        group: cfg.source.group_id.clone(),
        sources: ranges
            .iter()
            .enumerate()
            .map(|(i, r)| (r.topic.clone(), r.partition, mine.contains(&i)))
            .collect(),
        retry: retry.map(|(r, a)| (Arc::clone(a), cfg.retry.topic.clone(), Arc::clone(r))),
        health: Arc::clone(&process.health),
        holds: Arc::clone(&process.holds),
        dataflow: Arc::clone(&process.dataflow),
    };
    helpers.spawn(move |stop| helpers::report_lag(&watch, stop));
}

/// Serves the admin API on `admin.listen`, and says where.
fn serve_admin_api(
    cfg: &Config,
    opts: &RunOptions,
    process: &Arc<Process>,
    settings: &footprint_connectors::client::KafkaSettings,
    journal: Option<Arc<RetryTopic>>,
    skipped: Vec<Skipped>,
) -> Result<AdminServer> {
    let state = AdminState::new(cfg, process, settings, journal, skipped.into())?;
    let server = serve_admin(cfg.admin.listen, state)?;
    if let Some(slot) = &opts.admin_addr {
        let _ = slot.set(server.addr);
    }
    eprintln!(
        "admin API: http://{}/status  (console: http://{}/, switches: /switches, metrics: /metrics)",
        server.addr, server.addr
    );
    Ok(server)
}

/// What the run did, from the process's metrics.
fn report(process: &Process, elapsed: Duration, cpu: crate::cpu::CpuUse) -> RunReport {
    let m = &process.dataflow;
    let report = RunReport {
        events_in: m.events_in(),
        tail: m.backfill_tail(),
        bad: m.bad_total(),
        late: m.late_total(),
        windows: m.windows_emitted_total(),
        side_failures: process.connectors.side_failures(),
        elapsed,
        cpu,
    };
    tracing::info!(
        events_in = report.events_in,
        bad = report.bad,
        late = report.late,
        windows_final = report.windows,
        side_failures = report.side_failures,
        seconds = report.elapsed.as_secs_f64(),
        cores = %report.cpu.own.map_or_else(|| "unknown".to_owned(), |c| format!("{c:.2}")),
        "worker stopped"
    );
    report
}

/// `footprint admin`: the admin API without a pipeline (switches, health).
pub fn serve_admin_alone(cfg: &Config, control: &Arc<RunControl>) -> Result<()> {
    let process = Process::new(cfg)?;
    let settings = process.kafka(cfg.kafka());
    let admin = Admin::new(&settings)?;
    let mut helpers = Helpers::new();
    helpers.follow_switches(cfg, &admin, &process.switches)?;
    let (health, topic) = (Arc::clone(&process.health), cfg.admin.control_topic.clone());
    helpers.spawn(move |stop| helpers::watch_broker(&admin, &topic, &health, stop));
    let state = AdminState::new(cfg, &process, &settings, None, Arc::from([]))?;
    let server = serve_admin(cfg.admin.listen, state)?;
    eprintln!(
        "admin API: http://{}/switches  (console: http://{}/)",
        server.addr, server.addr
    );
    while !control.stop_requested() {
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
