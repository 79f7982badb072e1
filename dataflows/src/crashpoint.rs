//! Crash points: named places where a failure drill stops the process.
//!
//! `FOOTPRINT_CRASH_POINT=NAME@N` makes the `N`-th pass through crash point
//! `NAME` print `crash point NAME reached (N)` to stderr and then hold that
//! thread for ever, so that the drill kills the process with SIGKILL at
//! exactly that place (the other threads go on meanwhile, as they would).
//! Without the variable a crash point costs one atomic load.
//!
//! The points:
//!
//! | name | where |
//! |---|---|
//! | `sink.after_write` | every sink of a batch has been written (on the worker thread: a store writer's batch has been reported written), nothing of it is committed yet |
//! | `sink.mid_batch` | one sink of a batch has been written, the next one not yet (on a store writer's thread: its batch is in the store, not yet reported to the worker) |
//! | `commit.before` | the checkpoints to commit are known, none is committed |
//! | `commit.between` | the checkpoint topic has the new checkpoints, the consumer group not yet |

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Every crash point, for drills that pick one.
pub const ALL: [&str; 4] = [
    "sink.after_write",
    "sink.mid_batch",
    "commit.before",
    "commit.between",
];

struct Armed {
    name: String,
    at: u64,
    passes: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("FOOTPRINT_CRASH_POINT").ok()?;
            let (name, at) = spec.split_once('@').unwrap_or((spec.as_str(), "1"));
            let at = at.parse().ok().filter(|n| *n > 0)?;
            Some(Armed {
                name: name.to_owned(),
                at,
                passes: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Passes through crash point `name`.
pub fn reached(name: &str) {
    let Some(a) = armed() else {
        return;
    };
    if a.name != name {
        return;
    }
    let n = a.passes.fetch_add(1, Ordering::SeqCst) + 1;
    if n == a.at {
        eprintln!("crash point {name} reached ({n})");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
