//! Drill: the broker crashes while every producer is busy, and comes back on
//! the same store.
//!
//! tansu with its SQLite store (the durable default) is killed with SIGKILL
//! while:
//! - a live stream of events is produced (the idempotent events producer);
//! - the worker writes early updates with MySQL degraded over the admin API,
//!   so its diverted rows go to the retry topic;
//! - bad and late events go to the dead-letter and late topics;
//! - an operator's switch change is on its way to the control topic.
//!
//! While the broker is down, `/health` must turn unhealthy and name it,
//! `footprint replay --once` must exit non-zero and say why, and the switch
//! change must be refused with the reason once its producer gives it up
//! (the outage lasts at least that long, so records expire in the
//! producers, as they do in a long outage). The broker then restarts on the
//! same port and store. The worker must carry on by
//! itself (recovery is the time from the restart to its first commit past
//! where it stood), the switch changes made after the restart must take
//! effect, and the replay job must drain the retry topic. At the end:
//! - the broker holds every event produced, once;
//! - both stores equal the sequential reference over what the broker holds;
//! - every bad event is in the dead-letter topic and every late event in the
//!   late topic (at least once: a retry can duplicate them).
//!
//! `FOOTPRINT_DRILL_SIZE=full` produces 120,000 events and keeps the broker
//! down for 15 s; the CI size, 24,000 events and 6 s.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use footprint_dataflows::clickstream::GenConfig;
use footprint_dataflows::reference::compute;
use footprint_tests::drill::{Figures, Size};
use footprint_tests::{
    OwnBroker, Scenario, admin_addr_from_log, committed_total_at, get_json, get_json_status,
    get_text, held_parts, http, produce_live, read_all_from, run_footprint_ok, spawn_footprint_env,
    wait_exit, wait_until,
};

const PARTITIONS: i32 = 4;

/// How long a step may take before the drill gives up.
const STEP: Duration = Duration::from_secs(120);

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = get_text(addr, "/metrics").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Rows the worker diverted from its stores, as `/status` counts them.
fn diverted(addr: SocketAddr) -> u64 {
    let status = get_json(addr, "/status").unwrap_or_default();
    ["mysql", "redis"]
        .iter()
        .map(|s| status["diverted"][s].as_u64().unwrap_or(0))
        .sum()
}

fn switch(addr: SocketAddr, sink: &str, mode: &str) -> (u16, String) {
    http(
        addr,
        "PUT",
        &format!("/switches/{sink}"),
        &format!(r#"{{"mode":"{mode}"}}"#),
    )
    .unwrap_or((0, "no answer".into()))
}

/// How many times each source offset (`partition`, `offset`) of `topic` is in
/// the side topic `side` (from the `footprint.source` header).
fn side_sources(
    settings: &footprint_connectors::client::KafkaSettings,
    side: &str,
) -> BTreeMap<(usize, usize), usize> {
    let mut seen = BTreeMap::new();
    for m in read_all_from(settings, side).expect("read the side topic") {
        let source = m.headers.get("footprint.source").expect("source header");
        let mut it = source.rsplitn(3, '/');
        let offset: usize = it.next().and_then(|o| o.parse().ok()).expect("offset");
        let partition: usize = it.next().and_then(|p| p.parse().ok()).expect("partition");
        *seen.entry((partition, offset)).or_default() += 1;
    }
    seen
}

#[test]
fn a_broker_crash_while_every_producer_is_busy_loses_nothing() {
    let size = Size::from_env();
    let outage = Duration::from_secs(size.pick(6, 15));
    let events: u64 = size.pick(24_000, 120_000);
    let rate: u64 = size.pick(1_500, 3_000);
    let mut s = Scenario::new("drill-crash").expect("scenario");
    let mut broker = OwnBroker::start(&s.dir).expect("a broker of our own");
    s.brokers = broker.addr.clone();
    let settings = broker.settings();
    let gen_cfg = GenConfig {
        seed: 31,
        partitions: PARTITIONS as u32,
        users: 300,
        items: 30,
        events_per_sec: 20,
        disorder: 0.05,
        max_disorder_ms: 2_000,
        late: 0.01,
        late_by_ms: 70_000,
        bad: 0.01,
        ..GenConfig::default()
    };
    let (config, cfg) = s
        .write_config(
            "footprint.toml",
            &s.toml(
                "batch = 64\ncommit_interval = \"100ms\"",
                "[health]\nbroker_timeout = \"2s\"",
            ),
        )
        .expect("config");
    // Retry records not acknowledged within 3 s go to the journal.
    let addr = broker.addr.clone();
    let env = [
        ("FOOTPRINT_BROKERS", addr.as_str()),
        ("FOOTPRINT__RETRY__ACK_TIMEOUT", "3s"),
    ];
    let committed = || committed_total_at(&settings, &s.group, &s.topic, PARTITIONS);
    let log = s.dir.join("worker.log");
    let producer = produce_live(&settings, &s.topic, &gen_cfg, events, rate).expect("producer");
    let mut worker = spawn_footprint_env(&config, &["worker"], &log, &env).expect("start");
    let admin = admin_addr_from_log(&log).expect("the worker's admin API");

    // MySQL degraded: its rows go to the retry topic from now on.
    let (code, body) = switch(admin, "mysql", "degraded");
    assert_eq!(code, 200, "degrade MySQL: {body}");
    wait_until(STEP, "rows diverted to the retry topic", || {
        diverted(admin) > 0 && committed().unwrap_or(0) >= (events / 8) as i64
    })
    .expect("the worker diverts and commits");

    // The crash, with a switch change on its way to the control topic.
    let at_kill = committed().expect("the commits before the crash");
    let change = std::thread::spawn(move || switch(admin, "redis", "degraded"));
    broker.kill().expect("kill -9 the broker");
    let killed = Instant::now();
    // The operator's view: /health names the broker.
    let mut down = serde_json::Value::Null;
    wait_until(STEP, "/health turns unhealthy", || {
        match get_json_status(admin, "/health") {
            Ok((503, h)) => {
                down = h;
                true
            }
            _ => false,
        }
    })
    .expect("/health says the broker is gone");
    assert_eq!(down["status"], "unhealthy");
    assert_eq!(down["broker"]["brokers"], addr.as_str());
    assert_eq!(down["broker"]["state"], "unreachable");
    // The replay job cannot run, and says why.
    let replay_down_log = s.dir.join("replay-down.log");
    let mut replay_down =
        spawn_footprint_env(&config, &["replay", "--once"], &replay_down_log, &env)
            .expect("start the replay job");
    let status = wait_exit(&mut replay_down, STEP, "replay without a broker").expect("exit");
    let said = std::fs::read_to_string(&replay_down_log).unwrap_or_default();
    assert!(!status.success(), "replay --once without a broker");
    assert!(
        said.contains(&addr) && said.contains("did not answer"),
        "replay --once says the broker did not answer: {said}"
    );
    // The switch change cannot reach the control topic while the broker is
    // down: it is refused with the reason once the producer gives it up
    // (so it expired in the producer, as records do in a long outage), and
    // the switch stays as it was.
    let (code, body) = change.join().expect("the switch change");
    assert!(
        code == 503 && body.contains("did not acknowledge"),
        "a switch change while the broker is down: {code} {body}"
    );
    let switches = get_json(admin, "/switches").expect("switches");
    assert_eq!(switches["redis"], "auto", "{switches}");
    if let Some(rest) = outage.checked_sub(killed.elapsed()) {
        std::thread::sleep(rest);
    }
    assert!(
        worker.try_wait().expect("poll").is_none(),
        "the worker keeps running while the broker is down; see {}",
        log.display()
    );
    let outage_s = killed.elapsed().as_secs_f64();
    broker
        .restart()
        .expect("restart the broker on the same store");
    let back = Instant::now();

    // The worker carries on by itself.
    let mut before = None;
    wait_until(STEP, "the restarted broker's commits", || {
        before = committed().ok();
        before.is_some()
    })
    .expect("the restarted broker answers");
    let before = before.unwrap_or(i64::MAX);
    assert!(before >= at_kill, "commits kept ({before} < {at_kill})");
    wait_until(STEP, "a commit past the one before the crash", || {
        committed().unwrap_or(0) > before
    })
    .expect("the worker commits again");
    let recovery = back.elapsed().as_secs_f64();
    wait_until(STEP, "/health turns healthy", || {
        get_json_status(admin, "/health").is_ok_and(|(code, h)| code == 200 && h["status"] == "ok")
    })
    .expect("/health says the broker is back");
    // Switch changes after the crash take effect: the producer that gave
    // one up during the outage still works.
    for (sink, mode) in [("redis", "degraded"), ("mysql", "auto"), ("redis", "auto")] {
        let (code, body) = switch(admin, sink, mode);
        assert_eq!(code, 200, "{sink} {mode} after the crash: {body}");
    }
    producer
        .join()
        .expect("producer thread")
        .expect("every event was acknowledged through the crash");
    let journaled = metric(admin, "footprint_journaled_records_total");
    let diverted = diverted(admin);
    worker.kill().expect("stop the streaming worker");
    let _ = worker.wait();

    // A bounded run emits the last windows; the replay job drains the retry topic.
    let last_log = s.dir.join("last.log");
    let ten_minutes = Duration::from_secs(600);
    run_footprint_ok(
        &config,
        &["worker", "--until-end"],
        &last_log,
        &env,
        ten_minutes,
    )
    .expect("the last run");
    let replay_log = s.dir.join("replay.log");
    run_footprint_ok(
        &config,
        &["replay", "--once"],
        &replay_log,
        &env,
        ten_minutes,
    )
    .expect("the replay job");

    // The comparison, over what the broker holds.
    let parts = held_parts(&settings, &s.topic, PARTITIONS as usize).expect("read the topic back");
    let held: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let spec = cfg.spec().expect("spec");
    let expected = compute(&spec, &parts);
    let dead = side_sources(&settings, &format!("{}.dlq", s.topic));
    let late = side_sources(&settings, &format!("{}.late", s.topic));
    let want_dead: BTreeSet<(usize, usize)> = expected.bad.iter().map(|b| (b.0, b.1)).collect();
    let want_late: BTreeSet<(usize, usize)> = expected
        .late
        .iter()
        .map(|l| (l.partition, l.index))
        .collect();
    let stored = s.stored(&spec).expect("load the stores");
    let mut figures = Figures::new("broker crash (producers busy)", held, &expected, &stored)
        .with("outage_s", format!("{outage_s:.1}"))
        .with("rows diverted", diverted)
        .with("rows journaled", journaled)
        .with("dead letters", dead.values().sum::<usize>())
        .with("late events", late.values().sum::<usize>())
        .with(
            "side records lost",
            want_dead.iter().filter(|k| !dead.contains_key(k)).count()
                + want_late.iter().filter(|k| !late.contains_key(k)).count(),
        );
    figures.recovery_s = vec![recovery];
    figures.report();
    assert_eq!(held, events, "the broker holds every event produced, once");
    assert_eq!(
        dead.keys().copied().collect::<BTreeSet<_>>(),
        want_dead,
        "every bad event is in the dead-letter topic"
    );
    assert_eq!(
        late.keys().copied().collect::<BTreeSet<_>>(),
        want_late,
        "every late event is in the late topic"
    );
    assert!(!want_dead.is_empty() && !want_late.is_empty());
    assert!(diverted > 0, "rows went to the retry topic");
    figures.assert_exact();
    drop(broker);
    s.clean();
}
