//! Renders the process's counters as Prometheus text (exposition format 0.0.4).

use std::fmt::Write;
use std::sync::atomic::Ordering;

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

/// The metrics page.
pub fn render(m: &Metrics, switches: &Switches, journal_records: usize) -> String {
    let mut out = String::new();
    family(
        &mut out,
        metrics::EVENTS_IN,
        "counter",
        "Messages read from the source topics.",
    );
    let _ = writeln!(
        out,
        "{} {}",
        metrics::EVENTS_IN,
        m.events_in.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        metrics::EVENTS_BAD,
        "counter",
        "Messages rejected as bad input, by reason.",
    );
    for r in BadReason::ALL {
        let _ = writeln!(
            out,
            "{}{{reason=\"{}\"}} {}",
            metrics::EVENTS_BAD,
            r.as_str(),
            m.events_bad[r.index()].load(Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        metrics::EVENTS_LATE,
        "counter",
        "Events that missed at least one final window, by aggregate.",
    );
    for (name, c) in m.aggregates.iter().zip(&m.events_late) {
        let _ = writeln!(
            out,
            "{}{{aggregate=\"{}\"}} {}",
            metrics::EVENTS_LATE,
            escape(name),
            c.load(Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        metrics::WINDOWS_EMITTED,
        "counter",
        "Final window rows emitted, by aggregate.",
    );
    for (name, c) in m.aggregates.iter().zip(&m.windows_emitted) {
        let _ = writeln!(
            out,
            "{}{{aggregate=\"{}\"}} {}",
            metrics::WINDOWS_EMITTED,
            escape(name),
            c.load(Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        metrics::WINDOW_UPDATES,
        "counter",
        "Early window rows emitted.",
    );
    let _ = writeln!(
        out,
        "{} {}",
        metrics::WINDOW_UPDATES,
        m.window_updates.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        metrics::RECENT_UPDATES,
        "counter",
        "Recent-activity rows emitted.",
    );
    let _ = writeln!(
        out,
        "{} {}",
        metrics::RECENT_UPDATES,
        m.recent_updates.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        metrics::SIDE_OUTPUT_FAILURES,
        "counter",
        "Dead-letter or late records Kafka did not accept.",
    );
    let _ = writeln!(
        out,
        "{} {}",
        metrics::SIDE_OUTPUT_FAILURES,
        m.side_output_failures.load(Ordering::Relaxed)
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
        metrics::SINK_BREAKER_OPENED,
        "Times a sink's circuit breaker opened.",
        &m.sink_breaker_opened,
    );
    family(
        &mut out,
        metrics::SINK_DEGRADED,
        "gauge",
        "1 when the sink's switch is degraded.",
    );
    for (sink, mode) in switches.all() {
        let _ = writeln!(
            out,
            "{}{{sink=\"{}\"}} {}",
            metrics::SINK_DEGRADED,
            escape(&sink),
            u8::from(mode == Mode::Degraded)
        );
    }
    family(
        &mut out,
        metrics::JOURNAL_RECORDS,
        "gauge",
        "Retry records waiting in the local journal.",
    );
    let _ = writeln!(out, "{} {journal_records}", metrics::JOURNAL_RECORDS);
    summary(
        &mut out,
        metrics::SINK_WRITE_LATENCY,
        "Time to write one batch to a store, retries included.",
        &m.sink_write_us,
        1e-6,
    );
    summary(
        &mut out,
        metrics::END_TO_END_LATENCY,
        "From a message's broker timestamp to the store write that shows it.",
        &m.end_to_end_ms,
        1e-3,
    );
    family(
        &mut out,
        metrics::WATERMARK,
        "gauge",
        "The global watermark, ms since the epoch.",
    );
    let wm = m.watermark.load(Ordering::Relaxed);
    let _ = writeln!(out, "{} {wm}", metrics::WATERMARK);
    family(
        &mut out,
        metrics::WATERMARK_DELAY,
        "gauge",
        "How far the watermark is behind the newest event read, ms.",
    );
    let _ = writeln!(
        out,
        "{} {}",
        metrics::WATERMARK_DELAY,
        (m.max_event_ts.load(Ordering::Relaxed) - wm as i64).max(0)
    );
    out
}
