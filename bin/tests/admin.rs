//! The admin API, in-process (`warp::test`) and over real HTTP, and the
//! metrics it serves: produced by the metrics library, in base units.
//! (`tests/tests/metrics.rs` runs `promtool check metrics` on them.)

use std::sync::Arc;
use std::time::Duration;

use footprint::admin::{AdminState, filters::routes, serve};
use footprint::config::Config;
use footprint::process::Process;
use footprint_connectors::events::{
    ConsumerLagMeasured, KafkaClientError, OffsetsSkipped, RetryBacklogMeasured,
};
use footprint_connectors::offsets::{SkipReason, Skipped};
use footprint_dataflows::BadReason;
use footprint_dataflows::events::{EventRejected, MessagesRead, WatermarkAdvanced};
use footprint_sinks::events::{BreakerSeen, RowsDiverted};
use footprint_sinks::util::breaker::BreakerState;
use footprint_sinks::util::switch::Mode;
use footprint_telemetry::InternalEvent;

/// A process with a Redis and a MySQL sink (never reached here).
fn process() -> Arc<Process> {
    let cfg = Config::from_layers(
        Some(
            "[sinks.redis]\nurl = \"redis://127.0.0.1:1\"\n[sinks.mysql]\nurl = \"mysql://root@127.0.0.1:1/none\"\n",
        ),
        Vec::<(String, String)>::new(),
    )
    .expect("config");
    Process::new(&cfg).expect("process")
}

/// A skipped range of the `events` topic.
fn range(partition: i32, from: i64, to: i64, reason: SkipReason) -> Skipped {
    Skipped {
        topic: "events".into(),
        partition,
        from,
        to,
        from_max_ts: None,
        reason,
    }
}

/// An HTTP client for which every status is an answer.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// `GET path` on `api`, as JSON.
async fn json_at<F>(api: &F, path: &str) -> serde_json::Value
where
    F: warp::Filter + 'static,
    F::Extract: warp::Reply + Send,
{
    serde_json::from_slice(warp::test::request().path(path).reply(api).await.body()).expect("json")
}

fn state(token: Option<&str>) -> AdminState {
    AdminState {
        process: process(),
        publisher: None,
        journal: None,
        token: token.map(Arc::from),
        skipped: Arc::from([]),
        name_topics: false,
        history: Arc::default(),
    }
}

#[tokio::test]
async fn lists_and_flips_switches() {
    let s = state(None);
    let switches = Arc::clone(&s.process.switches);
    let api = routes(s.clone());
    let res = warp::test::request()
        .method("GET")
        .path("/switches")
        .reply(&api)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(res.body()).expect("json"),
        serde_json::json!({"mysql": "auto", "redis": "auto"})
    );

    let res = warp::test::request()
        .method("PUT")
        .path("/switches/mysql")
        .json(&serde_json::json!({"mode": "degraded"}))
        .reply(&api)
        .await;
    assert_eq!(res.status(), 200, "{:?}", res.body());
    assert_eq!(switches.get("mysql"), Some(Mode::Degraded));
    let health: serde_json::Value = json_at(&api, "/health").await;
    assert_eq!(health["degraded_sinks"], serde_json::json!(["mysql"]));

    let unknown = warp::test::request()
        .method("PUT")
        .path("/switches/kafka")
        .json(&serde_json::json!({"mode": "auto"}))
        .reply(&api)
        .await;
    assert_eq!(unknown.status(), 404);
    let bad_mode = warp::test::request()
        .method("PUT")
        .path("/switches/redis")
        .json(&serde_json::json!({"mode": "off"}))
        .reply(&api)
        .await;
    assert_eq!(bad_mode.status(), 400);
    let bad_body = warp::test::request()
        .method("PUT")
        .path("/switches/redis")
        .body("not json")
        .reply(&api)
        .await;
    assert_eq!(bad_body.status(), 400);
    assert_eq!(
        switches.get("redis"),
        Some(Mode::Auto),
        "rejected requests change nothing"
    );
}

#[tokio::test]
async fn accepts_the_body_curl_sends_with_a_form_content_type() {
    let s = state(None);
    let api = routes(s.clone());
    let res = warp::test::request()
        .method("PUT")
        .path("/switches/mysql")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"mode":"degraded"}"#)
        .reply(&api)
        .await;
    assert_eq!(res.status(), 200, "{:?}", res.body());
    assert_eq!(s.process.switches.get("mysql"), Some(Mode::Degraded));
}

#[tokio::test]
async fn requires_the_bearer_token_when_one_is_set() {
    let api = routes(state(Some("s3cret")));
    let health = |auth: Option<&'static str>| {
        let mut req = warp::test::request().path("/health");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let api = api.clone();
        async move { req.reply(&api).await.status() }
    };
    assert_eq!(health(None).await, 401);
    assert_eq!(health(Some("Bearer wrong")).await, 401);
    assert_eq!(
        health(Some("bearer s3cret")).await,
        200,
        "the scheme is case-insensitive"
    );
}

/// Moves every kind of metric the process has, so `/metrics` shows them all.
fn exercise(p: &Process) {
    MessagesRead {
        events: 1234,
        tail: 0,
        max_event_ms: Some(1_767_225_661_500),
    }
    .emit(&p.dataflow);
    WatermarkAdvanced {
        watermark_ms: 1_767_225_660_000,
    }
    .emit(&p.dataflow);
    for offset in 0..7 {
        EventRejected {
            reason: BadReason::MissingField,
            partition: 0,
            offset,
            detail: "no user_id",
        }
        .emit(&p.dataflow);
    }
    RowsDiverted {
        sink: "mysql",
        rows: 42,
        reason: "switch degraded",
    }
    .emit(&p.sinks);
    p.switches.set("mysql", Mode::Degraded);
    let e2e = p.sinks.end_to_end_latency("redis");
    for ms in 1..=1000u64 {
        e2e.record(Duration::from_millis(ms));
    }
    p.sinks
        .write_latency("redis")
        .record(Duration::from_micros(2_500));
    BreakerSeen {
        sink: "mysql",
        state: BreakerState::Open,
    }
    .emit(&p.sinks);
    ConsumerLagMeasured {
        lags: &[("events".into(), 3, 120)],
    }
    .emit(&p.connectors);
    RetryBacklogMeasured {
        records: 17,
        position: 40,
        at_ms: 1_000,
    }
    .emit(&p.connectors);
    OffsetsSkipped {
        skipped: &range(1, 10, 25, SkipReason::SkipToLatest),
        committed: Some(10),
        start: 25,
    }
    .emit(&p.connectors);
    KafkaClientError {
        error: &rdkafka::error::KafkaError::MessageProduction(
            rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure,
        ),
        reason: "test",
    }
    .emit(&p.connectors);
    p.flow.rows_queued(5);
}

#[tokio::test]
async fn status_and_metrics_report_the_counters() {
    let s = state(None);
    exercise(&s.process);
    let api = routes(s.clone());

    let status: serde_json::Value = json_at(&api, "/status").await;
    assert_eq!(status["events_in"], 1234);
    assert_eq!(status["events_bad"], 7);
    assert_eq!(status["diverted"]["mysql"], 42);
    assert_eq!(status["switches"]["mysql"], "degraded");
    assert_eq!(status["watermark_delay_ms"], 1500);

    let res = warp::test::request().path("/metrics").reply(&api).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        res.headers()
    );
    let text = String::from_utf8(res.body().to_vec()).expect("utf8");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let value = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    for (name, label, want) in [
        ("footprint_events_in_total", None, 1234.0),
        (
            "footprint_events_bad_total",
            Some(("reason", "missing_field")),
            7.0,
        ),
        (
            "footprint_sink_diverted_total",
            Some(("sink", "mysql")),
            42.0,
        ),
        ("footprint_sink_degraded", Some(("sink", "mysql")), 1.0),
        ("footprint_sink_degraded", Some(("sink", "redis")), 0.0),
        ("footprint_sink_breaker_state", Some(("sink", "mysql")), 2.0),
        (
            "footprint_consumer_lag_messages",
            Some(("partition", "3")),
            120.0,
        ),
        ("footprint_retry_backlog_records", None, 17.0),
        ("footprint_sink_rows_waiting", None, 5.0),
        ("footprint_watermark_delay_seconds", None, 1.5),
        (
            "footprint_offsets_skipped_total",
            Some(("reason", "skip_to_latest")),
            15.0,
        ),
    ] {
        assert_eq!(value(name, label), Some(want), "{name} {label:?}");
    }
    let e2e = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "footprint_end_to_end_latency_seconds"
                && s.labels.get("sink") == Some("redis")
        })
        .expect("end-to-end histogram");
    let prometheus_parse::Value::Histogram(buckets) = &e2e.value else {
        panic!("not a histogram: {:?}", e2e.value)
    };
    let le = |bound: f64| {
        buckets
            .iter()
            .find(|b| (b.less_than - bound).abs() < 1e-9)
            .map(|b| b.count)
    };
    assert_eq!(le(0.1), Some(100.0), "100 of 1..1000 ms are at most 0.1 s");
    assert_eq!(le(0.5), Some(500.0));
    assert_eq!(le(1.0), Some(1000.0));
}

fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> u16 {
    let agent = agent();
    let mut req = agent.get(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.call().expect("request").status().as_u16()
}

#[test]
fn serves_over_real_http_and_rejects_requests_without_the_token() {
    let s = state(Some("tok"));
    let server = serve("127.0.0.1:0".parse().expect("addr"), s.clone()).expect("serve");
    assert_eq!(get(server.addr, "/switches", None), 401);
    assert_eq!(get(server.addr, "/switches", Some("nope")), 401);
    let agent = agent();
    let put = agent
        .put(format!("http://{}/switches/redis", server.addr))
        .header("authorization", "Bearer tok")
        .send_json(serde_json::json!({"mode": "degraded"}))
        .expect("request");
    assert_eq!(put.status().as_u16(), 200);
    assert_eq!(s.process.switches.get("redis"), Some(Mode::Degraded));
    assert_eq!(get(server.addr, "/metrics", Some("tok")), 200);
}

#[tokio::test]
async fn status_shows_each_sink_partition_the_retry_topic_and_backfill_commands() {
    use footprint_dataflows::partitions::{PartitionState, PartitionView};
    use footprint_sinks::events::RowsWritten;
    let mut s = state(None);
    s.skipped = Arc::from([
        range(1, 10, 25, SkipReason::SkipToLatest),
        range(2, 0, 7, SkipReason::BeforeStart),
    ]);
    let p = Arc::clone(&s.process);
    exercise(&p);
    RowsWritten {
        sink: "redis",
        rows: &[],
        took: Some(Duration::from_millis(3)),
    }
    .emit(&p.sinks);
    p.dataflow
        .partitions()
        .name([(0, "events".into(), 0), (1, "events".into(), 3)]);
    p.dataflow.partitions().publish([
        PartitionView {
            id: 0,
            watermark_ms: 1_767_225_600_000,
            max_event_ms: Some(1_767_225_603_000),
            state: PartitionState::Idle,
        },
        PartitionView {
            id: 1,
            watermark_ms: 1_767_225_660_000,
            max_event_ms: Some(1_767_225_663_000),
            state: PartitionState::Held,
        },
    ]);
    // The replay position rose since the last measurement: a replay job is
    // applying records.
    let now = footprint_telemetry::now_ms();
    RetryBacklogMeasured {
        records: 12,
        position: 45,
        at_ms: now,
    }
    .emit(&p.connectors);
    let api = routes(s.clone());
    let status: serde_json::Value = json_at(&api, "/status").await;

    let mysql = &status["sinks"]["mysql"];
    assert_eq!(mysql["mode"], "degraded");
    assert_eq!(mysql["breaker"], "open");
    assert_eq!(mysql["diverted"], 42);
    assert_eq!(
        mysql["write_p99_ms"],
        serde_json::Value::Null,
        "never timed"
    );
    let redis = &status["sinks"]["redis"];
    assert_eq!(redis["breaker"], "unknown");
    assert_eq!(redis["writes_timed"], 2);
    let p99 = redis["write_p99_ms"].as_f64().expect("timed");
    assert!((2.4..=3.1).contains(&p99), "p99 of 2.5 and 3 ms: {p99}");

    assert_eq!(status["retry"]["backlog_records"], 12);
    assert_eq!(status["retry"]["replay_position"], 45);
    assert_eq!(status["retry"]["replay"], "applying");

    let parts = status["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1]["topic"], "events");
    assert_eq!(parts[1]["partition"], 3);
    assert_eq!(parts[1]["state"], "held");
    assert_eq!(parts[1]["lag"], 120, "the consumer lag of events/3");
    assert_eq!(parts[0]["state"], "idle");
    assert_eq!(parts[0]["lag"], serde_json::Value::Null, "not measured");

    let skipped = &status["skipped"][0];
    assert_eq!(skipped["from"], 10);
    assert_eq!(
        skipped["backfill"],
        "footprint worker --from 1:10 --to 1:25"
    );
    assert_eq!(
        status["skipped"][1]["backfill"],
        serde_json::Value::Null,
        "offsets deleted by retention cannot be backfilled"
    );

    let text = String::from_utf8(
        warp::test::request()
            .path("/metrics")
            .reply(&api)
            .await
            .body()
            .to_vec(),
    )
    .expect("utf8");
    for line in [
        "footprint_partition_watermark_seconds{topic=\"events\",partition=\"3\"} 1767225660",
        "footprint_partition_held{topic=\"events\",partition=\"3\"} 1",
        "footprint_partition_idle{topic=\"events\",partition=\"0\"} 1",
        "footprint_partition_idle{topic=\"events\",partition=\"3\"} 0",
        "footprint_replay_position_records 45",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "{line} in\n{text}"
        );
    }
}

#[tokio::test]
async fn without_a_new_commit_the_replay_job_is_shown_waiting() {
    let s = state(None);
    let c = &s.process.connectors;
    for _ in 0..2 {
        RetryBacklogMeasured {
            records: 5,
            position: 30,
            at_ms: footprint_telemetry::now_ms(),
        }
        .emit(c);
    }
    let api = routes(s.clone());
    let status: serde_json::Value = json_at(&api, "/status").await;
    assert_eq!(status["retry"]["replay"], "waiting");
    assert_eq!(status["retry"]["replay_moved_ms"], serde_json::Value::Null);
    RetryBacklogMeasured {
        records: 0,
        position: 35,
        at_ms: footprint_telemetry::now_ms() - 60_000,
    }
    .emit(c);
    let status: serde_json::Value = json_at(&api, "/status").await;
    assert_eq!(
        status["retry"]["replay"], "caught_up",
        "a rise a minute ago, and nothing waits"
    );
}

#[test]
fn the_console_page_needs_no_token_and_its_data_does() {
    let s = state(Some("tok"));
    let server = serve("127.0.0.1:0".parse().expect("addr"), s.clone()).expect("serve");
    let agent = agent();
    for (path, kind) in [
        ("/", "text/html"),
        ("/console.js", "text/javascript"),
        ("/console.css", "text/css"),
    ] {
        let res = agent
            .get(format!("http://{}{path}", server.addr))
            .call()
            .expect("request");
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let headers = res.headers();
        assert!(
            headers["content-type"]
                .to_str()
                .is_ok_and(|c| c.starts_with(kind)),
            "{path}: {headers:?}"
        );
        assert!(
            headers["content-security-policy"]
                .to_str()
                .is_ok_and(|c| c.contains("default-src 'none'")),
            "{path}: {headers:?}"
        );
    }
    assert_eq!(get(server.addr, "/status", None), 401);
    assert_eq!(get(server.addr, "/history", None), 401);
    assert_eq!(get(server.addr, "/history", Some("tok")), 200);
    assert_eq!(get(server.addr, "/nothing-here", Some("tok")), 404);
}

#[tokio::test]
async fn history_serves_the_samples_oldest_first() {
    let s = state(None);
    footprint::admin::handlers::sample(&s);
    MessagesRead {
        events: 10,
        tail: 0,
        max_event_ms: None,
    }
    .emit(&s.process.dataflow);
    footprint::admin::handlers::sample(&s);
    let api = routes(s.clone());
    let body: serde_json::Value = json_at(&api, "/history").await;
    assert_eq!(body["interval_ms"], 2000);
    let samples = body["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0]["events_in"], 0);
    assert_eq!(samples[1]["events_in"], 10);
}

#[test]
fn beside_the_console_other_methods_and_paths_keep_their_answers() {
    let s = state(Some("tok"));
    let server = serve("127.0.0.1:0".parse().expect("addr"), s.clone()).expect("serve");
    let agent = agent();
    let put = |path: &str, body: &str| {
        agent
            .put(format!("http://{}{path}", server.addr))
            .header("authorization", "Bearer tok")
            .send(body)
            .expect("request")
            .status()
            .as_u16()
    };
    assert_eq!(put("/switches/mysql", &"x".repeat(8 * 1024)), 413);
    assert_eq!(put("/nothing-here", "{}"), 404);
    let post_page = agent
        .post(format!("http://{}/", server.addr))
        .header("authorization", "Bearer tok")
        .send("")
        .expect("request")
        .status()
        .as_u16();
    assert_eq!(post_page, 405, "the console's files are only read");
    assert_eq!(
        s.process.switches.get("mysql"),
        Some(Mode::Auto),
        "nothing changed"
    );
}
