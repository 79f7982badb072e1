//! Scale-out over a timely cluster (`docs/design.md#programs`): `footprint worker --process
//! i --processes N --hosts FILE` processes form one timely cluster over a
//! partitioned topic. Their stores end byte-identical to one worker's, and a
//! cluster killed mid-run resumes from its commits when restarted: one
//! process is killed, the other stops by itself, and the whole cluster is
//! started again (a drill with figures; recovery is the time the restarted
//! cluster takes to rebuild its windows and read to the end).

use std::time::{Duration, Instant};

use footprint_dataflows::clickstream::GenConfig;
use footprint_dataflows::reference::compute;
use footprint_tests::drill::{Figures, Size};
use footprint_tests::{
    Running, Scenario, committed_total, differences, dump_mysql, dump_redis, free_addresses,
    preload, run_to_end, spawn_footprint, wait_exit,
};

const PARTITIONS: u32 = 8;

fn clickstream() -> GenConfig {
    GenConfig {
        seed: 23,
        partitions: PARTITIONS,
        users: 500,
        items: 40,
        events_per_sec: 50,
        disorder: 0.05,
        max_disorder_ms: 3_000,
        late: 0.01,
        late_by_ms: 70_000,
        bad: 0.01,
        ..GenConfig::default()
    }
}

/// Starts process `i` of a `hosts.len()`-process cluster, 2 threads each.
fn start_process(
    s: &Scenario,
    config: &std::path::Path,
    hosts: &std::path::Path,
    i: usize,
    n: usize,
    extra: &[&str],
    log: &str,
) -> Running {
    let (process, processes, hosts) = (i.to_string(), n.to_string(), hosts.display().to_string());
    let mut args = vec![
        "worker",
        "--threads",
        "2",
        "--process",
        &process,
        "--processes",
        &processes,
        "--hosts",
        &hosts,
    ];
    args.extend_from_slice(extra);
    spawn_footprint(config, &args, &s.dir.join(log)).expect("start a cluster process")
}

fn hosts_file(s: &Scenario, n: usize) -> std::path::PathBuf {
    let path = s.dir.join("hosts");
    let text = free_addresses(n).expect("free ports").join("\n");
    std::fs::write(&path, text + "\n").expect("hosts file");
    path
}

#[test]
fn a_two_process_cluster_writes_the_same_tables_as_one_worker() {
    let single = Scenario::new("single").expect("scenario");
    let (parts, _) = preload(&single.topic, &clickstream(), 40_000).expect("preload");
    let (_, single_cfg) = single
        .write_config("footprint.toml", &single.toml("", ""))
        .expect("config");
    let (report, _) = run_to_end(&single_cfg, 1).expect("one process, one worker");
    assert_eq!(report.events_in, 40_000);

    let cluster = single.sibling("cluster").expect("scenario");
    let (config, cfg) = cluster
        .write_config("footprint.toml", &cluster.toml("", ""))
        .expect("config");
    let hosts = hosts_file(&cluster, 2);
    let started = Instant::now();
    let mut procs: Vec<Running> = (0..2)
        .map(|i| {
            start_process(
                &cluster,
                &config,
                &hosts,
                i,
                2,
                &["--until-end"],
                &format!("p{i}.log"),
            )
        })
        .collect();
    for (i, p) in procs.iter_mut().enumerate() {
        let status = wait_exit(p, Duration::from_secs(300), "a cluster process").expect("exit");
        assert!(
            status.success(),
            "process {i} failed; see {}",
            cluster.dir.display()
        );
    }
    let seconds = started.elapsed().as_secs_f64();

    let (mysql_one, mysql_two) = (
        dump_mysql(&single.database).expect("dump"),
        dump_mysql(&cluster.database).expect("dump"),
    );
    let (redis_one, redis_two) = (
        dump_redis(&single.prefix).expect("dump"),
        dump_redis(&cluster.prefix).expect("dump"),
    );
    let spec = cfg.spec().expect("spec");
    let expected = compute(&spec, &parts);
    println!(
        "cluster: 2 processes × 2 workers over {PARTITIONS} partitions in {seconds:.1} s; MySQL dump {} bytes, Redis dump {} bytes, {} windows",
        mysql_two.len(),
        redis_two.len(),
        expected.windows.len()
    );
    assert!(
        mysql_one.lines().count() > expected.windows.len(),
        "the dump holds every window row"
    );
    assert!(
        mysql_one == mysql_two,
        "MySQL tables differ from one worker's"
    );
    assert!(
        redis_one == redis_two,
        "Redis keys differ from one worker's"
    );
    let stored = cluster.stored(&spec).expect("load");
    assert_eq!(differences(&expected.windows, &stored.mysql_windows), 0);
    assert_eq!(differences(&expected.recent, &stored.redis_recent), 0);
    single.clean();
    cluster.clean();
}

#[test]
fn a_killed_cluster_resumes_from_its_commits() {
    let s = Scenario::new("cluster-kill").expect("scenario");
    let events: u64 = Size::from_env().pick(40_000, 200_000);
    let (parts, _) = preload(&s.topic, &clickstream(), events).expect("preload");
    let (config, cfg) = s
        .write_config(
            "footprint.toml",
            &s.toml("batch = 16\ncommit_interval = \"100ms\"", ""),
        )
        .expect("config");
    let hosts = hosts_file(&s, 2);
    let mut procs: Vec<Running> = (0..2)
        .map(|i| start_process(&s, &config, &hosts, i, 2, &[], &format!("run1-p{i}.log")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed_total(&s.group, &s.topic, PARTITIONS as i32).expect("commits") < 3_000 {
        assert!(
            Instant::now() < deadline,
            "no commits; see {}",
            s.dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // One process dies: the other one stops by itself and says why.
    procs[1].kill().expect("kill -9 process 1");
    let status = wait_exit(
        &mut procs[0],
        Duration::from_secs(60),
        "the surviving process",
    )
    .expect("the surviving process stops");
    assert!(
        !status.success(),
        "a cluster that lost a process cannot go on"
    );
    let log = std::fs::read_to_string(s.dir.join("run1-p0.log")).expect("log");
    assert!(
        log.contains("restart every process of the cluster"),
        "the surviving process says what to do"
    );
    let committed = committed_total(&s.group, &s.topic, PARTITIONS as i32).expect("commits");

    // The whole cluster restarts and reads to the end.
    let mut procs: Vec<Running> = (0..2)
        .map(|i| {
            start_process(
                &s,
                &config,
                &hosts,
                i,
                2,
                &["--until-end"],
                &format!("run2-p{i}.log"),
            )
        })
        .collect();
    let restarted = Instant::now();
    while procs
        .iter_mut()
        .any(|p| p.try_wait().ok().flatten().is_none())
    {
        assert!(
            restarted.elapsed() < Duration::from_secs(300),
            "the restarted cluster did not finish; see {}",
            s.dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // It rebuilt its open windows and read to the end: recovered.
    let recovery = restarted.elapsed().as_secs_f64();
    for (i, p) in procs.iter_mut().enumerate() {
        let status = wait_exit(p, Duration::from_secs(10), "a cluster process").expect("exit");
        assert!(
            status.success(),
            "process {i} failed; see {}",
            s.dir.display()
        );
    }
    let spec = cfg.spec().expect("spec");
    let expected = compute(&spec, &parts);
    let stored = s.stored(&spec).expect("load");
    let mut figures = Figures::new("cluster process killed", events, &expected, &stored)
        .with("processes", "2 × 2 workers")
        .with("committed before the kill", committed);
    figures.recovery_s = vec![recovery];
    figures.report();
    figures.assert_exact();
    assert!(
        committed_total(&s.group, &s.topic, PARTITIONS as i32).expect("commits") >= committed,
        "the restarted cluster's commits do not go back"
    );
    s.clean();
}
