//! What the stores hold: both stores read back by identity, and dumps of
//! each, byte for byte, for comparing two runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use footprint_dataflows::reference::WindowId;
use footprint_dataflows::{RecentRow, WindowRow};

use crate::services::{mysql_url, redis_url};

/// Window rows by identity (aggregate, key, window start).
pub fn windows_by_id(rows: Vec<WindowRow>) -> BTreeMap<WindowId, WindowRow> {
    rows.into_iter()
        .map(|w| ((w.aggregate.clone(), w.key.clone(), w.window_start), w))
        .collect()
}

/// Recent-activity rows by (app, user).
pub fn recent_by_user(rows: Vec<RecentRow>) -> BTreeMap<(String, String), RecentRow> {
    rows.into_iter()
        .map(|r| ((r.app_id.clone(), r.user_id.clone()), r))
        .collect()
}

/// The stores a test wrote to: Redis keys under `prefix`, and the MySQL
/// database `database` with the default `fp_` tables.
pub struct Stores {
    spec: footprint_dataflows::PipelineSpec,
    redis: footprint_sinks::redis::RedisSinkFactory,
    mysql: footprint_sinks::mysql::MySqlSinkFactory,
}

/// What both stores hold, by identity.
pub struct StoredRows {
    /// Window rows in MySQL.
    pub mysql_windows: BTreeMap<WindowId, WindowRow>,
    /// Window rows in Redis.
    pub redis_windows: BTreeMap<WindowId, WindowRow>,
    /// Recent activity in MySQL.
    pub mysql_recent: BTreeMap<(String, String), RecentRow>,
    /// Recent activity in Redis.
    pub redis_recent: BTreeMap<(String, String), RecentRow>,
}

impl Stores {
    /// Opens both stores for `spec`.
    pub fn open(
        spec: &footprint_dataflows::PipelineSpec,
        prefix: &str,
        database: &str,
    ) -> Result<Self> {
        let keep = spec.recent.as_ref().map_or(0, |r| r.keep);
        let redis = footprint_sinks::redis::RedisSinkFactory::new(
            &redis_url(),
            prefix,
            Duration::ZERO,
            Duration::ZERO,
            keep,
        )?;
        let mysql = footprint_sinks::mysql::MySqlSinkFactory::new(
            &format!("{}/{database}", mysql_url()),
            Arc::new(spec.clone()),
            "fp_",
        )?;
        Ok(Stores {
            spec: spec.clone(),
            redis,
            mysql,
        })
    }

    /// Everything both stores hold.
    pub fn load(&self) -> Result<StoredRows> {
        Ok(StoredRows {
            mysql_windows: windows_by_id(self.mysql.load_windows()?),
            redis_windows: windows_by_id(self.redis.load_windows(&self.spec)?),
            mysql_recent: recent_by_user(self.mysql.load_recent()?),
            redis_recent: recent_by_user(self.redis.load_recent()?),
        })
    }
}

/// How many identities differ between `expected` and `got`: missing,
/// different, or there but not expected.
pub fn differences<K: Ord, V: PartialEq>(expected: &BTreeMap<K, V>, got: &BTreeMap<K, V>) -> usize {
    expected
        .iter()
        .filter(|(id, row)| got.get(*id) != Some(*row))
        .count()
        + got.keys().filter(|id| !expected.contains_key(*id)).count()
}

/// Every table of MySQL database `database` as text, byte for byte: tables
/// by name, columns in table order (but `updated_at`, the wall-clock time of
/// the last write), rows by primary key. Two databases that hold the same
/// results give the same text. The completeness marks are left out: they
/// say how far runs got, which differs between runs of the same results.
pub fn dump_mysql(database: &str) -> Result<String> {
    use mysql::prelude::Queryable;
    let opts = mysql::Opts::from_url(&format!("{}/{database}", mysql_url()))?;
    let mut conn = mysql::Conn::new(opts)?;
    let mut tables: Vec<String> = conn.query("SHOW TABLES")?;
    tables.retain(|t| t != "fp_marks");
    tables.sort();
    let mut out = String::new();
    for table in tables {
        let columns: Vec<(String, String)> = conn
            .query::<mysql::Row, _>(format!(
                "SELECT COLUMN_NAME, COLUMN_KEY FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = '{database}' AND TABLE_NAME = '{table}' ORDER BY ORDINAL_POSITION"
            ))?
            .into_iter()
            .map(|mut r| {
                (
                    r.take::<String, _>(0).unwrap_or_default(),
                    r.take::<String, _>(1).unwrap_or_default(),
                )
            })
            .collect();
        let keep: Vec<&str> = columns
            .iter()
            .map(|(c, _)| c.as_str())
            .filter(|c| *c != "updated_at")
            .collect();
        let pk: Vec<&str> = columns
            .iter()
            .filter(|(_, k)| k == "PRI")
            .map(|(c, _)| c.as_str())
            .collect();
        let quoted = |cs: &[&str]| {
            cs.iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(",")
        };
        out.push_str(&format!("== {table} ({})\n", keep.join(",")));
        let rows: Vec<mysql::Row> = conn.query(format!(
            "SELECT {} FROM `{table}` ORDER BY {}",
            quoted(&keep),
            quoted(&pk)
        ))?;
        for row in rows {
            let cells: Vec<String> = row.unwrap().iter().map(|v| v.as_sql(true)).collect();
            out.push_str(&cells.join("\t"));
            out.push('\n');
        }
    }
    Ok(out)
}

/// Every Redis key under `prefix` as text, byte for byte: keys in order
/// (with the prefix cut off), strings whole, hash fields sorted, lists in
/// list order; without the completeness marks, as [`dump_mysql`].
pub fn dump_redis(prefix: &str) -> Result<String> {
    let mut c = redis::Client::open(redis_url())?.get_connection()?;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut c)?;
    keys.retain(|k| !k.starts_with(&format!("{prefix}:m:")));
    keys.sort();
    let mut out = String::new();
    for k in keys {
        let kind: String = redis::cmd("TYPE").arg(&k).query(&mut c)?;
        let name = k.strip_prefix(prefix).unwrap_or(&k);
        match kind.as_str() {
            "hash" => {
                let mut fields: Vec<(String, String)> =
                    redis::cmd("HGETALL").arg(&k).query(&mut c)?;
                fields.sort();
                out.push_str(&format!("{name} {fields:?}\n"));
            }
            "string" => {
                let value: String = redis::cmd("GET").arg(&k).query(&mut c)?;
                out.push_str(&format!("{name} {value:?}\n"));
            }
            "list" => {
                let items: Vec<String> =
                    redis::cmd("LRANGE").arg(&k).arg(0).arg(-1).query(&mut c)?;
                out.push_str(&format!("{name} {items:?}\n"));
            }
            other => out.push_str(&format!("{name} <{other}>\n")),
        }
    }
    Ok(out)
}
