//! The failure-drill harness: drill sizes, the comparison of both stores
//! with the sequential reference, and the figures every drill reports.
//!
//! A drill runs a streaming scenario against the real broker, Redis and
//! MariaDB, injects a fault, and then compares the final MySQL and Redis
//! contents with [`footprint_dataflows::reference`]. Each window identity
//! (and each user's recent activity) of each store is classified:
//!
//! - **lost**: the reference has it, the store does not;
//! - **stale**: the store holds an older value (a lower version: fewer
//!   events counted; for recent activity, newer events missing);
//! - **double-counted**: the store counts more than the reference (a higher
//!   version), or holds something the reference does not have;
//! - **diffs**: every identity that differs at all, the three above included.
//!
//! [`Figures::report`] prints one line, `DRILL name: …`, appends the figures
//! as JSON to `$FOOTPRINT_DRILL_REPORT` and a Markdown table row to
//! `$FOOTPRINT_DRILL_TABLE` when they are set (`scripts/drills.sh` prints
//! that table, the README's "Faults survived").

use std::collections::BTreeMap;
use std::io::Write;

use footprint_dataflows::reference::Reference;
use footprint_dataflows::{RecentRow, WindowRow};

use crate::StoredRows;

/// How big a drill runs: `FOOTPRINT_DRILL_SIZE=full` for the full-size
/// versions (`scripts/drills.sh`), the CI-sized ones otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Small enough for every test run.
    Ci,
    /// The full-size drill.
    Full,
}

impl Size {
    /// The size the environment asks for.
    pub fn from_env() -> Self {
        match std::env::var("FOOTPRINT_DRILL_SIZE").as_deref() {
            Ok("full") => Size::Full,
            _ => Size::Ci,
        }
    }

    /// `ci` or `full`.
    pub fn as_str(self) -> &'static str {
        match self {
            Size::Ci => "ci",
            Size::Full => "full",
        }
    }

    /// `ci` at CI size, `full` at full size.
    pub fn pick<T>(self, ci: T, full: T) -> T {
        match self {
            Size::Ci => ci,
            Size::Full => full,
        }
    }
}

/// How one store's contents compare with the reference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Identities that differ at all.
    pub diffs: usize,
    /// Missing from the store.
    pub lost: usize,
    /// An older value in the store.
    pub stale: usize,
    /// More counted than the reference, or not in the reference at all.
    pub double_counted: usize,
}

impl std::ops::Add for Comparison {
    type Output = Comparison;
    fn add(self, o: Comparison) -> Comparison {
        Comparison {
            diffs: self.diffs + o.diffs,
            lost: self.lost + o.lost,
            stale: self.stale + o.stale,
            double_counted: self.double_counted + o.double_counted,
        }
    }
}

/// Compares window rows.
pub fn compare_windows<K: Ord + std::fmt::Debug>(
    expected: &BTreeMap<K, WindowRow>,
    got: &BTreeMap<K, WindowRow>,
) -> Comparison {
    let mut c = Comparison::default();
    for (id, want) in expected {
        match got.get(id) {
            None => c.lost += 1,
            Some(row) if row == want => continue,
            Some(row) if row.version < want.version => c.stale += 1,
            Some(row) if row.version > want.version => c.double_counted += 1,
            Some(_) => {}
        }
        if c.diffs < 5 {
            eprintln!("differs: {id:?}: expected {want:?}, got {:?}", got.get(id));
        }
        c.diffs += 1;
    }
    let extra = got.keys().filter(|id| !expected.contains_key(*id)).count();
    c.double_counted += extra;
    c.diffs += extra;
    c
}

/// Compares recent activity.
pub fn compare_recent<K: Ord + std::fmt::Debug>(
    expected: &BTreeMap<K, RecentRow>,
    got: &BTreeMap<K, RecentRow>,
) -> Comparison {
    let mut c = Comparison::default();
    for (id, want) in expected {
        match got.get(id) {
            None => c.lost += 1,
            Some(row) if row == want => continue,
            Some(row) if row.events.iter().any(|e| !want.events.contains(e)) => {
                c.double_counted += 1
            }
            Some(_) => c.stale += 1,
        }
        c.diffs += 1;
    }
    let extra = got.keys().filter(|id| !expected.contains_key(*id)).count();
    c.double_counted += extra;
    c.diffs += extra;
    c
}

/// Both stores, windows and recent activity, against the reference.
pub fn compare(expected: &Reference, stored: &StoredRows) -> Comparison {
    compare_windows(&expected.windows, &stored.mysql_windows)
        + compare_windows(&expected.windows, &stored.redis_windows)
        + compare_recent(&expected.recent, &stored.mysql_recent)
        + compare_recent(&expected.recent, &stored.redis_recent)
}

/// What a drill saw.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Drill name.
    pub drill: String,
    /// Messages in the input.
    pub events: u64,
    /// Window identities in the reference.
    pub windows: usize,
    /// Both stores against the reference.
    pub comparison: Comparison,
    /// Seconds from each recovery's start to the pipeline making progress again.
    pub recovery_s: Vec<f64>,
    /// Drill-specific figures, in order.
    pub extra: Vec<(String, String)>,
}

impl Figures {
    /// Figures of drill `drill` over `events` messages.
    pub fn new(drill: &str, events: u64, expected: &Reference, stored: &StoredRows) -> Self {
        Figures {
            drill: drill.to_owned(),
            events,
            windows: expected.windows.len(),
            comparison: compare(expected, stored),
            recovery_s: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Adds a drill-specific figure.
    pub fn with(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        self.extra.push((name.to_owned(), value.to_string()));
        self
    }

    /// The median recovery, seconds.
    pub fn recovery_median(&self) -> Option<f64> {
        let mut v = self.recovery_s.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }

    /// Prints the figures and appends them to `$FOOTPRINT_DRILL_REPORT`.
    pub fn report(&self) {
        let c = &self.comparison;
        let recovery = match (
            self.recovery_median(),
            self.recovery_s.iter().copied().reduce(f64::max),
        ) {
            (Some(m), Some(x)) => format!(
                "recovery_s median {m:.2} max {x:.2} over {}",
                self.recovery_s.len()
            ),
            _ => "recovery_s -".to_owned(),
        };
        let extra: Vec<String> = self.extra.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "DRILL {} [{}]: events {}, windows {}, diffs {}, lost {}, stale {}, double-counted {}, {recovery}{}{}",
            self.drill,
            Size::from_env().as_str(),
            self.events,
            self.windows,
            c.diffs,
            c.lost,
            c.stale,
            c.double_counted,
            if extra.is_empty() { "" } else { ", " },
            extra.join(", ")
        );
        if let Ok(path) = std::env::var("FOOTPRINT_DRILL_TABLE")
            && !path.is_empty()
        {
            // The test's own name: `scripts/drills.sh NAME` runs it again.
            let test = std::thread::current()
                .name()
                .map(|n| n.rsplit("::").next().unwrap_or(n).to_owned())
                .unwrap_or_default();
            let recovery = match (
                self.recovery_median(),
                self.recovery_s.iter().copied().reduce(f64::max),
            ) {
                (Some(m), Some(x)) if self.recovery_s.len() > 1 => {
                    format!("{m:.1} s median, {x:.1} s max")
                }
                (Some(m), _) => format!("{m:.1} s"),
                _ => "–".to_owned(),
            };
            let row = format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | `scripts/drills.sh {test}` |",
                self.drill,
                self.events,
                c.diffs,
                c.lost,
                c.stale,
                c.double_counted,
                recovery,
                extra.join(", "),
                Size::from_env().as_str(),
            );
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| writeln!(f, "{row}"));
            if let Err(e) = written {
                eprintln!("could not append the drill row to {path}: {e}");
            }
        }
        if let Ok(path) = std::env::var("FOOTPRINT_DRILL_REPORT")
            && !path.is_empty()
        {
            let json = serde_json::json!({
                "drill": self.drill,
                "size": Size::from_env().as_str(),
                "events": self.events,
                "windows": self.windows,
                "diffs": c.diffs,
                "lost": c.lost,
                "stale": c.stale,
                "double_counted": c.double_counted,
                "recovery_s": self.recovery_s,
                "recovery_median_s": self.recovery_median(),
                "extra": self.extra.iter().cloned().collect::<BTreeMap<_, _>>(),
            });
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| writeln!(f, "{json}"));
            if let Err(e) = written {
                eprintln!("could not append the drill figures to {path}: {e}");
            }
        }
    }

    /// Panics unless nothing was lost, stale or double-counted and no identity differs.
    pub fn assert_exact(&self) {
        assert_eq!(
            self.comparison,
            Comparison::default(),
            "{}: the stores differ from the reference",
            self.drill
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use footprint_dataflows::MeasureValue;

    fn row(version: u64) -> WindowRow {
        WindowRow {
            agg: 0,
            aggregate: "a".into(),
            key: vec![],
            window_start: 0,
            window_end: 60_000,
            measures: vec![("count".into(), MeasureValue::Count(version))],
            version,
            is_final: true,
            freshest_append_ms: None,
        }
    }

    #[test]
    fn each_kind_of_difference_is_counted_as_what_it_is() {
        let expected: BTreeMap<u8, WindowRow> =
            [(1, row(5)), (2, row(5)), (3, row(5)), (4, row(5))].into();
        let mut not_final = row(5);
        not_final.is_final = false;
        let got: BTreeMap<u8, WindowRow> = [
            (1, row(5)),
            (2, row(4)),
            (3, row(6)),
            (5, row(1)),
            (4, not_final),
        ]
        .into();
        // 1 equal; 2 stale; 3 double; 4 differs only; 5 not expected (double); and none lost.
        let c = compare_windows(&expected, &got);
        assert_eq!(
            c,
            Comparison {
                diffs: 4,
                lost: 0,
                stale: 1,
                double_counted: 2
            }
        );
        let c = compare_windows(&expected, &BTreeMap::new());
        assert_eq!(c.lost, 4);
    }
}
