//! The stores as every command wires them: the sinks the config declares,
//! their degrade switches (followed from the control topic), the retry
//! topic with its journal, and the guard each store sink runs behind.
//!
//! The worker, the replay job and the admin service all start from here.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result};
use footprint_connectors::admin::Admin;
use footprint_connectors::control;
use footprint_connectors::retry::RetryTopic;
use footprint_dataflows::PipelineSpec;
use footprint_sinks::events::SinkMetrics;
use footprint_sinks::file::FileSinkFactory;
use footprint_sinks::marks::{Holds, MarkWriter};
use footprint_sinks::mysql::MySqlSinkFactory;
use footprint_sinks::redis::RedisSinkFactory;
use footprint_sinks::util::breaker::BreakerConfig;
use footprint_sinks::util::guard::{Divert, GuardedSink};
use footprint_sinks::util::retry::RetryPolicy;
use footprint_sinks::util::switch::Switches;
use footprint_sinks::{Sink, SinkFactory};

use crate::config::Config;

/// Names of the sinks that write to stores and run behind the guard.
pub const STORE_SINKS: [&str; 2] = ["redis", "mysql"];

/// The sinks the config declares, and the completeness-mark writers of its
/// stores.
pub struct Configured {
    /// The sinks, by name, built once per process.
    pub sinks: Vec<(String, Arc<dyn SinkFactory>)>,
    /// One mark writer per store ([`footprint_sinks::marks`]).
    pub marks: Vec<Box<dyn MarkWriter>>,
}

/// The sinks the config declares, by name, built once per process.
pub fn sink_factories(cfg: &Config, spec: &Arc<PipelineSpec>) -> Result<Configured> {
    let mut out: Vec<(String, Arc<dyn SinkFactory>)> = Vec::new();
    let mut marks: Vec<Box<dyn MarkWriter>> = Vec::new();
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
            .context("sinks.redis")?
            .with_top(cfg.top_indexes(spec)?);
        marks.push(Box::new(f.marks()));
        out.push(("redis".into(), Arc::new(f)));
    }
    if let Some(m) = &cfg.sinks.mysql {
        let f = MySqlSinkFactory::new(&m.url, Arc::clone(spec), &m.table_prefix)
            .context("sinks.mysql: preparing tables")?;
        marks.push(Box::new(f.marks()));
        out.push(("mysql".into(), Arc::new(f)));
    }
    Ok(Configured { sinks: out, marks })
}

/// The switches of the store sinks the config declares.
pub fn store_switches(cfg: &Config) -> Arc<Switches> {
    Arc::new(Switches::new(
        cfg.sink_names()
            .into_iter()
            .filter(|n| STORE_SINKS.contains(n)),
    ))
}

/// Follows the control topic into `switches` (after reading it to its end,
/// so they hold the persisted modes when this returns), until `stop` is set.
pub fn follow_switches(
    cfg: &Config,
    admin: &Admin,
    switches: &Arc<Switches>,
    stop: &Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    admin
        .ensure_compacted(&cfg.admin.control_topic)
        .context("control topic")?;
    let handle = control::follow(
        admin,
        &cfg.admin.control_topic,
        Arc::clone(switches),
        Arc::clone(stop),
    )?;
    for (sink, mode) in switches.all() {
        tracing::info!(sink = %sink, %mode, "switch at start-up");
    }
    Ok(handle)
}

/// The retry topic with its journal, created if missing, with any journal
/// left by an earlier run resent. `admin` must talk to the retry topic's
/// brokers (`retry.brokers`).
pub fn retry_topic(cfg: &Config, admin: &Admin) -> Result<Arc<RetryTopic>> {
    // When the retry topic's broker is down, start anyway: the journal takes the records.
    match admin.ensure_topic(&cfg.retry.topic, 4, 1) {
        Ok(true) => tracing::info!(topic = %cfg.retry.topic, "created the retry topic"),
        Ok(false) => {}
        Err(e) => tracing::error!(
            topic = %cfg.retry.topic,
            error = %e,
            "the retry topic is not reachable; diverted writes go to the journal until it is"
        ),
    }
    let retry = RetryTopic::new(
        admin.settings(),
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

/// How store sinks are guarded: their switches, breaker and retry policy,
/// and where what they do not write goes.
#[derive(Clone)]
pub struct Guard {
    switches: Arc<Switches>,
    breaker: BreakerConfig,
    policy: RetryPolicy,
    divert: Arc<dyn Divert>,
    metrics: Arc<SinkMetrics>,
    holds: Option<Arc<Holds>>,
}

impl Guard {
    /// The guard `cfg` asks for, diverting to `divert`; with `holds`, the
    /// final rows it diverts hold their store's completeness marks.
    pub fn new(
        cfg: &Config,
        switches: Arc<Switches>,
        divert: Arc<dyn Divert>,
        metrics: Arc<SinkMetrics>,
        holds: Option<Arc<Holds>>,
    ) -> Self {
        Guard {
            switches,
            breaker: BreakerConfig {
                failures_to_open: cfg.retry.breaker_failures,
                open_for: cfg.retry.breaker_open_for.0,
            },
            policy: RetryPolicy {
                attempts: cfg.retry.attempts,
                ..RetryPolicy::default()
            },
            divert,
            metrics,
            holds,
        }
    }

    /// `inner` behind its switch, breaker and retries; `salt` keeps the
    /// retry jitter of parallel sinks apart.
    pub fn wrap(&self, inner: Box<dyn Sink>, salt: u64) -> Box<dyn Sink> {
        let mut guarded = GuardedSink::new(
            inner,
            Arc::clone(&self.switches),
            self.breaker,
            self.policy,
            Arc::clone(&self.divert),
            salt,
        )
        .with_metrics(Arc::clone(&self.metrics));
        if let Some(holds) = &self.holds {
            guarded = guarded.with_holds(Arc::clone(holds));
        }
        Box::new(guarded)
    }
}
