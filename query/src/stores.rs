//! One read of one store.
//!
//! [`RedisStore`] reads over one multiplexed connection: concurrent requests
//! share it, and the reads of one request (a batch of users, the windows of
//! a series) go out as one pipeline, one round trip. [`MySqlStore`] reads
//! through the sinks' [`MySqlReader`] on tokio's blocking pool. Neither
//! decides anything: a miss is `None`, a failure an error, and
//! [`crate::service`] chooses what to do next.

use std::sync::Arc;
use std::time::Duration;

use footprint_dataflows::key::GroupKey;
use footprint_dataflows::{PipelineSpec, RecentEntry, WindowRow};
use footprint_sinks::SinkError;
use footprint_sinks::marks::{Mark, parse_redis_mark};
use footprint_sinks::mysql::read::MySqlReader;
use footprint_sinks::redis::{
    TopIndex, WindowId, decode_recent, decode_window_read, marks_hash, recent_list, recent_set,
    score, top_key, window_hash, window_string,
};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use tokio::sync::Mutex;

const REDIS: &str = "redis";

/// A hash's fields, as `HGETALL` returns them.
type Fields = Vec<(String, String)>;

/// Reads the Redis sink's keys.
pub struct RedisStore {
    client: Client,
    url: String,
    prefix: String,
    spec: Arc<PipelineSpec>,
    timeout: Duration,
    /// The top-N indexes the Redis sink keeps.
    top: Vec<TopIndex>,
    top_script: redis::Script,
    /// The shared connection, made at the first read and after a failure.
    conn: Mutex<Option<MultiplexedConnection>>,
}

/// Reads the top `ARGV[1]` members of the sorted set KEYS[1] and returns
/// their rows: first those scored above the `n`th, then those tied with it,
/// in key order, as many as fit in `n`. Each row is an array: the member
/// (its encoded group key), the value of its string (`ARGV[2]` + member;
/// empty when there is none), then the fields of its hash of the earlier
/// layout (`ARGV[3]` + member), if one is left. Returns false when the set
/// does not exist.
const TOP_READ: &str = r#"
local n = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local top = redis.call('ZREVRANGE', KEYS[1], 0, n - 1, 'WITHSCORES')
local out = {}
if #top == 0 then return out end
local function row(m)
  local r = {m, redis.call('GET', ARGV[2] .. m) or ''}
  for _, x in ipairs(redis.call('HGETALL', ARGV[3] .. m)) do r[#r + 1] = x end
  return r
end
local last = tonumber(top[#top])
for i = 1, #top, 2 do
  if tonumber(top[i + 1]) > last then out[#out + 1] = row(top[i]) end
end
local ties = redis.call('ZRANGEBYSCORE', KEYS[1], top[#top], top[#top], 'LIMIT', 0, n - #out)
for _, m in ipairs(ties) do out[#out + 1] = row(m) end
return out
"#;

impl RedisStore {
    /// A reader of `url` under `prefix`; connects at the first read.
    pub fn new(
        url: &str,
        prefix: &str,
        spec: Arc<PipelineSpec>,
        timeout: Duration,
    ) -> Result<Self, SinkError> {
        let client = Client::open(url).map_err(|e| SinkError::Config {
            sink: REDIS.into(),
            detail: format!("invalid url `{url}`: {e}"),
        })?;
        Ok(RedisStore {
            client,
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            spec,
            timeout,
            top: Vec::new(),
            top_script: redis::Script::new(TOP_READ),
            conn: Mutex::new(None),
        })
    }

    /// The same reader, knowing the top-N indexes the sink keeps.
    #[must_use]
    pub fn with_top(mut self, top: Vec<TopIndex>) -> Self {
        self.top = top;
        self
    }

    /// Whether the sink keeps the top-N index of aggregate `agg` within
    /// `within` leading fields by measure `by`.
    pub fn has_top(&self, agg: usize, within: usize, by: usize) -> bool {
        let a = &self.spec.aggregates[agg];
        let Some(by) = a.measures.get(by) else {
            return false;
        };
        let by = by.to_string();
        self.top
            .iter()
            .any(|t| t.aggregate == a.name && t.within == within && t.by == by)
    }

    /// The top `n` groups of the window of `agg` starting at `window_start`
    /// within `prefix` (of `within` fields) by measure `by`, highest first
    /// and ties in key order; `None` when Redis holds no index of that
    /// window or a row it names is gone.
    pub async fn top(
        &self,
        agg: usize,
        window_start: i64,
        prefix: &GroupKey,
        by: usize,
        n: usize,
    ) -> Result<Option<Vec<WindowRow>>, SinkError> {
        let a = &self.spec.aggregates[agg];
        let by_name = a.measures[by].to_string();
        if n == 0 {
            return Ok(Some(Vec::new()));
        }
        let key = top_key(&self.prefix, &a.name, window_start, &by_name, prefix);
        let all = GroupKey::from_parts(std::iter::empty::<&str>());
        let rows_at = window_string(&self.prefix, &a.name, window_start, &all);
        let hashes_at = window_hash(&self.prefix, &a.name, window_start, &all);
        let mut conn = self.conn().await?;
        let mut invocation = self.top_script.key(&key);
        invocation.arg(n).arg(&rows_at).arg(&hashes_at);
        let read: Option<Vec<Vec<String>>> = match invocation.invoke_async(&mut conn).await {
            Ok(v) => v,
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    *self.conn.lock().await = None;
                }
                return Err(self.error(&e));
            }
        };
        let Some(read) = read else {
            return Ok(None);
        };
        let mut rows = Vec::with_capacity(read.len());
        for stored in read {
            let [member, value, fields @ ..] = stored.as_slice() else {
                return Ok(None);
            };
            let group = GroupKey::from_encoded(member);
            let id = WindowId {
                aggregate: &a.name,
                window_start,
                key: &group,
            };
            let hash: Vec<(String, String)> = fields
                .chunks(2)
                .filter_map(|p| match p {
                    [f, v] => Some((f.clone(), v.clone())),
                    _ => None,
                })
                .collect();
            match decode_window_read(&self.spec, &id, value, &hash) {
                Ok(Some(row)) => rows.push(row),
                Ok(None) => return Ok(None),
                Err(what) => {
                    return Err(SinkError::Rejected {
                        sink: REDIS.into(),
                        detail: format!("{what} of {}", a.name),
                    });
                }
            }
        }
        let order = |r: &WindowRow| {
            (
                r.measures.get(by).map_or(f64::MIN, |(_, v)| score(*v)),
                GroupKey::from_parts(r.key.iter().map(|(_, v)| v.as_str())),
            )
        };
        rows.sort_by(|x, y| {
            let ((sx, kx), (sy, ky)) = (order(x), order(y));
            sy.total_cmp(&sx).then_with(|| kx.as_str().cmp(ky.as_str()))
        });
        Ok(Some(rows))
    }

    async fn conn(&self) -> Result<MultiplexedConnection, SinkError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(self.timeout.max(Duration::from_millis(200))));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error(&e))?;
        *guard = Some(c.clone());
        Ok(c)
    }

    fn error(&self, e: &redis::RedisError) -> SinkError {
        SinkError::Unavailable {
            sink: REDIS.into(),
            detail: format!("{}: {e}", self.url),
        }
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, SinkError> {
        let mut conn = self.conn().await?;
        match pipe.query_async::<T>(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    *self.conn.lock().await = None;
                }
                Err(self.error(&e))
            }
        }
    }

    /// The recent activity of `users` of `app`; `None` where Redis holds
    /// none. Each user's sorted set is merged with the list of the earlier
    /// layout where one is left.
    pub async fn recent(
        &self,
        app: &str,
        users: &[String],
    ) -> Result<Vec<Option<Vec<RecentEntry>>>, SinkError> {
        let keep = self.spec.recent.as_ref().map_or(0, |r| r.keep);
        let mut pipe = redis::pipe();
        for u in users {
            pipe.cmd("ZRANGE")
                .arg(recent_set(&self.prefix, app, u))
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES");
            pipe.cmd("LRANGE")
                .arg(recent_list(&self.prefix, app, u))
                .arg(0)
                .arg(-1);
        }
        let stored: Vec<Vec<String>> = self.query(&pipe).await?;
        stored
            .chunks(2)
            .map(|pair| {
                let (set, list) = match pair {
                    [set, list] => (set, list),
                    _ => return Ok(None),
                };
                if set.is_empty() && list.is_empty() {
                    return Ok(None);
                }
                let unreadable = |e: String| SinkError::Rejected {
                    sink: REDIS.into(),
                    detail: format!("an unreadable recent-activity entry: {e}"),
                };
                let mut entries = decode_recent(set, false).map_err(unreadable)?;
                entries.extend(decode_recent(list, true).map_err(unreadable)?);
                Ok(Some(RecentEntry::newest(&entries, keep)))
            })
            .collect()
    }

    /// The windows of aggregate `agg` for the group `key` starting at
    /// `starts`; `None` where Redis holds none.
    pub async fn windows(
        &self,
        agg: usize,
        key: &GroupKey,
        starts: &[i64],
    ) -> Result<Vec<Option<WindowRow>>, SinkError> {
        let name = &self.spec.aggregates[agg].name;
        let mut pipe = redis::pipe();
        for s in starts {
            pipe.cmd("GET")
                .arg(window_string(&self.prefix, name, *s, key));
            pipe.cmd("HGETALL")
                .arg(window_hash(&self.prefix, name, *s, key));
        }
        // Per start: the string's value, and the hash's fields.
        let read: Vec<(Option<String>, Fields)> = self.query(&pipe).await?;
        starts
            .iter()
            .zip(read)
            .map(|(start, (value, hash))| {
                let id = WindowId {
                    aggregate: name,
                    window_start: *start,
                    key,
                };
                decode_window_read(&self.spec, &id, value.as_deref().unwrap_or(""), &hash).map_err(
                    |what| SinkError::Rejected {
                        sink: REDIS.into(),
                        detail: format!("{what} of {name}"),
                    },
                )
            })
            .collect()
    }

    /// The completeness marks of aggregate `agg`.
    pub async fn marks(&self, agg: usize) -> Result<Vec<Mark>, SinkError> {
        let name = &self.spec.aggregates[agg].name;
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(marks_hash(&self.prefix, name));
        let (fields,): (Vec<(String, String)>,) = self.query(&pipe).await?;
        Ok(fields
            .iter()
            .filter_map(|(w, v)| parse_redis_mark(w, v))
            .collect())
    }
}

/// Reads the MySQL sink's tables on tokio's blocking pool.
pub struct MySqlStore {
    reader: Arc<MySqlReader>,
}

impl MySqlStore {
    /// A reader of `url`'s tables for `spec` under `table_prefix`, with at
    /// most `connections` connections, each read bounded by `timeout`.
    pub fn new(
        url: &str,
        spec: &Arc<PipelineSpec>,
        table_prefix: &str,
        connections: usize,
        timeout: Duration,
    ) -> Result<Self, SinkError> {
        Ok(MySqlStore {
            reader: Arc::new(MySqlReader::new(
                url,
                spec,
                table_prefix,
                connections,
                timeout,
            )?),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&MySqlReader) -> Result<T, SinkError> + Send + 'static,
    ) -> Result<T, SinkError> {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || f(&reader))
            .await
            .unwrap_or_else(|e| {
                Err(SinkError::Unavailable {
                    sink: "mysql".into(),
                    detail: format!("the read did not finish: {e}"),
                })
            })
    }

    /// The recent activity of `users` of `app`; `None` where MySQL holds none.
    pub async fn recent(
        &self,
        app: &str,
        users: &[String],
    ) -> Result<Vec<Option<Vec<RecentEntry>>>, SinkError> {
        let (app, users) = (app.to_owned(), users.to_vec());
        self.blocking(move |r| {
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            r.recent(&app, &users)
        })
        .await
    }

    /// The windows of aggregate `agg` for the group `key` starting at `starts`.
    pub async fn windows(
        &self,
        agg: usize,
        key: &GroupKey,
        starts: &[i64],
    ) -> Result<Vec<WindowRow>, SinkError> {
        let (key, starts) = (key.clone(), starts.to_vec());
        self.blocking(move |r| r.windows(agg, &key, &starts)).await
    }

    /// The top `n` groups of a window by measure `by`.
    pub async fn top(
        &self,
        agg: usize,
        window_start: i64,
        prefix: &GroupKey,
        by: usize,
        n: usize,
    ) -> Result<Vec<WindowRow>, SinkError> {
        let prefix = prefix.clone();
        self.blocking(move |r| r.top(agg, window_start, &prefix, by, n))
            .await
    }

    /// The completeness marks of `aggregate`.
    pub async fn marks(&self, aggregate: &str) -> Result<Vec<Mark>, SinkError> {
        let aggregate = aggregate.to_owned();
        self.blocking(move |r| r.marks(&aggregate)).await
    }
}
