//! [`Throttle`]: rate-limited logging of something that keeps happening.
//!
//! During an outage the same failure repeats many times a second. Logging
//! each one drowns what matters; logging none hides it. A throttle lets the
//! first occurrence of each kind through at once, then at most one line per
//! interval, which says how many times it happened since it began.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// What the caller should log for this occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeats {
    /// Occurrences since it began, this one included.
    pub total: u64,
    /// Occurrences since the last line logged, this one included.
    pub since_last: u64,
    /// When the first occurrence was.
    pub began: SystemTime,
}

impl Repeats {
    /// Whether this is the first occurrence.
    pub fn is_first(&self) -> bool {
        self.total == 1
    }

    /// Seconds since the first occurrence, by the wall clock.
    pub fn seconds_since_began(&self) -> u64 {
        SystemTime::now()
            .duration_since(self.began)
            .map_or(0, |d| d.as_secs())
    }
}

#[derive(Debug)]
struct Spell {
    total: u64,
    since_last: u64,
    began: SystemTime,
    last_logged: Instant,
}

/// How often a throttle lets a line through by default.
pub const EVERY: Duration = Duration::from_secs(10);

/// Decides which occurrences of repeated events are logged.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    spells: Mutex<HashMap<String, Spell>>,
}

impl Default for Throttle {
    /// At most one line per kind every [`EVERY`].
    fn default() -> Self {
        Throttle::new(EVERY)
    }
}

impl Throttle {
    /// At most one line per kind per `every`.
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            spells: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an occurrence of `kind`; returns what to log when a line is due.
    pub fn hit(&self, kind: &str) -> Option<Repeats> {
        self.hit_at(kind, Instant::now())
    }

    fn hit_at(&self, kind: &str, now: Instant) -> Option<Repeats> {
        let mut spells = self.spells.lock().unwrap_or_else(PoisonError::into_inner);
        let spell = match spells.get_mut(kind) {
            Some(s) => s,
            None => {
                let began = SystemTime::now();
                spells.insert(
                    kind.to_owned(),
                    Spell {
                        total: 1,
                        since_last: 0,
                        began,
                        last_logged: now,
                    },
                );
                return Some(Repeats {
                    total: 1,
                    since_last: 1,
                    began,
                });
            }
        };
        spell.total += 1;
        spell.since_last += 1;
        if now.saturating_duration_since(spell.last_logged) < self.every {
            return None;
        }
        let out = Repeats {
            total: spell.total,
            since_last: spell.since_last,
            began: spell.began,
        };
        spell.since_last = 0;
        spell.last_logged = now;
        Some(out)
    }

    /// Ends the spell of `kind` (it recovered); returns how many times it
    /// happened, when it had happened at all.
    pub fn end(&self, kind: &str) -> Option<Repeats> {
        let mut spells = self.spells.lock().unwrap_or_else(PoisonError::into_inner);
        spells.remove(kind).map(|s| Repeats {
            total: s.total,
            since_last: s.since_last,
            began: s.began,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_occurrence_is_logged_then_one_line_per_interval_with_the_count() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let first = t.hit_at("broker down", t0).expect("first is logged");
        assert!(first.is_first());
        for i in 1..=99 {
            assert_eq!(
                t.hit_at("broker down", t0 + Duration::from_millis(i * 50)),
                None
            );
        }
        let next = t
            .hit_at("broker down", t0 + Duration::from_secs(10))
            .expect("a line per interval");
        assert_eq!((next.total, next.since_last), (101, 100));
        assert!(t.hit_at("other", t0).is_some(), "kinds are apart");
        let end = t.end("broker down").expect("it happened");
        assert_eq!(end.total, 101);
        assert!(t.end("broker down").is_none());
        assert!(
            t.hit_at("broker down", t0 + Duration::from_secs(11))
                .is_some_and(|r| r.is_first())
        );
    }
}
