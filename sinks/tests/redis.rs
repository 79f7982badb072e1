//! The Redis sink against a real Redis (`FOOTPRINT_REDIS_URL`, default
//! `redis://127.0.0.1:6379`). Every test writes under its own key prefix and
//! deletes it afterwards.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use footprint_dataflows::key::GroupKey;
use footprint_dataflows::{
    AggregateSpec, Field, Measure, MeasureValue, Output, PipelineSpec, RecentEntry, RecentRow,
    WindowRow, WindowSpec,
};
use footprint_sinks::marks::{HeldRow, MarkWriter};
use footprint_sinks::redis::{
    RedisSinkFactory, TopIndex, layout_key, recent_list, recent_set, top_key, window_hash,
    window_hash_fields, window_key,
};
use footprint_sinks::{Sink, SinkFactory};

fn url() -> String {
    std::env::var("FOOTPRINT_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

struct Prefix(String);

impl Prefix {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Prefix(format!("fptest:{}:{nanos}", std::process::id()))
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        if let Ok(mut c) = redis::Client::open(url()).and_then(|c| c.get_connection()) {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", self.0))
                .query(&mut c)
                .unwrap_or_default();
            for k in keys {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(k).query(&mut c);
            }
        }
    }
}

fn conn() -> redis::Connection {
    redis::Client::open(url())
        .and_then(|c| c.get_connection())
        .expect("connect")
}

/// A key's time to live, ms.
fn pttl(c: &mut redis::Connection, key: impl redis::ToRedisArgs) -> i64 {
    redis::cmd("PTTL").arg(key).query(c).expect("pttl")
}

fn spec() -> PipelineSpec {
    PipelineSpec {
        aggregates: vec![AggregateSpec {
            name: "item_1m".into(),
            group_by: vec![Field::AppId, Field::Prop("country".into())],
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
    }
}

fn row(version: u64, is_final: bool, sum: i128) -> WindowRow {
    WindowRow {
        agg: 0,
        aggregate: "item_1m".into(),
        key: vec![
            ("app_id".into(), "shop:1".into()),
            ("props.country".into(), "fr".into()),
        ],
        window_start: 1_767_225_600_000,
        window_end: 1_767_225_660_000,
        measures: vec![
            ("count".into(), MeasureValue::Count(version)),
            (
                "distinct(user_id)".into(),
                MeasureValue::Distinct(version.min(3)),
            ),
            ("sum(value)".into(), MeasureValue::Sum(sum)),
        ],
        version,
        is_final,
        freshest_append_ms: None,
    }
}

fn sink(prefix: &Prefix) -> (RedisSinkFactory, Box<dyn Sink>) {
    let f = RedisSinkFactory::new(
        &url(),
        &prefix.0,
        Duration::from_secs(3600),
        Duration::from_secs(3600),
        3,
    )
    .expect("factory");
    let s = f.build(0, 1).expect("sink");
    (f, s)
}

#[test]
fn writes_window_rows_and_reads_them_back() {
    let p = Prefix::new();
    let (f, mut s) = sink(&p);
    let a = row(3, false, 300_000);
    let mut b = row(7, true, -1_500_000);
    b.window_start += 60_000;
    b.window_end += 60_000;
    s.write(&[Output::Window(a.clone()), Output::Window(b.clone())])
        .expect("write");
    let mut got = f.load_windows(&spec()).expect("load");
    got.sort_by_key(|w| w.window_start);
    assert_eq!(got, vec![a, b]);
}

#[test]
fn keeps_the_higher_version() {
    let p = Prefix::new();
    let (f, mut s) = sink(&p);
    s.write(&[Output::Window(row(2, false, 200))])
        .expect("write v2");
    s.write(&[Output::Window(row(1, false, 100))])
        .expect("write v1");
    assert_eq!(
        f.load_windows(&spec()).expect("load"),
        vec![row(2, false, 200)]
    );
    // At equal versions, final wins over early.
    s.write(&[Output::Window(row(5, true, 500))])
        .expect("final");
    s.write(&[Output::Window(row(5, false, 500))])
        .expect("early, same version");
    assert_eq!(
        f.load_windows(&spec()).expect("load"),
        vec![row(5, true, 500)]
    );
}

#[test]
fn keeps_top_indexes_under_the_version_rule() {
    let p = Prefix::new();
    let f = RedisSinkFactory::new(
        &url(),
        &p.0,
        Duration::from_secs(3600),
        Duration::from_secs(3600),
        3,
    )
    .expect("factory")
    .with_top(vec![
        TopIndex {
            aggregate: "item_1m".into(),
            within: 1,
            by: "count".into(),
        },
        TopIndex {
            aggregate: "item_1m".into(),
            within: 0,
            by: "sum(value)".into(),
        },
    ]);
    let mut s = f.build(0, 1).expect("sink");
    let mut other = row(4, true, 250_000);
    other.key[1].1 = "de".into();
    // A newer row, then an older one in a later write, then the other group.
    s.write(&[Output::Window(row(6, false, 600_000))])
        .expect("v6");
    s.write(&[Output::Window(row(5, true, 500_000))])
        .expect("v5");
    s.write(&[Output::Window(other.clone())]).expect("de");
    let mut c = conn();
    let start = row(1, false, 0).window_start;
    let member = |r: &WindowRow| GroupKey::from_parts(r.key.iter().map(|(_, v)| v.as_str()));
    let by_count = top_key(
        &p.0,
        "item_1m",
        start,
        "count",
        &GroupKey::from_parts(["shop:1"]),
    );
    let got: Vec<(String, f64)> = redis::cmd("ZREVRANGE")
        .arg(&by_count)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut c)
        .expect("zrevrange");
    assert_eq!(
        got,
        vec![
            (member(&row(6, false, 0)).as_str().to_owned(), 6.0),
            (member(&other).as_str().to_owned(), 4.0),
        ]
    );
    let by_sum = top_key(
        &p.0,
        "item_1m",
        start,
        "sum(value)",
        &GroupKey::from_parts(std::iter::empty::<&str>()),
    );
    let got: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(&by_sum)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut c)
        .expect("zrange");
    assert_eq!(
        got,
        vec![
            (member(&other).as_str().to_owned(), 250_000.0),
            (member(&row(6, false, 0)).as_str().to_owned(), 600_000.0),
        ]
    );
    // Expires with the rows.
    let ttl: i64 = pttl(&mut c, &by_count);
    assert!(ttl > 0 && ttl <= 3_600_000, "{ttl}");
}

#[test]
fn keeps_the_higher_version_within_one_pipeline() {
    let p = Prefix::new();
    let (f, mut s) = sink(&p);
    s.write(&[
        Output::Window(row(2, false, 200)),
        Output::Window(row(1, false, 100)),
    ])
    .expect("write");
    assert_eq!(
        f.load_windows(&spec()).expect("load"),
        vec![row(2, false, 200)]
    );
    s.write(&[
        Output::Window(row(3, false, 300)),
        Output::Window(row(4, false, 400)),
    ])
    .expect("write");
    assert_eq!(
        f.load_windows(&spec()).expect("load"),
        vec![row(4, false, 400)]
    );
}

/// A batch larger than one script call: every row is its own
/// compare-and-set, across the calls and within each.
#[test]
fn many_windows_in_one_write_each_keep_their_highest_version() {
    use footprint_sinks::redis::WINDOWS_PER_CALL;
    let p = Prefix::new();
    let (f, mut s) = sink(&p);
    let windows = 2 * WINDOWS_PER_CALL + 5;
    let at = |i: usize, version: u64| {
        let mut w = row(version, false, version as i128 * 100);
        w.window_start += i as i64 * 60_000;
        w.window_end += i as i64 * 60_000;
        w
    };
    // Every window at version 2 and then 1 in the same write; the first
    // ones are already stored at 9, which neither may overwrite.
    s.write(&[Output::Window(at(0, 9)), Output::Window(at(1, 9))])
        .expect("write v9");
    let mut batch = Vec::new();
    for i in 0..windows {
        batch.push(Output::Window(at(i, 2)));
        batch.push(Output::Window(at(i, 1)));
    }
    s.write(&batch).expect("write");
    let mut got = f.load_windows(&spec()).expect("load");
    got.sort_by_key(|w| w.window_start);
    let want: Vec<WindowRow> = (0..windows)
        .map(|i| at(i, if i < 2 { 9 } else { 2 }))
        .collect();
    assert_eq!(got, want);
}

/// Recent activity is merged (union, newest first, cut to `keep` = 3), so
/// every order and repetition of the same rows ends in the same list.
#[test]
fn recent_activity_merges_to_the_same_list_in_any_order() {
    let p = Prefix::new();
    let (f, mut s) = sink(&p);
    let entry = |ts, partition, offset, item: Option<&str>| RecentEntry {
        ts,
        partition,
        offset,
        event: "view".into(),
        item_id: item.map(Into::into),
    };
    let row = |user: &str, events: Vec<RecentEntry>| RecentRow {
        app_id: "shop".into(),
        user_id: user.into(),
        events,
    };
    let rows = |user: &str| {
        (
            row(
                user,
                vec![entry(5, 0, 50, Some("i5")), entry(3, 0, 30, None)],
            ),
            row(
                user,
                vec![entry(4, 1, 40, Some("i4")), entry(1, 1, 10, None)],
            ),
            // The same time as the newest, from another partition; and a repeat.
            row(user, vec![entry(5, 1, 55, None), entry(3, 0, 30, None)]),
        )
    };
    let (a, b, c) = rows("u:1");
    for r in [a, b, c] {
        s.write(&[Output::Recent(r)]).expect("write");
    }
    let (a, b, c) = rows("u:2");
    s.write(&[c, b, a].map(Output::Recent)).expect("write");
    let (a, b, c) = rows("u:3");
    s.write(&[b.clone(), a.clone(), c, a, b].map(Output::Recent))
        .expect("write");
    let mut got = f.load_recent().expect("load");
    got.sort_by(|x, y| x.user_id.cmp(&y.user_id));
    let expected: Vec<RecentRow> = ["u:1", "u:2", "u:3"]
        .iter()
        .map(|u| {
            row(
                u,
                vec![
                    entry(5, 1, 55, None),
                    entry(5, 0, 50, Some("i5")),
                    entry(4, 1, 40, Some("i4")),
                ],
            )
        })
        .collect();
    assert_eq!(got, expected);
}

/// Rows newer than the stored set (the streaming case) end newest first,
/// cut to `keep` = 3, with entries given in any order within a row, and a
/// repeated row changes nothing; the set never holds more than `keep`.
#[test]
fn newer_rows_are_pushed_and_cut_to_keep() {
    let p = Prefix::new();
    let (f, mut s) = sink(&p);
    let entry = |ts, offset| RecentEntry {
        ts,
        partition: 0,
        offset,
        event: "view".into(),
        item_id: None,
    };
    let row = |events: Vec<RecentEntry>| {
        Output::Recent(RecentRow {
            app_id: "shop".into(),
            user_id: "u:9".into(),
            events,
        })
    };
    s.write(&[row(vec![entry(1, 10)])]).expect("write");
    s.write(&[row(vec![entry(2, 20), entry(4, 40), entry(3, 30)])])
        .expect("write");
    s.write(&[row(vec![entry(5, 50)])]).expect("write");
    s.write(&[row(vec![entry(5, 50)])]).expect("repeat");
    let got = f.load_recent().expect("load");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].events,
        vec![entry(5, 50), entry(4, 40), entry(3, 30)]
    );
    let mut c = conn();
    let held: usize = redis::cmd("ZCARD")
        .arg(recent_set(&p.0, "shop", "u:9"))
        .query(&mut c)
        .expect("zcard");
    assert_eq!(held, 3);
}

/// A list written by an earlier version (`PREFIX:r:{…}`, JSON entries) is
/// merged with the user's set on read, and a user found only there is
/// read too.
#[test]
fn lists_of_the_earlier_layout_are_merged_on_read() {
    let p = Prefix::new();
    let (f, mut s) = sink(&p);
    let entry = |ts, offset, item: Option<&str>| RecentEntry {
        ts,
        partition: 1,
        offset,
        event: "cart".into(),
        item_id: item.map(Into::into),
    };
    let mut c = conn();
    let old = |user: &str, entries: &[RecentEntry]| -> redis::Cmd {
        let mut cmd = redis::cmd("RPUSH");
        cmd.arg(recent_list(&p.0, "shop", user));
        for e in entries {
            cmd.arg(serde_json::to_string(e).expect("json"));
        }
        cmd
    };
    let _: () = old("u:1", &[entry(4, 40, Some("a:\"b\"")), entry(1, 10, None)])
        .query(&mut c)
        .expect("old list");
    let _: () = old("u:2", &[entry(2, 20, None)])
        .query(&mut c)
        .expect("old list");
    s.write(&[Output::Recent(RecentRow {
        app_id: "shop".into(),
        user_id: "u:1".into(),
        events: vec![entry(5, 50, None), entry(3, 30, Some("x"))],
    })])
    .expect("write");
    let got = f.load_recent().expect("load");
    let events: Vec<(&str, &Vec<RecentEntry>)> = got
        .iter()
        .map(|r| (r.user_id.as_str(), &r.events))
        .collect();
    assert_eq!(
        events,
        [
            (
                "u:1",
                &vec![
                    entry(5, 50, None),
                    entry(4, 40, Some("a:\"b\"")),
                    entry(3, 30, Some("x"))
                ]
            ),
            ("u:2", &vec![entry(2, 20, None)])
        ]
    );
}

/// Writes `r` as a hash of the earlier layout, as earlier versions did.
fn legacy_hash(c: &mut redis::Connection, prefix: &str, r: &WindowRow) {
    let key = GroupKey::from_parts(r.key.iter().map(|(_, v)| v.as_str()));
    let _: () = redis::cmd("HSET")
        .arg(window_hash(prefix, &r.aggregate, r.window_start, &key))
        .arg(window_hash_fields(r))
        .query(c)
        .expect("legacy hash");
}

#[test]
fn a_row_is_one_string_and_a_fresh_prefix_is_marked() {
    let p = Prefix::new();
    let (_f, mut s) = sink(&p);
    let r = row(4, true, 400_000);
    s.write(&[Output::Window(r.clone())]).expect("write");
    let mut c = conn();
    let kind: String = redis::cmd("TYPE")
        .arg(window_key(&p.0, &r))
        .query(&mut c)
        .expect("type");
    assert_eq!(kind, "string");
    let value: String = redis::cmd("GET")
        .arg(window_key(&p.0, &r))
        .query(&mut c)
        .expect("get");
    assert!(value.starts_with("000000000000000000041["), "{value}");
    let layout: Option<String> = redis::cmd("GET")
        .arg(layout_key(&p.0))
        .query(&mut c)
        .expect("layout");
    assert_eq!(layout.as_deref(), Some("2"));
    let ttl: i64 = pttl(&mut c, window_key(&p.0, &r));
    assert!(ttl > 0 && ttl <= 3_600_000, "{ttl}");
}

#[test]
fn an_older_row_leaves_the_stored_one_and_renews_its_expiry() {
    let p = Prefix::new();
    let (f, mut s) = sink(&p);
    let mut c = conn();
    s.write(&[Output::Window(row(9, false, 900))]).expect("v9");
    let key = window_key(&p.0, &row(9, false, 900));
    let before: String = redis::cmd("GET").arg(&key).query(&mut c).expect("get");
    let _: () = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(600_000)
        .query(&mut c)
        .expect("pexpire");
    s.write(&[Output::Window(row(8, true, 800))]).expect("v8");
    let after: String = redis::cmd("GET").arg(&key).query(&mut c).expect("get");
    assert_eq!(after, before);
    let ttl: i64 = pttl(&mut c, &key);
    assert!(ttl > 600_000 && ttl <= 3_600_000, "{ttl}");
    assert_eq!(
        f.load_windows(&spec()).expect("load"),
        vec![row(9, false, 900)]
    );
}

#[test]
fn hashes_of_the_earlier_layout_are_read_and_compared_with() {
    let p = Prefix::new();
    let mut c = conn();
    // Left by an earlier version: one group at v5 final, another at v2.
    let kept = row(5, true, 500_000);
    let mut replaced = row(2, false, 200_000);
    replaced.key[1].1 = "de".into();
    legacy_hash(&mut c, &p.0, &kept);
    legacy_hash(&mut c, &p.0, &replaced);
    let (f, mut s) = sink(&p);
    assert_eq!(
        f.load_windows(&spec()).expect("load"),
        vec![replaced.clone(), kept.clone()]
    );
    // An older row of the first group loses to its hash; a newer one of the
    // second wins over its hash.
    let mut newer = row(3, false, 300_000);
    newer.key[1].1 = "de".into();
    s.write(&[
        Output::Window(row(5, false, 1)),
        Output::Window(newer.clone()),
    ])
    .expect("write");
    let older_key = window_key(&p.0, &kept);
    let exists: bool = redis::cmd("EXISTS")
        .arg(&older_key)
        .query(&mut c)
        .expect("exists");
    assert!(!exists, "the older row was left as a string");
    assert_eq!(
        f.load_windows(&spec()).expect("load"),
        vec![newer.clone(), kept.clone()]
    );
    let layout: Option<String> = redis::cmd("GET")
        .arg(layout_key(&p.0))
        .query(&mut c)
        .expect("layout");
    assert_eq!(layout, None, "hashes are left, so the prefix is not marked");
    // The replay's check sees rows in either layout.
    let mut marks = f.marks();
    let mut absent = row(1, true, 0);
    absent.key[1].1 = "it".into();
    let mut newer_final = newer.clone();
    newer_final.is_final = true;
    assert_eq!(
        marks
            .applied(&[
                HeldRow::of(&kept),
                HeldRow::of(&newer),
                HeldRow::of(&absent)
            ])
            .expect("applied"),
        [true, false, false]
    );
    s.write(&[Output::Window(newer_final.clone())])
        .expect("final");
    assert_eq!(
        marks
            .applied(&[HeldRow::of(&newer_final)])
            .expect("applied"),
        [true]
    );
}

#[test]
fn reloads_its_scripts_after_the_server_forgets_them() {
    let p = Prefix::new();
    let (f, mut s) = sink(&p);
    s.write(&[Output::Window(row(1, false, 1))])
        .expect("first write loads the connection");
    let mut c = conn();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut c)
        .expect("script flush");
    s.write(&[Output::Window(row(2, false, 2))])
        .expect("write after SCRIPT FLUSH");
    assert_eq!(
        f.load_windows(&spec()).expect("load"),
        vec![row(2, false, 2)]
    );
}

#[test]
fn reports_an_unreachable_server_as_retryable() {
    let f = RedisSinkFactory::new(
        "redis://127.0.0.1:1",
        "x",
        Duration::ZERO,
        Duration::ZERO,
        3,
    )
    .expect("factory");
    let mut s = f.build(0, 1).expect("sink");
    let err = s
        .write(&[Output::Window(row(1, false, 0))])
        .expect_err("nothing listens on port 1");
    assert!(err.is_retryable(), "{err}");
}
