//! Footprint's telemetry: how every crate reports what happened.
//!
//! Each crate declares what it reports in one module of its own (`events`),
//! as past-tense structs that implement [`InternalEvent`]: `RowsDiverted`,
//! `BreakerOpened`, `EventRejected`, … An event's [`InternalEvent::emit`]
//! logs it and moves its metric in one step, so a count and its log line
//! never drift apart.
//!
//! Metrics live in one [`Registry`] per process (the `prometheus-client`
//! crate), with typed label sets. Each crate's metrics struct registers its
//! families there once, at start-up, and keeps the handles, so the hot path
//! is an atomic add. `/metrics` is [`encode`] of that registry, in the
//! Prometheus text format.
//!
//! This crate owns only the machinery: the latency histogram ([`Latency`],
//! on hdrhistogram), an operator's share of a process-wide gauge
//! ([`GaugeShare`]), and rate-limited logging of repeated failures
//! ([`Throttle`]), and what every HTTP service reads and says alike: bearer
//! tokens and `Retry-After`
//! ([`access`]). It knows nothing of events, windows, stores or Kafka.

pub mod access;
pub mod latency;
pub mod share;
pub mod throttle;

pub use latency::{Latency, Quantiles};
pub use prometheus_client;
pub use prometheus_client::registry::Registry;
pub use share::GaugeShare;
pub use throttle::{Repeats, Throttle};
pub use tracing;

/// Logs an event that may repeat, through a [`Throttle`]: at `$level`
/// (`warn`, `error`, …), under the kind `$kind`, only when the throttle lets
/// it through, with how many times it happened since the last line and since
/// it began. The rest is what `tracing` takes: fields, then the message.
///
/// ```
/// use footprint_telemetry::{Throttle, log_repeated};
/// let throttle = Throttle::new(std::time::Duration::from_secs(10));
/// log_repeated!(warn, throttle, "store down", sink = "mysql", "the store is down");
/// ```
#[macro_export]
macro_rules! log_repeated {
    ($level:ident, $throttle:expr, $kind:expr, $($rest:tt)+) => {
        if let Some(r) = $throttle.hit(&$kind) {
            $crate::tracing::$level!(
                times_since_last_line = r.since_last,
                times_since_began = r.total,
                seconds_since_began = r.seconds_since_began(),
                $($rest)+
            );
        }
    };
}

/// The wall clock, ms since the epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The metric name prefix every Footprint metric carries.
pub const PREFIX: &str = "footprint";

/// A registry whose metrics are all prefixed with [`PREFIX`].
pub fn registry() -> Registry {
    Registry::with_prefix(PREFIX)
}

/// The `Content-Type` of [`encode`]'s output (Prometheus text, version 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The registry in the Prometheus text format, as `/metrics` serves it.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}

/// Something that happened, which a crate reports: it is logged (at the
/// level the event chooses, rate-limited when it repeats) and counted in one
/// step. `M` is the metrics it moves: the emitting crate's metrics struct.
pub trait InternalEvent<M: ?Sized> {
    /// Logs the event and updates its metrics.
    fn emit(self, metrics: &M);
}
