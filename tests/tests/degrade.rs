//! Degrade drill, mid-stream, against the real broker, Redis and MariaDB:
//! while a sink is degraded the pipeline keeps running, the other store keeps
//! being written, the degraded store is not touched, and its writes go to
//! the retry topic; once it is back in `auto`, the replay job drains the
//! backlog and the store equals the reference.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use footprint::config::Config;
use footprint::replay::run_replay;
use footprint::run::{RunOptions, run, store_switches};
use footprint_dataflows::WindowRow;
use footprint_dataflows::clickstream::GenConfig;
use footprint_dataflows::control::RunControl;
use footprint_dataflows::metrics::Metrics;
use footprint_dataflows::reference::{WindowId, compute};
use footprint_sinks::mysql::MySqlSinkFactory;
use footprint_sinks::redis::RedisSinkFactory;
use footprint_sinks::util::switch::Mode;
use footprint_tests::{
    brokers, delete_redis_prefix, drop_database, mysql_url, preload, redis_url, unique,
};

fn by_id(rows: Vec<WindowRow>) -> BTreeMap<WindowId, WindowRow> {
    rows.into_iter()
        .map(|w| ((w.aggregate.clone(), w.key.clone(), w.window_start), w))
        .collect()
}

fn drill(degraded: &'static str) {
    let topic = unique(&format!("degrade-{degraded}"));
    let database = unique("fp_degrade").replace('-', "_");
    let prefix = unique("fpdegrade");
    let dir = tempfile::tempdir().expect("tempdir");
    const EVENTS: u64 = 40_000;
    let gen_cfg = GenConfig {
        seed: 17,
        partitions: 4,
        users: 400,
        items: 30,
        events_per_sec: 100,
        ..GenConfig::default()
    };
    let (parts, _) = preload(&topic, &gen_cfg, EVENTS).expect("preload");
    let toml = format!(
        r#"
[source]
brokers = "{brokers}"
topics = ["{topic}"]
batch = 50

[watermark]
max_out_of_order = "3s"

[retry]
topic = "{retry_topic}"
journal = "{journal}"

[[aggregate]]
name = "item_activity_1m"
group_by = ["app_id", "event", "item_id"]
window = {{ tumbling = "1m" }}
measures = ["count", "distinct(user_id)", "sum(value)"]
early_updates = "20ms"
sinks = ["redis", "mysql"]

[sinks.file]
path = "{file}"

[sinks.redis]
url = "{redis}"
prefix = "{prefix}"

[sinks.mysql]
url = "{mysql}/{database}"
"#,
        brokers = brokers(),
        retry_topic = unique("retry"),
        journal = dir.path().join("journal").display(),
        file = dir.path().join("r.jsonl").display(),
        redis = redis_url(),
        mysql = mysql_url(),
    );
    let mut cfg = Config::from_layers(Some(&toml), Vec::<(String, String)>::new()).expect("config");
    cfg.recent = None;
    let spec = cfg.spec().expect("spec");
    let switches = store_switches(&cfg);
    let metrics = Arc::new(Metrics::new(
        spec.aggregates.iter().map(|a| a.name.clone()).collect(),
    ));
    let healthy = if degraded == "mysql" {
        "redis"
    } else {
        "mysql"
    };

    // Flip the switch a third of the way through, and back at two thirds.
    let flipper = {
        let (switches, metrics) = (Arc::clone(&switches), Arc::clone(&metrics));
        std::thread::spawn(move || {
            let wait_for = |n: u64| {
                while metrics.events_in.load(Ordering::Relaxed) < n {
                    std::thread::sleep(Duration::from_millis(2));
                }
            };
            wait_for(EVENTS / 3);
            switches.set(degraded, Mode::Degraded);
            std::thread::sleep(Duration::from_millis(50));
            let (writes_at_degrade, healthy_at_degrade) = (
                Metrics::sink_count(&metrics.sink_writes, degraded),
                Metrics::sink_count(&metrics.sink_writes, healthy),
            );
            wait_for(2 * EVENTS / 3);
            let (writes_at_auto, healthy_at_auto) = (
                Metrics::sink_count(&metrics.sink_writes, degraded),
                Metrics::sink_count(&metrics.sink_writes, healthy),
            );
            switches.set(degraded, Mode::Auto);
            (
                writes_at_degrade,
                writes_at_auto,
                healthy_at_degrade,
                healthy_at_auto,
            )
        })
    };
    let opts = RunOptions {
        threads: Some(2),
        until_end: true,
        progress: None,
        switches: Some(Arc::clone(&switches)),
        ..RunOptions::default()
    };
    run(&cfg, opts, Arc::clone(&metrics)).expect("worker run");
    let (w_deg, w_auto, h_deg, h_auto) = flipper.join().expect("flipper");
    let diverted = Metrics::sink_count(&metrics.sink_diverted, degraded);
    println!(
        "degrade drill ({degraded}): {diverted} rows diverted; {degraded} writes {w_deg} → {w_auto} while degraded; {healthy} writes {h_deg} → {h_auto}"
    );
    assert!(
        diverted > 0,
        "writes for the degraded sink go to the retry topic"
    );
    assert!(
        w_auto - w_deg <= 2,
        "the degraded store is not touched (at most the batches in flight when the switch flipped)"
    );
    assert!(h_auto > h_deg, "the healthy store keeps being written");

    // Back in auto: the replay job drains the retry topic.
    let report = run_replay(
        &cfg,
        true,
        Some(switches),
        &Arc::new(RunControl::default()),
        None,
    )
    .expect("replay");
    assert!(
        report.applied >= diverted,
        "replayed {} of {diverted}",
        report.applied
    );

    let expected = compute(&spec, &parts);
    let redis = RedisSinkFactory::new(&redis_url(), &prefix, Duration::ZERO, Duration::ZERO)
        .expect("redis");
    let mysql = MySqlSinkFactory::new(
        &format!("{}/{database}", mysql_url()),
        Arc::new(spec.clone()),
        "fp_",
    )
    .expect("mysql");
    let in_redis = by_id(redis.load_windows(&spec).expect("redis rows"));
    let in_mysql = by_id(mysql.load_windows().expect("mysql rows"));
    assert_eq!(in_redis.len(), expected.windows.len());
    assert!(in_redis == expected.windows, "Redis equals the reference");
    assert_eq!(in_mysql.len(), expected.windows.len());
    assert!(in_mysql == expected.windows, "MySQL equals the reference");
    drop_database(&database);
    delete_redis_prefix(&prefix);
}

#[test]
fn mysql_degraded_mid_stream_is_replayed_to_the_reference() {
    drill("mysql");
}

#[test]
fn redis_degraded_mid_stream_is_replayed_to_the_reference() {
    drill("redis");
}
