//! Switch propagation across processes: two `footprint worker` processes and
//! a `footprint replay` process all see a toggle made through one worker's
//! admin API, and after all of them are killed and restarted, they start in
//! the persisted mode. How long the toggle took is printed (`FIGURE …`),
//! not asserted.

use std::path::Path;
use std::time::{Duration, Instant};

use footprint_dataflows::clickstream::GenConfig;
use footprint_tests::{
    Running, brokers, delete_redis_prefix, http, preload, redis_url, spawn_footprint, unique,
    wait_until,
};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The processes of one round; each is killed when dropped.
struct Procs(Vec<Running>);

fn mode_of(port: u16) -> Option<String> {
    let addr = format!("127.0.0.1:{port}").parse().ok()?;
    let (status, body) = http(addr, "GET", "/switches", "").ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["redis"].as_str().map(str::to_owned)
}

fn log_has(log: &Path, needles: &[&str]) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .any(|l| needles.iter().all(|n| l.contains(n)))
}

#[test]
fn two_workers_and_the_replay_job_see_a_toggle_and_keep_it_across_restarts() {
    let topic = unique("procs");
    let prefix = unique("fpprocs");
    let dir = tempfile::tempdir().expect("tempdir");
    preload(
        &topic,
        &GenConfig {
            partitions: 2,
            ..GenConfig::default()
        },
        2_000,
    )
    .expect("preload");
    let control = unique("control");
    let retry = unique("retry");
    let ports = [free_port(), free_port()];
    let config = |i: usize, port: u16| {
        let path = dir.path().join(format!("p{i}.toml"));
        let text = format!(
            r#"
[source]
brokers = "{brokers}"
topics = ["{topic}"]

[retry]
topic = "{retry}"
journal = "{journal}"

[admin]
listen = "127.0.0.1:{port}"
control_topic = "{control}"

[[aggregate]]
name = "events_1m"
group_by = ["event"]
window = {{ tumbling = "1m" }}
measures = ["count"]
sinks = ["redis"]

[recent]
keep = 5
ttl = "1d"
updates = "1s"
sinks = ["redis"]

[sinks.file]
path = "{file}"

[sinks.redis]
url = "{redis}"
prefix = "{prefix}"
"#,
            brokers = brokers(),
            journal = dir.path().join(format!("p{i}.journal")).display(),
            file = dir.path().join(format!("p{i}.jsonl")).display(),
            redis = redis_url(),
        );
        std::fs::write(&path, text).expect("config");
        path
    };
    let configs = [
        config(0, ports[0]),
        config(1, ports[1]),
        config(2, free_port()),
    ];
    let start_all = |round: &str| {
        let mut procs = Procs(Vec::new());
        for (i, config) in configs.iter().take(2).enumerate() {
            let log = dir.path().join(format!("{round}-worker{i}.log"));
            procs
                .0
                .push(spawn_footprint(config, &["worker"], &log).expect("start worker"));
        }
        for port in ports {
            wait_until(Duration::from_secs(90), "the workers' admin APIs", || {
                mode_of(port).is_some()
            })
            .expect("the workers serve their admin API");
        }
        let replay_log = dir.path().join(format!("{round}-replay.log"));
        procs
            .0
            .push(spawn_footprint(&configs[2], &["replay"], &replay_log).expect("start replay"));
        wait_until(
            Duration::from_secs(60),
            "the replay job to read the control topic",
            || log_has(&replay_log, &["switch at start-up", "redis"]),
        )
        .expect("the replay job follows the control topic");
        (procs, replay_log)
    };

    let (procs, replay_log) = start_all("first");
    assert_eq!(mode_of(ports[1]).as_deref(), Some("auto"));
    let addr = format!("127.0.0.1:{}", ports[0]).parse().expect("addr");
    let (status, body) =
        http(addr, "PUT", "/switches/redis", r#"{"mode":"degraded"}"#).expect("PUT");
    assert_eq!(status, 200, "{body}");
    let toggled = Instant::now();
    wait_until(Duration::from_secs(30), "worker 1", || {
        mode_of(ports[1]).as_deref() == Some("degraded")
    })
    .expect("worker 1 sees the toggle");
    wait_until(Duration::from_secs(30), "the replay job", || {
        log_has(&replay_log, &["switch changed", "redis", "degraded"])
    })
    .expect("the replay job sees the toggle");
    assert_eq!(mode_of(ports[0]).as_deref(), Some("degraded"));
    println!(
        "FIGURE switch propagation across processes: seen by both workers and the replay job after {} ms",
        toggled.elapsed().as_millis()
    );

    // Kill everything (SIGKILL) and start it again: the mode is still degraded.
    drop(procs);
    let (_procs, replay_log) = start_all("second");
    assert_eq!(mode_of(ports[0]).as_deref(), Some("degraded"));
    assert_eq!(mode_of(ports[1]).as_deref(), Some("degraded"));
    assert!(
        log_has(&replay_log, &["switch at start-up", "redis", "degraded"]),
        "the replay job starts degraded"
    );
    delete_redis_prefix(&prefix);
}
