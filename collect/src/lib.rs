//! Footprint's event collector (`footprint collect`, not yet a command):
//! the parts that take events over HTTP into Kafka and acknowledge an event
//! only once it is durable, in Kafka or in a local spill.
//!
//! This first part is the spill ([`spill`]): append-only segment files,
//! each record checksummed, fsync'd before an append returns, drained in
//! order behind a durable cursor. The HTTP service, the producer that
//! drains the spill, quotas and shedding come next and will use it.

pub mod spill;

pub use spill::{Position, Record, Recovered, Spill, SpillError};
