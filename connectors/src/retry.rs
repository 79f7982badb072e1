//! The retry topic (`footprint.retry`): the codec of its records, and the
//! producer that diverts writes a sink could not apply.
//!
//! A record is self-contained JSON: the sink, the row's identity, the whole
//! row (every field and its `version`), the first-failure time, the attempts
//! made and the reason. Its Kafka key is `SINK|IDENTITY`, so every record of
//! one identity lands in one partition. Diverting waits until Kafka has
//! acknowledged every record; whatever Kafka does not take in time is
//! appended to the local [`Journal`] and resent
//! later, so a diverted write is never lost.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use footprint_dataflows::Output;
use footprint_dataflows::key::GroupKey;
use footprint_sinks::SinkError;
use footprint_sinks::util::guard::{Diversion, Divert};
use footprint_telemetry::InternalEvent;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::{Deserialize, Serialize};

use crate::ConnectorError;
use crate::client::{Delivery, FootprintContext, KafkaSettings};
use crate::events::{
    ConnectorMetrics, JournalResent, ProducerRenewed, RecordsJournaled, RetryTopicRefused,
};
use crate::journal::Journal;

/// The retry topic's producer.
type Producer_ = FutureProducer<FootprintContext>;

/// The default retry topic.
pub const RETRY_TOPIC: &str = "footprint.retry";

/// One write that was not applied to its store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryRecord {
    /// The sink it was meant for (`redis`, `mysql`).
    pub sink: String,
    /// The row's identity, readable (`aggregate/window_start/key…` or `recent/app/user`).
    pub identity: String,
    /// The row's version (also inside `row`); 0 for recent activity, which
    /// stores merge instead of comparing versions.
    pub version: u64,
    /// The row itself.
    pub row: Output,
    /// When the write first failed (or was first diverted), ms since the epoch.
    pub first_failure_ms: i64,
    /// Attempts made against the store.
    pub attempts: u32,
    /// Why it was not applied.
    pub reason: String,
}

/// A record that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("undecodable retry record: {0}")]
pub struct CodecError(String);

impl RetryRecord {
    /// Builds the record of `row` diverted for `why`.
    pub fn new(row: &Output, why: &Diversion<'_>) -> Self {
        RetryRecord {
            sink: why.sink.to_owned(),
            identity: identity(row),
            version: match row {
                Output::Window(w) => w.version,
                // Recent activity merges instead of comparing versions.
                Output::Recent(_) => 0,
            },
            row: row.clone(),
            first_failure_ms: why.first_failure_ms,
            attempts: why.attempts,
            reason: why.reason.clone(),
        }
    }

    /// Kafka key and value.
    pub fn encode(&self) -> (Vec<u8>, Vec<u8>) {
        let key = format!("{}|{}", self.sink, self.identity).into_bytes();
        // Serialising plain data to JSON cannot fail.
        let value = serde_json::to_vec(self).unwrap_or_default();
        (key, value)
    }

    /// Decodes a record's value.
    pub fn decode(value: &[u8]) -> Result<Self, CodecError> {
        serde_json::from_slice(value).map_err(|e| CodecError(e.to_string()))
    }
}

/// A row's identity as text: unique per (aggregate, key, window start) or (app, user).
pub fn identity(row: &Output) -> String {
    match row {
        Output::Window(w) => {
            let key = GroupKey::from_parts(w.key.iter().map(|(_, v)| v.as_str()));
            format!("{}/{}/{}", w.aggregate, w.window_start, key.as_str())
        }
        Output::Recent(r) => format!(
            "recent/{}",
            GroupKey::from_parts([r.app_id.as_str(), r.user_id.as_str()]).as_str()
        ),
    }
}

/// Diverts rows to the retry topic, with the journal as the fallback.
pub struct RetryTopic {
    /// Replaced when it fails for good (see `renew_if_failed`).
    producer: Mutex<Arc<Producer_>>,
    /// What a new producer is made from.
    config: ClientConfig,
    settings: KafkaSettings,
    metrics: Arc<ConnectorMetrics>,
    topic: String,
    journal: Mutex<Journal>,
    journal_path: std::path::PathBuf,
    journal_records: std::sync::atomic::AtomicUsize,
    ack_timeout: Duration,
}

impl RetryTopic {
    /// A producer for `topic`, journaling to `journal_path` when Kafka does
    /// not acknowledge a record within `ack_timeout`.
    pub fn new(
        settings: &KafkaSettings,
        topic: &str,
        journal_path: &Path,
        ack_timeout: Duration,
    ) -> Result<Self, ConnectorError> {
        let timeout_ms = ack_timeout.as_millis().max(1).to_string();
        let config = settings.producer_config(
            Delivery::AtLeastOnce,
            &[
                ("linger.ms", "5"),
                ("message.timeout.ms", timeout_ms.as_str()),
            ],
        );
        let producer = config
            .create_with_context(settings.context())
            .map_err(ConnectorError::Config)?;
        let journal = Journal::open(journal_path).map_err(|source| ConnectorError::Io {
            what: "open the journal",
            path: journal_path.to_owned(),
            source,
        })?;
        let journal_records = std::sync::atomic::AtomicUsize::new(journal.len());
        let metrics = Arc::clone(&settings.metrics);
        JournalResent {
            records: 0,
            journal: journal.len(),
        }
        .emit(&metrics);
        Ok(RetryTopic {
            producer: Mutex::new(Arc::new(producer)),
            config,
            settings: settings.clone(),
            metrics,
            topic: topic.to_owned(),
            journal: Mutex::new(journal),
            journal_path: journal_path.to_owned(),
            journal_records,
            ack_timeout,
        })
    }

    fn producer(&self) -> Arc<Producer_> {
        Arc::clone(
            &self
                .producer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The retry topic's producer is not idempotent ([`Delivery::AtLeastOnce`]),
    /// but a user's properties can make it so. An idempotent producer that
    /// hit a fatal error, or that the broker fenced (tansu's memory store
    /// does when librdkafka bumped the epoch itself after a delivery timed
    /// out), refuses every record from then on: it is replaced by a new one. The records it refused stay in the journal and are
    /// resent; a record sent twice is harmless, as replay applies the
    /// version rule.
    fn renew_if_failed(&self, producer: &Producer_, fenced: bool) {
        let (code, reason) = match producer.client().fatal_error() {
            Some((code, reason)) => (code, reason),
            None if fenced => (
                rdkafka::types::RDKafkaErrorCode::ProducerFenced,
                "fenced by the broker".to_owned(),
            ),
            None => return,
        };
        match self
            .config
            .create_with_context::<_, Producer_>(self.settings.context())
        {
            Ok(fresh) => {
                ProducerRenewed {
                    producer: "retry",
                    reason: &format!("{code:?}: {reason}"),
                }
                .emit(&self.metrics);
                *self
                    .producer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(fresh);
            }
            Err(e) => tracing::error!(
                topic = %self.topic,
                error = %e,
                "the retry topic's producer failed for good and a new one could not be made"
            ),
        }
    }

    /// Produces `records` and waits for every acknowledgement; returns the ones
    /// Kafka did not take.
    fn produce(&self, records: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let producer = self.producer();
        let mut pending = Vec::with_capacity(records.len());
        let mut failed = Vec::new();
        let mut send_error: Option<String> = None;
        for (key, value) in records {
            let mut record = FutureRecord::to(&self.topic).key(&key).payload(&value);
            let deadline = std::time::Instant::now() + self.ack_timeout;
            let delivery = loop {
                match producer.send_result(record) {
                    Ok(d) => break Some(d),
                    Err((e, r)) => {
                        let full = matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        );
                        if !full || std::time::Instant::now() >= deadline {
                            send_error.get_or_insert_with(|| e.to_string());
                            break None;
                        }
                        record = r;
                        producer.poll(Duration::from_millis(5));
                    }
                }
            };
            match delivery {
                Some(d) => pending.push((key, value, d)),
                None => failed.push((key, value)),
            }
        }
        let mut first_error = send_error;
        let mut fenced = false;
        for (key, value, d) in pending {
            match futures::executor::block_on(d) {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    fenced |= matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::ProducerFenced
                        )
                    );
                    first_error.get_or_insert_with(|| e.to_string());
                    failed.push((key, value));
                }
                Err(_) => {
                    first_error.get_or_insert_with(|| "delivery report lost".into());
                    failed.push((key, value));
                }
            }
        }
        if let Some(error) = first_error {
            RetryTopicRefused {
                topic: &self.topic,
                records: failed.len(),
                error: &error,
            }
            .emit(&self.metrics);
            self.renew_if_failed(&producer, fenced);
        }
        failed
    }

    /// Resends what the journal holds and keeps only what Kafka still did
    /// not take. The journal is not locked while records are produced, so
    /// diversions go on meanwhile. Returns how many records Kafka took.
    pub fn resend_journal(&self) -> Result<usize, ConnectorError> {
        let lock = || {
            self.journal
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let io = |what| {
            move |source| ConnectorError::Io {
                what,
                path: self.journal_path.clone(),
                source,
            }
        };
        let snapshot = lock().read_all().map_err(io("read the journal"))?;
        if snapshot.is_empty() {
            return Ok(0);
        }
        let n = snapshot.len();
        let failed = self.produce(snapshot);
        let taken = n - failed.len();
        let mut journal = lock();
        // Records appended while we produced follow the snapshot's.
        let now = journal.read_all().map_err(io("read the journal"))?;
        let mut keep = failed;
        keep.extend(now.into_iter().skip(n));
        let result = if keep.is_empty() {
            journal.clear()
        } else {
            journal.rewrite(&keep)
        };
        result.map_err(io("rewrite the journal"))?;
        let left = journal.len();
        self.journal_records
            .store(left, std::sync::atomic::Ordering::SeqCst);
        drop(journal);
        JournalResent {
            records: taken,
            journal: left,
        }
        .emit(&self.metrics);
        if taken < n {
            return Err(ConnectorError::Unacknowledged {
                what: format!("resend the journal to {}", self.topic),
                left: n - taken,
            });
        }
        Ok(taken)
    }

    /// Records waiting in the journal.
    pub fn journal_len(&self) -> usize {
        self.journal_records
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Divert for RetryTopic {
    fn divert(&self, rows: &[Output], why: &Diversion<'_>) -> Result<(), SinkError> {
        let records: Vec<(Vec<u8>, Vec<u8>)> = rows
            .iter()
            .map(|r| RetryRecord::new(r, why).encode())
            .collect();
        let failed = self.produce(records);
        if failed.is_empty() {
            return Ok(());
        }
        let n = failed.len();
        let mut journal = self
            .journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        journal
            .append(&failed)
            .map_err(|e| SinkError::Unavailable {
                sink: why.sink.into(),
                detail: format!("retry topic and journal both failed: {e}"),
            })?;
        self.journal_records
            .store(journal.len(), std::sync::atomic::Ordering::SeqCst);
        RecordsJournaled {
            sink: why.sink,
            records: n,
            journal: journal.len(),
        }
        .emit(&self.metrics);
        Ok(())
    }
}
