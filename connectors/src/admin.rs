//! Topic administration: discovering partitions and offsets, creating topics.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaErrorCode;

use crate::ConnectorError;
use crate::client::{FootprintConsumer, KafkaSettings};

const TIMEOUT: Duration = Duration::from_secs(15);

fn consumer(settings: &KafkaSettings) -> Result<FootprintConsumer, ConnectorError> {
    settings
        .client_config(&[("group.id", "footprint-admin")])
        .create_with_context(crate::client::FootprintContext::default())
        .map_err(|e| ConnectorError::Config(e.to_string()))
}

/// The partitions of `topic`, in ascending order, or `None` when it does not exist.
pub fn partitions(
    settings: &KafkaSettings,
    topic: &str,
) -> Result<Option<Vec<i32>>, ConnectorError> {
    let c = consumer(settings)?;
    let md = c
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|e| ConnectorError::Unreachable {
            brokers: settings.brokers.clone(),
            detail: e.to_string(),
        })?;
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
pub fn watermarks(
    settings: &KafkaSettings,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), ConnectorError> {
    let c = consumer(settings)?;
    c.fetch_watermarks(topic, partition, TIMEOUT)
        .map_err(|e| ConnectorError::Unreachable {
            brokers: settings.brokers.clone(),
            detail: format!("offsets of {topic}/{partition}: {e}"),
        })
}

/// A partition's committed position in a consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The next offset to read.
    pub offset: i64,
    /// The partition's largest event time before it, when the commit carries it.
    pub max_ts: Option<i64>,
}

/// The offsets `group_id` has committed for `partitions` ((topic, partition)
/// pairs), in the same order; `None` where nothing is committed.
pub fn committed(
    settings: &KafkaSettings,
    group_id: &str,
    partitions: &[(String, i32)],
) -> Result<Vec<Option<Committed>>, ConnectorError> {
    let c: FootprintConsumer = settings.consumer(group_id, &[])?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (topic, p) in partitions {
        tpl.add_partition(topic, *p);
    }
    let got = c
        .committed_offsets(tpl, TIMEOUT)
        .map_err(|e| ConnectorError::Unreachable {
            brokers: settings.brokers.clone(),
            detail: format!("committed offsets of group {group_id}: {e}"),
        })?;
    Ok(partitions
        .iter()
        .map(|(topic, p)| {
            let elem = got.find_partition(topic, *p)?;
            match elem.offset() {
                rdkafka::Offset::Offset(offset) => Some(Committed {
                    offset,
                    max_ts: crate::reader::parse_checkpoint_metadata(elem.metadata()),
                }),
                _ => None,
            }
        })
        .collect())
}

/// Creates `topic` with `partitions` partitions unless it already exists.
/// Returns whether it was created.
pub async fn ensure_topic(
    settings: &KafkaSettings,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<bool, ConnectorError> {
    if self::partitions(settings, topic)?.is_some() {
        return Ok(false);
    }
    let admin: AdminClient<DefaultClientContext> = settings
        .client_config(&[])
        .create()
        .map_err(|e| ConnectorError::Config(e.to_string()))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .map_err(|e| ConnectorError::Request(format!("create topic {topic}: {e}")))?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => return Ok(false),
            Err((name, code)) => {
                return Err(ConnectorError::Request(format!(
                    "create topic {name}: {code}"
                )));
            }
        }
    }
    // Wait until the new topic's metadata is visible, so that callers can use it at once.
    for _ in 0..50 {
        if self::partitions(settings, topic)?.is_some_and(|p| p.len() == partitions as usize) {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ConnectorError::Request(format!(
        "topic {topic} was created but its metadata did not appear"
    )))
}
