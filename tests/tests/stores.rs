//! The results in Redis and in MySQL equal the sequential reference for a
//! generated stream read through the real broker.

use footprint::config::Config;
use footprint_dataflows::clickstream::GenConfig;
use footprint_dataflows::reference::compute;
use footprint_tests::{Stores, brokers, mysql_url, preload, redis_url, run_to_end, unique};

#[test]
fn results_in_redis_and_mysql_equal_the_reference() {
    let topic = unique("stores");
    let database = unique("fp_stores").replace('-', "_");
    let prefix = unique("fpstores");
    let dir = tempfile::tempdir().expect("tempdir");
    let gen_cfg = GenConfig {
        seed: 5,
        partitions: 4,
        users: 300,
        items: 40,
        events_per_sec: 40,
        late: 0.005,
        late_by_ms: 20 * 60_000,
        bad: 0.01,
        ..GenConfig::default()
    };
    let (parts, _) = preload(&topic, &gen_cfg, 15_000).expect("preload");
    let toml = format!(
        r#"
[source]
brokers = "{brokers}"
topics = ["{topic}"]

[watermark]
max_out_of_order = "2s"

[[aggregate]]
name = "item_activity_1m"
group_by = ["app_id", "event", "item_id"]
window = {{ tumbling = "1m" }}
measures = ["count", "distinct(user_id)", "sum(value)"]
allowed_lateness = "30s"
early_updates = "10ms"
sinks = ["redis", "mysql"]

[[aggregate]]
name = "country_events_10m"
group_by = ["props.country", "event"]
window = {{ sliding = "10m", every = "1m" }}
measures = ["count", "distinct(user_id)"]
sinks = ["redis", "mysql"]

[recent]
keep = 5
ttl = "7d"
updates = "10ms"
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
        file = dir.path().join("r.jsonl").display(),
        redis = redis_url(),
        mysql = mysql_url(),
    );
    let cfg = Config::from_layers(Some(&toml), Vec::<(String, String)>::new()).expect("config");
    let spec = cfg.spec().expect("spec");
    let (report, _) = run_to_end(&cfg, 2).expect("worker run");
    assert_eq!(report.events_in, 15_000);
    let expected = compute(&spec, &parts);
    assert!(!expected.windows.is_empty() && !expected.late.is_empty());

    let stored = Stores::open(&spec, &prefix, &database)
        .and_then(|s| s.load())
        .expect("load the stores");
    assert_eq!(stored.redis_windows.len(), expected.windows.len());
    assert!(
        stored.redis_windows == expected.windows,
        "Redis differs from the reference"
    );
    assert!(
        stored.redis_recent == expected.recent,
        "Redis recent activity differs"
    );
    assert_eq!(stored.mysql_windows.len(), expected.windows.len());
    assert!(
        stored.mysql_windows == expected.windows,
        "MySQL differs from the reference"
    );
    assert!(
        stored.mysql_recent == expected.recent,
        "MySQL recent activity differs"
    );

    footprint_tests::drop_database(&database);
    footprint_tests::delete_redis_prefix(&prefix);
}
