//! Drill: the broker restarts mid-run (tansu with its file store, killed
//! with SIGKILL and started again on the same port) while a live stream is
//! produced and the worker writes to Redis and MySQL.
//!
//! The worker keeps running through the outage (reads, checkpoint commits
//! and the control topic fail and are retried), and resumes once the broker
//! is back. The stores are then compared with the sequential reference over
//! what the broker holds (read back after the drill): nothing lost, nothing
//! counted twice. Recovery is the time from the broker's return to the
//! worker's first commit past where it was before the outage.

use std::time::{Duration, Instant};

use footprint_dataflows::clickstream::GenConfig;
use footprint_dataflows::reference::compute;
use footprint_tests::drill::{Figures, Size};
use footprint_tests::{
    OwnBroker, Scenario, committed_total_at, held_parts, produce_live, run_footprint_ok,
    spawn_footprint_env, wait_until,
};

const PARTITIONS: i32 = 4;

#[test]
fn a_broker_restart_mid_run_loses_nothing_and_counts_nothing_twice() {
    let size = Size::from_env();
    let outage = Duration::from_secs(size.pick(3, 20));
    let events: u64 = size.pick(24_000, 90_000);
    let mut s = Scenario::new("drill-broker").expect("scenario");
    let mut broker = OwnBroker::start(&s.dir).expect("a broker of our own");
    s.brokers = broker.addr.clone();
    let settings = broker.settings();
    let gen_cfg = GenConfig {
        seed: 29,
        partitions: PARTITIONS as u32,
        users: 300,
        items: 30,
        events_per_sec: 10,
        disorder: 0.05,
        max_disorder_ms: 3_000,
        late: 0.01,
        late_by_ms: 70_000,
        bad: 0.01,
        ..GenConfig::default()
    };
    let producer = produce_live(&settings, &s.topic, &gen_cfg, events, 600).expect("producer");
    let (config, cfg) = s
        .write_config(
            "footprint.toml",
            &s.toml("batch = 64\ncommit_interval = \"100ms\"", ""),
        )
        .expect("config");
    let addr = broker.addr.clone();
    let env = [("FOOTPRINT_BROKERS", addr.as_str())];
    let committed = || committed_total_at(&settings, &s.group, &s.topic, PARTITIONS);
    let log = s.dir.join("worker.log");
    let mut worker = spawn_footprint_env(&config, &["worker"], &log, &env).expect("start");
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed().unwrap_or(0) < 3_000 {
        assert!(
            Instant::now() < deadline,
            "no commits; see {}",
            s.dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The broker goes away mid-run, and comes back.
    let at_kill = committed().expect("the commits before the outage");
    broker.kill().expect("kill -9 the broker");
    std::thread::sleep(outage);
    assert!(
        worker.try_wait().expect("poll").is_none(),
        "the worker keeps running while the broker is down; see {}",
        log.display()
    );
    broker.restart().expect("restart the broker");
    let back = Instant::now();
    // What the group had committed when the broker came back: read from the
    // restarted broker, however long it takes to answer.
    let mut before = None;
    wait_until(
        Duration::from_secs(60),
        "the restarted broker's commits",
        || {
            before = committed().ok();
            before.is_some()
        },
    )
    .expect("the restarted broker answers");
    let before = before.unwrap_or(i64::MAX);
    assert!(
        before >= at_kill,
        "the broker kept the commits made before it was killed ({before} < {at_kill})"
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    while committed().unwrap_or(0) <= before {
        assert!(
            worker.try_wait().expect("poll").is_none(),
            "the worker exited; see {}",
            log.display()
        );
        assert!(
            Instant::now() < deadline,
            "no progress after the broker came back; see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let recovery = back.elapsed().as_secs_f64();
    producer
        .join()
        .expect("producer thread")
        .expect("the stream was produced through the outage");
    worker.kill().expect("stop the streaming worker");
    let _ = worker.wait();
    let last_log = s.dir.join("last.log");
    run_footprint_ok(
        &config,
        &["worker", "--until-end"],
        &last_log,
        &env,
        Duration::from_secs(600),
    )
    .expect("the last run");

    // The reference reads what the broker holds.
    let parts = held_parts(&settings, &s.topic, PARTITIONS as usize).expect("read the topic back");
    let held_count: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let spec = cfg.spec().expect("spec");
    let expected = compute(&spec, &parts);
    let stored = s.stored(&spec).expect("load the stores");
    let mut figures = Figures::new("broker restart", held_count, &expected, &stored)
        .with("outage_s", outage.as_secs())
        .with("produced", events)
        .with("held by the broker", held_count);
    figures.recovery_s = vec![recovery];
    figures.report();
    assert_eq!(
        held_count, events,
        "the broker holds every message produced, once"
    );
    figures.assert_exact();
    drop(broker);
    s.clean();
}
