//! Bounded backfill, skipping to the latest offsets, and out-of-range
//! checkpoints (`docs/design.md#offsets-and-recovery`), through the `footprint` binary against the real
//! broker, Redis and MariaDB.

use std::time::{Duration, Instant};

use footprint_connectors::admin::Admin;
use footprint_connectors::checkpoints;
use footprint_dataflows::clickstream::GenConfig;
use footprint_dataflows::reference::compute;
use footprint_tests::{
    Running, Scenario, admin_addr_from_log, committed_total, differences, dump_mysql, dump_redis,
    generated, get_json, kafka, preload, produce_slice, run_to_end, spawn_footprint, wait_exit,
};

const PARTITIONS: i32 = 4;

fn clickstream(seed: u64) -> GenConfig {
    GenConfig {
        seed,
        partitions: PARTITIONS as u32,
        users: 400,
        items: 30,
        events_per_sec: 40,
        disorder: 0.05,
        max_disorder_ms: 3_000,
        late: 0.01,
        late_by_ms: 70_000,
        bad: 0.01,
        ..GenConfig::default()
    }
}

fn streaming(s: &Scenario) -> (std::path::PathBuf, footprint::config::Config) {
    s.write_config(
        "footprint.toml",
        &s.toml("batch = 64\ncommit_interval = \"100ms\"", ""),
    )
    .expect("config")
}

fn run_bin(s: &Scenario, config: &std::path::Path, args: &[&str], log: &str) -> String {
    let path = s.dir.join(log);
    let mut child = spawn_footprint(config, args, &path).expect("start footprint");
    let status = wait_exit(&mut child, Duration::from_secs(300), log).expect("exit");
    assert!(status.success(), "{log} failed; see {}", path.display());
    std::fs::read_to_string(format!("{}.out", path.display())).unwrap_or_default()
}

fn list(points: &[(i32, i64)]) -> String {
    points
        .iter()
        .map(|(p, o)| format!("{p}:{o}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn a_backfill_over_a_processed_range_changes_nothing() {
    let s = Scenario::new("backfill-same").expect("scenario");
    let (parts, _) = preload(&s.topic, &clickstream(41), 30_000).expect("preload");
    let (config, cfg) = streaming(&s);
    run_to_end(&cfg, 2).expect("the first run");
    let before = (
        dump_mysql(&s.database).expect("dump"),
        dump_redis(&s.prefix).expect("dump"),
    );
    let commits = committed_total(&s.group, &s.topic, PARTITIONS).expect("commits");

    let from: Vec<(i32, i64)> = (0..PARTITIONS)
        .map(|p| (p, parts[p as usize].len() as i64 / 3))
        .collect();
    let to: Vec<(i32, i64)> = (0..PARTITIONS)
        .map(|p| (p, 2 * parts[p as usize].len() as i64 / 3))
        .collect();
    let in_range: i64 = from.iter().zip(&to).map(|((_, f), (_, t))| t - f).sum();
    let out = run_bin(
        &s,
        &config,
        &["worker", "--from", &list(&from), "--to", &list(&to)],
        "backfill.log",
    );
    println!("{}", out.trim());
    assert!(
        out.contains(&format!("backfill: {in_range} messages in the ranges")),
        "it read exactly its ranges: {out}"
    );
    let after = (
        dump_mysql(&s.database).expect("dump"),
        dump_redis(&s.prefix).expect("dump"),
    );
    assert!(before.0 == after.0, "MySQL changed");
    assert!(before.1 == after.1, "Redis changed");
    assert_eq!(
        committed_total(&s.group, &s.topic, PARTITIONS).expect("commits"),
        commits,
        "a backfill moves no consumer group"
    );
    s.clean();
}

/// A worker falls behind and is stopped; it restarts with `--skip-to-latest`
/// (the range it skips is logged, in `/status` and in the metrics) and goes
/// on with fresh data; a backfill of the skipped range, with the command the
/// worker printed, then fills it in, and both stores equal a run that never
/// skipped anything.
#[test]
fn skip_to_latest_then_a_backfill_fills_the_skipped_range_exactly() {
    let s = Scenario::new("skip").expect("scenario");
    // 20 minutes of event time per part, so that the 10-minute windows close.
    let gen_cfg = GenConfig {
        events_per_sec: 10,
        ..clickstream(43)
    };
    let (first, second, third) = (12_000, 12_000, 12_000);
    produce_slice(&s.topic, &gen_cfg, 0, first).expect("produce");
    let (config, cfg) = streaming(&s);

    // The first worker gets part of the way, and is killed.
    let mut a = spawn_footprint(&config, &["worker"], &s.dir.join("a.log")).expect("start");
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed_total(&s.group, &s.topic, PARTITIONS).expect("commits") < 2_000 {
        assert!(
            Instant::now() < deadline,
            "no commits; see {}",
            s.dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    a.kill().expect("kill -9");
    let _ = a.wait();
    let committed = committed_total(&s.group, &s.topic, PARTITIONS).expect("commits");

    let saved = checkpoints::load(
        &Admin::new(&kafka()).expect("admin"),
        "footprint.checkpoints",
        &s.group,
    )
    .expect("load")
    .points;

    // A backlog builds up; the operator skips it.
    produce_slice(&s.topic, &gen_cfg, first, second).expect("produce");
    let b_log = s.dir.join("b.log");
    let mut b: Running =
        spawn_footprint(&config, &["worker", "--skip-to-latest"], &b_log).expect("start");
    let admin = admin_addr_from_log(&b_log).expect("admin address");
    let status = get_json(admin, "/status").expect("status");
    let skipped = status["skipped"]
        .as_array()
        .expect("skipped ranges")
        .clone();
    assert_eq!(skipped.len(), PARTITIONS as usize, "{status}");
    // Each partition skips from its checkpoint (the checkpoint topic's copy,
    // which a killed worker may have written just before its group commit)
    // to its end.
    let ends = generated(&gen_cfg, first + second);
    for r in &skipped {
        let p = r["partition"].as_i64().expect("partition") as i32;
        let checkpoint = saved.get(&(s.topic.clone(), p)).expect("a checkpoint");
        assert!(
            checkpoint.offset > 0,
            "the first worker committed partition {p}"
        );
        assert_eq!(r["from"].as_i64(), Some(checkpoint.offset), "{r}");
        assert_eq!(r["to"].as_i64(), Some(ends[p as usize].len() as i64), "{r}");
    }
    let skipped_total: i64 = skipped
        .iter()
        .map(|r| r["to"].as_i64().unwrap_or(0) - r["from"].as_i64().unwrap_or(0))
        .sum();
    assert!(skipped.iter().all(|r| r["reason"] == "skip_to_latest"));
    let (code, metrics) = footprint_tests::http(admin, "GET", "/metrics", "").expect("metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!(
            "footprint_offsets_skipped_total{{reason=\"skip_to_latest\"}} {skipped_total}"
        )),
        "the metrics count the skipped offsets"
    );

    // Fresh data flows through the skipping worker.
    produce_slice(&s.topic, &gen_cfg, first + second, third).expect("produce");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = get_json(admin, "/status").expect("status");
        if status["events_in"].as_u64() == Some(third) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new data was not read: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    b.kill().expect("kill -9");
    let _ = b.wait();
    run_bin(&s, &config, &["worker", "--until-end"], "c.log");

    // The backfill the skipping worker asked for.
    let log = std::fs::read_to_string(&b_log).expect("log");
    let command = log
        .lines()
        .find(|l| l.contains("to fill the skipped ranges in later, run a backfill"))
        .and_then(|l| l.split("command=").nth(1))
        .expect("the worker printed the backfill command")
        .trim()
        .to_owned();
    let args: Vec<&str> = command
        .strip_prefix("footprint ")
        .expect("a footprint command")
        .split_whitespace()
        .collect();
    let out = run_bin(&s, &config, &args, "d.log");
    println!("{command}\n{}", out.trim());
    assert!(out.contains(&format!("backfill: {skipped_total} messages in the ranges")));

    let spec = cfg.spec().expect("spec");
    let all = generated(&gen_cfg, first + second + third);
    let expected = compute(&spec, &all);
    let stored = s.stored(&spec).expect("load");
    let diffs = [
        differences(&expected.windows, &stored.mysql_windows),
        differences(&expected.windows, &stored.redis_windows),
        differences(&expected.recent, &stored.mysql_recent),
        differences(&expected.recent, &stored.redis_recent),
    ];
    println!(
        "skip and backfill: {committed} committed before the skip, {skipped_total} skipped, {} windows, diffs (mysql, redis, recent mysql, recent redis) {diffs:?}",
        expected.windows.len()
    );
    assert_eq!(diffs, [0, 0, 0, 0]);
    s.clean();
}
