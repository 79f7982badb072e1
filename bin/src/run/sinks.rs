//! [`Sinks`]: the sinks of a run (the configured ones, then the extra ones
//! a caller adds, which get every row), which rows go to which, and the
//! guard the store sinks run behind.

use std::sync::Arc;

use anyhow::Result;
use footprint_dataflows::PipelineSpec;
use footprint_sinks::operator::Routing;
use footprint_sinks::{Sink, SinkFactory};

use crate::config::Config;
use crate::stores::{Configured, Guard, STORE_SINKS, sink_factories};
use footprint_sinks::marks::MarkWriter;

/// The sinks of a run.
pub(super) struct Sinks {
    factories: Vec<(String, Arc<dyn SinkFactory>)>,
    /// The stores' completeness-mark writers, until taken.
    marks: Vec<Box<dyn MarkWriter>>,
    /// How many of `factories` the config declares (the rest are extra).
    configured: usize,
    guard: Option<Guard>,
}

impl Sinks {
    /// The configured sinks of `cfg`, then `extra`.
    pub(super) fn new(
        cfg: &Config,
        spec: &Arc<PipelineSpec>,
        extra: &[Arc<dyn SinkFactory>],
    ) -> Result<Self> {
        let Configured {
            sinks: mut factories,
            marks,
        } = sink_factories(cfg, spec)?;
        let configured = factories.len();
        for f in extra {
            factories.push((f.name().to_owned(), Arc::clone(f)));
        }
        Ok(Sinks {
            factories,
            marks,
            configured,
            guard: None,
        })
    }

    /// Whether a configured sink writes to a store (and needs the retry topic).
    pub(super) fn has_store(&self) -> bool {
        self.factories[..self.configured]
            .iter()
            .any(|(n, _)| STORE_SINKS.contains(&n.as_str()))
    }

    /// The stores' completeness-mark writers (once).
    pub(super) fn take_marks(&mut self) -> Vec<Box<dyn MarkWriter>> {
        std::mem::take(&mut self.marks)
    }

    /// Store sinks run behind `guard`.
    pub(super) fn guarded_by(&mut self, guard: Guard) {
        self.guard = Some(guard);
    }

    /// Which sinks receive which rows: each aggregate's and recent
    /// activity's own sinks, plus every extra sink.
    pub(super) fn routing(&self, spec: &PipelineSpec) -> Routing {
        let extra: Vec<usize> = (self.configured..self.factories.len()).collect();
        let index_of = |names: &[String]| -> Vec<usize> {
            let mut v: Vec<usize> = names
                .iter()
                .filter_map(|n| {
                    self.factories[..self.configured]
                        .iter()
                        .position(|(f, _)| f == n)
                })
                .collect();
            v.extend(&extra);
            v
        };
        Routing {
            windows: spec.aggregates.iter().map(|a| index_of(&a.sinks)).collect(),
            recent: spec
                .recent
                .as_ref()
                .map(|r| index_of(&r.sinks))
                .unwrap_or_default(),
            recent_keep: spec.recent.as_ref().map(|r| r.keep),
        }
    }

    /// The sinks of worker `w` of `peers`, store sinks behind the guard.
    pub(super) fn build(&self, w: usize, peers: usize) -> Result<Vec<Box<dyn Sink>>> {
        let mut sinks = Vec::with_capacity(self.factories.len());
        for (i, (name, f)) in self.factories.iter().enumerate() {
            let inner = f.build(w, peers)?;
            let store = i < self.configured && STORE_SINKS.contains(&name.as_str());
            sinks.push(match (&self.guard, store) {
                (Some(guard), true) => guard.wrap(inner, w as u64 + 1),
                _ => inner,
            });
        }
        Ok(sinks)
    }
}
