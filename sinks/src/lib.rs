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
//! (in-process, for tests and embedding). A sink must
//! apply the version rule of DESIGN §3: a write whose version is lower than
//! the stored one changes nothing.

use footprint_dataflows::Output;

pub mod file;
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
}

/// Builds one sink instance per worker.
pub trait SinkFactory: Send + Sync {
    /// The sink's configured name.
    fn name(&self) -> &str;
    /// A sink for worker `worker` of `peers`.
    fn build(&self, worker: usize, peers: usize) -> Result<Box<dyn Sink>, SinkError>;
}

/// Formats micro-units (millionths) as an exact decimal with six fractional digits.
pub fn decimal_micros(micros: i128) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    format!("{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
}

/// Parses a decimal with up to six fractional digits into micro-units.
pub fn parse_decimal_micros(text: &str) -> Option<i128> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if frac.len() > 6
        || int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let micros =
        int.parse::<i128>().ok()? * 1_000_000 + format!("{frac:0<6}").parse::<i128>().ok()?;
    Some(if neg { -micros } else { micros })
}

#[cfg(test)]
mod decimal_tests {
    use super::*;

    #[test]
    fn micro_units_round_trip_through_decimal_text() {
        for m in [0i128, 1, 300_000, -300_000, 12_345_678_901_234, -1] {
            assert_eq!(parse_decimal_micros(&decimal_micros(m)), Some(m), "{m}");
        }
        assert_eq!(decimal_micros(-1), "-0.000001");
        assert_eq!(parse_decimal_micros("12.5"), Some(12_500_000));
        assert_eq!(parse_decimal_micros("1.2345678"), None);
    }
}
