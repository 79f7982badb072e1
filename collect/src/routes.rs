//! The collector's HTTP API.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/events` | one outcome per event (see below) |
//! | `GET /health` | 200 while the process runs |
//! | `GET /ready` | 200 while Kafka takes events or the spill has room, else 503 |
//! | `GET /metrics` | Prometheus text |
//!
//! `POST /v1/events` takes one JSON event, a JSON array of events, or
//! NDJSON (`Content-Type: application/x-ndjson`), optionally compressed
//! (`Content-Encoding: gzip` or `zstd`). It answers
//! `{"accepted":N,"duplicate":N,"rejected":N,"results":[…]}` with one
//! result per event, in the body's order: `{"outcome":"accepted","event_id":…}`,
//! `duplicate`, `rejected` (with `reason` and `detail`), `shed`,
//! `over_quota`, `unavailable` (the spill is full) or `in_flight` (a retry
//! of an event still being written).
//!
//! Status: 200 when any event was taken; otherwise 503 with `Retry-After`
//! (spill full, app shed, retry in flight), 429 with `Retry-After` (over
//! quota; 413 when one request holds more events of an app than its
//! bucket) or 400 (no valid event). Before any event is read: 401 without a
//! valid token, 411 without `Content-Length`, 413 for a body over a cap,
//! 415 for another encoding, 400 for a body that does not decompress or
//! parse. Nothing answers 500.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use footprint_telemetry::{InternalEvent, Registry};
use serde_json::json;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};

use crate::body::{self, Encoding, Form};
use crate::collector::{Answer, Collector};
use crate::events::RequestAnswered;

/// The stack of the service's threads.
const STACK: usize = 8 * 1024 * 1024;

/// What the handlers share.
#[derive(Clone)]
struct State {
    collector: Arc<Collector>,
    registry: Arc<Registry>,
}

fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    reply::with_status(reply::json(&json!({ "error": message.into() })), status).into_response()
}

fn with_retry_after(mut r: Response, secs: u64) -> Response {
    if let Ok(v) = warp::http::HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(warp::http::header::RETRY_AFTER, v);
    }
    r
}

fn answer_response(a: &Answer) -> Response {
    let count = |name: &str| a.outcomes.iter().filter(|o| o.outcome == name).count();
    let mut body = json!({
        "accepted": count("accepted"),
        "duplicate": count("duplicate"),
        "rejected": count("rejected"),
        "results": a.outcomes,
    });
    let error = match a.status {
        400 => Some("no event in the request is valid; see results"),
        429 => Some("over the app's quota; retry after Retry-After seconds"),
        503 => Some("nothing could be taken now; retry after Retry-After seconds"),
        _ => None,
    };
    if let (Some(e), Some(map)) = (error, body.as_object_mut()) {
        map.insert("error".into(), e.into());
    }
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let r = reply::with_status(reply::json(&body), status).into_response();
    match a.retry_after {
        Some(s) => with_retry_after(r, s),
        None => r,
    }
}

struct Headers {
    authorization: Option<String>,
    encoding: Option<String>,
    content_type: Option<String>,
}

async fn events(
    headers: Headers,
    body: warp::hyper::body::Bytes,
    state: State,
) -> Result<Response, Infallible> {
    let started = Instant::now();
    // A task of its own: a client that goes away mid-request does not cut
    // the write short, so its event ids are always confirmed or released.
    let task_state = state.clone();
    let handled =
        tokio::spawn(async move { events_answer(&headers, &body, &task_state).await }).await;
    let response = handled.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a request's task did not finish");
        json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the request could not be finished; send it again",
        )
    });
    RequestAnswered {
        status: response.status().as_u16(),
        took: started.elapsed(),
    }
    .emit(state.collector.metrics());
    Ok(response)
}

async fn events_answer(headers: &Headers, body: &[u8], state: &State) -> Response {
    let collector = &state.collector;
    let Some(sender) = collector.sender(headers.authorization.as_deref()) else {
        return json_error(
            StatusCode::UNAUTHORIZED,
            "a valid app token is required (Authorization: Bearer TOKEN)",
        );
    };
    let settings = collector.settings();
    let decoded = Encoding::parse(headers.encoding.as_deref())
        .and_then(|enc| body::decompress(body, enc, settings.max_body, settings.max_decompressed));
    let decoded = match decoded {
        Ok(d) => d,
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            return json_error(status, e.to_string());
        }
    };
    let form = Form::parse(headers.content_type.as_deref());
    let items = match body::split(&decoded, form) {
        Ok(items) if items.is_empty() => {
            return json_error(StatusCode::BAD_REQUEST, "the body holds no event");
        }
        Ok(items) => items,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let answer = collector.take(&sender, &items).await;
    answer_response(&answer)
}

fn ready(state: &State) -> Response {
    let c = &state.collector;
    let kafka = !c.spilling();
    let room = c.spill_has_room();
    let body = json!({
        "ready": kafka || room,
        "kafka": if kafka { "taking events" } else { "not answering: events go to the spill" },
        "spill_bytes": c.spill_bytes(),
        "spill_max_bytes": c.settings().spill_max_bytes,
        "shed": c.shed_apps(),
    });
    let code = if kafka || room {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply::with_status(reply::json(&body), code).into_response()
}

fn metrics(state: &State) -> Response {
    match footprint_telemetry::encode(&state.registry) {
        Ok(text) => reply::with_header(text, "content-type", footprint_telemetry::CONTENT_TYPE)
            .into_response(),
        Err(_) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics could not be encoded",
        ),
    }
}

async fn rejection(r: warp::Rejection, max_body: usize) -> Result<Response, Infallible> {
    Ok(if r.is_not_found() {
        json_error(
            StatusCode::NOT_FOUND,
            "no such route; send events to POST /v1/events",
        )
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the compressed body is larger than {max_body} bytes"),
        )
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        json_error(StatusCode::LENGTH_REQUIRED, "a Content-Length is required")
    } else {
        json_error(StatusCode::BAD_REQUEST, "malformed request")
    })
}

/// Every route of the collector.
fn routes(state: State) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let max_body = state.collector.settings().max_body;
    let headers = warp::header::optional::<String>("authorization")
        .and(warp::header::optional::<String>("content-encoding"))
        .and(warp::header::optional::<String>("content-type"))
        .map(|authorization, encoding, content_type| Headers {
            authorization,
            encoding,
            content_type,
        });
    let st = state.clone();
    let post = warp::path!("v1" / "events")
        .and(warp::post())
        .and(headers)
        .and(warp::body::content_length_limit(max_body as u64))
        .and(warp::body::bytes())
        .and(warp::any().map(move || st.clone()))
        .and_then(events);
    let health = warp::path!("health")
        .and(warp::get())
        .map(|| reply::json(&json!({ "status": "ok" })).into_response());
    let st = state.clone();
    let ready = warp::path!("ready")
        .and(warp::get())
        .map(move || ready(&st));
    let st = state;
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .map(move || metrics(&st));
    post.or(health)
        .unify()
        .or(ready)
        .unify()
        .or(metrics)
        .unify()
        .recover(move |r| rejection(r, max_body))
        .unify()
}

/// A running collector; dropping it stops it.
pub struct CollectServer {
    /// Where it listens.
    pub addr: SocketAddr,
    collector: Arc<Collector>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CollectServer {
    /// The collector behind it.
    pub fn collector(&self) -> &Arc<Collector> {
        &self.collector
    }

    /// Waits until the service stops.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for CollectServer {
    fn drop(&mut self) {
        self.collector.stop();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Every request has been answered: the ids they confirmed are in
        // the window being saved.
        self.collector.save_window();
    }
}

/// Starts the collector's HTTP service on `listener`, on a runtime of
/// `threads` threads, with its drainer and its pressure watch.
pub fn serve(
    listener: std::net::TcpListener,
    threads: usize,
    collector: Arc<Collector>,
    registry: Arc<Registry>,
) -> std::io::Result<CollectServer> {
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_stack_size(STACK)
        .enable_all()
        .thread_name("collect")
        .build()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let state = State {
        collector: Arc::clone(&collector),
        registry,
    };
    let thread = std::thread::Builder::new()
        .name("collect".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "the collector could not start");
                        return;
                    }
                };
                tokio::spawn(Arc::clone(&state.collector).drain());
                tokio::spawn(Arc::clone(&state.collector).watch_pressure());
                warp::serve(routes(state))
                    .incoming(listener)
                    .graceful(async move {
                        let _ = rx.await;
                    })
                    .run()
                    .await;
            });
            // Tasks still waiting (a drain round while Kafka is down) are
            // dropped; what they had not committed stays in the spill.
            runtime.shutdown_timeout(Duration::from_secs(5));
        })?;
    Ok(CollectServer {
        addr,
        collector,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}
