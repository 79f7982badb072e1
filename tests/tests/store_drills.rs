//! Store drills, mid-stream, against the real broker, Redis and MariaDB.
//!
//! - Degrade: an operator sets the sink's switch to `degraded` with
//!   `PUT /switches/{sink}` on the worker's admin API (through the control
//!   topic); while it is degraded the pipeline keeps running,
//!   the other store keeps being written, the degraded store is not touched,
//!   and its writes go to the retry topic.
//! - Outage: the store becomes unreachable (a TCP proxy the test controls
//!   cuts every connection); the breaker opens by itself, no worker crashes,
//!   writes are diverted; when the store is back the breaker closes.
//! - Down at start-up: MySQL is unreachable when the worker starts; the
//!   worker starts anyway and prepares the tables once MySQL answers.
//!
//! Either way, the replay job then drains the retry topic and both stores
//! equal the sequential reference. Each drill reports its figures (see
//! `footprint_tests::drill`); recovery is how long the replay job took to
//! drain the backlog once the store was back. `FOOTPRINT_DRILL_SIZE=full`
//! runs the fault over 80% of a 400,000-event run instead of a third of
//! 60,000.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use footprint::config::Config;
use footprint::replay::run_replay;
use footprint::run::{RunOptions, run, store_switches};
use footprint_dataflows::clickstream::GenConfig;
use footprint_dataflows::control::RunControl;
use footprint_dataflows::metrics::Metrics;
use footprint_dataflows::reference::compute;
use footprint_tests::drill::{Figures, Size};
use footprint_tests::{
    Stores, TcpProxy, brokers, delete_redis_prefix, drop_database, held_parts, http, mysql_url,
    preload, redis_url, unique,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    Degrade,
    Outage,
    /// The store is unreachable when the worker starts, and comes back later.
    DownAtStart,
}

fn drill(degraded: &'static str, fault: Fault) {
    // Full size: a longer fault over a larger backlog.
    let size = Size::from_env();
    let events: u64 = size.pick(60_000, 400_000);
    let (fault_from, fault_to) = size.pick((1.0 / 3.0, 2.0 / 3.0), (0.1, 0.9));
    let topic = unique(&format!("degrade-{degraded}"));
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
    preload(&topic, &gen_cfg, events).expect("preload");
    let redis_via_proxy = format!("redis://{}", redis_proxy.addr);
    let mysql_via_proxy = format!("mysql://root@{}", mysql_proxy.addr);
    let toml = format!(
        r#"
[source]
brokers = "{brokers}"
topics = ["{topic}"]
batch = 50

[watermark]
max_out_of_order = "3s"

[retry]
topic = "{retry_topic}"
journal = "{journal}"
breaker_open_for = "200ms"

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

[sinks]
# The topic is preloaded: without this, the worker would read it far ahead
# of the store writers, and the fault would not span the middle of the
# writes, as it does on a live stream.
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
        control_topic = unique("control"),
        journal = dir.path().join("journal").display(),
        file = dir.path().join("r.jsonl").display(),
        redis = redis_via_proxy,
        mysql = mysql_via_proxy,
    );
    let mut cfg = Config::from_layers(Some(&toml), Vec::<(String, String)>::new()).expect("config");
    cfg.recent = None;
    let spec = cfg.spec().expect("spec");
    let switches = store_switches(&cfg);
    let metrics = Arc::new(Metrics::new(
        spec.aggregates.iter().map(|a| a.name.clone()).collect(),
    ));
    let healthy = if degraded == "mysql" {
        "redis"
    } else {
        "mysql"
    };

    // The fault begins a third of the way through and ends at two thirds
    // (full size: from a tenth to nine tenths).
    let proxy = if degraded == "mysql" {
        Arc::new(mysql_proxy)
    } else {
        Arc::new(redis_proxy)
    };
    if fault == Fault::DownAtStart {
        proxy.set_down(true);
    }
    let admin_addr = Arc::new(std::sync::OnceLock::new());
    let flipper = {
        let (metrics, proxy, admin_addr) = (
            Arc::clone(&metrics),
            Arc::clone(&proxy),
            Arc::clone(&admin_addr),
        );
        let put = move |mode: &str| {
            let addr = *admin_addr
                .get()
                .expect("the admin API is up once events flow");
            let (status, body) = http(
                addr,
                "PUT",
                &format!("/switches/{degraded}"),
                &format!(r#"{{"mode":"{mode}"}}"#),
            )
            .expect("PUT");
            assert_eq!(status, 200, "{body}");
        };
        std::thread::spawn(move || {
            let wait_for = |n: u64| {
                while metrics.events_in.load(Ordering::Relaxed) < n {
                    std::thread::sleep(Duration::from_millis(2));
                }
            };
            wait_for((events as f64 * fault_from) as u64);
            match fault {
                Fault::Degrade => put("degraded"),
                Fault::Outage => proxy.set_down(true),
                Fault::DownAtStart => {}
            }
            // Batches that were already being written when the fault began land meanwhile.
            std::thread::sleep(Duration::from_millis(500));
            let (writes_at_degrade, healthy_at_degrade) = (
                Metrics::sink_count(&metrics.sink_writes, degraded),
                Metrics::sink_count(&metrics.sink_writes, healthy),
            );
            wait_for((events as f64 * fault_to) as u64);
            // A fast source may read to `fault_to` while the healthy store
            // still writes the batch it had when the fault began: keep the
            // fault on until that store has taken a later write (the last
            // rows of the run at the latest), or a deadline passes.
            let deadline = Instant::now() + Duration::from_secs(20);
            while Metrics::sink_count(&metrics.sink_writes, healthy) <= healthy_at_degrade
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            let (writes_at_auto, healthy_at_auto) = (
                Metrics::sink_count(&metrics.sink_writes, degraded),
                Metrics::sink_count(&metrics.sink_writes, healthy),
            );
            match fault {
                Fault::Degrade => put("auto"),
                Fault::Outage | Fault::DownAtStart => proxy.set_down(false),
            }
            (
                writes_at_degrade,
                writes_at_auto,
                healthy_at_degrade,
                healthy_at_auto,
            )
        })
    };
    let opts = RunOptions {
        serve_admin: true,
        admin_addr: Some(Arc::clone(&admin_addr)),
        threads: Some(2),
        until_end: true,
        progress: None,
        switches: Some(Arc::clone(&switches)),
        ..RunOptions::default()
    };
    run(&cfg, opts, Arc::clone(&metrics)).expect("no worker crashes");
    let (w_deg, w_auto, h_deg, h_auto) = flipper.join().expect("flipper");
    let diverted = Metrics::sink_count(&metrics.sink_diverted, degraded);
    let opened = Metrics::sink_count(&metrics.sink_breaker_opened, degraded);
    let w_end = Metrics::sink_count(&metrics.sink_writes, degraded);
    println!(
        "{fault:?} drill ({degraded}): {diverted} rows diverted, breaker opened {opened} times; {degraded} writes {w_deg} → {w_auto} during the fault, {w_end} at the end; {healthy} writes {h_deg} → {h_auto}"
    );
    assert!(
        diverted > 0,
        "writes for the faulty sink go to the retry topic"
    );
    assert_eq!(
        w_auto, w_deg,
        "the faulty store takes no writes once the batches in flight when the fault began have landed"
    );
    assert!(h_auto > h_deg, "the healthy store keeps being written");
    assert!(
        metrics.end_to_end_ms.count(healthy) > 0,
        "end-to-end latency is recorded"
    );
    assert!(
        metrics.sink_write_us.count(healthy) > 0,
        "sink write latency is recorded"
    );
    if fault != Fault::Degrade {
        assert!(opened > 0, "the breaker opened by itself");
        assert!(
            w_end > w_auto,
            "once the store is back, the breaker closes and writes resume"
        );
    }

    // Back in auto: the replay job drains the retry topic.
    let replay_started = std::time::Instant::now();
    let report = run_replay(
        &cfg,
        true,
        Some(switches),
        &Arc::new(RunControl::default()),
        None,
    )
    .expect("replay");
    assert!(
        report.applied >= diverted,
        "replayed {} of {diverted}",
        report.applied
    );

    let replay_seconds = replay_started.elapsed().as_secs_f64();
    // The reference reads what the broker holds: the pipeline's input, even
    // where the broker took a retried batch twice.
    let parts =
        held_parts(&cfg.kafka(), &topic, gen_cfg.partitions as usize).expect("read the topic back");
    let held: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let expected = compute(&spec, &parts);
    let stored = Stores::open(&spec, &prefix, &database)
        .and_then(|s| s.load())
        .expect("load the stores");
    let store = if degraded == "mysql" {
        "MySQL"
    } else {
        "Redis"
    };
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

fn host_port(url: &str) -> std::net::SocketAddr {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let host_port = rest.split('/').next().unwrap_or(rest);
    std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .ok()
        .and_then(|mut a| a.next())
        .expect("store address")
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
