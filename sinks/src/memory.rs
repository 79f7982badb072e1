//! The memory sink: rows collected in a shared vector, for tests, the demo's
//! live view, and programs that embed Footprint.

use std::sync::{Arc, Mutex};

use footprint_dataflows::Output;

use crate::{Sink, SinkError, SinkFactory};

/// Shared storage of every row written by any worker.
#[derive(Debug, Clone, Default)]
pub struct MemorySinkFactory {
    name: String,
    rows: Arc<Mutex<Vec<Output>>>,
}

impl MemorySinkFactory {
    /// A memory sink called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        MemorySinkFactory {
            name: name.into(),
            rows: Arc::default(),
        }
    }

    /// Takes every row written so far.
    pub fn take(&self) -> Vec<Output> {
        self.rows
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

impl SinkFactory for MemorySinkFactory {
    fn name(&self) -> &str {
        &self.name
    }

    fn build(&self, _worker: usize, _peers: usize) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(MemorySink {
            name: self.name.clone(),
            rows: Arc::clone(&self.rows),
        }))
    }
}

struct MemorySink {
    name: String,
    rows: Arc<Mutex<Vec<Output>>>,
}

impl Sink for MemorySink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, rows: &[Output]) -> Result<(), SinkError> {
        let mut all = self.rows.lock().map_err(|_| SinkError::Unavailable {
            sink: self.name.clone(),
            detail: "a writer panicked while holding the lock".into(),
        })?;
        all.extend_from_slice(rows);
        Ok(())
    }
}
