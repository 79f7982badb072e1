//! Footprint's result sinks.
//!
//! A [`Sink`] takes batches of result rows ([`Output`]) and writes them to one
//! store. Every worker builds its own sink instances from a [`SinkFactory`],
//! so writes run in parallel, and every identity is written by one worker
//! only (rows are partitioned by group key upstream), which keeps the
//! version order of each identity intact.
//!
//! This crate owns the sink interface, the dataflow operator that drives
//! sinks ([`operator::WriteTo`]), and the sinks themselves: [`redis`]
//! (serving), [`mysql`] (durable), [`file`] (JSON lines) and [`memory`]
//! (in-process, for tests and embedding). A sink must apply the version
//! rule: a write whose version is lower than the stored one changes nothing
//! (`docs/design.md#results-and-the-version-rule`).

use footprint_dataflows::Output;

mod decimal;
pub mod events;
pub mod file;
pub mod marks;
pub mod memory;
pub mod mysql;
pub mod operator;
pub mod redis;
pub mod util;

/// A sink write that failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The store could not be reached or timed out; trying again may work.
    #[error("{sink}: store unavailable: {detail}")]
    Unavailable {
        /// Sink name.
        sink: String,
        /// What failed.
        detail: String,
    },
    /// The store refused the write; trying again will not help.
    #[error("{sink}: write rejected: {detail}")]
    Rejected {
        /// Sink name.
        sink: String,
        /// What failed.
        detail: String,
    },
    /// The sink is misconfigured.
    #[error("{sink}: invalid configuration: {detail}")]
    Config {
        /// Sink name.
        sink: String,
        /// What is wrong.
        detail: String,
    },
}

impl SinkError {
    /// Whether the same write may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Unavailable { .. })
    }
}

/// A store that receives result rows.
pub trait Sink: Send {
    /// The sink's configured name (`file`, `redis`, `mysql`, …).
    fn name(&self) -> &str;
    /// Writes a batch of rows, applying the version rule per identity.
    fn write(&mut self, rows: &[Output]) -> Result<(), SinkError>;
    /// Makes earlier writes durable.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    /// Whether the sink counts its own writes (a guarded sink tells written
    /// rows from diverted ones), so the caller must not count them again.
    fn counts_itself(&self) -> bool {
        false
    }
    /// Whether the store keeps one value per identity, by the version rule
    /// for window rows and the merge for recent activity
    /// (`docs/design.md#results-and-the-version-rule`). Such
    /// a sink is written on a thread of its own, and rows of one identity
    /// that wait for it are folded into one (see [`operator`]).
    fn folds(&self) -> bool {
        false
    }
}

/// Builds one sink instance per worker.
pub trait SinkFactory: Send + Sync {
    /// The sink's configured name.
    fn name(&self) -> &str;
    /// A sink for worker `worker` of `peers`.
    fn build(&self, worker: usize, peers: usize) -> Result<Box<dyn Sink>, SinkError>;
}
