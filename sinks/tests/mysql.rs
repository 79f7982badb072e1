//! The MySQL sink against a real server (MariaDB 10.11 or MySQL 8).
//!
//! The server comes from `FOOTPRINT_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306`, no database). Every test creates its own
//! database, `fp_test_<pid>_<nanos>_<n>`, through the sink, and drops it at
//! the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use footprint_dataflows::{
    AggregateSpec, Field, Measure, MeasureValue, Output, PipelineSpec, RecentEntry, RecentRow,
    RecentSpec, WindowRow, WindowSpec,
};
use footprint_sinks::mysql::MySqlSinkFactory;
use footprint_sinks::mysql::read::MySqlReader;
use footprint_sinks::{Sink, SinkError, SinkFactory};
use mysql::prelude::Queryable;

const PREFIX: &str = "fp_";

/// A database of its own for one test, dropped when the test ends.
struct TestDb {
    server: String,
    name: String,
}

impl TestDb {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let server = std::env::var("FOOTPRINT_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "fp_test_{}_{nanos}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        TestDb { server, name }
    }

    /// The server URL with this test's database.
    fn url(&self) -> String {
        let (base, query) = match self.server.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (self.server.as_str(), String::new()),
        };
        format!("{}/{}{query}", base.trim_end_matches('/'), self.name)
    }

    fn factory(&self, spec: &Arc<PipelineSpec>) -> MySqlSinkFactory {
        MySqlSinkFactory::new(&self.url(), Arc::clone(spec), PREFIX).expect("mysql sink factory")
    }

    /// A direct connection to this test's database.
    fn conn(&self) -> mysql::Conn {
        mysql::Conn::new(mysql::Opts::from_url(&self.url()).expect("url")).expect("connect")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let dropped = mysql::Opts::from_url(&self.server)
            .map_err(mysql::Error::from)
            .and_then(mysql::Conn::new)
            .and_then(|mut c| c.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name)));
        if dropped.is_err() {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

fn spec() -> Arc<PipelineSpec> {
    Arc::new(PipelineSpec {
        aggregates: vec![
            AggregateSpec {
                name: "country_1m".into(),
                group_by: vec![Field::AppId, Field::Prop("country".into())],
                window: WindowSpec::tumbling(60_000).expect("window"),
                measures: vec![Measure::Count, Measure::Distinct(Field::UserId)],
                allowed_lateness: 0,
                early_updates: Some(1_000),
                sinks: vec!["mysql".into()],
            },
            AggregateSpec {
                name: "value_10m".into(),
                group_by: vec![Field::AppId, Field::Event],
                window: WindowSpec::sliding(600_000, 60_000).expect("window"),
                measures: vec![Measure::Count, Measure::SumValue],
                allowed_lateness: 0,
                early_updates: None,
                sinks: vec!["mysql".into()],
            },
        ],
        recent: Some(RecentSpec {
            keep: 3,
            ttl: 86_400_000,
            updates: 1_000,
            sinks: vec!["mysql".into()],
        }),
        max_out_of_order: 0,
    })
}

const T0: i64 = 1_767_225_600_000;

/// A `country_1m` row: `count` = version, `distinct(user_id)` = `users`.
fn country(app: &str, country: &str, start: i64, version: u64, users: u64, fin: bool) -> WindowRow {
    WindowRow {
        agg: 0,
        aggregate: "country_1m".into(),
        key: vec![
            ("app_id".into(), app.into()),
            ("props.country".into(), country.into()),
        ],
        window_start: start,
        window_end: start + 60_000,
        measures: vec![
            ("count".into(), MeasureValue::Count(version)),
            ("distinct(user_id)".into(), MeasureValue::Distinct(users)),
        ],
        version,
        is_final: fin,
        freshest_append_ms: None,
    }
}

/// A `value_10m` row: `count` = version, `sum(value)` = `micros`.
fn value(app: &str, event: &str, start: i64, version: u64, micros: i128, fin: bool) -> WindowRow {
    WindowRow {
        agg: 1,
        aggregate: "value_10m".into(),
        key: vec![
            ("app_id".into(), app.into()),
            ("event".into(), event.into()),
        ],
        window_start: start,
        window_end: start + 600_000,
        measures: vec![
            ("count".into(), MeasureValue::Count(version)),
            ("sum(value)".into(), MeasureValue::Sum(micros)),
        ],
        version,
        is_final: fin,
        freshest_append_ms: None,
    }
}

type Entry<'a> = (i64, u32, i64, &'a str, Option<&'a str>);

fn recent(user: &str, events: &[Entry<'_>]) -> RecentRow {
    RecentRow {
        app_id: "app1".into(),
        user_id: user.into(),
        events: events
            .iter()
            .map(|(ts, partition, offset, event, item)| RecentEntry {
                ts: *ts,
                partition: *partition,
                offset: *offset,
                event: (*event).into(),
                item_id: item.map(Into::into),
            })
            .collect(),
    }
}

fn windows(rows: &[&WindowRow]) -> Vec<Output> {
    rows.iter().map(|r| Output::Window((*r).clone())).collect()
}

fn write(sink: &mut Box<dyn Sink>, rows: &[&WindowRow]) {
    sink.write(&windows(rows)).expect("write");
}

/// `rows` sorted as `load_windows` returns them.
fn sorted(rows: &[&WindowRow]) -> Vec<WindowRow> {
    let mut v: Vec<WindowRow> = rows.iter().map(|r| (*r).clone()).collect();
    v.sort_by(|a, b| {
        (&a.aggregate, &a.key, a.window_start).cmp(&(&b.aggregate, &b.key, b.window_start))
    });
    v
}

#[test]
fn creates_tables_on_start_up_and_writes_rows() {
    let db = TestDb::new();
    let spec = spec();
    let factory = db.factory(&spec);
    let tables: Vec<String> = db
        .conn()
        .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME")
        .expect("tables");
    assert_eq!(
        tables,
        [
            "fp_country_1m",
            "fp_marks",
            "fp_recent_entries",
            "fp_value_10m"
        ]
    );

    let mut sink = factory.build(0, 1).expect("sink");
    let de_early = country("app1", "DE", T0, 2, 1, false);
    let de = country("app1", "DE", T0, 3, 2, true);
    let fr = country("app1", "FR : é 🎉", T0, 1, 1, true);
    let unknown = country("app2", "", T0 + 60_000, 4, 3, true);
    let view_early = value("app1", "view", T0, 1, 1_500_000, false);
    let view = value("app1", "view", T0, 2, 2_750_000, true);
    let order = value("app1", "order", T0 - 60_000, 1, -250_000, true);
    write(&mut sink, &[&de_early, &view_early]);
    write(&mut sink, &[&de, &fr, &unknown, &view, &order]);

    let expected = sorted(&[&de, &fr, &unknown, &view, &order]);
    assert_eq!(factory.load_windows().expect("load"), expected);

    // The key is readable, column by column.
    let countries: Vec<(String, String)> = db
        .conn()
        .query("SELECT k_app_id, k_props_country FROM fp_country_1m ORDER BY k_app_id, k_props_country")
        .expect("select");
    assert_eq!(
        countries,
        [
            ("app1".to_owned(), "DE".to_owned()),
            ("app1".to_owned(), "FR : é 🎉".to_owned()),
            ("app2".to_owned(), String::new()),
        ]
    );

    // Starting again over existing tables keeps them and their rows.
    let again = db.factory(&spec);
    assert_eq!(again.load_windows().expect("load"), expected);
}

#[test]
fn keeps_the_higher_version() {
    let db = TestDb::new();
    let factory = db.factory(&spec());
    let mut sink = factory.build(0, 1).expect("sink");

    let v2 = country("app1", "DE", T0, 2, 2, false);
    let v1 = country("app1", "DE", T0, 1, 1, false);
    write(&mut sink, &[&v2]);
    write(&mut sink, &[&v1]);
    assert_eq!(factory.load_windows().expect("load"), [v2]);

    // Same version: final beats not final, whichever arrives second.
    let fin = value("app1", "view", T0, 5, 5_000_000, true);
    let early = value("app1", "view", T0, 5, 4_000_000, false);
    write(&mut sink, &[&fin]);
    write(&mut sink, &[&early]);
    let other = value("app1", "click", T0, 5, 4_000_000, false);
    let other_fin = value("app1", "click", T0, 5, 5_000_000, true);
    write(&mut sink, &[&other]);
    write(&mut sink, &[&other_fin]);
    // An equal pair overwrites.
    let v2_again = country("app1", "DE", T0, 2, 7, false);
    write(&mut sink, &[&v2_again]);
    // A higher version wins over a final flag: (5, early) > (4, final).
    let old_fin = country("app1", "FR", T0, 4, 4, true);
    let newer = country("app1", "FR", T0, 5, 5, false);
    write(&mut sink, &[&old_fin]);
    write(&mut sink, &[&newer]);

    assert_eq!(
        factory.load_windows().expect("load"),
        sorted(&[&v2_again, &newer, &fin, &other_fin])
    );
}

#[test]
fn keeps_the_higher_version_within_one_batch() {
    let db = TestDb::new();
    let factory = db.factory(&spec());
    let mut sink = factory.build(0, 1).expect("sink");

    let a2 = country("app1", "DE", T0, 2, 2, false);
    let a1 = country("app1", "DE", T0, 1, 1, false);
    let b1 = country("app1", "FR", T0, 1, 1, false);
    let b2 = country("app1", "FR", T0, 2, 2, false);
    let c_fin = value("app1", "view", T0, 3, 3_000_000, true);
    let c_early = value("app1", "view", T0, 3, 1_000_000, false);
    let d_fin = value("app1", "click", T0, 4, 4_000_000, true);
    let d_newer = value("app1", "click", T0, 5, 3_000_000, false);
    write(
        &mut sink,
        &[&a2, &a1, &b1, &b2, &c_fin, &c_early, &d_fin, &d_newer],
    );
    assert_eq!(
        factory.load_windows().expect("load"),
        sorted(&[&a2, &b2, &c_fin, &d_newer])
    );

    // Across the statements of one batch too: 600 rows are two upserts, the
    // newer version in the first and the older one in the second.
    let d9 = country("app9", "NL", T0, 9, 9, true);
    let d8 = country("app9", "NL", T0, 8, 8, false);
    let filler: Vec<WindowRow> = (0..598)
        .map(|i| country("fill", &format!("c{i:03}"), T0, 1, 1, true))
        .collect();
    let mut batch = vec![&d9];
    batch.extend(filler.iter());
    batch.push(&d8);
    write(&mut sink, &batch);
    let stored = factory.load_windows().expect("load");
    assert_eq!(stored.len(), 4 + 1 + 598);
    assert!(stored.contains(&d9));
}

/// Recent activity is merged (union, newest first, cut to `keep` = 3), so
/// every order and repetition of the same rows ends in the same list.
#[test]
fn recent_activity_merges_to_the_same_list_in_any_order() {
    let db = TestDb::new();
    let factory = db.factory(&spec());
    let mut sink = factory.build(0, 1).expect("sink");
    let rows = |user: &str| {
        let a = recent(
            user,
            &[
                (T0 + 5, 0, 50, "order", Some("\"quoted\"")),
                (T0 + 3, 0, 30, "view", None),
            ],
        );
        let b = recent(
            user,
            &[
                (T0 + 4, 1, 40, "cart", Some("sku-1")),
                (T0 + 1, 1, 10, "view", None),
            ],
        );
        // The same time as a's newest, from another partition; and a's second again.
        let c = recent(
            user,
            &[
                (T0 + 5, 1, 55, "click", None),
                (T0 + 3, 0, 30, "view", None),
            ],
        );
        (a, b, c)
    };
    let (a, b, c) = rows("u1");
    for r in [a, b, c] {
        sink.write(&[Output::Recent(r)]).expect("write");
    }
    let (a, b, c) = rows("ü🎉");
    sink.write(&[c, b, a].map(Output::Recent)).expect("write");
    let (a, b, c) = rows("u3");
    for batch in [vec![b.clone(), a.clone()], vec![c, a], vec![b]] {
        sink.write(&batch.into_iter().map(Output::Recent).collect::<Vec<_>>())
            .expect("write");
    }
    let expected = |user: &str| {
        recent(
            user,
            &[
                (T0 + 5, 1, 55, "click", None),
                (T0 + 5, 0, 50, "order", Some("\"quoted\"")),
                (T0 + 4, 1, 40, "cart", Some("sku-1")),
            ],
        )
    };
    assert_eq!(
        factory.load_recent().expect("load"),
        [expected("u1"), expected("u3"), expected("ü🎉")]
    );
    // The table holds no more than `keep` entries per user: each write cuts
    // what it pushed out.
    let per_user: Vec<(Vec<u8>, u64)> = db
        .conn()
        .query("SELECT `user_id`, COUNT(*) FROM `fp_recent_entries` GROUP BY `user_id` ORDER BY `user_id`")
        .expect("count");
    assert_eq!(
        per_user,
        [
            (b"u1".to_vec(), 3),
            (b"u3".to_vec(), 3),
            ("ü🎉".as_bytes().to_vec(), 3)
        ]
    );
}

/// Lists stored by an earlier version, one JSON list per user in
/// `fp_recent_activity`, stay visible: readers merge them with the entries
/// written since, and a user found only there is read too.
#[test]
fn recent_activity_of_the_earlier_layout_is_merged_on_read() {
    let db = TestDb::new();
    let spec = spec();
    let factory = db.factory(&spec);
    let mut conn = db.conn();
    conn.query_drop(
        "CREATE TABLE `fp_recent_activity` (`app_id` VARBINARY(255) NOT NULL, \
         `user_id` VARBINARY(255) NOT NULL, `events` LONGTEXT NOT NULL, \
         PRIMARY KEY (`app_id`, `user_id`))",
    )
    .expect("create the earlier table");
    let old = |user: &str, entries: &[Entry<'_>]| {
        let list = serde_json::to_string(&recent(user, entries).events).expect("json");
        conn_insert(&db, user, &list);
    };
    old(
        "u1",
        &[
            (T0 + 4, 0, 40, "cart", Some("sku-1")),
            (T0 + 1, 0, 10, "view", None),
        ],
    );
    old("u2", &[(T0 + 2, 1, 20, "order", None)]);
    let mut sink = factory.build(0, 1).expect("sink");
    let new = recent(
        "u1",
        &[
            (T0 + 5, 1, 50, "click", None),
            (T0 + 3, 1, 30, "view", None),
        ],
    );
    sink.write(&[Output::Recent(new)]).expect("write");

    let u1 = recent(
        "u1",
        &[
            (T0 + 5, 1, 50, "click", None),
            (T0 + 4, 0, 40, "cart", Some("sku-1")),
            (T0 + 3, 1, 30, "view", None),
        ],
    );
    let u2 = recent("u2", &[(T0 + 2, 1, 20, "order", None)]);
    assert_eq!(
        factory.load_recent().expect("load"),
        [u1.clone(), u2.clone()]
    );

    let reader =
        MySqlReader::new(&db.url(), &spec, PREFIX, 2, Duration::from_secs(5)).expect("reader");
    let got = reader
        .recent("app1", &["u2", "nobody", "u1"])
        .expect("read");
    assert_eq!(got, [Some(u2.events), None, Some(u1.events)]);
}

fn conn_insert(db: &TestDb, user: &str, list: &str) {
    db.conn()
        .exec_drop(
            "INSERT INTO `fp_recent_activity` (`app_id`, `user_id`, `events`) VALUES ('app1', ?, ?)",
            (user, list),
        )
        .expect("insert into the earlier table");
}

#[test]
fn sums_are_exact() {
    let db = TestDb::new();
    let factory = db.factory(&spec());
    let mut sink = factory.build(0, 1).expect("sink");

    // 0.1 + 0.2, which is not 0.3 in floating point.
    let point3 = value("app1", "a", T0, 2, 100_000 + 200_000, true);
    let negative = value("app1", "b", T0, 1, -1_500_001, true);
    let tiny = value("app1", "c", T0, 1, -1, true);
    let huge_early = value("app1", "d", T0, 1, 1, false);
    // 20 integer digits: far beyond what an f64 holds exactly.
    let huge = value("app1", "d", T0, 2, 12_345_678_901_234_567_890_123_457, true);
    let floor = value(
        "app1",
        "e",
        T0,
        1,
        -99_999_999_999_999_999_999_999_999_999_999_999_999,
        true,
    );
    write(&mut sink, &[&point3, &negative, &tiny, &huge_early]);
    // `huge` goes through the update path.
    write(&mut sink, &[&huge, &floor]);

    assert_eq!(
        factory.load_windows().expect("load"),
        sorted(&[&point3, &negative, &tiny, &huge, &floor])
    );
    let text: Vec<String> = db
        .conn()
        .query("SELECT CAST(m_sum_value AS CHAR) FROM fp_value_10m ORDER BY k_event")
        .expect("select");
    assert_eq!(
        text,
        [
            "0.300000",
            "-1.500001",
            "-0.000001",
            "12345678901234567890.123457",
            "-99999999999999999999999999999999.999999",
        ]
    );
}

#[test]
fn starts_while_the_server_is_down_and_reports_writes_as_retryable() {
    let factory = MySqlSinkFactory::new("mysql://root@127.0.0.1:1/x", spec(), PREFIX)
        .expect("a pipeline can start while MySQL is down");
    let mut sink = factory.build(0, 1).expect("sink");
    let row = country("app1", "DE", T0, 1, 1, true);
    let err = sink
        .write(&windows(&[&row]))
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("127.0.0.1:1/x"), "{err}");
}

#[test]
fn leaves_out_a_row_whose_key_is_too_long_and_writes_the_rest() {
    let db = TestDb::new();
    let factory = db.factory(&spec());
    let mut sink = factory.build(0, 1).expect("sink");

    let long = country("app1", &"x".repeat(600), T0, 1, 1, true);
    let ok = country("app1", "DE", T0, 1, 1, true);
    let err = sink
        .write(&windows(&[&long, &ok]))
        .expect_err("the long key");
    assert!(matches!(err, SinkError::Rejected { .. }), "{err}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("left out 1 of 2 rows"), "{text}");
    assert!(
        text.contains("country_1m [app_id=\"app1\", props.country=\"xxx"),
        "{text}"
    );
    assert!(text.contains(&format!("window_start={T0}")), "{text}");
    assert_eq!(factory.load_windows().expect("load"), [ok]);
}

#[test]
fn rejects_a_batch_the_server_refuses_and_writes_none_of_it() {
    let db = TestDb::new();
    let factory = db.factory(&spec());
    let mut sink = factory.build(0, 1).expect("sink");

    // A count over BIGINT's range is refused by the server (strict mode).
    let fine = country("app1", "DE", T0, 1, 1, true);
    let mut too_big = country("app1", "FR", T0, 1, 1, true);
    too_big.measures[0].1 = MeasureValue::Count(u64::MAX);
    let err = sink
        .write(&windows(&[&fine, &too_big]))
        .expect_err("out of range");
    assert!(matches!(err, SinkError::Rejected { .. }), "{err}");
    assert_eq!(factory.load_windows().expect("load"), []);

    // The sink recovers: the next write goes through.
    write(&mut sink, &[&fine]);
    assert_eq!(factory.load_windows().expect("load"), [fine]);
}

#[test]
fn refuses_to_start_over_a_table_without_a_needed_column() {
    let db = TestDb::new();
    let spec = spec();
    drop(db.factory(&spec));
    let mut more = (*spec).clone();
    more.aggregates[0]
        .measures
        .push(Measure::Distinct(Field::ItemId));
    let err = MySqlSinkFactory::new(&db.url(), Arc::new(more), PREFIX).expect_err("missing column");
    assert!(matches!(err, SinkError::Config { .. }), "{err}");
    assert!(err.to_string().contains("m_distinct_item_id"), "{err}");
}

#[test]
fn workers_write_in_parallel_through_one_pool() {
    let db = TestDb::new();
    let factory = Arc::new(db.factory(&spec()));
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let factory = Arc::clone(&factory);
            std::thread::spawn(move || {
                let mut sink = factory.build(w, 4).expect("sink");
                let rows: Vec<Output> = (0..200)
                    .map(|i| {
                        Output::Window(country(&format!("w{w}"), &format!("c{i}"), T0, 1, 1, true))
                    })
                    .collect();
                for chunk in rows.chunks(50) {
                    sink.write(chunk).expect("write");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker");
    }
    assert_eq!(factory.load_windows().expect("load").len(), 800);
}

#[test]
fn concurrent_writers_of_interleaved_keys_do_not_deadlock() {
    // Workers own disjoint users and group keys, but their new rows fall into
    // the same gaps of the tables' keys: locking reads of missing rows (and a
    // locking read the server ran as a scan) used to lock those gaps, and
    // the inserts that followed deadlocked each other.
    let db = TestDb::new();
    let factory = Arc::new(db.factory(&spec()));
    const WORKERS: usize = 4;
    const USERS: usize = 2_000;
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let factory = Arc::clone(&factory);
            std::thread::spawn(move || -> Result<(), SinkError> {
                let mut sink = factory.build(w, WORKERS)?;
                let mine: Vec<usize> = (w..USERS).step_by(WORKERS).collect();
                for (round, batch) in mine.chunks(50).enumerate() {
                    let mut rows: Vec<Output> = batch
                        .iter()
                        .map(|u| {
                            let entry = (T0 + round as i64, 0, *u as i64, "view", None);
                            Output::Recent(recent(&format!("u{u:05}"), &[entry]))
                        })
                        .collect();
                    rows.extend(batch.iter().rev().map(|u| {
                        Output::Window(country("app1", &format!("c{u:05}"), T0, 1, 1, true))
                    }));
                    sink.write(&rows)?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        let written = h.join().expect("worker");
        assert!(written.is_ok(), "a write failed: {written:?}");
    }
    let stored = factory.load_recent().expect("load");
    assert_eq!(stored.len(), USERS);
    assert!(stored.iter().all(|r| r.events.len() == 1));
    assert_eq!(factory.load_windows().expect("load").len(), USERS);
}
