//! Event-time window assignment (`docs/design.md#windows`).
//!
//! Windows are aligned to the Unix epoch and cover `[start, end)`. A tumbling
//! window of size S is a sliding window of size S every S. A sliding window of
//! size S every E puts each event in exactly S/E windows, so S must be a
//! multiple of E.

use serde::{Deserialize, Serialize};

/// A window shape, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WindowSpec {
    size: u64,
    every: u64,
}

/// A window shape that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// Size or slide is zero.
    #[error("window size and slide must be greater than zero")]
    Zero,
    /// The size is not a whole number of slides.
    #[error("window size {size}ms is not a multiple of its slide {every}ms")]
    NotMultiple {
        /// Window size.
        size: u64,
        /// Slide.
        every: u64,
    },
}

impl WindowSpec {
    /// A tumbling window of `size` milliseconds.
    pub fn tumbling(size: u64) -> Result<Self, WindowError> {
        Self::sliding(size, size)
    }

    /// A sliding window of `size` milliseconds, starting every `every` milliseconds.
    pub fn sliding(size: u64, every: u64) -> Result<Self, WindowError> {
        if size == 0 || every == 0 {
            return Err(WindowError::Zero);
        }
        if !size.is_multiple_of(every) {
            return Err(WindowError::NotMultiple { size, every });
        }
        Ok(WindowSpec { size, every })
    }

    /// Window length in milliseconds.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Slide in milliseconds (equal to the size for tumbling windows).
    pub fn every(&self) -> u64 {
        self.every
    }

    /// How many windows contain each event.
    pub fn windows_per_event(&self) -> u64 {
        self.size / self.every
    }

    /// Starts of the windows that contain `ts`, in ascending order.
    pub fn starts(&self, ts: i64) -> impl Iterator<Item = i64> + use<> {
        let every = self.every as i64;
        let first = self.first_start(ts);
        (0..self.windows_per_event() as i64).map(move |k| first + k * every)
    }

    /// The start of the earliest window containing `ts`.
    fn first_start(&self, ts: i64) -> i64 {
        self.last_start(ts) - (self.windows_per_event() as i64 - 1) * self.every as i64
    }

    /// The start of the latest window containing `ts`. It determines all of
    /// them: two times with the same last start fall into the same windows.
    pub fn last_start(&self, ts: i64) -> i64 {
        let every = self.every as i64;
        ts.div_euclid(every) * every
    }

    /// The start of the earliest window containing `ts` that starts at or
    /// after `from`; past [`WindowSpec::last_start`] when there is none. With
    /// the last start, it fixes the windows of `ts` that start at or after
    /// `from`.
    pub fn first_start_from(&self, ts: i64, from: i64) -> i64 {
        let every = self.every as i64;
        let r = from.rem_euclid(every);
        let aligned = if r == 0 {
            from
        } else {
            from.saturating_add(every - r)
        };
        aligned.max(self.first_start(ts))
    }

    /// End (exclusive) of the window starting at `start`.
    pub fn end(&self, start: i64) -> i64 {
        start + self.size as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_shapes_that_do_not_tile() {
        assert_eq!(WindowSpec::sliding(0, 10), Err(WindowError::Zero));
        assert_eq!(
            WindowSpec::sliding(10, 3),
            Err(WindowError::NotMultiple { size: 10, every: 3 })
        );
    }

    #[test]
    fn tumbling_minute_windows_are_epoch_aligned() {
        let w = WindowSpec::tumbling(60_000).expect("valid");
        let starts: Vec<_> = w.starts(1_767_225_659_999).collect();
        assert_eq!(starts, vec![1_767_225_600_000]);
        assert_eq!(w.end(starts[0]), 1_767_225_660_000);
    }

    proptest! {
        /// Every assigned window contains the event, there are exactly S/E of
        /// them, they are aligned, and no other aligned window contains it.
        #[test]
        fn assigns_exactly_the_windows_that_contain_the_event(
            ts in crate::event::MIN_TS..crate::event::MAX_TS,
            every in 1u64..100_000,
            n in 1u64..20,
        ) {
            let w = WindowSpec::sliding(every * n, every).expect("valid");
            let starts: Vec<i64> = w.starts(ts).collect();
            prop_assert_eq!(starts.len() as u64, n);
            for s in &starts {
                prop_assert!(*s <= ts && ts < w.end(*s));
                prop_assert_eq!(s.rem_euclid(every as i64), 0);
            }
            prop_assert!(starts.windows(2).all(|p| p[1] - p[0] == every as i64));
            // The aligned windows just outside the range do not contain ts.
            let before = starts[0] - every as i64;
            let after = starts[starts.len() - 1] + every as i64;
            prop_assert!(!(before <= ts && ts < w.end(before)));
            prop_assert!(!(after <= ts && ts < w.end(after)));
        }
    }
}
