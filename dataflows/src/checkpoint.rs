//! Source offsets that are safe to commit (`docs/design.md#offsets-and-recovery`).
//!
//! An offset may be committed once every result derived from the messages
//! before it has been accepted: written to its store, or taken by the retry
//! topic or journal. The source knows, for each message, the timely time by
//! which all of its results have left the dataflow:
//!
//! - a window contribution's final row is emitted no later than the window's
//!   close time (`end + allowed_lateness`), because the aggregate holds its
//!   capability at most there;
//! - a recent-activity entry is emitted no later than the message's stamp,
//!   because the recent-activity operator holds its capability at the
//!   smallest stamp it has not emitted yet.
//!
//! That time is the message's *need*. A probe placed after the operator that
//! writes to the sinks tells when every row up to a time has been written:
//! once the probe's frontier is past a message's need, the message is done.
//!
//! [`OffsetLedger`] keeps, per partition, only the messages whose need is
//! greater than every earlier message's (the running maxima): a later
//! message with a smaller need is done no later than the earlier one. That
//! list is short, one entry per distinct close time, whatever the rate. The
//! committable offset is that of the first message not yet done, or the read
//! position when every message read is done.
//!
//! Each checkpoint also carries the partition's largest event time before
//! that offset. A restart seeds the partition's watermark with it, so every
//! message read again gets the same stamp, makes the same lateness decision,
//! and every window still open at the checkpoint is rebuilt exactly.

use std::collections::VecDeque;

use crate::Time;

/// A partition's safe resume point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Index of the partition among the worker's partitions.
    pub idx: usize,
    /// The first offset a restart must read again.
    pub offset: i64,
    /// The partition's largest event time before `offset`, if any event was seen.
    pub max_ts: Option<i64>,
}

#[derive(Debug, Clone, Default)]
struct PartitionLedger {
    /// (offset, need, largest event time before the offset): running maxima of need.
    pending: VecDeque<(i64, Time, Option<i64>)>,
    /// The next offset to read, once something was read (or the start).
    position: Option<i64>,
    /// Largest event time before `position`.
    max_ts: Option<i64>,
    /// The offset of the last checkpoint committed (or the start).
    last: Option<i64>,
}

/// Per-partition bookkeeping of which offsets may be committed.
#[derive(Debug, Clone, Default)]
pub struct OffsetLedger {
    partitions: Vec<PartitionLedger>,
}

impl OffsetLedger {
    /// A ledger for `partitions` partitions.
    pub fn new(partitions: usize) -> Self {
        OffsetLedger {
            partitions: vec![PartitionLedger::default(); partitions],
        }
    }

    /// Sets where partition `idx` starts and its largest event time before that.
    pub fn start(&mut self, idx: usize, offset: i64, max_ts: Option<i64>) {
        if let Some(p) = self.partitions.get_mut(idx) {
            p.position = Some(offset);
            p.max_ts = max_ts;
            p.last = Some(offset);
        }
    }

    /// Records message `offset` of partition `idx`, done once the probe is
    /// past `need` (`None`: nothing to wait for), with event time `ts` (`None`
    /// for a message that did not decode).
    pub fn note(&mut self, idx: usize, offset: i64, need: Option<Time>, ts: Option<i64>) {
        let Some(p) = self.partitions.get_mut(idx) else {
            return;
        };
        if let Some(need) = need
            && p.pending.back().is_none_or(|(_, n, _)| need > *n)
        {
            p.pending.push_back((offset, need, p.max_ts));
        }
        if let Some(ts) = ts {
            p.max_ts = Some(p.max_ts.map_or(ts, |m| m.max(ts)));
        }
        p.position = Some(offset + 1);
    }

    /// The checkpoints that moved since the last one [committed](Self::committed),
    /// given that every row at a time `t` with `done(t)` has been written.
    pub fn advance(&mut self, done: impl Fn(Time) -> bool) -> Vec<Checkpoint> {
        let mut out = Vec::new();
        for (idx, p) in self.partitions.iter_mut().enumerate() {
            while p.pending.front().is_some_and(|(_, need, _)| done(*need)) {
                p.pending.pop_front();
            }
            let point = match p.pending.front() {
                Some((offset, _, max_ts)) => (*offset, *max_ts),
                None => match p.position {
                    Some(pos) => (pos, p.max_ts),
                    None => continue,
                },
            };
            if p.last.is_none_or(|o| point.0 > o) {
                out.push(Checkpoint {
                    idx,
                    offset: point.0,
                    max_ts: point.1,
                });
            }
        }
        out
    }

    /// Records that `points` were committed: later calls report only progress past them.
    pub fn committed(&mut self, points: &[Checkpoint]) {
        for c in points {
            if let Some(p) = self.partitions.get_mut(c.idx) {
                p.last = Some(c.offset);
            }
        }
    }

    /// Whether partition `idx`'s messages before `to` are all read (or the
    /// partition `finished` before it) and all done: a backfill range that
    /// is settled.
    pub fn settled(&self, idx: usize, to: i64, finished: bool) -> bool {
        let Some(p) = self.partitions.get(idx) else {
            return true;
        };
        let read = finished || p.position.is_some_and(|pos| pos >= to);
        read && p.pending.front().is_none_or(|(offset, _, _)| *offset >= to)
    }

    /// How many entries are waiting, over all partitions (for tests and metrics).
    pub fn pending(&self) -> usize {
        self.partitions.iter().map(|p| p.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_commits_up_to_its_first_unfinished_message() {
        let mut l = OffsetLedger::new(1);
        l.start(0, 10, None);
        l.note(0, 10, Some(60_000), Some(1_000));
        l.note(0, 11, Some(120_000), Some(61_000));
        l.note(0, 12, Some(60_000), Some(2_000));
        l.note(0, 13, None, None);
        // Only the running maxima are kept.
        assert_eq!(l.pending(), 2);
        assert!(l.advance(|t| t < 60_000).is_empty());
        let first = l.advance(|t| t < 60_001);
        assert_eq!(
            first,
            vec![Checkpoint {
                idx: 0,
                offset: 11,
                max_ts: Some(1_000)
            }]
        );
        assert_eq!(
            l.advance(|t| t < 60_001),
            first,
            "not committed yet: asked again"
        );
        l.committed(&first);
        assert!(
            l.advance(|t| t < 60_001).is_empty(),
            "committed: nothing new"
        );
        assert_eq!(
            l.advance(|_| true),
            vec![Checkpoint {
                idx: 0,
                offset: 14,
                max_ts: Some(61_000)
            }]
        );
    }

    #[test]
    fn an_untouched_partition_yields_no_checkpoint() {
        let mut l = OffsetLedger::new(1);
        assert!(l.advance(|_| true).is_empty());
        l.start(0, 5, Some(9));
        assert!(l.advance(|_| true).is_empty(), "the start is not news");
    }
}
