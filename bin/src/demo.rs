//! `footprint demo`: the main job on embedded defaults with a generated
//! clickstream, and a live terminal view. Ctrl-C stops it cleanly.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use footprint_connectors::admin::Admin;
use footprint_dataflows::clickstream::GenConfig;
use footprint_dataflows::control::RunControl;
use footprint_sinks::SinkFactory;
use footprint_sinks::memory::MemorySinkFactory;

use crate::config::{Config, Dur, MySqlSinkConfig, RedisSinkConfig, Start};
use crate::generate::{GenPlan, produce};
use crate::process::Process;
use crate::run::{RunOptions, run};
use crate::view::LiveTable;

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Generated events per second.
    pub rate: u64,
    /// Worker threads.
    pub threads: usize,
    /// Partitions of the demo topic.
    pub partitions: u32,
    /// Stop after this long (`None`: until Ctrl-C).
    pub duration: Option<Duration>,
    /// Where logs go.
    pub log_path: String,
    /// Redraw the screen (off: print the view once at the end).
    pub live: bool,
}

/// Turns on the Redis and MySQL sinks (from `FOOTPRINT_REDIS_URL` and
/// `FOOTPRINT_MYSQL_URL`, as `scripts/services.sh` exports them, or the local
/// defaults) and routes every aggregate and recent activity to them.
fn with_stores(cfg: &mut Config) {
    if cfg.sinks.redis.is_none() {
        let url = std::env::var("FOOTPRINT_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        cfg.sinks.redis = Some(RedisSinkConfig {
            url,
            prefix: "fp".into(),
            ttl: Dur(Duration::from_secs(7 * 86_400)),
            top: Vec::new(),
        });
    }
    if cfg.sinks.mysql.is_none() {
        let server = std::env::var("FOOTPRINT_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
        cfg.sinks.mysql = Some(MySqlSinkConfig {
            url: format!("{}/footprint", server.trim_end_matches('/')),
            table_prefix: "fp_".into(),
        });
    }
    let add = |sinks: &mut Vec<String>| {
        for s in ["redis", "mysql"] {
            if !sinks.iter().any(|x| x == s) {
                sinks.push(s.into());
            }
        }
    };
    for a in &mut cfg.aggregate {
        add(&mut a.sinks);
    }
    if let Some(r) = &mut cfg.recent {
        add(&mut r.sinks);
    }
}

/// Runs the demo until Ctrl-C or the duration passes.
pub fn demo(mut cfg: Config, opts: DemoOptions, control: Arc<RunControl>) -> Result<()> {
    cfg.source.start = Start::Latest;
    with_stores(&mut cfg);
    let settings = cfg.kafka();
    let topic = cfg
        .source
        .topics
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("no source topic configured"))?;
    let admin = Admin::new(&settings)?;
    admin
        .ensure_topic(&topic, opts.partitions as i32, 1)
        .with_context(|| format!("creating topic {topic} on {}", settings.brokers))?;
    let partitions = admin
        .partitions(&topic)?
        .map_or(opts.partitions, |p| p.len() as u32);

    let process = Process::new(&cfg)?;
    let live = MemorySinkFactory::new("live");
    let worker = {
        let cfg = cfg.clone();
        let process = Arc::clone(&process);
        let control = Arc::clone(&control);
        let live: Arc<dyn SinkFactory> = Arc::new(live.clone());
        std::thread::spawn(move || {
            run(
                &cfg,
                RunOptions {
                    threads: Some(opts.threads),
                    control,
                    extra_sinks: vec![live],
                    progress: None,
                    serve_admin: true,
                    ..RunOptions::default()
                },
                &process,
            )
        })
    };
    let generator = {
        let settings = settings.clone();
        let control = Arc::clone(&control);
        let plan = GenPlan {
            topic: topic.clone(),
            count: None,
            rate: Some(opts.rate),
            duration: None,
            progress: None,
        };
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs());
        let gen_cfg = GenConfig {
            seed,
            partitions,
            bad: 0.01,
            late: 0.002,
            late_by_ms: 15 * 60_000,
            ..GenConfig::default()
        };
        std::thread::spawn(move || produce(&settings, gen_cfg, &plan, &control))
    };

    let results = cfg
        .sinks
        .file
        .as_ref()
        .map_or("(no file sink)".to_owned(), |f| f.path.clone());
    let header = format!(
        "Footprint demo: {} events/s into `{topic}` ({partitions} partitions) at {}, {} worker threads",
        opts.rate, settings.brokers, opts.threads
    );
    let footer = format!(
        "results → Redis (keys fp:v:*, fp:e:*), MySQL database `footprint` (tables fp_*), and {results}\n\
         bad input → {topic}.dlq   late events → {topic}.late   retry topic → {}   log → {}\n\
         operator console → http://{}/   admin API → /status   degrade a store: curl -X PUT {}/switches/mysql -d '{{\"mode\":\"degraded\"}}'\n\
         Ctrl-C to stop",
        cfg.retry.topic, opts.log_path, cfg.admin.listen, cfg.admin.listen
    );
    let started = Instant::now();
    let mut table = LiveTable::default();
    let mut out = std::io::stdout();
    loop {
        std::thread::sleep(Duration::from_millis(1000));
        table.apply(live.take());
        if opts.live {
            let _ = write!(
                out,
                "\x1b[2J\x1b[H{}",
                table.render(
                    &process.dataflow,
                    &process.health.broker(),
                    &header,
                    &footer,
                )
            );
            let _ = out.flush();
        }
        let over = opts.duration.is_some_and(|d| started.elapsed() >= d);
        if over || control.stop_requested() || worker.is_finished() || generator.is_finished() {
            break;
        }
    }
    control.request_stop();
    let gen_report = generator
        .join()
        .map_err(|_| anyhow!("generator thread panicked"))??;
    let run_report = worker
        .join()
        .map_err(|_| anyhow!("worker thread panicked"))??;
    table.apply(live.take());
    if !opts.live {
        println!(
            "{}",
            table.render(
                &process.dataflow,
                &process.health.broker(),
                &header,
                &footer,
            )
        );
    }
    println!(
        "\nStopped after {:.0}s: produced {} messages ({} bad, {} late); the worker read {} ({} bad, {} late event×aggregate pairs) and emitted {} final windows.",
        started.elapsed().as_secs_f64(),
        gen_report.messages,
        gen_report.bad,
        gen_report.late,
        run_report.events_in,
        run_report.bad,
        run_report.late,
        run_report.windows
    );
    println!(
        "Results are in {results} (one JSON row per line; per window the highest version is current)."
    );
    Ok(())
}
