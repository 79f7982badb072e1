//! `watermark_board`: what every worker of the cluster knows about the
//! others' partitions, so that idle partitions anywhere stop holding the
//! watermark back, and so that a bounded backfill knows when every worker is
//! done with its range.
//!
//! Each worker's source publishes a [`Notice`] whenever its state changes:
//! the minimum watermark over its active partitions (or that it has none),
//! the maximum over its idle ones, and whether its backfill range is
//! settled. Notices travel through a small timely stream of their own,
//! broadcast to every worker of every process, so the board works the same
//! in one process and in a cluster. Every worker keeps its own replica.
//!
//! The board only moves watermarks of workers that have *no* active
//! partition, and only up to what the others published, which is never more
//! than their real watermarks (watermarks only grow, so a notice still in
//! flight is a lower bound). It decides nothing about lateness.
//!
//! ```
//! use footprint_dataflows::board::{Notice, Replica};
//!
//! let mut board = Replica::new(0, 2);
//! // Worker 1 has an active partition at 5_000; worker 0 only idle ones.
//! board.apply(Notice { worker: 1, active: Some(5_000), idle: 0, settled: false, floor: Some(5_000), reading: Some(5_000) });
//! assert_eq!(board.follow(), 5_000);
//! // Nobody is active: follow the largest idle watermark.
//! board.apply(Notice { worker: 1, active: None, idle: 9_000, settled: true, floor: None, reading: None });
//! assert_eq!(board.follow(), 9_000);
//! assert!(!board.all_settled(), "worker 0 has not said it is settled");
//! ```

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::Inspect;
use timely::dataflow::operators::vec::{Broadcast, Input};
use timely::dataflow::{InputHandleVec, Scope};

use crate::Time;

/// One worker's published state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Global index of the worker.
    pub worker: u32,
    /// Minimum watermark over its active partitions; `None` when none is active.
    pub active: Option<Time>,
    /// Maximum watermark over its idle partitions (0 when none is idle).
    pub idle: Time,
    /// A bounded backfill's range is read and every row of it written.
    pub settled: bool,
    /// Minimum watermark over its partitions that are not idle, finished
    /// ones included (`None`: it has none). Windows that close at or below
    /// the minimum of these over all workers closed because the watermark
    /// passed them, not because a bounded run ended; only their messages
    /// may be committed (see [`Replica::commit_cap`]).
    pub floor: Option<Time>,
    /// Minimum watermark over its partitions with a backlog (see
    /// [`WatermarkTracker::reading`](crate::watermark::WatermarkTracker::reading);
    /// `None`: it has none). The minimum of these over all workers is the
    /// slowest partition being read, which the others keep within
    /// `max_drift` of (see [`Replica::slowest`]).
    #[serde(default)]
    pub reading: Option<Time>,
}

/// One worker's view of every worker's latest notice.
#[derive(Debug, Clone)]
pub struct Replica {
    me: usize,
    notices: Vec<Notice>,
}

impl Replica {
    /// The view of worker `me` of `peers`, before anyone published: every
    /// worker counts as active at 0, so nobody follows anybody yet.
    pub fn new(me: usize, peers: usize) -> Self {
        Replica {
            me,
            notices: (0..peers)
                .map(|w| Notice {
                    worker: w as u32,
                    active: Some(0),
                    idle: 0,
                    settled: false,
                    floor: Some(0),
                    reading: None,
                })
                .collect(),
        }
    }

    /// Records a notice (a worker's own, or one received).
    pub fn apply(&mut self, n: Notice) {
        if let Some(slot) = self.notices.get_mut(n.worker as usize) {
            *slot = n;
        }
    }

    /// Where a worker with no active partition may move its watermark: the
    /// minimum active watermark of the other workers, or, when no worker has
    /// an active partition, the largest idle watermark of any worker.
    pub fn follow(&self) -> Time {
        let active = self
            .notices
            .iter()
            .enumerate()
            .filter(|(w, _)| *w != self.me)
            .filter_map(|(_, n)| n.active)
            .min();
        active.unwrap_or_else(|| self.notices.iter().map(|n| n.idle).max().unwrap_or(0))
    }

    /// Whether every worker said its backfill range is settled.
    pub fn all_settled(&self) -> bool {
        self.notices.iter().all(|n| n.settled)
    }

    /// The watermark of the slowest partition any worker is reading (see
    /// [`Notice::reading`]); `None` while no worker has published one.
    /// Published watermarks only grow, so this is never above the real one.
    pub fn slowest(&self) -> Option<Time> {
        self.notices.iter().filter_map(|n| n.reading).min()
    }

    /// The largest close time whose windows are known to have closed by the
    /// watermark: the minimum of every worker's [`Notice::floor`] (`None`:
    /// no bound). When a bounded run reaches the end of its input, its
    /// remaining windows are emitted as final but stay above this bound, so
    /// their messages are not committed and a later run that finds more
    /// data rebuilds them whole.
    pub fn commit_cap(&self) -> Option<Time> {
        self.notices.iter().filter_map(|n| n.floor).min()
    }
}

/// A read-only handle on a worker's [`Replica`], for the worker's checkpoints.
#[derive(Clone)]
pub struct BoardView(Rc<RefCell<Replica>>);

impl BoardView {
    /// See [`Replica::commit_cap`].
    pub fn commit_cap(&self) -> Option<Time> {
        self.0.borrow().commit_cap()
    }
}

/// A worker's board: its replica, and the input through which it publishes.
pub struct Board {
    replica: Rc<RefCell<Replica>>,
    input: Option<InputHandleVec<Time, Notice>>,
    last: Option<Notice>,
}

impl Board {
    /// Publishes this worker's state, when it changed.
    pub fn publish(
        &mut self,
        active: Option<Time>,
        idle: Time,
        settled: bool,
        floor: Option<Time>,
        reading: Option<Time>,
    ) {
        let me = self.replica.borrow().me as u32;
        let notice = Notice {
            worker: me,
            active,
            idle,
            settled,
            floor,
            reading,
        };
        if self.last == Some(notice) {
            return;
        }
        self.last = Some(notice);
        self.replica.borrow_mut().apply(notice);
        if let Some(input) = self.input.as_mut() {
            input.send(notice);
            input.flush();
        }
    }

    /// See [`Replica::follow`].
    pub fn follow(&self) -> Time {
        self.replica.borrow().follow()
    }

    /// See [`Replica::all_settled`].
    pub fn all_settled(&self) -> bool {
        self.replica.borrow().all_settled()
    }

    /// See [`Replica::slowest`].
    pub fn slowest(&self) -> Option<Time> {
        self.replica.borrow().slowest()
    }

    /// A handle on the replica for the worker's checkpoints.
    pub fn view(&self) -> BoardView {
        BoardView(Rc::clone(&self.replica))
    }

    /// Stops publishing (the source is done), so the dataflow can complete.
    pub fn close(&mut self) {
        self.input = None;
    }
}

/// Builds the board's stream in `scope`: this worker's notices, broadcast to
/// every worker, each of which keeps them in its replica.
pub fn watermark_board(scope: Scope<'_, Time>) -> Board {
    let replica = Rc::new(RefCell::new(Replica::new(scope.index(), scope.peers())));
    let (input, notices) = scope.new_input::<Notice>();
    let seen = Rc::clone(&replica);
    notices.broadcast().inspect(move |n| {
        // Our own notices are applied when published.
        if n.worker as usize != seen.borrow().me {
            seen.borrow_mut().apply(*n);
        }
    });
    Board {
        replica,
        input: Some(input),
        last: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_that_has_not_published_holds_followers_at_zero() {
        let mut r = Replica::new(0, 3);
        r.apply(Notice {
            worker: 1,
            active: Some(7_000),
            idle: 0,
            settled: false,
            floor: Some(0),
            reading: None,
        });
        assert_eq!(r.follow(), 0, "worker 2 still counts as active at 0");
        r.apply(Notice {
            worker: 2,
            active: Some(4_000),
            idle: 0,
            settled: false,
            floor: Some(0),
            reading: None,
        });
        assert_eq!(r.follow(), 4_000);
    }

    #[test]
    fn the_slowest_partition_read_is_the_least_published_by_any_worker() {
        let mut r = Replica::new(0, 3);
        assert_eq!(r.slowest(), None, "nobody has read an event yet");
        let reading = |worker, at| Notice {
            worker,
            active: at,
            idle: 0,
            settled: false,
            floor: at,
            reading: at,
        };
        r.apply(reading(0, Some(90_000)));
        assert_eq!(r.slowest(), Some(90_000));
        r.apply(reading(2, Some(30_000)));
        assert_eq!(r.slowest(), Some(30_000));
        // A worker whose partitions are idle or finished reads none.
        r.apply(reading(2, None));
        assert_eq!(r.slowest(), Some(90_000));
    }

    #[test]
    fn own_idle_watermark_counts_only_when_nobody_is_active() {
        let mut r = Replica::new(0, 2);
        r.apply(Notice {
            worker: 0,
            active: None,
            idle: 50_000,
            settled: true,
            floor: None,
            reading: None,
        });
        r.apply(Notice {
            worker: 1,
            active: Some(10_000),
            idle: 0,
            settled: true,
            floor: Some(10_000),
            reading: None,
        });
        assert_eq!(r.follow(), 10_000);
        assert!(r.all_settled());
        r.apply(Notice {
            worker: 1,
            active: None,
            idle: 20_000,
            settled: true,
            floor: Some(30_000),
            reading: None,
        });
        assert_eq!(
            r.commit_cap(),
            Some(30_000),
            "worker 0 has no floor: it bounds nothing"
        );
        assert_eq!(r.follow(), 50_000);
    }
}
