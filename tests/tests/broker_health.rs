//! `/health` while the broker accepts connections but refuses every request.
//!
//! librdkafka's mock cluster stages what a real broker cannot be made to do
//! on demand: it stays up and answers every request with an error (as tansu
//! did when its storage task had died). A streaming worker runs against it
//! with `health.broker_timeout = "2s"`. `/health` must turn 503 and name
//! the broker, no sooner than the timeout after the refusals began, and
//! turn 200 again once the broker answers. The log says so once at ERROR
//! and once at INFO, however many requests failed in between.

use std::time::{Duration, Instant};

use footprint_connectors::client::KafkaSettings;
use footprint_connectors::producer::EventProducer;
use footprint_dataflows::clickstream::{GenConfig, Generator};
use footprint_tests::{
    Scenario, admin_addr_from_log, get_json_status, spawn_footprint_env, wait_until,
};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const BROKER_TIMEOUT: Duration = Duration::from_secs(2);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Every request a worker sends; each is answered with UNKNOWN_SERVER_ERROR.
const REQUESTS: [RDKafkaApiKey; 8] = [
    RDKafkaApiKey::Metadata,
    RDKafkaApiKey::Fetch,
    RDKafkaApiKey::ListOffsets,
    RDKafkaApiKey::OffsetFetch,
    RDKafkaApiKey::OffsetCommit,
    RDKafkaApiKey::FindCoordinator,
    RDKafkaApiKey::Produce,
    RDKafkaApiKey::InitProducerId,
];

#[test]
fn health_turns_unhealthy_while_the_broker_refuses_requests_and_back_after() {
    let mock = MockCluster::new(1).expect("mock cluster");
    let s = Scenario::new("broker-health").expect("scenario");
    for t in [
        s.topic.clone(),
        format!("{}.dlq", s.topic),
        format!("{}.late", s.topic),
        "footprint.checkpoints".to_owned(),
    ] {
        mock.create_topic(&t, 2, 1).expect("create topic");
    }
    let brokers = mock.bootstrap_servers();
    let settings = KafkaSettings::new(brokers.clone());
    let producer = EventProducer::new(&settings).expect("producer");
    let mut generator = Generator::new(GenConfig {
        partitions: 2,
        ..GenConfig::default()
    });
    for _ in 0..2_000 {
        let e = generator.next_event();
        producer
            .send(&s.topic, e.partition as i32, e.key.as_bytes(), &e.payload)
            .expect("send");
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("the events are written");
    let toml = format!(
        "[source]\nbrokers = \"{brokers}\"\ntopics = [\"{}\"]\ngroup_id = \"{}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n[health]\nbroker_timeout = \"{}s\"\n\n\
         [[aggregate]]\nname = \"events_1m\"\ngroup_by = [\"event\"]\n\
         window = {{ tumbling = \"1m\" }}\nmeasures = [\"count\"]\nsinks = []\n",
        s.topic,
        s.group,
        BROKER_TIMEOUT.as_secs()
    );
    let config = s.dir.join("footprint.toml");
    std::fs::write(&config, &toml).expect("config");
    let log = s.dir.join("worker.log");
    let env = [("FOOTPRINT_BROKERS", brokers.as_str())];
    let mut worker = spawn_footprint_env(&config, &["worker"], &log, &env).expect("start");
    let admin = admin_addr_from_log(&log).expect("the worker's admin API");
    let healthy = || get_json_status(admin, "/health").is_ok_and(|(code, _)| code == 200);
    wait_until(Duration::from_secs(60), "a healthy start", healthy).expect("healthy");

    // The broker refuses every request from now on.
    let refusals = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN; 200_000];
    for api in REQUESTS {
        mock.request_errors(api, &refusals);
    }
    let refusing = Instant::now();
    let mut seen = serde_json::Value::Null;
    wait_until(
        Duration::from_secs(60),
        "/health turns 503",
        || match get_json_status(admin, "/health") {
            Ok((503, body)) => {
                seen = body;
                true
            }
            _ => false,
        },
    )
    .expect("unhealthy while the broker refuses requests");
    let to_unhealthy = refusing.elapsed();
    let seen_ms = now_ms();
    assert_eq!(seen["status"], "unhealthy", "{seen}");
    assert_eq!(seen["broker"]["state"], "unreachable", "{seen}");
    assert_eq!(seen["broker"]["brokers"], brokers.as_str(), "{seen}");
    // Unhealthy only once no request has succeeded for the timeout.
    let since_ms = seen["broker"]["since_ms"].as_i64().expect("since_ms");
    assert!(
        seen_ms - since_ms >= BROKER_TIMEOUT.as_millis() as i64,
        "the last success was {} ms before: {seen}",
        seen_ms - since_ms
    );
    assert!(
        worker.try_wait().expect("poll").is_none(),
        "the worker keeps running"
    );

    // The broker answers again.
    for api in REQUESTS {
        mock.clear_request_errors(api);
    }
    let answering = Instant::now();
    wait_until(Duration::from_secs(60), "/health turns 200", healthy)
        .expect("healthy once the broker answers");
    let to_healthy = answering.elapsed();
    println!(
        "FIGURE broker health: unhealthy {:.1} s after the refusals began (timeout {} s), healthy {:.1} s after they ended",
        to_unhealthy.as_secs_f64(),
        BROKER_TIMEOUT.as_secs(),
        to_healthy.as_secs_f64()
    );
    worker.kill().expect("stop the worker");
    let _ = worker.wait();
    let text = std::fs::read_to_string(&log).expect("log");
    let lines = |what: &str| text.lines().filter(|l| l.contains(what)).count();
    assert_eq!(
        lines("the broker does not serve this process"),
        1,
        "one ERROR line for the whole outage; see {}",
        log.display()
    );
    assert_eq!(
        lines("the broker serves this process again"),
        1,
        "one line when it ends; see {}",
        log.display()
    );
    s.clean();
}
