//! What the collector is told: caps, timeouts, the spill, and each app's
//! token, quota and priority. The binary fills it from `[collect]`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A token-bucket rate in events per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events per second on average.
    pub per_second: u32,
    /// The bucket's size: the most events one request may carry.
    pub burst: u32,
}

/// One app's access, quota and priority.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppSettings {
    /// Bearer token that sends this app's events.
    pub token: Option<String>,
    /// Its quota, if not the default one.
    pub rate: Option<Rate>,
    /// Its priority under pressure (higher is shed later; the highest never).
    pub priority: i32,
}

/// Everything the collector is told.
#[derive(Debug, Clone)]
pub struct CollectSettings {
    /// How long a request waits for Kafka's acknowledgement before its
    /// events go to the spill.
    pub ack_timeout: Duration,
    /// The largest body as sent.
    pub max_body: usize,
    /// The largest body once decompressed.
    pub max_decompressed: usize,
    /// The largest event (rejected `too_large` past it; Kafka's default
    /// message size is 1,000,000 bytes).
    pub max_event_bytes: usize,
    /// How long an event id is remembered after its event was durable.
    pub dedup_window: Duration,
    /// Event ids remembered at most, over all apps.
    pub dedup_max_ids: usize,
    /// The spill's directory.
    pub spill_dir: PathBuf,
    /// Bytes waiting in the spill at most; past it requests get 503.
    pub spill_max_bytes: u64,
    /// The size of one spill segment.
    pub spill_segment_bytes: u64,
    /// Records the drainer sends per round.
    pub drain_batch: usize,
    /// Pressure at which apps start to be shed (a fraction).
    pub shed_high: f64,
    /// Pressure under which shed apps are taken back.
    pub shed_low: f64,
    /// Time between two shedding steps.
    pub shed_step: Duration,
    /// The process's memory budget (resident bytes), counted in pressure.
    pub memory_budget: Option<u64>,
    /// The quota of an app without one of its own.
    pub default_rate: Option<Rate>,
    /// The priority of an app that is not listed.
    pub default_priority: i32,
    /// Apps by id.
    pub apps: BTreeMap<String, AppSettings>,
}

impl CollectSettings {
    /// Settings for a spill in `spill_dir` and otherwise the defaults of
    /// the embedded config: for tests and benchmarks.
    pub fn new(spill_dir: PathBuf) -> Self {
        CollectSettings {
            ack_timeout: Duration::from_secs(2),
            max_body: 1 << 20,
            max_decompressed: 4 << 20,
            max_event_bytes: 512 << 10,
            dedup_window: Duration::from_secs(600),
            dedup_max_ids: 2_000_000,
            spill_dir,
            spill_max_bytes: 1 << 30,
            spill_segment_bytes: 64 << 20,
            drain_batch: 2_000,
            shed_high: 0.8,
            shed_low: 0.5,
            shed_step: Duration::from_secs(1),
            memory_budget: None,
            default_rate: None,
            default_priority: 0,
            apps: BTreeMap::new(),
        }
    }

    /// Whether requests need a token: once any app has one.
    pub fn needs_tokens(&self) -> bool {
        self.apps.values().any(|a| a.token.is_some())
    }
}
