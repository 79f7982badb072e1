//! The admin API, in-process (`warp::test`) and over real HTTP.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use footprint::admin::{AdminState, filters::routes, serve};
use footprint_dataflows::metrics::Metrics;
use footprint_sinks::util::switch::{Mode, Switches};

fn state(token: Option<&str>) -> AdminState {
    AdminState {
        switches: Arc::new(Switches::new(["redis", "mysql"])),
        metrics: Arc::new(Metrics::new(vec!["item_activity_1m".into()])),
        publisher: None,
        journal: None,
        token: token.map(Arc::from),
    }
}

#[tokio::test]
async fn lists_and_flips_switches() {
    let s = state(None);
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
    assert_eq!(s.switches.get("mysql"), Some(Mode::Degraded));
    let health: serde_json::Value = serde_json::from_slice(
        warp::test::request()
            .path("/health")
            .reply(&api)
            .await
            .body(),
    )
    .expect("json");
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
        s.switches.get("redis"),
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
    assert_eq!(s.switches.get("mysql"), Some(Mode::Degraded));
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

#[tokio::test]
async fn status_and_metrics_report_the_counters() {
    let s = state(None);
    s.metrics.events_in.fetch_add(1234, Ordering::Relaxed);
    s.metrics.events_bad[footprint_dataflows::BadReason::MissingField.index()]
        .fetch_add(7, Ordering::Relaxed);
    Metrics::add_sink(&s.metrics.sink_diverted, "mysql", 42);
    s.switches.set("mysql", Mode::Degraded);
    for ms in 1..=1000u64 {
        s.metrics.end_to_end_ms.record("redis", ms);
    }
    s.metrics.sink_write_us.record("redis", 2_500);
    Metrics::set_sink(&s.metrics.sink_breaker_state, "mysql", 2);
    if let Ok(mut lag) = s.metrics.consumer_lag.lock() {
        lag.push(("events".into(), 3, 120));
    }
    s.metrics.retry_backlog.store(17, Ordering::Relaxed);
    let api = routes(s.clone());

    let status: serde_json::Value = serde_json::from_slice(
        warp::test::request()
            .path("/status")
            .reply(&api)
            .await
            .body(),
    )
    .expect("json");
    assert_eq!(status["events_in"], 1234);
    assert_eq!(status["diverted"]["mysql"], 42);
    assert_eq!(status["switches"]["mysql"], "degraded");

    let res = warp::test::request().path("/metrics").reply(&api).await;
    assert_eq!(res.status(), 200);
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
    assert_eq!(value("footprint_events_in_total", None), Some(1234.0));
    assert_eq!(
        value(
            "footprint_events_bad_total",
            Some(("reason", "missing_field"))
        ),
        Some(7.0)
    );
    assert_eq!(
        value("footprint_sink_diverted_total", Some(("sink", "mysql"))),
        Some(42.0)
    );
    assert_eq!(
        value("footprint_sink_degraded", Some(("sink", "mysql"))),
        Some(1.0)
    );
    assert_eq!(
        value("footprint_sink_degraded", Some(("sink", "redis"))),
        Some(0.0)
    );
    assert_eq!(
        value("footprint_sink_breaker_state", Some(("sink", "mysql"))),
        Some(2.0)
    );
    assert_eq!(
        value("footprint_consumer_lag_messages", Some(("partition", "3"))),
        Some(120.0)
    );
    assert_eq!(value("footprint_retry_backlog_records", None), Some(17.0));
    let e2e = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "footprint_end_to_end_latency_seconds"
                && s.labels.get("sink") == Some("redis")
        })
        .expect("end-to-end summary");
    let prometheus_parse::Value::Summary(quantiles) = &e2e.value else {
        panic!("not a summary: {:?}", e2e.value)
    };
    let q = |want: f64| {
        quantiles
            .iter()
            .find(|q| (q.quantile - want).abs() < 1e-9)
            .map(|q| q.count)
    };
    assert!(
        (q(0.5).expect("p50") - 0.5).abs() < 0.01,
        "p50 of 1..1000 ms is about 0.5 s"
    );
    assert!((q(0.99).expect("p99") - 0.99).abs() < 0.01);
    assert!(q(0.999).expect("p999") > 0.99);
}

fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    conn.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("read");
    answer
}

#[test]
fn serves_over_real_http_and_rejects_requests_without_the_token() {
    let s = state(Some("tok"));
    let server = serve("127.0.0.1:0".parse().expect("addr"), s.clone()).expect("serve");
    let no_token = http(
        server.addr,
        "GET /switches HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(no_token.starts_with("HTTP/1.1 401"), "{no_token}");
    let body = r#"{"mode":"degraded"}"#;
    let put = http(
        server.addr,
        &format!(
            "PUT /switches/redis HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(put.starts_with("HTTP/1.1 200"), "{put}");
    assert_eq!(s.switches.get("redis"), Some(Mode::Degraded));
}
