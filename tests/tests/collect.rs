//! Drills of the event collector (`footprint collect`) against the real
//! broker: a broker outage, a crash while events are spilled, a full
//! spill, client retries, bad input, tenant shedding, and the end-to-end
//! check that events sent through the collector give the worker's exact
//! results.
//!
//! Every drill counts by `event_id`: each id the collector acknowledged
//! (`accepted`, or `duplicate` of an accepted one) must be in the topic.
//! Copies beyond the first are counted and printed, never hidden: an event
//! may reach Kafka twice only when the collector dies, or its producer
//! fails for good, after Kafka took the event and before the spill recorded
//! that.
//!
//! `FOOTPRINT_DRILL_SIZE=full` runs the outage at 5,000 events/s with the
//! broker down for 20 s; the CI size, 2,000 events/s and 6 s.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use footprint::config::Config;
use footprint_dataflows::clickstream::GenConfig;
use footprint_dataflows::reference::{Collected, compute};
use footprint_tests::collector::{
    CollectorProcess, SteadyClient, check_held, drill_event, post_events,
};
use footprint_tests::drill::Size;
use footprint_tests::{
    OwnBroker, brokers, generated, get_json_status, get_text, kafka, run_footprint_ok, run_to_end,
    unique,
};

const BASE_TS: i64 = 1_767_225_600_000;

/// A collector's config: `keys` go under `[collect]`, `tables` (apps)
/// after `[collect.spill]`.
fn collect_toml(
    brokers: &str,
    topic: &str,
    spill: &std::path::Path,
    max_bytes: u64,
    keys: &str,
    tables: &str,
) -> String {
    format!(
        r#"
[source]
brokers = "{brokers}"
topics = ["{topic}"]

[collect]
listen = "127.0.0.1:0"
ack_timeout = "500ms"
{keys}

[collect.spill]
dir = "{spill}"
max_bytes = {max_bytes}
segment_bytes = 262144

{tables}
"#,
        spill = spill.display()
    )
}

/// A broker of the test's own (SQLite store) and a collector on it, with
/// a topic named after `name`.
fn own_collector(
    dir: &std::path::Path,
    name: &str,
    max_bytes: u64,
    keys: &str,
    tables: &str,
) -> (OwnBroker, CollectorProcess, String) {
    let broker = OwnBroker::start(dir).expect("broker");
    let topic = unique(name);
    let toml = collect_toml(
        &broker.addr,
        &topic,
        &dir.join("spill"),
        max_bytes,
        keys,
        tables,
    );
    let collector = CollectorProcess::start(dir, &broker.addr, &toml).expect("collector");
    (broker, collector, topic)
}

fn ndjson(range: std::ops::Range<u64>, apps: u64) -> String {
    range
        .map(|n| drill_event(n, apps, 200, BASE_TS) + "\n")
        .collect()
}

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

#[test]
fn a_broker_outage_loses_no_acknowledged_event_and_keeps_each_users_order() {
    let size = Size::from_env();
    let (rate, down) = size.pick((2_000, 6), (5_000, 20));
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, collector, topic) =
        own_collector(dir.path(), "collect-outage", 1 << 30, "", "");
    let addr = Arc::new(Mutex::new(collector.addr));
    let client = SteadyClient::start(Arc::clone(&addr), rate, 100, BASE_TS);

    std::thread::sleep(Duration::from_secs(3));
    broker.kill().expect("kill the broker");
    let stopped = Instant::now();
    footprint_tests::wait_until(Duration::from_secs(60), "events to be spilled", || {
        collector.metric("footprint_collect_spilled_total") > 0.0
    })
    .expect("spilled while the broker is down");
    std::thread::sleep(Duration::from_secs(down).saturating_sub(stopped.elapsed()));
    broker.restart().expect("restart the broker");
    std::thread::sleep(Duration::from_secs(3));
    let sent = client.finish();
    collector
        .wait_drained(Duration::from_secs(120))
        .expect("drained");

    let held = check_held(&broker.settings(), &topic, &sent.acknowledged).expect("read back");
    let spilled = collector.metric("footprint_collect_spilled_total");
    let late = collector.metric("footprint_collect_delivered_late_total");
    println!(
        "FIGURE collect_outage size={} rate={rate}/s down={down}s sent={} acknowledged={} held={} spilled={spilled} delivered_late={late} retried_requests={} lost={} duplicates={} split_users={} out_of_order_users={}",
        size.as_str(),
        sent.events,
        sent.acknowledged.len(),
        held.messages,
        sent.retried,
        held.lost.len(),
        held.duplicates,
        held.split_users,
        held.out_of_order_users
    );
    assert!(
        sent.acknowledged.len() as u64 >= rate * 3,
        "the client must have been acknowledged through the drill"
    );
    assert!(
        spilled > 0.0,
        "the outage must have sent events to the spill"
    );
    assert!(
        held.lost.is_empty(),
        "acknowledged events lost: {:?}",
        &held.lost[..held.lost.len().min(10)]
    );
    assert_eq!(held.split_users, 0, "each user's events in one partition");
    assert_eq!(held.out_of_order_users, 0, "each user's events in order");
}

#[test]
fn a_collector_killed_while_events_are_spilled_drains_them_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, mut collector, topic) =
        own_collector(dir.path(), "collect-crash", 1 << 30, "", "");
    let mut acknowledged = BTreeSet::new();
    let mut take = |addr: SocketAddr, range: std::ops::Range<u64>| {
        let p = post_events(addr, ndjson(range.clone(), 3).as_bytes(), &[NDJSON]).expect("post");
        assert_eq!(p.status, 200, "{:?}", p.body);
        assert!(p.outcomes().iter().all(|o| o == "accepted"), "{:?}", p.body);
        acknowledged.extend(range.map(|n| format!("d{n}")));
    };
    take(collector.addr, 0..500);
    broker.kill().expect("kill the broker");
    for i in 1..10 {
        take(collector.addr, i * 500..(i + 1) * 500);
    }
    let spilled_records = collector.metric("footprint_collect_spilled_total");
    assert!(
        spilled_records > 0.0,
        "events must be in the spill when the collector dies"
    );
    collector.kill9().expect("kill -9 the collector");
    broker.restart().expect("restart the broker");
    collector.restart().expect("restart the collector");
    collector
        .wait_drained(Duration::from_secs(120))
        .expect("drained after the restart");
    let held = check_held(&broker.settings(), &topic, &acknowledged).expect("read back");
    println!(
        "FIGURE collect_crash acknowledged={} spilled={spilled_records} held={} lost={} duplicates={} out_of_order_users={}",
        acknowledged.len(),
        held.messages,
        held.lost.len(),
        held.duplicates,
        held.out_of_order_users
    );
    assert!(
        held.lost.is_empty(),
        "lost: {:?}",
        &held.lost[..held.lost.len().min(10)]
    );
    assert_eq!(held.out_of_order_users, 0);
    assert_eq!(held.split_users, 0);
}

#[test]
fn a_full_spill_answers_503_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, collector, topic) =
        own_collector(dir.path(), "collect-full", 64 * 1024, "", "");
    broker.kill().expect("kill the broker");
    let mut acknowledged = BTreeSet::new();
    let mut refused = 0u64;
    let mut n = 0u64;
    let mut statuses = Vec::new();
    while refused < 3 {
        assert!(n < 100_000, "the spill never filled");
        let p =
            post_events(collector.addr, ndjson(n..n + 50, 3).as_bytes(), &[NDJSON]).expect("post");
        statuses.push(p.status);
        match p.status {
            200 => {
                for (i, o) in p.outcomes().iter().enumerate() {
                    if o == "accepted" {
                        acknowledged.insert(format!("d{}", n + i as u64));
                    }
                }
            }
            503 => {
                assert!(p.retry_after.is_some(), "503 without Retry-After");
                assert!(
                    p.outcomes().iter().all(|o| o == "unavailable"),
                    "{:?}",
                    p.body
                );
                refused += 1;
            }
            other => panic!("unexpected status {other}: {:?}", p.body),
        }
        n += 50;
    }
    let (ready, _) = get_json_status(collector.addr, "/ready").expect("ready");
    assert_eq!(ready, 503, "a full spill while Kafka is down is not ready");
    broker.restart().expect("restart the broker");
    collector
        .wait_drained(Duration::from_secs(120))
        .expect("drained");
    let held = check_held(&broker.settings(), &topic, &acknowledged).expect("read back");
    println!(
        "FIGURE collect_full_spill sent={n} acknowledged={} refused_requests={refused} held={} lost={} duplicates={}",
        acknowledged.len(),
        held.messages,
        held.lost.len(),
        held.duplicates
    );
    assert!(!acknowledged.is_empty());
    assert!(
        held.lost.is_empty(),
        "lost: {:?}",
        &held.lost[..held.lost.len().min(10)]
    );
    let (ready, _) = get_json_status(collector.addr, "/ready").expect("ready");
    assert_eq!(ready, 200);
}

#[test]
fn shedding_refuses_the_lowest_priority_app_first_and_keeps_the_highest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, collector, topic) = own_collector(
        dir.path(),
        "collect-shed",
        256 * 1024,
        "shed_high = 0.3\nshed_low = 0.1\nshed_step = \"200ms\"",
        "[collect.apps.app0]\npriority = 0\n[collect.apps.app1]\npriority = 1\n[collect.apps.app2]\npriority = 2",
    );
    broker.kill().expect("kill the broker");

    let mut acknowledged = BTreeSet::new();
    let mut shed_order: Vec<String> = Vec::new();
    let mut high_accepted_while_shed = 0u64;
    let mut n = 0u64;
    // Fill the spill with the three apps' events until the two lower
    // apps are shed; the highest must keep being accepted.
    let deadline = Instant::now() + Duration::from_secs(60);
    while shed_order.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "shedding never reached app1: {shed_order:?}"
        );
        let p =
            post_events(collector.addr, ndjson(n..n + 30, 3).as_bytes(), &[NDJSON]).expect("post");
        for (i, o) in p.outcomes().iter().enumerate() {
            let k = n + i as u64;
            let app = format!("app{}", k % 3);
            match o.as_str() {
                "accepted" => {
                    acknowledged.insert(format!("d{k}"));
                    if app == "app2" && !shed_order.is_empty() {
                        high_accepted_while_shed += 1;
                    }
                }
                "shed" if !shed_order.contains(&app) => shed_order.push(app),
                "shed" => {}
                other => panic!("unexpected outcome {other}: {:?}", p.body),
            }
        }
        n += 30;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(shed_order, ["app0", "app1"], "lowest priority first");
    assert!(
        high_accepted_while_shed > 0,
        "the highest app kept being accepted"
    );
    let ready = footprint_tests::get_json(collector.addr, "/ready").expect("ready");
    // Apps the config does not list (`*`) have the default priority, 0,
    // and go first among equals.
    assert_eq!(ready["shed"], serde_json::json!(["*", "app0", "app1"]));
    assert!(collector.metric("footprint_collect_shed_steps_total{app=\"app0\"}") >= 1.0);

    // The pressure falls as the spill drains: the apps come back.
    broker.restart().expect("restart the broker");
    collector
        .wait_drained(Duration::from_secs(120))
        .expect("drained");
    footprint_tests::wait_until(
        Duration::from_secs(30),
        "shed apps to be taken back",
        || {
            footprint_tests::get_json(collector.addr, "/ready")
                .map(|r| r["shed"] == serde_json::json!([]))
                .unwrap_or(false)
        },
    )
    .expect("taken back");
    let log = std::fs::read_to_string(dir.path().join("collect.1.log")).expect("log");
    let back: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("taking a shed app back"))
        .filter_map(|l| l.split("app=").nth(1)?.split_whitespace().next())
        .map(|a| a.trim_matches('"'))
        .collect();
    assert_eq!(back, ["app1", "app0", "*"], "taken back in reverse order");
    let held = check_held(&broker.settings(), &topic, &acknowledged).expect("read back");
    println!(
        "FIGURE collect_shedding acknowledged={} high_accepted_while_shed={high_accepted_while_shed} lost={} duplicates={}",
        acknowledged.len(),
        held.lost.len(),
        held.duplicates
    );
    assert!(held.lost.is_empty());
}

fn shared_collector(dir: &std::path::Path, name: &str) -> (CollectorProcess, String) {
    let topic = unique(name);
    let toml = collect_toml(&brokers(), &topic, &dir.join("spill"), 1 << 30, "", "");
    (
        CollectorProcess::start(dir, &brokers(), &toml).expect("collector"),
        topic,
    )
}

#[test]
fn client_retries_of_a_batch_are_written_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (collector, topic) = shared_collector(dir.path(), "collect-retry");
    let batch = ndjson(0..200, 2);
    post_expecting(collector.addr, &batch, "accepted");
    // The same batch again, then three times at once (as in a client that
    // timed out and retried on several connections).
    post_expecting(collector.addr, &batch, "duplicate");
    let addr = collector.addr;
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let b = batch.clone();
            std::thread::spawn(move || post_events(addr, b.as_bytes(), &[NDJSON]).expect("post"))
        })
        .collect();
    for h in handles {
        let p = h.join().expect("thread");
        assert!(
            p.outcomes().iter().all(|o| o == "duplicate"),
            "{:?}",
            p.body
        );
    }
    // Within one request, a repeated id is a duplicate too.
    let twice = format!(
        "{}\n{}\n",
        drill_event(500, 2, 200, BASE_TS),
        drill_event(500, 2, 200, BASE_TS)
    );
    let p = post_events(collector.addr, twice.as_bytes(), &[NDJSON]).expect("post");
    assert_eq!(p.outcomes(), ["accepted", "duplicate"]);
    let acknowledged: BTreeSet<String> = (0..200).chain([500]).map(|n| format!("d{n}")).collect();
    assert_each_held_once(&topic, &acknowledged, "collect_retries");
    assert_eq!(
        collector.metric("footprint_collect_events_total{app=\"app0\",outcome=\"duplicate\"}")
            + collector
                .metric("footprint_collect_events_total{app=\"app1\",outcome=\"duplicate\"}"),
        801.0
    );
}

#[test]
fn a_retry_after_a_graceful_restart_is_a_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut collector, topic) = shared_collector(dir.path(), "collect-restart");
    let batch = ndjson(0..300, 3);
    post_expecting(collector.addr, &batch, "accepted");
    let log = collector.terminate().expect("a graceful stop");
    assert!(
        log.contains("saved the window of recent event ids") && log.contains("ids=300"),
        "{log}"
    );
    // The client did not see the answer (say) and sends the batch again,
    // to the restarted collector.
    collector.restart().expect("restart");
    post_expecting(collector.addr, &batch, "duplicate");
    // New ids are still taken.
    post_expecting(collector.addr, &ndjson(300..310, 3), "accepted");
    let acknowledged: BTreeSet<String> = (0..310).map(|n| format!("d{n}")).collect();
    assert_each_held_once(&topic, &acknowledged, "collect_restart_retries");
}

/// Posts the NDJSON `body`, which must be answered 200 with `outcome` for
/// every event.
fn post_expecting(addr: std::net::SocketAddr, body: &str, outcome: &str) {
    let p = post_events(addr, body.as_bytes(), &[NDJSON]).expect("post");
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert!(
        p.outcomes().iter().all(|o| o == outcome),
        "not all {outcome}: {:?}",
        p.body
    );
}

/// The topic holds each acknowledged event exactly once (and prints the
/// counts as `FIGURE name`).
fn assert_each_held_once(topic: &str, acknowledged: &BTreeSet<String>, figure: &str) {
    let held = check_held(&kafka(), topic, acknowledged).expect("read back");
    println!(
        "FIGURE {figure} held={} lost={} duplicates={}",
        held.messages,
        held.lost.len(),
        held.duplicates
    );
    assert_eq!(held.messages, acknowledged.len() as u64);
    assert_eq!(held.duplicates, 0);
    assert!(held.lost.is_empty(), "lost: {:?}", held.lost);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

#[test]
fn bad_input_gets_its_4xx_and_the_collector_keeps_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique("collect-bad");
    let toml = collect_toml(
        &brokers(),
        &topic,
        &dir.path().join("spill"),
        1 << 30,
        "max_body_bytes = 65536\nmax_decompressed_bytes = 262144",
        "[collect.apps.shop]\ntoken = \"t-shop\"\npriority = 1",
    );
    let mut collector = CollectorProcess::start(dir.path(), &brokers(), &toml).expect("collector");
    let addr = collector.addr;
    let auth = ("authorization", "Bearer t-shop");
    let good = r#"{"app_id":"shop","user_id":"u","event":"view","ts":1767225600000}"#;

    let status = |body: &[u8], headers: &[(&str, &str)]| -> (u16, serde_json::Value) {
        let p = post_events(addr, body, headers).expect("post");
        (p.status, p.body)
    };
    // Tokens.
    assert_eq!(status(good.as_bytes(), &[]).0, 401);
    assert_eq!(
        status(good.as_bytes(), &[("authorization", "Bearer nope")]).0,
        401
    );
    let other = r#"{"app_id":"blog","user_id":"u","event":"view","ts":1767225600000}"#;
    let (code, body) = status(other.as_bytes(), &[auth]);
    assert_eq!(code, 400);
    assert_eq!(body["results"][0]["reason"], "wrong_app");
    // Malformed JSON, as one event, as an array, and as NDJSON lines.
    let (code, body) = status(b"{not json", &[auth]);
    assert_eq!(code, 400);
    assert_eq!(body["results"][0]["reason"], "invalid_json");
    assert_eq!(status(b"[1, 2", &[auth]).0, 400);
    let lines = format!("{good}\n{{\"app_id\":\"shop\"}}\n\u{1}garbage\n");
    let (code, body) = status(lines.as_bytes(), &[auth, NDJSON]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["rejected"], 2);
    assert_eq!(body["results"][1]["reason"], "missing_field");
    // Empty body.
    assert_eq!(status(b"", &[auth]).0, 400);
    // Encodings.
    assert_eq!(
        status(good.as_bytes(), &[auth, ("content-encoding", "br")]).0,
        415
    );
    assert_eq!(
        status(good.as_bytes(), &[auth, ("content-encoding", "gzip")]).0,
        400
    );
    assert_eq!(
        status(good.as_bytes(), &[auth, ("content-encoding", "zstd")]).0,
        400
    );
    let (code, body) = status(
        &gzip(good.as_bytes()),
        &[auth, ("content-encoding", "gzip")],
    );
    assert_eq!((code, body["accepted"].as_u64()), (200, Some(1)));
    // Oversized: as sent, and once decompressed.
    let big = vec![b' '; 70_000];
    assert_eq!(status(&big, &[auth]).0, 413);
    let wide = format!("{good}\n").repeat(5_000);
    assert!(wide.len() > 262_144);
    let packed = gzip(wide.as_bytes());
    assert!(packed.len() < 65_536);
    assert_eq!(
        status(&packed, &[auth, NDJSON, ("content-encoding", "gzip")]).0,
        413
    );
    // A gzip bomb: 1 GiB of zeros in about 1 MiB would pass no cap; this
    // one is 64 MiB in about 64 KiB, and is refused at the decompressed
    // cap without inflating the rest.
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        bomb.write_all(&zeros).expect("gzip");
    }
    let bomb = bomb.finish().expect("gzip");
    assert!(bomb.len() < 65_536, "bomb is {} bytes", bomb.len());
    let started = Instant::now();
    assert_eq!(status(&bomb, &[auth, ("content-encoding", "gzip")]).0, 413);
    println!(
        "FIGURE collect_gzip_bomb compressed={} inflated_would_be={} answered_in_ms={}",
        bomb.len(),
        64u64 << 20,
        started.elapsed().as_millis()
    );
    // Routes and methods.
    let (code, _) = footprint_tests::http(addr, "GET", "/v1/events", "").expect("get");
    assert_eq!(code, 405);
    let (code, _) = footprint_tests::http(addr, "GET", "/nope", "").expect("get");
    assert_eq!(code, 404);
    // Still alive, still taking events, and every refusal counted.
    assert!(collector.alive());
    assert_eq!(get_json_status(addr, "/health").expect("health").0, 200);
    let metrics = get_text(addr, "/metrics").expect("metrics");
    for status in ["400", "401", "413", "415"] {
        assert!(
            metrics.contains(&format!(
                "footprint_collect_requests_total{{status=\"{status}\"}}"
            )),
            "no count of {status}"
        );
    }
    assert!(collector.metric("footprint_collect_rejected_total") >= 4.0);
    footprint_tests::promtool::check_metrics(&metrics).expect("promtool");
    let held = check_held(&kafka(), &topic, &BTreeSet::new()).expect("read back");
    assert_eq!(held.messages, 2, "only the two good events were written");
    collector.kill9().expect("stop");
}

#[test]
fn events_through_the_collector_give_the_same_aggregates_as_straight_to_kafka() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (collector, topic) = shared_collector(dir.path(), "collect-e2e");
    let gen_cfg = GenConfig {
        seed: 21,
        partitions: 4,
        apps: 3,
        users: 500,
        items: 50,
        events_per_sec: 200,
        disorder: 0.05,
        max_disorder_ms: 3_000,
        bad: 0.01,
        ..GenConfig::default()
    };
    let count = 20_000u64;
    let config = dir.path().join("gen.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nbrokers = \"{}\"\ntopics = [\"{topic}\"]\n",
            brokers()
        ),
    )
    .expect("config");
    run_footprint_ok(
        &config,
        &[
            "gen",
            "--http",
            &format!("http://{}", collector.addr),
            "--gzip",
            "--count",
            &count.to_string(),
            "--seed",
            "21",
            "--apps",
            "3",
            "--users",
            "500",
            "--items",
            "50",
            "--events-per-sec",
            "200",
            "--disorder",
            "0.05",
            "--max-disorder",
            "3s",
            "--bad",
            "0.01",
            "--start-ts",
            &gen_cfg.start_ts.to_string(),
        ],
        &dir.path().join("gen.log"),
        &[],
        Duration::from_secs(300),
    )
    .expect("gen --http");

    let toml = format!(
        r#"
[source]
brokers = "{brokers}"
topics = ["{topic}"]
batch = 200

[watermark]
max_out_of_order = "5s"

[sinks.file]
path = "{path}"
"#,
        brokers = brokers(),
        path = dir.path().join("results.jsonl").display()
    );
    let cfg = Config::from_layers(Some(&toml), Vec::<(String, String)>::new()).expect("config");
    let spec = cfg.spec().expect("spec");
    let (report, rows) = run_to_end(&cfg, 2).expect("worker run");
    // The reference is what `footprint gen` would have produced straight
    // to Kafka from the same seed.
    let straight = generated(&gen_cfg, count);
    let expected = compute(&spec, &straight);
    let rejected = collector.metric("footprint_collect_rejected_total");
    println!(
        "FIGURE collect_end_to_end generated={count} written={} rejected_at_collector={rejected} good={} late={}",
        report.events_in, expected.good, report.late
    );
    assert_eq!(
        report.events_in, expected.good,
        "only the good events reach Kafka"
    );
    assert_eq!(report.events_in as f64 + rejected, count as f64);
    assert_eq!(report.bad, 0);
    assert_eq!(report.late, 0);
    let got = Collected::from_outputs(rows, spec.recent.as_ref().map_or(0, |r| r.keep));
    assert_eq!(got.duplicate_finals, 0);
    assert_eq!(got.windows.len(), expected.windows.len());
    for (id, row) in &expected.windows {
        assert_eq!(got.windows.get(id), Some(row), "window {id:?}");
    }
    // Recent entries name the partition and offset they were read from,
    // which differ (the collector partitions by app and user); what each
    // user did must not.
    type Recent = std::collections::BTreeMap<(String, String), footprint_dataflows::RecentRow>;
    let what = |rows: &Recent| {
        rows.iter()
            .map(|(k, r)| {
                let events: Vec<_> = r
                    .events
                    .iter()
                    .map(|e| (e.ts, e.event.clone(), e.item_id.clone()))
                    .collect();
                (k.clone(), events)
            })
            .collect::<Vec<_>>()
    };
    let (got_recent, expected_recent) = (what(&got.recent), what(&expected.recent));
    assert_eq!(got_recent.len(), expected_recent.len());
    let differing = got_recent
        .iter()
        .zip(&expected_recent)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differing, 0, "users whose recent activity differs");
}

#[test]
fn an_app_over_its_quota_gets_429_and_a_batch_larger_than_its_bucket_413_and_others_are_untouched()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique("collect-quota");
    let toml = collect_toml(
        &brokers(),
        &topic,
        &dir.path().join("spill"),
        1 << 30,
        "",
        "[collect.apps.slow]\nrate = { per_second = 1, burst = 20 }\n[collect.apps.fast]\npriority = 1",
    );
    let collector = CollectorProcess::start(dir.path(), &brokers(), &toml).expect("collector");
    let batch = |app: &str, from: u64, n: u64| -> String {
        (from..from + n)
            .map(|i| {
                format!(
                    r#"{{"event_id":"{app}{i}","app_id":"{app}","user_id":"u{i}","event":"view","ts":{}}}"#,
                    BASE_TS + i as i64
                ) + "\n"
            })
            .collect()
    };
    // More events in one request than the bucket holds: they can never
    // fit, so waiting would not help.
    let p = post_events(collector.addr, batch("slow", 0, 21).as_bytes(), &[NDJSON]).expect("post");
    assert_eq!(p.status, 413);
    assert!(p.outcomes().iter().all(|o| o == "over_quota"));
    // The burst, then one more: that one waits for the bucket.
    let p = post_events(collector.addr, batch("slow", 0, 20).as_bytes(), &[NDJSON]).expect("post");
    assert_eq!(p.status, 200, "{:?}", p.body);
    let p = post_events(collector.addr, batch("slow", 20, 1).as_bytes(), &[NDJSON]).expect("post");
    assert_eq!(p.status, 429);
    assert_eq!(
        p.retry_after,
        Some(1),
        "1 event/s: the next token within a second"
    );
    // Another app is not held back by it.
    let p = post_events(collector.addr, batch("fast", 0, 100).as_bytes(), &[NDJSON]).expect("post");
    assert_eq!(p.status, 200);
    assert_eq!(p.body["accepted"], 100);
    assert_eq!(
        collector.metric("footprint_collect_events_total{app=\"slow\",outcome=\"over_quota\"}"),
        22.0,
        "21 in the batch that never fits, 1 over the rate"
    );
    let acknowledged: BTreeSet<String> = (0..20)
        .map(|i| format!("slow{i}"))
        .chain((0..100).map(|i| format!("fast{i}")))
        .collect();
    let held = check_held(&kafka(), &topic, &acknowledged).expect("read back");
    assert!(held.lost.is_empty());
    assert_eq!(held.messages, 120, "nothing over the quota was written");
}
