//! Completeness marks: how far each aggregate's windows are final in a
//! store, so that a reader can say how fresh an answer is.
//!
//! A mark says: every window of this aggregate that ends at or before
//! `complete_up_to` (ms since the epoch) holds its final row in this store.
//! Each process of a worker cluster writes its own mark per aggregate and
//! store ([`Mark::writer`] of [`Mark::writers`]); the store's completeness is
//! the least mark of the newest run's processes ([`combine`]). A mark only
//! moves forward (a store keeps the greater value), which holds across
//! restarts: rows a store once held final stay final there.
//!
//! A process's mark follows the sinks' output frontier: once every row of
//! every worker at times before `f` is written or diverted, every window
//! whose close time (end plus allowed lateness) is before `f` has its final
//! row in the store, unless that row was diverted. A diverted final row
//! holds the mark of its store below its window's end ([`Holds`]) until
//! the process reads it back from the store (the replay job applied it),
//! and at start-up the marks wait until the retry topic has been drained:
//! rows a previous run diverted may still wait there.
//!
//! # Layout
//! - Redis: one hash per aggregate, `PREFIX:m:AGGREGATE`, with one field per
//!   writer (`0`, `1`, …) holding `WRITERS:COMPLETE_UP_TO:RUN`.
//! - MySQL: the table `PREFIX` + `marks`, primary key `(aggregate, writer)`,
//!   with `writers`, `complete_up_to`, `run` and `updated_at`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use footprint_dataflows::key::GroupKey;
use footprint_dataflows::{Output, WindowRow};

use crate::SinkError;

/// One writer's mark for one aggregate in one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The writing process's index in its cluster.
    pub writer: u32,
    /// The processes of its cluster.
    pub writers: u32,
    /// Every window ending at or before this (ms) is final in the store.
    pub complete_up_to: i64,
    /// When the writing process started (ms since the epoch): which run
    /// the mark belongs to.
    pub run: i64,
}

/// A store's completeness for one aggregate, from its marks: the least
/// mark of the processes of the newest run (the writer count of the mark
/// whose process started last). `None` until every one of those processes
/// has written a mark.
pub fn combine(marks: &[Mark]) -> Option<i64> {
    let newest = marks.iter().max_by_key(|m| m.run)?;
    let writers = newest.writers;
    let mut least = i64::MAX;
    for w in 0..writers {
        let m = marks
            .iter()
            .find(|m| m.writer == w && m.writers == writers)?;
        least = least.min(m.complete_up_to);
    }
    Some(least)
}

/// Parses a Redis mark field (`WRITER` → `WRITERS:COMPLETE_UP_TO:RUN`).
pub fn parse_redis_mark(writer: &str, value: &str) -> Option<Mark> {
    let mut it = value.split(':');
    let writers = it.next()?.parse().ok()?;
    let complete_up_to = it.next()?.parse().ok()?;
    let run = it.next()?.parse().ok()?;
    Some(Mark {
        writer: writer.parse().ok()?,
        writers,
        complete_up_to,
        run,
    })
}

/// Writes one process's marks to a store.
pub trait MarkWriter: Send + Sync {
    /// The store's name (`redis`, `mysql`).
    fn store(&self) -> &str;
    /// Writes `mark` for `aggregate`; the store keeps the greater
    /// `complete_up_to` of the two.
    fn write(&mut self, aggregate: &str, mark: &Mark) -> Result<(), SinkError>;
    /// Of these diverted rows, which ones the store now holds at their
    /// version or a later one (the replay job applied them).
    fn applied(&mut self, rows: &[HeldRow]) -> Result<Vec<bool>, SinkError>;
}

/// A diverted final row, as the holds keep it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeldRow {
    /// The aggregate's name.
    pub aggregate: std::sync::Arc<str>,
    /// Its index in the spec.
    pub agg: u16,
    /// Window start.
    pub window_start: i64,
    /// The encoded group key.
    pub key: GroupKey,
    /// The row's version: the store holds it once its version is at least this.
    pub version: u64,
}

impl HeldRow {
    /// The held form of a diverted final row.
    pub fn of(w: &WindowRow) -> Self {
        HeldRow {
            aggregate: w.aggregate.clone(),
            agg: w.agg,
            window_start: w.window_start,
            key: GroupKey::from_parts(w.key.iter().map(|(_, v)| v.as_str())),
            version: w.version,
        }
    }
}

#[derive(Debug, Default)]
struct Held {
    /// Diverted final rows by window end, earliest first.
    by_end: BTreeMap<i64, HashSet<HeldRow>>,
    /// The window end of each.
    ends: HashMap<HeldRow, i64>,
}

/// The final rows this process diverted from each store and has not seen
/// applied yet; they hold the store's marks.
#[derive(Debug)]
pub struct Holds {
    held: Mutex<HashMap<(String, u16), Held>>,
    /// Until the retry topic is seen drained once, nothing is complete.
    starting: AtomicBool,
}

impl Default for Holds {
    fn default() -> Self {
        Holds {
            held: Mutex::new(HashMap::new()),
            starting: AtomicBool::new(true),
        }
    }
}

impl Holds {
    /// The retry topic was seen drained (nothing waiting for replay, and
    /// this process's journal empty): rows diverted before this process
    /// started are all applied.
    pub fn retry_drained(&self) {
        if self.starting.swap(false, Ordering::AcqRel) {
            tracing::info!("the retry topic is drained: completeness marks may advance");
        }
    }

    /// Whether the marks still wait for the retry topic to be drained.
    pub fn starting(&self) -> bool {
        self.starting.load(Ordering::Acquire)
    }

    /// `rows` were diverted from `sink`: their final window rows hold its marks.
    pub fn diverted(&self, sink: &str, rows: &[Output]) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        for row in rows {
            if let Output::Window(w) = row
                && w.is_final
            {
                let h = held.entry((sink.to_owned(), w.agg)).or_default();
                let r = HeldRow::of(w);
                if h.ends.insert(r.clone(), w.window_end).is_none() {
                    h.by_end.entry(w.window_end).or_default().insert(r);
                }
            }
        }
    }

    /// The earliest window end held for aggregate `agg` in `sink`.
    pub fn earliest(&self, sink: &str, agg: u16) -> Option<i64> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(&(sink.to_owned(), agg))
            .and_then(|h| h.by_end.keys().next().copied())
    }

    /// Rows held for `sink`, at most `n`, earliest windows of each
    /// aggregate first.
    pub fn sample(&self, sink: &str, n: usize) -> Vec<HeldRow> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for ((s, _), h) in held.iter() {
            if s != sink {
                continue;
            }
            for rows in h.by_end.values() {
                for r in rows {
                    if out.len() >= n {
                        return out;
                    }
                    out.push(r.clone());
                }
            }
        }
        out
    }

    /// `rows` of `sink` are applied in its store: they hold nothing more.
    pub fn applied(&self, sink: &str, rows: &[HeldRow]) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        for r in rows {
            if let Some(h) = held.get_mut(&(sink.to_owned(), r.agg))
                && let Some(end) = h.ends.remove(r)
                && let Some(set) = h.by_end.get_mut(&end)
            {
                set.remove(r);
                if set.is_empty() {
                    h.by_end.remove(&end);
                }
            }
        }
    }

    /// How many rows are held for `sink`.
    pub fn len(&self, sink: &str) -> usize {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.iter()
            .filter(|((s, _), _)| s == sink)
            .map(|(_, h)| h.ends.len())
            .sum()
    }
}

/// The mark of an aggregate with `allowed_lateness` (ms) for a sinks'
/// output frontier `frontier`, held below `held_end` (the earliest window
/// end of a diverted final row), if any: every window whose close time is
/// before the frontier, and that ends before any held window, is final.
pub fn complete_up_to(frontier: u64, allowed_lateness: u64, held_end: Option<i64>) -> i64 {
    let closed = i64::try_from(frontier).unwrap_or(i64::MAX)
        - i64::try_from(allowed_lateness).unwrap_or(i64::MAX)
        - 1;
    match held_end {
        Some(end) => closed.min(end - 1),
        None => closed,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use footprint_dataflows::MeasureValue;

    use super::*;

    fn mark(writer: u32, writers: u32, complete_up_to: i64, run: i64) -> Mark {
        Mark {
            writer,
            writers,
            complete_up_to,
            run,
        }
    }

    #[test]
    fn a_store_is_as_complete_as_the_least_process_of_the_newest_run() {
        assert_eq!(combine(&[]), None);
        // An older run of three processes, and a newer one of two.
        let marks = [
            mark(0, 2, 5_000, 200),
            mark(1, 2, 4_000, 201),
            mark(2, 3, 1_000, 100),
        ];
        assert_eq!(
            combine(&marks),
            Some(4_000),
            "the stale third process is ignored"
        );
        // The newer run's second process has not written yet.
        let marks = [mark(0, 2, 5_000, 200), mark(1, 3, 9_000, 100)];
        assert_eq!(combine(&marks), None);
    }

    #[test]
    fn redis_marks_parse() {
        assert_eq!(parse_redis_mark("1", "2:-5:17"), Some(mark(1, 2, -5, 17)));
        assert_eq!(parse_redis_mark("x", "2:5:17"), None);
        assert_eq!(parse_redis_mark("1", "2:5"), None);
    }

    fn row(start: i64, version: u64, is_final: bool) -> Output {
        Output::Window(WindowRow {
            agg: 0,
            aggregate: Arc::from("a"),
            key: vec![(Arc::from("app_id"), "app1".into())],
            window_start: start,
            window_end: start + 60_000,
            measures: vec![(Arc::from("count"), MeasureValue::Count(version))],
            version,
            is_final,
            freshest_append_ms: None,
        })
    }

    #[test]
    fn diverted_finals_hold_their_store_until_applied() {
        let holds = Holds::default();
        assert!(holds.starting());
        holds.retry_drained();
        assert!(!holds.starting());
        holds.diverted(
            "mysql",
            &[
                row(0, 3, false),
                row(60_000, 2, true),
                row(120_000, 1, true),
            ],
        );
        assert_eq!(
            holds.earliest("mysql", 0),
            Some(120_000),
            "early rows hold nothing"
        );
        assert_eq!(holds.earliest("redis", 0), None);
        assert_eq!(holds.len("mysql"), 2);
        let sample = holds.sample("mysql", 1);
        assert_eq!(sample.len(), 1);
        assert_eq!(sample[0].window_start, 60_000);
        holds.applied("mysql", &sample);
        assert_eq!(holds.earliest("mysql", 0), Some(180_000));
        holds.applied("mysql", &holds.sample("mysql", 10));
        assert_eq!(holds.earliest("mysql", 0), None);
    }

    #[test]
    fn the_mark_is_below_every_open_or_held_window() {
        // Frontier 120_000, lateness 5_000: windows closing before 120_000,
        // i.e. ending before 115_000, are final.
        assert_eq!(complete_up_to(120_000, 5_000, None), 114_999);
        assert_eq!(complete_up_to(120_000, 5_000, Some(60_000)), 59_999);
        assert_eq!(complete_up_to(120_000, 0, Some(200_000)), 119_999);
    }
}
