//! Turning one `write()`'s rows into the MySQL sink's upsert statements:
//! rows grouped by table in arrival order, converted to statement
//! parameters, and cut into chunks of at most [`MAX_ROWS`] rows.
//!
//! Every statement holds a power-of-two number of rows ([`pieces`]): the
//! MySQL driver prepares and caches one statement per distinct SQL text, and
//! a prepared statement keeps metadata for each of its parameters, so
//! arbitrary row counts would mean a new server-side prepare for most
//! writes and megabytes of cached statements per connection. With powers of
//! two, a table has at most `log2(MAX_ROWS) + 1` statements.
//!
//! A row the tables cannot hold (a group key over 512 bytes, an id over 255
//! bytes, or a row that does not match the spec) is left out and reported
//! with its identity, so the rest of the batch can still be written. Nothing
//! here talks to the server.

use footprint_dataflows::{MeasureValue, Output, RecentEntry, RecentRow, WindowRow, key::GroupKey};
use mysql::Value;

use super::schema::{
    AggregateTable, MAX_GROUP_KEY, MAX_RECENT_ID, MeasureKind, Schema, recent_insert_sql,
    recent_trim_sql,
};
use crate::decimal;

/// Most rows in one `INSERT` statement (a power of two, see [`pieces`]).
pub(crate) const MAX_ROWS: usize = 256;
/// Most parameter bytes (roughly) in one `INSERT` statement, well under the
/// servers' default `max_allowed_packet` (16 MiB on MariaDB).
const MAX_BYTES: usize = 4 << 20;
/// Most parameters one prepared statement may have.
const MAX_PARAMS: usize = u16::MAX as usize;

/// One `write()`'s rows, ready for the server.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Per aggregate table (indexed like the schema), each row's parameters,
    /// in arrival order.
    windows: Vec<Vec<Vec<Value>>>,
    /// The recent-activity rows, checked, in arrival order (merged into the
    /// stored entries by [`recent_statements`]).
    pub recent: Vec<RecentRow>,
    /// Rows left out: their identity and why.
    pub skipped: Vec<String>,
}

/// One statement to execute.
pub(crate) struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
}

impl Plan {
    /// Sorts `rows` into tables, leaving out those the tables cannot hold.
    pub fn new(schema: &Schema, rows: &[Output]) -> Self {
        let mut plan = Plan {
            windows: vec![Vec::new(); schema.aggregates.len()],
            ..Plan::default()
        };
        for row in rows {
            match row {
                Output::Window(w) => {
                    let index = usize::from(w.agg);
                    let params = match schema.aggregates.get(index) {
                        Some(table) => window_params(table, w),
                        None => Err(format!("aggregate index {index} is not in the spec")),
                    };
                    match params {
                        Ok(p) => plan.windows[index].push(p),
                        Err(why) => plan.skipped.push(format!("{}: {why}", window_identity(w))),
                    }
                }
                Output::Recent(r) => match (&schema.recent, check_recent(r)) {
                    (Some(_), Ok(())) => plan.recent.push(r.clone()),
                    (None, _) => plan.skipped.push(format!(
                        "{}: recent activity is not in the spec, so it has no table",
                        recent_identity(r)
                    )),
                    (Some(_), Err(why)) => {
                        plan.skipped.push(format!("{}: {why}", recent_identity(r)))
                    }
                },
            }
        }
        plan
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.recent.is_empty() && self.windows.iter().all(Vec::is_empty)
    }

    /// The window statements to run, table by table, each table's rows in
    /// primary-key order, and rows of the same identity in arrival order (so
    /// a later version in the same batch is applied after an earlier one).
    ///
    /// Key order makes every writer take its row locks in the same order, so
    /// concurrent batches of several workers wait for each other instead of
    /// deadlocking, and it keeps a batch's inserts together in the index.
    pub fn statements(&mut self, schema: &Schema) -> Vec<Statement> {
        let mut out = Vec::new();
        for (table, mut rows) in schema
            .aggregates
            .iter()
            .zip(std::mem::take(&mut self.windows))
        {
            rows.sort_by(|a, b| primary_key(a).cmp(&primary_key(b)));
            chunk(rows, |n| table.upsert_sql(n), &mut out);
        }
        out
    }
}

/// The statements that merge recent-activity `rows` into `table`: the
/// inserts of every entry, in primary-key order (so concurrent writers lock
/// rows in the same order; an entry given twice goes once), then the cuts of
/// the rows' users to `keep` (see [`recent_trim_sql`]), in key order.
pub(crate) fn recent_statements(table: &str, rows: &[RecentRow], keep: usize) -> Vec<Statement> {
    let id = |r: &RecentRow| (r.app_id.as_bytes().to_vec(), r.user_id.as_bytes().to_vec());
    let mut entries: Vec<(&RecentRow, &RecentEntry)> = rows
        .iter()
        .flat_map(|r| r.events.iter().map(move |e| (r, e)))
        .collect();
    entries.sort_by(|(a, x), (b, y)| (&a.app_id, &a.user_id, x).cmp(&(&b.app_id, &b.user_id, y)));
    entries.dedup_by(|(a, x), (b, y)| (&a.app_id, &a.user_id, &*x) == (&b.app_id, &b.user_id, &*y));
    let params = entries
        .into_iter()
        .map(|(r, e)| {
            let (app, user) = id(r);
            vec![
                Value::Bytes(app),
                Value::Bytes(user),
                Value::Int(e.ts),
                Value::UInt(u64::from(e.partition)),
                Value::Int(e.offset),
                Value::Bytes(e.event.as_bytes().to_vec()),
                e.item_id
                    .as_ref()
                    .map_or(Value::NULL, |i| Value::Bytes(i.as_bytes().to_vec())),
            ]
        })
        .collect();
    let mut out = Vec::new();
    chunk(params, |n| recent_insert_sql(table, n), &mut out);
    let mut users: Vec<(Vec<u8>, Vec<u8>)> = rows.iter().map(id).collect();
    users.sort();
    users.dedup();
    for piece in pieces(&users, MAX_ROWS) {
        out.push(Statement {
            sql: recent_trim_sql(table, piece.len(), keep),
            params: piece
                .iter()
                .flat_map(|(app, user)| [Value::Bytes(app.clone()), Value::Bytes(user.clone())])
                .collect(),
        });
    }
    out
}

fn chunk(rows: Vec<Vec<Value>>, sql: impl Fn(usize) -> String, out: &mut Vec<Statement>) {
    let mut group: Vec<Vec<Value>> = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let size: usize = row.iter().map(value_size).sum();
        let max_rows = MAX_ROWS.min(MAX_PARAMS / row.len().max(1));
        if !group.is_empty() && (group.len() >= max_rows || bytes + size > MAX_BYTES) {
            emit(&mut group, &sql, out);
            bytes = 0;
        }
        group.push(row);
        bytes += size;
    }
    emit(&mut group, &sql, out);
}

/// One statement per piece of `group` (see [`pieces`]), in order.
fn emit(group: &mut Vec<Vec<Value>>, sql: &impl Fn(usize) -> String, out: &mut Vec<Statement>) {
    let mut rows = group.drain(..);
    for n in piece_sizes(rows.len(), usize::MAX) {
        out.push(Statement {
            sql: sql(n),
            params: rows.by_ref().take(n).flatten().collect(),
        });
    }
}

/// `items` cut, in order, into slices whose lengths are powers of two of at
/// most `max`: whole slices of the largest such power, then the binary
/// digits of what is left, largest first (`1,000` rows at a `max` of 256:
/// 256, 256, 256, 128, 64, 32, 8). A statement per slice keeps the number of
/// distinct statements per table at `log2(max) + 1`.
pub(crate) fn pieces<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    piece_sizes(items.len(), max).map(move |n| {
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        piece
    })
}

/// The lengths [`pieces`] cuts `n` items into.
fn piece_sizes(mut n: usize, max: usize) -> impl Iterator<Item = usize> {
    let max = if max == 0 { 1 } else { 1 << max.ilog2() };
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = max.min(1 << n.ilog2());
        n -= size;
        Some(size)
    })
}

/// The primary key (`window_start`, `group_key`) of a window row's
/// parameters, as [`window_params`] lays them out.
fn primary_key(params: &[Value]) -> (i64, &[u8]) {
    let start = match params.get(1) {
        Some(Value::Int(i)) => *i,
        _ => i64::MIN,
    };
    let group_key = match params.first() {
        Some(Value::Bytes(b)) => b.as_slice(),
        _ => &[],
    };
    (start, group_key)
}

pub(crate) fn value_size(v: &Value) -> usize {
    match v {
        Value::Bytes(b) => b.len() + 9,
        _ => 9,
    }
}

fn window_params(table: &AggregateTable, row: &WindowRow) -> Result<Vec<Value>, String> {
    if *row.aggregate != *table.aggregate {
        return Err(format!(
            "aggregate index {} is `{}` in the spec",
            row.agg, table.aggregate
        ));
    }
    let names_match = row.key.len() == table.fields.len()
        && row
            .key
            .iter()
            .zip(&table.fields)
            .all(|((f, _), g)| **f == **g);
    if !names_match {
        return Err(format!(
            "key fields differ from the spec's {:?}",
            table.fields
        ));
    }
    let key = GroupKey::from_parts(row.key.iter().map(|(_, v)| v.as_str()));
    if key.as_str().len() > MAX_GROUP_KEY {
        return Err(format!(
            "group key is {} bytes, more than the {MAX_GROUP_KEY} the table holds",
            key.as_str().len()
        ));
    }
    if row.measures.len() != table.measures.len() {
        return Err(format!(
            "{} measures, the spec has {}",
            row.measures.len(),
            table.measures.len()
        ));
    }
    let mut params = Vec::with_capacity(5 + row.key.len() + row.measures.len());
    params.push(Value::Bytes(key.as_str().as_bytes().to_vec()));
    params.push(Value::Int(row.window_start));
    params.push(Value::Int(row.window_end));
    params.extend(
        row.key
            .iter()
            .map(|(_, v)| Value::Bytes(v.as_bytes().to_vec())),
    );
    for ((name, value), column) in row.measures.iter().zip(&table.measures) {
        let param = match (column.kind, value) {
            _ if **name != *column.name => None,
            (MeasureKind::Count, MeasureValue::Count(n))
            | (MeasureKind::Distinct, MeasureValue::Distinct(n)) => Some(Value::UInt(*n)),
            (MeasureKind::Sum, MeasureValue::Sum(micros)) => {
                Some(Value::Bytes(decimal::from_micros(*micros).into_bytes()))
            }
            _ => None,
        };
        match param {
            Some(p) => params.push(p),
            None => {
                return Err(format!(
                    "measure `{name}` = {value:?} does not match the spec's `{}`",
                    column.name
                ));
            }
        }
    }
    params.push(Value::UInt(row.version));
    params.push(Value::Int(i64::from(row.is_final)));
    Ok(params)
}

fn check_recent(row: &RecentRow) -> Result<(), String> {
    for (what, id) in [("app_id", &row.app_id), ("user_id", &row.user_id)] {
        if id.len() > MAX_RECENT_ID {
            return Err(format!(
                "{what} is {} bytes, more than the {MAX_RECENT_ID} the table holds",
                id.len()
            ));
        }
    }
    Ok(())
}

/// A window row's identity, for messages (long values shortened).
pub(crate) fn window_identity(row: &WindowRow) -> String {
    let key: Vec<String> = row
        .key
        .iter()
        .map(|(f, v)| format!("{f}={}", short(v)))
        .collect();
    format!(
        "{} [{}] window_start={} version={}",
        row.aggregate,
        key.join(", "),
        row.window_start,
        row.version
    )
}

fn recent_identity(row: &RecentRow) -> String {
    format!(
        "recent app_id={} user_id={}",
        short(&row.app_id),
        short(&row.user_id)
    )
}

fn short(value: &str) -> String {
    const KEEP: usize = 40;
    match value.char_indices().nth(KEEP) {
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
        None => format!("{value:?}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use footprint_dataflows::{
        AggregateSpec, Field, Measure, PipelineSpec, RecentEntry, WindowSpec,
    };

    use super::*;

    fn schema() -> Schema {
        let spec = PipelineSpec {
            aggregates: vec![AggregateSpec {
                name: "a".into(),
                group_by: vec![Field::AppId],
                window: WindowSpec::tumbling(1_000).expect("window"),
                measures: vec![Measure::Count, Measure::SumValue],
                allowed_lateness: 0,
                early_updates: None,
                sinks: vec![],
            }],
            recent: None,
            max_out_of_order: 0,
        };
        Schema::new(&Arc::new(spec), "").expect("schema")
    }

    fn row(app: &str, version: u64) -> Output {
        Output::Window(WindowRow {
            agg: 0,
            aggregate: "a".into(),
            key: vec![("app_id".into(), app.into())],
            window_start: 0,
            window_end: 1_000,
            measures: vec![
                ("count".into(), MeasureValue::Count(version)),
                ("sum(value)".into(), MeasureValue::Sum(-5)),
            ],
            version,
            is_final: false,
            freshest_append_ms: None,
        })
    }

    #[test]
    fn chunks_at_the_row_limit_keeping_arrival_order_within_an_identity() {
        let rows: Vec<Output> = (0..MAX_ROWS as u64 + 3).map(|v| row("x", v)).collect();
        let schema = schema();
        let mut plan = Plan::new(&schema, &rows);
        assert!(plan.skipped.is_empty());
        let statements = plan.statements(&schema);
        // 259 rows: 256, then the binary digits of 3.
        let sizes: Vec<usize> = statements.iter().map(|s| s.params.len() / 8).collect();
        assert_eq!(sizes, vec![MAX_ROWS, 2, 1]);
        for (s, n) in statements.iter().zip(&sizes) {
            assert_eq!(s.sql, schema.aggregates[0].upsert_sql(*n));
        }
        assert_eq!(statements[1].params[4], Value::UInt(MAX_ROWS as u64));
        assert_eq!(statements[2].params[4], Value::UInt(MAX_ROWS as u64 + 2));
        assert_eq!(statements[0].params[5], Value::Bytes(b"-0.000005".to_vec()));
    }

    #[test]
    fn pieces_are_powers_of_two_in_order_and_cover_every_item() {
        let cut = |n: usize, max: usize| -> Vec<usize> {
            let items: Vec<usize> = (0..n).collect();
            let mut next = 0;
            pieces(&items, max)
                .map(|p| {
                    assert_eq!(p[0], next, "in order, nothing skipped");
                    next += p.len();
                    p.len()
                })
                .collect()
        };
        assert_eq!(cut(0, 256), Vec::<usize>::new());
        assert_eq!(cut(1, 256), vec![1]);
        assert_eq!(cut(1_000, 256), vec![256, 256, 256, 128, 64, 32, 8]);
        assert_eq!(cut(7, 500), vec![4, 2, 1]);
        assert_eq!(cut(600, 500), vec![256, 256, 64, 16, 8]);
        let mut sizes = std::collections::BTreeSet::new();
        for n in 0..2_000 {
            let c = cut(n, MAX_ROWS);
            assert_eq!(c.iter().sum::<usize>(), n);
            assert!(c.iter().all(|s| s.is_power_of_two() && *s <= MAX_ROWS));
            sizes.extend(c);
        }
        // Every statement size a table can need: log2(MAX_ROWS) + 1.
        assert_eq!(sizes.len(), MAX_ROWS.ilog2() as usize + 1);
    }

    #[test]
    fn orders_rows_by_primary_key_keeping_arrival_order_within_an_identity() {
        let mut rows = vec![row("b", 2), row("a", 7), row("b", 1), row("a", 3)];
        if let Output::Window(w) = &mut rows[3] {
            w.window_start = -1_000;
            w.window_end = 0;
        }
        let schema = schema();
        let mut plan = Plan::new(&schema, &rows);
        let statements = plan.statements(&schema);
        assert_eq!(statements.len(), 1);
        let order: Vec<(Value, Value, Value)> = statements[0]
            .params
            .chunks(8)
            .map(|p| (p[0].clone(), p[1].clone(), p[4].clone()))
            .collect();
        let key = |k: &str, start: i64, version: u64| {
            let group_key = GroupKey::from_parts([k]);
            (
                Value::Bytes(group_key.as_str().as_bytes().to_vec()),
                Value::Int(start),
                Value::UInt(version),
            )
        };
        assert_eq!(
            order,
            vec![
                key("a", -1_000, 3),
                key("a", 0, 7),
                key("b", 0, 2),
                key("b", 0, 1)
            ]
        );
    }

    #[test]
    fn leaves_out_rows_the_tables_cannot_hold_and_names_them() {
        let long = "é".repeat(300);
        let recent = Output::Recent(RecentRow {
            app_id: "a".into(),
            user_id: "u".into(),
            events: vec![RecentEntry {
                ts: 1,
                partition: 0,
                offset: 0,
                event: "view".into(),
                item_id: None,
            }],
        });
        let schema = schema();
        let mut plan = Plan::new(&schema, &[row(&long, 1), row("ok", 1), recent]);
        assert_eq!(plan.skipped.len(), 2);
        assert!(plan.skipped[0].contains("group key is 604 bytes"));
        assert!(plan.skipped[0].starts_with("a [app_id=\"éééé"));
        assert!(plan.skipped[1].contains("recent activity is not in the spec"));
        assert_eq!(plan.statements(&schema).len(), 1);
    }

    #[test]
    fn recent_rows_become_entry_inserts_then_one_cut_per_piece_of_users() {
        let entry = |ts: i64, offset: i64, item: Option<&str>| RecentEntry {
            ts,
            partition: 2,
            offset,
            event: "view".into(),
            item_id: item.map(Into::into),
        };
        let users: Vec<RecentRow> = (0..300)
            .map(|u| RecentRow {
                app_id: "app".into(),
                user_id: format!("u{u:03}"),
                events: vec![entry(20, 2 * u, Some("sku")), entry(10, 2 * u + 1, None)],
            })
            .collect();
        let statements = recent_statements("r", &users, 50);
        // 600 entries: 256 + 256 + 64 + 16 + 8 rows; then 300 users: 256 + 32 + 8 + 4.
        let sizes: Vec<(bool, usize)> = statements
            .iter()
            .map(|s| (s.sql.starts_with("INSERT IGNORE"), s.params.len()))
            .collect();
        let expected: Vec<(bool, usize)> = [256, 256, 64, 16, 8]
            .map(|n| (true, 7 * n))
            .into_iter()
            .chain([256, 32, 8, 4].map(|n| (false, 2 * n)))
            .collect();
        assert_eq!(sizes, expected);
        // A user's entries go oldest first, each with its order and item.
        assert_eq!(
            statements[0].params[..14],
            [
                Value::Bytes(b"app".to_vec()),
                Value::Bytes(b"u000".to_vec()),
                Value::Int(10),
                Value::UInt(2),
                Value::Int(1),
                Value::Bytes(b"view".to_vec()),
                Value::NULL,
                Value::Bytes(b"app".to_vec()),
                Value::Bytes(b"u000".to_vec()),
                Value::Int(20),
                Value::UInt(2),
                Value::Int(0),
                Value::Bytes(b"view".to_vec()),
                Value::Bytes(b"sku".to_vec()),
            ]
        );
        assert!(statements[5].sql.starts_with("DELETE `r` FROM `r` JOIN"));
        assert!(statements[5].sql.contains("WHERE `n` > 50"));
        assert_eq!(
            statements[5].params[..2],
            [
                Value::Bytes(b"app".to_vec()),
                Value::Bytes(b"u000".to_vec())
            ]
        );
    }
}
