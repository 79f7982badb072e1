//! Bounded, jittered retries of transient sink errors.

use std::time::Duration;

use footprint_dataflows::clickstream::SplitMix64;

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
    pub fn delay(&self, retry: u32, rng: &mut SplitMix64) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max);
        let nanos = cap.as_nanos().min(u128::from(u64::MAX)) as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { rng.below(nanos + 1) })
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
        let mut rng = SplitMix64::new(1);
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
}
