//! The worker's helper threads: progress logs, the consumer lag and retry
//! backlog measured into the metrics, the journal resender, and the
//! control-topic follower. They only read state or talk to Kafka; nothing
//! here touches the dataflow. All of them stop when [`Helpers`] is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use footprint_connectors::admin::{Admin, Lag};
use footprint_connectors::events::{ConsumerLagMeasured, RetryBacklogMeasured};
use footprint_connectors::positions::true_end;
use footprint_connectors::replay::REPLAY_GROUP;
use footprint_connectors::retry::RetryTopic;
use footprint_dataflows::events::DataflowMetrics;
use footprint_telemetry::InternalEvent;

use crate::health::Health;
use footprint_sinks::marks::Holds;

/// The helper threads of one run; dropping this stops and joins them.
pub(super) struct Helpers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Helpers {
    /// No helpers yet; `stop` is what they will watch.
    pub(super) fn new() -> Self {
        Helpers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        }
    }

    /// Follows the control topic into `switches` (read to its end first).
    pub(super) fn follow_switches(
        &mut self,
        cfg: &crate::config::Config,
        admin: &Admin,
        switches: &Arc<footprint_sinks::util::switch::Switches>,
    ) -> anyhow::Result<()> {
        let follower = crate::stores::follow_switches(cfg, admin, switches, &self.stop)?;
        self.threads.push(follower);
        Ok(())
    }

    /// Starts `f` on a thread of its own, with the stop flag.
    pub(super) fn spawn(&mut self, f: impl FnOnce(&AtomicBool) + Send + 'static) {
        let stop = Arc::clone(&self.stop);
        self.threads.push(std::thread::spawn(move || f(&stop)));
    }

    /// Stops and joins every helper.
    pub(super) fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sleeps in short steps until `every` has passed; false once `stop` is set.
pub(super) fn wait(stop: &AtomicBool, every: Duration) -> bool {
    let until = Instant::now() + every;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    !stop.load(Ordering::SeqCst)
}

/// Logs events read, rate, bad, late and watermark lag every `every`; for
/// a backfill of `range_total` messages, also how far it is.
pub(super) fn report_progress(
    metrics: &DataflowMetrics,
    every: Duration,
    stop: &AtomicBool,
    range_total: Option<u64>,
) {
    let mut last = Instant::now();
    let mut last_in = 0;
    while wait(stop, every) {
        let n = metrics.events_in();
        let rate = (n - last_in) as f64 / last.elapsed().as_secs_f64();
        match range_total {
            Some(total) => tracing::info!(
                read = n,
                of = total,
                percent = (n as f64 * 100.0 / total.max(1) as f64).round(),
                per_sec = rate.round(),
                past_range = metrics.backfill_tail(),
                bad = metrics.bad_total(),
                late = metrics.late_total(),
                "backfill progress"
            ),
            None => tracing::info!(
                events_in = n,
                per_sec = rate.round(),
                bad = metrics.bad_total(),
                late = metrics.late_total(),
                watermark_lag_ms = metrics.watermark_delay_ms(),
                "progress"
            ),
        }
        last = Instant::now();
        last_in = n;
    }
}

/// What the lag reporter watches.
pub(super) struct LagWatch {
    pub admin: Arc<Admin>,
    pub group: String,
    /// Every source partition, and whether this process reads it.
    pub sources: Vec<(String, i32, bool)>,
    /// The retry topic's brokers' client, its name and its producer, when
    /// stores are written.
    pub retry: Option<(Arc<Admin>, String, Arc<RetryTopic>)>,
    pub health: Arc<Health>,
    /// Released once the retry topic is seen drained.
    pub holds: Arc<footprint_sinks::marks::Holds>,
    pub dataflow: Arc<DataflowMetrics>,
}

/// Measures, every few seconds (often enough for the health timeouts), the
/// consumer lag of the source partitions (end offset minus committed
/// offset) and the retry backlog (records the replay job has not committed
/// past) into the connectors' metrics, and tells the process's health
/// whether the broker answered and how far this process's sources are from
/// the end of their partitions.
pub(super) fn report_lag(w: &LagWatch, stop: &AtomicBool) {
    let pairs: Vec<(String, i32)> = w.sources.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
    loop {
        match w.admin.lag(&w.group, &pairs) {
            Ok(lags) => {
                let measured: Vec<(String, i32, u64)> = pairs
                    .iter()
                    .zip(&lags)
                    .map(|((t, p), l)| (t.clone(), *p, l.behind))
                    .collect();
                ConsumerLagMeasured { lags: &measured }.emit(&w.admin.settings().metrics);
                let end: i64 = w
                    .sources
                    .iter()
                    .zip(&lags)
                    .filter(|((_, _, mine), _)| *mine)
                    .map(|(_, l)| l.end)
                    .sum();
                w.health.answered(Some(end), w.dataflow.events_in());
            }
            Err(e) => w.health.failed(&e.to_string()),
        }
        match &w.retry {
            Some((retry_admin, topic, journal)) => {
                measure_retry(retry_admin, topic, journal, &w.holds);
            }
            None => w.holds.retry_drained(),
        }
        if !wait(stop, w.health.check_every()) {
            return;
        }
    }
}

/// Measures the retry backlog (records the replay job's group has not
/// committed past) and the group's position into the metrics, and releases
/// `holds` once the retry topic is drained and `journal` empty.
pub(super) fn measure_retry(admin: &Admin, topic: &str, journal: &RetryTopic, holds: &Holds) {
    let Ok(Some(parts)) = admin.partitions(topic) else {
        return;
    };
    let pairs: Vec<(String, i32)> = parts.iter().map(|p| (topic.to_owned(), *p)).collect();
    match admin.lag(REPLAY_GROUP, &pairs) {
        Ok(lags) => {
            let records: u64 = lags.iter().map(|l| l.behind).sum();
            // Only what the group committed: retention deleting old
            // records moves the start of the topic, not this.
            let position: u64 = lags
                .iter()
                .filter_map(|l| l.committed)
                .map(|c| u64::try_from(c).unwrap_or(0))
                .sum();
            RetryBacklogMeasured {
                records,
                position,
                at_ms: footprint_telemetry::now_ms(),
            }
            .emit(&admin.settings().metrics);
            if records == 0
                && journal.journal_len() == 0
                && holds.starting()
                && drained(admin, &pairs, &lags)
            {
                holds.retry_drained();
            }
        }
        Err(e) => tracing::debug!(error = %e, "retry backlog not measured"),
    }
}

/// Whether the replay job's group has committed past the true end of
/// every retry-topic partition: the end the broker reports may stop short
/// of its last record batch (tansu 0.6), so a lag of 0 is checked against
/// the log itself.
fn drained(admin: &Admin, pairs: &[(String, i32)], lags: &[Lag]) -> bool {
    pairs.iter().zip(lags).all(|((topic, p), lag)| {
        let at = lag.committed.unwrap_or(0);
        // An empty partition has nothing to wait for; any other is read
        // to its true end.
        lag.end <= 0
            || (at >= lag.end
                && true_end(admin.settings(), topic, *p, lag.end).is_ok_and(|end| at >= end))
    })
}

/// Asks the broker for `topic`'s partitions every few seconds, and tells
/// `health` whether it answered: for a process that reads no partition
/// (`footprint admin`).
pub(super) fn watch_broker(admin: &Admin, topic: &str, health: &Health, stop: &AtomicBool) {
    loop {
        match admin.partitions(topic) {
            Ok(_) => health.answered(None, 0),
            Err(e) => health.failed(&e.to_string()),
        }
        if !wait(stop, health.check_every()) {
            return;
        }
    }
}

/// Every half second, resends what the journal holds.
pub(super) fn resend_journal(retry: &RetryTopic, stop: &AtomicBool) {
    while wait(stop, Duration::from_millis(500)) {
        if retry.journal_len() > 0
            && let Err(e) = retry.resend_journal()
        {
            tracing::debug!(error = %e, "journaled retry records are still waiting for the retry topic");
        }
    }
}

/// Before a clean exit, keeps resending the journal for a while, so that
/// the exit leaves nothing behind whenever Kafka takes the records (a
/// just-created retry topic can take a few seconds to accept them).
pub(super) fn drain_journal(retry: &RetryTopic, journal: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while retry.journal_len() > 0 && Instant::now() < deadline {
        match retry.resend_journal() {
            Ok(n) => tracing::info!(records = n, "resent journaled retry records before exiting"),
            Err(e) => {
                tracing::warn!(error = %e, "journaled retry records not resent yet; retrying before exit");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    if retry.journal_len() > 0 {
        tracing::error!(
            records = retry.journal_len(),
            journal,
            "retry records are still in the journal; the next run resends them"
        );
    }
}
