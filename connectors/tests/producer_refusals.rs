//! A producer never drops a refused message silently: the flush after it
//! fails and says how many were refused and why. Against librdkafka's mock
//! cluster, which can refuse produce requests on demand.

use std::time::Duration;

use footprint_connectors::ConnectorError;
use footprint_connectors::client::{Delivery, KafkaSettings};
use footprint_connectors::producer::EventProducer;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

fn refused_then_accepted(delivery: Delivery) {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic("events", 1, 1).expect("topic");
    let producer = EventProducer::with_delivery(
        &KafkaSettings::new(mock.bootstrap_servers()),
        delivery,
        "test",
    )
    .expect("producer");
    producer.send("events", 0, b"k", b"first").expect("send");
    producer
        .flush(Duration::from_secs(30))
        .expect("an accepted message flushes");

    // The broker refuses the next produce request for good.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD],
    );
    producer.send("events", 0, b"k", b"refused").expect("send");
    match producer.flush(Duration::from_secs(30)) {
        Err(ConnectorError::Undelivered { failed, first, .. }) => {
            assert_eq!(failed, 1, "{delivery:?}");
            assert!(first.contains("InvalidRecord"), "{delivery:?}: {first}");
        }
        other => panic!("{delivery:?}: a refused message must fail the flush: {other:?}"),
    }
    // Reported once: the next flush is about what was sent after it.
    producer.send("events", 0, b"k", b"after").expect("send");
    producer
        .flush(Duration::from_secs(30))
        .expect("the refusal is not reported twice");
}

#[test]
fn a_refused_message_fails_the_flush_once_whatever_the_delivery() {
    for delivery in [
        Delivery::Idempotent,
        Delivery::Ordered,
        Delivery::AtLeastOnce,
    ] {
        refused_then_accepted(delivery);
    }
}

/// An idempotent producer whose sequence the broker does not follow (as when
/// the broker lost its state) fails for good; it is replaced,
/// so the messages after it go through.
#[test]
fn an_idempotent_producer_that_failed_for_good_is_replaced() {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic("events", 1, 1).expect("topic");
    let producer =
        EventProducer::new(&KafkaSettings::new(mock.bootstrap_servers())).expect("producer");
    producer.send("events", 0, b"k", b"first").expect("send");
    producer.flush(Duration::from_secs(30)).expect("flushed");
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    producer.send("events", 0, b"k", b"refused").expect("send");
    let refused = producer.flush(Duration::from_secs(30));
    assert!(
        matches!(refused, Err(ConnectorError::Undelivered { failed: 1, .. })),
        "the refused message is reported: {refused:?}"
    );
    producer
        .send("events", 0, b"k", b"after")
        .expect("a new producer takes it");
    producer
        .flush(Duration::from_secs(30))
        .expect("and the broker acknowledges it");
}
