//! Admin API handlers.

use std::collections::BTreeMap;
use std::convert::Infallible;

use footprint_sinks::util::switch::Mode;
use warp::http::StatusCode;
use warp::reply::{self, Reply};

use super::AdminState;
use super::history::Sample;
use super::models::{
    ErrorBody, HistoryBody, ModeBody, PartitionStatus, RetryStatus, SinkStatus, SkippedStatus,
    Status,
};
use crate::health::BrokerState;

/// A request without the right bearer token.
#[derive(Debug)]
pub struct Unauthorized;

impl warp::reject::Reject for Unauthorized {}

fn error(status: StatusCode, message: impl Into<String>) -> reply::Response {
    reply::with_status(
        reply::json(&ErrorBody {
            error: message.into(),
        }),
        status,
    )
    .into_response()
}

/// `GET /health`: 200 while the broker serves this process, 503 (naming
/// the broker and what is wrong) when it does not.
pub fn health(state: AdminState) -> reply::Response {
    let degraded: Vec<String> = state
        .process
        .switches
        .all()
        .into_iter()
        .filter(|(_, m)| *m == Mode::Degraded)
        .map(|(s, _)| s)
        .collect();
    let broker = state.process.health.broker();
    let ok = broker.state == BrokerState::Ok;
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "unhealthy" },
        "degraded_sinks": degraded,
        "broker": broker,
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply::with_status(reply::json(&body), code).into_response()
}

fn modes(state: &AdminState) -> BTreeMap<String, String> {
    state
        .process
        .switches
        .all()
        .into_iter()
        .map(|(s, m)| (s, m.as_str().to_owned()))
        .collect()
}

/// `GET /switches`.
pub fn switches(state: AdminState) -> reply::Response {
    reply::json(&modes(&state)).into_response()
}

/// `PUT /switches/{sink}`: publishes the new mode on the control topic (so
/// every process sees it and it survives restarts), then applies it here.
pub async fn put_switch(
    sink: String,
    body: bytes::Bytes,
    state: AdminState,
) -> Result<reply::Response, Infallible> {
    // Any content type: `curl -d '{"mode":"degraded"}'` sends a form type.
    let body: ModeBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                format!("bad body: {e}; expected {{\"mode\": \"auto\" | \"degraded\"}}"),
            ));
        }
    };
    let mode = match body.mode.parse::<Mode>() {
        Ok(m) => m,
        Err(e) => return Ok(error(StatusCode::BAD_REQUEST, e.to_string())),
    };
    let switches = &state.process.switches;
    if switches.get(&sink).is_none() {
        let known: Vec<String> = switches.all().into_iter().map(|(s, _)| s).collect();
        return Ok(error(
            StatusCode::NOT_FOUND,
            format!("no sink `{sink}`; switchable sinks: {known:?}"),
        ));
    }
    if let Some(publisher) = &state.publisher
        && let Err(e) = publisher.publish(&sink, mode).await
    {
        return Ok(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the control topic did not acknowledge the change, so this process did not apply it: {e}. \
                 GET /switches shows the mode in force (a change the broker wrote without acknowledging it still takes effect)"
            ),
        ));
    }
    switches.set(&sink, mode);
    tracing::info!(sink = %sink, %mode, "switch set through the admin API");
    Ok(reply::json(&serde_json::json!({ "sink": sink, "mode": mode.as_str() })).into_response())
}

/// How recently the replay position must have risen for `/status` to call
/// the replay job `applying`, ms. The worker sees the job only through its
/// group's commits, measured every few seconds.
pub const REPLAY_ACTIVE_MS: i64 = 30_000;

/// `GET /status`.
pub fn status(state: AdminState) -> reply::Response {
    reply::json(&status_of(&state)).into_response()
}

/// What `GET /status` answers.
pub fn status_of(state: &AdminState) -> Status {
    let process = &state.process;
    let m = &process.dataflow;
    let now_ms = footprint_telemetry::now_ms();
    let sinks: BTreeMap<String, SinkStatus> = process
        .switches
        .all()
        .into_iter()
        .map(|(sink, mode)| {
            let latency = process
                .sinks
                .write_latency_seen(&sink)
                .map(|l| l.quantiles())
                .unwrap_or_default();
            let status = SinkStatus {
                mode: mode.as_str().to_owned(),
                breaker: process
                    .sinks
                    .breaker_state(&sink)
                    .map_or("unknown", |b| b.as_str())
                    .to_owned(),
                written: process.sinks.written(&sink),
                diverted: process.sinks.diverted(&sink),
                failed: process.sinks.failed(&sink),
                writes_timed: latency.count,
                write_p99_ms: (latency.count > 0).then_some(latency.p99.as_secs_f64() * 1000.0),
            };
            (sink, status)
        })
        .collect();
    let journal_records = state.journal.as_ref().map_or(0, |r| r.journal_len());
    let table = m.partitions();
    let partitions = table
        .views()
        .into_iter()
        .map(|v| {
            let (topic, partition) = table.name_of(v.id);
            PartitionStatus {
                lag: process.connectors.consumer_lag(&topic, partition),
                topic,
                partition,
                watermark_ms: v.watermark_ms,
                max_event_ms: v.max_event_ms,
                state: v.state.as_str(),
            }
        })
        .collect();
    let skipped = state
        .skipped
        .iter()
        .map(|s| SkippedStatus {
            range: s.clone(),
            backfill: s
                .reason
                .fillable()
                .then(|| crate::run::backfill_command(&[s], state.name_topics)),
        })
        .collect();
    Status {
        now_ms,
        watermark_ms: m.watermark_ms(),
        max_event_ts_ms: m.max_event_ms(),
        watermark_delay_ms: m.watermark_delay_ms(),
        events_in: m.events_in(),
        events_bad: m.bad_total(),
        events_late: m.late_total(),
        switches: sinks
            .iter()
            .map(|(s, v)| (s.clone(), v.mode.clone()))
            .collect(),
        diverted: sinks.iter().map(|(s, v)| (s.clone(), v.diverted)).collect(),
        sinks,
        journal_records,
        retry: retry_status(state, journal_records, now_ms),
        partitions,
        skipped,
        broker: process.health.broker(),
    }
}

fn retry_status(state: &AdminState, journal_records: usize, now_ms: i64) -> RetryStatus {
    let c = &state.process.connectors;
    let backlog = c.retry_backlog();
    let moved = c.replay_moved_ms();
    let replay = match backlog {
        None => "unknown",
        Some(_) if moved.is_some_and(|t| now_ms - t <= REPLAY_ACTIVE_MS) => "applying",
        Some(0) if journal_records == 0 => "caught_up",
        Some(_) => "waiting",
    };
    RetryStatus {
        backlog_records: backlog,
        journal_records,
        replay_position: c.replay_position(),
        replay_moved_ms: moved,
        replay_active_ms: REPLAY_ACTIVE_MS,
        replay,
    }
}

/// `GET /history`.
pub fn history(state: AdminState) -> reply::Response {
    reply::json(&HistoryBody {
        interval_ms: u64::try_from(super::history::INTERVAL.as_millis()).unwrap_or(u64::MAX),
        samples: state.history.samples(),
    })
    .into_response()
}

/// Takes one sample of the counters the console charts.
pub fn sample(state: &AdminState) {
    let m = &state.process.dataflow;
    state.history.record(Sample {
        at_ms: footprint_telemetry::now_ms(),
        events_in: m.events_in(),
        events_bad: m.bad_total(),
        events_late: m.late_total(),
    });
}

/// `GET /metrics`: the process's registry, in the Prometheus text format.
pub fn metrics(state: AdminState) -> reply::Response {
    reply::with_header(
        state.process.encode_metrics(),
        "content-type",
        footprint_telemetry::CONTENT_TYPE,
    )
    .into_response()
}

/// Turns rejections into JSON errors with the right status.
pub async fn rejection(err: warp::Rejection) -> Result<reply::Response, Infallible> {
    Ok(if err.find::<Unauthorized>().is_some() {
        error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
    } else if err.is_not_found() {
        error(StatusCode::NOT_FOUND, "no such route")
    } else if let Some(e) = err.find::<warp::filters::body::BodyDeserializeError>() {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad body: {e}; expected {{\"mode\": \"auto\" | \"degraded\"}}"),
        )
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        error(StatusCode::PAYLOAD_TOO_LARGE, "body too large")
    } else {
        error(StatusCode::BAD_REQUEST, format!("{err:?}"))
    })
}
