//! What the query service reports: its metrics, and the internal events
//! that move them.

use std::sync::Arc;
use std::time::Duration;

use footprint_sinks::util::breaker::BreakerState;
use footprint_telemetry::prometheus_client::encoding::EncodeLabelSet;
use footprint_telemetry::prometheus_client::metrics::counter::Counter;
use footprint_telemetry::prometheus_client::metrics::family::Family;
use footprint_telemetry::prometheus_client::metrics::gauge::Gauge;
use footprint_telemetry::{InternalEvent, Latency, Registry, Throttle, log_repeated};

/// Route and answer status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    /// `recent`, `recent_batch`, `windows`, `top`, …
    pub route: &'static str,
    /// The HTTP status.
    pub status: u16,
}

/// Route and where the answer came from.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteSource {
    /// The route.
    pub route: &'static str,
    /// `redis`, `mysql` or `cache`.
    pub source: &'static str,
}

/// One label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Store {
    /// `redis` or `mysql`.
    pub store: &'static str,
}

/// Why.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// The reason.
    pub reason: &'static str,
}

/// The query service's metrics in one process.
#[derive(Debug, Default)]
pub struct QueryMetrics {
    throttle: Throttle,
    requests: Family<RouteStatus, Counter>,
    latency: Family<RouteSource, Latency>,
    fallbacks: Family<Reason, Counter>,
    refused: Family<Reason, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    store_reads: Family<Store, Counter>,
    breaker_state: Family<Store, Gauge>,
}

impl QueryMetrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = QueryMetrics::default();
        registry.register(
            "serve_requests",
            "Requests answered, by route and HTTP status",
            m.requests.clone(),
        );
        registry.register(
            "serve_latency_seconds",
            "Time to answer, by route and by where the answer came from (redis, mysql, cache)",
            m.latency.clone(),
        );
        registry.register(
            "serve_fallbacks",
            "Reads that went to MySQL because Redis could not answer, by reason",
            m.fallbacks.clone(),
        );
        registry.register(
            "serve_refused",
            "Requests refused before any store was read, by reason (rate_app, rate_ip, overload, token)",
            m.refused.clone(),
        );
        registry.register(
            "serve_cache_hits",
            "Answers served from the cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "serve_cache_misses",
            "Answers the cache did not have",
            m.cache_misses.clone(),
        );
        registry.register(
            "serve_store_reads",
            "Reads sent to a store, by store",
            m.store_reads.clone(),
        );
        registry.register(
            "serve_breaker_state",
            "Each store's read breaker: 0 closed, 1 half-open, 2 open",
            m.breaker_state.clone(),
        );
        Arc::new(m)
    }

    /// Reads sent to `store` so far.
    pub fn store_reads(&self, store: &'static str) -> u64 {
        self.store_reads.get_or_create(&Store { store }).get()
    }

    /// The latency of `route` answered from `source`.
    pub fn latency(&self, route: &'static str, source: &'static str) -> Latency {
        self.latency
            .get_or_create(&RouteSource { route, source })
            .clone()
    }
}

/// A request was answered.
pub struct RequestAnswered {
    /// Its route.
    pub route: &'static str,
    /// The status.
    pub status: u16,
    /// Where the answer came from, for a 200.
    pub source: Option<&'static str>,
    /// How long it took.
    pub took: Duration,
}

impl InternalEvent<QueryMetrics> for RequestAnswered {
    fn emit(self, m: &QueryMetrics) {
        m.requests
            .get_or_create(&RouteStatus {
                route: self.route,
                status: self.status,
            })
            .inc();
        if let Some(source) = self.source {
            m.latency(self.route, source).record(self.took);
        }
    }
}

/// A read went to MySQL because Redis could not answer.
pub struct FellBack {
    /// `miss`, `timeout`, `breaker_open`, `degraded`, `busy` or `error`.
    pub reason: &'static str,
}

impl InternalEvent<QueryMetrics> for FellBack {
    fn emit(self, m: &QueryMetrics) {
        m.fallbacks
            .get_or_create(&Reason {
                reason: self.reason,
            })
            .inc();
    }
}

/// A request was refused before any store was read.
pub struct RequestRefused {
    /// `rate_app`, `rate_ip`, `overload`, `token` or `forbidden`.
    pub reason: &'static str,
}

impl InternalEvent<QueryMetrics> for RequestRefused {
    fn emit(self, m: &QueryMetrics) {
        m.refused
            .get_or_create(&Reason {
                reason: self.reason,
            })
            .inc();
        log_repeated! { info, m.throttle, format!("refused/{}", self.reason),
        reason = self.reason, "requests refused" }
    }
}

/// The cache answered, or did not.
pub struct CacheLooked {
    /// Whether it had the answer.
    pub hit: bool,
}

impl InternalEvent<QueryMetrics> for CacheLooked {
    fn emit(self, m: &QueryMetrics) {
        if self.hit {
            m.cache_hits.inc();
        } else {
            m.cache_misses.inc();
        }
    }
}

/// A read was sent to a store.
pub struct StoreRead {
    /// The store.
    pub store: &'static str,
}

impl InternalEvent<QueryMetrics> for StoreRead {
    fn emit(self, m: &QueryMetrics) {
        m.store_reads
            .get_or_create(&Store { store: self.store })
            .inc();
    }
}

/// A store read failed or timed out.
pub struct StoreReadFailed<'a> {
    /// The store.
    pub store: &'a str,
    /// What failed.
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent<QueryMetrics> for StoreReadFailed<'_> {
    fn emit(self, m: &QueryMetrics) {
        log_repeated! { warn, m.throttle, format!("read/{}", self.store),
        store = self.store, error = %self.error, "a store read failed" }
    }
}

/// A store read succeeded (ends a run of failures in the log).
pub struct StoreReadSucceeded<'a> {
    /// The store.
    pub store: &'a str,
}

impl InternalEvent<QueryMetrics> for StoreReadSucceeded<'_> {
    fn emit(self, m: &QueryMetrics) {
        if let Some(r) = m.throttle.end(&format!("read/{}", self.store)) {
            tracing::info!(
                store = self.store,
                failed = r.total,
                seconds = r.seconds_since_began(),
                "store reads succeed again"
            );
        }
    }
}

/// A store's breaker was looked at.
pub struct BreakerSeen {
    /// The store.
    pub store: &'static str,
    /// Its state.
    pub state: BreakerState,
}

impl InternalEvent<QueryMetrics> for BreakerSeen {
    fn emit(self, m: &QueryMetrics) {
        let v = match self.state {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        m.breaker_state
            .get_or_create(&Store { store: self.store })
            .set(v);
    }
}
