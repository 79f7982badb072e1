//! The `footprint` program: configuration, and the commands that wire the
//! dataflow, connectors and sinks together (`worker`, `replay`, `admin`,
//! `serve`, `gen`, `demo`, `bench`, `check-config`).
//!
//! - [`config`]: the TOML config, its layers and its validation;
//! - [`process`]: what a process's parts share (the metrics registry, flow
//!   control, the degrade switches);
//! - [`stores`]: the sinks the config declares, their switches, the retry
//!   topic and the guard, as every command wires them;
//! - [`run`]: the worker: where each partition starts, the topics, the
//!   helpers, the timely dataflow, progress and lag;
//! - [`cluster`]: this process's place in a timely cluster (hosts file);
//! - [`admin`]: the HTTP admin service and its operator console; [`replay`]: the retry replay job;
//!   [`generate`]: the load generator; [`demo`] and [`view`]: the demo;
//!   [`bench`]: the benchmarks; [`serve`]: the query service.
//!
//! This is the only crate that knows about all the others.

pub mod admin;
pub mod bench;
pub mod cluster;
pub mod collect;
pub mod config;
pub mod cpu;
pub mod demo;
pub mod generate;
pub mod health;
pub mod process;
pub mod replay;
pub mod run;
pub mod serve;
pub mod stores;
pub mod view;

/// A command line that cannot be used (exit code 2, like a config error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
