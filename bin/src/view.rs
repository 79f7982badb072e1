//! The demo's live terminal view: top windows and counters.

use std::collections::HashMap;
use std::fmt::Write;

use footprint_dataflows::events::DataflowMetrics;

use crate::health::{BrokerHealth, BrokerState};
use footprint_dataflows::reference::WindowId;
use footprint_dataflows::{MeasureValue, Output, WindowRow};

/// Latest row per window identity, fed from a memory sink.
#[derive(Default)]
pub struct LiveTable {
    rows: HashMap<WindowId, WindowRow>,
}

impl LiveTable {
    /// Applies new rows, keeping the highest version per identity.
    pub fn apply(&mut self, rows: Vec<Output>) {
        for r in rows {
            match r {
                Output::Window(w) => {
                    let id = (w.aggregate.clone(), w.key.clone(), w.window_start);
                    if self
                        .rows
                        .get(&id)
                        .is_none_or(|old| old.version <= w.version)
                    {
                        self.rows.insert(id, w);
                    }
                }
                Output::Recent(_) => {}
            }
        }
        // Keep the view small: only the two newest windows of each aggregate.
        let mut newest: HashMap<std::sync::Arc<str>, Vec<i64>> = HashMap::new();
        for (agg, _, start) in self.rows.keys() {
            newest.entry(agg.clone()).or_default().push(*start);
        }
        for starts in newest.values_mut() {
            starts.sort_unstable();
            starts.dedup();
            let keep = starts.len().saturating_sub(2);
            starts.drain(..keep);
        }
        self.rows
            .retain(|(agg, _, start), _| newest.get(agg).is_some_and(|s| s.contains(start)));
    }

    /// Renders the screen.
    pub fn render(
        &self,
        metrics: &DataflowMetrics,
        broker: &BrokerHealth,
        header: &str,
        footer: &str,
    ) -> String {
        let mut s = String::new();
        let wm = metrics.watermark_ms() as i64;
        let max_ts = metrics.max_event_ms();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let _ = writeln!(s, "{header}");
        if broker.state != BrokerState::Ok {
            let _ = writeln!(
                s,
                "!! BROKER {} {}: {}",
                broker.brokers,
                match broker.state {
                    BrokerState::Stalled => "STALLED",
                    _ => "NOT SERVING",
                },
                broker.detail.as_deref().unwrap_or("")
            );
        }
        let _ = writeln!(
            s,
            "events in {}   bad {}   late {}   final windows {}   recent-activity updates {}",
            metrics.events_in(),
            metrics.bad_total(),
            metrics.late_total(),
            metrics.windows_emitted_total(),
            metrics.recent_updates(),
        );
        let _ = writeln!(
            s,
            "watermark {}   behind newest event {:.1}s   behind wall clock {:.1}s",
            clock(wm),
            (max_ts - wm) as f64 / 1000.0,
            (now_ms - wm) as f64 / 1000.0
        );
        let mut aggs: Vec<&String> = metrics.aggregates().iter().collect();
        aggs.dedup();
        for agg in aggs {
            let Some(start) = self
                .rows
                .keys()
                .filter(|(a, _, _)| **a == **agg)
                .map(|(_, _, s)| *s)
                .max()
            else {
                let _ = writeln!(s, "\n{agg}: no results yet");
                continue;
            };
            let mut rows: Vec<&WindowRow> = self
                .rows
                .values()
                .filter(|w| *w.aggregate == **agg && w.window_start == start)
                .collect();
            rows.sort_by_key(|w| std::cmp::Reverse(count(w)));
            let end = rows.first().map_or(start, |w| w.window_end);
            let _ = writeln!(
                s,
                "\n{agg}  window {}–{}  ({} groups, top 8 by count)",
                clock(start),
                clock(end),
                rows.len()
            );
            for w in rows.iter().take(8) {
                let key: Vec<&str> = w.key.iter().map(|(_, v)| v.as_str()).collect();
                let measures: Vec<String> = w
                    .measures
                    .iter()
                    .map(|(n, v)| match v {
                        MeasureValue::Sum(m) => format!("{n}={:.2}", *m as f64 / 1e6),
                        MeasureValue::Count(c) | MeasureValue::Distinct(c) => format!("{n}={c}"),
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    "  {:<28} {}{}",
                    key.join(" "),
                    measures.join("  "),
                    if w.is_final { "  (final)" } else { "" }
                );
            }
        }
        let _ = writeln!(s, "\n{footer}");
        s
    }
}

fn count(w: &WindowRow) -> u64 {
    w.measures
        .iter()
        .find_map(|(_, v)| {
            if let MeasureValue::Count(c) = v {
                Some(*c)
            } else {
                None
            }
        })
        .unwrap_or(w.version)
}

fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}
