//! Kafka client settings shared by every client Footprint creates.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;

use crate::ConnectorError;

/// The context of Footprint's consumers: librdkafka reports every error
/// event, partition EOF included, as a "global error"; rdkafka's default
/// logs them all at ERROR. Reaching the end of a partition is routine (the
/// readers ask for it), so it is logged at DEBUG; other client errors are
/// retried by librdkafka itself and are logged at WARN. Data at risk is
/// reported where it is at risk.
#[derive(Debug, Clone, Copy, Default)]
pub struct FootprintContext;

impl ClientContext for FootprintContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        {
            tracing::debug!(%error, reason, "librdkafka");
        } else {
            tracing::warn!(%error, reason, "librdkafka client error");
        }
    }
}

impl ConsumerContext for FootprintContext {}

/// The consumers Footprint creates.
pub type FootprintConsumer = BaseConsumer<FootprintContext>;

/// Where Kafka is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Extra librdkafka properties (security, timeouts, …), applied last.
    pub properties: BTreeMap<String, String>,
}

impl KafkaSettings {
    /// Settings for `brokers` with no extra properties.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSettings {
            brokers: brokers.into(),
            properties: BTreeMap::new(),
        }
    }

    /// A consumer in `group_id` that commits only when told to and reports
    /// when each partition is read to its end (`enable.partition.eof`,
    /// pinned whatever the user's properties say: readers rely on it).
    /// `extra` comes before the user's properties.
    pub fn consumer(
        &self,
        group_id: &str,
        extra: &[(&str, &str)],
    ) -> Result<FootprintConsumer, ConnectorError> {
        let mut defaults = vec![("group.id", group_id), ("enable.auto.commit", "false")];
        defaults.extend_from_slice(extra);
        let mut config = self.client_config(&defaults);
        config.set("enable.partition.eof", "true");
        config
            .create_with_context(FootprintContext)
            .map_err(|e| ConnectorError::Config(e.to_string()))
    }

    /// A client config with the bootstrap servers, `defaults`, and then the
    /// user's properties (which win).
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("log_level", "3");
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}
