//! The MySQL sink's table layout: table and column names derived from the
//! pipeline spec, the `CREATE TABLE` statements, and the conditional upsert
//! statements that enforce the version rule.
//!
//! Everything here is pure string building, checked once at start-up; it
//! performs no I/O.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use footprint_dataflows::{AggregateSpec, Measure, PipelineSpec};

use crate::SinkError;

/// The longest group key, in bytes, the `group_key` column holds.
pub(crate) const MAX_GROUP_KEY: usize = 512;
/// The longest `app_id` or `user_id`, in bytes, the recent table holds.
pub(crate) const MAX_RECENT_ID: usize = 255;
/// MySQL's and MariaDB's limit on identifier length.
const MAX_IDENTIFIER: usize = 64;

/// The name of the recent-activity table, after the prefix: one row per
/// entry.
const RECENT_TABLE: &str = "recent_entries";
/// The name of the table of the earlier recent-activity layout (one JSON
/// list per user), after the prefix. It is no longer written; where it
/// exists its lists are read and merged with the entries.
const LEGACY_RECENT_TABLE: &str = "recent_activity";
/// The name of the completeness marks' table, after the prefix.
pub(crate) const MARKS_TABLE_SUFFIX: &str = "marks";

/// How a measure is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MeasureKind {
    /// `count`, in a `BIGINT`.
    Count,
    /// `distinct(FIELD)`, in a `BIGINT`.
    Distinct,
    /// `sum(value)`, in a `DECIMAL(38,6)`.
    Sum,
}

/// One measure column.
#[derive(Debug, Clone)]
pub(crate) struct MeasureColumn {
    /// The measure's name in result rows (its `Display`).
    pub name: String,
    /// The column name, `m_…`.
    pub column: String,
    pub kind: MeasureKind,
}

/// The table of one aggregate.
#[derive(Debug, Clone)]
pub(crate) struct AggregateTable {
    /// Aggregate name.
    pub aggregate: String,
    /// Table name, without quotes.
    pub table: String,
    /// Group-by field names (their `Display`), in key order.
    pub fields: Vec<String>,
    /// The readable key columns, `k_…`, one per group-by field.
    pub key_columns: Vec<String>,
    /// The measure columns, in spec order.
    pub measures: Vec<MeasureColumn>,
}

/// Every table the sink writes, derived from the spec.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    /// One table per aggregate, indexed like `spec.aggregates`.
    pub aggregates: Vec<AggregateTable>,
    /// The recent-activity table, when the spec keeps recent activity.
    pub recent: Option<String>,
    /// The earlier layout's recent-activity table, read (where it exists)
    /// when the spec keeps recent activity, never written.
    pub recent_legacy: Option<String>,
    /// How many entries a user's recent activity keeps.
    pub recent_keep: usize,
    /// The completeness marks' table ([`crate::marks`]).
    pub marks: String,
}

impl Schema {
    /// Derives the tables of `spec`, checking every name.
    pub fn new(spec: &Arc<PipelineSpec>, table_prefix: &str) -> Result<Self, SinkError> {
        if !table_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(config(format!(
                "table prefix `{table_prefix}` may hold only ASCII letters, digits and `_`"
            )));
        }
        let mut tables = HashSet::new();
        let mut aggregates = Vec::with_capacity(spec.aggregates.len());
        for agg in &spec.aggregates {
            let table = AggregateTable::new(agg, table_prefix)?;
            if !tables.insert(table.table.to_ascii_lowercase()) {
                return Err(config(format!(
                    "two aggregates map to the table `{}`",
                    table.table
                )));
            }
            aggregates.push(table);
        }
        let (recent, recent_legacy) = match spec.recent {
            Some(_) => {
                let table = table_name(table_prefix, RECENT_TABLE)?;
                let legacy = table_name(table_prefix, LEGACY_RECENT_TABLE)?;
                for name in [&table, &legacy] {
                    if tables.contains(&name.to_ascii_lowercase()) {
                        return Err(config(format!(
                            "aggregate table `{name}` would be a recent-activity table; rename the aggregate or change the table prefix"
                        )));
                    }
                }
                (Some(table), Some(legacy))
            }
            None => (None, None),
        };
        let marks = table_name(table_prefix, MARKS_TABLE_SUFFIX)?;
        if tables.contains(&marks.to_ascii_lowercase()) {
            return Err(config(format!(
                "aggregate table `{marks}` would be the completeness marks' table; rename the aggregate or change the table prefix"
            )));
        }
        Ok(Schema {
            aggregates,
            recent,
            recent_legacy,
            recent_keep: spec.recent.as_ref().map_or(0, |r| r.keep),
            marks,
        })
    }

    /// Every table with its expected columns, for checking existing tables.
    pub fn expected_columns(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = self
            .aggregates
            .iter()
            .map(|t| (t.table.clone(), t.columns()))
            .collect();
        if let Some(recent) = &self.recent {
            out.push((recent.clone(), recent_columns()));
        }
        out
    }

    /// Every `CREATE TABLE IF NOT EXISTS` statement.
    pub fn create_statements(&self) -> Vec<String> {
        let mut out: Vec<String> = self.aggregates.iter().map(|t| t.create_sql()).collect();
        if let Some(recent) = &self.recent {
            out.push(recent_create_sql(recent));
        }
        out.push(marks_create_sql(&self.marks));
        out
    }
}

impl AggregateTable {
    fn new(agg: &AggregateSpec, table_prefix: &str) -> Result<Self, SinkError> {
        let mut chars = agg.name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(config(format!(
                "aggregate name `{}` cannot name a table: use [A-Za-z][A-Za-z0-9_]*",
                agg.name
            )));
        }
        let table = table_name(table_prefix, &agg.name)?;
        let mut seen: HashSet<String> = ["group_key", "window_start", "window_end", "version"]
            .into_iter()
            .chain(["is_final", "updated_at"])
            .map(str::to_owned)
            .collect();
        let mut claim = |column: String, from: &str| -> Result<String, SinkError> {
            if column.len() > MAX_IDENTIFIER {
                return Err(config(format!(
                    "aggregate `{}`: column `{column}` for `{from}` is longer than {MAX_IDENTIFIER} characters",
                    agg.name
                )));
            }
            if !seen.insert(column.to_ascii_lowercase()) {
                return Err(config(format!(
                    "aggregate `{}`: `{from}` maps to the column `{column}`, which is already taken",
                    agg.name
                )));
            }
            Ok(column)
        };
        let mut fields = Vec::with_capacity(agg.group_by.len());
        let mut key_columns = Vec::with_capacity(agg.group_by.len());
        for field in &agg.group_by {
            let name = field.to_string();
            key_columns.push(claim(format!("k_{}", sanitise(&name)), &name)?);
            fields.push(name);
        }
        let mut measures = Vec::with_capacity(agg.measures.len());
        for measure in &agg.measures {
            let name = measure.to_string();
            let column = claim(format!("m_{}", sanitise(&name)), &name)?;
            let kind = match measure {
                Measure::Count => MeasureKind::Count,
                Measure::Distinct(_) => MeasureKind::Distinct,
                Measure::SumValue => MeasureKind::Sum,
            };
            measures.push(MeasureColumn { name, column, kind });
        }
        Ok(AggregateTable {
            aggregate: agg.name.clone(),
            table,
            fields,
            key_columns,
            measures,
        })
    }

    /// Every column the sink writes or reads, in insert order.
    pub fn columns(&self) -> Vec<String> {
        let mut cols: Vec<String> = ["group_key", "window_start", "window_end"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        cols.extend(self.key_columns.iter().cloned());
        cols.extend(self.measures.iter().map(|m| m.column.clone()));
        cols.push("version".into());
        cols.push("is_final".into());
        cols
    }

    fn create_sql(&self) -> String {
        let mut sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (\n  `group_key` VARBINARY({MAX_GROUP_KEY}) NOT NULL,\n  `window_start` BIGINT NOT NULL,\n  `window_end` BIGINT NOT NULL,\n",
            quote(&self.table)
        );
        for k in &self.key_columns {
            let _ = writeln!(sql, "  {} TEXT NOT NULL,", quote(k));
        }
        for m in &self.measures {
            let ty = match m.kind {
                MeasureKind::Count | MeasureKind::Distinct => "BIGINT",
                MeasureKind::Sum => "DECIMAL(38,6)",
            };
            let _ = writeln!(sql, "  {} {ty},", quote(&m.column));
        }
        sql.push_str(
            "  `version` BIGINT UNSIGNED NOT NULL,\n  `is_final` TINYINT(1) NOT NULL,\n  `updated_at` TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),\n  PRIMARY KEY (`window_start`, `group_key`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        );
        sql
    }

    /// The upsert of `rows` rows.
    ///
    /// Every non-key column is assigned `IF(newer, VALUES(c), c)`, where
    /// `newer` compares `(version, is_final)` of the incoming row with the
    /// stored one. MySQL and MariaDB evaluate the assignments left to right
    /// and later ones see the values earlier ones assigned, so the columns
    /// are ordered: measures and `window_end` first (the stored pair is still
    /// untouched), then `is_final` (its own condition reads the stored
    /// `is_final` before assigning it), then `version` last. By then
    /// `is_final` may have changed, so `version` does not test the pair
    /// again: it takes `GREATEST(version, VALUES(version))`, which is the
    /// incoming version exactly when `newer` held (newer implies an incoming
    /// version at least the stored one, and not newer implies at most).
    ///
    /// The key columns (`k_…`) are a function of `group_key` and are only
    /// written by the insert.
    pub fn upsert_sql(&self, rows: usize) -> String {
        let columns = self.columns();
        let newer = "(VALUES(`version`), VALUES(`is_final`)) >= (`version`, `is_final`)";
        let mut updates: Vec<String> = std::iter::once("window_end")
            .chain(self.measures.iter().map(|m| m.column.as_str()))
            .chain(std::iter::once("is_final"))
            .map(|c| {
                let c = quote(c);
                format!("{c} = IF({newer}, VALUES({c}), {c})")
            })
            .collect();
        updates.push("`version` = GREATEST(`version`, VALUES(`version`))".into());
        insert_sql(&self.table, &columns, rows, &updates)
    }
}

/// The recent-activity table's columns, in insert order: the user, the
/// entry's order (`ts`, `partition`, `offset`; with the user, the primary
/// key), and what happened.
pub(crate) fn recent_columns() -> Vec<String> {
    [
        "app_id",
        "user_id",
        "ts",
        "partition",
        "offset",
        "event",
        "item_id",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// One row per entry. A user's entries are one range of the primary key,
/// read newest first by scanning it backwards. `event` and `item_id` are
/// blobs, so the table holds whatever an event carried (up to 16 MiB).
fn recent_create_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  `app_id` VARBINARY({MAX_RECENT_ID}) NOT NULL,\n  `user_id` VARBINARY({MAX_RECENT_ID}) NOT NULL,\n  `ts` BIGINT NOT NULL,\n  `partition` INT UNSIGNED NOT NULL,\n  `offset` BIGINT NOT NULL,\n  `event` MEDIUMBLOB NOT NULL,\n  `item_id` MEDIUMBLOB NULL,\n  PRIMARY KEY (`app_id`, `user_id`, `ts`, `partition`, `offset`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        quote(table)
    )
}

fn marks_create_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  `aggregate` VARCHAR(64) NOT NULL,\n  `writer` INT UNSIGNED NOT NULL,\n  `writers` INT UNSIGNED NOT NULL,\n  `complete_up_to` BIGINT NOT NULL,\n  `run` BIGINT NOT NULL,\n  `updated_at` TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),\n  PRIMARY KEY (`aggregate`, `writer`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        quote(table)
    )
}

/// The upsert of one writer's mark: the greater `complete_up_to` stays.
pub(crate) fn marks_upsert_sql(table: &str) -> String {
    format!(
        "INSERT INTO {} (`aggregate`, `writer`, `writers`, `complete_up_to`, `run`) VALUES (?, ?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE `complete_up_to` = GREATEST(`complete_up_to`, VALUES(`complete_up_to`)), \
         `writers` = VALUES(`writers`), `run` = VALUES(`run`)",
        quote(table)
    )
}

/// The insert of `rows` recent-activity entries. An entry already stored
/// (the same user and order) is left as it is: an entry is a function of
/// its source message, so a repeat is the same entry. This is the union
/// half of the merge; [`recent_trim_sql`] is the cut.
pub(crate) fn recent_insert_sql(table: &str, rows: usize) -> String {
    format!(
        "INSERT IGNORE INTO {}",
        into_values(table, &recent_columns(), rows)
    )
}

/// The delete of every entry of `users` users (the parameters are their
/// `app_id`, `user_id` pairs) that has at least `keep` newer entries of the
/// same user: the cut half of the merge.
///
/// An entry with `keep` newer ones is outside the newest `keep` of every
/// later state too (entries are only added, and only such entries are
/// removed), so concurrent writers, retries and replays never remove an
/// entry a reader should see. Each write cuts its users after inserting,
/// in the same transaction, so an old entry a replay brings back is
/// removed at once; readers cut to `keep` as well.
pub(crate) fn recent_trim_sql(table: &str, users: usize, keep: usize) -> String {
    let t = quote(table);
    // A row `IN` list, not an `OR` of pairs: the server then tests each
    // scanned entry against a sorted list instead of every pair in turn.
    let points = vec!["(?,?)"; users].join(",");
    format!(
        "DELETE {t} FROM {t} JOIN (SELECT `app_id`, `user_id`, `ts`, `partition`, `offset` FROM \
         (SELECT `app_id`, `user_id`, `ts`, `partition`, `offset`, ROW_NUMBER() OVER \
         (PARTITION BY `app_id`, `user_id` ORDER BY `ts` DESC, `partition` DESC, `offset` DESC) AS `n` \
         FROM {t} FORCE INDEX (PRIMARY) WHERE (`app_id`, `user_id`) IN ({points})) AS `ranked` WHERE `n` > {keep}) AS `old` \
         USING (`app_id`, `user_id`, `ts`, `partition`, `offset`)"
    )
}

fn insert_sql(table: &str, columns: &[String], rows: usize, updates: &[String]) -> String {
    format!(
        "INSERT INTO {} ON DUPLICATE KEY UPDATE {}",
        into_values(table, columns, rows),
        updates.join(", ")
    )
}

/// `` `table` (`c1`,`c2`) VALUES (?,?),(?,?)… `` for `rows` rows.
fn into_values(table: &str, columns: &[String], rows: usize) -> String {
    let names: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    let one = format!("({})", vec!["?"; columns.len()].join(","));
    format!(
        "{} ({}) VALUES {}",
        quote(table),
        names.join(","),
        vec![one.as_str(); rows].join(",")
    )
}

/// The column name part for a field or measure name: every run of
/// characters other than ASCII letters and digits becomes one `_`, with
/// none at either end (`distinct(props.x)` → `distinct_props_x`).
pub(crate) fn sanitise(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// Quotes an identifier with backticks (doubling any backtick inside).
pub(crate) fn quote(identifier: &str) -> String {
    format!("`{}`", identifier.replace('`', "``"))
}

fn table_name(prefix: &str, name: &str) -> Result<String, SinkError> {
    let table = format!("{prefix}{name}");
    if table.len() > MAX_IDENTIFIER {
        return Err(config(format!(
            "table name `{table}` is longer than {MAX_IDENTIFIER} characters"
        )));
    }
    Ok(table)
}

fn config(detail: String) -> SinkError {
    SinkError::Config {
        sink: super::SINK.into(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use footprint_dataflows::{Field, RecentSpec, WindowSpec};

    use super::*;

    fn agg(name: &str, group_by: &[&str], measures: &[&str]) -> AggregateSpec {
        AggregateSpec {
            name: name.into(),
            group_by: group_by
                .iter()
                .map(|f| Field::parse(f).expect("field"))
                .collect(),
            window: WindowSpec::tumbling(60_000).expect("window"),
            measures: measures
                .iter()
                .map(|m| Measure::parse(m).expect("measure"))
                .collect(),
            allowed_lateness: 0,
            early_updates: None,
            sinks: vec![],
        }
    }

    fn spec(aggregates: Vec<AggregateSpec>, recent: bool) -> Arc<PipelineSpec> {
        Arc::new(PipelineSpec {
            aggregates,
            recent: recent.then(|| RecentSpec {
                keep: 5,
                ttl: 1,
                updates: 1,
                sinks: vec![],
            }),
            max_out_of_order: 0,
        })
    }

    #[test]
    fn names_columns_after_fields_and_measures() {
        let s = spec(
            vec![agg(
                "item_1m",
                &["app_id", "props.country"],
                &[
                    "count",
                    "distinct(user_id)",
                    "distinct(props.x)",
                    "sum(value)",
                ],
            )],
            true,
        );
        let schema = Schema::new(&s, "fp_").expect("schema");
        let t = &schema.aggregates[0];
        assert_eq!(t.table, "fp_item_1m");
        assert_eq!(t.key_columns, ["k_app_id", "k_props_country"]);
        let cols: Vec<&str> = t.measures.iter().map(|m| m.column.as_str()).collect();
        assert_eq!(
            cols,
            [
                "m_count",
                "m_distinct_user_id",
                "m_distinct_props_x",
                "m_sum_value"
            ]
        );
        assert_eq!(t.measures[1].name, "distinct(user_id)");
        assert_eq!(schema.recent.as_deref(), Some("fp_recent_entries"));
        assert_eq!(schema.recent_legacy.as_deref(), Some("fp_recent_activity"));
    }

    #[test]
    fn rejects_names_that_cannot_be_tables_or_columns() {
        let bad = |aggregates, recent, prefix| {
            matches!(
                Schema::new(&spec(aggregates, recent), prefix),
                Err(SinkError::Config { .. })
            )
        };
        assert!(bad(vec![agg("a-b", &[], &["count"])], false, ""));
        assert!(bad(vec![agg("1a", &[], &["count"])], false, ""));
        assert!(bad(vec![agg("a`b", &[], &["count"])], false, ""));
        assert!(bad(vec![agg("a", &[], &["count"])], false, "p;"));
        assert!(bad(vec![agg("recent_activity", &[], &["count"])], true, ""));
        assert!(bad(vec![agg("recent_entries", &[], &["count"])], true, ""));
        assert!(!bad(
            vec![agg("recent_activity", &[], &["count"])],
            false,
            ""
        ));
        assert!(bad(
            vec![agg("a", &["props.a_b", "props.a.b"], &["count"])],
            false,
            ""
        ));
        assert!(bad(
            vec![agg("a", &[], &["count"]), agg("A", &[], &["count"])],
            false,
            ""
        ));
        let long = "x".repeat(70);
        assert!(bad(vec![agg(&long, &[], &["count"])], false, ""));
    }

    #[test]
    fn sanitises_runs_of_other_characters_to_one_underscore() {
        assert_eq!(sanitise("distinct(user_id)"), "distinct_user_id");
        assert_eq!(sanitise("props.country"), "props_country");
        assert_eq!(sanitise("distinct(props.é x)"), "distinct_props_x");
        assert_eq!(sanitise("sum(value)"), "sum_value");
    }

    #[test]
    fn the_upsert_assigns_version_last_and_guards_every_other_column() {
        let s = spec(vec![agg("a", &["app_id"], &["count", "sum(value)"])], false);
        let schema = Schema::new(&s, "").expect("schema");
        let sql = schema.aggregates[0].upsert_sql(2);
        let newer = "(VALUES(`version`), VALUES(`is_final`)) >= (`version`, `is_final`)";
        assert_eq!(
            sql,
            format!(
                "INSERT INTO `a` (`group_key`,`window_start`,`window_end`,`k_app_id`,`m_count`,`m_sum_value`,`version`,`is_final`) \
                 VALUES (?,?,?,?,?,?,?,?),(?,?,?,?,?,?,?,?) ON DUPLICATE KEY UPDATE \
                 `window_end` = IF({newer}, VALUES(`window_end`), `window_end`), \
                 `m_count` = IF({newer}, VALUES(`m_count`), `m_count`), \
                 `m_sum_value` = IF({newer}, VALUES(`m_sum_value`), `m_sum_value`), \
                 `is_final` = IF({newer}, VALUES(`is_final`), `is_final`), \
                 `version` = GREATEST(`version`, VALUES(`version`))"
            )
        );
        assert_eq!(
            recent_insert_sql("r", 2),
            "INSERT IGNORE INTO `r` (`app_id`,`user_id`,`ts`,`partition`,`offset`,`event`,`item_id`) \
             VALUES (?,?,?,?,?,?,?),(?,?,?,?,?,?,?)"
        );
    }
}
