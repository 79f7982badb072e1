//! `footprint serve`: the query service, wired to the config, the stores
//! and the degrade switches (followed through the control topic, like every
//! other program).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use footprint_connectors::admin::Admin;
use footprint_connectors::events::ConnectorMetrics;
use footprint_dataflows::control::RunControl;
use footprint_query::events::QueryMetrics;
use footprint_query::limits::Limits;
use footprint_query::stores::{MySqlStore, RedisStore};
use footprint_query::{QueryService, ServeServer, ServeState};
use footprint_sinks::events::SinkMetrics;
use footprint_sinks::util::switch::Switches;

use crate::config::Config;
use crate::stores::{follow_switches, store_switches};

/// A running query service and what keeps its switches current.
pub struct Serving {
    /// The HTTP server.
    pub server: ServeServer,
    /// The service, for in-process callers (tests, benchmarks).
    pub service: Arc<QueryService>,
    /// The switches it follows.
    pub switches: Arc<Switches>,
    stop: Arc<AtomicBool>,
    follower: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.follower.take() {
            let _ = h.join();
        }
    }
}

/// Starts the query service `cfg` describes. With `switches`, it reads
/// those instead of following the control topic.
pub fn start(cfg: &Config, switches: Option<Arc<Switches>>) -> Result<Serving> {
    let settings = cfg.serve_settings()?;
    let spec = Arc::new(cfg.spec()?);
    let top = cfg.top_indexes(&spec)?;
    let mut registry = footprint_telemetry::registry();
    let metrics = QueryMetrics::register(&mut registry);
    let connectors = ConnectorMetrics::register(&mut registry);
    let redis = cfg
        .sinks
        .redis
        .as_ref()
        .map(|r| {
            RedisStore::new(&r.url, &r.prefix, Arc::clone(&spec), settings.redis_timeout)
                .map(|s| s.with_top(top.clone()))
        })
        .transpose()
        .context("sinks.redis")?;
    let mysql = cfg
        .sinks
        .mysql
        .as_ref()
        .map(|m| {
            MySqlStore::new(
                &m.url,
                &spec,
                &m.table_prefix,
                settings.mysql_concurrency,
                settings.mysql_timeout,
            )
        })
        .transpose()
        .context("sinks.mysql")?;
    let stop = Arc::new(AtomicBool::new(false));
    let (switches, follower) = match switches {
        Some(s) => (s, None),
        None => {
            let s = store_switches(cfg);
            let h = follow_in_background(cfg, &connectors, &s, &stop);
            (s, Some(h))
        }
    };
    SinkMetrics::register_switches(&mut registry, Arc::clone(&switches));
    let service = Arc::new(QueryService::new(
        spec,
        redis,
        mysql,
        Arc::clone(&switches),
        settings.clone(),
        metrics,
    ));
    let listener = std::net::TcpListener::bind(cfg.serve.listen)
        .with_context(|| format!("query service: cannot listen on {}", cfg.serve.listen))?;
    let server = footprint_query::serve(
        listener,
        cfg.serve.threads,
        ServeState {
            service: Arc::clone(&service),
            limits: Arc::new(Limits::new(&settings)),
            registry: Arc::new(registry),
        },
    )
    .context("starting the query service")?;
    tracing::info!(addr = %server.addr, "query service listening");
    Ok(Serving {
        server,
        service,
        switches,
        stop,
        follower,
    })
}

/// Follows the control topic; while the broker cannot be reached, the
/// switches stay as they are (every store `auto` at start) and following
/// is tried again every 5 s, so the service answers meanwhile.
fn follow_in_background(
    cfg: &Config,
    connectors: &Arc<ConnectorMetrics>,
    switches: &Arc<Switches>,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (cfg, switches, stop) = (cfg.clone(), Arc::clone(switches), Arc::clone(stop));
    let kafka = cfg.kafka().with_metrics(Arc::clone(connectors));
    std::thread::spawn(move || {
        let mut warned = false;
        while !stop.load(Ordering::SeqCst) {
            let followed = Admin::new(&kafka)
                .map_err(anyhow::Error::from)
                .and_then(|admin| follow_switches(&cfg, &admin, &switches, &stop));
            match followed {
                Ok(handle) => {
                    if warned {
                        tracing::info!("following the degrade switches on the control topic");
                    }
                    let _ = handle.join();
                    return;
                }
                Err(e) if !warned => {
                    tracing::error!(error = %format!("{e:#}"), "the degrade switches cannot be followed yet (the control topic is not reachable): every store is read as `auto` until they can; trying again every 5 s");
                    warned = true;
                }
                Err(_) => {}
            }
            for _ in 0..50 {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    })
}

/// Runs the query service until `control` asks to stop.
pub fn run(cfg: &Config, control: &Arc<RunControl>) -> Result<()> {
    let serving = start(cfg, None)?;
    eprintln!(
        "query service: http://{}/v1/apps/APP/users/USER/recent  (health: /health, status: /status, metrics: /metrics)",
        serving.server.addr
    );
    if let Some(url) = cfg.console_url() {
        eprintln!("operator console (switches, breakers, lag, retry backlog): {url}");
    }
    while !control.stop_requested() {
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(serving);
    Ok(())
}
