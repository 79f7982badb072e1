//! Kafka client settings shared by every client Footprint creates.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

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
