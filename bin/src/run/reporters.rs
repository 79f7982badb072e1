//! The worker's helper threads: progress logs, and the consumer lag and
//! retry backlog measured into the metrics. They only read state; nothing
//! here touches the dataflow.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use footprint_connectors::admin;
use footprint_dataflows::metrics::Metrics;

/// Logs events read, rate, bad, late and watermark lag every `every`, until
/// `done`; for a backfill of `range_total` messages, also how far it is.
pub(super) fn report_progress(
    metrics: &Metrics,
    every: Duration,
    done: &AtomicBool,
    range_total: Option<u64>,
) {
    let mut last = Instant::now();
    let mut last_in = 0;
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        if last.elapsed() < every {
            continue;
        }
        let n = metrics.events_in.load(Ordering::Relaxed);
        let rate = (n - last_in) as f64 / last.elapsed().as_secs_f64();
        let wm = metrics.watermark.load(Ordering::Relaxed) as i64;
        let lag = metrics.max_event_ts.load(Ordering::Relaxed) - wm;
        match range_total {
            Some(total) => tracing::info!(
                read = n,
                of = total,
                percent = (n as f64 * 100.0 / total.max(1) as f64).round(),
                per_sec = rate.round(),
                past_range = metrics.events_tail.load(Ordering::Relaxed),
                bad = metrics.bad_total(),
                late = metrics.late_total(),
                "backfill progress"
            ),
            None => tracing::info!(
                events_in = n,
                per_sec = rate.round(),
                bad = metrics.bad_total(),
                late = metrics.late_total(),
                watermark_lag_ms = lag,
                "progress"
            ),
        }
        last = Instant::now();
        last_in = n;
    }
}

/// Every 5 s, measures the consumer lag of the source partitions (end offset
/// minus committed offset) and the retry backlog (records the replay job has
/// not committed past) into `metrics`, until `done`.
pub(super) fn report_lag(
    settings: &footprint_connectors::client::KafkaSettings,
    group: &str,
    sources: &[(String, i32)],
    retry: Option<&(footprint_connectors::client::KafkaSettings, String)>,
    metrics: &Metrics,
    done: &AtomicBool,
) {
    let lag_of = |settings, group: &str, pairs: &[(String, i32)]| -> Option<Vec<u64>> {
        let measured = (|| {
            let committed = admin::committed(settings, group, pairs)?;
            let mut out = Vec::with_capacity(pairs.len());
            for ((topic, p), c) in pairs.iter().zip(committed) {
                let (low, high) = admin::watermarks(settings, topic, *p)?;
                let from = c.map_or(low, |c| c.offset).max(low);
                out.push(high.saturating_sub(from).max(0) as u64);
            }
            Ok::<_, footprint_connectors::ConnectorError>(out)
        })();
        measured
            .inspect_err(|e| tracing::debug!(group, error = %e, "lag not measured"))
            .ok()
    };
    let mut next = Instant::now();
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + Duration::from_secs(5);
        if let Some(lags) = lag_of(settings, group, sources)
            && let Ok(mut m) = metrics.consumer_lag.lock()
        {
            *m = sources
                .iter()
                .zip(lags)
                .map(|((t, p), l)| (t.clone(), *p, l))
                .collect();
        }
        if let Some((rs, topic)) = retry
            && let Ok(Some(parts)) = admin::partitions(rs, topic)
        {
            let pairs: Vec<(String, i32)> = parts.iter().map(|p| (topic.clone(), *p)).collect();
            let group = footprint_connectors::replay::REPLAY_GROUP;
            if let Some(lags) = lag_of(rs, group, &pairs) {
                let total: u64 = lags.iter().sum();
                metrics
                    .retry_backlog
                    .store(i64::try_from(total).unwrap_or(i64::MAX), Ordering::Relaxed);
            }
        }
    }
}
