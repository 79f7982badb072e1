//! Footprint's Kafka connectors.
//!
//! This crate owns every conversation with Kafka: reading a worker's share of
//! the source partitions ([`reader::KafkaReader`], a
//! [`footprint_dataflows::source::PartitionReader`]), forwarding bad and late
//! events to their topics ([`side::SideOutputs`]), producing generated
//! clickstreams ([`producer::EventProducer`]), diverting unapplied sink
//! writes to the retry topic with a local journal behind it ([`retry`],
//! [`journal`]), applying them later ([`replay`]), the degrade switches'
//! control topic ([`control`]), the source checkpoints ([`checkpoints`]), where partitions start and what is skipped ([`positions`]), the
//! small compacted topics both read at start-up ([`compacted`]), and topic
//! administration ([`admin`]). It decides nothing about windows or results:
//! that is the dataflow's job.
//!
//! Every client is built from [`client::KafkaSettings`], which takes plain
//! librdkafka properties, so the same code runs against tansu and Apache
//! Kafka alike (add `security.protocol`, SASL settings and so on there).

pub mod admin;
pub mod checkpoints;
pub mod client;
pub mod compacted;
pub mod control;
pub mod journal;
pub mod positions;
pub mod producer;
pub mod reader;
pub mod replay;
pub mod retry;
pub mod side;

/// Errors talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The client could not be created (bad property, etc.).
    #[error("invalid Kafka client settings: {0}")]
    Config(String),
    /// The brokers did not answer in time or refused the request.
    #[error("Kafka at {brokers} did not answer: {detail}")]
    Unreachable {
        /// Bootstrap servers.
        brokers: String,
        /// What failed.
        detail: String,
    },
    /// A source topic does not exist.
    #[error("topic `{0}` does not exist (create it, or run `footprint gen`, which creates it)")]
    MissingTopic(String),
    /// A request failed.
    #[error("Kafka request failed: {0}")]
    Request(String),
}

impl ConnectorError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ConnectorError::Unreachable { .. } | ConnectorError::Request(_)
        )
    }
}
