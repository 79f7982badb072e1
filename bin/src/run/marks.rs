//! The completeness-mark publisher ([`footprint_sinks::marks`]): how far
//! each aggregate's windows are final in each store, for the query service.
//!
//! Every half second it reads the sinks' output frontier (as the workers
//! last saw it), reads back a batch of the diverted final rows that hold a
//! store's marks (the replay job may have applied them since), and writes
//! each aggregate's mark to each store whose switch is `auto`. A mark only
//! moves forward; nothing is written while the retry topic has not been
//! seen drained since start-up, or once the process has lost rows.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use footprint_dataflows::PipelineSpec;
use footprint_dataflows::flow::Flow;
use footprint_sinks::marks::{Holds, Mark, MarkWriter, complete_up_to};
use footprint_sinks::util::switch::{Mode, Switches};
use footprint_telemetry::{Throttle, log_repeated};

use super::helpers::wait;

/// Held rows read back per store and round.
const CONFIRM_BATCH: usize = 512;

/// The sinks' output frontier as each local worker last saw it: every row
/// at an earlier time is written or diverted.
#[derive(Debug)]
pub struct Frontiers(Vec<AtomicU64>);

impl Frontiers {
    /// Slots for `workers` local workers, none seen yet.
    pub fn new(workers: usize) -> Self {
        Frontiers((0..workers).map(|_| AtomicU64::new(0)).collect())
    }

    /// Local worker `local` sees `frontier`; an empty one (the dataflow is
    /// done) keeps the last time seen.
    pub fn set(&self, local: usize, frontier: Option<u64>) {
        if let (Some(slot), Some(f)) = (self.0.get(local), frontier) {
            slot.store(f, Ordering::Release);
        }
    }

    /// The least frontier of the local workers, once each has seen one.
    pub fn get(&self) -> Option<u64> {
        let least = self.0.iter().map(|s| s.load(Ordering::Acquire)).min()?;
        (least > 0).then_some(least)
    }
}

/// What the publisher needs.
pub(super) struct Publisher {
    pub writers: Vec<Box<dyn MarkWriter>>,
    pub holds: Arc<Holds>,
    pub frontiers: Arc<Frontiers>,
    pub spec: Arc<PipelineSpec>,
    pub switches: Arc<Switches>,
    pub flow: Arc<Flow>,
    /// This process's index in its cluster, the cluster's size, and when
    /// this process started.
    pub writer: u32,
    pub writers_total: u32,
    pub run: i64,
}

impl Publisher {
    fn round(&mut self, last: &mut HashMap<(usize, usize), i64>, throttle: &Throttle) {
        for (wi, w) in self.writers.iter_mut().enumerate() {
            let store = w.store().to_owned();
            if self.switches.get(&store) == Some(Mode::Degraded) {
                continue;
            }
            let sample = self.holds.sample(&store, CONFIRM_BATCH);
            if !sample.is_empty() {
                match w.applied(&sample) {
                    Ok(flags) => {
                        let done: Vec<_> = sample
                            .into_iter()
                            .zip(flags)
                            .filter_map(|(r, applied)| applied.then_some(r))
                            .collect();
                        self.holds.applied(&store, &done);
                    }
                    Err(e) => {
                        log_repeated! { warn, throttle, format!("marks/{store}"), store = %store, error = %e,
                        "diverted rows could not be read back; the store's completeness marks wait" }
                        continue;
                    }
                }
            }
            if self.holds.starting() || self.flow.rows_lost() {
                continue;
            }
            let Some(frontier) = self.frontiers.get() else {
                continue;
            };
            for (ai, agg) in self.spec.aggregates.iter().enumerate() {
                if !agg.sinks.contains(&store) {
                    continue;
                }
                let held = self.holds.earliest(&store, ai as u16);
                let cu = complete_up_to(frontier, agg.allowed_lateness, held);
                if last.get(&(wi, ai)).is_some_and(|l| *l >= cu) {
                    continue;
                }
                let mark = Mark {
                    writer: self.writer,
                    writers: self.writers_total,
                    complete_up_to: cu,
                    run: self.run,
                };
                match w.write(&agg.name, &mark) {
                    Ok(()) => {
                        last.insert((wi, ai), cu);
                        if throttle.end(&format!("marks/{store}")).is_some() {
                            tracing::info!(store = %store, "completeness marks are written again");
                        }
                    }
                    Err(e) => {
                        log_repeated! { warn, throttle, format!("marks/{store}"), store = %store, error = %e,
                        "completeness marks could not be written; trying again" }
                        break;
                    }
                }
            }
        }
    }
}

/// Publishes marks every half second until `stop`, and once more then.
pub(super) fn publish_marks(mut p: Publisher, stop: &AtomicBool) {
    let mut last = HashMap::new();
    let throttle = Throttle::default();
    loop {
        p.round(&mut last, &throttle);
        if !wait(stop, Duration::from_millis(500)) {
            p.round(&mut last, &throttle);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frontier_is_the_least_worker_once_every_worker_saw_one() {
        let f = Frontiers::new(2);
        assert_eq!(f.get(), None);
        f.set(0, Some(500));
        assert_eq!(f.get(), None, "worker 1 has not seen one");
        f.set(1, Some(300));
        assert_eq!(f.get(), Some(300));
        f.set(1, None);
        assert_eq!(f.get(), Some(300), "a finished worker keeps its last time");
    }
}
