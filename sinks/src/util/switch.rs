//! Degrade switches: per-sink modes shared by every worker of a process.
//!
//! `auto` writes to the store (guarded by the circuit breaker); `degraded`,
//! set by an operator, does not touch the store at all. Modes are plain
//! atomics here; who sets them (the admin service, the control topic) lives
//! elsewhere.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

/// A sink's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Write to the store; the breaker decides when not to.
    Auto,
    /// Do not touch the store; divert every write to the retry topic.
    Degraded,
}

impl Mode {
    /// The mode's name, as used by the admin API and the control topic.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Degraded => "degraded",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode name that is neither `auto` nor `degraded`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode `{0}`: expected `auto` or `degraded`")]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Mode::Auto),
            "degraded" => Ok(Mode::Degraded),
            other => Err(UnknownMode(other.to_owned())),
        }
    }
}

/// The modes of a fixed set of sinks.
#[derive(Debug)]
pub struct Switches {
    modes: BTreeMap<String, AtomicU8>,
}

impl Switches {
    /// Switches for `sinks`, all `auto`.
    pub fn new<'a>(sinks: impl IntoIterator<Item = &'a str>) -> Self {
        Switches {
            modes: sinks
                .into_iter()
                .map(|s| (s.to_owned(), AtomicU8::new(0)))
                .collect(),
        }
    }

    /// The mode of `sink` (`None` for an unknown sink).
    pub fn get(&self, sink: &str) -> Option<Mode> {
        self.modes.get(sink).map(|m| {
            if m.load(Ordering::SeqCst) == 0 {
                Mode::Auto
            } else {
                Mode::Degraded
            }
        })
    }

    /// Sets the mode of `sink`; returns the previous one (`None`: unknown sink).
    pub fn set(&self, sink: &str, mode: Mode) -> Option<Mode> {
        let m = self.modes.get(sink)?;
        let old = m.swap(u8::from(mode == Mode::Degraded), Ordering::SeqCst);
        Some(if old == 0 { Mode::Auto } else { Mode::Degraded })
    }

    /// Every sink and its mode.
    pub fn all(&self) -> Vec<(String, Mode)> {
        self.modes
            .keys()
            .filter_map(|k| self.get(k).map(|m| (k.clone(), m)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_flip_per_sink_and_reject_unknown_names() {
        let s = Switches::new(["redis", "mysql"]);
        assert_eq!(s.get("mysql"), Some(Mode::Auto));
        assert_eq!(s.set("mysql", Mode::Degraded), Some(Mode::Auto));
        assert_eq!(s.get("mysql"), Some(Mode::Degraded));
        assert_eq!(s.get("redis"), Some(Mode::Auto));
        assert_eq!(s.set("kafka", Mode::Degraded), None);
        assert_eq!("degraded".parse::<Mode>(), Ok(Mode::Degraded));
        assert!("off".parse::<Mode>().is_err());
    }
}
