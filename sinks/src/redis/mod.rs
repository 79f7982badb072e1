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
//! - A user's recent activity is a list, `PREFIX:r:{APPUSER}`, of JSON
//!   entries `{"event","item_id","offset","partition","ts"}`, newest first,
//!   at most `keep` long. It expires after the recent-activity TTL.
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
//! one. A recent-activity row is merged into the stored list by
//! another script (union, newest first, cut to `keep`), which gives the same
//! list whatever the order and number of writes. All rows of a `write` go out
//! in one pipeline (window rows first, then recent activity; they never
//! share a key).

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

/// Merges entries into a user's recent list: the union with the stored
/// entries, newest first by (ts, partition, offset), without duplicates, cut
/// to `keep`. KEYS[1] list; ARGV[1] keep, ARGV[2] ttl ms, ARGV[3..5] the
/// (ts, partition, offset) of the oldest incoming entry, ARGV[6..] the
/// incoming entries, newest first.
///
/// The common case, entries all newer than the stored head, is a push and a
/// trim; anything else (a replay, a restart reading messages again, entries
/// arriving out of order) takes the full merge.
const RECENT_MERGE: &str = r#"
local keep, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local ots, op, oo = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local head = redis.call('LINDEX', KEYS[1], 0)
local newer = true
if head then
  local h = cjson.decode(head)
  newer = ots > h.ts or (ots == h.ts and (op > h.partition or (op == h.partition and oo > h.offset)))
end
if newer then
  local oldest_first = {}
  for i = #ARGV, 6, -1 do oldest_first[#oldest_first + 1] = ARGV[i] end
  if #oldest_first > 0 then redis.call('LPUSH', KEYS[1], unpack(oldest_first)) end
  redis.call('LTRIM', KEYS[1], 0, keep - 1)
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
  return redis.call('LLEN', KEYS[1])
end
local all, seen = {}, {}
local function add(s)
  if not seen[s] then
    seen[s] = true
    local e = cjson.decode(s)
    all[#all + 1] = {e.ts, e.partition, e.offset, s}
  end
end
for _, s in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do add(s) end
for i = 6, #ARGV do add(ARGV[i]) end
table.sort(all, function(a, b)
  if a[1] ~= b[1] then return a[1] > b[1] end
  if a[2] ~= b[2] then return a[2] > b[2] end
  return a[3] > b[3]
end)
local n = math.min(keep, #all)
redis.call('DEL', KEYS[1])
if n > 0 then
  local out = {}
  for i = 1, n do out[i] = all[i][4] end
  redis.call('RPUSH', KEYS[1], unpack(out))
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
end
return n
"#;

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

    /// Every user's recent activity stored under this prefix.
    pub fn load_recent(&self) -> Result<Vec<RecentRow>, SinkError> {
        let mut conn = self.connect()?;
        let keys: Vec<String> =
            scan(&mut conn, &format!("{}:r:*", self.prefix)).map_err(|e| classify(&self.url, e))?;
        let mut rows = Vec::with_capacity(keys.len());
        for k in keys {
            let Some(tag) = k.strip_prefix(&format!("{}:r:", self.prefix)) else {
                continue;
            };
            let entries: Vec<String> = redis::cmd("LRANGE")
                .arg(&k)
                .arg(0)
                .arg(-1)
                .query(&mut conn)
                .map_err(|e| classify(&self.url, e))?;
            let inner = tag
                .strip_prefix('{')
                .and_then(|t| t.strip_suffix('}'))
                .unwrap_or(tag);
            let parts = GroupKey::from_encoded(inner).parts();
            let (Some(app_id), Some(user_id)) = (parts.first(), parts.get(1)) else {
                continue;
            };
            let events = entries
                .iter()
                .map(|e| {
                    serde_json::from_str::<RecentEntry>(e).map_err(|err| SinkError::Rejected {
                        sink: NAME.into(),
                        detail: format!("unreadable recent entry in {k}: {err}"),
                    })
                })
                .collect::<Result<_, _>>()?;
            rows.push(RecentRow {
                app_id: app_id.clone(),
                user_id: user_id.clone(),
                events,
            });
        }
        Ok(rows)
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
    recent: Script,
}

impl RedisSinkFactory {
    /// A sink, not yet connected.
    fn sink(&self) -> RedisSink {
        RedisSink {
            factory: self.clone(),
            conn: None,
            window: Script::new(WINDOW_CAS),
            recent: Script::new(RECENT_MERGE),
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
                    let tag = GroupKey::from_parts([r.app_id.as_str(), r.user_id.as_str()]);
                    let mut c = redis::cmd("EVALSHA");
                    c.arg(self.recent.get_hash()).arg(1);
                    c.arg(format!("{}:r:{{{}}}", f.prefix, tag.as_str()));
                    c.arg(f.recent_keep).arg(f.recent_ttl.as_millis() as u64);
                    // Newest first, each entry once; the oldest goes first
                    // as numbers for the script's fast path.
                    let mut events: Vec<&RecentEntry> = r.events.iter().collect();
                    events.sort_unstable_by_key(|e| std::cmp::Reverse(order(e)));
                    events.dedup_by(|a, b| order(a) == order(b));
                    let oldest = events.last().map_or((i64::MIN, 0, i64::MIN), |e| order(e));
                    c.arg(oldest.0).arg(oldest.1).arg(oldest.2);
                    for e in events {
                        c.arg(
                            serde_json::json!({"ts": e.ts, "partition": e.partition, "offset": e.offset, "event": e.event, "item_id": e.item_id})
                                .to_string(),
                        );
                    }
                    pipe.add_command(c).ignore();
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
            self.recent
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

/// The order of recent-activity entries: (ts, partition, offset).
fn order(e: &RecentEntry) -> (i64, u32, i64) {
    (e.ts, e.partition, e.offset)
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

/// The list key of a user's recent activity.
pub fn recent_list(prefix: &str, app_id: &str, user_id: &str) -> String {
    let tag = GroupKey::from_parts([app_id, user_id]);
    format!("{prefix}:r:{{{}}}", tag.as_str())
}

/// The hash key of an aggregate's completeness marks ([`crate::marks`]).
pub fn marks_hash(prefix: &str, aggregate: &str) -> String {
    format!("{prefix}:m:{aggregate}")
}

/// One recent-activity entry as the list holds it.
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
