//! The MySQL sink: the durable copy of the results (`docs/design.md#stores`). Tested on
//! MariaDB 10.11; written for MySQL 8 too, where it has not been tested.
//!
//! This module owns the tables it writes: the first time it reaches the
//! server (at start-up, or at the first write when MySQL was down then) it
//! creates the database named in the URL and every table if they are
//! missing, and checks that tables which already exist have every column it
//! needs. It does not migrate, drop or rename anything.
//!
//! # Layout
//! - **One table per aggregate**, `PREFIX` + aggregate name, with primary key
//!   `(window_start, group_key)`, so that a stream's inserts, which move
//!   forward in event time, go to the end of the index instead of all over
//!   it:
//!   - `group_key VARBINARY(512)`: the length-prefixed
//!     [`GroupKey`](footprint_dataflows::key::GroupKey) of the key values in
//!     group-by order (`4:app1` + `2:DE` = `4:app12:DE`);
//!   - `window_start`, `window_end` (`BIGINT`, ms since the epoch);
//!   - one readable `TEXT` column per group-by field, `k_` + the field name
//!     with every run of other characters than ASCII letters and digits
//!     turned into one `_` (`k_app_id`, `k_props_country`);
//!   - one column per measure, named the same way after `m_`: `m_count` and
//!     `m_distinct_user_id` are `BIGINT`, `m_sum_value` is `DECIMAL(38,6)`,
//!     written exactly from the micro-units, never through a float;
//!   - `version BIGINT UNSIGNED`, `is_final TINYINT(1)`, and `updated_at
//!     TIMESTAMP(3)`, which the server sets whenever a write changes the row.
//! - **Recent activity**, table `PREFIX` + `recent_entries` (only when the
//!   spec keeps it): one row per entry, primary key `(app_id, user_id, ts,
//!   partition, offset)` (ids `VARBINARY(255)`), with `event` and `item_id`
//!   (`MEDIUMBLOB`). A user's list is the newest `keep` rows of their key
//!   range, newest first.
//! - **The earlier recent-activity layout**, table `PREFIX` +
//!   `recent_activity`, one row per user with a JSON list in `events`, is no
//!   longer written. Where it exists, readers ([`read`], and
//!   [`MySqlSinkFactory::load_recent`]) merge its list with the user's
//!   entries, so data written by an earlier version stays visible. It can be
//!   dropped once every user in it has `keep` newer entries or their
//!   activity no longer matters.
//!
//! # Version rule
//! A window row is written only if its `(version, is_final)` is at least
//! the stored pair, compared lexicographically: a lower pair changes
//! nothing, an equal or higher one overwrites. The rule is part of the
//! upsert statement itself (`INSERT … ON DUPLICATE KEY UPDATE c = IF(newer, VALUES(c), c), …`, with
//! `version` assigned last; see `schema.rs` for why the order matters), so it
//! also holds between two rows of the same identity in one batch, which the
//! server applies in order, and between workers, retries and replays.
//!
//! Recent activity has no version: a write merges, which makes the order
//! and repetition of writes irrelevant. It inserts each entry with `INSERT
//! IGNORE` (an entry is a function of its source message, so a stored one is
//! the same entry: the union) and then deletes, for the users it wrote, the
//! entries that have at least `keep` newer ones (the cut), in the same
//! transaction. No write reads a list back, and an entry a reader should see
//! is never deleted: one with `keep` newer entries stays outside the newest
//! `keep` whatever is written later.
//!
//! # Writes
//! Each `write()` is one transaction, at `READ COMMITTED`: per table, one
//! multi-row upsert (recent activity: insert, then cut) per chunk of up to
//! 256 rows (a power of two: a table needs few prepared
//! statements), rows in primary-key order (rows of one identity
//! in arrival order), so concurrent writers lock rows in the same order. A
//! row the table cannot hold (a group key over 512 bytes, an app or user id
//! over 255 bytes) is left out, the others are written, and the write then fails with
//! [`SinkError::Rejected`] naming it. Connection failures, timeouts,
//! deadlocks (1213) and lock wait timeouts (1205) are
//! [`SinkError::Unavailable`] (retryable); other server errors, such as a
//! value out of range, reject the whole batch, and nothing of it is written.

mod load;
pub mod read;
mod schema;
mod upsert;

use std::sync::Arc;
use std::time::Duration;

use footprint_dataflows::{Output, PipelineSpec, RecentRow, WindowRow};
use mysql::prelude::Queryable;
use mysql::{
    Conn, DriverError, Opts, OptsBuilder, Pool, PoolConstraints, PooledConn, TxOpts, Value,
};

use crate::{Sink, SinkError, SinkFactory};
use load::LoadError;
use schema::Schema;
use upsert::Plan;

/// The statements a batch of window rows becomes, without a server: their
/// count and the bytes of SQL and parameters (for benchmarks of the
/// encoding; rows the tables cannot hold are left out, as in a write).
pub fn encode_windows(
    spec: &Arc<PipelineSpec>,
    table_prefix: &str,
    rows: &[Output],
) -> Result<(usize, usize), SinkError> {
    let schema = Schema::new(spec, table_prefix)?;
    let statements = Plan::new(&schema, rows).statements(&schema);
    let bytes = statements
        .iter()
        .map(|s| s.sql.len() + s.params.iter().map(upsert::value_size).sum::<usize>())
        .sum();
    Ok((statements.len(), bytes))
}

/// The sink's name.
const SINK: &str = "mysql";
/// How long a connection attempt may take, unless the URL says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read or write on a connection may block. Longer than InnoDB's
/// default lock wait (50 s), so a lock wait is reported by the server.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a sink waits for a free connection in the pool.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// Most pooled connections, unless the URL sets `pool_min`/`pool_max`.
const POOL_MAX: usize = 64;
/// MySQL's "unknown database".
const ER_BAD_DB_ERROR: u16 = 1049;
/// Rows named in a rejection message; the rest are counted.
const NAMED_SKIPS: usize = 5;

/// Builds MySQL sinks that share one connection pool.
///
/// Each sink keeps one pooled connection while it writes. The pool holds up
/// to 64 connections unless the URL sets `pool_min` and `pool_max`; a sink
/// that finds none free within 30 s fails its write as unavailable.
pub struct MySqlSinkFactory {
    shared: Arc<Shared>,
    schema: Arc<Schema>,
    /// `host:port/database`, for messages (never the password).
    target: Arc<str>,
}

/// The pool, made the first time the server answers (with the database and
/// tables created then), so that a pipeline can start while MySQL is down.
struct Shared {
    opts: Opts,
    database: String,
    schema: Arc<Schema>,
    target: Arc<str>,
    pool: std::sync::Mutex<Option<Pool>>,
}

impl Shared {
    /// The pool, preparing the database and tables first if that has not
    /// happened yet.
    fn pool(&self) -> Result<Pool, SinkError> {
        let mut guard = self.pool.lock().map_err(|_| SinkError::Unavailable {
            sink: SINK.into(),
            detail: format!("{}: pool lock poisoned", self.target),
        })?;
        if let Some(pool) = guard.as_ref() {
            return Ok(pool.clone());
        }
        let at_start = |e: mysql::Error| start_up_error(e, &self.target);
        let (pool, mut conn) = match open(&self.opts) {
            Err(mysql::Error::MySqlError(e)) if e.code == ER_BAD_DB_ERROR => {
                create_database(&self.opts, &self.database).map_err(at_start)?;
                open(&self.opts).map_err(at_start)?
            }
            other => other.map_err(at_start)?,
        };
        for sql in self.schema.create_statements() {
            conn.query_drop(&sql).map_err(at_start)?;
        }
        check_columns(&mut conn, &self.schema, &self.target)?;
        tracing::info!(
            sink = SINK,
            target = %self.target,
            tables = self.schema.aggregates.len() + usize::from(self.schema.recent.is_some()),
            "tables ready"
        );
        *guard = Some(pool.clone());
        Ok(pool)
    }
}

impl std::fmt::Debug for MySqlSinkFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlSinkFactory")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl MySqlSinkFactory {
    /// Connects to `url` (`mysql://USER[:PASSWORD]@HOST:PORT/DATABASE`),
    /// creates the database and the tables of `spec` if they are missing
    /// (table names start with `table_prefix`), and checks that existing
    /// tables have every column.
    ///
    /// Fails with [`SinkError::Config`] for a bad URL or name, or a
    /// statement the server refuses. When the server cannot be reached it
    /// still succeeds: the tables are prepared by the first write that
    /// reaches the server, and writes fail as unavailable (retryable) until
    /// then.
    pub fn new(url: &str, spec: Arc<PipelineSpec>, table_prefix: &str) -> Result<Self, SinkError> {
        let schema = Schema::new(&spec, table_prefix)?;
        let opts = Opts::from_url(url).map_err(|e| config(format!("bad URL: {e}")))?;
        let Some(database) = opts.get_db_name().map(str::to_owned) else {
            return Err(config(format!(
                "the URL names no database (expected mysql://USER@HOST:PORT/DATABASE, got host {})",
                opts.get_ip_or_hostname()
            )));
        };
        if database.is_empty() {
            return Err(config("the URL names an empty database".into()));
        }
        let target: Arc<str> = Arc::from(format!(
            "{}:{}/{database}",
            opts.get_ip_or_hostname(),
            opts.get_tcp_port()
        ));
        let opts = with_defaults(opts);
        let schema = Arc::new(schema);
        let shared = Arc::new(Shared {
            opts,
            database,
            schema: Arc::clone(&schema),
            target: Arc::clone(&target),
            pool: std::sync::Mutex::new(None),
        });
        match shared.pool() {
            Ok(_) => {}
            Err(e @ SinkError::Unavailable { .. }) => tracing::warn!(
                sink = SINK,
                target = %target,
                error = %e,
                "MySQL is not reachable at start-up; its tables are prepared on the first write that reaches it"
            ),
            Err(e) => return Err(e),
        }
        Ok(MySqlSinkFactory {
            shared,
            schema,
            target,
        })
    }

    /// Every stored window row, as the dataflow would emit it, sorted by
    /// (aggregate name, key, window start).
    pub fn load_windows(&self) -> Result<Vec<WindowRow>, SinkError> {
        let mut conn = self.conn()?;
        load::windows(&mut conn, &self.schema).map_err(|e| self.load_error(e))
    }

    /// Every stored recent-activity row, sorted by (app, user); empty when
    /// the spec keeps no recent activity.
    pub fn load_recent(&self) -> Result<Vec<RecentRow>, SinkError> {
        let mut conn = self.conn()?;
        load::recent(&mut conn, &self.schema).map_err(|e| self.load_error(e))
    }

    fn conn(&self) -> Result<PooledConn, SinkError> {
        self.shared
            .pool()?
            .try_get_conn(POOL_WAIT)
            .map_err(|e| write_error(e, &self.target))
    }

    fn load_error(&self, e: LoadError) -> SinkError {
        match e {
            LoadError::Server(e) => write_error(e, &self.target),
            LoadError::Bad(detail) => SinkError::Rejected {
                sink: SINK.into(),
                detail: format!("{}: {detail}", self.target),
            },
        }
    }
}

/// Writes completeness marks to MySQL ([`crate::marks`]), and reads back
/// diverted rows.
pub struct MySqlMarks {
    shared: Arc<Shared>,
    schema: Arc<Schema>,
    target: Arc<str>,
    conn: Option<PooledConn>,
}

impl MySqlSinkFactory {
    /// A mark writer on this sink's database.
    pub fn marks(&self) -> MySqlMarks {
        MySqlMarks {
            shared: Arc::clone(&self.shared),
            schema: Arc::clone(&self.schema),
            target: Arc::clone(&self.target),
            conn: None,
        }
    }
}

impl MySqlMarks {
    fn with_conn<T>(
        &mut self,
        f: impl FnOnce(&mut PooledConn, &Schema) -> Result<T, mysql::Error>,
    ) -> Result<T, SinkError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self
                .shared
                .pool()?
                .try_get_conn(POOL_WAIT)
                .map_err(|e| write_error(e, &self.target))?,
        };
        match f(&mut conn, &self.schema) {
            Ok(v) => {
                self.conn = Some(conn);
                Ok(v)
            }
            Err(e) => Err(write_error(e, &self.target)),
        }
    }
}

impl crate::marks::MarkWriter for MySqlMarks {
    fn store(&self) -> &str {
        SINK
    }

    fn write(&mut self, aggregate: &str, mark: &crate::marks::Mark) -> Result<(), SinkError> {
        self.with_conn(|conn, schema| {
            conn.exec_drop(
                schema::marks_upsert_sql(&schema.marks),
                (
                    aggregate,
                    mark.writer,
                    mark.writers,
                    mark.complete_up_to,
                    mark.run,
                ),
            )
        })
    }

    fn applied(&mut self, rows: &[crate::marks::HeldRow]) -> Result<Vec<bool>, SinkError> {
        let mut applied = vec![false; rows.len()];
        for (agg, table) in self.schema.aggregates.clone().iter().enumerate() {
            let mine: Vec<usize> = (0..rows.len())
                .filter(|i| usize::from(rows[*i].agg) == agg)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let sql = format!(
                "SELECT `window_start`, `group_key`, `version`, `is_final` FROM {} WHERE {}",
                schema::quote(&table.table),
                vec!["(`window_start` = ? AND `group_key` = ?)"; mine.len()].join(" OR ")
            );
            let params: Vec<Value> = mine
                .iter()
                .flat_map(|i| {
                    [
                        Value::from(rows[*i].window_start),
                        Value::from(rows[*i].key.as_str().as_bytes()),
                    ]
                })
                .collect();
            let stored: Vec<(i64, Vec<u8>, u64, bool)> =
                self.with_conn(|conn, _| conn.exec(&sql, params))?;
            for i in mine {
                let r = &rows[i];
                applied[i] = stored.iter().any(|(ws, k, v, f)| {
                    *ws == r.window_start
                        && k.as_slice() == r.key.as_str().as_bytes()
                        && (*v > r.version || (*v == r.version && *f))
                });
            }
        }
        Ok(applied)
    }
}

impl SinkFactory for MySqlSinkFactory {
    fn name(&self) -> &str {
        SINK
    }

    fn build(&self, worker: usize, _peers: usize) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(MySqlSink {
            shared: Arc::clone(&self.shared),
            conn: None,
            schema: Arc::clone(&self.schema),
            target: Arc::clone(&self.target),
            worker,
        }))
    }
}

/// Why a write did not go through.
enum WriteFailure {
    /// The database or tables could not be prepared.
    Prepare(SinkError),
    /// The server refused or failed the write.
    Server(mysql::Error),
}

impl From<mysql::Error> for WriteFailure {
    fn from(e: mysql::Error) -> Self {
        WriteFailure::Server(e)
    }
}

/// One worker's writer. It takes a connection from the pool at its first
/// write and keeps it, so its prepared statements stay cached; after a
/// failed write it gives the connection back and takes a fresh one next
/// time.
struct MySqlSink {
    shared: Arc<Shared>,
    conn: Option<PooledConn>,
    schema: Arc<Schema>,
    target: Arc<str>,
    worker: usize,
}

impl MySqlSink {
    fn apply(&mut self, mut plan: Plan) -> Result<(), WriteFailure> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let pool = self.shared.pool().map_err(WriteFailure::Prepare)?;
                self.conn.insert(pool.try_get_conn(POOL_WAIT)?)
            }
        };
        let mut tx = conn.start_transaction(TxOpts::default())?;
        for statement in plan.statements(&self.schema) {
            tx.exec_drop(statement.sql, statement.params)?;
        }
        if let (Some(table), false) = (&self.schema.recent, plan.recent.is_empty()) {
            for statement in upsert::recent_statements(table, &plan.recent, self.schema.recent_keep)
            {
                tx.exec_drop(statement.sql, statement.params)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

impl Sink for MySqlSink {
    fn name(&self) -> &str {
        SINK
    }

    fn folds(&self) -> bool {
        true
    }

    fn write(&mut self, rows: &[Output]) -> Result<(), SinkError> {
        let mut plan = Plan::new(&self.schema, rows);
        let skipped = std::mem::take(&mut plan.skipped);
        let written = if plan.is_empty() {
            Ok(())
        } else {
            self.apply(plan)
        };
        if let Err(e) = written {
            // The transaction was rolled back (or the connection is gone);
            // start the next write on a checked connection.
            self.conn = None;
            return Err(match e {
                WriteFailure::Prepare(e) => e,
                WriteFailure::Server(e) => write_error(e, &self.target),
            });
        }
        if skipped.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            sink = SINK,
            worker = self.worker,
            skipped = skipped.len(),
            written = rows.len() - skipped.len(),
            first = %skipped[0],
            "rows the tables cannot hold were left out"
        );
        let mut detail = format!(
            "{}: left out {} of {} rows: {}",
            self.target,
            skipped.len(),
            rows.len(),
            skipped[..skipped.len().min(NAMED_SKIPS)].join("; ")
        );
        if skipped.len() > NAMED_SKIPS {
            detail.push_str(&format!("; and {} more", skipped.len() - NAMED_SKIPS));
        }
        Err(SinkError::Rejected {
            sink: SINK.into(),
            detail,
        })
    }
}

/// `opts` with this sink's defaults where the URL set nothing: timeouts, a
/// pool that opens one connection at once, and a session in utf8mb4 with
/// strict SQL mode (so a value that does not fit is an error, never
/// silently truncated) and `READ COMMITTED` isolation: a write's cut of
/// recent activity scans each of its users' entries, and under `REPEATABLE
/// READ` that scan would lock the gaps next to them, where other workers'
/// users insert, and writers would deadlock.
fn with_defaults(opts: Opts) -> Opts {
    let mut pool_opts = opts.get_pool_opts().clone();
    let url_sets_pool = pool_opts.constraints() != PoolConstraints::DEFAULT;
    if let Some(c) = PoolConstraints::new(1, POOL_MAX).filter(|_| !url_sets_pool) {
        pool_opts = pool_opts.with_constraints(c);
    }
    let connect = opts.get_tcp_connect_timeout().unwrap_or(CONNECT_TIMEOUT);
    let read = opts.get_read_timeout().copied().unwrap_or(IO_TIMEOUT);
    let write = opts.get_write_timeout().copied().unwrap_or(IO_TIMEOUT);
    let mut init = opts.get_init();
    init.push("SET NAMES utf8mb4".into());
    init.push(
        "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES', 'NO_ENGINE_SUBSTITUTION')"
            .into(),
    );
    init.push("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".into());
    OptsBuilder::from_opts(opts)
        .pool_opts(pool_opts)
        .tcp_connect_timeout(Some(connect))
        .read_timeout(Some(read))
        .write_timeout(Some(write))
        .init(init)
        .into()
}

/// A pool for `opts` and one connection from it.
fn open(opts: &Opts) -> Result<(Pool, PooledConn), mysql::Error> {
    let pool = Pool::new(opts.clone())?;
    let conn = pool.try_get_conn(POOL_WAIT)?;
    Ok((pool, conn))
}

fn create_database(opts: &Opts, database: &str) -> Result<(), mysql::Error> {
    let mut conn = Conn::new(OptsBuilder::from_opts(opts.clone()).db_name(None::<String>))?;
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4",
        schema::quote(database)
    ))?;
    tracing::info!(sink = SINK, database, "created the database");
    Ok(())
}

/// Fails with [`SinkError::Config`] when an existing table lacks a column.
fn check_columns(conn: &mut PooledConn, schema: &Schema, target: &str) -> Result<(), SinkError> {
    for (table, expected) in schema.expected_columns() {
        let present: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                (table.as_str(),),
            )
            .map_err(|e| start_up_error(e, target))?;
        let missing: Vec<&String> = expected
            .iter()
            .filter(|c| !present.iter().any(|p| p.eq_ignore_ascii_case(c)))
            .collect();
        if !missing.is_empty() {
            return Err(config(format!(
                "{target}: table `{table}` exists without the columns {missing:?}; \
                 add them (ALTER TABLE) or use another table prefix"
            )));
        }
    }
    Ok(())
}

/// Server error codes that may succeed when tried again.
fn is_transient(code: u16) -> bool {
    matches!(
        code,
        1040 // too many connections
            | 1053 // server shutdown in progress
            | 1158
            ..=1161 // network read/write errors and interruptions
            | 1203 // user has too many connections
            | 1205 // lock wait timeout
            | 1213 // deadlock
            | 1317 // query interrupted
            | 1021 // disk full
            | 1037 | 1038 | 1041 // out of memory
            | 1114 // table is full
            | 1290 | 1836 // read-only server (e.g. during a failover)
            | 1637 // too many active concurrent transactions
            | 1927 // connection killed (MariaDB)
            | 1969 // statement timeout (MariaDB)
            | 3024 // query execution time exceeded (MySQL)
            | 4031 // disconnected for inactivity (MySQL)
    )
}

/// Whether a client-side error concerns the connection, not the statement.
fn is_connection_error(e: &mysql::Error) -> bool {
    match e {
        mysql::Error::DriverError(d) => !matches!(
            d,
            DriverError::MismatchedStmtParams(..)
                | DriverError::Params(_)
                | DriverError::MixedParams
                | DriverError::BulkExecute(_)
        ),
        mysql::Error::IoError(_) | mysql::Error::CodecError(_) => true,
        _ => false,
    }
}

/// Classifies a failed write (or read): connection trouble and transient
/// server errors are retryable, everything else is a rejection.
fn write_error(e: mysql::Error, target: &str) -> SinkError {
    let retryable = match &e {
        mysql::Error::MySqlError(s) => is_transient(s.code),
        other => is_connection_error(other),
    };
    if retryable {
        unavailable(target, &e)
    } else if let mysql::Error::UrlError(_) = e {
        config(format!("{target}: {e}"))
    } else {
        SinkError::Rejected {
            sink: SINK.into(),
            detail: format!("{target}: {e}"),
        }
    }
}

/// Classifies a failure at start-up: as [`write_error`], except that a
/// statement the server refuses is a configuration error.
fn start_up_error(e: mysql::Error, target: &str) -> SinkError {
    match &e {
        mysql::Error::MySqlError(s) if !is_transient(s.code) => config(format!("{target}: {e}")),
        _ => write_error(e, target),
    }
}

fn unavailable(target: &str, e: &mysql::Error) -> SinkError {
    SinkError::Unavailable {
        sink: SINK.into(),
        detail: format!("{target}: {e}"),
    }
}

fn config(detail: String) -> SinkError {
    SinkError::Config {
        sink: SINK.into(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16) -> mysql::Error {
        mysql::Error::MySqlError(mysql::MySqlError {
            state: "HY000".into(),
            message: "m".into(),
            code,
        })
    }

    #[test]
    fn deadlocks_timeouts_and_lost_connections_are_retryable() {
        for e in [
            server(1213),
            server(1205),
            mysql::Error::IoError(std::io::Error::other("reset")),
            mysql::Error::DriverError(DriverError::ConnectTimeout),
        ] {
            assert!(write_error(e, "h:1/d").is_retryable());
        }
    }

    #[test]
    fn bad_data_is_rejected_and_bad_ddl_is_a_config_error() {
        let e = write_error(server(1406), "h:1/d");
        assert!(matches!(e, SinkError::Rejected { .. }), "{e}");
        assert!(e.to_string().contains("h:1/d"));
        let e = write_error(
            mysql::Error::DriverError(DriverError::MismatchedStmtParams(3, 2)),
            "h:1/d",
        );
        assert!(matches!(e, SinkError::Rejected { .. }), "{e}");
        assert!(matches!(
            start_up_error(server(1064), "h:1/d"),
            SinkError::Config { .. }
        ));
        assert!(start_up_error(server(1213), "h:1/d").is_retryable());
    }
}
