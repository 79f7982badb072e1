//! Tenant shedding: under pressure, refuse whole apps, lowest priority
//! first, and take them back in reverse order as the pressure falls.
//!
//! Pressure is a fraction: the larger of the spill's fill (its bytes over
//! `collect.spill.max_bytes`) and the process's memory over its budget.
//! At or above `high`, one more app is refused every `step`; below `low`,
//! the app refused last is taken back every `step`. Between the two
//! nothing changes, so the set does not flap around one mark. Apps are
//! refused by ascending priority (ties by name); the apps of the highest
//! priority are never refused, so they keep being accepted while the spill
//! has room. Each step is returned to the caller, which logs and counts it
//! per app.

use std::time::{Duration, Instant};

/// One change of the refused set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// This app is refused from now on.
    Shed(String),
    /// This app is accepted again.
    Restored(String),
}

/// Which apps are refused now.
#[derive(Debug)]
pub struct Shedder {
    /// Apps that may be shed, in the order they are: lowest priority first.
    order: Vec<String>,
    high: f64,
    low: f64,
    step: Duration,
    /// How many of `order` are refused.
    shed: usize,
    last_step: Option<Instant>,
}

impl Shedder {
    /// A shedder over `apps` (name and priority; higher is more
    /// important), shedding at or above `high` pressure and restoring below
    /// `low`, one app per `step` at most.
    pub fn new(apps: &[(String, i32)], high: f64, low: f64, step: Duration) -> Self {
        let top = apps.iter().map(|(_, p)| *p).max();
        let mut order: Vec<(String, i32)> = apps
            .iter()
            .filter(|(_, p)| Some(*p) != top)
            .cloned()
            .collect();
        order.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        Shedder {
            order: order.into_iter().map(|(name, _)| name).collect(),
            high,
            low: low.min(high),
            step,
            shed: 0,
            last_step: None,
        }
    }

    /// Takes the pressure now; returns the change it makes, if any.
    pub fn observe(&mut self, pressure: f64, now: Instant) -> Option<Step> {
        let due = self
            .last_step
            .is_none_or(|t| now.saturating_duration_since(t) >= self.step);
        if !due {
            return None;
        }
        if pressure >= self.high && self.shed < self.order.len() {
            let app = self.order[self.shed].clone();
            self.shed += 1;
            self.last_step = Some(now);
            return Some(Step::Shed(app));
        }
        if pressure < self.low && self.shed > 0 {
            self.shed -= 1;
            self.last_step = Some(now);
            return Some(Step::Restored(self.order[self.shed].clone()));
        }
        None
    }

    /// Whether `app`'s events are refused now.
    pub fn refuses(&self, app: &str) -> bool {
        self.order[..self.shed].iter().any(|a| a == app)
    }

    /// The apps refused now, in the order they were.
    pub fn refused(&self) -> &[String] {
        &self.order[..self.shed]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps() -> Vec<(String, i32)> {
        [
            ("free-b", 0),
            ("free-a", 0),
            ("paid", 5),
            ("core", 9),
            ("core2", 9),
        ]
        .iter()
        .map(|(n, p)| ((*n).to_owned(), *p))
        .collect()
    }

    #[test]
    fn apps_are_shed_lowest_first_and_taken_back_in_reverse() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut sh = Shedder::new(&apps(), 0.8, 0.6, s);
        let at = |k: u32| t0 + s * k;
        assert_eq!(sh.observe(0.5, at(0)), None);
        assert_eq!(sh.observe(0.9, at(1)), Some(Step::Shed("free-a".into())));
        assert!(sh.refuses("free-a") && !sh.refuses("free-b"));
        assert_eq!(sh.observe(0.9, at(2)), Some(Step::Shed("free-b".into())));
        assert_eq!(sh.observe(0.9, at(3)), Some(Step::Shed("paid".into())));
        // The highest priority is never refused, however high the pressure.
        assert_eq!(sh.observe(5.0, at(4)), None);
        assert!(!sh.refuses("core") && !sh.refuses("core2"));
        assert_eq!(sh.refused(), ["free-a", "free-b", "paid"]);
        // Between the marks nothing changes; below the low one, reverse order.
        assert_eq!(sh.observe(0.7, at(5)), None);
        assert_eq!(sh.observe(0.5, at(6)), Some(Step::Restored("paid".into())));
        assert_eq!(
            sh.observe(0.5, at(7)),
            Some(Step::Restored("free-b".into()))
        );
        assert_eq!(
            sh.observe(0.5, at(8)),
            Some(Step::Restored("free-a".into()))
        );
        assert_eq!(sh.observe(0.0, at(9)), None);
        assert!(sh.refused().is_empty());
    }

    #[test]
    fn one_step_at_most_per_interval() {
        let t0 = Instant::now();
        let mut sh = Shedder::new(&apps(), 0.8, 0.6, Duration::from_secs(2));
        assert!(sh.observe(0.9, t0).is_some());
        assert_eq!(sh.observe(0.9, t0 + Duration::from_secs(1)), None);
        assert!(sh.observe(0.9, t0 + Duration::from_secs(2)).is_some());
        assert_eq!(sh.refused().len(), 2);
    }
}
