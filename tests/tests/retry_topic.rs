//! Diverted writes reach the retry topic as self-contained records; when the
//! retry topic is unreachable they go to the journal, and are resent once it
//! is back.

use std::time::Duration;

use footprint_connectors::admin::ensure_topic;
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

fn create(topic: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(ensure_topic(&kafka(), topic, 2, 1))
        .expect("create topic");
}

#[test]
fn diverted_rows_reach_the_retry_topic_as_self_contained_records() {
    let topic = unique("retry");
    create(&topic);
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
    create(&topic);
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
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use footprint_connectors::producer::EventProducer;
    use footprint_connectors::replay::{ReplayOptions, replay};
    use footprint_dataflows::{AggregateSpec, Field, Measure, PipelineSpec, WindowSpec};
    use footprint_sinks::mysql::MySqlSinkFactory;
    use footprint_sinks::util::switch::{Mode, Switches};
    use footprint_sinks::{Sink, SinkFactory};

    let topic = unique("retry-dlq");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(ensure_topic(&kafka(), &topic, 1, 1))
        .expect("create topic");
    let database = unique("fp_replay").replace('-', "_");
    let spec = Arc::new(PipelineSpec {
        aggregates: vec![AggregateSpec {
            name: "item_1m".into(),
            group_by: vec![Field::AppId],
            window: WindowSpec::tumbling(60_000).expect("valid"),
            measures: vec![Measure::Count, Measure::SumValue],
            allowed_lateness: 0,
            early_updates: None,
            sinks: vec![],
        }],
        recent: None,
        max_out_of_order: 0,
    });
    let mysql = MySqlSinkFactory::new(
        &format!("{}/{database}", footprint_tests::mysql_url()),
        Arc::clone(&spec),
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
        topic: topic.clone(),
        group_id: unique("replay"),
        once: true,
        progress: None,
        ..ReplayOptions::default()
    };
    let sinks = || -> HashMap<String, Box<dyn Sink>> {
        HashMap::from([("mysql".to_owned(), mysql.build(0, 1).expect("sink"))])
    };

    // 1. MySQL degraded: nothing may be applied or committed; stop after a while.
    switches.set("mysql", Mode::Degraded);
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        s2.store(true, Ordering::SeqCst);
    });
    let first = replay(&kafka(), &opts, sinks(), Arc::clone(&switches), &|| {
        stop.load(Ordering::SeqCst)
    })
    .expect("replay");
    assert_eq!(first.applied, 0);

    // 2. Back in auto: every record is dealt with, none skipped.
    switches.set("mysql", Mode::Auto);
    let second =
        replay(&kafka(), &opts, sinks(), Arc::clone(&switches), &|| false).expect("replay");
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
    let third = replay(&kafka(), &opts, sinks(), switches, &|| false).expect("replay");
    assert_eq!(
        (third.applied, third.undecodable, third.rejected),
        (0, 0, 0)
    );
    footprint_tests::drop_database(&database);
}
