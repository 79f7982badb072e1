//! [`Health`]: whether the broker a process depends on still serves it.
//!
//! The lag reporter asks the broker for the partitions' end offsets and the
//! group's commits every few seconds. From that, a process knows two things
//! an operator needs to see at once:
//!
//! - **unreachable**: no request has succeeded for `health.broker_timeout`,
//!   whether the broker is down or accepts connections and refuses every
//!   request;
//! - **stalled**: the process's source partitions hold messages its sources
//!   have not read (their end offsets are past where the sources stand), yet
//!   the sources have read nothing for `health.stall_timeout`.
//!
//! Either one turns `/health` to 503 and shows in `/status` and the demo's
//! view, naming the broker. The change is logged at ERROR once when it
//! begins and at INFO once when it ends, however long it lasts.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// How a process's broker serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerState {
    /// Requests succeed and the sources read what arrives.
    Ok,
    /// No request has succeeded for the broker timeout.
    Unreachable,
    /// Messages arrive but the sources read nothing.
    Stalled,
}

/// What `/health` and `/status` show about the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerHealth {
    /// The brokers, as configured.
    pub brokers: String,
    /// How they serve this process.
    pub state: BrokerState,
    /// When the trouble began (the last request that succeeded, or the
    /// sources' last progress), ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    /// What is wrong, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// When a process calls its broker unhealthy.
#[derive(Debug, Clone, Copy)]
pub struct HealthSettings {
    /// No successful request for this long: unreachable.
    pub broker_timeout: Duration,
    /// New messages but nothing read for this long: stalled.
    pub stall_timeout: Duration,
}

#[derive(Debug)]
struct State {
    last_success: Instant,
    last_error: Option<String>,
    /// Where this process's sources started, summed over their partitions.
    start: i64,
    /// Messages read when the sources last made progress, and when.
    read: u64,
    progress_at: Instant,
    /// Messages in this process's partitions not read yet, as last measured.
    waiting: i64,
    /// Whether `waiting` was measured.
    measured: bool,
    /// What was last reported, and when the trouble it reports began (the
    /// last success, or the last progress; wall clock).
    reported: BrokerState,
    since: Option<SystemTime>,
}

/// The broker health of one process.
#[derive(Debug)]
pub struct Health {
    brokers: String,
    settings: HealthSettings,
    state: Mutex<State>,
}

impl Health {
    /// Health of `brokers`, healthy until told otherwise.
    pub fn new(brokers: &str, settings: HealthSettings) -> Self {
        let now = Instant::now();
        Health {
            brokers: brokers.to_owned(),
            settings,
            state: Mutex::new(State {
                last_success: now,
                last_error: None,
                start: 0,
                read: 0,
                progress_at: now,
                waiting: 0,
                measured: false,
                reported: BrokerState::Ok,
                since: None,
            }),
        }
    }

    /// How often the reporters should ask the broker: often enough to tell
    /// within the timeouts.
    pub fn check_every(&self) -> Duration {
        (self
            .settings
            .broker_timeout
            .min(self.settings.stall_timeout)
            / 3)
        .clamp(Duration::from_millis(200), Duration::from_secs(5))
    }

    /// This process's sources start at offsets that sum to `start`.
    pub fn started_at(&self, start: i64) {
        self.lock().start = start;
    }

    /// A request to the broker succeeded: the end offsets of this process's
    /// source partitions sum to `end` (when measured), and the sources have
    /// read `read` messages.
    pub fn answered(&self, end: Option<i64>, read: u64) {
        let now = Instant::now();
        let mut s = self.lock();
        s.last_success = now;
        s.last_error = None;
        if let Some(e) = end {
            s.waiting = e - s.start - i64::try_from(read).unwrap_or(i64::MAX);
            s.measured = true;
        }
        if read > s.read || s.waiting <= 0 {
            // Progress, or nothing to read: not stalled.
            s.read = read;
            s.progress_at = now;
        }
        drop(s);
        self.update(now);
    }

    /// Messages in this process's source partitions that its sources had
    /// not read when last measured; `None` before the first measurement.
    pub fn behind(&self) -> Option<i64> {
        let s = self.lock();
        (s.measured).then_some(s.waiting)
    }

    /// A request to the broker failed.
    pub fn failed(&self, error: &str) {
        self.lock().last_error = Some(error.to_owned());
        self.update(Instant::now());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state at `now`, with what is wrong and how long it has been so.
    fn assess(&self, s: &State, now: Instant) -> (BrokerState, Option<String>, Duration) {
        let silent = now.saturating_duration_since(s.last_success);
        if silent >= self.settings.broker_timeout {
            let why = s
                .last_error
                .as_deref()
                .unwrap_or("requests do not complete");
            return (
                BrokerState::Unreachable,
                Some(format!(
                    "no request to the broker has succeeded for {} s: {why}",
                    silent.as_secs()
                )),
                silent,
            );
        }
        let idle = now.saturating_duration_since(s.progress_at);
        if s.waiting > 0 && idle >= self.settings.stall_timeout {
            return (
                BrokerState::Stalled,
                Some(format!(
                    "{} messages wait, but no partition has advanced for {} s",
                    s.waiting,
                    idle.as_secs()
                )),
                idle,
            );
        }
        (BrokerState::Ok, None, Duration::ZERO)
    }

    /// Logs a change of state, once.
    fn update(&self, now: Instant) {
        let mut s = self.lock();
        let (state, detail, lasted) = self.assess(&s, now);
        if state == s.reported {
            return;
        }
        let was = s.reported;
        s.reported = state;
        match state {
            BrokerState::Ok => {
                let lasted = s
                    .since
                    .take()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .map_or(0, |d| d.as_secs());
                tracing::info!(brokers = %self.brokers, was = ?was, seconds = lasted, "the broker serves this process again");
            }
            _ => {
                s.since.get_or_insert_with(|| {
                    SystemTime::now().checked_sub(lasted).unwrap_or(UNIX_EPOCH)
                });
                tracing::error!(brokers = %self.brokers, state = ?state, detail = detail.as_deref().unwrap_or(""), "the broker does not serve this process: the pipeline makes no progress until it does");
            }
        }
    }

    /// What `/health` and `/status` show.
    pub fn broker(&self) -> BrokerHealth {
        let now = Instant::now();
        self.update(now);
        let s = self.lock();
        let (state, detail, _) = self.assess(&s, now);
        BrokerHealth {
            brokers: self.brokers.clone(),
            state,
            since_ms: s
                .since
                .filter(|_| state != BrokerState::Ok)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(broker_ms: u64, stall_ms: u64) -> Health {
        Health::new(
            "127.0.0.1:9092",
            HealthSettings {
                broker_timeout: Duration::from_millis(broker_ms),
                stall_timeout: Duration::from_millis(stall_ms),
            },
        )
    }

    #[test]
    fn a_broker_that_answers_nothing_for_the_timeout_is_unreachable_until_it_answers() {
        let h = health(50, 10_000);
        h.answered(Some(10), 10);
        assert_eq!(h.broker().state, BrokerState::Ok);
        h.failed("Broker: Unknown server error");
        std::thread::sleep(Duration::from_millis(60));
        let b = h.broker();
        assert_eq!(b.state, BrokerState::Unreachable);
        assert!(b.detail.is_some_and(|d| d.contains("Unknown server error")));
        assert!(b.since_ms.is_some());
        h.answered(Some(10), 10);
        assert_eq!(h.broker().state, BrokerState::Ok);
    }

    #[test]
    fn messages_that_nobody_reads_are_a_stall_but_a_quiet_topic_is_not() {
        let h = health(10_000, 50);
        h.started_at(1_000);
        h.answered(Some(1_100), 100);
        std::thread::sleep(Duration::from_millis(60));
        h.answered(Some(1_100), 100);
        assert_eq!(h.broker().state, BrokerState::Ok, "nothing to read");
        h.answered(Some(1_150), 100);
        std::thread::sleep(Duration::from_millis(60));
        h.answered(Some(1_150), 100);
        let b = h.broker();
        assert_eq!(b.state, BrokerState::Stalled);
        assert!(b.detail.is_some_and(|d| d.contains("50 messages wait")));
        h.answered(Some(1_150), 150);
        assert_eq!(h.broker().state, BrokerState::Ok, "the sources read again");
    }
}
