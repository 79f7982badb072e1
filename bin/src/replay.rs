//! `footprint replay`: runs the retry replay job over the configured stores.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use footprint_connectors::replay::{ReplayOptions, ReplayReport, replay};
use footprint_dataflows::control::RunControl;
use footprint_sinks::Sink;
use footprint_sinks::util::switch::Switches;

use crate::config::Config;
use crate::run::{STORE_SINKS, follow_switches, sink_factories, store_switches};

/// Replays the retry topic into the stores until stopped or, with `once`,
/// until caught up.
pub fn run_replay(
    cfg: &Config,
    once: bool,
    switches: Option<Arc<Switches>>,
    control: &Arc<RunControl>,
    progress: Option<Duration>,
) -> Result<ReplayReport> {
    let spec = Arc::new(cfg.spec()?);
    let mut sinks: HashMap<String, Box<dyn Sink>> = HashMap::new();
    for (name, f) in sink_factories(cfg, &spec)? {
        if STORE_SINKS.contains(&name.as_str()) {
            sinks.insert(name, f.build(0, 1)?);
        }
    }
    anyhow::ensure!(
        !sinks.is_empty(),
        "no store sink is configured ([sinks.redis] or [sinks.mysql]); there is nothing to replay into"
    );
    let (switches, follower, stop) = match switches {
        Some(s) => (s, None, None),
        None => {
            // Follow the control topic, so operator toggles reach the replay job.
            let s = store_switches(cfg);
            let stop = Arc::new(AtomicBool::new(false));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let h = follow_switches(cfg, &runtime, &s, &stop)?;
            (s, Some(h), Some(stop))
        }
    };
    let opts = ReplayOptions {
        topic: cfg.retry.topic.clone(),
        once,
        progress,
        ..ReplayOptions::default()
    };
    let c = Arc::clone(control);
    let result = replay(&cfg.retry_kafka(), &opts, sinks, switches, &move || {
        c.stop_requested()
    });
    if let Some(stop) = stop {
        stop.store(true, Ordering::SeqCst);
    }
    if let Some(h) = follower {
        let _ = h.join();
    }
    let report = result.with_context(|| format!("replaying {}", cfg.retry.topic))?;
    tracing::info!(
        applied = report.applied,
        undecodable = report.undecodable,
        "replay stopped"
    );
    Ok(report)
}
