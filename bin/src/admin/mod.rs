//! The HTTP admin service (warp): degrade switches, health, status and
//! Prometheus metrics. Routes live in [`filters`], handlers in [`handlers`],
//! bodies in [`models`].
//!
//! | route | answer |
//! |---|---|
//! | `GET /health` | `{"status":"ok","degraded_sinks":[…],"broker":{…}}`; 503 with `"status":"unhealthy"` while the broker does not serve this process |
//! | `GET /switches` | `{"redis":"auto","mysql":"degraded"}` |
//! | `PUT /switches/{sink}` with `{"mode":"degraded"\|"auto"}` | the new mode; 400 bad mode, 404 unknown sink, 503 control topic unavailable |
//! | `GET /status` | watermark, its delays, counters; per sink its mode, breaker, rows and write p99; the retry backlog, journal and replay progress; per partition its lag, watermark and state; skipped ranges with their backfill commands; the broker's health |
//! | `GET /metrics` | Prometheus text: the process's metrics registry |
//! | `GET /history` | events in, bad and late, sampled every 2 s over the last 10 minutes |
//! | `GET /` | the operator console ([`console`]): a page over the routes above |
//!
//! When a token is configured, every request but the console's own files
//! needs `Authorization: Bearer TOKEN` (401 otherwise); the page asks for
//! the token and sends it that way. The config refuses a non-loopback
//! address without a token.

pub mod console;
pub mod filters;
pub mod handlers;
pub mod history;
pub mod models;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use footprint_connectors::client::KafkaSettings;
use footprint_connectors::control::ControlPublisher;
use footprint_connectors::offsets::Skipped;
use footprint_connectors::retry::RetryTopic;

use crate::config::Config;
use crate::process::Process;

/// What the handlers need.
#[derive(Clone)]
pub struct AdminState {
    /// The process's metrics and switches.
    pub process: Arc<Process>,
    /// Publishes switch changes (`None`: change this process only).
    pub publisher: Option<Arc<ControlPublisher>>,
    /// The retry topic, for the journal size.
    pub journal: Option<Arc<RetryTopic>>,
    /// Required bearer token, if any.
    pub token: Option<Arc<str>>,
    /// Ranges of source offsets this run does not read.
    pub skipped: Arc<[Skipped]>,
    /// Whether backfill commands name topics (several source topics).
    pub name_topics: bool,
    /// The counters, sampled for the console's charts.
    pub history: Arc<history::History>,
}

impl AdminState {
    /// The state of `process`'s admin API as `cfg` asks: switch changes
    /// published on the control topic of `settings`' brokers, the token.
    pub fn new(
        cfg: &Config,
        process: &Arc<Process>,
        settings: &KafkaSettings,
        journal: Option<Arc<RetryTopic>>,
        skipped: Arc<[Skipped]>,
    ) -> Result<Self> {
        Ok(AdminState {
            process: Arc::clone(process),
            publisher: Some(Arc::new(ControlPublisher::new(
                settings,
                &cfg.admin.control_topic,
            )?)),
            journal,
            token: cfg.admin.token.as_deref().map(Arc::from),
            skipped,
            name_topics: cfg.source.topics.len() > 1,
            history: Arc::default(),
        })
    }
}

/// A running admin service; dropping it stops the service.
pub struct AdminServer {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the service on `listen` (port 0 picks a free port).
pub fn serve(listen: SocketAddr, state: AdminState) -> Result<AdminServer> {
    let std_listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("admin service: cannot listen on {listen}"))?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("admin")
        .build()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let sampled = state.clone();
    let thread = std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                // Samples for the console's charts; ends with the runtime.
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(history::INTERVAL);
                    loop {
                        tick.tick().await;
                        handlers::sample(&sampled);
                    }
                });
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "admin service could not start");
                        return;
                    }
                };
                warp::serve(filters::routes(state))
                    .incoming(listener)
                    .graceful(async move {
                        let _ = rx.await;
                    })
                    .run()
                    .await;
            });
        })?;
    tracing::info!(%addr, "admin service listening");
    Ok(AdminServer {
        addr,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}
