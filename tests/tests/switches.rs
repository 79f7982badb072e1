//! Switch changes travel through the control topic: every follower sees a
//! toggle within a second, and a follower started later (a restart) starts
//! with the persisted mode.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use footprint_connectors::compacted::ensure;
use footprint_connectors::control::{ControlPublisher, follow};
use footprint_sinks::util::switch::{Mode, Switches};
use footprint_tests::{kafka, unique};

fn wait_for(switches: &Switches, sink: &str, mode: Mode) -> Duration {
    let start = Instant::now();
    while switches.get(sink) != Some(mode) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

#[test]
fn every_follower_sees_a_toggle_within_a_second_and_it_survives_a_restart() {
    let topic = unique("control");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(ensure(&kafka(), &topic))
        .expect("control topic");
    let stop = Arc::new(AtomicBool::new(false));
    let followers: Vec<Arc<Switches>> = (0..3)
        .map(|_| Arc::new(Switches::new(["redis", "mysql"])))
        .collect();
    let handles: Vec<_> = followers
        .iter()
        .map(|s| follow(&kafka(), &topic, Arc::clone(s), Arc::clone(&stop)).expect("follow"))
        .collect();
    let publisher = ControlPublisher::new(&kafka(), &topic).expect("publisher");

    rt.block_on(publisher.publish("mysql", Mode::Degraded))
        .expect("publish");
    let published = Instant::now();
    for s in &followers {
        wait_for(s, "mysql", Mode::Degraded);
    }
    let took = published.elapsed();
    println!(
        "toggle seen by all 3 followers after {} ms",
        took.as_millis()
    );
    assert!(took <= Duration::from_secs(1), "took {took:?}");
    assert!(followers.iter().all(|s| s.get("redis") == Some(Mode::Auto)));

    // A process that starts now reads the persisted mode before doing anything.
    let restarted = Arc::new(Switches::new(["redis", "mysql"]));
    let h = follow(&kafka(), &topic, Arc::clone(&restarted), Arc::clone(&stop)).expect("follow");
    assert_eq!(
        restarted.get("mysql"),
        Some(Mode::Degraded),
        "the mode survives a restart"
    );

    rt.block_on(publisher.publish("mysql", Mode::Auto))
        .expect("publish");
    assert!(wait_for(&restarted, "mysql", Mode::Auto) <= Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for h in handles.into_iter().chain([h]) {
        h.join().expect("follower thread");
    }
}
