//! The control topic (`footprint.control`): where degrade-switch changes are
//! published, so every worker process and the replay job see them, and so
//! they survive restarts.
//!
//! Each record's key is a sink name and its value the mode (`auto` or
//! `degraded`); the latest record per key wins, which is exactly what a
//! compacted topic keeps. At start-up a process reads the topic to its end
//! before it writes anything, then keeps following it; a change reaches
//! every follower well within a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use footprint_sinks::util::switch::{Mode, Switches};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::ConnectorError;
use crate::admin::Admin;
use crate::client::{Delivery, FootprintContext, KafkaSettings};
use crate::compacted;
use crate::events::ReadFailed;
use footprint_telemetry::InternalEvent;

/// The default control topic.
pub const CONTROL_TOPIC: &str = "footprint.control";

/// Publishes switch changes.
pub struct ControlPublisher {
    producer: FutureProducer<FootprintContext>,
    topic: String,
}

impl ControlPublisher {
    /// A publisher to `topic`.
    pub fn new(settings: &KafkaSettings, topic: &str) -> Result<Self, ConnectorError> {
        let producer = settings
            .producer_config(
                Delivery::Ordered,
                &[("linger.ms", "0"), ("message.timeout.ms", "10000")],
            )
            .create_with_context(settings.context())
            .map_err(ConnectorError::Config)?;
        Ok(ControlPublisher {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// Publishes `sink`'s new mode and waits until Kafka has it.
    pub async fn publish(&self, sink: &str, mode: Mode) -> Result<(), ConnectorError> {
        let record = FutureRecord::to(&self.topic)
            .key(sink)
            .payload(mode.as_str());
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map(|_| ())
            .map_err(|(e, _)| ConnectorError::Kafka {
                what: format!("publish {sink}={mode} to {}", self.topic),
                source: e,
            })
    }
}

fn apply(switches: &Switches, key: &[u8], value: &[u8]) {
    let (Ok(sink), Ok(text)) = (std::str::from_utf8(key), std::str::from_utf8(value)) else {
        return;
    };
    match text.parse::<Mode>() {
        Ok(mode) => {
            if let Some(old) = switches.set(sink, mode)
                && old != mode
            {
                tracing::info!(sink, %mode, "switch changed");
            }
        }
        Err(e) => tracing::warn!(sink, error = %e, "ignoring a bad control record"),
    }
}

/// Follows the control topic: reads it to its end (so `switches` hold the
/// persisted modes when this returns), then keeps applying changes on a
/// thread until `stop` is set.
pub fn follow(
    admin: &Admin,
    topic: &str,
    switches: Arc<Switches>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, ConnectorError> {
    let consumer = compacted::read_to_end(
        admin,
        topic,
        "footprint-control",
        &[("fetch.wait.max.ms", "50")],
        Duration::from_secs(15),
        |key, value| apply(&switches, key, value),
    )?;
    let handle = std::thread::Builder::new()
        .name("control-topic".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => apply(
                        &switches,
                        m.key().unwrap_or_default(),
                        m.payload().unwrap_or_default(),
                    ),
                    Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                    Some(Err(e)) => ReadFailed {
                        what: "the control topic",
                        error: &e,
                    }
                    .emit(consumer.context().metrics()),
                }
            }
        })
        .map_err(|source| ConnectorError::Thread {
            what: "control-topic",
            source,
        })?;
    Ok(handle)
}
