//! Switch changes travel through the control topic: every follower sees a
//! toggle, and a follower started later (a restart) starts with the
//! persisted mode. How long the toggle took is printed (`FIGURE …`), not
//! asserted: timing belongs to benchmarks.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use footprint_connectors::admin::Admin;
use footprint_connectors::control::{ControlPublisher, follow};
use footprint_sinks::util::switch::{Mode, Switches};
use footprint_tests::{kafka, unique, wait_until};

fn wait_for(switches: &Switches, sink: &str, mode: Mode) {
    wait_until(
        Duration::from_secs(30),
        &format!("{sink} to be {mode}"),
        || switches.get(sink) == Some(mode),
    )
    .expect("the follower sees the toggle");
}

#[test]
fn every_follower_sees_a_toggle_and_a_restarted_one_starts_in_the_persisted_mode() {
    let topic = unique("control");
    let admin = Admin::new(&kafka()).expect("admin");
    admin.ensure_compacted(&topic).expect("control topic");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let followers: Vec<Arc<Switches>> = (0..3)
        .map(|_| Arc::new(Switches::new(["redis", "mysql"])))
        .collect();
    let handles: Vec<_> = followers
        .iter()
        .map(|s| follow(&admin, &topic, Arc::clone(s), Arc::clone(&stop)).expect("follow"))
        .collect();
    let publisher = ControlPublisher::new(&kafka(), &topic).expect("publisher");

    rt.block_on(publisher.publish("mysql", Mode::Degraded))
        .expect("publish");
    let published = Instant::now();
    for s in &followers {
        wait_for(s, "mysql", Mode::Degraded);
    }
    println!(
        "FIGURE switch propagation: a toggle seen by all 3 followers after {} ms",
        published.elapsed().as_millis()
    );
    assert!(
        followers.iter().all(|s| s.get("redis") == Some(Mode::Auto)),
        "only the toggled sink changes"
    );

    // A process that starts now reads the persisted mode before doing anything.
    let restarted = Arc::new(Switches::new(["redis", "mysql"]));
    let h = follow(&admin, &topic, Arc::clone(&restarted), Arc::clone(&stop)).expect("follow");
    assert_eq!(
        restarted.get("mysql"),
        Some(Mode::Degraded),
        "the mode survives a restart"
    );

    rt.block_on(publisher.publish("mysql", Mode::Auto))
        .expect("publish");
    wait_for(&restarted, "mysql", Mode::Auto);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for h in handles.into_iter().chain([h]) {
        h.join().expect("follower thread");
    }
}
