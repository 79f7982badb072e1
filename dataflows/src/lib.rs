//! Footprint's dataflow core: the domain types (events, windows, results), the
//! per-partition watermark, the routing of events to windows (and the merging
//! of a read round's contributions to the same windows, [`combine`]), and the
//! timely operators that keep windowed aggregates and each user's recent
//! activity.
//!
//! This crate owns *what* is computed. It performs no I/O: the Kafka source
//! lives in `footprint-connectors`, and the stores in `footprint-sinks`. The
//! contract it implements is `docs/design.md`.
//!
//! # Why plain timely operators, and not differential arrangements
//!
//! Event-time windows here are append-only while open and are dropped once
//! final, so their state is a hash map entry per (aggregate, key, window) that
//! is updated in O(1) per event and removed when the frontier passes
//! `window end + allowed lateness`. A differential arrangement would keep the
//! same data as an indexed trace, pay for consolidation at every timestamp,
//! and need explicit retractions to release a closed window. Exact distinct
//! counts are kept as hash sets of interned values for the same reason. The
//! timely frontier still does the hard part: it is the global watermark, the
//! minimum over all partitions of all workers, which is what makes backlog
//! replays exact.
//!
//! `cargo bench -p footprint-benches --bench distinct_choice` measures this
//! choice against differential's `count_total` and `distinct_total` doing
//! the same work; the README gives the last figures.
//!
//! What the operators report goes through [`events`]; the state they share
//! (back-pressure, the held clock, the rows-lost latch) is [`flow::Flow`].

pub mod aggregate;
pub mod board;
pub mod checkpoint;
pub mod clickstream;
pub mod combine;
pub mod control;
pub mod crashpoint;
pub mod event;
pub mod events;
pub mod flow;
pub mod hash;
pub mod key;
pub mod partitions;
pub mod pipeline;
pub mod recent;
pub mod reference;
pub mod result;
pub mod route;
pub mod source;
pub mod spec;
pub mod watermark;
pub mod window;

pub use event::{BadInput, BadReason, Event};
pub use result::{MeasureValue, Output, RecentEntry, RecentRow, WindowRow};
pub use route::{Contribution, Record};
pub use spec::{AggregateSpec, Field, Measure, PipelineSpec, RecentSpec};
pub use window::WindowSpec;

/// Timely timestamps are watermark times: milliseconds since the Unix epoch.
pub type Time = u64;
