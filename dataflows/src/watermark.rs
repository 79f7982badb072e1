//! Per-partition watermarks and their minimum (`docs/design.md#watermarks-and-lateness`).
//!
//! A partition's watermark is `max ts seen − max_out_of_order`. A worker's
//! watermark is the minimum over its *active* partitions: a partition that has
//! not been read to its end can never be skipped, however slowly it is read,
//! which is what keeps backlog replays exact. A partition stops holding the
//! watermark back only when it is **idle** (read to its end and silent for
//! `idle_timeout`) or **finished** (a bounded run reached its end offset).
//!
//! The timely frontier is the minimum of these worker watermarks, so the
//! global watermark is the minimum over every partition of every worker.
//! This module only keeps the arithmetic; time (`now`) is passed in.

use std::time::{Duration, Instant};

use crate::Time;

#[derive(Debug, Clone)]
struct Partition {
    max_ts: Option<i64>,
    at_end: bool,
    last_activity: Instant,
    finished: bool,
}

/// Tracks the watermark of each partition a worker reads.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    partitions: Vec<Partition>,
    max_out_of_order: u64,
    idle_timeout: Duration,
    last: Time,
}

impl WatermarkTracker {
    /// A tracker for `partitions` partitions, none of which has been read yet.
    pub fn new(
        partitions: usize,
        max_out_of_order: u64,
        idle_timeout: Duration,
        now: Instant,
    ) -> Self {
        let p = Partition {
            max_ts: None,
            at_end: false,
            last_activity: now,
            finished: false,
        };
        WatermarkTracker {
            partitions: vec![p; partitions],
            max_out_of_order,
            idle_timeout,
            last: 0,
        }
    }

    /// Records an event of partition `idx` and returns that partition's watermark.
    pub fn observe(&mut self, idx: usize, ts: i64, now: Instant) -> Time {
        let p = &mut self.partitions[idx];
        p.max_ts = Some(p.max_ts.map_or(ts, |m| m.max(ts)));
        p.at_end = false;
        p.last_activity = now;
        partition_watermark(p.max_ts, self.max_out_of_order)
    }

    /// Restores partition `idx`'s largest event time from a checkpoint, so
    /// that messages read again get the stamps they had before.
    pub fn seed(&mut self, idx: usize, max_ts: i64) {
        let p = &mut self.partitions[idx];
        p.max_ts = Some(p.max_ts.map_or(max_ts, |m| m.max(max_ts)));
    }

    /// The watermark of partition `idx` (0 before its first event).
    pub fn partition(&self, idx: usize) -> Time {
        partition_watermark(self.partitions[idx].max_ts, self.max_out_of_order)
    }

    /// The largest event time read from partition `idx` (or restored for
    /// it), if any.
    pub fn max_ts(&self, idx: usize) -> Option<i64> {
        self.partitions[idx].max_ts
    }

    /// Records that partition `idx` has been read to its current end.
    pub fn mark_end(&mut self, idx: usize, now: Instant) {
        let p = &mut self.partitions[idx];
        if !p.at_end {
            p.at_end = true;
            p.last_activity = now;
        }
    }

    /// Records that partition `idx` will deliver nothing more (bounded runs).
    pub fn finish(&mut self, idx: usize) {
        self.partitions[idx].finished = true;
    }

    /// Whether partition `idx` is finished.
    pub fn is_finished(&self, idx: usize) -> bool {
        self.partitions[idx].finished
    }

    /// Whether partition `idx` is idle: read to its end and silent for the timeout.
    pub fn is_idle(&self, idx: usize, now: Instant) -> bool {
        let p = &self.partitions[idx];
        p.at_end && now.saturating_duration_since(p.last_activity) >= self.idle_timeout
    }

    /// The worker's watermark, which never goes back, or `None` once every
    /// partition is finished.
    ///
    /// It is the minimum over active partitions. When every unfinished
    /// partition is idle, nothing holds it back, so it is the maximum of their
    /// watermarks.
    pub fn advance(&mut self, now: Instant) -> Option<Time> {
        let mut min_active: Option<Time> = None;
        let mut max_idle: Option<Time> = None;
        let mut any_open = false;
        for (idx, p) in self.partitions.iter().enumerate() {
            if p.finished {
                continue;
            }
            any_open = true;
            let w = partition_watermark(p.max_ts, self.max_out_of_order);
            if self.is_idle(idx, now) {
                max_idle = Some(max_idle.map_or(w, |m| m.max(w)));
            } else {
                min_active = Some(min_active.map_or(w, |m| m.min(w)));
            }
        }
        if !any_open {
            return None;
        }
        if let Some(w) = min_active.or(max_idle) {
            self.last = self.last.max(w);
        }
        Some(self.last)
    }

    /// The minimum watermark over active partitions (`None` when none is
    /// active) and the maximum over idle ones (0 when none is idle).
    pub fn summary(&self, now: Instant) -> (Option<Time>, Time) {
        let mut active: Option<Time> = None;
        let mut idle: Time = 0;
        for (i, p) in self.partitions.iter().enumerate() {
            if p.finished {
                continue;
            }
            let w = partition_watermark(p.max_ts, self.max_out_of_order);
            if self.is_idle(i, now) {
                idle = idle.max(w);
            } else {
                active = Some(active.map_or(w, |a| a.min(w)));
            }
        }
        (active, idle)
    }

    /// The minimum watermark over the partitions with a backlog: unfinished,
    /// not read to their end, and with an event seen. It is the slowest
    /// partition that reading faster would move, for alignment (see
    /// [`crate::board::Notice::reading`]); a partition at its end, such as a
    /// sparse one on a live stream, is left out, since waiting for it would
    /// only delay the others. `None` when there is none.
    pub fn reading(&self) -> Option<Time> {
        self.partitions
            .iter()
            .filter(|p| !p.finished && !p.at_end && p.max_ts.is_some())
            .map(|p| partition_watermark(p.max_ts, self.max_out_of_order))
            .min()
    }

    /// The minimum watermark over the partitions that hold it back: those
    /// not idle, finished ones included, but for finished partitions that
    /// never had an event (a streaming run would have found them idle).
    /// `None` when no partition does: see [`crate::board::Notice::floor`].
    pub fn floor(&self, now: Instant) -> Option<Time> {
        (0..self.partitions.len())
            .filter(|i| {
                let p = &self.partitions[*i];
                if p.finished {
                    p.max_ts.is_some()
                } else {
                    !self.is_idle(*i, now)
                }
            })
            .map(|i| self.partition(i))
            .min()
    }

    /// The watermark every partition's own events have closed, once each
    /// partition has had one: at the end of a bounded input, the windows
    /// that close by then are final for good (a later event for them is
    /// late in every partition). `None` while a partition has had none.
    pub fn closed_by_all(&self) -> Option<Time> {
        if self.partitions.iter().any(|p| p.max_ts.is_none()) {
            return None;
        }
        (0..self.partitions.len()).map(|i| self.partition(i)).min()
    }

    /// Raises the worker's watermark to at least `floor` (never lowers it).
    pub fn raise(&mut self, floor: Time) -> Time {
        self.last = self.last.max(floor);
        self.last
    }
}

fn partition_watermark(max_ts: Option<i64>, max_out_of_order: u64) -> Time {
    max_ts.map_or(0, |m| (m.max(0) as u64).saturating_sub(max_out_of_order))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_unread_partition_holds_the_watermark_back() {
        let now = Instant::now();
        let mut t = WatermarkTracker::new(2, 1_000, Duration::from_secs(10), now);
        t.observe(0, 100_000, now);
        assert_eq!(t.advance(now), Some(0));
        t.observe(1, 50_000, now);
        assert_eq!(t.advance(now), Some(49_000));
    }

    #[test]
    fn what_every_partition_closed_needs_an_event_in_each() {
        let now = Instant::now();
        let mut t = WatermarkTracker::new(2, 1_000, Duration::from_secs(10), now);
        t.observe(0, 100_000, now);
        assert_eq!(t.closed_by_all(), None, "partition 1 has had no event");
        t.observe(1, 60_000, now);
        t.finish(0);
        t.finish(1);
        assert_eq!(t.advance(now), None);
        assert_eq!(t.closed_by_all(), Some(59_000));
    }

    #[test]
    fn an_idle_partition_stops_holding_it_back_only_after_the_timeout() {
        let now = Instant::now();
        let mut t = WatermarkTracker::new(2, 0, Duration::from_secs(10), now);
        t.observe(0, 100_000, now);
        t.mark_end(1, now);
        assert_eq!(t.advance(now + Duration::from_secs(9)), Some(0));
        assert_eq!(t.advance(now + Duration::from_secs(10)), Some(100_000));
    }

    #[test]
    fn the_slowest_partition_read_leaves_out_unread_caught_up_and_finished_ones() {
        let now = Instant::now();
        let mut t = WatermarkTracker::new(4, 1_000, Duration::from_secs(10), now);
        assert_eq!(t.reading(), None);
        t.observe(0, 100_000, now);
        t.observe(1, 40_000, now);
        t.observe(2, 20_000, now);
        // Partition 3 never had an event: it holds the watermark, not the readers.
        assert_eq!(t.reading(), Some(19_000));
        t.finish(2);
        assert_eq!(t.reading(), Some(39_000));
        // Read to its end, partition 1 has nothing to read faster.
        t.mark_end(1, now);
        assert_eq!(t.reading(), Some(99_000));
        t.observe(1, 41_000, now);
        assert_eq!(t.reading(), Some(40_000));
    }

    #[test]
    fn finishing_every_partition_ends_the_stream() {
        let now = Instant::now();
        let mut t = WatermarkTracker::new(1, 0, Duration::from_secs(10), now);
        t.finish(0);
        assert_eq!(t.advance(now), None);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Observe(usize, i64),
        End(usize),
        Wait(u64),
        Finish(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0usize..4, 0i64..1_000_000).prop_map(|(p, ts)| Step::Observe(p, ts)),
            1 => (0usize..4).prop_map(Step::End),
            1 => (0u64..20_000).prop_map(Step::Wait),
            1 => (0usize..4).prop_map(Step::Finish),
        ]
    }

    proptest! {
        /// Whatever arrives, in whatever order, the watermark never goes back;
        /// and until some partition goes idle or finishes, it is exactly the
        /// minimum of the partitions' own watermarks.
        #[test]
        fn the_watermark_never_goes_back(steps in proptest::collection::vec(step(), 1..200)) {
            let start = Instant::now();
            let mut now = start;
            let mut t = WatermarkTracker::new(4, 500, Duration::from_secs(5), start);
            let mut last = 0;
            let mut ever_excluded = false;
            for s in steps {
                match s {
                    Step::Observe(p, ts) => { if !t.is_finished(p) { t.observe(p, ts, now); } }
                    Step::End(p) => t.mark_end(p, now),
                    Step::Wait(ms) => now += Duration::from_millis(ms),
                    Step::Finish(p) => t.finish(p),
                }
                ever_excluded |= (0..4).any(|p| t.is_finished(p) || t.is_idle(p, now));
                if let Some(w) = t.advance(now) {
                    prop_assert!(w >= last, "watermark went back from {} to {}", last, w);
                    last = w;
                    if !ever_excluded {
                        let min = (0..4).map(|p| t.partition(p)).min().unwrap_or(0);
                        prop_assert_eq!(w, min);
                    }
                }
            }
        }
    }
}
