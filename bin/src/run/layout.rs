//! [`Layout`]: how many workers this process runs and where they sit among
//! the cluster's.

use crate::cluster::Cluster;

/// This process's workers within the cluster.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// Worker threads per process.
    pub threads: usize,
    /// This process's index.
    pub process: usize,
    /// Processes in the cluster (1 alone).
    pub processes: usize,
    cluster: Option<Cluster>,
}

impl Layout {
    pub(super) fn new(threads: usize, cluster: Option<&Cluster>) -> Self {
        let (process, processes) = cluster.map_or((0, 1), |c| (c.process, c.processes()));
        Layout {
            threads: threads.max(1),
            process,
            processes,
            cluster: cluster.cloned(),
        }
    }

    /// Workers in the whole cluster.
    pub(super) fn peers(&self) -> usize {
        self.threads * self.processes
    }

    /// Timely numbers the workers of process i from i × threads.
    pub(super) fn first_worker(&self) -> usize {
        self.process * self.threads
    }

    /// This process's workers, by their index in the cluster.
    pub(super) fn workers(&self) -> std::ops::Range<usize> {
        self.first_worker()..self.first_worker() + self.threads
    }

    /// Timely's configuration for this process.
    pub(super) fn timely(&self) -> timely::Config {
        match &self.cluster {
            Some(c) => c.timely(self.threads),
            None => timely::Config::process(self.threads),
        }
    }

    /// "process P of N".
    pub(super) fn describe(&self) -> String {
        format!("process {} of {}", self.process, self.processes)
    }
}
