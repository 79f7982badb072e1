//! [`Process`]: what the parts of one `footprint` process share.
//!
//! - one metrics registry, with every crate's metrics registered in it once
//!   (the dataflow's, the sinks', the connectors'), which `/metrics` serves;
//! - the flow control of the dataflow ([`Flow`]): back-pressure, the held
//!   clock, the rows-lost latch;
//! - the degrade switches of the store sinks, which the control topic
//!   follower sets and the guarded sinks, the admin API and the replay job
//!   read;
//! - the broker's health, which the lag reporter keeps and the admin API
//!   and the demo show.

use std::sync::Arc;

use anyhow::Result;
use footprint_connectors::client::KafkaSettings;
use footprint_connectors::events::ConnectorMetrics;
use footprint_dataflows::events::DataflowMetrics;
use footprint_dataflows::flow::Flow;
use footprint_dataflows::pipeline::Shared;
use footprint_sinks::events::SinkMetrics;
use footprint_sinks::util::switch::Switches;
use footprint_telemetry::Registry;

use crate::config::Config;
use crate::health::{Health, HealthSettings};
use crate::stores::store_switches;

/// What one process's parts share.
pub struct Process {
    registry: Registry,
    /// The dataflow's metrics.
    pub dataflow: Arc<DataflowMetrics>,
    /// The sinks' metrics.
    pub sinks: Arc<SinkMetrics>,
    /// The connectors' metrics.
    pub connectors: Arc<ConnectorMetrics>,
    /// The dataflow's flow control.
    pub flow: Arc<Flow>,
    /// The store sinks' degrade switches.
    pub switches: Arc<Switches>,
    /// Whether the broker serves this process.
    pub health: Arc<Health>,
    /// Final rows diverted and not yet applied: they hold the stores'
    /// completeness marks.
    pub holds: Arc<footprint_sinks::marks::Holds>,
    /// When this process started, ms since the epoch.
    pub started_ms: i64,
}

impl Process {
    /// The shared state of a process running `cfg`'s pipeline.
    pub fn new(cfg: &Config) -> Result<Arc<Process>> {
        let spec = cfg.spec()?;
        let aggregates = spec.aggregates.iter().map(|a| a.name.clone()).collect();
        let mut registry = footprint_telemetry::registry();
        let flow = Arc::new(Flow::new(cfg.sinks.max_rows_waiting));
        let dataflow = DataflowMetrics::register(&mut registry, aggregates, Arc::clone(&flow));
        let sinks = SinkMetrics::register(&mut registry);
        let connectors = ConnectorMetrics::register(&mut registry);
        let switches = store_switches(cfg);
        SinkMetrics::register_switches(&mut registry, Arc::clone(&switches));
        let health = Arc::new(Health::new(
            &cfg.source.brokers,
            HealthSettings {
                broker_timeout: cfg.health.broker_timeout.0,
                stall_timeout: cfg.health.stall_timeout.0,
            },
        ));
        Ok(Arc::new(Process {
            registry,
            dataflow,
            sinks,
            connectors,
            flow,
            switches,
            health,
            holds: Arc::default(),
            started_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        }))
    }

    /// The metrics in the Prometheus text format.
    pub fn encode_metrics(&self) -> String {
        footprint_telemetry::encode(&self.registry).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the metrics could not be encoded");
            String::new()
        })
    }

    /// What a worker's dataflow shares with the process.
    pub fn dataflow_shared(
        &self,
        control: Arc<footprint_dataflows::control::RunControl>,
    ) -> Shared {
        Shared {
            control,
            flow: Arc::clone(&self.flow),
            metrics: Arc::clone(&self.dataflow),
        }
    }

    /// Kafka settings whose clients report to this process's metrics.
    pub fn kafka(&self, settings: KafkaSettings) -> KafkaSettings {
        settings.with_metrics(Arc::clone(&self.connectors))
    }
}
