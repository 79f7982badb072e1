//! The Redis sink: serving copies of the results, written with a
//! compare-and-set on `version`.
//!
//! # Layout
//! - A window row is one string, `PREFIX:v:AGGREGATE:WINDOW_START:GROUPKEY`
//!   (`GROUPKEY` is the length-prefixed group key, e.g. `4:app01:view`). Its
//!   value is the row's stamp ([`window_stamp`]: the version as 20 digits,
//!   then `1` for a final row or `0`), followed by a JSON array of field
//!   names and values, all strings: `window_end` and one field per measure,
//!   named as in the config (`count`, `distinct(user_id)`, `sum(value)`;
//!   sums as exact decimals). The key names the rest. It expires `ttl` after
//!   its last write.
//! - Earlier versions kept a window row as a hash, `PREFIX:w:…` with the same
//!   tail ([`window_hash`]), holding `version`, `final`, `aggregate`,
//!   `window_start`, `window_end`, `key` (a JSON array of `[field, value]`
//!   pairs) and the measures. Those hashes are no longer written. Readers
//!   read both keys and keep the newer row by the version rule, while the
//!   hashes last (until their TTL); the writer compares with them too (see
//!   below).
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
//! - [`layout_key`], `PREFIX:layout`, is `2` once a writer has found no
//!   window hash of the earlier layout under the prefix.
//!
//! # Version rule
//! A write first sends each final window row as `SET key value NX PX ttl`:
//! a row whose key does not exist yet cannot be older than a stored one, so
//! a final row that is the first of its window and group (as most are
//! while a backlog is read) costs one plain command.
//!
//! The other window rows go through a Lua script, up to
//! [`WINDOWS_PER_CALL`] per call: early rows (which mostly rewrite a key)
//! at once, and the final rows whose key existed in a second round trip.
//! For each row the script swaps in the row's value (`SET … GET`) and
//! compares the stamps: a stamp is fixed-width, so comparing the text
//! compares `(version, final)`. When the stored stamp was higher it puts
//! the stored value back (`KEEPTTL`: the expiry just set stays, so a
//! rejected row still renews the key's). So retries, replays and restarts
//! can never put an older value over a newer one.
//!
//! Rows in a top-N index go to the script at once, as their index entries
//! are written with them. So does every row while window hashes of the
//! earlier layout may be left under the prefix; a row whose string does
//! not exist yet is then compared with its hash as well.
//!
//! A recent-activity row is merged without a script: `ZADD` of its
//! entries (the union: a stored entry is the same member), then
//! `ZREMRANGEBYRANK` down to the newest `keep` (the cut) and `PEXPIRE`. That
//! gives the same set whatever the order and number of writes. It goes in
//! the first round trip of a write, with the window rows (they never share
//! a key).
//!
//! The sink needs Redis 6.2 or later (`SET … GET`).

use std::sync::Arc;
use std::time::Duration;

use footprint_dataflows::key::GroupKey;
use footprint_dataflows::{
    Measure, MeasureValue, Output, PipelineSpec, RecentEntry, RecentRow, WindowRow,
};
use redis::{Client, Connection, Script};

use crate::{Sink, SinkError, SinkFactory};

const NAME: &str = "redis";

/// Applies window rows, each only when its stamp is not lower than the
/// stored one, and keeps the top-N indexes of the rows applied. KEYS[1..n]
/// the rows' strings; ARGV[1] ttl ms (`0`: none), ARGV[2] the key head of
/// the earlier layout's hashes (`PREFIX:w:`, or empty when there are none
/// to compare with), ARGV[3] where a row key's tail starts (the length of
/// `PREFIX:v:` plus one); then per row, in KEYS order: its stamp, its value,
/// the number `m` of indexes the row is in, and, when `m > 0`, the row's
/// member (its encoded group key) and `m` pairs of index key and score.
///
/// `SET … GET` writes the row and returns what it replaced; in the rare
/// case that was newer, it is put back, keeping the expiry just set
/// (`KEEPTTL`). A row with no string yet is compared with its hash of the
/// earlier layout when ARGV[2] names one. One call carries up to [`WINDOWS_PER_CALL`] rows:
/// each is still its own compare-and-set, but the cost of invoking a script
/// is paid once per call. An index entry is written only with its row, so
/// it follows the same version rule. (The index keys travel in ARGV: like
/// the rows of one call, they need not share a cluster slot, so the sink
/// speaks to one Redis server, not to a Redis Cluster.)
const WINDOW_CAS: &str = r#"
local ttl, legacy, cut = ARGV[1], ARGV[2], tonumber(ARGV[3])
local i, applied = 4, 0
for k = 1, #KEYS do
  local stamp, m = ARGV[i], tonumber(ARGV[i + 2])
  local cur
  if ttl == '0' then
    cur = redis.call('SET', KEYS[k], ARGV[i + 1], 'GET')
  else
    cur = redis.call('SET', KEYS[k], ARGV[i + 1], 'PX', ttl, 'GET')
  end
  local older = false
  if cur then
    older = string.sub(cur, 1, 21) > stamp
  elseif legacy ~= '' then
    local old = redis.call('HMGET', legacy .. string.sub(KEYS[k], cut), 'version', 'final')
    if old[1] then
      older = string.format('%020d%d', tonumber(old[1]), tonumber(old[2]) or 0) > stamp
    end
  end
  if older then
    if cur then
      redis.call('SET', KEYS[k], cur, 'KEEPTTL')
    else
      redis.call('DEL', KEYS[k])
    end
  else
    for j = 1, m do
      local at = i + 2 + 2 * j
      redis.call('ZADD', ARGV[at], ARGV[at + 1], ARGV[i + 3])
      if ttl ~= '0' then redis.call('PEXPIRE', ARGV[at], ttl) end
    end
    applied = applied + 1
  end
  i = i + 3
  if m > 0 then i = i + 1 + 2 * m end
end
return applied
"#;

/// The key of the marker that says no window hash of the earlier layout is
/// left under a prefix.
pub fn layout_key(prefix: &str) -> String {
    format!("{prefix}:{LAYOUT_KEY}")
}

/// The marker's name after the prefix (see [`layout_key`]).
pub const LAYOUT_KEY: &str = "layout";

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

    /// Every window row stored under this prefix, with measures in `spec`
    /// order: each row's string and its hash of the earlier layout, where
    /// one is left, read as one ([`newer_window`]), in key order.
    pub fn load_windows(&self, spec: &PipelineSpec) -> Result<Vec<WindowRow>, SinkError> {
        let mut conn = self.connect()?;
        let mut rows: std::collections::BTreeMap<String, WindowRow> = Default::default();
        for kind in ["v", "w"] {
            let head = format!("{}:{kind}:", self.prefix);
            let keys: Vec<String> =
                scan(&mut conn, &format!("{head}*")).map_err(|e| classify(&self.url, e))?;
            for k in keys {
                let tail = k.strip_prefix(&head).unwrap_or(&k).to_owned();
                let row = if kind == "v" {
                    let value: String = redis::cmd("GET")
                        .arg(&k)
                        .query(&mut conn)
                        .map_err(|e| classify(&self.url, e))?;
                    parse_window_tail(spec, &tail).and_then(|(aggregate, window_start, key)| {
                        let id = WindowId {
                            aggregate,
                            window_start,
                            key: &key,
                        };
                        decode_window_value(spec, &id, &value)
                    })
                } else {
                    let fields: Vec<(String, String)> = redis::cmd("HGETALL")
                        .arg(&k)
                        .query(&mut conn)
                        .map_err(|e| classify(&self.url, e))?;
                    decode_window(spec, &fields)
                };
                let row = row.ok_or_else(|| SinkError::Rejected {
                    sink: NAME.into(),
                    detail: format!("unreadable window row {k}"),
                })?;
                let kept = newer_window(rows.remove(&tail), Some(row));
                if let Some(kept) = kept {
                    rows.insert(tail, kept);
                }
            }
        }
        Ok(rows.into_values().collect())
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
    /// Whether window hashes of the earlier layout may be left under the
    /// prefix; found out on each new connection.
    legacy: bool,
}

impl RedisSinkFactory {
    /// A sink, not yet connected.
    fn sink(&self) -> RedisSink {
        RedisSink {
            factory: self.clone(),
            conn: None,
            window: Script::new(WINDOW_CAS),
            legacy: false,
        }
    }

    /// The bytes a batch becomes on the wire (RESP), without a server: for
    /// benchmarks of the encoding.
    pub fn encode(&self, rows: &[Output]) -> Vec<u8> {
        self.sink().pipeline(rows).0.get_packed_pipeline()
    }

    /// Whether window hashes of the earlier layout may be left under the
    /// prefix: false once [`layout_key`] says `2`; otherwise the keys are
    /// scanned, and when none is found the marker is set.
    fn legacy_windows(&self, conn: &mut Connection) -> redis::RedisResult<bool> {
        let marker = layout_key(&self.prefix);
        let layout: Option<String> = redis::cmd("GET").arg(&marker).query(conn)?;
        if layout.as_deref() == Some("2") {
            return Ok(false);
        }
        tracing::info!(prefix = %self.prefix, "looking for window rows of the earlier layout");
        let pattern = format!("{}:w:*", self.prefix);
        if scan_until(conn, &pattern, 10_000, |_, _| Ok(true))? {
            tracing::info!(
                prefix = %self.prefix,
                "window hashes of the earlier layout are left: new rows are compared with them"
            );
            return Ok(true);
        }
        redis::cmd("SET").arg(&marker).arg("2").query::<()>(conn)?;
        Ok(false)
    }
}

impl RedisSink {
    /// The top-N index entries of `w`: each index's key and `w`'s score.
    fn indexes(&self, w: &WindowRow) -> Vec<(String, f64)> {
        let f = &self.factory;
        f.top
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
            .collect()
    }

    /// Adds script calls applying `windows` under the version rule, up to
    /// [`WINDOWS_PER_CALL`] a call.
    fn add_script_calls(&self, pipe: &mut redis::Pipeline, windows: &[&WindowRow]) {
        let f = &self.factory;
        let head = format!("{}:v:", f.prefix);
        let legacy = if self.legacy {
            format!("{}:w:", f.prefix)
        } else {
            String::new()
        };
        for group in windows.chunks(WINDOWS_PER_CALL) {
            let mut c = redis::cmd("EVALSHA");
            c.arg(self.window.get_hash()).arg(group.len());
            for w in group {
                c.arg(window_key(&f.prefix, w));
            }
            c.arg(f.ttl.as_millis() as u64)
                .arg(&legacy)
                .arg(head.len() + 1);
            for w in group {
                c.arg(window_stamp(w.version, w.is_final))
                    .arg(window_value(w));
                let indexes = self.indexes(w);
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
    }

    /// The first pipeline of a write, and the window rows it sends as
    /// `SET … NX`, in order (the pipeline's replies are theirs: `OK` where
    /// the row was new and is now written, nil where its key existed). A
    /// row with no key yet cannot be older than a stored one, so it needs
    /// no compare and no script. Only final rows are tried so: a final row
    /// is often the first of its window and group (always, for windows a
    /// catch-up reads whole), while an early row mostly rewrites one, and
    /// would then pay for both. Early rows, rows in a top-N index, and
    /// every row while hashes of the earlier layout may be left, go through
    /// the script at once. Recent activity goes as plain commands.
    fn pipeline<'r>(&self, rows: &'r [Output]) -> (redis::Pipeline, Vec<&'r WindowRow>) {
        let f = &self.factory;
        let mut pipe = redis::pipe();
        let (mut tried, mut scripted) = (Vec::new(), Vec::new());
        for r in rows {
            if let Output::Window(w) = r {
                if self.legacy || !w.is_final || !self.indexes(w).is_empty() {
                    scripted.push(w);
                } else {
                    tried.push(w);
                }
            }
        }
        for w in &tried {
            let set = pipe
                .cmd("SET")
                .arg(window_key(&f.prefix, w))
                .arg(window_value(w))
                .arg("NX");
            // As the script: a TTL under a millisecond is none.
            if f.ttl.as_millis() > 0 {
                set.arg("PX").arg(f.ttl.as_millis() as u64);
            }
        }
        self.add_script_calls(&mut pipe, &scripted);
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
        (pipe, tried)
    }

    /// Runs `pipe`; when the server lost the scripts (a restart or a
    /// flush), loads them and runs it once more.
    fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut Connection,
        pipe: &redis::Pipeline,
    ) -> Result<T, SinkError> {
        let mut result = pipe.query::<T>(conn);
        if let Err(e) = &result
            && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        {
            self.window
                .load(conn)
                .map_err(|e| classify(&self.factory.url, e))?;
            result = pipe.query::<T>(conn);
        }
        result.map_err(|e| classify(&self.factory.url, e))
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
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let mut c = self.factory.connect()?;
                self.legacy = self
                    .factory
                    .legacy_windows(&mut c)
                    .map_err(|e| classify(&self.factory.url, e))?;
                c
            }
        };
        let (pipe, tried) = self.pipeline(rows);
        let written: Result<(), SinkError> = self
            .run::<Vec<Option<String>>>(&mut conn, &pipe)
            .and_then(|created| {
                // The rows whose key existed: now under the version rule.
                // (Were the first pipeline run twice, a row its first run
                // wrote lands here too, and the script keeps it: same stamp.)
                let existed: Vec<&WindowRow> = tried
                    .iter()
                    .zip(created)
                    .filter(|(_, created)| created.is_none())
                    .map(|(w, _)| *w)
                    .collect();
                if existed.is_empty() {
                    return Ok(());
                }
                let mut pipe = redis::pipe();
                self.add_script_calls(&mut pipe, &existed);
                self.run::<()>(&mut conn, &pipe)
            });
        if written.is_ok() {
            self.conn = Some(conn);
        }
        written
    }
}

/// The string key of a window row.
pub fn window_key(prefix: &str, w: &WindowRow) -> String {
    let key = GroupKey::from_parts(w.key.iter().map(|(_, v)| v.as_str()));
    window_string(prefix, &w.aggregate, w.window_start, &key)
}

/// The string key of the window of `aggregate` starting at `window_start`
/// for the group `key`.
pub fn window_string(prefix: &str, aggregate: &str, window_start: i64, key: &GroupKey) -> String {
    format!("{prefix}:v:{aggregate}:{window_start}:{}", key.as_str())
}

/// The hash key of the same window in the earlier layout, read (while it
/// lasts) and never written.
pub fn window_hash(prefix: &str, aggregate: &str, window_start: i64, key: &GroupKey) -> String {
    format!("{prefix}:w:{aggregate}:{window_start}:{}", key.as_str())
}

/// A row's stamp: its version as 20 digits, then `1` if it is final or
/// `0`. Stamps compare as text the way `(version, final)` compare.
pub fn window_stamp(version: u64, is_final: bool) -> String {
    format!("{version:020}{}", u8::from(is_final))
}

/// `(version, final)` from a stamp ([`window_stamp`]); `None` if `stamp`
/// is not one.
fn parse_stamp(stamp: &str) -> Option<(u64, bool)> {
    if stamp.len() != 21 {
        return None;
    }
    let version = stamp.get(..20)?.parse().ok()?;
    match stamp.get(20..)? {
        "0" => Some((version, false)),
        "1" => Some((version, true)),
        _ => None,
    }
}

/// A measure as the stores write it: counts as integers, sums as exact
/// decimals.
fn measure_text(v: MeasureValue) -> String {
    match v {
        MeasureValue::Count(n) | MeasureValue::Distinct(n) => n.to_string(),
        MeasureValue::Sum(micros) => crate::decimal::from_micros(micros),
    }
}

/// The stored value of a window row: its stamp, then a JSON array of field
/// names and values, all strings: `window_end` and one field per measure.
/// The key names the rest (aggregate, window start and group).
pub fn window_value(w: &WindowRow) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(64 + 24 * w.measures.len());
    let _ = write!(
        out,
        "{}[\"window_end\",\"{}\"",
        window_stamp(w.version, w.is_final),
        w.window_end
    );
    for (name, v) in &w.measures {
        out.push(',');
        push_json_str(&mut out, name);
        let _ = write!(out, ",\"{}\"", measure_text(*v));
    }
    out.push(']');
    out
}

/// Appends `s` to `out` as a JSON string, quoted and escaped.
fn push_json_str(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The fields a hash of the earlier layout holds for `w` (what
/// [`decode_window`] reads): for tests and tools that stage such data.
pub fn window_hash_fields(w: &WindowRow) -> Vec<(String, String)> {
    let key: Vec<[&str; 2]> = w.key.iter().map(|(k, v)| [&**k, v.as_str()]).collect();
    let mut fields = vec![
        ("version".to_owned(), w.version.to_string()),
        ("final".to_owned(), u8::from(w.is_final).to_string()),
        ("aggregate".to_owned(), w.aggregate.to_string()),
        ("window_start".to_owned(), w.window_start.to_string()),
        ("window_end".to_owned(), w.window_end.to_string()),
        (
            "key".to_owned(),
            serde_json::to_string(&key).unwrap_or_default(),
        ),
    ];
    for (name, v) in &w.measures {
        fields.push((name.to_string(), measure_text(*v)));
    }
    fields
}

/// A window row from its stored value ([`window_value`]) and its identity
/// (from its key), with measures in `spec` order; `None` if it is not a
/// whole row of an aggregate of `spec`.
pub fn decode_window_value(
    spec: &PipelineSpec,
    id: &WindowId<'_>,
    value: &str,
) -> Option<WindowRow> {
    let (version, is_final) = parse_stamp(value.get(..21)?)?;
    let rest = value.get(21..)?;
    let flat: Vec<String> = serde_json::from_str(rest).ok()?;
    if !flat.len().is_multiple_of(2) {
        return None;
    }
    let mut fields: Vec<(String, String)> = flat
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    let agg = spec.aggregates.iter().find(|a| a.name == id.aggregate)?;
    let parts = id.key.parts();
    if parts.len() != agg.group_by.len() {
        return None;
    }
    let key: Vec<[String; 2]> = agg
        .group_by
        .iter()
        .zip(parts)
        .map(|(f, v)| [f.to_string(), v])
        .collect();
    fields.extend([
        ("aggregate".into(), id.aggregate.to_owned()),
        ("window_start".into(), id.window_start.to_string()),
        ("key".into(), serde_json::to_string(&key).ok()?),
        ("version".into(), version.to_string()),
        ("final".into(), u8::from(is_final).to_string()),
    ]);
    decode_window(spec, &fields)
}

/// Which window row a key names: the aggregate, the window start and the
/// group.
#[derive(Debug, Clone, Copy)]
pub struct WindowId<'a> {
    /// The aggregate's name.
    pub aggregate: &'a str,
    /// The window's start.
    pub window_start: i64,
    /// The group.
    pub key: &'a GroupKey,
}

/// The identity in a window row's key after its head (`PREFIX:v:` or
/// `PREFIX:w:`): `AGGREGATE:WINDOW_START:GROUPKEY`, the aggregate being one
/// of `spec`'s (the longest name that fits, should one name extend another).
pub fn parse_window_tail<'t>(
    spec: &'t PipelineSpec,
    tail: &str,
) -> Option<(&'t str, i64, GroupKey)> {
    spec.aggregates
        .iter()
        .filter_map(|a| {
            let rest = tail.strip_prefix(a.name.as_str())?.strip_prefix(':')?;
            let (start, key) = rest.split_once(':')?;
            Some((
                a.name.as_str(),
                start.parse().ok()?,
                GroupKey::from_encoded(key),
            ))
        })
        .max_by_key(|(name, _, _)| name.len())
}

/// The newer of two reads of one window row, by the version rule: the
/// higher `(version, final)`.
pub fn newer_window(a: Option<WindowRow>, b: Option<WindowRow>) -> Option<WindowRow> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if (b.version, b.is_final) > (a.version, a.is_final) {
            b
        } else {
            a
        }),
        (a, b) => a.or(b),
    }
}

/// A window row from what a read of both layouts returned for `id`: the
/// string's value (empty when there is none) and the hash's fields (empty when
/// there is none). `Ok(None)` when neither exists; `Err` names the layout
/// that could not be read.
pub fn decode_window_read(
    spec: &PipelineSpec,
    id: &WindowId<'_>,
    value: &str,
    hash: &[(String, String)],
) -> Result<Option<WindowRow>, &'static str> {
    let string = if value.is_empty() {
        None
    } else {
        Some(decode_window_value(spec, id, value).ok_or("an unreadable window value")?)
    };
    let legacy = if hash.is_empty() {
        None
    } else {
        Some(decode_window(spec, hash).ok_or("an unreadable window hash")?)
    };
    Ok(newer_window(string, legacy))
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
            let (mut strings, mut hashes) = (redis::pipe(), redis::pipe());
            for r in rows {
                strings
                    .cmd("GETRANGE")
                    .arg(window_string(&prefix, &r.aggregate, r.window_start, &r.key))
                    .arg(0)
                    .arg(20);
                hashes
                    .cmd("HMGET")
                    .arg(window_hash(&prefix, &r.aggregate, r.window_start, &r.key))
                    .arg("version")
                    .arg("final");
            }
            let stamps: Vec<String> = strings.query(conn)?;
            let stored: Vec<(Option<u64>, Option<u8>)> = hashes.query(conn)?;
            let out = rows
                .iter()
                .zip(stamps.iter().zip(stored))
                .map(|(r, (stamp, (v, f)))| {
                    let at_least = |v: u64, f: bool| v > r.version || (v == r.version && f);
                    let in_string = parse_stamp(stamp).is_some_and(|(v, f)| at_least(v, f));
                    in_string || v.is_some_and(|v| at_least(v, f == Some(1)))
                })
                .collect();
            Ok(out)
        })
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
    scan_until(conn, pattern, 1000, |c, keys| {
        visit(c, keys).map(|()| false)
    })?;
    Ok(())
}

/// Like [`scan_pages`], `count` keys looked at per `SCAN`, until `visit`
/// returns true; whether it did.
fn scan_until(
    conn: &mut Connection,
    pattern: &str,
    count: usize,
    mut visit: impl FnMut(&mut Connection, Vec<String>) -> redis::RedisResult<bool>,
) -> redis::RedisResult<bool> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count)
            .query(conn)?;
        if !keys.is_empty() && visit(conn, keys)? {
            return Ok(true);
        }
        if next == 0 {
            return Ok(false);
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
    fn stamps_compare_as_text_like_version_then_final() {
        let pairs = [
            (0, false),
            (0, true),
            (1, false),
            (9, true),
            (10, false),
            (u64::MAX - 1, true),
            (u64::MAX, false),
            (u64::MAX, true),
        ];
        for a in pairs {
            for b in pairs {
                let (sa, sb) = (window_stamp(a.0, a.1), window_stamp(b.0, b.1));
                assert_eq!(sa.len(), 21);
                assert_eq!(sa.cmp(&sb), a.cmp(&b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn a_window_value_decodes_to_its_row() {
        use footprint_dataflows::{AggregateSpec, Field, WindowSpec};
        let spec = PipelineSpec {
            aggregates: vec![AggregateSpec {
                name: "a\"b".into(),
                group_by: vec![Field::AppId, Field::Prop("x".into())],
                window: WindowSpec::tumbling(60_000).expect("valid"),
                measures: vec![
                    Measure::Count,
                    Measure::Distinct(Field::UserId),
                    Measure::SumValue,
                ],
                allowed_lateness: 0,
                early_updates: None,
                sinks: vec![],
            }],
            recent: None,
            max_out_of_order: 0,
        };
        let row = WindowRow {
            agg: 0,
            aggregate: "a\"b".into(),
            key: vec![
                ("app_id".into(), "shop:1".into()),
                (
                    "props.x".into(),
                    "ü \"[]\" \\ \n\u{1}\u{8}\u{c}\u{1f} 🎉".into(),
                ),
            ],
            window_start: -60_000,
            window_end: 0,
            measures: vec![
                ("count".into(), MeasureValue::Count(7)),
                ("distinct(user_id)".into(), MeasureValue::Distinct(3)),
                ("sum(value)".into(), MeasureValue::Sum(-1_500_001)),
            ],
            version: 12,
            is_final: true,
            freshest_append_ms: None,
        };
        let value = window_value(&row);
        // The stamp, then what the key does not say, as a JSON library
        // writes it.
        let fields = [
            "window_end",
            "0",
            "count",
            "7",
            "distinct(user_id)",
            "3",
            "sum(value)",
            "-1.500001",
        ];
        assert_eq!(
            value,
            format!(
                "000000000000000000121{}",
                serde_json::to_string(&fields).expect("json")
            )
        );
        let group = GroupKey::from_parts(row.key.iter().map(|(_, v)| v.as_str()));
        let id = WindowId {
            aggregate: "a\"b",
            window_start: -60_000,
            key: &group,
        };
        assert_eq!(decode_window_value(&spec, &id, &value), Some(row.clone()));
        assert_eq!(
            decode_window(&spec, &window_hash_fields(&row)),
            Some(row.clone())
        );
        // The identity comes back from the key.
        let tail = format!("a\"b:-60000:{}", group.as_str());
        let (aggregate, window_start, key) = parse_window_tail(&spec, &tail).expect("tail");
        assert_eq!((aggregate, window_start, &key), ("a\"b", -60_000, &group));
        assert_eq!(parse_window_tail(&spec, "other:1:2:xy"), None);
        assert_eq!(parse_window_tail(&spec, "a\"b:x:2:xy"), None);
        // Not whole: a short stamp, a field without a value, a group of
        // the wrong width, another aggregate.
        assert_eq!(
            decode_window_value(&spec, &id, "00000000000000000012"),
            None
        );
        assert_eq!(
            decode_window_value(&spec, &id, "000000000000000000121[\"a\"]"),
            None
        );
        let narrow = GroupKey::from_parts(["shop:1"]);
        let wrong = [
            WindowId { key: &narrow, ..id },
            WindowId {
                aggregate: "other",
                ..id
            },
        ];
        for id in &wrong {
            assert_eq!(decode_window_value(&spec, id, &value), None);
        }
        assert_eq!(decode_window_read(&spec, &id, "", &[]), Ok(None));
        assert!(decode_window_read(&spec, &id, "x", &[]).is_err());
    }

    #[test]
    fn json_strings_are_escaped_as_a_json_library_does() {
        for text in [
            "",
            "plain",
            "ü \"[]\" \\ / \n\r\t\u{1}\u{8}\u{c}\u{1f}\u{7f} 🎉",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, text);
            assert_eq!(out, serde_json::to_string(text).expect("json"));
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
