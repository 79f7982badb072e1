//! [`Flow`]: the flow control a process's operators share.
//!
//! It is the only state the operators of a process share beside the
//! dataflow itself, and each part has one writer and a known reader:
//!
//! - **Rows waiting** for the store writers. The sinks' `write_to` operator
//!   adds the rows it hands to a writer and takes them back once written or
//!   diverted; the source stops reading while they are at the limit
//!   (back-pressure), so a backlog read faster than the stores take it does
//!   not grow the memory.
//! - **The held clock.** While the stores hold a source back, the source
//!   says so, and *reading time* (processing time less those spells) stands
//!   still. The aggregate operator paces early rows in reading time, so a
//!   catch-up that waits for its stores does not add early rows for them.
//! - **Rows lost.** When a sink could neither write rows nor divert them,
//!   the sink operator sets this latch; the worker's checkpoints stop
//!   committing from then on, so a restart reads those rows' messages again.
//!
//! Metrics read this state to show it; nothing here reads metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The default limit of rows waiting for a process's store writers.
pub const MAX_ROWS_WAITING: u64 = 100_000;

/// Flow control shared by the operators of one process.
#[derive(Debug)]
pub struct Flow {
    max_rows_waiting: u64,
    rows_waiting: AtomicU64,
    held: HeldClock,
    rows_lost: AtomicBool,
    input_end: AtomicU64,
}

impl Default for Flow {
    fn default() -> Self {
        Flow::new(MAX_ROWS_WAITING)
    }
}

impl Flow {
    /// Flow control whose sources pause at `max_rows_waiting` rows waiting
    /// for the store writers (at least 1).
    pub fn new(max_rows_waiting: u64) -> Self {
        Flow {
            max_rows_waiting: max_rows_waiting.max(1),
            rows_waiting: AtomicU64::new(0),
            held: HeldClock::default(),
            rows_lost: AtomicBool::new(false),
            input_end: AtomicU64::new(u64::MAX),
        }
    }

    /// The limit of rows waiting before the sources pause.
    pub fn max_rows_waiting(&self) -> u64 {
        self.max_rows_waiting
    }

    /// Rows handed to the store writers and not yet written or diverted.
    pub fn rows_waiting(&self) -> u64 {
        self.rows_waiting.load(Ordering::Relaxed)
    }

    /// `n` more rows wait for a store writer.
    pub fn rows_queued(&self, n: u64) {
        self.rows_waiting.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` rows no longer wait: written, diverted or failed.
    pub fn rows_settled(&self, n: u64) {
        let _ = self
            .rows_waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                Some(w.saturating_sub(n))
            });
    }

    /// Whether the sources must pause until the writers catch up.
    pub fn must_wait(&self) -> bool {
        self.rows_waiting() >= self.max_rows_waiting
    }

    /// The clock of the spells in which the stores held the sources back.
    pub fn held(&self) -> &HeldClock {
        &self.held
    }

    /// Rows were neither written nor diverted: offsets must no longer be
    /// committed in this process.
    pub fn lose_rows(&self) {
        self.rows_lost.store(true, Ordering::SeqCst);
    }

    /// Whether rows were lost in this process.
    pub fn rows_lost(&self) -> bool {
        self.rows_lost.load(Ordering::SeqCst)
    }

    /// A source reached the end of its input (a bounded run), where every
    /// one of its partitions had closed the windows up to `watermark`: those
    /// are final for good; the windows emitted at the end of the input are
    /// not (more events may still come for them).
    pub fn input_ended(&self, watermark: u64) {
        self.input_end.fetch_min(watermark, Ordering::SeqCst);
    }

    /// The least watermark at which this process's sources reached the end
    /// of their input, once one has.
    pub fn input_end(&self) -> Option<u64> {
        let w = self.input_end.load(Ordering::SeqCst);
        (w != u64::MAX).then_some(w)
    }
}

/// When the stores held the sources of a process back, and the clock that
/// leaves those spells out ("reading time"), by which early updates are paced.
///
/// A spell runs from the moment the first source is held to the moment the
/// last one reads again. Reading time never goes back, and stands still
/// during a spell.
#[derive(Debug)]
pub struct HeldClock {
    inner: Mutex<HeldSpells>,
}

#[derive(Debug)]
struct HeldSpells {
    /// Sources held now.
    held: u64,
    /// Start of the current spell, while `held > 0`.
    since: Option<Instant>,
    /// Length of the spells that ended.
    total: Duration,
    /// Reading time starts here.
    created: Instant,
}

impl Default for HeldClock {
    fn default() -> Self {
        HeldClock {
            inner: Mutex::new(HeldSpells {
                held: 0,
                since: None,
                total: Duration::ZERO,
                created: Instant::now(),
            }),
        }
    }
}

impl HeldClock {
    fn spells(&self) -> std::sync::MutexGuard<'_, HeldSpells> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A source is held back from `now` on.
    pub fn hold(&self, now: Instant) {
        let mut s = self.spells();
        s.held += 1;
        if s.since.is_none() {
            s.since = Some(now);
        }
    }

    /// A source that was held reads again from `now` on.
    pub fn release(&self, now: Instant) {
        let mut s = self.spells();
        s.held = s.held.saturating_sub(1);
        if s.held == 0
            && let Some(since) = s.since.take()
        {
            s.total += now.saturating_duration_since(since);
        }
    }

    /// Sources held now.
    pub fn sources_held(&self) -> u64 {
        self.spells().held
    }

    /// Time held so far, the current spell included up to `now`.
    pub fn held_for(&self, now: Instant) -> Duration {
        self.spells().held_for(now)
    }

    /// Reading time at `now`: `now` moved back by [`Self::held_for`], so it
    /// stands still while a source is held. Every caller in a process gets
    /// the same clock, and it never goes back for a `now` that does not.
    pub fn reading_time(&self, now: Instant) -> Instant {
        let s = self.spells();
        s.created
            + now
                .saturating_duration_since(s.created)
                .saturating_sub(s.held_for(now))
    }
}

impl HeldSpells {
    fn held_for(&self, now: Instant) -> Duration {
        self.total
            + self
                .since
                .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_time_stands_still_while_any_source_is_held() {
        let clock = HeldClock::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let r0 = clock.reading_time(t0);
        assert_eq!(clock.reading_time(t0 + ms(100)), r0 + ms(100));
        // Two sources held, overlapping: one spell, from 100 ms to 400 ms.
        clock.hold(t0 + ms(100));
        clock.hold(t0 + ms(200));
        assert_eq!(clock.sources_held(), 2);
        assert_eq!(clock.reading_time(t0 + ms(250)), r0 + ms(100));
        clock.release(t0 + ms(300));
        assert_eq!(clock.reading_time(t0 + ms(350)), r0 + ms(100));
        clock.release(t0 + ms(400));
        assert_eq!(clock.sources_held(), 0);
        assert_eq!(clock.held_for(t0 + ms(500)), ms(300));
        assert_eq!(clock.reading_time(t0 + ms(500)), r0 + ms(200));
        // A second spell adds to the first.
        clock.hold(t0 + ms(600));
        clock.release(t0 + ms(650));
        assert_eq!(clock.reading_time(t0 + ms(700)), r0 + ms(350));
    }

    #[test]
    fn sources_wait_at_the_limit_and_settled_rows_never_go_below_zero() {
        let flow = Flow::new(10);
        flow.rows_queued(9);
        assert!(!flow.must_wait());
        flow.rows_queued(1);
        assert!(flow.must_wait());
        flow.rows_settled(4);
        assert!(!flow.must_wait());
        flow.rows_settled(100);
        assert_eq!(flow.rows_waiting(), 0);
        assert!(!flow.rows_lost());
        flow.lose_rows();
        assert!(flow.rows_lost());
    }
}
