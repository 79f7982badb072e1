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
