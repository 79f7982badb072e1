//! Offsets after acceptance (DESIGN §5): the worker commits a source offset
//! only once every result of the messages before it is written, and a
//! restarted worker resumes from the commits, with nothing lost and nothing
//! counted twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use footprint::config::Config;
use footprint::generate::{GenPlan, produce};
use footprint_connectors::{admin, checkpoints};
use footprint_dataflows::clickstream::{GenConfig, SplitMix64};
use footprint_dataflows::control::RunControl;
use footprint_dataflows::reference::compute;
use footprint_tests::{
    Stores, brokers, delete_redis_prefix, differences, drop_database, kafka, mysql_url, preload,
    redis_url, run_to_end, spawn_footprint, unique,
};

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
    let (first, _) = run_to_end(&config, 2).expect("first run");
    assert_eq!(first.events_in, 3_000);
    let pairs: Vec<(String, i32)> = (0..3).map(|p| (topic.clone(), p)).collect();
    let committed = admin::committed(&kafka(), &format!("{topic}-group"), &pairs).expect("fetch");
    let total: i64 = committed
        .iter()
        .map(|c| c.expect("every partition committed").offset)
        .sum();
    assert!(
        total > 0 && total < 3_000,
        "the commits stop where the watermark stopped ({total})"
    );
    let saved = checkpoints::load(&kafka(), "footprint.checkpoints", &format!("{topic}-group"))
        .expect("load checkpoints");
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
    let (second, _) = run_to_end(&config, 1).expect("second run");
    assert_eq!(
        second.events_in as i64,
        4_200 - total,
        "the second run reads from the commits on"
    );
}

/// A checkpoint inside the partition's last record batch: the first fetch
/// of some brokers (tansu 0.6) answers with nothing at all, and the reader
/// must read from further back instead of waiting for ever.
#[test]
fn a_worker_resumes_from_inside_the_last_record_batch() {
    let topic = unique("resume-last-batch");
    let gen_cfg = GenConfig {
        seed: 5,
        partitions: 1,
        users: 20,
        items: 5,
        events_per_sec: 100,
        ..GenConfig::default()
    };
    // 300 messages produced at once land in one record batch.
    preload(&topic, &gen_cfg, 300).expect("preload");
    let group = format!("{topic}-group");
    checkpoints::CheckpointWriter::new(&kafka(), "footprint.checkpoints", &group)
        .and_then(|w| {
            w.save(&[(
                topic.as_str(),
                0,
                checkpoints::Saved {
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

/// The worker is killed with SIGKILL at several points while it streams
/// into Redis and MySQL, and restarted each time; a last run reads to the
/// end. Both stores then equal the sequential reference.
#[test]
fn kill_9_and_restart_lose_nothing_and_count_nothing_twice() {
    let topic = unique("kill");
    let database = unique("fp_kill").replace('-', "_");
    let prefix = unique("fpkill");
    let tmp = tempfile::tempdir().expect("tempdir");
    // Logs stay for a look after a failure; a pass removes them.
    let dir = tmp.keep();
    let gen_cfg = GenConfig {
        seed: 17,
        partitions: 4,
        users: 300,
        items: 30,
        events_per_sec: 40,
        disorder: 0.05,
        max_disorder_ms: 3_000,
        late: 0.01,
        late_by_ms: 70_000,
        bad: 0.01,
        ..GenConfig::default()
    };
    let (parts, _) = preload(&topic, &gen_cfg, 40_000).expect("preload");
    let toml = format!(
        r#"
[source]
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "{topic}-group"
batch = 16
commit_interval = "100ms"

[watermark]
max_out_of_order = "3s"

[retry]
topic = "{topic}-retry"
journal = "{journal}"

[admin]
listen = "127.0.0.1:0"
control_topic = "{topic}-control"

[[aggregate]]
name = "item_activity_1m"
group_by = ["app_id", "event", "item_id"]
window = {{ tumbling = "1m" }}
measures = ["count", "distinct(user_id)", "sum(value)"]
allowed_lateness = "5s"
early_updates = "50ms"
sinks = ["redis", "mysql"]

[[aggregate]]
name = "app_events_10m"
group_by = ["app_id", "event"]
window = {{ sliding = "10m", every = "1m" }}
measures = ["count", "distinct(user_id)"]
sinks = ["redis", "mysql"]

[recent]
keep = 5
updates = "50ms"
sinks = ["redis", "mysql"]

[sinks.redis]
url = "{redis}"
prefix = "{prefix}"

[sinks.mysql]
url = "{mysql}/{database}"
"#,
        brokers = brokers(),
        journal = dir.join("retry.journal").display(),
        redis = redis_url(),
        mysql = mysql_url(),
    );
    let path = dir.join("footprint.toml");
    std::fs::write(&path, &toml).expect("config");
    let config = cfg(&toml);
    let group = format!("{topic}-group");
    let pairs: Vec<(String, i32)> = (0..4).map(|p| (topic.clone(), p)).collect();
    let committed_total = || -> i64 {
        admin::committed(&kafka(), &group, &pairs)
            .expect("fetch commits")
            .iter()
            .map(|c| c.map_or(0, |c| c.offset))
            .sum()
    };

    let mut rng = SplitMix64::new(99);
    let started = Instant::now();
    let mut kills = 0;
    let mut last = 0;
    for round in 0..5 {
        let log = dir.join(format!("run{round}.log"));
        let mut child = spawn_footprint(&path, &["worker"], &log).expect("start worker");
        // Kill once the commits have moved on by a random amount.
        // While the worker streams, the last 10 minutes of event time (about
        // 24,000 messages here) stay in open sliding windows and cannot be
        // committed, so targets stop at 12,000.
        let target = (last + 500 + rng.below(2_500) as i64).min(12_000);
        let deadline = Instant::now() + Duration::from_secs(120);
        while committed_total() < target {
            assert!(
                Instant::now() < deadline,
                "no progress; see {}",
                log.display()
            );
            assert!(
                child.try_wait().expect("poll").is_none(),
                "the worker exited; see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(20 + rng.below(80)));
        }
        child.kill().expect("kill -9");
        let _ = child.wait();
        kills += 1;
        last = committed_total();
    }
    let log = dir.join("last.log");
    let mut child = spawn_footprint(&path, &["worker", "--until-end"], &log).expect("start worker");
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().expect("poll") {
            break s;
        }
        assert!(Instant::now() < deadline, "the last run did not finish");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "see {}", log.display());
    assert!(
        committed_total() > last,
        "the last run committed past the killed runs"
    );

    let spec = config.spec().expect("spec");
    let expected = compute(&spec, &parts);
    let stored = Stores::open(&spec, &prefix, &database)
        .and_then(|s| s.load())
        .expect("load the stores");
    let (wm, wr) = (
        differences(&expected.windows, &stored.mysql_windows),
        differences(&expected.windows, &stored.redis_windows),
    );
    let (rm, rr) = (
        differences(&expected.recent, &stored.mysql_recent),
        differences(&expected.recent, &stored.redis_recent),
    );
    println!(
        "kill -9 drill: {kills} kills, {} windows, window diffs mysql {wm} redis {wr}, recent diffs mysql {rm} redis {rr}, {:.1} s",
        expected.windows.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!((wm, wr), (0, 0), "windows differ from the reference");
    assert_eq!(
        (rm, rr),
        (0, 0),
        "recent activity differs from the reference"
    );
    drop_database(&database);
    delete_redis_prefix(&prefix);
    let _ = std::fs::remove_dir_all(&dir);
}
