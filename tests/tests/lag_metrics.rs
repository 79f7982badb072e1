//! A running worker exports its consumer lag per source partition, the
//! retry backlog and each store's breaker state on `/metrics`, as the
//! broker reports them, and `promtool check metrics` finds nothing to say
//! about the whole page.

use std::sync::Arc;
use std::time::{Duration, Instant};

use footprint::config::Config;
use footprint::process::Process;
use footprint::run::{RunOptions, run};
use footprint_connectors::admin::Admin;
use footprint_connectors::producer::EventProducer;
use footprint_dataflows::clickstream::GenConfig;
use footprint_tests::{brokers, http, kafka, mysql_url, preload, promtool, redis_url, unique};

#[test]
fn lag_backlog_and_breaker_state_are_exported() {
    let topic = unique("lag");
    let retry = unique("lag-retry");
    let database = unique("fp_lag").replace('-', "_");
    let dir = tempfile::tempdir().expect("tempdir");
    let gen_cfg = GenConfig {
        seed: 8,
        partitions: 3,
        users: 20,
        items: 5,
        ..GenConfig::default()
    };
    preload(&topic, &gen_cfg, 1_500).expect("preload");
    // Records waiting in the retry topic that no replay job has applied,
    // one record batch each.
    let admin = Admin::new(&kafka()).expect("admin");
    admin.ensure_topic(&retry, 1, 1).expect("retry topic");
    let producer = EventProducer::new(&kafka()).expect("producer");
    for i in 0..5u8 {
        producer
            .send(&retry, 0, &[i], b"{}")
            .expect("queue a retry record");
        producer.flush(Duration::from_secs(10)).expect("flush");
    }
    let toml = format!(
        r#"
[source]
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "{topic}-group"

[retry]
topic = "{retry}"
journal = "{journal}"

[admin]
listen = "127.0.0.1:0"
control_topic = "{topic}-control"

[[aggregate]]
name = "events_1m"
group_by = ["event"]
window = {{ tumbling = "1m" }}
measures = ["count"]
early_updates = "100ms"
sinks = ["redis", "mysql"]

[sinks.redis]
url = "{redis}"
prefix = "{topic}"

[sinks.mysql]
url = "{mysql}/{database}"
"#,
        brokers = brokers(),
        journal = dir.path().join("retry.journal").display(),
        redis = redis_url(),
        mysql = mysql_url(),
    );
    let cfg = Config::from_layers(Some(&toml), Vec::<(String, String)>::new()).expect("config");
    let process = Process::new(&cfg).expect("process");
    let admin_addr = Arc::new(std::sync::OnceLock::new());
    let opts = RunOptions {
        serve_admin: true,
        admin_addr: Some(Arc::clone(&admin_addr)),
        progress: None,
        ..RunOptions::default()
    };
    let control = Arc::clone(&opts.control);
    let worker = {
        let process = Arc::clone(&process);
        std::thread::spawn(move || run(&cfg, opts, &process))
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    let scrape = loop {
        assert!(
            Instant::now() < deadline,
            "the metrics never showed up; last scrape:\n{seen}"
        );
        std::thread::sleep(Duration::from_millis(200));
        let Some(addr) = admin_addr.get() else {
            continue;
        };
        let (status, body) = http(*addr, "GET", "/metrics", "").expect("GET /metrics");
        assert_eq!(status, 200);
        promtool::check_metrics(&body).expect("promtool finds the page clean");
        seen = body.clone();
        let lines = body.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
        // Wait for every series the assertions below read: one lag per
        // partition, the backlog, and each sink's breaker.
        let has =
            |name: &str, label: Option<(&str, &str)>| !gauges(&scrape, name, label).is_empty();
        if ["0", "1", "2"]
            .iter()
            .all(|p| has("footprint_consumer_lag_messages", Some(("partition", p))))
            && has("footprint_retry_backlog_records", None)
            && ["redis", "mysql"]
                .iter()
                .all(|sink| has("footprint_sink_breaker_state", Some(("sink", sink))))
        {
            break scrape;
        }
    };
    control.request_stop();
    worker
        .join()
        .expect("worker thread")
        .expect("the worker stops cleanly");

    let gauge = |name: &str, label: Option<(&str, &str)>| gauges(&scrape, name, label);
    // The stream spans less than a minute of event time: no window closes,
    // nothing is committed, and each partition's lag is its end offset as
    // the broker reports it (tansu 0.6 reports the last batch's base offset
    // plus one, so this can be below the messages it holds).
    for p in 0..3 {
        let lag = gauge(
            "footprint_consumer_lag_messages",
            Some(("partition", &p.to_string())),
        );
        let (_, end) = admin.watermarks(&topic, p).expect("end offset");
        assert!(end > 0, "partition {p} holds messages");
        assert_eq!(
            lag,
            vec![end as f64],
            "partition {p}: the lag is its end offset"
        );
    }
    let backlog = gauge("footprint_retry_backlog_records", None);
    let (_, retry_end) = admin.watermarks(&retry, 0).expect("end offset");
    println!(
        "lag metrics: retry backlog {backlog:?} with 5 records waiting (end offset {retry_end})"
    );
    assert!(retry_end > 0, "the retry topic holds records");
    assert_eq!(
        backlog,
        vec![retry_end as f64],
        "no replay job committed: the backlog is the retry topic's end offset"
    );
    for sink in ["redis", "mysql"] {
        assert_eq!(
            gauge("footprint_sink_breaker_state", Some(("sink", sink))),
            vec![0.0],
            "{sink}'s breaker is closed"
        );
    }
    footprint_tests::drop_database(&database);
    footprint_tests::delete_redis_prefix(&topic);
}

/// The values of the gauge `name` in `scrape`, of the samples with `label`
/// if one is given.
fn gauges(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> Vec<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) => v,
            _ => f64::NAN,
        })
        .collect()
}
