//! Out-of-range checkpoints (`docs/design.md#offsets-and-recovery`): a checkpoint past a partition's
//! end (the topic was recreated) restarts from the latest offset, one before
//! its start (retention deleted it) from the earliest; each is logged at
//! ERROR with the number of offsets skipped, counted, and the new start is
//! committed at once.
//!
//! Past the end runs against the real broker. Before the start needs a
//! partition whose first offsets are gone, which tansu cannot stage (it has
//! no retention and no DeleteRecords), so it runs against librdkafka's mock
//! cluster, whose partitions drop their oldest record batches past 5 MB.

use std::time::Duration;

use footprint_connectors::admin::Admin;
use footprint_connectors::checkpoints;
use footprint_connectors::client::KafkaSettings;
use footprint_connectors::offsets::Saved;
use footprint_connectors::producer::EventProducer;
use footprint_dataflows::clickstream::{GenConfig, Generator};
use footprint_tests::{
    Scenario, committed_total, kafka, produce_slice, run_to_end, spawn_footprint_env, wait_exit,
};

fn clickstream(seed: u64) -> GenConfig {
    GenConfig {
        seed,
        partitions: 2,
        users: 400,
        items: 30,
        events_per_sec: 40,
        ..GenConfig::default()
    }
}

/// A one-aggregate config without stores.
fn plain_config(brokers: &str, s: &Scenario) -> (std::path::PathBuf, String) {
    let toml = format!(
        "[source]\nbrokers = \"{brokers}\"\ntopics = [\"{}\"]\ngroup_id = \"{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[aggregate]]\nname = \"events_1m\"\ngroup_by = [\"event\"]\nwindow = {{ tumbling = \"1m\" }}\nmeasures = [\"count\"]\nsinks = []\n",
        s.topic, s.group
    );
    let path = s.dir.join("footprint.toml");
    std::fs::write(&path, &toml).expect("config");
    (path, toml)
}

/// What a run of `footprint worker --until-end` logged: its ERROR lines that
/// contain `what`, the offsets they say were skipped, and the messages it
/// read (from its last line).
struct Logged {
    errors: usize,
    skipped: i64,
    events_in: u64,
}

fn errors_of_a_run(
    s: &Scenario,
    (config, brokers): (&std::path::Path, &str),
    what: &str,
) -> Logged {
    let log = s.dir.join("run.log");
    // FOOTPRINT_BROKERS (the test broker) would override the config's brokers.
    let env = [("FOOTPRINT_BROKERS", brokers)];
    let mut child =
        spawn_footprint_env(config, &["worker", "--until-end"], &log, &env).expect("start");
    let status = wait_exit(&mut child, Duration::from_secs(120), "the worker").expect("exit");
    assert!(status.success(), "see {}", log.display());
    let text = std::fs::read_to_string(&log).expect("log");
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains(what))
        .collect();
    let skipped = errors
        .iter()
        .filter_map(|l| l.split("skipped=").nth(1))
        .filter_map(|v| v.split_whitespace().next())
        .filter_map(|v| v.parse::<i64>().ok())
        .sum();
    let events_in = text
        .lines()
        .filter(|l| l.contains("worker stopped"))
        .filter_map(|l| l.split("events_in=").nth(1))
        .filter_map(|v| v.split_whitespace().next())
        .find_map(|v| v.parse::<u64>().ok())
        .expect("the worker logs what it read when it stops");
    Logged {
        errors: errors.len(),
        skipped,
        events_in,
    }
}

/// Checkpoints past a partition's end (the topic was recreated) restart from
/// the latest offset, logged at ERROR with the offsets skipped, and the next
/// run reads what arrives after.
#[test]
fn a_checkpoint_past_the_end_restarts_from_the_latest_offset() {
    let s = Scenario::new("past-end").expect("scenario");
    let gen_cfg = clickstream(47);
    produce_slice(&s.topic, &gen_cfg, 0, 3_000).expect("produce");
    let points: Vec<(&str, i32, Saved)> = (0..2)
        .map(|p| {
            let saved = Saved {
                offset: 1_000_000,
                max_ts: Some(1_767_225_600_000),
            };
            (s.topic.as_str(), p, saved)
        })
        .collect();
    checkpoints::save_now(&kafka(), "footprint.checkpoints", &s.group, &points)
        .expect("stale checkpoints");
    let brokers = footprint_tests::brokers();
    let (config, toml) = plain_config(&brokers, &s);
    let run = errors_of_a_run(&s, (&config, &brokers), "past the partition's end");
    assert_eq!(run.errors, 2, "one ERROR per partition");
    assert_eq!(
        run.skipped, 3_000,
        "the ERRORs say how many offsets are skipped"
    );
    assert_eq!(
        run.events_in, 0,
        "the run starts at the end and reads nothing"
    );
    assert_eq!(
        committed_total(&s.group, &s.topic, 2).expect("commits"),
        3_000,
        "the new start is committed at once"
    );
    produce_slice(&s.topic, &gen_cfg, 3_000, 500).expect("produce");
    let cfg = footprint::config::Config::from_layers(Some(&toml), Vec::<(String, String)>::new())
        .expect("config");
    let (report, _) = run_to_end(&cfg, 1).expect("second run");
    assert_eq!(report.events_in, 500, "only what arrived after is read");
    s.clean();
}

/// A checkpoint before a partition's first offset restarts from the earliest
/// retained offset.
#[test]
fn a_checkpoint_before_the_start_restarts_from_the_earliest_offset() {
    let mock = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let s = Scenario::new("before-start").expect("scenario");
    for t in [
        s.topic.clone(),
        format!("{}.dlq", s.topic),
        format!("{}.late", s.topic),
        "footprint.checkpoints".to_owned(),
    ] {
        mock.create_topic(&t, 1, 1).expect("create topic");
    }
    let settings = KafkaSettings::new(mock.bootstrap_servers());
    // About 8 MB in record batches of 1,000 events: the oldest batches go.
    let producer = EventProducer::new(&settings).expect("producer");
    let mut generator = Generator::new(GenConfig {
        partitions: 1,
        ..clickstream(53)
    });
    let padding = "x".repeat(900);
    for _ in 0..9 {
        for _ in 0..1_000 {
            let e = generator.next_event();
            let payload = String::from_utf8(e.payload)
                .expect("utf-8")
                .replace(r#""props":{"#, &format!(r#""props":{{"pad":"{padding}","#));
            producer
                .send(&s.topic, 0, e.key.as_bytes(), payload.as_bytes())
                .expect("send");
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }
    let admin = Admin::new(&settings).expect("admin");
    let (low, high) = admin.watermarks(&s.topic, 0).expect("watermarks");
    assert!(low > 10, "the oldest batches are gone (first offset {low})");
    let stale = Saved {
        offset: 10,
        max_ts: Some(1_767_225_600_000),
    };
    checkpoints::save_now(
        &settings,
        "footprint.checkpoints",
        &s.group,
        &[(&s.topic, 0, stale)],
    )
    .expect("a checkpoint before the start");
    let brokers = mock.bootstrap_servers();
    let (config, _) = plain_config(&brokers, &s);
    let run = errors_of_a_run(
        &s,
        (&config, &brokers),
        "before the partition's first offset",
    );
    assert_eq!(run.errors, 1, "one ERROR");
    assert_eq!(
        run.skipped,
        low - 10,
        "the ERROR says how many offsets were lost"
    );
    // A run that started anywhere but the first retained offset (the latest
    // offset, say) would read fewer.
    assert_eq!(
        run.events_in as i64,
        high - low,
        "the run read every retained offset, from the first on"
    );
    let committed = admin
        .committed(&s.group, &[(s.topic.clone(), 0)])
        .expect("commits");
    let at = committed[0].expect("committed").offset;
    assert!(
        at > low && at <= high,
        "the run committed within what it read ({at})"
    );
    s.clean();
}
