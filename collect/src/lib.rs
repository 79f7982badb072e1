//! Footprint's event collector (`footprint collect`): an HTTP service that
//! takes behaviour events, checks them with the worker's own decoder, and
//! acknowledges each only once it is durable, in Kafka or in a local spill.
//!
//! | module | job |
//! |---|---|
//! | [`body`] | a request body into events: decompressed (gzip, zstd) within caps a decompression bomb cannot pass, split by its form (one JSON event, an array, NDJSON) |
//! | [`collector`] | the write path (straight to Kafka, or to the spill while Kafka does not answer), the drainer, shedding |
//! | [`dedup`] | the event ids each app sent recently, so a client's retry is answered `duplicate` and never produced twice |
//! | [`shed`] | which apps are refused under pressure, lowest priority first |
//! | [`spill`] | append-only segment files, each record checksummed, fsync'd before an append returns |
//! | [`file`] | small files replaced whole and durably, with a checksum (the spill's cursor, the saved id window) |
//! | [`limits`] | tokens and per-app quotas |
//! | [`outlet`] | the producer the collector writes through (the connectors crate implements it for Kafka) |
//! | [`routes`] | the HTTP API |
//! | [`events`] | metrics and logs |
//!
//! The crate knows nothing of Kafka clients: `bin` wires it to the
//! connectors' producer and to the config.

pub mod body;
pub mod collector;
pub mod dedup;
pub mod events;
pub mod file;
pub mod limits;
pub mod outlet;
pub mod routes;
pub mod settings;
pub mod shed;
pub mod spill;

pub use collector::{Answer, CollectError, Collector, Outcome};
pub use outlet::{Delivery, Outlet, OutletError};
pub use routes::{CollectServer, serve};
pub use settings::{AppSettings, CollectSettings, Rate};
pub use spill::{Position, Record, Recovered, Spill, SpillError};
