//! Renders the process's counters as Prometheus text (exposition format 0.0.4).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use footprint_connectors::positions::SkipReason;
use footprint_dataflows::event::BadReason;
use footprint_dataflows::metrics::{self, Metrics};
use footprint_sinks::util::switch::{Mode, Switches};

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn per_sink(
    out: &mut String,
    name: &str,
    help: &str,
    counter: &std::sync::Mutex<Vec<(String, u64)>>,
) {
    family(out, name, "counter", help);
    if let Ok(v) = counter.lock() {
        for (sink, n) in v.iter() {
            let _ = writeln!(out, "{name}{{sink=\"{}\"}} {n}", escape(sink));
        }
    }
}

fn summary(
    out: &mut String,
    name: &str,
    help: &str,
    latencies: &metrics::Latencies,
    to_seconds: f64,
) {
    family(out, name, "summary", help);
    for (sink, q) in latencies.snapshot() {
        let sink = escape(&sink);
        for (quantile, v) in [("0.5", q.p50), ("0.99", q.p99), ("0.999", q.p999)] {
            let _ = writeln!(
                out,
                "{name}{{sink=\"{sink}\",quantile=\"{quantile}\"}} {}",
                v as f64 * to_seconds
            );
        }
        let _ = writeln!(out, "{name}_sum{{sink=\"{sink}\"}} {}", q.sum * to_seconds);
        let _ = writeln!(out, "{name}_count{{sink=\"{sink}\"}} {}", q.count);
    }
}

/// One unlabelled sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// One sample per label value.
fn labelled<'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) {
    family(out, name, kind, help);
    for (l, v) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {v}", escape(l));
    }
}

/// The metrics page.
pub fn render(m: &Metrics, switches: &Switches, journal_records: usize) -> String {
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::new();
    single(
        &mut out,
        metrics::EVENTS_IN,
        "counter",
        "Messages read from the source topics.",
        load(&m.events_in),
    );
    let bad = BadReason::ALL
        .iter()
        .map(|r| (r.as_str(), load(&m.events_bad[r.index()])));
    labelled(
        &mut out,
        metrics::EVENTS_BAD,
        "counter",
        "Messages rejected as bad input, by reason.",
        "reason",
        bad,
    );
    let by_aggregate = |counters: &'_ [std::sync::atomic::AtomicU64]| -> Vec<(String, u64)> {
        m.aggregates
            .iter()
            .cloned()
            .zip(counters.iter().map(load))
            .collect()
    };
    let late = by_aggregate(&m.events_late);
    let help = "Events that missed at least one final window, by aggregate.";
    labelled(
        &mut out,
        metrics::EVENTS_LATE,
        "counter",
        help,
        "aggregate",
        late.iter().map(|(a, v)| (a.as_str(), *v)),
    );
    let emitted = by_aggregate(&m.windows_emitted);
    let help = "Final window rows emitted, by aggregate.";
    labelled(
        &mut out,
        metrics::WINDOWS_EMITTED,
        "counter",
        help,
        "aggregate",
        emitted.iter().map(|(a, v)| (a.as_str(), *v)),
    );
    single(
        &mut out,
        metrics::WINDOW_UPDATES,
        "counter",
        "Early window rows emitted.",
        load(&m.window_updates),
    );
    single(
        &mut out,
        metrics::RECENT_UPDATES,
        "counter",
        "Recent-activity rows emitted.",
        load(&m.recent_updates),
    );
    let help = "Dead-letter or late records Kafka did not accept.";
    single(
        &mut out,
        metrics::SIDE_OUTPUT_FAILURES,
        "counter",
        help,
        load(&m.side_output_failures),
    );
    per_sink(
        &mut out,
        metrics::SINK_WRITES,
        "Rows written to each store.",
        &m.sink_writes,
    );
    per_sink(
        &mut out,
        metrics::SINK_FAILURES,
        "Rows whose write failed and could not be diverted.",
        &m.sink_failures,
    );
    per_sink(
        &mut out,
        metrics::SINK_DIVERTED,
        "Rows diverted to the retry topic or journal.",
        &m.sink_diverted,
    );
    per_sink(
        &mut out,
        metrics::SINK_FOLDED,
        "Rows replaced by a newer row of the same identity while waiting for a busy store.",
        &m.sink_folded,
    );
    per_sink(
        &mut out,
        metrics::SINK_BREAKER_OPENED,
        "Times a sink's circuit breaker opened.",
        &m.sink_breaker_opened,
    );
    let modes: Vec<(String, u64)> = switches
        .all()
        .into_iter()
        .map(|(s, mode)| (s, u64::from(mode == Mode::Degraded)))
        .collect();
    let help = "1 when the sink's switch is degraded.";
    labelled(
        &mut out,
        metrics::SINK_DEGRADED,
        "gauge",
        help,
        "sink",
        modes.iter().map(|(s, v)| (s.as_str(), *v)),
    );
    let help = "Retry records waiting in the local journal.";
    single(
        &mut out,
        metrics::JOURNAL_RECORDS,
        "gauge",
        help,
        journal_records,
    );
    let states = m
        .sink_breaker_state
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    labelled(
        &mut out,
        metrics::SINK_BREAKER_STATE,
        "gauge",
        "Circuit breaker per store sink: 0 closed, 1 half-open, 2 open.",
        "sink",
        states.iter().map(|(s, v)| (s.as_str(), *v)),
    );
    family(
        &mut out,
        metrics::CONSUMER_LAG,
        "gauge",
        "Per source partition, its end offset minus the committed offset.",
    );
    if let Ok(lags) = m.consumer_lag.lock() {
        for (topic, partition, lag) in lags.iter() {
            let _ = writeln!(
                out,
                "{}{{topic=\"{}\",partition=\"{partition}\"}} {lag}",
                metrics::CONSUMER_LAG,
                escape(topic)
            );
        }
    }
    single(
        &mut out,
        metrics::SINK_ROWS_WAITING,
        "gauge",
        "Result rows waiting for the store writers (the sources pause at the limit).",
        m.sink_rows_waiting.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        metrics::SOURCES_HELD,
        "gauge",
        "Source operators held back by their stores, reading nothing.",
        m.held.sources_held(),
    );
    single(
        &mut out,
        metrics::SOURCES_HELD_SECONDS,
        "counter",
        "Seconds during which the stores held at least one source back; early-update intervals do not run meanwhile.",
        format_args!(
            "{:.3}",
            m.held.held_for(std::time::Instant::now()).as_secs_f64()
        ),
    );
    single(
        &mut out,
        metrics::WINDOWS_OPEN,
        "gauge",
        "Windows open in the aggregate operators.",
        m.windows_open.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        metrics::PARTITIONS_AHEAD,
        "gauge",
        "Source partitions left unread because they ran more than watermark.max_drift ahead of the slowest.",
        m.partitions_ahead.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        metrics::READ_AHEAD_MESSAGES,
        "gauge",
        "Messages the sources' Kafka clients fetched and the sources have not read yet.",
        m.read_ahead_messages.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        metrics::READ_AHEAD_BYTES,
        "gauge",
        "Payload bytes of the messages read ahead.",
        m.read_ahead_bytes.load(Ordering::Relaxed),
    );
    let backlog = m.retry_backlog.load(Ordering::Relaxed);
    if backlog >= 0 {
        single(
            &mut out,
            metrics::RETRY_BACKLOG,
            "gauge",
            "Retry-topic records the replay job has not committed past.",
            backlog,
        );
    }
    let help = "Time to write one batch to a store, retries included.";
    summary(
        &mut out,
        metrics::SINK_WRITE_LATENCY,
        help,
        &m.sink_write_us,
        1e-6,
    );
    let help = "From a message's broker timestamp to the store write that shows it.";
    summary(
        &mut out,
        metrics::END_TO_END_LATENCY,
        help,
        &m.end_to_end_ms,
        1e-3,
    );
    let help = "From a window's end (event time read as wall-clock time) to the store write of its final row.";
    summary(
        &mut out,
        metrics::FINAL_DELAY,
        help,
        &m.final_delay_ms,
        1e-3,
    );
    let wm = m.watermark.load(Ordering::Relaxed);
    single(
        &mut out,
        metrics::WATERMARK,
        "gauge",
        "The global watermark, ms since the epoch.",
        wm,
    );
    let delay = m.watermark_delay_ms();
    let help = "How far the watermark is behind the newest event read, ms.";
    single(&mut out, metrics::WATERMARK_DELAY, "gauge", help, delay);
    let skipped = m.skipped.lock().map(|v| v.clone()).unwrap_or_default();
    let by_reason = |f: &dyn Fn(&metrics::SkippedRange) -> u64| {
        SkipReason::ALL.map(|r| {
            let n = skipped
                .iter()
                .filter(|s| s.reason == r.as_str())
                .map(f)
                .sum::<u64>();
            (r.as_str(), n)
        })
    };
    labelled(
        &mut out,
        metrics::OFFSET_RESETS,
        "counter",
        "Source partitions that started somewhere else than their checkpoint, by reason.",
        "reason",
        by_reason(&|_| 1),
    );
    labelled(
        &mut out,
        metrics::OFFSETS_SKIPPED,
        "counter",
        "Source offsets not read because of those starts, by reason.",
        "reason",
        by_reason(&|s| (s.to - s.from).max(0) as u64),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alignment_and_back_pressure_gauges_are_served() {
        let m = Metrics::new(vec!["a".into()]);
        m.windows_open.store(7, Ordering::Relaxed);
        m.partitions_ahead.store(2, Ordering::Relaxed);
        m.read_ahead_bytes.store(4096, Ordering::Relaxed);
        m.held.hold(std::time::Instant::now());
        let text = render(&m, &Switches::new(["redis"]), 0);
        for line in [
            "footprint_windows_open 7",
            "footprint_partitions_ahead 2",
            "footprint_source_read_ahead_bytes 4096",
            "footprint_sources_held 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with("footprint_sources_held_seconds_total ")),
            "no held seconds in:\n{text}"
        );
    }
}
