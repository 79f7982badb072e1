//! `GuardedSink`: the write path every store sink runs behind.
//!
//! A batch is written to the store only when the sink's switch is `auto` and
//! its breaker lets it through; transient failures are retried with jittered
//! backoff a bounded number of times. Whatever is not applied — switch
//! degraded, breaker open, retries exhausted, or a permanent error — is
//! handed to a [`Divert`] (the retry topic, with the journal behind it), so
//! it is never lost. `write` fails only when the diversion fails too, which
//! puts data at risk and is logged at ERROR by the caller.

use std::sync::Arc;
use std::time::Instant;

use footprint_dataflows::Output;
use footprint_telemetry::InternalEvent;

use crate::events::{
    BreakerOpened, BreakerSeen, RowsDiverted, RowsWritten, SinkMetrics, WriteFailed,
};
use crate::util::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::util::retry::{Jitter, RetryPolicy};
use crate::util::switch::{Mode, Switches};
use crate::{Sink, SinkError};

/// Why a batch was diverted instead of written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diversion<'a> {
    /// The sink the rows were meant for.
    pub sink: &'a str,
    /// Why they were not written.
    pub reason: String,
    /// Attempts made against the store (0 when it was not tried).
    pub attempts: u32,
    /// When the first attempt failed (or the diversion began), ms since the epoch.
    pub first_failure_ms: i64,
}

/// Where writes that were not applied go. Implementations must make the rows
/// durable before returning `Ok` (acknowledged by Kafka, or fsync'd).
pub trait Divert: Send + Sync {
    /// Stores `rows` for a later replay.
    fn divert(&self, rows: &[Output], why: &Diversion<'_>) -> Result<(), SinkError>;
}

/// What happened to one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written to the store.
    Written,
    /// Handed to the retry topic or journal.
    Diverted,
}

/// A store sink behind its switch, breaker and retry policy.
pub struct GuardedSink {
    inner: Box<dyn Sink>,
    switches: Arc<Switches>,
    breaker: Breaker,
    policy: RetryPolicy,
    divert: Arc<dyn Divert>,
    rng: Jitter,
    last: Option<Outcome>,
    metrics: Arc<SinkMetrics>,
    holds: Option<Arc<crate::marks::Holds>>,
}

impl GuardedSink {
    /// Guards `inner`; `seed` sets its retry jitter apart from other sinks'.
    pub fn new(
        inner: Box<dyn Sink>,
        switches: Arc<Switches>,
        breaker: BreakerConfig,
        policy: RetryPolicy,
        divert: Arc<dyn Divert>,
        seed: u64,
    ) -> Self {
        GuardedSink {
            inner,
            switches,
            breaker: Breaker::new(breaker),
            policy,
            divert,
            rng: Jitter::from_clock(seed),
            last: None,
            metrics: Arc::new(SinkMetrics::default()),
            holds: None,
        }
    }

    /// Records the final rows it diverts in `holds`, which hold the store's
    /// completeness marks until the rows are applied ([`crate::marks`]).
    /// Rows the store refused for good hold nothing: no replay will ever
    /// make them final there.
    pub fn with_holds(mut self, holds: Arc<crate::marks::Holds>) -> Self {
        self.holds = Some(holds);
        self
    }

    /// Reports what happens to each batch in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<SinkMetrics>) -> Self {
        metrics.sink_built(self.inner.name());
        self.metrics = metrics;
        self
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state(Instant::now())
    }

    /// What happened to the last batch.
    pub fn last_outcome(&self) -> Option<Outcome> {
        self.last
    }

    fn divert(
        &mut self,
        rows: &[Output],
        reason: String,
        attempts: u32,
        first_failure_ms: i64,
        refused: bool,
    ) -> Result<(), SinkError> {
        let name = self.inner.name().to_owned();
        let why = Diversion {
            sink: &name,
            reason,
            attempts,
            first_failure_ms,
        };
        self.divert.divert(rows, &why)?;
        if let Some(holds) = &self.holds
            && !refused
        {
            holds.diverted(&name, rows);
        }
        self.last = Some(Outcome::Diverted);
        RowsDiverted {
            sink: &name,
            rows: rows.len() as u64,
            reason: &why.reason,
        }
        .emit(&self.metrics);
        Ok(())
    }
}

impl Sink for GuardedSink {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn write(&mut self, rows: &[Output]) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let result = self.guarded_write(rows);
        BreakerSeen {
            sink: self.inner.name(),
            state: self.breaker.state(Instant::now()),
        }
        .emit(&self.metrics);
        result
    }

    fn counts_itself(&self) -> bool {
        true
    }

    fn folds(&self) -> bool {
        self.inner.folds()
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.last == Some(Outcome::Written) {
            self.inner.flush()
        } else {
            Ok(())
        }
    }
}

impl GuardedSink {
    fn guarded_write(&mut self, rows: &[Output]) -> Result<(), SinkError> {
        let name = self.inner.name().to_owned();
        if self.switches.get(&name) == Some(Mode::Degraded) {
            return self.divert(
                rows,
                "switch degraded".into(),
                0,
                footprint_telemetry::now_ms(),
                false,
            );
        }
        if !self.breaker.allow(Instant::now()) {
            return self.divert(
                rows,
                "circuit breaker open".into(),
                0,
                footprint_telemetry::now_ms(),
                false,
            );
        }
        let mut first_failure = None;
        let mut attempt = 0;
        let started = Instant::now();
        loop {
            attempt += 1;
            match self.inner.write(rows) {
                Ok(()) => {
                    self.breaker.success();
                    self.last = Some(Outcome::Written);
                    RowsWritten {
                        sink: &name,
                        rows,
                        took: Some(started.elapsed()),
                    }
                    .emit(&self.metrics);
                    return Ok(());
                }
                Err(e) => {
                    let first = *first_failure.get_or_insert_with(footprint_telemetry::now_ms);
                    let give_up = !e.is_retryable()
                        || attempt >= self.policy.attempts
                        || self.switches.get(&name) == Some(Mode::Degraded);
                    if give_up && !e.is_retryable() {
                        // The store answered; it refused these rows for good.
                        // That says nothing about its health: no breaker count.
                        self.breaker.success();
                        WriteFailed {
                            sink: &name,
                            attempts: attempt,
                            refused: true,
                            error: &e,
                        }
                        .emit(&self.metrics);
                        return self.divert(rows, e.to_string(), attempt, first, true);
                    }
                    if give_up {
                        let was_open = self.breaker.state(Instant::now()) != BreakerState::Closed;
                        self.breaker.failure(Instant::now());
                        if !was_open && self.breaker.state(Instant::now()) == BreakerState::Open {
                            BreakerOpened { sink: &name }.emit(&self.metrics);
                        }
                        WriteFailed {
                            sink: &name,
                            attempts: attempt,
                            refused: false,
                            error: &e,
                        }
                        .emit(&self.metrics);
                        return self.divert(rows, e.to_string(), attempt, first, false);
                    }
                    std::thread::sleep(self.policy.delay(attempt, &mut self.rng));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use footprint_dataflows::RecentRow;

    /// A store that fails while `down` is set, and counts calls.
    struct Flaky {
        down: Arc<Mutex<Option<bool>>>,
        calls: Arc<AtomicU32>,
    }

    impl Sink for Flaky {
        fn name(&self) -> &str {
            "mysql"
        }
        fn write(&mut self, _rows: &[Output]) -> Result<(), SinkError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match *self.down.lock().expect("lock") {
                Some(true) => Err(SinkError::Unavailable {
                    sink: "mysql".into(),
                    detail: "down".into(),
                }),
                Some(false) => Err(SinkError::Rejected {
                    sink: "mysql".into(),
                    detail: "bad row".into(),
                }),
                None => Ok(()),
            }
        }
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(usize, String, u32)>>);

    impl Divert for Recorder {
        fn divert(&self, rows: &[Output], why: &Diversion<'_>) -> Result<(), SinkError> {
            self.0
                .lock()
                .expect("lock")
                .push((rows.len(), why.reason.clone(), why.attempts));
            Ok(())
        }
    }

    fn rows() -> Vec<Output> {
        vec![Output::Recent(RecentRow {
            app_id: "a".into(),
            user_id: "u".into(),
            events: vec![],
        })]
    }

    /// A guarded flaky store, with handles to its state, call count, switches and diversions.
    type Rig = (
        GuardedSink,
        Arc<Mutex<Option<bool>>>,
        Arc<AtomicU32>,
        Arc<Switches>,
        Arc<Recorder>,
    );

    fn guarded(state: Option<bool>) -> Rig {
        let down = Arc::new(Mutex::new(state));
        let calls = Arc::new(AtomicU32::new(0));
        let switches = Arc::new(Switches::new(["mysql"]));
        let rec = Arc::new(Recorder::default());
        let g = GuardedSink::new(
            Box::new(Flaky {
                down: Arc::clone(&down),
                calls: Arc::clone(&calls),
            }),
            Arc::clone(&switches),
            BreakerConfig {
                failures_to_open: 2,
                open_for: Duration::from_millis(50),
            },
            RetryPolicy {
                attempts: 3,
                base: Duration::from_millis(1),
                max: Duration::from_millis(2),
            },
            Arc::clone(&rec) as Arc<dyn Divert>,
            7,
        );
        (g, down, calls, switches, rec)
    }

    #[test]
    fn a_degraded_switch_diverts_without_touching_the_store() {
        let (mut g, _, calls, switches, rec) = guarded(None);
        switches.set("mysql", Mode::Degraded);
        g.write(&rows()).expect("diverted");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(
            rec.0.lock().expect("lock").as_slice(),
            &[(1, "switch degraded".to_owned(), 0)]
        );
        switches.set("mysql", Mode::Auto);
        g.write(&rows()).expect("written");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(g.last_outcome(), Some(Outcome::Written));
    }

    #[test]
    fn retries_transient_errors_then_diverts_and_opens_the_breaker() {
        let (mut g, down, calls, _, rec) = guarded(Some(true));
        g.write(&rows()).expect("diverted");
        assert_eq!(calls.load(Ordering::SeqCst), 3, "bounded retries");
        g.write(&rows()).expect("diverted");
        assert_eq!(g.breaker_state(), BreakerState::Open);
        g.write(&rows()).expect("diverted while open");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            6,
            "an open breaker does not touch the store"
        );
        assert_eq!(
            rec.0.lock().expect("lock").last().map(|r| r.1.clone()),
            Some("circuit breaker open".into())
        );
        // The store comes back; after the open period a probe closes the breaker.
        *down.lock().expect("lock") = None;
        std::thread::sleep(Duration::from_millis(60));
        g.write(&rows()).expect("probe written");
        assert_eq!(g.breaker_state(), BreakerState::Closed);
        assert_eq!(g.last_outcome(), Some(Outcome::Written));
    }

    #[test]
    fn a_permanent_error_is_diverted_without_retries_and_leaves_the_breaker_closed() {
        let (mut g, _, calls, _, rec) = guarded(Some(false));
        for _ in 0..3 {
            g.write(&rows()).expect("diverted");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3, "one attempt per batch");
        assert_eq!(rec.0.lock().expect("lock")[0].2, 1);
        assert_eq!(
            g.breaker_state(),
            BreakerState::Closed,
            "a store that answers is healthy, whatever it refuses"
        );
    }
}
