//! Store drills, mid-stream, against the real broker, Redis and MariaDB.
//!
//! - Degrade: an operator sets the sink's switch to `degraded` with
//!   `PUT /switches/{sink}` on the admin API (through the control topic);
//!   while it is degraded the pipeline keeps running, the other store keeps
//!   being written, the degraded store is not touched, and its writes go to
//!   the retry topic.
//! - Outage: the store becomes unreachable (a TCP proxy the test controls
//!   cuts every connection); the breaker opens by itself, no worker crashes,
//!   writes are diverted; when the store is back the breaker closes.
//! - Down at start-up: MySQL is unreachable when the worker starts; the
//!   worker starts anyway and prepares the tables once MySQL answers.
//!
//! The stream is produced in three stages, each acknowledged before the
//! next: before the fault, during it, and after it. The worker runs
//! streaming until the test stops it, so every step acts on a service whose
//! lifetime the test controls (the admin API is served by the test, over
//! the worker's own switches), and each step waits on a state it can see,
//! never on a guess of how long something takes. A bounded run then reads
//! on from the worker's checkpoints to emit the last windows as final, the
//! replay job drains the retry topic, and both stores must equal the
//! sequential reference. Each drill reports its figures (see
//! `footprint_tests::drill`); recovery is how long the replay job took to
//! drain the backlog once the store was back. `FOOTPRINT_DRILL_SIZE=full`
//! runs the fault over 80% of a 400,000-event run instead of a third of
//! 60,000.

use std::sync::Arc;
use std::time::{Duration, Instant};

use footprint::admin::{AdminState, serve};
use footprint::config::Config;
use footprint::process::Process;
use footprint::replay::{ReplayOptions, run_replay};
use footprint_dataflows::clickstream::GenConfig;
use footprint_dataflows::control::RunControl;
use footprint_dataflows::reference::compute;
use footprint_tests::drill::{Figures, Size};
use footprint_tests::{
    StagedStream, Stores, TcpProxy, brokers, delete_redis_prefix, drop_database, held_parts,
    host_port, http, mysql_url, redis_url, run_to_end, unique, wait_until,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    Degrade,
    Outage,
    /// The store is unreachable when the worker starts, and comes back later.
    DownAtStart,
}

/// How long a stage may take before the drill gives up.
const STAGE: Duration = Duration::from_secs(180);

/// The circuit breaker's pause before it lets a probe write through.
const BREAKER_OPEN_FOR: Duration = Duration::from_millis(200);

fn drill(faulty: &'static str, fault: Fault) {
    // Full size: a longer fault over a larger backlog.
    let size = Size::from_env();
    let events: u64 = size.pick(60_000, 400_000);
    let (fault_from, fault_to) = size.pick((1.0 / 3.0, 2.0 / 3.0), (0.1, 0.9));
    let (before, during) = (
        (events as f64 * fault_from) as u64,
        (events as f64 * (fault_to - fault_from)) as u64,
    );
    let after = events - before - during;
    let topic = unique(&format!("degrade-{faulty}"));
    let database = unique("fp_degrade").replace('-', "_");
    let prefix = unique("fpdegrade");
    let dir = tempfile::tempdir().expect("tempdir");
    let redis_proxy = TcpProxy::start(host_port(&redis_url())).expect("redis proxy");
    let mysql_proxy = TcpProxy::start(host_port(&mysql_url())).expect("mysql proxy");
    let gen_cfg = GenConfig {
        seed: 17,
        partitions: 4,
        users: 400,
        items: 30,
        events_per_sec: 100,
        ..GenConfig::default()
    };
    let redis_via_proxy = format!("redis://{}", redis_proxy.addr);
    let mysql_via_proxy = format!("mysql://root@{}", mysql_proxy.addr);
    let control_topic = unique("control");
    let toml = format!(
        r#"
[source]
brokers = "{brokers}"
topics = ["{topic}"]
batch = 50

[watermark]
max_out_of_order = "3s"
# The worker waits for each stage at the end of its partitions: they must
# not go idle meanwhile (an idle partition's next events could turn late).
idle_timeout = "1h"

[retry]
topic = "{retry_topic}"
journal = "{journal}"
breaker_open_for = "{open_for}ms"

[admin]
listen = "127.0.0.1:0"
control_topic = "{control_topic}"

[[aggregate]]
name = "item_activity_1m"
group_by = ["app_id", "event", "item_id"]
window = {{ tumbling = "1m" }}
measures = ["count", "distinct(user_id)", "sum(value)"]
early_updates = "20ms"
sinks = ["redis", "mysql"]

[recent]
enabled = false

[sinks]
# Each stage is produced at once: without this, the worker would read it
# far ahead of the store writers.
max_rows_waiting = 200

[sinks.file]
path = "{file}"

[sinks.redis]
url = "{redis}"
prefix = "{prefix}"

[sinks.mysql]
url = "{mysql}/{database}?prefer_socket=false"
"#,
        brokers = brokers(),
        retry_topic = unique("retry"),
        journal = dir.path().join("journal").display(),
        open_for = BREAKER_OPEN_FOR.as_millis(),
        file = dir.path().join("r.jsonl").display(),
        redis = redis_via_proxy,
        mysql = mysql_via_proxy,
    );
    let cfg = Config::from_layers(Some(&toml), Vec::<(String, String)>::new()).expect("config");
    let spec = cfg.spec().expect("spec");
    let healthy = if faulty == "mysql" { "redis" } else { "mysql" };
    let proxy = if faulty == "mysql" {
        mysql_proxy
    } else {
        redis_proxy
    };
    if fault == Fault::DownAtStart {
        proxy.set_down(true);
    }

    // Stage 1: the stream before the fault, read by a streaming worker.
    let mut stream = StagedStream::new(&cfg.kafka(), &topic, &gen_cfg).expect("the topic");
    stream.produce(before).expect("produce");
    let process = Process::new(&cfg).expect("process");
    let (control, worker) = footprint_tests::spawn_worker(&cfg, &process, 2);
    // The admin API over the worker's own switches, served for as long as
    // the test needs it.
    let admin = serve(
        "127.0.0.1:0".parse().expect("addr"),
        AdminState::new(&cfg, &process, &cfg.kafka(), None, Arc::from([])).expect("admin state"),
    )
    .expect("admin API");
    let put = |mode: &str| {
        let (status, body) = http(
            admin.addr,
            "PUT",
            &format!("/switches/{faulty}"),
            &format!(r#"{{"mode":"{mode}"}}"#),
        )
        .expect("PUT");
        assert_eq!(status, 200, "{body}");
    };
    let (dataflow, sinks, flow) = (&process.dataflow, &process.sinks, &process.flow);
    wait_until(STAGE, "the worker to read the first stage", || {
        dataflow.events_in() >= before
    })
    .expect("stage 1");

    // Stage 2: the fault begins, and the next part of the stream comes.
    match fault {
        Fault::Degrade => put("degraded"),
        Fault::Outage => proxy.set_down(true),
        Fault::DownAtStart => {}
    }
    // What the faulty store may still take: the rows in flight when the
    // fault began (a flipped switch takes effect at the next chunk).
    let (written_at_fault, healthy_at_fault) = (sinks.written(faulty), sinks.written(healthy));
    let in_flight = flow.rows_waiting();
    stream.produce(during).expect("produce");
    wait_until(
        STAGE,
        "the worker to read and settle the second stage",
        || dataflow.events_in() >= before + during && flow.rows_waiting() == 0,
    )
    .expect("stage 2");
    let (written_in_fault, healthy_in_fault) = (sinks.written(faulty), sinks.written(healthy));
    let diverted = sinks.diverted(faulty);
    assert!(
        diverted > 0,
        "writes for the faulty sink go to the retry topic"
    );
    assert!(
        written_in_fault - written_at_fault <= in_flight,
        "the faulty store took {} rows during the fault, more than the {in_flight} in flight when it began",
        written_in_fault - written_at_fault
    );
    assert!(
        healthy_in_fault > healthy_at_fault,
        "the healthy store keeps being written"
    );

    // Stage 3: the fault ends, and the rest of the stream comes.
    match fault {
        Fault::Degrade => put("auto"),
        Fault::Outage | Fault::DownAtStart => {
            proxy.set_down(false);
            // An open breaker lets a probe through only after this pause.
            std::thread::sleep(BREAKER_OPEN_FOR);
        }
    }
    stream.produce(after).expect("produce");
    wait_until(
        STAGE,
        "the worker to read and settle the last stage",
        || dataflow.events_in() >= events && flow.rows_waiting() == 0,
    )
    .expect("stage 3");
    let written_after = sinks.written(faulty);
    let opened = sinks.breaker_openings(faulty);
    println!(
        "{fault:?} drill ({faulty}): {diverted} rows diverted, breaker opened {opened} times; {faulty} writes {written_at_fault} → {written_in_fault} during the fault ({in_flight} in flight when it began), {written_after} after; {healthy} writes {healthy_at_fault} → {healthy_in_fault}"
    );
    assert!(
        written_after > written_in_fault,
        "once the store is back, writes to it resume"
    );
    assert!(
        sinks.end_to_end_latency(healthy).count() > 0,
        "end-to-end latency is recorded"
    );
    assert!(
        sinks.write_latency(healthy).count() > 0,
        "sink write latency is recorded"
    );
    if fault != Fault::Degrade {
        assert!(opened > 0, "the breaker opened by itself");
    }
    control.request_stop();
    worker
        .join()
        .expect("the worker thread")
        .expect("no worker crashes");
    drop(admin);

    // A bounded run reads on from the checkpoints and emits the last
    // windows as final; then the replay job drains the retry topic.
    run_to_end(&cfg, 2).expect("the bounded run");
    let replay_started = Instant::now();
    let report = run_replay(
        &cfg,
        &ReplayOptions {
            once: true,
            progress: None,
            ..ReplayOptions::default()
        },
        None,
        &Arc::new(RunControl::default()),
    )
    .expect("replay");
    assert!(
        report.applied >= diverted,
        "replayed {} of {diverted}",
        report.applied
    );
    let replay_seconds = replay_started.elapsed().as_secs_f64();

    // The reference reads what the broker holds: the pipeline's input.
    let parts =
        held_parts(&cfg.kafka(), &topic, gen_cfg.partitions as usize).expect("read the topic back");
    let held: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let expected = compute(&spec, &parts);
    let stored = Stores::open(&spec, &prefix, &database)
        .and_then(|s| s.load())
        .expect("load the stores");
    let store = if faulty == "mysql" { "MySQL" } else { "Redis" };
    let name = match fault {
        Fault::Degrade => format!("{store} degraded"),
        Fault::Outage => format!("{store} outage"),
        Fault::DownAtStart => format!("{store} down at start-up"),
    };
    let began = if fault == Fault::DownAtStart {
        0.0
    } else {
        fault_from
    };
    let mut figures = Figures::new(&name, events, &expected, &stored)
        .with(
            "fault over",
            format!("{:.0}% of the run", (fault_to - began) * 100.0),
        )
        .with("rows diverted", diverted)
        .with("breaker openings", opened)
        .with("replayed", report.applied)
        .with("held by the broker", held);
    figures.recovery_s = vec![replay_seconds];
    figures.report();
    figures.assert_exact();
    drop_database(&database);
    delete_redis_prefix(&prefix);
}

#[test]
fn mysql_degraded_mid_stream_is_replayed_to_the_reference() {
    drill("mysql", Fault::Degrade);
}

#[test]
fn redis_degraded_mid_stream_is_replayed_to_the_reference() {
    drill("redis", Fault::Degrade);
}

#[test]
fn mysql_outage_opens_the_breaker_and_is_replayed_to_the_reference() {
    drill("mysql", Fault::Outage);
}

#[test]
fn redis_outage_opens_the_breaker_and_is_replayed_to_the_reference() {
    drill("redis", Fault::Outage);
}

#[test]
fn mysql_down_at_start_up_is_prepared_later_and_replayed_to_the_reference() {
    drill("mysql", Fault::DownAtStart);
}
