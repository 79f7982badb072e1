//! Offsets after acceptance (`docs/design.md#offsets-and-recovery`): the worker commits a source offset
//! only once every result of the messages before it is written, and a
//! restarted worker resumes from the commits. The kill -9 drill is in
//! `drill_kill.rs`.

use std::sync::Arc;

use footprint::config::Config;
use footprint::generate::{GenPlan, produce};
use footprint_connectors::admin::Admin;
use footprint_connectors::checkpoints;
use footprint_connectors::offsets::Saved;
use footprint_dataflows::clickstream::GenConfig;
use footprint_dataflows::control::RunControl;
use footprint_dataflows::reference::{Collected, compute};
use footprint_tests::{brokers, held_parts, kafka, preload, run_to_end, unique};

/// A small clickstream on one partition.
fn one_partition(seed: u64) -> GenConfig {
    GenConfig {
        seed,
        partitions: 1,
        users: 20,
        items: 5,
        events_per_sec: 100,
        ..GenConfig::default()
    }
}

/// A reader of partition 0 of `topic`, from its first offset until caught up.
fn plain_reader(topic: &str) -> footprint_connectors::reader::KafkaReader {
    use footprint_connectors::reader::{KafkaReader, PartitionRange};
    let range = PartitionRange {
        topic: topic.to_owned(),
        partition: 0,
        id: 0,
        from: 0,
        max_ts: None,
        to: None,
        until_caught_up: true,
        tail: false,
    };
    KafkaReader::open_plain(&kafka(), &format!("{topic}-group"), vec![range]).expect("open")
}

fn cfg(toml: &str) -> Config {
    Config::from_layers(Some(toml), Vec::<(String, String)>::new()).expect("config")
}

/// A bounded run commits the offsets of what its watermark closed (its
/// last windows, emitted at the end of its input, are not); the next run
/// reads from there, and the windows come out whole.
#[test]
fn a_worker_resumes_where_the_last_run_committed() {
    let topic = unique("resume");
    let gen_cfg = GenConfig {
        seed: 3,
        partitions: 3,
        users: 50,
        items: 10,
        events_per_sec: 5,
        bad: 0.01,
        ..GenConfig::default()
    };
    preload(&topic, &gen_cfg, 3_000).expect("preload");
    let config = cfg(&format!(
        r#"
[source]
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "{topic}-group"

[[aggregate]]
name = "events_1m"
group_by = ["event"]
window = {{ tumbling = "1m" }}
measures = ["count"]
sinks = []
"#,
        brokers = brokers(),
    ));
    let (first, first_rows) = run_to_end(&config, 2).expect("first run");
    assert_eq!(first.events_in, 3_000);
    let pairs: Vec<(String, i32)> = (0..3).map(|p| (topic.clone(), p)).collect();
    let admin = Admin::new(&kafka()).expect("admin");
    let committed = admin
        .committed(&format!("{topic}-group"), &pairs)
        .expect("fetch");
    let total: i64 = committed
        .iter()
        .map(|c| c.expect("every partition committed").offset)
        .sum();
    assert!(
        total > 0 && total < 3_000,
        "the commits stop where the watermark stopped ({total})"
    );
    let saved = checkpoints::load(&admin, "footprint.checkpoints", &format!("{topic}-group"))
        .expect("load checkpoints")
        .points;
    for (t, p) in &pairs {
        let s = saved
            .get(&(t.clone(), *p))
            .expect("a checkpoint per partition");
        let c = committed[*p as usize].expect("committed");
        assert_eq!(s.offset, c.offset, "the checkpoint and the commit agree");
        assert!(s.max_ts.is_some(), "the checkpoint keeps the watermark");
    }

    let more = GenConfig {
        seed: 4,
        ..gen_cfg.clone()
    };
    let plan = GenPlan {
        topic: topic.clone(),
        count: Some(1_200),
        rate: None,
        duration: None,
        progress: None,
    };
    produce(&kafka(), more, &plan, &Arc::new(RunControl::default())).expect("produce more");
    let (second, second_rows) = run_to_end(&config, 1).expect("second run");
    assert_eq!(
        second.events_in as i64,
        4_200 - total,
        "the second run reads from the commits on"
    );
    // The windows the first run emitted at the end of its input were partial;
    // the second run rebuilt them whole: the newest row of every window, over
    // both runs, is the reference's over everything the topic holds.
    let spec = config.spec().expect("spec");
    let parts = held_parts(&kafka(), &topic, 3).expect("read the topic back");
    assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 4_200);
    let expected = compute(&spec, &parts);
    let got = Collected::from_outputs(first_rows.into_iter().chain(second_rows), 0);
    assert_eq!(got.not_final, 0, "every window ends final");
    assert_eq!(got.windows.len(), expected.windows.len(), "windows");
    for (id, row) in &expected.windows {
        assert_eq!(got.windows.get(id), Some(row), "window {id:?}");
    }
}

/// A checkpoint inside the partition's last record batch: the first fetch
/// of some brokers (tansu 0.6) answers with nothing at all, and the reader
/// must read from further back instead of waiting for ever.
#[test]
fn a_worker_resumes_from_inside_the_last_record_batch() {
    let topic = unique("resume-last-batch");
    let gen_cfg = one_partition(5);
    // 300 messages produced at once land in one record batch.
    preload(&topic, &gen_cfg, 300).expect("preload");
    let group = format!("{topic}-group");
    checkpoints::CheckpointWriter::new(&kafka(), "footprint.checkpoints", &group)
        .and_then(|w| {
            w.save(&[(
                topic.as_str(),
                0,
                Saved {
                    offset: 120,
                    max_ts: Some(1_767_225_600_000),
                },
            )])
        })
        .expect("save a checkpoint");
    let config = cfg(&format!(
        r#"
[source]
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "{group}"

[[aggregate]]
name = "events_1m"
group_by = ["event"]
window = {{ tumbling = "1m" }}
measures = ["count"]
sinks = []
"#,
        brokers = brokers(),
    ));
    let (report, _) = run_to_end(&config, 1).expect("run");
    assert_eq!(
        report.events_in, 180,
        "reads exactly the messages from the checkpoint on"
    );
}

/// A reader held back by its stores (back-pressure) drops librdkafka's
/// read-ahead and, once released, goes on at exactly the next message: none
/// skipped, none twice, even when it was held in the middle of a record
/// batch (tansu 0.6 answers a fetch from inside a batch with the next one).
#[test]
fn a_held_reader_goes_on_at_its_next_message() {
    use footprint_dataflows::source::{PartitionReader, Verdict};

    let topic = unique("held-reader");
    let gen_cfg = one_partition(11);
    const N: i64 = 3_000;
    // Produced at once: a few large record batches.
    preload(&topic, &gen_cfg, N as u64).expect("preload");
    let mut reader = plain_reader(&topic);
    let mut offsets = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut holds = 0;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of {N}",
            offsets.len()
        );
        let status = reader.read(0, 377, &mut |m| {
            offsets.push(m.offset);
            Verdict::Accepted
        });
        if status.finished {
            break;
        }
        if status.read > 0 && holds < 5 {
            // Held between two reads, as the source is when its stores are behind.
            reader.hold(true);
            std::thread::sleep(std::time::Duration::from_millis(100));
            reader.hold(false);
            holds += 1;
        }
    }
    assert_eq!(holds, 5, "the reader was held and released five times");
    assert_eq!(offsets, (0..N).collect::<Vec<_>>());
}

/// The reader reports what librdkafka fetched ahead of it (from the
/// client's statistics, every second): the messages preloaded before any
/// is read, none once all are read.
#[test]
fn a_reader_reports_what_it_read_ahead() {
    use footprint_connectors::reader::KafkaReader;
    use footprint_dataflows::source::{PartitionReader, ReadAhead, Verdict};

    let topic = unique("read-ahead");
    const N: u64 = 2_000;
    preload(&topic, &one_partition(12), N).expect("preload");
    let mut reader = plain_reader(&topic);
    let wait_for = |reader: &mut KafkaReader, what: &str, done: &dyn Fn(ReadAhead) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            reader.after_round();
            match reader.read_ahead() {
                Some(r) if done(r) => return r,
                last => assert!(
                    std::time::Instant::now() < deadline,
                    "{what}: last reported {last:?}"
                ),
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    // Nothing read yet: librdkafka fetches the whole topic (under the
    // reader's queue limit per partition). Its count may include the
    // end-of-partition event queued behind the messages.
    let ahead = wait_for(&mut reader, "all preloaded messages read ahead", &|r| {
        r.messages >= N
    });
    assert!(
        ahead.bytes >= N * 50,
        "payload bytes of {N} events: {ahead:?}"
    );
    let mut read = 0u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        assert!(std::time::Instant::now() < deadline, "read {read} of {N}");
        let status = reader.read(0, 500, &mut |_| {
            read += 1;
            Verdict::Accepted
        });
        if status.finished {
            break;
        }
    }
    assert_eq!(read, N);
    wait_for(&mut reader, "nothing read ahead once all is read", &|r| {
        r.messages == 0 && r.bytes == 0
    });
}
