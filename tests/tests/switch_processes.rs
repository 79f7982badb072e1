//! Switch propagation across processes: two `footprint worker` processes and
//! a `footprint replay` process all see a toggle made through one worker's
//! admin API within a second, and after all of them are killed and
//! restarted, they start in the persisted mode.

use std::path::Path;
use std::time::{Duration, Instant};

use footprint_dataflows::clickstream::GenConfig;
use footprint_tests::{
    Running, brokers, delete_redis_prefix, http, preload, redis_url, spawn_footprint, unique,
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

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

#[test]
fn two_workers_and_the_replay_job_see_a_toggle_within_a_second_and_keep_it_across_restarts() {
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
            wait_until("the workers' admin APIs", Duration::from_secs(90), || {
                mode_of(port).is_some()
            });
        }
        let replay_log = dir.path().join(format!("{round}-replay.log"));
        procs
            .0
            .push(spawn_footprint(&configs[2], &["replay"], &replay_log).expect("start replay"));
        wait_until(
            "the replay job to read the control topic",
            Duration::from_secs(60),
            || log_has(&replay_log, &["switch at start-up", "redis"]),
        );
        (procs, replay_log)
    };

    let (procs, replay_log) = start_all("first");
    assert_eq!(mode_of(ports[1]).as_deref(), Some("auto"));
    let addr = format!("127.0.0.1:{}", ports[0]).parse().expect("addr");
    let (status, body) =
        http(addr, "PUT", "/switches/redis", r#"{"mode":"degraded"}"#).expect("PUT");
    assert_eq!(status, 200, "{body}");
    let toggled = Instant::now();
    wait_until("worker 1", Duration::from_secs(10), || {
        mode_of(ports[1]).as_deref() == Some("degraded")
    });
    wait_until("the replay job", Duration::from_secs(10), || {
        log_has(&replay_log, &["switch changed", "redis", "degraded"])
    });
    assert_eq!(mode_of(ports[0]).as_deref(), Some("degraded"));
    let took = toggled.elapsed();
    println!(
        "toggle seen by both workers and the replay job after {} ms",
        took.as_millis()
    );
    assert!(took <= Duration::from_secs(1), "took {took:?}");

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
