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
        let mut key = GroupKey::default();
        for p in parts {
            key.push(p);
        }
        key
    }

    /// Appends one part.
    pub fn push(&mut self, part: &str) {
        // The length in decimal, without the formatting machinery.
        let mut digits = [0u8; 20];
        let mut n = part.len();
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.0.reserve(digits.len() - i + 1 + part.len());
        for d in &digits[i..] {
            self.0.push(char::from(*d));
        }
        self.0.push(':');
        self.0.push_str(part);
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
        let mut out = Vec::new();
        let mut rest = self.0.as_str();
        while let Some(colon) = rest.find(':') {
            let Ok(len) = rest[..colon].parse::<usize>() else {
                break;
            };
            let body = &rest[colon + 1..];
            let Some(part) = body.get(..len) else { break };
            out.push(part.to_owned());
            rest = &body[len..];
        }
        out
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
}
