//! What the query service is told: store timeouts and limits, the cache,
//! the tokens and rate limits of apps. `bin` fills it from the config's
//! `[serve]` table.

use std::collections::HashMap;
use std::time::Duration;

use footprint_sinks::util::breaker::BreakerConfig;

/// A token-bucket rate: `per_second` on average, bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per second.
    pub per_second: u32,
    /// The bucket's size.
    pub burst: u32,
}

/// One app's access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppAccess {
    /// Its bearer token: reads this app's data only.
    pub token: Option<String>,
    /// Its rate limit, if other than the default.
    pub rate: Option<Rate>,
}

/// The cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Whether answers are cached at all.
    pub enabled: bool,
    /// Answers kept at most.
    pub capacity: u64,
    /// How long an answer with open windows or recent activity is kept.
    pub open_ttl: Duration,
    /// How long an answer of final windows only is kept.
    pub final_ttl: Duration,
}

/// Everything the service is told.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// A Redis read that takes longer falls back to MySQL.
    pub redis_timeout: Duration,
    /// A MySQL read that takes longer fails.
    pub mysql_timeout: Duration,
    /// The stores' breakers.
    pub breaker: BreakerConfig,
    /// Concurrent Redis reads at most (more are not tried: MySQL answers).
    pub redis_concurrency: usize,
    /// Concurrent MySQL reads at most, and its connections.
    pub mysql_concurrency: usize,
    /// Requests in flight at most; more get a fast 503.
    pub max_in_flight: usize,
    /// The cache.
    pub cache: CacheSettings,
    /// Windows one series may span.
    pub max_windows: usize,
    /// Groups one top-N may return.
    pub max_top: usize,
    /// Users one batch may name.
    pub max_batch: usize,
    /// A token that reads every app's data.
    pub admin_token: Option<String>,
    /// Apps by id: their tokens and rates.
    pub apps: HashMap<String, AppAccess>,
    /// The rate of an app without one of its own.
    pub app_rate: Option<Rate>,
    /// The rate of one client address.
    pub ip_rate: Option<Rate>,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            redis_timeout: Duration::from_millis(50),
            mysql_timeout: Duration::from_millis(500),
            breaker: BreakerConfig {
                failures_to_open: 3,
                open_for: Duration::from_secs(2),
            },
            redis_concurrency: 256,
            mysql_concurrency: 16,
            max_in_flight: 1024,
            cache: CacheSettings {
                enabled: true,
                capacity: 100_000,
                open_ttl: Duration::from_millis(250),
                final_ttl: Duration::from_secs(600),
            },
            max_windows: 1_000,
            max_top: 1_000,
            max_batch: 100,
            admin_token: None,
            apps: HashMap::new(),
            app_rate: None,
            ip_rate: None,
        }
    }
}

impl ServeSettings {
    /// Whether any token is configured: then every request needs one.
    pub fn needs_tokens(&self) -> bool {
        self.admin_token.is_some() || self.apps.values().any(|a| a.token.is_some())
    }
}
