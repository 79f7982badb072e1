//! What the collector reports: its metrics, and the internal events that
//! move them.

use std::sync::Arc;

use footprint_telemetry::prometheus_client::encoding::EncodeLabelSet;
use footprint_telemetry::prometheus_client::metrics::counter::Counter;
use footprint_telemetry::prometheus_client::metrics::family::Family;
use footprint_telemetry::prometheus_client::metrics::gauge::Gauge;
use footprint_telemetry::{InternalEvent, Latency, Registry, Throttle, log_repeated};

/// An app and an event's outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppOutcome {
    /// The event's `app_id` (`-` when it had none that could be read).
    pub app: String,
    /// `accepted`, `duplicate`, `rejected`, `shed`, `over_quota`,
    /// `unavailable` or `in_flight`.
    pub outcome: &'static str,
}

/// An app and a reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppReason {
    /// The app (`-` when unknown).
    pub app: String,
    /// The dead-letter reason name, or `wrong_app`.
    pub reason: &'static str,
}

/// One app.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct App {
    /// The app.
    pub app: String,
}

/// An HTTP status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Status {
    /// The status code.
    pub status: u16,
}

/// The collector's metrics in one process.
#[derive(Debug, Default)]
pub struct CollectMetrics {
    throttle: Throttle,
    events: Family<AppOutcome, Counter>,
    rejected: Family<AppReason, Counter>,
    spilled: Family<App, Counter>,
    shed_steps: Family<App, Counter>,
    shed_now: Family<App, Gauge>,
    requests: Family<Status, Counter>,
    latency: Latency,
    drained: Counter,
    delivered_late: Counter,
    spill_bytes: Gauge,
    spill_records: Gauge,
    producer_queue: Gauge,
    spilling: Gauge,
}

impl CollectMetrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = CollectMetrics::default();
        registry.register(
            "collect_events",
            "Events received, by app and outcome (accepted, duplicate, rejected, shed, over_quota, unavailable, in_flight)",
            m.events.clone(),
        );
        registry.register(
            "collect_rejected",
            "Events rejected, by app and reason (the dead-letter reasons, and wrong_app)",
            m.rejected.clone(),
        );
        registry.register(
            "collect_spilled",
            "Accepted events written to the local spill, by app",
            m.spilled.clone(),
        );
        registry.register(
            "collect_shed_steps",
            "Times an app was shed under pressure",
            m.shed_steps.clone(),
        );
        registry.register(
            "collect_shed",
            "Whether an app is shed now (1) or accepted (0)",
            m.shed_now.clone(),
        );
        registry.register(
            "collect_requests",
            "Requests to POST /v1/events answered, by HTTP status",
            m.requests.clone(),
        );
        registry.register(
            "collect_request_latency_seconds",
            "Time to answer POST /v1/events",
            m.latency.clone(),
        );
        registry.register(
            "collect_drained",
            "Spilled events produced to Kafka by the drainer",
            m.drained.clone(),
        );
        registry.register(
            "collect_delivered_late",
            "Spilled events not produced again because Kafka acknowledged their first copy after the request had spilled them",
            m.delivered_late.clone(),
        );
        registry.register(
            "collect_spill_bytes",
            "Bytes waiting in the spill",
            m.spill_bytes.clone(),
        );
        registry.register(
            "collect_spill_records",
            "Events waiting in the spill",
            m.spill_records.clone(),
        );
        registry.register(
            "collect_producer_queue",
            "Events in the producer's queue, not yet acknowledged by Kafka",
            m.producer_queue.clone(),
        );
        registry.register(
            "collect_spilling",
            "1 while new events go to the spill (Kafka did not answer, or the spill is not yet drained)",
            m.spilling.clone(),
        );
        Arc::new(m)
    }

    /// Events of `app` with `outcome` so far.
    pub fn events(&self, app: &str, outcome: &'static str) -> u64 {
        self.events
            .get_or_create(&AppOutcome {
                app: app.to_owned(),
                outcome,
            })
            .get()
    }

    /// The request latency.
    pub fn latency(&self) -> &Latency {
        &self.latency
    }

    /// Sets the gauges that describe the spill and the producer now.
    pub fn set_levels(&self, spill_bytes: u64, spill_records: u64, queue: u64, spilling: bool) {
        self.spill_bytes.set(spill_bytes as i64);
        self.spill_records.set(spill_records as i64);
        self.producer_queue.set(queue as i64);
        self.spilling.set(i64::from(spilling));
    }
}

/// Events of one app met one outcome.
pub struct EventsAnswered<'a> {
    /// The app.
    pub app: &'a str,
    /// The outcome.
    pub outcome: &'static str,
    /// How many.
    pub count: u64,
}

impl InternalEvent<CollectMetrics> for EventsAnswered<'_> {
    fn emit(self, m: &CollectMetrics) {
        if self.count > 0 {
            m.events
                .get_or_create(&AppOutcome {
                    app: self.app.to_owned(),
                    outcome: self.outcome,
                })
                .inc_by(self.count);
        }
    }
}

/// An event was rejected.
pub struct EventRejected<'a> {
    /// Its app, if it could be read.
    pub app: Option<&'a str>,
    /// The reason.
    pub reason: &'static str,
}

impl InternalEvent<CollectMetrics> for EventRejected<'_> {
    fn emit(self, m: &CollectMetrics) {
        let app = self.app.unwrap_or("-").to_owned();
        m.rejected
            .get_or_create(&AppReason {
                app: app.clone(),
                reason: self.reason,
            })
            .inc();
        m.events
            .get_or_create(&AppOutcome {
                app,
                outcome: "rejected",
            })
            .inc();
        log_repeated! { info, m.throttle, format!("rejected/{}", self.reason),
        reason = self.reason, "events rejected" }
    }
}

/// A request was answered.
pub struct RequestAnswered {
    /// The status.
    pub status: u16,
    /// How long it took.
    pub took: std::time::Duration,
}

impl InternalEvent<CollectMetrics> for RequestAnswered {
    fn emit(self, m: &CollectMetrics) {
        m.requests
            .get_or_create(&Status {
                status: self.status,
            })
            .inc();
        m.latency.record(self.took);
    }
}

/// Accepted events went to the spill.
pub struct EventsSpilled<'a> {
    /// Their app.
    pub app: &'a str,
    /// How many.
    pub count: u64,
}

impl InternalEvent<CollectMetrics> for EventsSpilled<'_> {
    fn emit(self, m: &CollectMetrics) {
        m.spilled
            .get_or_create(&App {
                app: self.app.to_owned(),
            })
            .inc_by(self.count);
    }
}

/// The drainer finished a round.
pub struct SpillDrained {
    /// Records produced to Kafka.
    pub produced: u64,
    /// Records skipped: their first copy was acknowledged late.
    pub delivered_late: u64,
}

impl InternalEvent<CollectMetrics> for SpillDrained {
    fn emit(self, m: &CollectMetrics) {
        m.drained.inc_by(self.produced);
        m.delivered_late.inc_by(self.delivered_late);
    }
}

/// New events go to the spill from now on, or directly to Kafka again.
pub struct SpillingChanged {
    /// Whether they go to the spill.
    pub spilling: bool,
    /// Why.
    pub why: &'static str,
}

impl InternalEvent<CollectMetrics> for SpillingChanged {
    fn emit(self, m: &CollectMetrics) {
        m.spilling.set(i64::from(self.spilling));
        if self.spilling {
            tracing::warn!(
                why = self.why,
                "Kafka is not taking events: accepted events go to the local spill until it drains"
            );
        } else {
            tracing::info!("the spill is drained: events go straight to Kafka again");
        }
    }
}

/// An app was shed, or taken back.
pub struct AppShed<'a> {
    /// The app (`*` for every app that is not listed).
    pub app: &'a str,
    /// Shed (true) or taken back (false).
    pub shed: bool,
    /// The pressure that moved it.
    pub pressure: f64,
}

impl InternalEvent<CollectMetrics> for AppShed<'_> {
    fn emit(self, m: &CollectMetrics) {
        let label = App {
            app: self.app.to_owned(),
        };
        m.shed_now.get_or_create(&label).set(i64::from(self.shed));
        if self.shed {
            m.shed_steps.get_or_create(&label).inc();
            tracing::warn!(
                app = self.app,
                pressure = self.pressure,
                "shedding an app: its events get 503 until the pressure falls"
            );
        } else {
            tracing::info!(
                app = self.app,
                pressure = self.pressure,
                "taking a shed app back"
            );
        }
    }
}
