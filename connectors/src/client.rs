//! Kafka client settings shared by every client Footprint creates.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use rdkafka::consumer::BaseConsumer;

use crate::ConnectorError;

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
    ) -> Result<BaseConsumer, ConnectorError> {
        let mut defaults = vec![("group.id", group_id), ("enable.auto.commit", "false")];
        defaults.extend_from_slice(extra);
        let mut config = self.client_config(&defaults);
        config.set("enable.partition.eof", "true");
        config
            .create()
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
