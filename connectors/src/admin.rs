//! [`Admin`]: one client per process for topic administration: discovering
//! partitions and offsets, reading committed positions, creating topics.
//!
//! librdkafka clients are costly to make (each starts threads and connects
//! to every broker), so a process makes one `Admin` and shares it: the
//! start-up planning, the topic set-up and the lag reporters all ask it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaErrorCode;

use crate::ConnectorError;
use crate::client::{FootprintConsumer, FootprintContext, KafkaSettings};
use crate::offsets::parse_checkpoint_metadata;

const TIMEOUT: Duration = Duration::from_secs(15);

/// A partition's committed position in a consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The next offset to read.
    pub offset: i64,
    /// The partition's largest event time before it, when the commit carries it.
    pub max_ts: Option<i64>,
}

/// One partition's end offset and how far a group is behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// The end offset the broker reports.
    pub end: i64,
    /// The end offset minus the group's committed offset.
    pub behind: u64,
    /// The group's committed offset, if it committed one.
    pub committed: Option<i64>,
}

/// Topic administration through one shared set of clients.
pub struct Admin {
    settings: KafkaSettings,
    /// Metadata and watermark queries.
    metadata: FootprintConsumer,
    /// Topic creation.
    client: AdminClient<FootprintContext>,
    /// Committed offsets are read through a consumer of the group itself.
    groups: Mutex<HashMap<String, Arc<FootprintConsumer>>>,
}

impl Admin {
    /// The clients for `settings`.
    pub fn new(settings: &KafkaSettings) -> Result<Arc<Admin>, ConnectorError> {
        let metadata = settings
            .client_config(&[("group.id", "footprint-admin")])
            .create_with_context(settings.context())
            .map_err(ConnectorError::Config)?;
        let client = settings
            .client_config(&[])
            .create_with_context(settings.context())
            .map_err(ConnectorError::Config)?;
        Ok(Arc::new(Admin {
            settings: settings.clone(),
            metadata,
            client,
            groups: Mutex::new(HashMap::new()),
        }))
    }

    /// The settings the clients were made from.
    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    fn unreachable(&self, detail: String) -> ConnectorError {
        ConnectorError::Unreachable {
            brokers: self.settings.brokers.clone(),
            detail,
        }
    }

    /// The partitions of `topic`, in ascending order, or `None` when it does not exist.
    pub fn partitions(&self, topic: &str) -> Result<Option<Vec<i32>>, ConnectorError> {
        let md = self
            .metadata
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(|e| self.unreachable(format!("metadata of {topic}: {e}")))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        if t.error().is_some() || t.partitions().is_empty() {
            return Ok(None);
        }
        let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        ps.sort_unstable();
        Ok(Some(ps))
    }

    /// Low (first available) and high (next to be written) offsets of a partition.
    pub fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), ConnectorError> {
        self.metadata
            .fetch_watermarks(topic, partition, TIMEOUT)
            .map_err(|e| self.unreachable(format!("offsets of {topic}/{partition}: {e}")))
    }

    fn group(&self, group_id: &str) -> Result<Arc<FootprintConsumer>, ConnectorError> {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = groups.get(group_id) {
            return Ok(Arc::clone(c));
        }
        let c = Arc::new(self.settings.consumer(group_id, &[])?);
        groups.insert(group_id.to_owned(), Arc::clone(&c));
        Ok(c)
    }

    /// The offsets `group_id` has committed for `partitions` ((topic,
    /// partition) pairs), in the same order; `None` where nothing is committed.
    pub fn committed(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Option<Committed>>, ConnectorError> {
        let c = self.group(group_id)?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (topic, p) in partitions {
            tpl.add_partition(topic, *p);
        }
        let got = c
            .committed_offsets(tpl, TIMEOUT)
            .map_err(|e| self.unreachable(format!("committed offsets of group {group_id}: {e}")))?;
        Ok(partitions
            .iter()
            .map(|(topic, p)| {
                let elem = got.find_partition(topic, *p)?;
                match elem.offset() {
                    rdkafka::Offset::Offset(offset) => Some(Committed {
                        offset,
                        max_ts: parse_checkpoint_metadata(elem.metadata()),
                    }),
                    _ => None,
                }
            })
            .collect())
    }

    /// A consumer in `group_id` (with `extra` properties), assigned every
    /// partition of `topic` at `offset`, and those partitions; an error
    /// when the topic does not exist.
    pub fn assigned(
        &self,
        group_id: &str,
        extra: &[(&str, &str)],
        topic: &str,
        offset: rdkafka::Offset,
    ) -> Result<(FootprintConsumer, Vec<i32>), ConnectorError> {
        let parts = self
            .partitions(topic)?
            .ok_or_else(|| ConnectorError::MissingTopic(topic.to_owned()))?;
        let consumer = self.settings.consumer(group_id, extra)?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition_offset(topic, *p, offset)
                .map_err(ConnectorError::kafka(format!("{topic}/{p}")))?;
        }
        consumer
            .assign(&tpl)
            .map_err(ConnectorError::kafka(format!("assign {topic}")))?;
        Ok((consumer, parts))
    }

    /// Each of `partitions`' end offset, and how far `group_id` is behind
    /// it: end offset minus committed offset (the first offset where
    /// nothing is committed), in the same order.
    pub fn lag(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Lag>, ConnectorError> {
        let committed = self.committed(group_id, partitions)?;
        let mut out = Vec::with_capacity(partitions.len());
        for ((topic, p), c) in partitions.iter().zip(committed) {
            let (low, high) = self.watermarks(topic, *p)?;
            let committed = c.map(|c| c.offset);
            let from = committed.unwrap_or(low).max(low);
            out.push(Lag {
                end: high,
                behind: high.saturating_sub(from).max(0) as u64,
                committed,
            });
        }
        Ok(out)
    }

    /// Creates `topic` with `partitions` partitions unless it already exists.
    /// Returns whether it was created.
    pub fn ensure_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication: i32,
    ) -> Result<bool, ConnectorError> {
        if self.partitions(topic)?.is_some() {
            return Ok(false);
        }
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
        let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let results = futures::executor::block_on(self.client.create_topics([&new], &opts))
            .map_err(ConnectorError::kafka(format!("create topic {topic}")))?;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => return Ok(false),
                Err((name, code)) => {
                    return Err(ConnectorError::Kafka {
                        what: format!("create topic {name}"),
                        source: rdkafka::error::KafkaError::AdminOp(code),
                    });
                }
            }
        }
        self.await_topic(topic, Some(partitions))?;
        Ok(true)
    }

    /// Creates `topic` (one partition, compacted) unless it exists. Brokers
    /// that refuse the topic config still get a plain topic: readers take the
    /// latest record per key either way.
    pub fn ensure_compacted(&self, topic: &str) -> Result<(), ConnectorError> {
        if self.partitions(topic)?.is_some() {
            return Ok(());
        }
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let compacted =
            NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
        let created = futures::executor::block_on(self.client.create_topics([&compacted], &opts));
        if !matches!(created.as_deref(), Ok([Ok(_)])) {
            let plain = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
            let _ = futures::executor::block_on(self.client.create_topics([&plain], &opts));
        }
        self.await_topic(topic, None)
    }

    /// Waits until the new topic's metadata is visible, so that callers can use it at once.
    fn await_topic(&self, topic: &str, partitions: Option<i32>) -> Result<(), ConnectorError> {
        for _ in 0..50 {
            let seen = self.partitions(topic)?;
            if seen.is_some_and(|p| partitions.is_none_or(|n| p.len() == n as usize)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(ConnectorError::NotVisible(format!(
            "topic {topic} was created but its metadata did not appear"
        )))
    }
}
