//! The Redis sink: serving copies of the results, written with a
//! compare-and-set on `version`.
//!
//! # Layout
//! - A window row is one hash, `PREFIX:w:AGGREGATE:WINDOW_START:GROUPKEY`
//!   (`GROUPKEY` is the length-prefixed group key, e.g. `4:app01:view`), with
//!   the fields `version`, `final` (0/1), `aggregate`, `window_start`,
//!   `window_end`, `key` (a JSON array of `[field, value]` pairs) and one field
//!   per measure, named as in the config (`count`, `distinct(user_id)`,
//!   `sum(value)`; sums as exact decimals). It expires `ttl` after its last
//!   write.
//! - A user's recent activity is a sorted set, `PREFIX:e:{APPUSER}`, of at
//!   most `keep` entries ([`recent_member`]): each scored by its event
//!   time, with the member `PARTITION:OFFSET:["EVENT","ITEM"]` (partition
//!   and offset zero-padded to 10 and 19 digits, so that entries of one
//!   time sort by source position). It expires after the recent-activity
//!   TTL.
//! - Earlier versions kept it as a list of JSON entries,
//!   `PREFIX:r:{APPUSER}` ([`recent_list`]). Those lists are no longer
//!   written; readers merge them with the sorted set while they last (until
//!   their TTL).
//! - A top-N index ([`TopIndex`], `[[sinks.redis.top]]`) is a sorted set per
//!   window and key prefix, `PREFIX:t:AGGREGATE:WINDOW_START:MEASURE:PREFIXKEY`
//!   (`PREFIXKEY` encoded like `GROUPKEY`, from the leading `within` fields),
//!   whose members are the encoded group keys of the window's rows, scored
//!   by the measure (a sum in micro-units, exact up to 2^53). It expires
//!   with the rows, `ttl` after its last write.
//!
//! # Version rule
//! Window rows are applied by a Lua script, up to [`WINDOWS_PER_CALL`] per
//! call, that compares each row's `(version, final)` with the stored pair
//! and leaves the row's hash alone when the stored one is higher, so
//! retries, replays and restarts can never put an older value over a newer
//! one. A recent-activity row is merged without a script: `ZADD` of its
//! entries (the union: a stored entry is the same member), then
//! `ZREMRANGEBYRANK` down to the newest `keep` (the cut) and `PEXPIRE`. That
//! gives the same set whatever the order and number of writes. All rows of
//! a `write` go out in one pipeline (window rows first, then recent
//! activity; they never share a key).

use std::sync::Arc;
use std::time::Duration;

use footprint_dataflows::key::GroupKey;
use footprint_dataflows::{
    Measure, MeasureValue, Output, PipelineSpec, RecentEntry, RecentRow, WindowRow,
};
use redis::{Client, Connection, Script};

use crate::{Sink, SinkError, SinkFactory};

const NAME: &str = "redis";

/// Applies window rows, each only when its `(version, final)` is not lower
/// than the stored pair, and keeps the top-N indexes of the rows applied.
/// KEYS[1..n] the rows' hashes; ARGV[1] ttl ms, then per row, in KEYS
/// order: version, final, the number of field/value arguments that follow,
/// those fields and values, the number `m` of indexes the row is in, and,
/// when `m > 0`, the row's member (its encoded group key) and `m` pairs of
/// index key and score.
///
/// One call carries up to [`WINDOWS_PER_CALL`] rows: each row is still its
/// own compare-and-set, but the cost of invoking a script is paid once per
/// call instead of once per row. An index entry is written only with its
/// row, so it follows the same version rule. (The index keys travel in
/// ARGV: like the rows of one call, they need not share a cluster slot, so
/// the sink speaks to one Redis server, not to a Redis Cluster.)
const WINDOW_CAS: &str = r#"
local ttl = tonumber(ARGV[1])
local i, applied = 2, 0
for k = 1, #KEYS do
  local nv, nf, n = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local m = tonumber(ARGV[i + 3 + n])
  local cur = redis.call('HMGET', KEYS[k], 'version', 'final')
  local cv, cf = tonumber(cur[1]), tonumber(cur[2]) or 0
  if not (cv and (cv > nv or (cv == nv and cf > nf))) then
    redis.call('HSET', KEYS[k], 'version', ARGV[i], 'final', ARGV[i + 1], unpack(ARGV, i + 3, i + 2 + n))
    if ttl > 0 then redis.call('PEXPIRE', KEYS[k], ttl) end
    for j = 1, m do
      local at = i + 4 + n + 2 * j - 1
      redis.call('ZADD', ARGV[at], ARGV[at + 1], ARGV[i + 4 + n])
      if ttl > 0 then redis.call('PEXPIRE', ARGV[at], ttl) end
    end
    applied = applied + 1
  end
  i = i + 4 + n
  if m > 0 then i = i + 1 + 2 * m end
end
return applied
"#;

/// Window rows per call of the window script.
pub const WINDOWS_PER_CALL: usize = 64;

/// Builds Redis sinks.
#[derive(Debug, Clone)]
pub struct RedisSinkFactory {
    client: Client,
    url: String,
    prefix: String,
    ttl: Duration,
    recent_ttl: Duration,
    recent_keep: usize,
    top: Arc<Vec<TopIndex>>,
}

/// A top-N index the sink keeps: the groups of each window of `aggregate`
/// within a prefix of its `within` leading group-by fields, by measure `by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopIndex {
    /// The aggregate's name.
    pub aggregate: String,
    /// How many leading group-by fields make the prefix (0: the whole window).
    pub within: usize,
    /// The measure, named as in the config (`count`, `distinct(user_id)`, …).
    pub by: String,
}

impl RedisSinkFactory {
    /// Sinks writing to `url` (`redis://host:port[/db]`) under `prefix`, with
    /// window rows expiring after `ttl`, recent activity after `recent_ttl`
    /// (zero: never), and `recent_keep` entries kept per user. The server is
    /// contacted on the first write, so the pipeline can start while Redis is
    /// down.
    pub fn new(
        url: &str,
        prefix: &str,
        ttl: Duration,
        recent_ttl: Duration,
        recent_keep: usize,
    ) -> Result<Self, SinkError> {
        let client = Client::open(url).map_err(|e| SinkError::Config {
            sink: NAME.into(),
            detail: format!("invalid url `{url}`: {e}"),
        })?;
        Ok(RedisSinkFactory {
            client,
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            ttl,
            recent_ttl,
            recent_keep,
            top: Arc::new(Vec::new()),
        })
    }

    /// The same factory, keeping the top-N indexes `top` too.
    #[must_use]
    pub fn with_top(mut self, top: Vec<TopIndex>) -> Self {
        self.top = Arc::new(top);
        self
    }

    /// The completeness marks of `aggregate` ([`crate::marks`]).
    pub fn load_marks(&self, aggregate: &str) -> Result<Vec<crate::marks::Mark>, SinkError> {
        let mut conn = self.connect()?;
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(marks_hash(&self.prefix, aggregate))
            .query(&mut conn)
            .map_err(|e| classify(&self.url, e))?;
        Ok(fields
            .iter()
            .filter_map(|(w, v)| crate::marks::parse_redis_mark(w, v))
            .collect())
    }

    fn connect(&self) -> Result<Connection, SinkError> {
        let conn = self
            .client
            .get_connection_with_timeout(Duration::from_secs(2))
            .map_err(|e| classify(&self.url, e))?;
        let timeout = Some(Duration::from_secs(5));
        conn.set_read_timeout(timeout)
            .map_err(|e| classify(&self.url, e))?;
        conn.set_write_timeout(timeout)
            .map_err(|e| classify(&self.url, e))?;
        Ok(conn)
    }

    /// Every window row stored under this prefix, with measures in `spec` order.
    pub fn load_windows(&self, spec: &PipelineSpec) -> Result<Vec<WindowRow>, SinkError> {
        let mut conn = self.connect()?;
        let keys: Vec<String> =
            scan(&mut conn, &format!("{}:w:*", self.prefix)).map_err(|e| classify(&self.url, e))?;
        let mut rows = Vec::with_capacity(keys.len());
        for k in keys {
            let fields: Vec<(String, String)> = redis::cmd("HGETALL")
                .arg(&k)
                .query(&mut conn)
                .map_err(|e| classify(&self.url, e))?;
            let row = decode_window(spec, &fields).ok_or_else(|| SinkError::Rejected {
                sink: NAME.into(),
                detail: format!("unreadable hash {k}"),
            })?;
            rows.push(row);
        }
        Ok(rows)
    }

    /// Every user's recent activity stored under this prefix, sorted by
    /// (app, user): each user's sorted set merged with the list of the
    /// earlier layout, where one is left.
    pub fn load_recent(&self) -> Result<Vec<RecentRow>, SinkError> {
        let mut conn = self.connect()?;
        let mut rows = Vec::new();
        for (kind, legacy) in [("e", false), ("r", true)] {
            let head = format!("{}:{kind}:", self.prefix);
            let keys: Vec<String> =
                scan(&mut conn, &format!("{head}*")).map_err(|e| classify(&self.url, e))?;
            for k in keys {
                let Some(tag) = k.strip_prefix(&head) else {
                    continue;
                };
                let inner = tag
                    .strip_prefix('{')
                    .and_then(|t| t.strip_suffix('}'))
                    .unwrap_or(tag);
                let parts = GroupKey::from_encoded(inner).parts();
                let (Some(app_id), Some(user_id)) = (parts.first(), parts.get(1)) else {
                    continue;
                };
                let mut read = redis::cmd(if legacy { "LRANGE" } else { "ZRANGE" });
                read.arg(&k).arg(0).arg(-1);
                if !legacy {
                    read.arg("WITHSCORES");
                }
                let stored: Vec<String> =
                    read.query(&mut conn).map_err(|e| classify(&self.url, e))?;
                let events = decode_recent(&stored, legacy).map_err(|e| SinkError::Rejected {
                    sink: NAME.into(),
                    detail: format!("{k}: {e}"),
                })?;
                rows.push(RecentRow {
                    app_id: app_id.clone(),
                    user_id: user_id.clone(),
                    events,
                });
            }
        }
        Ok(RecentRow::merge_by_user(rows, self.recent_keep))
    }
}

impl SinkFactory for RedisSinkFactory {
    fn name(&self) -> &str {
        NAME
    }

    fn build(&self, _worker: usize, _peers: usize) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(self.sink()))
    }
}

/// Writes rows to Redis; reconnects after a failure.
pub struct RedisSink {
    factory: RedisSinkFactory,
    conn: Option<Connection>,
    window: Script,
}

impl RedisSinkFactory {
    /// A sink, not yet connected.
    fn sink(&self) -> RedisSink {
        RedisSink {
            factory: self.clone(),
            conn: None,
            window: Script::new(WINDOW_CAS),
        }
    }

    /// The bytes a batch becomes on the wire (RESP), without a server: for
    /// benchmarks of the encoding.
    pub fn encode(&self, rows: &[Output]) -> Vec<u8> {
        self.sink().pipeline(rows).get_packed_pipeline()
    }
}

impl RedisSink {
    fn pipeline(&self, rows: &[Output]) -> redis::Pipeline {
        let f = &self.factory;
        let mut pipe = redis::pipe();
        let windows: Vec<&WindowRow> = rows
            .iter()
            .filter_map(|r| match r {
                Output::Window(w) => Some(w),
                Output::Recent(_) => None,
            })
            .collect();
        for group in windows.chunks(WINDOWS_PER_CALL) {
            let mut c = redis::cmd("EVALSHA");
            c.arg(self.window.get_hash()).arg(group.len());
            for w in group {
                c.arg(window_key(&f.prefix, w));
            }
            c.arg(f.ttl.as_millis() as u64);
            for w in group {
                let key: Vec<[&str; 2]> = w.key.iter().map(|(k, v)| [&**k, v.as_str()]).collect();
                c.arg(w.version)
                    .arg(u8::from(w.is_final))
                    .arg(8 + 2 * w.measures.len());
                c.arg("aggregate").arg(&*w.aggregate);
                c.arg("window_start")
                    .arg(w.window_start)
                    .arg("window_end")
                    .arg(w.window_end);
                c.arg("key")
                    .arg(serde_json::to_string(&key).unwrap_or_default());
                for (name, v) in &w.measures {
                    c.arg(&**name).arg(measure_text(*v));
                }
                let indexes: Vec<(String, f64)> = f
                    .top
                    .iter()
                    .filter(|t| *t.aggregate == *w.aggregate && t.within <= w.key.len())
                    .filter_map(|t| {
                        let (_, v) = w.measures.iter().find(|(name, _)| **name == *t.by)?;
                        let within =
                            GroupKey::from_parts(w.key[..t.within].iter().map(|(_, v)| v.as_str()));
                        Some((
                            top_key(&f.prefix, &w.aggregate, w.window_start, &t.by, &within),
                            score(*v),
                        ))
                    })
                    .collect();
                c.arg(indexes.len());
                if !indexes.is_empty() {
                    c.arg(GroupKey::from_parts(w.key.iter().map(|(_, v)| v.as_str())).as_str());
                    for (key, score) in indexes {
                        c.arg(key).arg(score);
                    }
                }
            }
            pipe.add_command(c).ignore();
        }
        for row in rows {
            match row {
                Output::Window(_) => {}
                Output::Recent(r) => {
                    if r.events.is_empty() {
                        continue;
                    }
                    let key = recent_set(&f.prefix, &r.app_id, &r.user_id);
                    let mut add = redis::cmd("ZADD");
                    add.arg(&key);
                    for e in &r.events {
                        add.arg(e.ts).arg(recent_member(e));
                    }
                    pipe.add_command(add).ignore();
                    // Ranks count from the oldest: keep the newest `keep`.
                    pipe.cmd("ZREMRANGEBYRANK")
                        .arg(&key)
                        .arg(0)
                        .arg(-(f.recent_keep as i64) - 1)
                        .ignore();
                    if !f.recent_ttl.is_zero() {
                        pipe.cmd("PEXPIRE")
                            .arg(&key)
                            .arg(f.recent_ttl.as_millis() as u64)
                            .ignore();
                    }
                }
            }
        }
        pipe
    }
}

impl Sink for RedisSink {
    fn name(&self) -> &str {
        NAME
    }

    fn folds(&self) -> bool {
        true
    }

    fn write(&mut self, rows: &[Output]) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let pipe = self.pipeline(rows);
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.factory.connect()?,
        };
        let mut result = pipe.exec(&mut conn);
        if let Err(e) = &result
            && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        {
            // A restarted or flushed server lost the scripts: load them and try once more.
            self.window
                .load(&mut conn)
                .map_err(|e| classify(&self.factory.url, e))?;
            result = pipe.exec(&mut conn);
        }
        match result {
            Ok(()) => {
                self.conn = Some(conn);
                Ok(())
            }
            Err(e) => Err(classify(&self.factory.url, e)),
        }
    }
}

/// The hash key of a window row.
pub fn window_key(prefix: &str, w: &WindowRow) -> String {
    let key = GroupKey::from_parts(w.key.iter().map(|(_, v)| v.as_str()));
    window_hash(prefix, &w.aggregate, w.window_start, &key)
}

/// The hash key of the window of `aggregate` starting at `window_start`
/// for the group `key`.
pub fn window_hash(prefix: &str, aggregate: &str, window_start: i64, key: &GroupKey) -> String {
    format!("{prefix}:w:{aggregate}:{window_start}:{}", key.as_str())
}

/// The sorted set of the top-N index of the windows of `aggregate` starting
/// at `window_start`, by measure `by`, within the key prefix `within`.
pub fn top_key(
    prefix: &str,
    aggregate: &str,
    window_start: i64,
    by: &str,
    within: &GroupKey,
) -> String {
    format!(
        "{prefix}:t:{aggregate}:{window_start}:{by}:{}",
        within.as_str()
    )
}

/// A measure as a sorted-set score: exact for counts up to 2^53, and for
/// sums up to 2^53 micro-units.
pub fn score(v: MeasureValue) -> f64 {
    match v {
        MeasureValue::Count(n) | MeasureValue::Distinct(n) => n as f64,
        MeasureValue::Sum(micros) => micros as f64,
    }
}

/// The sorted-set key of a user's recent activity.
pub fn recent_set(prefix: &str, app_id: &str, user_id: &str) -> String {
    let tag = GroupKey::from_parts([app_id, user_id]);
    format!("{prefix}:e:{{{}}}", tag.as_str())
}

/// The list key of a user's recent activity in the earlier layout, read
/// (while it lasts) and never written.
pub fn recent_list(prefix: &str, app_id: &str, user_id: &str) -> String {
    let tag = GroupKey::from_parts([app_id, user_id]);
    format!("{prefix}:r:{{{}}}", tag.as_str())
}

/// The member of an entry in a user's recent-activity set (its score is the
/// event time): `PARTITION:OFFSET:["EVENT","ITEM"]`, with the partition and
/// offset zero-padded, so that members of one score sort by source
/// position, and the same entry is always the same member.
pub fn recent_member(e: &RecentEntry) -> String {
    let what = serde_json::to_string(&(&e.event, &e.item_id)).unwrap_or_default();
    format!("{:010}:{:019}:{what}", e.partition, e.offset)
}

/// Decodes a member of a user's recent-activity set and its score.
pub fn decode_recent_member(member: &str, score: &str) -> Option<RecentEntry> {
    let mut parts = member.splitn(3, ':');
    let partition = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    let (event, item_id): (String, Option<String>) = serde_json::from_str(parts.next()?).ok()?;
    let ts = score.parse::<f64>().ok()?;
    Some(RecentEntry {
        ts: ts as i64,
        partition,
        offset,
        event: event.into(),
        item_id: item_id.map(Into::into),
    })
}

/// Decodes what a read of a user's recent activity returned: `stored` is a
/// sorted set's `ZRANGE … WITHSCORES` (member, score, …), or with `legacy`
/// a list of the earlier layout (JSON entries).
pub fn decode_recent(stored: &[String], legacy: bool) -> Result<Vec<RecentEntry>, String> {
    if legacy {
        return stored
            .iter()
            .map(|e| decode_recent_entry(e).ok_or_else(|| format!("unreadable recent entry {e}")))
            .collect();
    }
    stored
        .chunks(2)
        .map(|pair| match pair {
            [member, score] => decode_recent_member(member, score)
                .ok_or_else(|| format!("unreadable recent entry {member} (score {score})")),
            _ => Err("a recent-activity member without a score".to_owned()),
        })
        .collect()
}

/// The hash key of an aggregate's completeness marks ([`crate::marks`]).
pub fn marks_hash(prefix: &str, aggregate: &str) -> String {
    format!("{prefix}:m:{aggregate}")
}

/// One recent-activity entry as a list of the earlier layout holds it.
pub fn decode_recent_entry(text: &str) -> Option<RecentEntry> {
    serde_json::from_str(text).ok()
}

/// Keeps the greater `complete_up_to` of a writer's mark. KEYS[1] the
/// marks hash; ARGV writer, writers, complete_up_to, run.
const MARK_MAX: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local c = tonumber(ARGV[3])
if cur then
  local old = tonumber(string.match(cur, '^%d+:(%-?%d+):'))
  if old and old > c then c = old end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. string.format('%d', c) .. ':' .. ARGV[4])
return c
"#;

/// Writes completeness marks to Redis, and reads back diverted rows.
pub struct RedisMarks {
    factory: RedisSinkFactory,
    conn: Option<Connection>,
    script: Script,
}

impl RedisSinkFactory {
    /// A mark writer on this sink's server and prefix.
    pub fn marks(&self) -> RedisMarks {
        RedisMarks {
            factory: self.clone(),
            conn: None,
            script: Script::new(MARK_MAX),
        }
    }
}

impl RedisMarks {
    fn with_conn<T>(
        &mut self,
        f: impl FnOnce(&mut Connection, &Script) -> redis::RedisResult<T>,
    ) -> Result<T, SinkError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.factory.connect()?,
        };
        match f(&mut conn, &self.script) {
            Ok(v) => {
                self.conn = Some(conn);
                Ok(v)
            }
            Err(e) => Err(classify(&self.factory.url, e)),
        }
    }
}

impl crate::marks::MarkWriter for RedisMarks {
    fn store(&self) -> &str {
        NAME
    }

    fn write(&mut self, aggregate: &str, mark: &crate::marks::Mark) -> Result<(), SinkError> {
        let key = marks_hash(&self.factory.prefix, aggregate);
        self.with_conn(|conn, script| {
            script
                .key(&key)
                .arg(mark.writer)
                .arg(mark.writers)
                .arg(mark.complete_up_to)
                .arg(mark.run)
                .invoke::<i64>(conn)
                .map(|_| ())
        })
    }

    fn applied(&mut self, rows: &[crate::marks::HeldRow]) -> Result<Vec<bool>, SinkError> {
        let prefix = self.factory.prefix.clone();
        self.with_conn(|conn, _| {
            let mut pipe = redis::pipe();
            for r in rows {
                pipe.cmd("HMGET")
                    .arg(window_hash(&prefix, &r.aggregate, r.window_start, &r.key))
                    .arg("version")
                    .arg("final");
            }
            let stored: Vec<(Option<u64>, Option<u8>)> = pipe.query(conn)?;
            Ok(rows
                .iter()
                .zip(stored)
                .map(|(r, (v, f))| {
                    v.is_some_and(|v| v > r.version || (v == r.version && f == Some(1)))
                })
                .collect())
        })
    }
}

fn measure_text(v: MeasureValue) -> String {
    match v {
        MeasureValue::Count(n) | MeasureValue::Distinct(n) => n.to_string(),
        MeasureValue::Sum(micros) => crate::decimal::from_micros(micros),
    }
}

/// A window row from its hash's fields (as `HGETALL` returns them), with
/// measures in `spec` order; `None` if the hash is not a whole row of an
/// aggregate of `spec`.
pub fn decode_window(spec: &PipelineSpec, fields: &[(String, String)]) -> Option<WindowRow> {
    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
    let aggregate = get("aggregate")?;
    let agg = spec.aggregates.iter().position(|a| a.name == aggregate)?;
    let key: Vec<[String; 2]> = serde_json::from_str(get("key")?).ok()?;
    let measures = spec.aggregates[agg]
        .measures
        .iter()
        .map(|m| {
            let name = m.to_string();
            let text = get(&name)?;
            let value = match m {
                Measure::Count => MeasureValue::Count(text.parse().ok()?),
                Measure::Distinct(_) => MeasureValue::Distinct(text.parse().ok()?),
                Measure::SumValue => MeasureValue::Sum(crate::decimal::to_micros(text)?),
            };
            Some((Arc::from(name), value))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(WindowRow {
        agg: agg as u16,
        aggregate: Arc::from(aggregate),
        key: key
            .into_iter()
            .map(|[k, v]| (Arc::from(k), v.into()))
            .collect(),
        window_start: get("window_start")?.parse().ok()?,
        window_end: get("window_end")?.parse().ok()?,
        measures,
        version: get("version")?.parse().ok()?,
        is_final: get("final")? == "1",
        freshest_append_ms: None,
    })
}

fn scan(conn: &mut Connection, pattern: &str) -> redis::RedisResult<Vec<String>> {
    let mut out = Vec::new();
    scan_pages(conn, pattern, |_, mut keys| {
        out.append(&mut keys);
        Ok(())
    })?;
    Ok(out)
}

/// Hands the keys matching `pattern` to `visit`, one page of `SCAN` at a
/// time, so that millions of keys never sit in memory at once. `visit` may
/// delete the keys it gets: `SCAN` still returns every key that matched
/// throughout.
pub fn scan_pages(
    conn: &mut Connection,
    pattern: &str,
    mut visit: impl FnMut(&mut Connection, Vec<String>) -> redis::RedisResult<()>,
) -> redis::RedisResult<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(conn)?;
        if !keys.is_empty() {
            visit(conn, keys)?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

fn classify(url: &str, e: redis::RedisError) -> SinkError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        SinkError::Unavailable {
            sink: NAME.into(),
            detail: format!("{url}: {e}"),
        }
    } else {
        match e.kind() {
            redis::ErrorKind::Server(
                redis::ServerErrorKind::BusyLoading
                | redis::ServerErrorKind::TryAgain
                | redis::ServerErrorKind::MasterDown
                | redis::ServerErrorKind::ReadOnly,
            ) => SinkError::Unavailable {
                sink: NAME.into(),
                detail: format!("{url}: {e}"),
            },
            _ => SinkError::Rejected {
                sink: NAME.into(),
                detail: format!("{url}: {e}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ts: i64, partition: u32, offset: i64, item: Option<&str>) -> RecentEntry {
        RecentEntry {
            ts,
            partition,
            offset,
            event: "view".into(),
            item_id: item.map(Into::into),
        }
    }

    #[test]
    fn a_recent_member_decodes_to_its_entry() {
        for e in [
            entry(1_767_225_600_123, 0, 0, None),
            entry(-5, 4_294_967_295, i64::MAX, Some("a:\"b\" ü 🎉")),
            entry(1, 7, 42, Some("")),
        ] {
            let member = recent_member(&e);
            let score = format!("{}", e.ts as f64);
            assert_eq!(decode_recent_member(&member, &score), Some(e));
        }
        assert_eq!(decode_recent_member("1:2", "3"), None);
        assert_eq!(decode_recent_member("x:2:[\"view\",null]", "3"), None);
    }

    #[test]
    fn members_of_one_time_sort_like_their_entries() {
        // Redis orders members of one score byte by byte.
        let mut entries = [
            entry(5, 10, 3, None),
            entry(5, 2, 100, Some("z")),
            entry(5, 2, 99, None),
            entry(5, 0, 1_000_000, None),
        ];
        let mut members: Vec<String> = entries.iter().map(recent_member).collect();
        members.sort();
        entries.sort();
        assert_eq!(
            members,
            entries.iter().map(recent_member).collect::<Vec<_>>()
        );
    }
}
