//! The `footprint` program: configuration, and the commands that wire the
//! dataflow, connectors and sinks together (`worker`, `replay`, `admin`, `gen`, `demo`, `check-config`).
//!
//! This is the only crate that knows about all the others.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod generate;
pub mod replay;
pub mod run;
pub mod view;

/// A command line that cannot be used (exit code 2, like a config error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
