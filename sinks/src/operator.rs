//! `write_to`: the dataflow operator that hands result rows to the sinks.
//!
//! Rows stay on the worker that produced them (each identity belongs to one
//! worker), are grouped by sink according to [`Routing`], and written in one
//! batch per sink per activation. Each batch is written once: store sinks
//! run behind [`GuardedSink`](crate::util::guard::GuardedSink), which owns
//! retries and diversion. A write that still fails is counted and logged at
//! ERROR, since its data is then at risk.

use std::sync::Arc;

use footprint_dataflows::crashpoint;
use footprint_dataflows::metrics::Metrics;
use footprint_dataflows::{Output, Time};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;

use crate::Sink;

/// Which sinks receive which rows: indices into the worker's sink list.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Per aggregate index, the sinks of its window rows.
    pub windows: Vec<Vec<usize>>,
    /// The sinks of recent-activity rows.
    pub recent: Vec<usize>,
}

/// Extension trait: write a stream of rows to sinks.
pub trait WriteTo<'s> {
    /// Writes every row to the sinks `routing` names for it. The returned
    /// stream carries no data; its frontier passes a time once every row at
    /// that time has been written or diverted, which is what a probe on it
    /// (the source's offset checkpoints) waits for.
    fn write_to(
        self,
        sinks: Vec<Box<dyn Sink>>,
        routing: Routing,
        metrics: Arc<Metrics>,
    ) -> StreamVec<'s, Time, ()>;
}

impl<'s> WriteTo<'s> for StreamVec<'s, Time, Output> {
    fn write_to(
        self,
        mut sinks: Vec<Box<dyn Sink>>,
        routing: Routing,
        metrics: Arc<Metrics>,
    ) -> StreamVec<'s, Time, ()> {
        let mut batches: Vec<Vec<Output>> = vec![Vec::new(); sinks.len()];
        let mut flushed = true;
        self.unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "WriteTo", move |_cap, _info| move |input, _output| {
            input.for_each(|_time, data| {
                for row in data.drain(..) {
                    let targets = match &row {
                        Output::Window(w) => routing.windows.get(usize::from(w.agg)).map_or(&[][..], Vec::as_slice),
                        Output::Recent(_) => routing.recent.as_slice(),
                    };
                    if let Some((last, rest)) = targets.split_last() {
                        for t in rest {
                            batches[*t].push(row.clone());
                        }
                        batches[*last].push(row);
                    }
                }
            });
            let mut wrote_one = false;
            for (sink, batch) in sinks.iter_mut().zip(batches.iter_mut()) {
                if batch.is_empty() {
                    continue;
                }
                if wrote_one {
                    crashpoint::reached("sink.mid_batch");
                }
                wrote_one = true;
                flushed = false;
                let n = batch.len() as u64;
                match sink.write(batch) {
                    Ok(()) if sink.counts_itself() => {}
                    Ok(()) => Metrics::add_sink(&metrics.sink_writes, sink.name(), n),
                    Err(e) => {
                        Metrics::add_sink(&metrics.sink_failures, sink.name(), n);
                        tracing::error!(sink = sink.name(), rows = n, error = %e, "result rows were not written");
                    }
                }
                batch.clear();
            }
            if wrote_one {
                crashpoint::reached("sink.after_write");
            }
            // Flush after every burst: files stay readable while a job runs,
            // and stores batch per write anyway.
            if !flushed {
                for sink in sinks.iter_mut() {
                    if let Err(e) = sink.flush() {
                        tracing::error!(sink = sink.name(), error = %e, "flushing the sink failed");
                    }
                }
                flushed = true;
            }
        })
    }
}
