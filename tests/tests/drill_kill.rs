//! Drill: `kill -9` the worker at random points of a streaming run into
//! Redis and MySQL, while a live stream is produced, and restart it each
//! time (`docs/design.md#offsets-and-recovery`).
//!
//! The kill points are drawn from a seeded generator (`FOOTPRINT_DRILL_SEED`,
//! printed): some are random moments once the restarted worker has
//! recovered (its commits moved past where it resumed), the others are
//! crash points (see `footprint_dataflows::crashpoint`) reached a random
//! number of times: between writing results and committing them, between
//! two sinks of one batch, just before a commit, and between the checkpoint
//! topic and the consumer group. The worker holds there and is killed with
//! SIGKILL. Every armed crash point must be reached, and every worker killed
//! at a random moment must have recovered first. A last run reads to the
//! end; both stores then equal the sequential reference.
//!
//! Recovery is the time from a restart to the first commit past the
//! checkpoint it resumed from: the open windows are rebuilt and the worker
//! makes progress again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use footprint_dataflows::clickstream::{GenConfig, SplitMix64};
use footprint_dataflows::crashpoint;
use footprint_dataflows::reference::compute;
use footprint_tests::drill::{Figures, Size};
use footprint_tests::{
    Scenario, committed_total, generated, produce_live_until, run_footprint_ok, spawn_footprint_env,
};

const PARTITIONS: i32 = 4;

#[test]
fn kill_9_at_random_points_loses_nothing_and_counts_nothing_twice() {
    let size = Size::from_env();
    let kills = size.pick(5, 20);
    // A live stream of 600 messages a second, one minute of event time a
    // second: at least this many, and on until the last kill.
    let events: u64 = size.pick(36_000, 120_000);
    let rate = 600;
    let seed: u64 = std::env::var("FOOTPRINT_DRILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(99);
    let s = Scenario::new("drill-kill").expect("scenario");
    let gen_cfg = GenConfig {
        seed: 17,
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
    // The stream goes on until the last kill, so that every kill lands
    // while data flows: a round lasts as long as its crash point needs
    // commits (about one a second, up to 15), which 5 rounds can make
    // longer than the 60 s of `events`. At most three times as many.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = produce_live_until(
        &footprint_tests::kafka(),
        &s.topic,
        &gen_cfg,
        events..=3 * events,
        rate,
        Arc::clone(&stop),
    )
    .expect("producer");
    let (config, cfg) = s
        .write_config(
            "footprint.toml",
            &s.toml("batch = 16\ncommit_interval = \"100ms\"", ""),
        )
        .expect("config");
    let brokers = footprint_tests::brokers();
    let committed = || committed_total(&s.group, &s.topic, PARTITIONS).expect("commits");

    let mut rng = SplitMix64::new(seed);
    let mut recovery = Vec::new();
    let mut kinds: std::collections::BTreeMap<&str, u32> = Default::default();
    let started = Instant::now();
    for round in 0..kills {
        let point = match rng.below(5) {
            0 => None,
            i => Some(crashpoint::ALL[i as usize - 1]),
        };
        let hits = match point {
            Some("commit.before" | "commit.between") => 1 + rng.below(15),
            Some(_) => 1 + rng.below(100),
            None => 0,
        };
        let armed = point.map(|p| format!("{p}@{hits}"));
        let mut env = vec![("FOOTPRINT_BROKERS", brokers.as_str())];
        if let Some(a) = &armed {
            env.push(("FOOTPRINT_CRASH_POINT", a.as_str()));
        }
        let log = s.dir.join(format!("run{round}.log"));
        let before = committed();
        // A random moment: during the rebuild, or after it.
        let moment = Duration::from_millis(200 + rng.below(6_000));
        let mut child = spawn_footprint_env(&config, &["worker"], &log, &env).expect("start");
        let restarted = Instant::now();
        let mut recovered: Option<Instant> = None;
        let kind = loop {
            if recovered.is_none() && committed() > before {
                recovered = Some(Instant::now());
                recovery.push(restarted.elapsed().as_secs_f64());
            }
            assert!(
                child.try_wait().expect("poll").is_none(),
                "the worker exited; see {}",
                log.display()
            );
            match point {
                Some(p) => {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if text.contains(&format!("crash point {p} reached")) {
                        break p;
                    }
                }
                None if recovered.is_some_and(|at| at.elapsed() >= moment) => {
                    break "random moment";
                }
                None => {}
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(120),
                "round {}: {} within 120 s; see {}",
                round + 1,
                match &armed {
                    Some(a) => format!("crash point {a} was not reached"),
                    None => "the restarted worker did not recover".to_owned(),
                },
                log.display()
            );
            std::thread::sleep(Duration::from_millis(10 + rng.below(40)));
        };
        child.kill().expect("kill -9");
        let _ = child.wait();
        *kinds.entry(kind).or_default() += 1;
        println!(
            "kill {}: {kind}{} after {:.1} s, {} committed",
            round + 1,
            armed.map(|a| format!(" ({a})")).unwrap_or_default(),
            restarted.elapsed().as_secs_f64(),
            committed()
        );
    }
    stop.store(true, Ordering::SeqCst);
    let events = producer
        .join()
        .expect("producer thread")
        .expect("the stream was produced");
    let log = s.dir.join("last.log");
    let env = [("FOOTPRINT_BROKERS", brokers.as_str())];
    run_footprint_ok(
        &config,
        &["worker", "--until-end"],
        &log,
        &env,
        Duration::from_secs(600),
    )
    .expect("the last run");

    let spec = cfg.spec().expect("spec");
    let expected = compute(&spec, &generated(&gen_cfg, events));
    let stored = s.stored(&spec).expect("load the stores");
    let mut figures = Figures::new("kill -9", events, &expected, &stored)
        .with("kills", kills)
        .with("seed", seed)
        .with("seconds", format!("{:.0}", started.elapsed().as_secs_f64()));
    for (kind, n) in &kinds {
        figures = figures.with(kind, n);
    }
    figures.recovery_s = recovery;
    figures.report();
    figures.assert_exact();
    s.clean();
}
