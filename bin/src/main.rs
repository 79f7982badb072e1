//! `footprint`: command-line entry point.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use footprint::UsageError;
use footprint::cluster::Cluster;
use footprint::config::{Config, ConfigError};
use footprint::demo::{DemoOptions, demo};
use footprint::generate::{GenPlan, HttpPlan, post, produce};
use footprint::process::Process;
use footprint::replay::ReplayOptions;
use footprint::run::{RunOptions, parse_backfill, run};
use footprint_dataflows::clickstream::{GenConfig, Profile};
use footprint_dataflows::control::RunControl;

/// Footprint: real-time user-behaviour aggregates on timely dataflow.
#[derive(Parser)]
#[command(name = "footprint", version, about)]
struct Cli {
    /// Pipeline config (TOML), merged over the embedded defaults.
    #[arg(long, short, global = true, env = "FOOTPRINT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the dataflow worker.
    Worker(WorkerArgs),
    /// Apply the retry topic's records to their stores.
    Replay(ReplayArgs),
    /// Produce a deterministic clickstream.
    Gen(GenArgs),
    /// Run everything on embedded defaults with a generated clickstream and a live view.
    Demo(DemoArgs),
    /// Serve the admin API alone: switches (through the control topic) and health.
    Admin,
    /// Serve results to apps over HTTP: recent activity, window series and
    /// top N, from Redis with MySQL fallback.
    Serve,
    /// Take behaviour events over HTTP into Kafka: each acknowledged only
    /// once it is durable, in Kafka or in a local spill.
    Collect,
    /// Validate the config and print the effective pipeline.
    CheckConfig,
    /// Measure throughput, latency and memory: the engine alone, end to end
    /// into Redis and MySQL, and latency at a fixed rate.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value = "all")]
    mode: footprint::bench::Mode,
    /// Events of the clickstream (engine and end to end).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// The clickstream: `skewed` (8 apps, 200,000 users, 20,000 items with
    /// Pareto (shape 1.2) popularity, as real sites see it) or
    /// `uniform` (3 apps, 10,000 users, 1,000 items: many more window rows
    /// per event, the high-cardinality case).
    #[arg(long, default_value = "skewed", value_parser = ["skewed", "uniform"])]
    workload: String,
    /// Users of the clickstream (default: the workload's).
    #[arg(long)]
    users: Option<u32>,
    /// Runs of each measurement; the table shows their median.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Worker counts of the engine runs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Worker threads of the end-to-end and latency runs.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Pipeline of the end-to-end and latency runs: `aggregates` (the
    /// windowed aggregates of the default config) or `default` (with
    /// recent activity too).
    #[arg(long, default_value = "aggregates", value_parser = ["aggregates", "default"])]
    pipeline: String,
    /// Stores the end-to-end and latency runs write to, comma-separated:
    /// `redis`, `mysql`, or `none` (the worker alone, to see what the stores
    /// cost).
    #[arg(long, value_delimiter = ',', default_value = "redis,mysql", value_parser = ["redis", "mysql", "none"])]
    stores: Vec<String>,
    /// Events per second of the latency run (default: half the raw read rate).
    #[arg(long)]
    rate: Option<u64>,
    /// Seconds the latency run produces.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Seconds of each timed HTTP loop (`--mode serve`, `--mode collect`).
    #[arg(long, default_value_t = 10)]
    serve_seconds: u64,
    /// Keep-alive connections of the collector's load generator (`--mode collect`).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Only the query-service scenarios whose name contains this
    /// (`Redis`, `MySQL`, `cache`, `series`, `top`).
    #[arg(long)]
    serve_only: Option<String>,
    /// Where the JSON report goes.
    #[arg(long, default_value = "footprint-bench.json")]
    json: PathBuf,
    /// Where the engine's clickstream files go.
    #[arg(long, default_value = ".footprint/bench")]
    dir: PathBuf,
    /// Internal: run one measurement and print its result.
    #[arg(long, hide = true)]
    child: Option<String>,
}

#[derive(Args)]
struct WorkerArgs {
    /// Worker threads (default: `worker.threads`).
    #[arg(long)]
    threads: Option<usize>,
    /// Read every partition until it is caught up, emit all windows as final, and exit.
    #[arg(long)]
    until_end: bool,
    /// This process's index in a timely cluster (0 to --processes − 1).
    #[arg(long, requires = "processes")]
    process: Option<usize>,
    /// Number of processes in the timely cluster; every process runs the same --threads.
    #[arg(long, requires = "hosts")]
    processes: Option<usize>,
    /// File with one host:port per process, process 0 first.
    #[arg(long, requires = "processes")]
    hosts: Option<PathBuf>,
    /// Start every partition from its latest offset, and record the ranges
    /// skipped (logged, in /status, and in the checkpoint topic) so that a
    /// backfill can fill them in.
    #[arg(long, conflicts_with_all = ["from", "until_end"])]
    skip_to_latest: bool,
    /// Bounded backfill: where each partition starts, `P:OFFSET,…` (or
    /// `TOPIC:P:OFFSET` with several topics). Reads exactly the ranges, writes
    /// through the same version rule, commits nothing, and exits.
    #[arg(long, requires = "to")]
    from: Option<String>,
    /// Bounded backfill: where each partition stops (exclusive), as --from.
    #[arg(long, requires = "from")]
    to: Option<String>,
}

#[derive(Args)]
struct ReplayArgs {
    /// Exit once every record of the retry topic has been applied.
    #[arg(long)]
    once: bool,
}

#[derive(Args)]
struct GenArgs {
    /// Topic (default: the first `source.topics`).
    #[arg(long)]
    topic: Option<String>,
    /// Partitions, when the topic is created.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Messages per second (event time follows the wall clock). Without it:
    /// as fast as possible, event time from --start-ts (deterministic).
    #[arg(long)]
    rate: Option<u64>,
    /// Stop after this long (e.g. 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fraction of events with `ts` moved back.
    #[arg(long, default_value_t = 0.05)]
    disorder: f64,
    /// Largest move back of a disordered event.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    max_disorder: Duration,
    /// Fraction of events made late.
    #[arg(long, default_value_t = 0.0)]
    late: f64,
    /// How far behind its partition a late event is.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    late_by: Duration,
    /// Fraction of messages that are bad input.
    #[arg(long, default_value_t = 0.0)]
    bad: f64,
    /// Fraction of messages that are random garbage (random bytes, events
    /// cut short or with bytes flipped, JSON of other shapes).
    #[arg(long, default_value_t = 0.0)]
    garbage: f64,
    /// The clickstream's shape: `uniform` (3 apps, 10,000 users, 1,000
    /// items, 1,000 events per second of event time) or `skewed` (8 apps,
    /// 200,000 users, 20,000 items with Pareto (shape 1.2) popularity, 5,000
    /// events per second of event time). The four options below override it.
    #[arg(long, default_value = "uniform", value_parser = ["uniform", "skewed"])]
    profile: String,
    /// Users (default: the profile's).
    #[arg(long)]
    users: Option<u32>,
    /// Items (default: the profile's).
    #[arg(long)]
    items: Option<u32>,
    /// Apps (default: the profile's).
    #[arg(long)]
    apps: Option<u32>,
    /// Events per second of event time, without --rate (default: the profile's).
    #[arg(long)]
    events_per_sec: Option<u32>,
    /// Event time of the first event, ms since the epoch (without --rate).
    #[arg(long, default_value_t = 1_767_225_600_000)]
    start_ts: i64,
    /// Send the events to a collector at this URL (`http://HOST:PORT`)
    /// instead of producing them to Kafka.
    #[arg(long)]
    http: Option<String>,
    /// Events per request, with --http.
    #[arg(long, default_value_t = 100, requires = "http")]
    batch: usize,
    /// gzip the requests, with --http.
    #[arg(long, requires = "http")]
    gzip: bool,
    /// The app's bearer token, with --http (or FOOTPRINT_COLLECT_TOKEN).
    #[arg(long, env = "FOOTPRINT_COLLECT_TOKEN", requires = "http")]
    token: Option<String>,
}

#[derive(Args)]
struct DemoArgs {
    /// Generated events per second.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Partitions of the demo topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Where logs go.
    #[arg(long, default_value = ".footprint/demo.log")]
    log: PathBuf,
    /// Print the view once at the end instead of redrawing it.
    #[arg(long)]
    no_live: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_file = match &cli.command {
        Command::Demo(d) => Some(d.log.clone()),
        _ => None,
    };
    if let Err(e) = init_logging(log_file.as_deref()) {
        eprintln!("error: {e:#}");
        return ExitCode::from(1);
    }
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() || e.downcast_ref::<UsageError>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn init_logging(file: Option<&std::path::Path>) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

fn stop_on_signal(control: Arc<RunControl>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        // SIGINT (Ctrl-C) or SIGTERM (a service manager's stop) asks for
        // a graceful stop; SIGKILL is the crash the drills stage.
        let signal = rt.block_on(async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(error = %e, "SIGTERM cannot be handled: only Ctrl-C stops gracefully");
                        let _ = tokio::signal::ctrl_c().await;
                        return "SIGINT";
                    }
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            }
        });
        tracing::info!(signal, "stop requested");
        control.request_stop();
    });
}

fn real_main(cli: Cli) -> Result<()> {
    let cfg = Config::load(cli.config.as_deref())?;
    let control = Arc::new(RunControl::default());
    match cli.command {
        Command::CheckConfig => {
            let spec = cfg.spec()?;
            // The collector's section is checked too; the query service's
            // needs stores, which a worker-only config may not name.
            cfg.collect_settings()?;
            println!(
                "config is valid: {} aggregates, recent activity {}",
                spec.aggregates.len(),
                if spec.recent.is_some() { "on" } else { "off" }
            );
            for a in &spec.aggregates {
                let measures: Vec<String> = a.measures.iter().map(ToString::to_string).collect();
                let group: Vec<String> = a.group_by.iter().map(ToString::to_string).collect();
                println!(
                    "  {}: window {}ms every {}ms, group by [{}], measures [{}], lateness {}ms, sinks {:?}",
                    a.name,
                    a.window.size(),
                    a.window.every(),
                    group.join(", "),
                    measures.join(", "),
                    a.allowed_lateness,
                    a.sinks
                );
            }
            for t in cfg.top_indexes(&spec)? {
                let group: Vec<String> = spec
                    .aggregates
                    .iter()
                    .find(|a| a.name == t.aggregate)
                    .map(|a| {
                        a.group_by[..t.within]
                            .iter()
                            .map(ToString::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "  redis top-N index: {} within [{}] by {}",
                    t.aggregate,
                    group.join(", "),
                    t.by
                );
            }
            Ok(())
        }
        Command::Worker(args) => {
            stop_on_signal(Arc::clone(&control));
            let process = Process::new(&cfg)?;
            let cluster = match (args.processes, &args.hosts) {
                (Some(n), Some(hosts)) => {
                    let process = args.process.ok_or_else(|| {
                        UsageError("--processes needs --process: this process's index".into())
                    })?;
                    Some(Cluster::from_hosts(process, n, hosts)?)
                }
                _ => None,
            };
            let backfill = match (&args.from, &args.to) {
                (Some(from), Some(to)) => Some(parse_backfill(from, to, &cfg.source.topics)?),
                _ => None,
            };
            let is_backfill = backfill.is_some();
            let opts = RunOptions {
                threads: args.threads,
                cluster,
                skip_to_latest: args.skip_to_latest,
                backfill,
                until_end: args.until_end,
                control,
                // A backfill runs beside the live workers: it leaves them the admin port.
                serve_admin: !is_backfill,
                ..RunOptions::default()
            };
            let report = run(&cfg, opts, &process)?;
            if is_backfill {
                println!(
                    "backfill: {} messages in the ranges ({} bad, {} late), {} read past them to complete their windows, {} final windows written, {:.1} s",
                    report.events_in,
                    report.bad,
                    report.late,
                    report.tail,
                    report.windows,
                    report.elapsed.as_secs_f64()
                );
            }
            Ok(())
        }
        Command::Admin => {
            stop_on_signal(Arc::clone(&control));
            footprint::run::serve_admin_alone(&cfg, &control)
        }
        Command::Serve => {
            stop_on_signal(Arc::clone(&control));
            footprint::serve::run(&cfg, &control)
        }
        Command::Collect => {
            stop_on_signal(Arc::clone(&control));
            footprint::collect::run(&cfg, &control)
        }
        Command::Replay(args) => {
            stop_on_signal(Arc::clone(&control));
            let opts = ReplayOptions {
                once: args.once,
                ..ReplayOptions::default()
            };
            let r =
                footprint::replay::run_replay(&cfg, &opts, None, &control).with_context(|| {
                    format!(
                        "the replay job stopped before the retry topic {} was drained; \
                         the records it did not apply stay there for the next run",
                        cfg.retry.topic
                    )
                })?;
            println!(
                "replay: {} records applied, {} undecodable and {} refused sent to the dead-letter topic",
                r.applied, r.undecodable, r.rejected
            );
            Ok(())
        }
        Command::Gen(a) => {
            stop_on_signal(Arc::clone(&control));
            let topic = a
                .topic
                .clone()
                .or_else(|| cfg.source.topics.first().cloned())
                .context("no topic given")?;
            anyhow::ensure!(
                a.count.is_some() || a.rate.is_some() || a.duration.is_some(),
                "give --count, --rate or --duration"
            );
            let profile = Profile::from_name(&a.profile)
                .with_context(|| format!("unknown profile `{}`", a.profile))?
                .config(a.partitions);
            let gen_cfg = GenConfig {
                seed: a.seed,
                apps: a.apps.unwrap_or(profile.apps),
                users: a.users.unwrap_or(profile.users),
                items: a.items.unwrap_or(profile.items),
                start_ts: a.start_ts,
                events_per_sec: a.events_per_sec.unwrap_or(profile.events_per_sec),
                disorder: a.disorder,
                max_disorder_ms: a.max_disorder.as_millis() as u64,
                late: a.late,
                late_by_ms: a.late_by.as_millis() as u64,
                bad: a.bad,
                garbage: a.garbage,
                ..profile
            };
            let plan = GenPlan {
                topic: topic.clone(),
                count: a.count,
                rate: a.rate,
                duration: a.duration,
                progress: Some(Duration::from_secs(5)),
            };
            if let Some(url) = &a.http {
                let http = HttpPlan {
                    url: url.clone(),
                    batch: a.batch,
                    gzip: a.gzip,
                    token: a.token.clone(),
                };
                let r = post(gen_cfg, &plan, &http, &control)?;
                println!(
                    "sent {} events to {url} in {} requests ({} retried): {} accepted, {} duplicate, {} rejected",
                    r.generated.messages,
                    r.requests,
                    r.retries,
                    r.accepted,
                    r.duplicate,
                    r.rejected
                );
                return Ok(());
            }
            let r = produce(&cfg.kafka(), gen_cfg, &plan, &control)?;
            println!(
                "produced {} messages to {topic}: {} good ({} late), {} bad, {} garbage",
                r.messages, r.good, r.late, r.bad, r.garbage
            );
            Ok(())
        }
        Command::Bench(b) => {
            if let Some(task) = &b.child {
                return footprint::bench::child(&cfg, task);
            }
            anyhow::ensure!(b.runs > 0, "--runs must be at least 1");
            anyhow::ensure!(
                !b.workers.is_empty() && b.workers.iter().all(|w| *w > 0),
                "--workers must list worker counts of at least 1"
            );
            let opts = footprint::bench::BenchOptions {
                mode: b.mode,
                events: b.events,
                workload: footprint::bench::Workload {
                    profile: Profile::from_name(&b.workload)
                        .with_context(|| format!("unknown workload `{}`", b.workload))?,
                    users: b.users,
                },
                runs: b.runs,
                workers: b.workers,
                threads: b.threads.max(1),
                pipeline: b.pipeline,
                stores: b.stores.into_iter().filter(|s| s != "none").collect(),
                rate: b.rate,
                seconds: b.seconds,
                serve_seconds: b.serve_seconds,
                connections: b.connections.max(1),
                serve_only: b.serve_only,
                json: b.json,
                dir: b.dir,
            };
            footprint::bench::bench(&cfg, cli.config.as_deref(), &opts)
        }
        Command::Demo(d) => {
            stop_on_signal(Arc::clone(&control));
            let opts = DemoOptions {
                rate: d.rate,
                threads: d.threads,
                partitions: d.partitions,
                duration: d.duration,
                log_path: d.log.display().to_string(),
                live: !d.no_live,
            };
            demo(cfg, opts, control)
        }
    }
}
