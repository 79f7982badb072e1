//! Footprint's Kafka connectors.
//!
//! This crate owns every conversation with Kafka:
//!
//! - reading a worker's share of the source partitions
//!   ([`reader::KafkaReader`], a
//!   [`footprint_dataflows::source::PartitionReader`]), and where each
//!   partition starts ([`start`], with the policy in [`positions`]);
//! - forwarding bad and late events to their topics ([`side::SideOutputs`]);
//! - the source checkpoints ([`checkpoints`], with their codec in the leaf
//!   module [`offsets`]) and the small compacted topics read at start-up
//!   ([`compacted`]);
//! - the degrade switches' control topic ([`control`]), which it follows
//!   into the sinks' switches;
//! - diverting unapplied sink writes to the retry topic with a local journal
//!   behind it ([`retry`], [`journal`]): it implements the sinks' `Divert`;
//! - reading the retry topic back and committing past what was applied
//!   ([`replay`]); *applying* the records to the stores is the replay job's
//!   business, wired in the binary;
//! - the collector's producer ([`outlet::KafkaOutlet`], which implements
//!   the collector's `Outlet`);
//! - producing generated clickstreams ([`producer::EventProducer`]) and
//!   topic administration through one shared client per process
//!   ([`admin::Admin`]).
//!
//! It decides nothing about windows or results (the dataflow's job) and
//! never writes to a store (the sinks' job). What it reports goes through
//! [`events`].
//!
//! Every client is built from [`client::KafkaSettings`], which takes plain
//! librdkafka properties, so the same code runs against tansu and Apache
//! Kafka alike (add `security.protocol`, SASL settings and so on there).

pub mod admin;
pub mod checkpoints;
pub mod client;
pub mod compacted;
pub mod control;
pub mod events;
pub mod journal;
pub mod offsets;
pub mod outlet;
pub mod positions;
pub mod producer;
pub mod reader;
pub mod replay;
pub mod retry;
pub mod side;
pub mod start;

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Errors talking to Kafka, or keeping what Kafka did not take.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A client could not be created (a bad property, for instance).
    #[error("invalid Kafka client settings: {0}")]
    Config(#[source] KafkaError),
    /// The brokers did not answer in time.
    #[error("Kafka at {brokers} did not answer: {detail}")]
    Unreachable {
        /// Bootstrap servers.
        brokers: String,
        /// What failed.
        detail: String,
    },
    /// A partition named by a backfill range is not one of the source topics'.
    #[error("{topic}/{partition} is not a partition of the source topics")]
    UnknownPartition {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// A source topic does not exist.
    #[error("topic `{0}` does not exist (create it, or run `footprint gen`, which creates it)")]
    MissingTopic(String),
    /// A Kafka request failed.
    #[error("{what}: {source}")]
    Kafka {
        /// What was asked.
        what: String,
        /// What librdkafka said.
        #[source]
        source: KafkaError,
    },
    /// Kafka did not acknowledge every record in time.
    #[error("{what}: {left} records not acknowledged")]
    Unacknowledged {
        /// What was produced.
        what: String,
        /// Records left without an acknowledgement.
        left: usize,
    },
    /// Kafka refused records for good: they were not written.
    #[error("{what}: Kafka refused {failed} records (the first: {first})")]
    Undelivered {
        /// What was produced.
        what: String,
        /// Records refused.
        failed: u64,
        /// Why the first one was refused.
        first: String,
    },
    /// The broker created something, but it did not appear in time.
    #[error("{0}")]
    NotVisible(String),
    /// A local file (the journal) failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A record could not be encoded.
    #[error("encode {what}: {source}")]
    Encode {
        /// What was encoded.
        what: &'static str,
        /// What failed.
        #[source]
        source: serde_json::Error,
    },
    /// A helper thread could not be started.
    #[error("start the {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

impl ConnectorError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectorError::Unreachable { .. }
            | ConnectorError::Unacknowledged { .. }
            | ConnectorError::Undelivered { .. }
            | ConnectorError::NotVisible(_) => true,
            ConnectorError::Kafka { source, .. } => !matches!(
                source.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::InvalidArgument
                        | RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::GroupAuthorizationFailed
                        | RDKafkaErrorCode::ClusterAuthorizationFailed
                )
            ),
            _ => false,
        }
    }

    /// A [`ConnectorError::Kafka`] maker for `map_err`.
    pub fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> ConnectorError {
        let what = what.into();
        move |source| ConnectorError::Kafka { what, source }
    }
}
