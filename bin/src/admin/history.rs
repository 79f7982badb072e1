//! The counters the console charts, sampled every [`INTERVAL`] for the
//! last [`KEPT`] samples (ten minutes), so a page opened mid-incident shows
//! what came before it.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

/// How often a sample is taken.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// How many samples are kept: ten minutes' worth.
pub const KEPT: usize = 300;

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Messages read so far.
    pub events_in: u64,
    /// Bad messages so far.
    pub events_bad: u64,
    /// Late (event, aggregate) pairs so far.
    pub events_late: u64,
}

/// The last [`KEPT`] samples.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Adds `sample`, dropping the oldest beyond [`KEPT`].
    pub fn record(&self, sample: Sample) {
        let mut s = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if s.len() == KEPT {
            s.pop_front();
        }
        s.push_back(sample);
    }

    /// Every sample kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_ten_minutes_oldest_first() {
        let h = History::default();
        for i in 0..(KEPT as u64 + 5) {
            h.record(Sample {
                at_ms: i64::try_from(i).unwrap_or(0),
                events_in: i,
                events_bad: 0,
                events_late: 0,
            });
        }
        let s = h.samples();
        assert_eq!(s.len(), KEPT);
        assert_eq!(s[0].events_in, 5);
        assert_eq!(s[KEPT - 1].events_in, KEPT as u64 + 4);
    }
}
