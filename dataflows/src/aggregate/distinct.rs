//! The distinct sets of the windowed-aggregate operator: each window's
//! distinct values as small ids (a short list, then a bitset), and the
//! interner that hands out those ids and forgets a value once no open window
//! holds it. Nothing here knows about windows' timing or rows.

use compact_str::CompactString;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashSet, HashTable};
use smallvec::SmallVec;

/// The interned distinct values of one window: a short list while it is
/// small, then a hash set, and a bitset over the interner's dense ids once
/// that is no larger (ids are reused, so they stay below the number of
/// values alive at once).
///
/// A bitset costs a bit for every id up to the largest it holds, so a
/// window with a few values of high ids would cost as much as one with all
/// of them: with 2,000,000 users alive, 250 KB. The hash set costs about
/// 8 bytes a value, so a window switches to the bitset only once it holds
/// at least one id in 64 of the range (see [`dense_enough`]).
#[derive(Debug, Clone, Default)]
pub(super) enum DistinctSet {
    #[default]
    Empty,
    Small(SmallVec<[u32; SMALL_DISTINCT]>),
    Sparse {
        ids: HashSet<u32>,
        /// The largest id in `ids`.
        max: u32,
    },
    Bits {
        words: Vec<u64>,
        len: usize,
    },
}

/// Values a window holds in a plain list before it switches to a hash set.
const SMALL_DISTINCT: usize = 16;

/// Whether `len` ids up to `max` are dense enough for a bitset to cost no
/// more than a hash set (8 bytes a word, about 8 bytes a value).
fn dense_enough(len: usize, max: u32) -> bool {
    len > (max as usize) / 64
}

impl DistinctSet {
    /// Adds `id`; returns whether it was new.
    pub(super) fn insert(&mut self, id: u32) -> bool {
        match self {
            DistinctSet::Empty => {
                *self = DistinctSet::Small(smallvec::smallvec![id]);
                true
            }
            DistinctSet::Small(v) => {
                if v.contains(&id) {
                    return false;
                }
                if v.len() < SMALL_DISTINCT {
                    v.push(id);
                    return true;
                }
                let ids: HashSet<u32> = v.iter().copied().chain([id]).collect();
                let max = ids.iter().copied().max().unwrap_or(id);
                *self = DistinctSet::Sparse { ids, max };
                self.densify();
                true
            }
            DistinctSet::Sparse { ids, max } => {
                if !ids.insert(id) {
                    return false;
                }
                *max = (*max).max(id);
                self.densify();
                true
            }
            DistinctSet::Bits { words, len } => {
                let (w, b) = ((id / 64) as usize, id % 64);
                if w >= words.len() {
                    if !dense_enough(*len + 1, id) {
                        // An id far past the others: a bitset up to it would
                        // be mostly empty.
                        let mut ids: HashSet<u32> = self.ids().collect();
                        ids.insert(id);
                        *self = DistinctSet::Sparse { ids, max: id };
                        return true;
                    }
                    words.resize(w + 1, 0);
                }
                let mask = 1u64 << b;
                if words[w] & mask != 0 {
                    return false;
                }
                words[w] |= mask;
                *len += 1;
                true
            }
        }
    }

    /// A hash set dense enough becomes a bitset.
    fn densify(&mut self) {
        let DistinctSet::Sparse { ids, max } = self else {
            return;
        };
        if !dense_enough(ids.len(), *max) {
            return;
        }
        let mut words = vec![0u64; (*max / 64) as usize + 1];
        for id in ids.iter() {
            words[(id / 64) as usize] |= 1u64 << (id % 64);
        }
        *self = DistinctSet::Bits {
            words,
            len: ids.len(),
        };
    }

    pub(super) fn len(&self) -> usize {
        match self {
            DistinctSet::Empty => 0,
            DistinctSet::Small(v) => v.len(),
            DistinctSet::Sparse { ids, .. } => ids.len(),
            DistinctSet::Bits { len, .. } => *len,
        }
    }

    /// Every id in the set.
    pub(super) fn ids(&self) -> Box<dyn Iterator<Item = u32> + '_> {
        match self {
            DistinctSet::Empty => Box::new(std::iter::empty()),
            DistinctSet::Small(v) => Box::new(v.iter().copied()),
            DistinctSet::Sparse { ids, .. } => Box::new(ids.iter().copied()),
            DistinctSet::Bits { words, .. } => {
                Box::new(words.iter().enumerate().flat_map(|(w, word)| {
                    let mut word = *word;
                    std::iter::from_fn(move || {
                        if word == 0 {
                            return None;
                        }
                        let b = word.trailing_zeros();
                        word &= word - 1;
                        Some(w as u32 * 64 + b)
                    })
                }))
            }
        }
    }
}

/// Distinct values as small ids, reference-counted by the window sets that
/// hold them, so a value is forgotten when the last window containing it
/// closes.
///
/// Each value is stored once, in `names`; the index holds only ids, found
/// by the hash of their value. With a value per user alive in some open
/// window (every user of the last ten minutes, for a 10-minute sliding
/// distinct), a map from value to id would hold each value a second time.
#[derive(Default)]
pub(super) struct Interner {
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    names: Vec<Option<CompactString>>,
    refs: Vec<u32>,
    free: Vec<u32>,
}

impl Interner {
    pub(super) fn id(&mut self, value: CompactString) -> u32 {
        let hash = self.hasher.hash_one(value.as_str());
        let names = &self.names;
        let same = |id: &u32| names[*id as usize].as_deref() == Some(value.as_str());
        if let Some(id) = self.index.find(hash, same) {
            return *id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = Some(value);
                self.refs[id as usize] = 0;
                id
            }
            None => {
                self.names.push(Some(value));
                self.refs.push(0);
                (self.names.len() - 1) as u32
            }
        };
        let (names, hasher) = (&self.names, &self.hasher);
        // Every id in the index has its name: a name is taken only as its
        // id leaves the index (`forget_if_unused`).
        self.index.insert_unique(hash, id, |id| {
            hasher.hash_one(names[*id as usize].as_deref().unwrap_or_default())
        });
        id
    }

    pub(super) fn retain(&mut self, id: u32) {
        self.refs[id as usize] += 1;
    }

    /// Drops one reference; forgets the value when none is left.
    pub(super) fn release(&mut self, id: u32) {
        let r = &mut self.refs[id as usize];
        *r = r.saturating_sub(1);
        if *r == 0 {
            self.forget_if_unused(id);
        }
    }

    pub(super) fn forget_if_unused(&mut self, id: u32) {
        if self.refs[id as usize] == 0
            && let Some(name) = self.names[id as usize].take()
        {
            let hash = self.hasher.hash_one(name.as_str());
            if let Ok(entry) = self.index.find_entry(hash, |i| *i == id) {
                entry.remove();
            }
            self.free.push(id);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Inserts `ids` into a set and into a `BTreeSet`, checking that both
    /// agree on every insert and hold the same ids at the end.
    fn agrees_with_a_btree_set(ids: Vec<u32>) -> Result<DistinctSet, TestCaseError> {
        let mut set = DistinctSet::default();
        let mut want = std::collections::BTreeSet::new();
        for id in ids {
            prop_assert_eq!(set.insert(id), want.insert(id));
            prop_assert_eq!(set.len(), want.len());
        }
        let mut got: Vec<u32> = set.ids().collect();
        got.sort_unstable();
        prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
        Ok(set)
    }

    proptest! {
        /// A distinct set counts each id once, small or large, and lists
        /// them all: ids close together, which end as a bitset.
        #[test]
        fn a_distinct_set_is_a_set(ids in proptest::collection::vec(0u32..300, 0..200)) {
            agrees_with_a_btree_set(ids)?;
        }

        /// The same over ids spread thin, which stay in a hash set, and
        /// then over them and a dense run, which turns it into a bitset.
        #[test]
        fn a_sparse_distinct_set_is_a_set(
            sparse in proptest::collection::vec(0u32..2_000_000, 17..100),
            dense in proptest::collection::vec(0u32..2_000, 0..3_000),
        ) {
            let set = agrees_with_a_btree_set(sparse.clone())?;
            let held = set.len();
            let max = sparse.iter().copied().max().unwrap_or(0);
            prop_assert_eq!(
                matches!(set, DistinctSet::Sparse { .. }),
                held > SMALL_DISTINCT && !dense_enough(held, max)
            );
            agrees_with_a_btree_set(sparse.into_iter().chain(dense).collect())?;
        }
    }

    #[test]
    fn the_interner_gives_one_id_per_value_and_reuses_forgotten_ids() {
        let mut interner = Interner::default();
        let a = interner.id("a".into());
        let b = interner.id("b".into());
        assert_ne!(a, b);
        assert_eq!(interner.id("a".into()), a);
        interner.retain(b);
        // `a` is held by no window: forgotten, and its id is free again.
        interner.forget_if_unused(a);
        assert_eq!(interner.len(), 1);
        let c = interner.id("c".into());
        assert_eq!(c, a);
        assert_eq!(interner.id("b".into()), b);
        interner.release(b);
        assert_eq!(interner.len(), 1);
        assert_eq!(interner.id("c".into()), c);
        // Many values: the index grows and finds each again.
        let ids: Vec<u32> = (0..10_000)
            .map(|k| interner.id(format!("u{k}").into()))
            .collect();
        for (k, id) in ids.iter().enumerate() {
            assert_eq!(interner.id(format!("u{k}").into()), *id);
        }
        assert_eq!(interner.len(), 10_001);
    }

    #[test]
    fn a_bitset_goes_back_to_a_hash_set_for_an_id_far_past_the_others() {
        let mut set = DistinctSet::default();
        for id in 0..100u32 {
            set.insert(id);
        }
        assert!(matches!(set, DistinctSet::Bits { .. }));
        assert!(set.insert(2_000_000));
        assert!(matches!(set, DistinctSet::Sparse { max: 2_000_000, .. }));
        assert!(!set.insert(50));
        assert_eq!(set.len(), 101);
    }

    #[test]
    fn a_set_switches_to_a_bitset_only_when_that_is_no_larger() {
        let mut set = DistinctSet::default();
        // 17 ids spread over 1,000,000: a hash set.
        for k in 0..17u32 {
            set.insert(k * 62_500);
        }
        assert!(matches!(set, DistinctSet::Sparse { .. }));
        // Enough ids for one in 64 of the range: a bitset.
        for id in 0..1_000_000u32 / 64 {
            set.insert(id);
        }
        assert!(matches!(set, DistinctSet::Bits { .. }));
        assert_eq!(set.len(), 17 + 15_625 - 1);
    }
}
