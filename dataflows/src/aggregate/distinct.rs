//! The distinct sets of the windowed-aggregate operator: each window's
//! distinct values as small ids (a short list, then a bitset), and the
//! interner that hands out those ids and forgets a value once no open window
//! holds it. Nothing here knows about windows' timing or rows.

use compact_str::CompactString;
use hashbrown::HashMap;
use smallvec::SmallVec;

/// The interned distinct values of one window: a short list while it is
/// small, then a bitset over the interner's dense ids (ids are reused, so
/// they stay below the number of values alive at once).
#[derive(Debug, Clone, Default)]
pub(super) enum DistinctSet {
    #[default]
    Empty,
    Small(SmallVec<[u32; SMALL_DISTINCT]>),
    Bits {
        words: Vec<u64>,
        len: usize,
    },
}

/// Values a window holds in a plain list before it switches to a bitset.
const SMALL_DISTINCT: usize = 16;

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
                let mut bits = DistinctSet::Bits {
                    words: Vec::new(),
                    len: 0,
                };
                for x in v.iter().copied().chain([id]) {
                    bits.insert(x);
                }
                *self = bits;
                true
            }
            DistinctSet::Bits { words, len } => {
                let (w, b) = ((id / 64) as usize, id % 64);
                if w >= words.len() {
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

    pub(super) fn len(&self) -> usize {
        match self {
            DistinctSet::Empty => 0,
            DistinctSet::Small(v) => v.len(),
            DistinctSet::Bits { len, .. } => *len,
        }
    }

    /// Every id in the set.
    pub(super) fn ids(&self) -> Box<dyn Iterator<Item = u32> + '_> {
        match self {
            DistinctSet::Empty => Box::new(std::iter::empty()),
            DistinctSet::Small(v) => Box::new(v.iter().copied()),
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
#[derive(Default)]
pub(super) struct Interner {
    ids: HashMap<CompactString, u32>,
    names: Vec<Option<CompactString>>,
    refs: Vec<u32>,
    free: Vec<u32>,
}

impl Interner {
    pub(super) fn id(&mut self, value: CompactString) -> u32 {
        if let Some(id) = self.ids.get(value.as_str()) {
            return *id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = Some(value.clone());
                self.refs[id as usize] = 0;
                id
            }
            None => {
                self.names.push(Some(value.clone()));
                self.refs.push(0);
                (self.names.len() - 1) as u32
            }
        };
        self.ids.insert(value, id);
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
            self.ids.remove(&name);
            self.free.push(id);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A distinct set counts each id once, small or large, and lists them all.
        #[test]
        fn a_distinct_set_is_a_set(ids in proptest::collection::vec(0u32..300, 0..200)) {
            let mut set = DistinctSet::default();
            let mut want = std::collections::BTreeSet::new();
            for id in ids {
                prop_assert_eq!(set.insert(id), want.insert(id));
                prop_assert_eq!(set.len(), want.len());
            }
            let mut got: Vec<u32> = set.ids().collect();
            got.sort_unstable();
            prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
        }
    }
}
