//! Diverted writes reach the retry topic as self-contained records; when the
//! retry topic is unreachable they go to the journal, and are resent once it
//! is back.

use std::time::Duration;

use footprint_connectors::admin::Admin;
use footprint_connectors::client::KafkaSettings;
use footprint_connectors::retry::{RetryRecord, RetryTopic};
use footprint_dataflows::{MeasureValue, Output, WindowRow};
use footprint_sinks::util::guard::{Diversion, Divert};
use footprint_tests::{kafka, read_all, unique};

fn row(version: u64) -> Output {
    Output::Window(WindowRow {
        agg: 0,
        aggregate: "item_1m".into(),
        key: vec![("app_id".into(), "shop".into())],
        window_start: 1_767_225_600_000,
        window_end: 1_767_225_660_000,
        measures: vec![
            ("count".into(), MeasureValue::Count(version)),
            ("sum(value)".into(), MeasureValue::Sum(-1_234_567)),
        ],
        version,
        is_final: false,
        freshest_append_ms: None,
    })
}

fn why() -> Diversion<'static> {
    Diversion {
        sink: "mysql",
        reason: "switch degraded".into(),
        attempts: 0,
        first_failure_ms: 1_767_225_700_000,
    }
}

fn create(topic: &str, partitions: i32) {
    Admin::new(&kafka())
        .and_then(|a| a.ensure_topic(topic, partitions, 1))
        .expect("create topic");
}

#[test]
fn diverted_rows_reach_the_retry_topic_as_self_contained_records() {
    let topic = unique("retry");
    create(&topic, 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let retry = RetryTopic::new(
        &kafka(),
        &topic,
        &dir.path().join("journal"),
        Duration::from_secs(10),
    )
    .expect("producer");
    retry.divert(&[row(1), row(2)], &why()).expect("divert");
    assert_eq!(retry.journal_len(), 0);
    let mut got: Vec<RetryRecord> = read_all(&topic)
        .expect("read")
        .iter()
        .map(|m| RetryRecord::decode(&m.payload).expect("decode"))
        .collect();
    got.sort_by_key(|r| r.version);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].row, row(2));
    assert_eq!(got[1].sink, "mysql");
    assert_eq!(got[1].reason, "switch degraded");
    assert_eq!(got[1].first_failure_ms, 1_767_225_700_000);
    assert_eq!(got[0].identity, got[1].identity);
}

#[test]
fn rows_go_to_the_journal_when_the_retry_topic_is_unreachable_and_are_resent_later() {
    let topic = unique("retry-journal");
    create(&topic, 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("journal");
    {
        let down = KafkaSettings::new("127.0.0.1:1");
        let retry = RetryTopic::new(&down, &topic, &journal, Duration::from_millis(1500))
            .expect("producer");
        retry
            .divert(&[row(1), row(2), row(3)], &why())
            .expect("divert succeeds through the journal");
        assert_eq!(retry.journal_len(), 3);
    }
    // A new process (same journal file) with the broker reachable resends them.
    let retry =
        RetryTopic::new(&kafka(), &topic, &journal, Duration::from_secs(10)).expect("producer");
    assert_eq!(retry.journal_len(), 3, "the journal survives a restart");
    assert_eq!(retry.resend_journal().expect("resend"), 3);
    assert_eq!(retry.journal_len(), 0);
    let mut versions: Vec<u64> = read_all(&topic)
        .expect("read")
        .iter()
        .map(|m| RetryRecord::decode(&m.payload).expect("decode").version)
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, vec![1, 2, 3]);
}

/// Replay never commits past a record it has not dealt with: an undecodable
/// record behind a waiting one stays put until its turn, and records that
/// can never be applied (undecodable, or refused by the store for good) go
/// to the dead-letter topic instead of blocking the partition.
#[test]
fn replay_dead_letters_what_it_cannot_apply_without_skipping_anything() {
    use std::sync::Arc;

    use footprint::config::Config;
    use footprint::replay::{ReplayOptions, run_replay};
    use footprint_connectors::producer::EventProducer;
    use footprint_dataflows::control::RunControl;
    use footprint_sinks::mysql::MySqlSinkFactory;
    use footprint_sinks::util::switch::{Mode, Switches};

    let topic = unique("retry-dlq");
    create(&topic, 1);
    let database = unique("fp_replay").replace('-', "_");
    let dir = tempfile::tempdir().expect("tempdir");
    // The aggregate of the records below, into MySQL only; the retry topic
    // and the journal are this test's.
    let pipeline = "[[aggregate]]\nname = \"item_1m\"\ngroup_by = [\"app_id\"]\n\
        window = { tumbling = \"1m\" }\nmeasures = [\"count\", \"sum(value)\"]\n\
        sinks = [\"mysql\"]\n[recent]\nenabled = false\n";
    let layers = [
        ("FOOTPRINT_BROKERS", footprint_tests::brokers()),
        ("FOOTPRINT__RETRY__TOPIC", topic.clone()),
        (
            "FOOTPRINT__RETRY__JOURNAL",
            dir.path().join("journal").display().to_string(),
        ),
        (
            "FOOTPRINT__SINKS__MYSQL__URL",
            format!("{}/{database}", footprint_tests::mysql_url()),
        ),
    ];
    let cfg = Config::from_layers(
        Some(pipeline),
        layers.iter().map(|(k, v)| ((*k).to_owned(), v.clone())),
    )
    .expect("config");
    let mysql = MySqlSinkFactory::new(
        &format!("{}/{database}", footprint_tests::mysql_url()),
        Arc::new(cfg.spec().expect("spec")),
        "fp_",
    )
    .expect("mysql");

    let record = |app: &str, version: u64| {
        let Output::Window(mut w) = row(version) else {
            unreachable!()
        };
        w.key = vec![("app_id".into(), app.into())];
        RetryRecord::new(
            &Output::Window(w),
            &Diversion {
                sink: "mysql",
                reason: "test".into(),
                attempts: 1,
                first_failure_ms: 0,
            },
        )
        .encode()
    };
    let producer = EventProducer::new(&kafka()).expect("producer");
    let too_long = "x".repeat(600);
    for (key, value) in [
        record("a", 1),
        (b"junk".to_vec(), b"{not a record".to_vec()),
        record(&too_long, 1),
        record("b", 2),
    ] {
        producer.send(&topic, 0, &key, &value).expect("produce");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");

    let switches = Arc::new(Switches::new(["mysql"]));
    let opts = ReplayOptions {
        once: true,
        progress: None,
        ..ReplayOptions::default()
    };
    let replay = |control: &Arc<RunControl>| {
        run_replay(&cfg, &opts, Some(Arc::clone(&switches)), control).expect("replay")
    };

    // 1. MySQL degraded: nothing may be applied or committed; this test
    //    stops the job after a while.
    switches.set("mysql", Mode::Degraded);
    let stop = Arc::new(RunControl::default());
    let stopper = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            stop.request_stop();
        })
    };
    let first = replay(&stop);
    stopper.join().expect("stopper");
    assert_eq!(first.applied, 0);
    assert_eq!(
        footprint_tests::committed_total(footprint_connectors::replay::REPLAY_GROUP, &topic, 1)
            .expect("commits"),
        0,
        "nothing is committed while the sink is degraded"
    );

    // 2. Back in auto: every record is dealt with, none skipped.
    switches.set("mysql", Mode::Auto);
    let second = replay(&Arc::default());
    assert_eq!(
        second.applied, 2,
        "records a and b, on both sides of the bad ones"
    );
    assert_eq!(second.undecodable, 1);
    assert_eq!(second.rejected, 1);
    let apps: Vec<String> = mysql
        .load_windows()
        .expect("rows")
        .iter()
        .map(|w| w.key[0].1.to_string())
        .collect();
    assert_eq!(apps, vec!["a".to_owned(), "b".to_owned()]);
    let dead = read_all(&format!("{topic}.dlq")).expect("dead letters");
    assert_eq!(dead.len(), 2);
    assert!(
        dead.iter()
            .all(|m| m.headers.contains_key("footprint.reason"))
    );

    // 3. Everything was committed: a third run has nothing to do.
    let third = replay(&Arc::default());
    assert_eq!(
        (third.applied, third.undecodable, third.rejected),
        (0, 0, 0)
    );
    footprint_tests::drop_database(&database);
}
