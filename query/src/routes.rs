//! The HTTP API (JSON; times in ms since the epoch).
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/apps/{app}/users/{user}/recent?limit=N&event=E` | the user's recent activity, newest first |
//! | `POST /v1/apps/{app}/users/recent` with `{"users":[…],"limit":N}` | up to `max_batch` users at once |
//! | `GET /v1/aggregates/{name}/windows?FIELD=VALUE…&from=MS&to=MS` | one group's windows starting in `[from, to)`, oldest first, with `complete_up_to` |
//! | `GET /v1/aggregates/{name}/top?window_start=MS\|latest&by=MEASURE&n=N&FIELD=VALUE…` | the top N groups of one window, within a key prefix |
//! | `GET /health` | 200 while a store can answer, 503 when none can |
//! | `GET /status` | each store's breaker and switch, the cache |
//! | `GET /metrics` | Prometheus text |
//!
//! Errors are JSON `{"error": …}`: 400 for a malformed request, 401 without
//! a valid token, 403 for another app's data, 404 for an unknown route,
//! aggregate or measure, 405, 413 for a body over 64 KiB, 429 over a rate
//! limit and 503 when no store can answer or too many requests are in
//! flight (both with `Retry-After`). Nothing answers 500.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use footprint_dataflows::Field;
use footprint_dataflows::key::GroupKey;
use footprint_telemetry::{InternalEvent, Registry};
use serde::Deserialize;
use serde_json::{Map, Value};
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};

use crate::events::{RequestAnswered, RequestRefused};
use crate::limits::{Caller, Limits, Refusal, retry_after_secs};
use crate::model::{Batch, BatchUser, Entry, ErrorBody, Recent, Series, Source, Top, window_json};
use crate::service::{Answer, QueryService, SeriesQuery, ServeError, Sourced, TopQuery};

/// The largest request body.
const MAX_BODY: u64 = 64 * 1024;

/// The stack of the service's threads.
const STACK: usize = 16 * 1024 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct ServeState {
    /// Answers the queries.
    pub service: Arc<QueryService>,
    /// Tokens and rate limits.
    pub limits: Arc<Limits>,
    /// The process's metrics.
    pub registry: Arc<Registry>,
}

fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    reply::with_status(
        reply::json(&ErrorBody {
            error: message.into(),
        }),
        status,
    )
    .into_response()
}

fn with_retry_after(mut r: Response, secs: u64) -> Response {
    if let Ok(v) = warp::http::HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(warp::http::header::RETRY_AFTER, v);
    }
    r
}

fn refused(state: &ServeState, r: Refusal) -> Response {
    let (reason, resp) = match r {
        Refusal::Unauthorized => (
            "token",
            json_error(StatusCode::UNAUTHORIZED, "a valid bearer token is required"),
        ),
        Refusal::Forbidden(why) => ("forbidden", json_error(StatusCode::FORBIDDEN, why)),
        Refusal::TooMany(which, wait) => (
            which,
            with_retry_after(
                json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("over the {} rate limit", which.trim_start_matches("rate_")),
                ),
                retry_after_secs(wait),
            ),
        ),
        Refusal::Overloaded => (
            "overload",
            with_retry_after(
                json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many requests in flight",
                ),
                1,
            ),
        ),
    };
    RequestRefused { reason }.emit(state.service.metrics());
    resp
}

fn failed(e: ServeError) -> Response {
    match e {
        ServeError::BadRequest(m) => json_error(StatusCode::BAD_REQUEST, m),
        ServeError::NotFound(m) => json_error(StatusCode::NOT_FOUND, m),
        ServeError::Unavailable {
            retry_after,
            detail,
        } => with_retry_after(
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no store can answer now: {detail}"),
            ),
            retry_after_secs(retry_after),
        ),
    }
}

/// One request's context: who asks, from where, and since when.
struct Ask {
    route: &'static str,
    caller: Result<Caller, Refusal>,
    ip: Option<IpAddr>,
    started: Instant,
}

/// Runs `answer` for a request that concerns `app` (`None`: every app),
/// after the in-flight cap, the token and the rate limits, and reports it.
async fn guarded<F>(state: &ServeState, ask: Ask, app: Option<&str>, answer: F) -> Response
where
    F: std::future::Future<Output = Result<(Response, Source), ServeError>>,
{
    let limits = &state.limits;
    let result = async {
        let _permit = limits.enter()?;
        let caller = ask.caller?;
        limits.may_read(&caller, app)?;
        limits.admit(app, ask.ip)?;
        Ok::<_, Refusal>(answer.await)
    }
    .await;
    let (resp, source) = match result {
        Err(r) => (refused(state, r), None),
        Ok(Err(e)) => (failed(e), None),
        Ok(Ok((resp, source))) => (resp, Some(source)),
    };
    RequestAnswered {
        route: ask.route,
        status: resp.status().as_u16(),
        source: source.map(Source::as_str),
        took: ask.started.elapsed(),
    }
    .emit(state.service.metrics());
    resp
}

fn param_usize(params: &HashMap<String, String>, name: &str) -> Result<Option<usize>, ServeError> {
    params
        .get(name)
        .map(|v| {
            v.parse::<usize>().map_err(|_| {
                ServeError::BadRequest(format!(
                    "`{name}` must be a non-negative integer, not `{v}`"
                ))
            })
        })
        .transpose()
}

fn param_i64(params: &HashMap<String, String>, name: &str) -> Result<i64, ServeError> {
    let v = params.get(name).ok_or_else(|| {
        ServeError::BadRequest(format!("`{name}` is required (ms since the epoch)"))
    })?;
    // Far enough for any date, and far from overflowing window arithmetic.
    const BOUND: i64 = 1 << 53;
    v.parse::<i64>()
        .ok()
        .filter(|t| t.abs() <= BOUND)
        .ok_or_else(|| {
            ServeError::BadRequest(format!("`{name}` must be ms since the epoch, not `{v}`"))
        })
}

fn entries(
    list: &[footprint_dataflows::RecentEntry],
    event: Option<&str>,
    limit: usize,
) -> Vec<Entry> {
    list.iter()
        .filter(|e| event.is_none_or(|ev| e.event == ev))
        .take(limit)
        .map(Entry::from)
        .collect()
}

async fn recent(
    app: String,
    user: String,
    params: HashMap<String, String>,
    ask: Ask,
    state: ServeState,
) -> Result<Response, Infallible> {
    let service = Arc::clone(&state.service);
    let answer = async {
        let limit = param_usize(&params, "limit")?.unwrap_or(usize::MAX);
        let Sourced { answer, source, .. } = service.recent(&app, &user).await?;
        let list = match answer.as_ref() {
            Answer::Recent(l) => l.first().cloned().flatten(),
            _ => None,
        };
        let body = Recent {
            app_id: app.clone(),
            user_id: user.clone(),
            found: list.is_some(),
            events: entries(
                list.as_deref().unwrap_or(&[]),
                params.get("event").map(String::as_str),
                limit,
            ),
            source,
            degraded: service.degraded(),
        };
        Ok((reply::json(&body).into_response(), source))
    };
    Ok(guarded(&state, ask, Some(&app), Box::pin(answer)).await)
}

/// The body of a batch lookup.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    users: Vec<String>,
    limit: Option<usize>,
}

async fn recent_batch(
    app: String,
    body: bytes::Bytes,
    ask: Ask,
    state: ServeState,
) -> Result<Response, Infallible> {
    let service = Arc::clone(&state.service);
    let answer = async {
        let body: BatchBody = serde_json::from_slice(&body).map_err(|e| {
            ServeError::BadRequest(format!(
                "the body is not {{\"users\":[…],\"limit\":N}}: {e}"
            ))
        })?;
        let max = service.settings().max_batch;
        if body.users.is_empty() || body.users.len() > max {
            return Err(ServeError::BadRequest(format!(
                "name between 1 and {max} users (got {})",
                body.users.len()
            )));
        }
        let limit = body.limit.unwrap_or(usize::MAX);
        let Sourced {
            answer, sources, ..
        } = service.recent_batch(&app, &body.users).await?;
        let lists = match answer.as_ref() {
            Answer::Recent(l) => l.clone(),
            _ => Vec::new(),
        };
        let users: Vec<BatchUser> = body
            .users
            .iter()
            .zip(lists)
            .zip(&sources)
            .map(|((u, list), source)| BatchUser {
                user_id: u.clone(),
                found: list.is_some(),
                events: entries(list.as_deref().unwrap_or(&[]), None, limit),
                source: *source,
            })
            .collect();
        let source = if sources.contains(&Source::Mysql) {
            Source::Mysql
        } else if sources.iter().all(|s| *s == Source::Cache) {
            Source::Cache
        } else {
            Source::Redis
        };
        let body = Batch {
            app_id: app.clone(),
            users,
            degraded: service.degraded(),
        };
        Ok((reply::json(&body).into_response(), source))
    };
    Ok(guarded(&state, ask, Some(&app), Box::pin(answer)).await)
}

/// The aggregate called `name`, by index.
fn aggregate(service: &QueryService, name: &str) -> Result<usize, ServeError> {
    service
        .spec()
        .aggregates
        .iter()
        .position(|a| a.name == name)
        .ok_or_else(|| ServeError::NotFound(format!("no aggregate `{name}`")))
}

/// The app a request about aggregate `agg` concerns: its `app_id` value,
/// when the aggregate groups by app.
fn app_of(service: &QueryService, name: &str, params: &HashMap<String, String>) -> Option<String> {
    let agg = aggregate(service, name).ok()?;
    service
        .aggregate(agg)
        .group_by
        .contains(&Field::AppId)
        .then(|| params.get("app_id").cloned())
        .flatten()
}

/// The group fields given, in key order, and their values: all of them
/// (`whole`), or a prefix.
fn key_of(
    service: &QueryService,
    agg: usize,
    params: &HashMap<String, String>,
    known: &[&str],
    whole: bool,
) -> Result<(GroupKey, Map<String, Value>), ServeError> {
    let spec = service.aggregate(agg);
    let fields: Vec<String> = spec.group_by.iter().map(ToString::to_string).collect();
    for p in params.keys() {
        if !known.contains(&p.as_str()) && !fields.contains(p) {
            return Err(ServeError::BadRequest(format!(
                "unknown parameter `{p}`; {} groups by {fields:?}",
                spec.name
            )));
        }
    }
    let given = fields
        .iter()
        .take_while(|f| params.contains_key(*f))
        .count();
    if whole && given < fields.len() {
        return Err(ServeError::BadRequest(format!(
            "give every group field of {}: {fields:?}",
            spec.name
        )));
    }
    if let Some(extra) = fields[given..].iter().find(|f| params.contains_key(*f)) {
        return Err(ServeError::BadRequest(format!(
            "the fields given must be a prefix of {fields:?}; `{extra}` comes after one that is missing"
        )));
    }
    let mut key = GroupKey::default();
    let mut shown = Map::new();
    for f in &fields[..given] {
        let v = &params[f];
        key.push(v);
        shown.insert(f.clone(), Value::from(v.as_str()));
    }
    Ok((key, shown))
}

async fn windows(
    name: String,
    params: HashMap<String, String>,
    ask: Ask,
    state: ServeState,
) -> Result<Response, Infallible> {
    let service = Arc::clone(&state.service);
    let app = app_of(&service, &name, &params);
    let answer = async {
        let agg = aggregate(&service, &name)?;
        let (key, shown) = key_of(&service, agg, &params, &["from", "to"], true)?;
        let (from, to) = (param_i64(&params, "from")?, param_i64(&params, "to")?);
        let Sourced { answer, source, .. } =
            service.series(SeriesQuery { agg, key, from, to }).await?;
        let (rows, complete_up_to) = match answer.as_ref() {
            Answer::Series(rows, c) => (rows.as_slice(), *c),
            _ => (&[][..], None),
        };
        let body = Series {
            aggregate: name.clone(),
            key: shown,
            from,
            to,
            windows: rows.iter().map(|r| window_json(r, false)).collect(),
            complete_up_to,
            source,
            degraded: service.degraded(),
        };
        Ok((reply::json(&body).into_response(), source))
    };
    Ok(guarded(&state, ask, app.as_deref(), Box::pin(answer)).await)
}

async fn top(
    name: String,
    params: HashMap<String, String>,
    ask: Ask,
    state: ServeState,
) -> Result<Response, Infallible> {
    let service = Arc::clone(&state.service);
    let app = app_of(&service, &name, &params);
    let answer = async {
        let agg = aggregate(&service, &name)?;
        let spec = service.aggregate(agg);
        let (prefix, shown) = key_of(&service, agg, &params, &["window_start", "by", "n"], false)?;
        let window_start = match params.get("window_start").map(String::as_str) {
            None | Some("latest") => None,
            Some(_) => Some(param_i64(&params, "window_start")?),
        };
        let measures: Vec<String> = spec.measures.iter().map(ToString::to_string).collect();
        let by_name = params
            .get("by")
            .cloned()
            .unwrap_or_else(|| measures[0].clone());
        let by = measures.iter().position(|m| *m == by_name).ok_or_else(|| {
            ServeError::NotFound(format!(
                "{} has no measure `{by_name}`; it has {measures:?}",
                spec.name
            ))
        })?;
        let n = param_usize(&params, "n")?.unwrap_or(10);
        let max = service.settings().max_top;
        if n == 0 || n > max {
            return Err(ServeError::BadRequest(format!(
                "`n` must be between 1 and {max}"
            )));
        }
        let Sourced { answer, source, .. } = service
            .top(TopQuery {
                agg,
                window_start,
                prefix,
                within: shown.len(),
                by,
                n,
            })
            .await?;
        let (rows, start, complete_up_to) = match answer.as_ref() {
            Answer::Top(rows, s, c) => (rows.as_slice(), *s, *c),
            _ => (&[][..], window_start.unwrap_or(0), None),
        };
        let body = Top {
            aggregate: name.clone(),
            window_start: start,
            window_end: spec.window.end(start),
            by: by_name,
            prefix: shown,
            groups: rows.iter().map(|r| window_json(r, true)).collect(),
            complete_up_to,
            source,
            degraded: service.degraded(),
        };
        Ok((reply::json(&body).into_response(), source))
    };
    Ok(guarded(&state, ask, app.as_deref(), Box::pin(answer)).await)
}

fn health(state: &ServeState) -> Response {
    let stores = state.service.stores();
    let usable = stores.iter().any(|(_, breaker, mode)| {
        *breaker != footprint_sinks::util::breaker::BreakerState::Open
            && *mode != Some(footprint_sinks::util::switch::Mode::Degraded)
    });
    let body = serde_json::json!({
        "status": if usable { "ok" } else { "unhealthy" },
        "stores": stores.iter().map(|(name, breaker, mode)| (name.to_string(), serde_json::json!({
            "breaker": breaker.as_str(),
            "switch": mode.map(|m| m.as_str()),
        }))).collect::<Map<String, Value>>(),
    });
    let code = if usable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply::with_status(reply::json(&body), code).into_response()
}

fn status(state: &ServeState) -> Response {
    let s = state.service.settings();
    let stores = state.service.stores();
    let body = serde_json::json!({
        "stores": stores.iter().map(|(name, breaker, mode)| (name.to_string(), serde_json::json!({
            "breaker": breaker.as_str(),
            "switch": mode.map(|m| m.as_str()),
        }))).collect::<Map<String, Value>>(),
        "degraded": state.service.degraded(),
        "cache": { "enabled": s.cache.enabled, "entries": state.service.cache_entries() },
        "redis_timeout_ms": s.redis_timeout.as_millis() as u64,
        "mysql_timeout_ms": s.mysql_timeout.as_millis() as u64,
        "max_in_flight": s.max_in_flight,
        "aggregates": state.service.spec().aggregates.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
    });
    reply::json(&body).into_response()
}

fn metrics(state: &ServeState) -> Response {
    // Moves the breaker gauges to the states now.
    state.service.stores();
    match footprint_telemetry::encode(&state.registry) {
        Ok(text) => reply::with_header(text, "content-type", footprint_telemetry::CONTENT_TYPE)
            .into_response(),
        Err(_) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics could not be encoded",
        ),
    }
}

async fn rejection(r: warp::Rejection) -> Result<Response, Infallible> {
    Ok(if r.is_not_found() {
        json_error(StatusCode::NOT_FOUND, "no such route; see /v1/…")
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {MAX_BODY} bytes"),
        )
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        json_error(StatusCode::LENGTH_REQUIRED, "a Content-Length is required")
    } else if r.find::<warp::reject::UnsupportedMediaType>().is_some() {
        json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send JSON")
    } else {
        json_error(StatusCode::BAD_REQUEST, "malformed request")
    })
}

fn ask(
    route: &'static str,
    state: ServeState,
) -> impl Filter<Extract = (Ask, ServeState), Error = Infallible> + Clone {
    warp::header::optional::<String>("authorization")
        .or(warp::any().map(|| None))
        .unify()
        .and(warp::addr::remote())
        .map(move |auth: Option<String>, remote: Option<SocketAddr>| {
            let caller = state.limits.caller(auth.as_deref());
            (
                Ask {
                    route,
                    caller,
                    ip: remote.map(|a| a.ip()),
                    started: Instant::now(),
                },
                state.clone(),
            )
        })
        .untuple_one()
}

fn query() -> impl Filter<Extract = (HashMap<String, String>,), Error = Infallible> + Clone {
    warp::query::<HashMap<String, String>>()
        .or(warp::any().map(HashMap::new))
        .unify()
}

/// Every route of the query service.
pub fn routes(state: ServeState) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let recent = warp::path!("v1" / "apps" / String / "users" / String / "recent")
        .and(warp::get())
        .and(query())
        .and(ask("recent", state.clone()))
        .and_then(recent);
    let batch = warp::path!("v1" / "apps" / String / "users" / "recent")
        .and(warp::post())
        .and(warp::body::content_length_limit(MAX_BODY))
        .and(warp::body::bytes())
        .and(ask("recent_batch", state.clone()))
        .and_then(recent_batch);
    let windows = warp::path!("v1" / "aggregates" / String / "windows")
        .and(warp::get())
        .and(query())
        .and(ask("windows", state.clone()))
        .and_then(windows);
    let top = warp::path!("v1" / "aggregates" / String / "top")
        .and(warp::get())
        .and(query())
        .and(ask("top", state.clone()))
        .and_then(top);
    let st = state.clone();
    let health = warp::path!("health")
        .and(warp::get())
        .map(move || health(&st));
    let operator = {
        let st = state.clone();
        warp::header::optional::<String>("authorization").and_then(move |auth: Option<String>| {
            let st = st.clone();
            async move {
                match st.limits.caller(auth.as_deref()) {
                    Ok(Caller::Admin | Caller::Anyone) => Ok(st),
                    _ => Err(warp::reject::custom(OperatorOnly)),
                }
            }
        })
    };
    let status = warp::path!("status")
        .and(warp::get())
        .and(operator.clone())
        .map(|st: ServeState| status(&st));
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(operator)
        .map(|st: ServeState| metrics(&st));
    recent
        .or(batch)
        .unify()
        .or(windows)
        .unify()
        .or(top)
        .unify()
        .or(health)
        .unify()
        .or(status)
        .unify()
        .or(metrics)
        .unify()
        .recover(|r: warp::Rejection| async move {
            if r.find::<OperatorOnly>().is_some() {
                Ok(json_error(
                    StatusCode::UNAUTHORIZED,
                    "the admin token is required",
                ))
            } else {
                rejection(r).await
            }
        })
        .unify()
}

/// `/status` and `/metrics` without the admin token.
#[derive(Debug)]
struct OperatorOnly;

impl warp::reject::Reject for OperatorOnly {}

/// A running query service; dropping it stops it.
pub struct ServeServer {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServeServer {
    /// Waits until the service stops (it does when dropped, or when its
    /// runtime fails).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServeServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the service on `listener`, on a runtime of `threads` threads.
pub fn serve(
    listener: std::net::TcpListener,
    threads: usize,
    state: ServeState,
) -> std::io::Result<ServeServer> {
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    // Requests run as deeply nested futures (warp's filters, the fallback
    // between the stores); unoptimised builds need more than the default
    // 2 MiB of stack for them.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_stack_size(STACK)
        .enable_all()
        .thread_name("serve")
        .build()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("serve".into())
        .stack_size(STACK)
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "the query service could not start");
                        return;
                    }
                };
                warp::serve(routes(state))
                    .incoming(listener)
                    .graceful(async move {
                        let _ = rx.await;
                    })
                    .run()
                    .await;
            });
        })?;
    Ok(ServeServer {
        addr,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}
