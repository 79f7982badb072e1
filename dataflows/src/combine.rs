//! Merging a source round's contributions before they cross the exchange.
//!
//! On a skewed clickstream most events of a round share a few groups: the
//! popular items, and the handful of (app, event) pairs. Every one of them
//! used to travel to the aggregate operator on its own, where it looked up
//! its group's windows and updated each of them (ten, for a 10-minute window
//! sliding every minute). [`Combiner`] merges the contributions of one round
//! that fall into the same windows of the same group into one, which carries
//! its events' count, sum, latest append time and distinct values.
//!
//! The merge changes no result. Count, sum and the latest append time add up
//! and distinct values are a union, all of which the aggregate operator
//! computes in any order. Every contribution of a round is given at the
//! source's one capability, so merged events share their timely time as
//! well. Two contributions merge only when they have the same aggregate,
//! group, `touches`, latest window start and first open window. The last two
//! fix the windows the event is counted in: every window that contains it
//! ([`last_start`](crate::window::WindowSpec::last_start)) and starts at or
//! after its `first_start`
//! ([`first_start_from`](crate::window::WindowSpec::first_start_from)).
//! `first_start` comes from the stamp the event was read at, which moves
//! with almost every event, so the combiner sets it to that first open
//! window's start: the aggregate counts the event in the same windows.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::route::Contribution;
use crate::spec::PipelineSpec;

/// One round's contributions, merged as they are pushed.
#[derive(Default)]
pub struct Combiner {
    /// The merged contributions, in the order their first event came.
    merged: Vec<Contribution>,
    /// Each merged contribution's merge-key hash, and its index in `merged`.
    index: HashTable<(u64, usize)>,
    hasher: DefaultHashBuilder,
}

impl Combiner {
    /// Adds `c`, an aggregate of `spec`, merging it into an earlier
    /// contribution of this round that falls into the same windows.
    pub fn push(&mut self, spec: &PipelineSpec, mut c: Contribution) {
        let Some(aspec) = spec.aggregates.get(usize::from(c.agg)) else {
            // Not one of the spec's: the aggregate operator ignores it.
            return;
        };
        let window = &aspec.window;
        let last = window.last_start(c.ts);
        // `first_start` comes from the stamp, which moves with nearly every
        // event; the first window it leaves open does not.
        c.first_start = window.first_start_from(c.ts, c.first_start);
        let hash = self
            .hasher
            .hash_one((c.agg, c.key.as_str(), last, c.first_start, c.touches));
        let merged = &mut self.merged;
        let same = |(h, i): &(u64, usize)| {
            let m = &merged[*i];
            *h == hash
                && m.agg == c.agg
                && m.first_start == c.first_start
                && m.touches == c.touches
                && window.last_start(m.ts) == last
                && m.key == c.key
        };
        if let Some((_, i)) = self.index.find(hash, same).copied() {
            merged[i].absorb(c);
            return;
        }
        self.index
            .insert_unique(hash, (hash, merged.len()), |(h, _)| *h);
        merged.push(c);
    }

    /// Whether nothing was pushed since the last [`Combiner::flush`].
    pub fn is_empty(&self) -> bool {
        self.merged.is_empty()
    }

    /// Hands the round's merged contributions to `give`, then starts a new
    /// round (keeping the buffers' memory).
    pub fn flush(&mut self, give: impl FnOnce(&mut Vec<Contribution>)) {
        give(&mut self.merged);
        self.merged.clear();
        self.index.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::PipelineSpec;
    use crate::key::GroupKey;
    use crate::spec::{AggregateSpec, Measure};
    use crate::window::WindowSpec;

    fn spec() -> PipelineSpec {
        PipelineSpec {
            aggregates: vec![AggregateSpec {
                name: "sliding".into(),
                group_by: vec![],
                window: WindowSpec::sliding(600_000, 60_000).expect("valid"),
                measures: vec![Measure::Count],
                allowed_lateness: 0,
                early_updates: None,
                sinks: vec![],
            }],
            recent: None,
            max_out_of_order: 0,
        }
    }

    fn contribution(key: &str, ts: i64, first_start: i64, user: &str) -> Contribution {
        Contribution {
            agg: 0,
            key: GroupKey::from_parts([key]),
            ts,
            first_start,
            count: 1,
            distinct: smallvec::smallvec![Some(user.into())],
            value: 2,
            append_ms: ts,
            touches: true,
        }
    }

    #[test]
    fn contributions_merge_only_within_the_same_windows_of_a_group() {
        let spec = Arc::new(spec());
        let mut c = Combiner::default();
        c.push(&spec, contribution("a", 60_000, 0, "u1"));
        c.push(&spec, contribution("a", 119_999, 0, "u2"));
        // Another minute: other windows.
        c.push(&spec, contribution("a", 120_000, 0, "u3"));
        // Another group.
        c.push(&spec, contribution("b", 60_001, 0, "u4"));
        // Read at a later stamp: fewer of its windows are open.
        c.push(&spec, contribution("a", 60_002, 60_000, "u5"));
        // Another stamp, but the same windows open.
        c.push(&spec, contribution("a", 60_003, 1, "u6"));
        let mut merged = Vec::new();
        c.flush(|round| merged = std::mem::take(round));
        let summary: Vec<(String, i64, u64, usize, i128, i64)> = merged
            .iter()
            .map(|m| {
                (
                    m.key.part_strs().collect::<String>(),
                    m.ts,
                    m.count,
                    m.distinct.len(),
                    m.value,
                    m.append_ms,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("a".to_owned(), 60_000, 2, 2, 4, 119_999),
                ("a".to_owned(), 120_000, 1, 1, 2, 120_000),
                ("b".to_owned(), 60_001, 1, 1, 2, 60_001),
                ("a".to_owned(), 60_002, 2, 2, 4, 60_003),
            ]
        );
        let first_starts: Vec<i64> = merged.iter().map(|m| m.first_start).collect();
        assert_eq!(first_starts, vec![0, 0, 0, 60_000]);
        // A new round merges nothing into the last one's.
        assert!(c.is_empty());
        c.push(&spec, contribution("a", 60_000, 0, "u7"));
        let mut next: Vec<(i64, u64)> = Vec::new();
        c.flush(|round| next = round.iter().map(|m| (m.ts, m.count)).collect());
        assert_eq!(next, vec![(60_000, 1)]);
    }
}
