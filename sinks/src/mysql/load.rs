//! Reading the MySQL sink's tables back into the dataflow's row types, for
//! tests and tools. Rows come out exactly as the dataflow produces them
//! (measures in spec order under their spec names, keys as `(field, value)`
//! pairs in group-by order), sorted like `footprint_dataflows::reference`'s
//! maps: window rows by (aggregate name, key, window start), recent rows by
//! (app, user).

use std::sync::Arc;

use footprint_dataflows::{MeasureValue, RecentEntry, RecentRow, WindowRow, key::GroupKey};
use mysql::prelude::{FromValue, Queryable};
use mysql::{Row, Value};

use super::schema::{AggregateTable, MeasureKind, Schema, quote};
use crate::decimal;

/// MySQL's "table does not exist".
pub(crate) const ER_NO_SUCH_TABLE: u16 = 1146;

/// Why reading back failed: a server error, or a stored value that does
/// not convert.
pub(crate) enum LoadError {
    Server(mysql::Error),
    Bad(String),
}

impl From<mysql::Error> for LoadError {
    fn from(e: mysql::Error) -> Self {
        LoadError::Server(e)
    }
}

/// Every stored window row of every aggregate.
pub(crate) fn windows(
    conn: &mut impl Queryable,
    schema: &Schema,
) -> Result<Vec<WindowRow>, LoadError> {
    let mut out = Vec::new();
    for (index, table) in schema.aggregates.iter().enumerate() {
        let agg = u16::try_from(index).map_err(|_| LoadError::Bad("too many aggregates".into()))?;
        let columns: Vec<String> = table.columns().iter().map(|c| quote(c)).collect();
        let sql = format!("SELECT {} FROM {}", columns.join(","), quote(&table.table));
        for row in conn.query::<Row, _>(sql)? {
            out.push(window_row(table, agg, row)?);
        }
    }
    out.sort_by(|a, b| {
        (&a.aggregate, &a.key, a.window_start).cmp(&(&b.aggregate, &b.key, b.window_start))
    });
    Ok(out)
}

pub(crate) fn window_row(
    table: &AggregateTable,
    agg: u16,
    mut row: Row,
) -> Result<WindowRow, LoadError> {
    let mut next = 0;
    let mut take = |what: &str| {
        let i = next;
        next += 1;
        (i, format!("{}.{what}", table.table))
    };
    let (i, what) = take("group_key");
    let group_key: Vec<u8> = column(&mut row, i, &what)?;
    let (i, what) = take("window_start");
    let window_start: i64 = column(&mut row, i, &what)?;
    let (i, what) = take("window_end");
    let window_end: i64 = column(&mut row, i, &what)?;
    let mut key = Vec::with_capacity(table.fields.len());
    for (field, col) in table.fields.iter().zip(&table.key_columns) {
        let (i, what) = take(col);
        key.push((
            Arc::from(field.as_str()),
            column::<String>(&mut row, i, &what)?,
        ));
    }
    let encoded = GroupKey::from_parts(key.iter().map(|(_, v)| v.as_str()));
    if encoded.as_str().as_bytes() != group_key.as_slice() {
        return Err(LoadError::Bad(format!(
            "{}: group_key {:?} does not match the key columns {key:?}",
            table.table,
            String::from_utf8_lossy(&group_key)
        )));
    }
    let mut measures = Vec::with_capacity(table.measures.len());
    for m in &table.measures {
        let (i, what) = take(&m.column);
        let value = match m.kind {
            MeasureKind::Count => MeasureValue::Count(column(&mut row, i, &what)?),
            MeasureKind::Distinct => MeasureValue::Distinct(column(&mut row, i, &what)?),
            MeasureKind::Sum => {
                let text: String = column(&mut row, i, &what)?;
                let micros = decimal::to_micros(&text)
                    .ok_or_else(|| LoadError::Bad(format!("{what}: `{text}` is not a sum")))?;
                MeasureValue::Sum(micros)
            }
        };
        measures.push((Arc::from(m.name.as_str()), value));
    }
    let (i, what) = take("version");
    let version: u64 = column(&mut row, i, &what)?;
    let (i, what) = take("is_final");
    let is_final: bool = column(&mut row, i, &what)?;
    Ok(WindowRow {
        agg,
        aggregate: Arc::from(table.aggregate.as_str()),
        key: key.into_iter().map(|(k, v)| (k, v.into())).collect(),
        window_start,
        window_end,
        measures,
        version,
        is_final,
        freshest_append_ms: None,
    })
}

/// Every stored recent-activity row; none when the spec keeps no recent
/// activity. Each list is the newest `keep` of the user's entries and, where
/// the earlier layout's table exists, its stored list.
pub(crate) fn recent(
    conn: &mut impl Queryable,
    schema: &Schema,
) -> Result<Vec<RecentRow>, LoadError> {
    let Some(table) = &schema.recent else {
        return Ok(Vec::new());
    };
    let mut rows = Vec::new();
    let sql = format!(
        "SELECT `app_id`, `user_id`, {RECENT_ENTRY} FROM {}",
        quote(table)
    );
    for mut row in conn.query::<Row, _>(sql)? {
        let app_id: String = column(&mut row, 0, "recent.app_id")?;
        let user_id: String = column(&mut row, 1, "recent.user_id")?;
        let events = vec![recent_entry(&mut row, 2)?];
        rows.push(RecentRow {
            app_id,
            user_id,
            events,
        });
    }
    if let Some(legacy) = &schema.recent_legacy {
        let sql = format!(
            "SELECT `app_id`, `user_id`, `events` FROM {}",
            quote(legacy)
        );
        match conn.query::<Row, _>(sql) {
            Ok(stored) => {
                for mut row in stored {
                    let app_id: String = column(&mut row, 0, "recent.app_id")?;
                    let user_id: String = column(&mut row, 1, "recent.user_id")?;
                    let events = legacy_events(legacy, &mut row, 2, &app_id, &user_id)?;
                    rows.push(RecentRow {
                        app_id,
                        user_id,
                        events,
                    });
                }
            }
            Err(mysql::Error::MySqlError(e)) if e.code == ER_NO_SUCH_TABLE => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(RecentRow::merge_by_user(rows, schema.recent_keep))
}

/// The columns of one recent-activity entry, in the order
/// [`recent_entry`] reads them.
pub(crate) const RECENT_ENTRY: &str = "`ts`, `partition`, `offset`, `event`, `item_id`";

/// The entry in `row`'s columns from `first` on (see [`RECENT_ENTRY`]).
pub(crate) fn recent_entry(row: &mut Row, first: usize) -> Result<RecentEntry, LoadError> {
    let ts: i64 = column(row, first, "recent.ts")?;
    let partition: u32 = column(row, first + 1, "recent.partition")?;
    let offset: i64 = column(row, first + 2, "recent.offset")?;
    let event: String = column(row, first + 3, "recent.event")?;
    let item_id = match row.take_opt::<Value, _>(first + 4) {
        Some(Ok(Value::NULL)) => None,
        Some(Ok(v)) => Some(
            mysql::from_value_opt::<String>(v)
                .map_err(|e| LoadError::Bad(format!("recent.item_id: cannot convert {:?}", e.0)))?,
        ),
        _ => {
            return Err(LoadError::Bad(
                "recent.item_id: missing from the result".into(),
            ));
        }
    };
    Ok(RecentEntry {
        ts,
        partition,
        offset,
        event: event.into(),
        item_id: item_id.map(Into::into),
    })
}

/// The JSON list in column `index` of a row of the earlier layout's table.
pub(crate) fn legacy_events(
    table: &str,
    row: &mut Row,
    index: usize,
    app_id: &str,
    user_id: &str,
) -> Result<Vec<RecentEntry>, LoadError> {
    let events: String = column(row, index, "recent.events")?;
    serde_json::from_str(&events)
        .map_err(|e| LoadError::Bad(format!("{table}.events of {app_id}/{user_id}: {e}")))
}

pub(crate) fn column<T: FromValue>(
    row: &mut Row,
    index: usize,
    what: &str,
) -> Result<T, LoadError> {
    match row.take_opt::<Value, _>(index) {
        None => Err(LoadError::Bad(format!("{what}: missing from the result"))),
        Some(Ok(Value::NULL)) => Err(LoadError::Bad(format!("{what}: NULL"))),
        Some(Ok(v)) => mysql::from_value_opt::<T>(v)
            .map_err(|e| LoadError::Bad(format!("{what}: cannot convert {:?}", e.0))),
        Some(Err(e)) => Err(LoadError::Bad(format!("{what}: cannot convert {:?}", e.0))),
    }
}
