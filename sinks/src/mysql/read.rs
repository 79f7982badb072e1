//! Reading the MySQL sink's tables for a query service: a user's recent
//! activity, the window rows of one group key, the top groups of a window,
//! and how far each aggregate is complete ([`crate::marks`]).
//!
//! Every read is a primary-key lookup or a primary-key range: a window
//! series names its window starts (`window_start IN (…)` with the key), a
//! top-N reads one window's rows whose encoded group key starts with the
//! prefix asked for (a range of `(window_start, group_key)`), and recent
//! activity reads each user's range of entries (and, while it exists, the
//! user's row in the earlier layout's table). A table that does not exist yet
//! reads as empty: nothing was written to it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use footprint_dataflows::key::GroupKey;
use footprint_dataflows::{PipelineSpec, RecentEntry, WindowRow};
use mysql::prelude::Queryable;
use mysql::{Opts, OptsBuilder, Pool, PoolConstraints, PooledConn, Row, Value};

use super::load::{
    ER_NO_SUCH_TABLE, LoadError, RECENT_ENTRY, column, legacy_events, recent_entry, window_row,
};
use super::schema::{AggregateTable, MARKS_TABLE_SUFFIX, Schema, quote};
use super::{SINK, config, write_error};
use crate::SinkError;
use crate::marks::Mark;

/// MySQL's "unknown database".
const ER_BAD_DB_ERROR: u16 = 1049;

/// Reads the sink's tables through a pool of its own.
pub struct MySqlReader {
    opts: Opts,
    pool: Mutex<Option<Pool>>,
    schema: Arc<Schema>,
    target: Arc<str>,
    marks_table: String,
    /// Set once a read found no table of the earlier recent-activity
    /// layout, which is then no longer asked for.
    legacy_gone: AtomicBool,
}

impl std::fmt::Debug for MySqlReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlReader")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl MySqlReader {
    /// A reader of the tables the sink writes for `spec` under
    /// `table_prefix` at `url`, with at most `connections` connections,
    /// each read bounded by `timeout`. Nothing is contacted until the first
    /// read, so a service can start while MySQL is down.
    pub fn new(
        url: &str,
        spec: &Arc<PipelineSpec>,
        table_prefix: &str,
        connections: usize,
        timeout: Duration,
    ) -> Result<Self, SinkError> {
        let schema = Schema::new(spec, table_prefix)?;
        let opts = Opts::from_url(url).map_err(|e| config(format!("bad URL: {e}")))?;
        let target: Arc<str> = Arc::from(format!(
            "{}:{}/{}",
            opts.get_ip_or_hostname(),
            opts.get_tcp_port(),
            opts.get_db_name().unwrap_or("")
        ));
        let constraints = PoolConstraints::new(0, connections.max(1))
            .ok_or_else(|| config(format!("bad pool size {connections}")))?;
        let pool_opts = opts.get_pool_opts().clone().with_constraints(constraints);
        let opts: Opts = OptsBuilder::from_opts(opts)
            .pool_opts(pool_opts)
            .tcp_connect_timeout(Some(timeout))
            .read_timeout(Some(timeout))
            .write_timeout(Some(timeout))
            .init(vec!["SET NAMES utf8mb4".to_owned()])
            .into();
        Ok(MySqlReader {
            opts,
            pool: Mutex::new(None),
            marks_table: format!("{table_prefix}{MARKS_TABLE_SUFFIX}"),
            schema: Arc::new(schema),
            target,
            legacy_gone: AtomicBool::new(false),
        })
    }

    /// `host:port/database`, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// A connection; `None` while the database does not exist (nothing was
    /// written yet).
    fn conn(&self) -> Result<Option<PooledConn>, SinkError> {
        let pool = {
            let mut guard = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
            match guard.as_ref() {
                Some(p) => p.clone(),
                None => {
                    let p =
                        Pool::new(self.opts.clone()).map_err(|e| write_error(e, &self.target))?;
                    *guard = Some(p.clone());
                    p
                }
            }
        };
        let wait = self
            .opts
            .get_read_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(1));
        match pool.try_get_conn(wait) {
            Ok(c) => Ok(Some(c)),
            Err(mysql::Error::MySqlError(e)) if e.code == ER_BAD_DB_ERROR => Ok(None),
            Err(e) => Err(write_error(e, &self.target)),
        }
    }

    fn table(&self, agg: usize) -> Result<&AggregateTable, SinkError> {
        self.schema
            .aggregates
            .get(agg)
            .ok_or_else(|| config(format!("no aggregate #{agg}")))
    }

    fn error(&self, e: LoadError) -> SinkError {
        match e {
            LoadError::Server(e) => write_error(e, &self.target),
            LoadError::Bad(detail) => SinkError::Rejected {
                sink: SINK.into(),
                detail: format!("{}: {detail}", self.target),
            },
        }
    }

    fn rows(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, SinkError> {
        Ok(self.rows_of_existing(sql, params)?.unwrap_or_default())
    }

    /// The rows `sql` selects; `None` when its table does not exist.
    fn rows_of_existing(
        &self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Option<Vec<Row>>, SinkError> {
        let Some(mut conn) = self.conn()? else {
            return Ok(Some(Vec::new()));
        };
        match conn.exec::<Row, _, _>(sql, params) {
            Ok(rows) => Ok(Some(rows)),
            Err(mysql::Error::MySqlError(e)) if e.code == ER_NO_SUCH_TABLE => Ok(None),
            Err(e) => Err(write_error(e, &self.target)),
        }
    }

    /// The stored rows of aggregate `agg` (its index in the spec) for the
    /// group `key`, among the windows starting at `starts`, oldest first.
    pub fn windows(
        &self,
        agg: usize,
        key: &GroupKey,
        starts: &[i64],
    ) -> Result<Vec<WindowRow>, SinkError> {
        if starts.is_empty() {
            return Ok(Vec::new());
        }
        let table = self.table(agg)?;
        // A power of two of placeholders (the last start repeated), so a
        // table needs few distinct statements.
        let slots = starts.len().next_power_of_two();
        let sql = format!(
            "SELECT {} FROM {} WHERE `group_key` = ? AND `window_start` IN ({}) ORDER BY `window_start`",
            columns(table),
            quote(&table.table),
            vec!["?"; slots].join(",")
        );
        let mut params: Vec<Value> = vec![Value::from(key.as_str().as_bytes())];
        let last = starts[starts.len() - 1];
        params.extend((0..slots).map(|i| Value::from(starts.get(i).copied().unwrap_or(last))));
        self.decode(agg, table, self.rows(&sql, params)?)
    }

    /// The `n` stored rows of window `window_start` of aggregate `agg` with
    /// the highest value of measure `by` (its index), among the groups whose
    /// key starts with `prefix` (encoded, possibly empty). Ties go by group
    /// key, ascending.
    pub fn top(
        &self,
        agg: usize,
        window_start: i64,
        prefix: &GroupKey,
        by: usize,
        n: usize,
    ) -> Result<Vec<WindowRow>, SinkError> {
        let table = self.table(agg)?;
        let measure = table
            .measures
            .get(by)
            .ok_or_else(|| config(format!("no measure #{by} in {}", table.aggregate)))?;
        // Encoded keys are UTF-8, which never holds the byte 0xFF: every key
        // that starts with `prefix` sorts below `prefix` + 0xFF.
        let mut upper = prefix.as_str().as_bytes().to_vec();
        upper.push(0xFF);
        let sql = format!(
            "SELECT {} FROM {} WHERE `window_start` = ? AND `group_key` >= ? AND `group_key` < ? \
             ORDER BY {} DESC, `group_key` ASC LIMIT {}",
            columns(table),
            quote(&table.table),
            quote(&measure.column),
            n
        );
        let params = vec![
            Value::from(window_start),
            Value::from(prefix.as_str().as_bytes()),
            Value::from(upper),
        ];
        self.decode(agg, table, self.rows(&sql, params)?)
    }

    fn decode(
        &self,
        agg: usize,
        table: &AggregateTable,
        rows: Vec<Row>,
    ) -> Result<Vec<WindowRow>, SinkError> {
        let agg = u16::try_from(agg).map_err(|_| config("too many aggregates".into()))?;
        rows.into_iter()
            .map(|r| window_row(table, agg, r).map_err(|e| self.error(e)))
            .collect()
    }

    /// The recent activity of `users` of `app`, in the order asked; `None`
    /// for a user with none stored. Each list is the newest `keep` of the
    /// user's entries and, while the earlier layout's table exists, of its
    /// stored list.
    pub fn recent(
        &self,
        app: &str,
        users: &[&str],
    ) -> Result<Vec<Option<Vec<RecentEntry>>>, SinkError> {
        let Some(table) = &self.schema.recent else {
            return Ok(vec![None; users.len()]);
        };
        if users.is_empty() {
            return Ok(Vec::new());
        }
        // A power of two of placeholders (the last user repeated), so the
        // table needs few distinct statements.
        let slots = users.len().next_power_of_two();
        let in_users = vec!["?"; slots].join(",");
        let mut params: Vec<Value> = vec![Value::from(app.as_bytes())];
        let last = users[users.len() - 1];
        params.extend((0..slots).map(|i| Value::from(users.get(i).unwrap_or(&last).as_bytes())));
        let mut found: Vec<Option<Vec<RecentEntry>>> = vec![None; users.len()];
        let mut add = |user: &str, entries: Vec<RecentEntry>| {
            if let Some(i) = users.iter().position(|u| *u == user) {
                found[i].get_or_insert_with(Vec::new).extend(entries);
            }
        };
        let sql = format!(
            "SELECT `user_id`, {RECENT_ENTRY} FROM {} WHERE `app_id` = ? AND `user_id` IN ({in_users})",
            quote(table)
        );
        for mut row in self.rows(&sql, params.clone())? {
            let user: String = column(&mut row, 0, "recent.user_id").map_err(|e| self.error(e))?;
            let entry = recent_entry(&mut row, 1).map_err(|e| self.error(e))?;
            add(&user, vec![entry]);
        }
        if let Some(legacy) = self.legacy_table() {
            let sql = format!(
                "SELECT `user_id`, `events` FROM {} WHERE `app_id` = ? AND `user_id` IN ({in_users})",
                quote(legacy)
            );
            match self.rows_of_existing(&sql, params)? {
                Some(rows) => {
                    for mut row in rows {
                        let user: String =
                            column(&mut row, 0, "recent.user_id").map_err(|e| self.error(e))?;
                        let events = legacy_events(legacy, &mut row, 1, app, &user)
                            .map_err(|e| self.error(e))?;
                        add(&user, events);
                    }
                }
                None => self.legacy_gone.store(true, Ordering::Relaxed),
            }
        }
        Ok(found
            .into_iter()
            .map(|entries| entries.map(|e| RecentEntry::newest(&e, self.schema.recent_keep)))
            .collect())
    }

    /// The earlier layout's recent-activity table, until a read found that
    /// it does not exist.
    fn legacy_table(&self) -> Option<&String> {
        if self.legacy_gone.load(Ordering::Relaxed) {
            return None;
        }
        self.schema.recent_legacy.as_ref()
    }

    /// The completeness marks of `aggregate` ([`crate::marks`]).
    pub fn marks(&self, aggregate: &str) -> Result<Vec<Mark>, SinkError> {
        let sql = format!(
            "SELECT `writer`, `writers`, `complete_up_to`, `run` FROM {} WHERE `aggregate` = ?",
            quote(&self.marks_table)
        );
        let mut out = Vec::new();
        for mut row in self.rows(&sql, vec![Value::from(aggregate)])? {
            let writer: u32 = column(&mut row, 0, "marks.writer").map_err(|e| self.error(e))?;
            let writers: u32 = column(&mut row, 1, "marks.writers").map_err(|e| self.error(e))?;
            let complete_up_to: i64 =
                column(&mut row, 2, "marks.complete_up_to").map_err(|e| self.error(e))?;
            let run: i64 = column(&mut row, 3, "marks.run").map_err(|e| self.error(e))?;
            out.push(Mark {
                writer,
                writers,
                complete_up_to,
                run,
            });
        }
        Ok(out)
    }
}

fn columns(table: &AggregateTable) -> String {
    table
        .columns()
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(",")
}
