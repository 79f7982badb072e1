//! The JSON the API answers with. All times are ms since the epoch.

use serde::Serialize;
use serde_json::{Map, Value};

use footprint_dataflows::{RecentEntry, WindowRow};

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Read from Redis.
    Redis,
    /// Read from MySQL (Redis could not answer, or holds no such thing).
    Mysql,
    /// From the service's cache.
    Cache,
}

impl Source {
    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Redis => "redis",
            Source::Mysql => "mysql",
            Source::Cache => "cache",
        }
    }
}

/// One recent-activity entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Event time.
    pub ts: i64,
    /// Behaviour type.
    pub event: String,
    /// Item, if any.
    pub item_id: Option<String>,
    /// Source partition.
    pub partition: u32,
    /// Offset in it.
    pub offset: i64,
}

impl From<&RecentEntry> for Entry {
    fn from(e: &RecentEntry) -> Self {
        Entry {
            ts: e.ts,
            event: e.event.to_string(),
            item_id: e.item_id.as_ref().map(ToString::to_string),
            partition: e.partition,
            offset: e.offset,
        }
    }
}

/// `GET /v1/apps/{app}/users/{user}/recent`.
#[derive(Debug, Clone, Serialize)]
pub struct Recent {
    /// The app.
    pub app_id: String,
    /// The user.
    pub user_id: String,
    /// Whether any activity of the user is stored.
    pub found: bool,
    /// Newest first.
    pub events: Vec<Entry>,
    /// Where it came from.
    pub source: Source,
    /// Whether a store was degraded or its breaker open.
    pub degraded: bool,
}

/// One user of a batch.
#[derive(Debug, Clone, Serialize)]
pub struct BatchUser {
    /// The user.
    pub user_id: String,
    /// Whether any activity of the user is stored.
    pub found: bool,
    /// Newest first.
    pub events: Vec<Entry>,
    /// Where it came from.
    pub source: Source,
}

/// `POST /v1/apps/{app}/users/recent`.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    /// The app.
    pub app_id: String,
    /// One entry per user asked, in order.
    pub users: Vec<BatchUser>,
    /// Whether a store was degraded or its breaker open.
    pub degraded: bool,
}

/// A window row as the API shows it: its times, state and measures by name.
pub fn window_json(row: &WindowRow, with_key: bool) -> Value {
    let mut m = Map::new();
    if with_key {
        let key: Map<String, Value> = row
            .key
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(v.as_str())))
            .collect();
        m.insert("key".into(), Value::Object(key));
    }
    m.insert("window_start".into(), row.window_start.into());
    m.insert("window_end".into(), row.window_end.into());
    m.insert("final".into(), row.is_final.into());
    m.insert("version".into(), row.version.into());
    for (name, v) in &row.measures {
        m.insert(name.to_string(), v.to_json());
    }
    Value::Object(m)
}

/// `GET /v1/aggregates/{name}/windows`.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// The aggregate.
    pub aggregate: String,
    /// The group asked for.
    pub key: Map<String, Value>,
    /// The range asked for: windows starting in `[from, to)`.
    pub from: i64,
    /// End of the range (exclusive).
    pub to: i64,
    /// The stored windows in the range, oldest first.
    pub windows: Vec<Value>,
    /// Every window of this aggregate ending at or before this is final in
    /// the store that answered; `null` when that store has no marks yet.
    pub complete_up_to: Option<i64>,
    /// Where it came from.
    pub source: Source,
    /// Whether a store was degraded or its breaker open.
    pub degraded: bool,
}

/// `GET /v1/aggregates/{name}/top`.
#[derive(Debug, Clone, Serialize)]
pub struct Top {
    /// The aggregate.
    pub aggregate: String,
    /// The window.
    pub window_start: i64,
    /// Its end.
    pub window_end: i64,
    /// The measure ranked by.
    pub by: String,
    /// The key prefix asked for.
    pub prefix: Map<String, Value>,
    /// The groups, highest first (ties by key).
    pub groups: Vec<Value>,
    /// As in a series.
    pub complete_up_to: Option<i64>,
    /// Where it came from.
    pub source: Source,
    /// Whether a store was degraded or its breaker open.
    pub degraded: bool,
}

/// An error answer.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    /// What is wrong, in words.
    pub error: String,
}
