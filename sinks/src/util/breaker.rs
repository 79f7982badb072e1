//! A circuit breaker: closed → open after repeated failures → half-open
//! probe → closed again on success.
//!
//! Time is passed in, so the state machine is tested without sleeping.

use std::time::{Duration, Instant};

/// The breaker's state, as reported in metrics and `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Writes go to the store.
    Closed,
    /// Writes are diverted without trying the store.
    Open,
    /// One probe write may try the store.
    HalfOpen,
}

impl BreakerState {
    /// Name for metrics and status (`closed`, `open`, `half_open`).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed writes that open the breaker.
    pub failures_to_open: u32,
    /// How long the breaker stays open before it lets a probe through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures_to_open: 3,
            open_for: Duration::from_secs(2),
        }
    }
}

/// The breaker of one sink on one worker.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    failures: u32,
    opened_at: Option<Instant>,
    probing: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            failures: 0,
            opened_at: None,
            probing: false,
        }
    }

    /// The state at `now`.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.opened_at {
            None => BreakerState::Closed,
            Some(_) if self.probing => BreakerState::HalfOpen,
            Some(t) if now.saturating_duration_since(t) >= self.config.open_for => {
                BreakerState::HalfOpen
            }
            Some(_) => BreakerState::Open,
        }
    }

    /// Whether a write may try the store now. In half-open state this admits
    /// one probe, until its outcome is recorded.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if self.probing => false,
            BreakerState::HalfOpen => {
                self.probing = true;
                true
            }
        }
    }

    /// Records a successful write: the breaker closes.
    pub fn success(&mut self) {
        self.failures = 0;
        self.opened_at = None;
        self.probing = false;
    }

    /// Records a failed write at `now`: a failed probe re-opens the breaker,
    /// and enough consecutive failures open a closed one.
    pub fn failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        if self.probing || self.opened_at.is_some() || self.failures >= self.config.failures_to_open
        {
            self.opened_at = Some(now);
            self.probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_repeated_failures_probes_when_half_open_and_closes_on_success() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig {
            failures_to_open: 2,
            open_for: Duration::from_secs(5),
        });
        assert!(b.allow(t0));
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.allow(t0 + Duration::from_secs(4)));
        let t5 = t0 + Duration::from_secs(5);
        assert_eq!(b.state(t5), BreakerState::HalfOpen);
        assert!(b.allow(t5), "one probe goes through");
        assert!(!b.allow(t5), "only one probe at a time");
        b.failure(t5);
        assert_eq!(b.state(t5), BreakerState::Open, "a failed probe re-opens");
        let t10 = t5 + Duration::from_secs(5);
        assert!(b.allow(t10));
        b.success();
        assert_eq!(b.state(t10), BreakerState::Closed);
        assert!(b.allow(t10));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig {
            failures_to_open: 2,
            open_for: Duration::from_secs(5),
        });
        b.failure(t0);
        b.success();
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
    }
}
