//! `footprint collect`: the event collector, wired to the config and to
//! the connectors' Kafka producer.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use footprint_collect::events::CollectMetrics;
use footprint_collect::{CollectServer, Collector};
use footprint_connectors::admin::Admin;
use footprint_connectors::events::ConnectorMetrics;
use footprint_connectors::outlet::KafkaOutlet;
use footprint_dataflows::control::RunControl;

use crate::config::Config;

/// Starts the collector `cfg` describes: opens its spill (and says what a
/// crash left in it), makes the producer, and listens.
pub fn start(cfg: &Config) -> Result<CollectServer> {
    let settings = cfg.collect_settings()?;
    let topic = cfg
        .source
        .topics
        .first()
        .cloned()
        .context("source.topics names no topic")?;
    let mut registry = footprint_telemetry::registry();
    let metrics = CollectMetrics::register(&mut registry);
    let connectors = ConnectorMetrics::register(&mut registry);
    let kafka = cfg.kafka().with_metrics(connectors);
    // The topic is made sure of in the background: with the broker down,
    // the collector still listens at once and spills, and the spill
    // drains once the topic is there.
    let partitions = cfg.collect.partitions;
    let (admin_kafka, admin_topic) = (kafka.clone(), topic.clone());
    std::thread::Builder::new()
        .name("collect-topic".into())
        .spawn(move || {
            let mut warned = false;
            loop {
                let ensured = Admin::new(&admin_kafka)
                    .and_then(|admin| admin.ensure_topic(&admin_topic, partitions, 1));
                match ensured {
                    Ok(true) => {
                        tracing::info!(topic = admin_topic, partitions, "created topic");
                        return;
                    }
                    Ok(false) => {
                        if warned {
                            tracing::info!(topic = admin_topic, "the topic is there: the spill drains into it");
                        }
                        return;
                    }
                    Err(e) if !warned => {
                        tracing::warn!(error = %e, topic = admin_topic,
                            "the topic cannot be checked now (is the broker down?): accepted events go to the spill until Kafka takes them; checking again every 5 s");
                        warned = true;
                    }
                    Err(e) => tracing::debug!(error = %e, topic = admin_topic, "the topic cannot be checked yet"),
                }
                std::thread::sleep(Duration::from_secs(5));
            }
        })
        .context("starting the collector's topic check")?;
    let outlet = KafkaOutlet::new(&kafka, &topic).context("the collector's Kafka producer")?;
    let (collector, recovered) = Collector::open(settings, Arc::new(outlet), metrics)?;
    if recovered.torn_bytes > 0 || recovered.corrupt_bytes > 0 {
        tracing::warn!(
            torn_bytes = recovered.torn_bytes,
            corrupt_bytes = recovered.corrupt_bytes,
            "the spill held damaged records; see the .corrupt files in its directory"
        );
    }
    let listener = std::net::TcpListener::bind(cfg.collect.listen)
        .with_context(|| format!("collector: cannot listen on {}", cfg.collect.listen))?;
    let server =
        footprint_collect::serve(listener, cfg.collect.threads, collector, Arc::new(registry))
            .context("starting the collector")?;
    tracing::info!(addr = %server.addr, topic, spilled = recovered.records, "collector listening");
    Ok(server)
}

/// Runs the collector until `control` asks to stop.
pub fn run(cfg: &Config, control: &Arc<RunControl>) -> Result<()> {
    let server = start(cfg)?;
    eprintln!(
        "collector: POST http://{}/v1/events  (health: /health, ready: /ready, metrics: /metrics; spill: {})",
        server.addr, cfg.collect.spill.dir
    );
    if let Some(url) = cfg.console_url() {
        eprintln!("operator console (the workers' switches, lag and retry backlog): {url}");
    }
    while !control.stop_requested() {
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(server);
    Ok(())
}
