//! Retry topic unavailable: diverted writes go to the journal. The worker is
//! killed with SIGKILL while records sit there; the restarted worker resends
//! them, nothing is lost, and after replay MySQL equals the reference.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use footprint::config::Config;
use footprint_connectors::admin::Admin;
use footprint_connectors::control::ControlPublisher;
use footprint_connectors::journal::Journal;
use footprint_connectors::retry::RetryRecord;
use footprint_dataflows::clickstream::GenConfig;
use footprint_dataflows::reference::compute;
use footprint_sinks::mysql::MySqlSinkFactory;
use footprint_sinks::util::switch::Mode;
use footprint_tests::{
    brokers, drop_database, kafka, mysql_url, preload, read_all, spawn_footprint, unique,
};

fn journaled(path: &Path) -> Vec<RetryRecord> {
    Journal::peek(path)
        .expect("read journal")
        .iter()
        .map(|(_, v)| RetryRecord::decode(v).expect("decode"))
        .collect()
}

#[test]
fn journaled_records_survive_kill_9_and_are_resent_on_restart() {
    let topic = unique("crash");
    let database = unique("fp_crash").replace('-', "_");
    let control = unique("control");
    let retry_topic = unique("retry");
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("retry.journal");
    let gen_cfg = GenConfig {
        seed: 23,
        partitions: 2,
        users: 200,
        items: 20,
        events_per_sec: 100,
        ..GenConfig::default()
    };
    let (parts, _) = preload(&topic, &gen_cfg, 20_000).expect("preload");

    // MySQL is degraded before the worker starts: every write is diverted.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    Admin::new(&kafka())
        .and_then(|a| a.ensure_compacted(&control))
        .expect("control topic");
    let publisher = ControlPublisher::new(&kafka(), &control).expect("publisher");
    rt.block_on(publisher.publish("mysql", Mode::Degraded))
        .expect("degrade mysql");

    let config = |retry_brokers: Option<&str>| {
        format!(
            r#"
[source]
brokers = "{brokers}"
topics = ["{topic}"]
batch = 20

[retry]
topic = "{retry_topic}"
journal = "{journal}"
ack_timeout = "1s"
{retry_brokers}

[admin]
listen = "127.0.0.1:0"
control_topic = "{control}"

[[aggregate]]
name = "item_activity_1m"
group_by = ["app_id", "event", "item_id"]
window = {{ tumbling = "1m" }}
measures = ["count", "distinct(user_id)"]
early_updates = "20ms"
sinks = ["mysql"]

[sinks.file]
path = "{file}"

[sinks.mysql]
url = "{mysql}/{database}"
"#,
            brokers = brokers(),
            journal = journal.display(),
            retry_brokers = retry_brokers
                .map(|b| format!("brokers = \"{b}\""))
                .unwrap_or_default(),
            file = dir.path().join("r.jsonl").display(),
            mysql = mysql_url(),
        )
    };
    let down = dir.path().join("down.toml");
    std::fs::write(&down, config(Some("127.0.0.1:1"))).expect("config");
    let up = dir.path().join("up.toml");
    std::fs::write(&up, config(None)).expect("config");

    // 1. The retry topic's broker is unreachable: records pile up in the journal.
    let mut first =
        spawn_footprint(&down, &["worker"], &dir.path().join("first.log")).expect("start worker");
    let deadline = Instant::now() + Duration::from_secs(120);
    while journaled(&journal).len() < 200 {
        assert!(
            Instant::now() < deadline,
            "no journal records appeared; see {}",
            dir.path().join("first.log").display()
        );
        assert!(
            first.try_wait().expect("poll").is_none(),
            "the worker exited early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    first.kill().expect("kill -9");
    let _ = first.wait();
    let before: BTreeSet<(String, u64)> = journaled(&journal)
        .into_iter()
        .map(|r| (r.identity, r.version))
        .collect();
    assert!(!before.is_empty());

    // 2. Restarted with the broker reachable: the journal is resent first.
    let mut second = spawn_footprint(
        &up,
        &["worker", "--until-end"],
        &dir.path().join("second.log"),
    )
    .expect("start worker");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = second.try_wait().expect("poll") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted worker did not finish"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success(),
        "see {}",
        dir.path().join("second.log").display()
    );
    if !journaled(&journal).is_empty() {
        let log = std::fs::read_to_string(dir.path().join("second.log")).unwrap_or_default();
        panic!("the journal was not emptied; second run's log:\n{log}");
    }
    let in_topic: BTreeSet<(String, u64)> = read_all(&retry_topic)
        .expect("read retry topic")
        .iter()
        .map(|m| RetryRecord::decode(&m.payload).expect("decode"))
        .map(|r| (r.identity, r.version))
        .collect();
    let lost: Vec<_> = before.difference(&in_topic).collect();
    println!(
        "kill -9 drill: {} records were in the journal at the kill; {} lost",
        before.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "lost {} journaled records, e.g. {:?}",
        lost.len(),
        lost.first()
    );

    // 3. MySQL back in auto; replay; MySQL equals the reference.
    rt.block_on(publisher.publish("mysql", Mode::Auto))
        .expect("mysql auto");
    let cfg = Config::from_layers(
        Some(&std::fs::read_to_string(&up).expect("read")),
        Vec::<(String, String)>::new(),
    )
    .expect("config");
    let report = footprint::replay::run_replay(
        &cfg,
        &footprint::replay::ReplayOptions {
            once: true,
            progress: None,
            ..Default::default()
        },
        None,
        &Arc::new(footprint_dataflows::control::RunControl::default()),
    )
    .expect("replay");
    assert!(report.applied as usize >= before.len());
    let mut spec = cfg.spec().expect("spec");
    spec.recent = None;
    let expected = compute(&spec, &parts);
    let mysql = MySqlSinkFactory::new(
        &format!("{}/{database}", mysql_url()),
        Arc::new(spec),
        "fp_",
    )
    .expect("mysql");
    let got: std::collections::BTreeMap<_, _> = mysql
        .load_windows()
        .expect("rows")
        .into_iter()
        .map(|w| ((w.aggregate.clone(), w.key.clone(), w.window_start), w))
        .collect();
    assert_eq!(got.len(), expected.windows.len());
    assert!(got == expected.windows, "MySQL equals the reference");
    drop_database(&database);
}
