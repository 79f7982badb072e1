//! What every HTTP service of Footprint (the query service, the collector,
//! the admin API) reads and says the same way: bearer tokens, and the
//! seconds of a `Retry-After`.

/// The credentials of an `Authorization: Bearer …` header (scheme
/// case-insensitive).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Compares in time that depends only on the lengths, not on where the
/// strings differ.
pub fn same(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in b.iter().enumerate() {
        diff |= x ^ a.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// Whole seconds to wait, rounded up and at least 1: what `Retry-After`
/// says.
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}
