//! Pacing of early rows, window by window.
//!
//! Each open window of an aggregate with `early_updates` is refreshed at
//! most once per interval, counted from when the window opened or was last
//! looked at. A window that closes within its first interval is written once,
//! as its final row: a catch-up run, which passes through a window's whole
//! event time in a fraction of a second, writes no early rows, while a live
//! stream still sees each changed window within one interval.
//!
//! The queue holds one entry per open window, in due order: every entry is
//! pushed at `now + every` with a `now` that never goes back, so a plain
//! FIFO stays sorted. Slots are reused, so an entry names its slot's
//! generation, and an entry whose slot closed (or was reused) is dropped when
//! it comes due. This module owns only the timing; what a window emits is
//! the operator's business.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One aggregate's open windows, in the order their next refresh is due.
#[derive(Debug)]
pub(super) struct EarlyQueue {
    every: Duration,
    due: VecDeque<(Instant, usize, u32)>,
    /// Windows changed since they were last emitted.
    dirty: usize,
}

impl EarlyQueue {
    /// A queue refreshing windows every `every`.
    pub(super) fn new(every: Duration) -> Self {
        EarlyQueue {
            every,
            due: VecDeque::new(),
            dirty: 0,
        }
    }

    /// Schedules the slot `(idx, generation)` for `every` after `now`.
    /// `now` must not be earlier than that of any earlier push.
    pub(super) fn schedule(&mut self, now: Instant, idx: usize, generation: u32) {
        self.due.push_back((now + self.every, idx, generation));
    }

    /// The next slot whose refresh is due by `now`, taken off the queue.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(usize, u32)> {
        match self.due.front() {
            Some((at, _, _)) if *at <= now => self.due.pop_front().map(|(_, i, g)| (i, g)),
            _ => None,
        }
    }

    /// A window of this aggregate changed after it was last emitted.
    pub(super) fn mark_dirty(&mut self) {
        self.dirty += 1;
    }

    /// A changed window was emitted or closed.
    pub(super) fn mark_clean(&mut self) {
        self.dirty = self.dirty.saturating_sub(1);
    }

    /// How long until the operator should look again: while some window has
    /// changes to show, until the next entry comes due.
    pub(super) fn wake_in(&self, now: Instant) -> Option<Duration> {
        if self.dirty == 0 {
            return None;
        }
        self.due
            .front()
            .map(|(at, _, _)| at.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_comes_due_one_interval_after_it_was_scheduled() {
        let t0 = Instant::now();
        let every = Duration::from_millis(250);
        let mut q = EarlyQueue::new(every);
        q.schedule(t0, 7, 1);
        q.schedule(t0 + Duration::from_millis(100), 3, 2);
        assert_eq!(q.pop_due(t0 + Duration::from_millis(249)), None);
        assert_eq!(q.pop_due(t0 + every), Some((7, 1)));
        assert_eq!(q.pop_due(t0 + every), None);
        assert_eq!(q.pop_due(t0 + Duration::from_millis(350)), Some((3, 2)));
        assert_eq!(q.pop_due(t0 + Duration::from_secs(10)), None);
    }

    #[test]
    fn wakes_only_while_a_window_has_changes_to_show() {
        let t0 = Instant::now();
        let mut q = EarlyQueue::new(Duration::from_millis(100));
        q.schedule(t0, 0, 0);
        assert_eq!(q.wake_in(t0), None);
        q.mark_dirty();
        assert_eq!(q.wake_in(t0), Some(Duration::from_millis(100)));
        assert_eq!(q.wake_in(t0 + Duration::from_secs(1)), Some(Duration::ZERO));
        q.mark_clean();
        assert_eq!(q.wake_in(t0), None);
    }
}
