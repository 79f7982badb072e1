//! Run control shared by a process's operators: how the input ended.
//!
//! When the input ends because the data ran out (a bounded run), open windows
//! are final and are emitted as such. When it ends because the operator asked
//! the process to stop, open windows are *not* final: their latest values are
//! flushed as early updates and a restart rebuilds them.

use std::sync::atomic::{AtomicBool, Ordering};

/// Shared stop flag.
#[derive(Debug, Default)]
pub struct RunControl {
    stop: AtomicBool,
    interrupted: AtomicBool,
}

impl RunControl {
    /// Asks the sources to stop reading.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was requested.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Records that a source stopped before its input ended.
    pub fn mark_interrupted(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
    }

    /// Whether some source stopped before its input ended: open windows are
    /// then not final.
    pub fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }
}
