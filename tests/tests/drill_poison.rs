//! Drill: poison input. 1% of the messages are random garbage (random bytes,
//! events cut short or with bytes flipped, JSON of other shapes, deep
//! nesting), beside the generator's usual bad input. The worker never
//! crashes, every message the decoder rejects is in the dead-letter topic
//! unchanged with its reason and source, nothing else is, and the results of
//! the good events are exact in both stores.

use std::collections::BTreeMap;
use std::time::Duration;

use footprint_dataflows::clickstream::{GenConfig, Generator, Kind};
use footprint_dataflows::reference::compute;
use footprint_tests::drill::{Figures, Size};
use footprint_tests::{Scenario, preload, read_all, spawn_footprint, wait_exit};

#[test]
fn poison_input_goes_to_the_dead_letter_topic_and_the_rest_is_exact() {
    let size = Size::from_env();
    let events: u64 = size.pick(50_000, 500_000);
    let s = Scenario::new("drill-poison").expect("scenario");
    let gen_cfg = GenConfig {
        seed: 37,
        partitions: 4,
        users: 500,
        items: 50,
        events_per_sec: 50,
        garbage: 0.01,
        bad: 0.002,
        late: 0.002,
        late_by_ms: 70_000,
        ..GenConfig::default()
    };
    let (parts, _) = preload(&s.topic, &gen_cfg, events).expect("preload");
    let garbage = {
        let mut g = Generator::new(gen_cfg.clone());
        (0..events)
            .filter(|_| g.next_event().kind == Kind::Garbage)
            .count()
    };
    let (config, cfg) = s
        .write_config("footprint.toml", &s.toml("", ""))
        .expect("config");
    let log = s.dir.join("worker.log");
    let mut worker = spawn_footprint(&config, &["worker", "--until-end"], &log).expect("start");
    let status = wait_exit(&mut worker, Duration::from_secs(900), "the worker").expect("exit");
    assert!(
        status.success(),
        "the worker never crashes; see {}",
        log.display()
    );

    let spec = cfg.spec().expect("spec");
    let expected = compute(&spec, &parts);
    let dlq = read_all(&format!("{}.dlq", s.topic)).expect("read the dead-letter topic");
    let mut by_source: BTreeMap<(usize, usize), (&[u8], &str)> = BTreeMap::new();
    for m in &dlq {
        let source = m.headers.get("footprint.source").expect("a source header");
        let mut it = source.rsplitn(3, '/');
        let offset: usize = it.next().and_then(|o| o.parse().ok()).expect("offset");
        let partition: usize = it.next().and_then(|p| p.parse().ok()).expect("partition");
        let reason = m.headers.get("footprint.reason").expect("a reason header");
        let before = by_source.insert((partition, offset), (&m.payload, reason.as_str()));
        assert!(
            before.is_none(),
            "{source} is in the dead-letter topic twice"
        );
    }
    assert_eq!(
        dlq.len(),
        expected.bad.len(),
        "every rejected message, once"
    );
    for (p, i, reason) in &expected.bad {
        let (payload, got) = by_source
            .get(&(*p, *i))
            .unwrap_or_else(|| panic!("{p}/{i} ({reason:?}) is not in the dead-letter topic"));
        assert_eq!(*payload, parts[*p][*i].as_slice(), "forwarded unchanged");
        assert_eq!(*got, reason.as_str(), "with its reason");
    }
    let stored = s.stored(&spec).expect("load the stores");
    let figures = Figures::new("poison input", events, &expected, &stored)
        .with("garbage", garbage)
        .with("rejected", expected.bad.len())
        .with("dead-lettered", dlq.len())
        .with("good", expected.good);
    figures.report();
    figures.assert_exact();
    s.clean();
}
