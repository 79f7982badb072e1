//! End to end through the real broker: generated events with bad and late
//! ones go through `footprint`'s worker; every good event is counted exactly
//! once in the final results (in memory and in the results file), every bad
//! event is in the dead-letter topic with its reason, and every late event
//! is in the late topic with the aggregates and windows it missed.

use std::collections::{BTreeMap, BTreeSet};

use footprint::config::Config;
use footprint_dataflows::Output;
use footprint_dataflows::clickstream::GenConfig;
use footprint_dataflows::reference::{Collected, compute};
use footprint_tests::{brokers, preload, read_all, run_to_end, unique};

#[test]
fn counts_every_good_event_once_and_routes_bad_and_late_events() {
    let topic = unique("e2e");
    let dir = tempfile::tempdir().expect("tempdir");
    let gen_cfg = GenConfig {
        seed: 11,
        partitions: 4,
        users: 800,
        items: 60,
        events_per_sec: 50,
        disorder: 0.05,
        max_disorder_ms: 3_000,
        late: 0.01,
        late_by_ms: 20 * 60_000,
        bad: 0.02,
        ..GenConfig::default()
    };
    let (parts, produced) = preload(&topic, &gen_cfg, 30_000).expect("preload");
    assert!(
        produced.bad > 0 && produced.late > 0,
        "the stream must contain bad and late events: {produced:?}"
    );

    let toml = format!(
        r#"
[source]
brokers = "{brokers}"
topics = ["{topic}"]
batch = 200

[watermark]
max_out_of_order = "2s"

[sinks.file]
path = "{path}"
"#,
        brokers = brokers(),
        path = dir.path().join("results.jsonl").display()
    );
    let cfg = Config::from_layers(Some(&toml), Vec::<(String, String)>::new()).expect("config");
    let spec = cfg.spec().expect("spec");
    let (report, rows) = run_to_end(&cfg, 2).expect("worker run");

    let expected = compute(&spec, &parts);
    assert_eq!(report.events_in, 30_000);
    assert_eq!(report.bad, produced.bad);
    assert_eq!(
        report.side_failures, 0,
        "dead-letter or late records not delivered"
    );
    assert_eq!(expected.good, produced.good);

    // Every good event counted exactly once: final results equal the reference.
    let got = Collected::from_outputs(rows, cfg.spec().expect("spec").recent.map_or(0, |r| r.keep));
    assert_eq!(got.duplicate_finals, 0);
    assert_eq!(got.not_final, 0);
    assert_eq!(got.windows.len(), expected.windows.len());
    for (id, row) in &expected.windows {
        assert_eq!(got.windows.get(id), Some(row), "window {id:?}");
    }
    assert_eq!(got.recent, expected.recent);

    // Every bad event is in the dead-letter topic, unchanged, with its reason.
    let dlq = read_all(&format!("{topic}.dlq")).expect("read dlq");
    let mut dead: BTreeMap<(i32, i64), (String, Vec<u8>)> = BTreeMap::new();
    for m in dlq {
        let source = m
            .headers
            .get("footprint.source")
            .expect("source header")
            .clone();
        let mut it = source.rsplitn(3, '/');
        let offset: i64 = it.next().and_then(|o| o.parse().ok()).expect("offset");
        let partition: i32 = it.next().and_then(|p| p.parse().ok()).expect("partition");
        assert!(m.headers.contains_key("footprint.error"));
        dead.insert(
            (partition, offset),
            (
                m.headers
                    .get("footprint.reason")
                    .cloned()
                    .unwrap_or_default(),
                m.payload,
            ),
        );
    }
    let missing: Vec<_> = expected
        .bad
        .iter()
        .filter(|(p, i, _)| !dead.contains_key(&(*p as i32, *i as i64)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} dead letters read back; missing (partition, offset, reason): {missing:?}",
        dead.len(),
        produced.bad
    );
    assert_eq!(dead.len() as u64, produced.bad, "dead letters");
    for (p, i, reason) in &expected.bad {
        let (got_reason, payload) = dead
            .get(&(*p as i32, *i as i64))
            .expect("bad event in the DLQ");
        assert_eq!(got_reason, reason.as_str());
        assert_eq!(payload, &parts[*p][*i], "payload forwarded unchanged");
    }

    // Every late event is in the late topic, naming the aggregates it missed
    // and how many windows of each (`aggregate:N`).
    let late = read_all(&format!("{topic}.late")).expect("read late topic");
    let got_late: BTreeSet<(String, String, u32)> = late
        .iter()
        .flat_map(|m| {
            let source = m
                .headers
                .get("footprint.source")
                .cloned()
                .unwrap_or_default();
            m.headers
                .get("footprint.late")
                .map(|l| {
                    l.split(',')
                        .map(|x| {
                            let (agg, n) = x.split_once(':').expect("aggregate:windows");
                            (agg.to_owned(), n.parse::<u32>().expect("a window count"))
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
                .into_iter()
                .map(move |(agg, n)| (source.clone(), agg, n))
        })
        .collect();
    let expected_late: BTreeSet<(String, String, u32)> = expected
        .late
        .iter()
        .map(|l| {
            (
                format!("{topic}/{}/{}", l.partition, l.index),
                l.aggregate.clone(),
                l.windows,
            )
        })
        .collect();
    assert!(!expected_late.is_empty());
    assert_eq!(got_late, expected_late, "late events");
    assert_eq!(
        late.len(),
        expected
            .late
            .iter()
            .map(|l| (l.partition, l.index))
            .collect::<BTreeSet<_>>()
            .len()
    );
    assert_eq!(report.late, expected.late.len() as u64);

    // The file sink holds the same final rows, each once.
    let text = std::fs::read_to_string(dir.path().join("results.jsonl")).expect("results file");
    let w1 = std::fs::read_to_string(dir.path().join("results.w1.jsonl")).unwrap_or_default();
    let identity = |v: &serde_json::Value| {
        (
            v["aggregate"].to_string(),
            v["key"].to_string(),
            v["window_start"].as_i64().expect("window_start"),
        )
    };
    let mut file_finals = BTreeMap::new();
    for line in text.lines().chain(w1.lines()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON row");
        if v["final"] == serde_json::json!(true) {
            let previous = file_finals.insert(identity(&v), v);
            assert!(
                previous.is_none(),
                "a final row written twice: {previous:?}"
            );
        }
    }
    let expected_finals: BTreeMap<_, _> = expected
        .windows
        .values()
        .map(|w| {
            let v = Output::Window(w.clone()).to_json();
            (identity(&v), v)
        })
        .collect();
    assert_eq!(
        file_finals.len(),
        expected_finals.len(),
        "final rows in the file"
    );
    assert!(
        file_finals == expected_finals,
        "the file's final rows equal the reference"
    );
}
