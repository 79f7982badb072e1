//! Group keys: the values of an aggregate's `group_by` fields, in order.
//!
//! A key is one string holding each part as `<len>:<bytes>`, so parts may
//! contain any character without two different keys colliding, and a key is
//! a single string that hashes and compares as bytes; keys up to 24 bytes
//! are stored inline, without an allocation.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// An encoded group key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupKey(CompactString);

impl GroupKey {
    /// Encodes `parts` in order.
    pub fn from_parts<'p>(parts: impl IntoIterator<Item = &'p str>) -> Self {
        let mut buf = KeyBuf::default();
        for p in parts {
            buf.push(p);
        }
        buf.finish()
    }

    /// Appends one part.
    pub fn push(&mut self, part: &str) {
        let mut buf = KeyBuf::default();
        buf.extend(self.0.as_bytes());
        buf.push(part);
        *self = buf.finish();
    }

    /// A key from its encoded form (as returned by [`as_str`](Self::as_str)).
    pub fn from_encoded(encoded: &str) -> Self {
        GroupKey(CompactString::from(encoded))
    }

    /// The encoded form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Decodes the parts. A key built by this type always decodes.
    pub fn parts(&self) -> Vec<String> {
        self.part_strs().map(str::to_owned).collect()
    }

    /// The parts, borrowed from the key, in order.
    pub fn part_strs(&self) -> Parts<'_> {
        Parts {
            key: self.0.as_str(),
            at: 0,
        }
    }
}

/// The parts of a [`GroupKey`], borrowed ([`GroupKey::part_strs`]).
pub struct Parts<'k> {
    key: &'k str,
    at: usize,
}

impl<'k> Iterator for Parts<'k> {
    type Item = &'k str;

    fn next(&mut self) -> Option<&'k str> {
        let bytes = self.key.as_bytes();
        let mut at = self.at;
        let mut len = 0usize;
        while let Some(d @ b'0'..=b'9') = bytes.get(at) {
            len = len.checked_mul(10)?.checked_add(usize::from(d - b'0'))?;
            at += 1;
        }
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        let part = self.key.get(at + 1..(at + 1).checked_add(len)?)?;
        self.at = at + 1 + len;
        Some(part)
    }
}

/// A key being encoded, on the stack while it is short.
pub struct KeyBuf {
    inline: [u8; 48],
    len: usize,
    heap: Vec<u8>,
}

impl Default for KeyBuf {
    fn default() -> Self {
        KeyBuf {
            inline: [0; 48],
            len: 0,
            heap: Vec::new(),
        }
    }
}

impl KeyBuf {
    /// Appends one part: its length in decimal, `:`, its bytes.
    pub fn push(&mut self, part: &str) {
        let mut digits = [0u8; 21];
        let mut n = part.len();
        let mut i = digits.len() - 1;
        digits[i] = b':';
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.extend(&digits[i..]);
        self.extend(part.as_bytes());
    }

    fn extend(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if self.heap.is_empty() && end <= self.inline.len() {
            self.inline[self.len..end].copy_from_slice(bytes);
        } else {
            if self.heap.is_empty() {
                self.heap.extend_from_slice(&self.inline[..self.len]);
            }
            self.heap.extend_from_slice(bytes);
        }
        self.len = end;
    }

    /// The key.
    pub fn finish(self) -> GroupKey {
        let bytes = if self.heap.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.heap[..]
        };
        // Only whole `&str` parts, ASCII digits and `:` went in, so this is
        // UTF-8; the check is a pass over a few bytes.
        GroupKey(CompactString::new(
            std::str::from_utf8(bytes).unwrap_or_default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_with_separators_round_trip_without_collisions() {
        let a = GroupKey::from_parts(["a:1", "b"]);
        let b = GroupKey::from_parts(["a", "1:b"]);
        assert_ne!(a, b);
        assert_eq!(a.parts(), vec!["a:1".to_owned(), "b".to_owned()]);
        assert_eq!(b.parts(), vec!["a".to_owned(), "1:b".to_owned()]);
        assert_eq!(
            GroupKey::from_parts(["", "é"]).parts(),
            vec!["".to_owned(), "é".to_owned()]
        );
    }

    proptest::proptest! {
        /// Any parts, long or short, come back as they went in.
        #[test]
        fn any_parts_round_trip(parts in proptest::collection::vec(".{0,40}", 0..5)) {
            let key = GroupKey::from_parts(parts.iter().map(String::as_str));
            proptest::prop_assert_eq!(key.parts(), parts.clone());
            let mut pushed = GroupKey::default();
            for p in &parts {
                pushed.push(p);
            }
            proptest::prop_assert_eq!(pushed, key);
        }
    }
}
