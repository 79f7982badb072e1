//! [`Outlet`]: where the collector hands events to Kafka.
//!
//! The collector knows nothing of Kafka clients; the connectors crate
//! implements this trait with an idempotent `acks=all` producer, and tests
//! may implement it in memory. An outlet keeps each key's records in the
//! order they were handed to it, and a record it took is either delivered
//! (the future resolves `Ok`) or given up (`Err`); it never resolves `Ok`
//! for a record the broker does not hold.

use std::future::Future;
use std::pin::Pin;

/// Resolves once Kafka acknowledged the record (`Ok`) or the producer gave
/// it up (`Err`, with the reason).
pub type Delivery = Pin<Box<dyn Future<Output = Result<(), OutletError>> + Send>>;

/// Why a record was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutletError {
    /// The producer's queue is full: nothing was taken.
    #[error("the producer's queue is full")]
    QueueFull,
    /// The producer took the record and then gave it up.
    #[error("Kafka did not take the record: {0}")]
    Failed(String),
}

/// The producer side of the collector.
pub trait Outlet: Send + Sync + 'static {
    /// Hands one record to the producer, after every record handed before
    /// it; `Err` when it could not even be queued.
    fn send(&self, key: &[u8], value: &[u8]) -> Result<Delivery, OutletError>;

    /// Records queued in the producer and not yet acknowledged.
    fn queue_depth(&self) -> u64;
}
