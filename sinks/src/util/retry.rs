//! Bounded, jittered retries of transient sink errors, and the backoff of
//! anything that waits for a store to come back (the replay job).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How a failed write is retried before it is diverted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Delay cap before the first retry; it doubles after each retry.
    pub base: Duration,
    /// Largest delay cap.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(50),
            max: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1 for the first retry): uniform
    /// in [0, min(max, base × 2^(retry−1))] ("full jitter"), drawn from `rng`.
    pub fn delay(&self, retry: u32, rng: &mut Jitter) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max);
        let nanos = cap.as_nanos().min(u128::from(u64::MAX)) as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { rng.below(nanos + 1) })
    }
}

/// The random source of retry jitter (xorshift64*): small, fast, and its
/// own, so that nothing else shares or steers it.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A source seeded with `seed` (the same seed gives the same delays).
    pub fn new(seed: u64) -> Self {
        // Spread the seed's bits (splitmix64's finaliser); never 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Jitter((z ^ (z >> 31)) | 1)
    }

    /// A source seeded from the clock, the process id and `salt`, so that
    /// processes and workers that fail together retry apart.
    pub fn from_clock(salt: u64) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Jitter::new(nanos ^ (u64::from(std::process::id()) << 32) ^ salt)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `[0, n)` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_jittered_below_a_doubling_cap() {
        let p = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_millis(300),
        };
        let mut rng = Jitter::new(1);
        let mut distinct = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let d1 = p.delay(1, &mut rng);
            let d3 = p.delay(3, &mut rng);
            assert!(d1 <= Duration::from_millis(100));
            assert!(d3 <= Duration::from_millis(300), "capped at max");
            distinct.insert(d1);
        }
        assert!(distinct.len() > 100, "delays must be jittered");
    }

    #[test]
    fn jitter_is_uniform_enough_and_repeatable() {
        let mut a = Jitter::new(7);
        let mut b = Jitter::new(7);
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            buckets[x as usize] += 1;
        }
        assert!(
            buckets.iter().all(|n| (800..1200).contains(n)),
            "{buckets:?}"
        );
        assert_eq!(a.below(0), 0);
    }
}
