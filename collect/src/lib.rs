//! Footprint's event collector (`footprint collect`, not yet a command):
//! the parts that take events over HTTP into Kafka and acknowledge an event
//! only once it is durable, in Kafka or in a local spill.
//!
//! Its first parts:
//! - [`body`]: a request body into events, decompressed (gzip, zstd)
//!   within caps that a decompression bomb cannot pass, split by its form
//!   (one JSON event, an array, NDJSON), each checked by the worker's own
//!   decoder;
//! - [`dedup`]: the event ids each app sent recently, so that a client's
//!   retry of a durable event is answered `duplicate` and never produced
//!   twice, in bounded memory;
//! - [`shed`]: which apps are refused under pressure, lowest priority
//!   first, taken back in reverse order;
//! - [`spill`]: append-only segment files, each record checksummed,
//!   fsync'd before an append returns, drained in order behind a durable
//!   cursor.
//!
//! The HTTP service, the producer that drains the spill, quotas and the
//! wiring of these parts come next.

pub mod body;
pub mod dedup;
pub mod shed;
pub mod spill;

pub use spill::{Position, Record, Recovered, Spill, SpillError};
