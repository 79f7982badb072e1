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
