//! Admin API routes.

use std::convert::Infallible;
use std::sync::Arc;

use warp::Filter;

use super::AdminState;
use super::handlers::{self, Unauthorized};
use footprint_telemetry::access::{bearer, same};

fn with_state(
    state: AdminState,
) -> impl Filter<Extract = (AdminState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// Passes requests that carry `Authorization: Bearer TOKEN` (every request
/// when no token is set).
fn authorized(
    token: Option<Arc<str>>,
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let token = token.clone();
            async move {
                match token {
                    None => Ok(()),
                    Some(t)
                        if header
                            .as_deref()
                            .and_then(bearer)
                            .is_some_and(|given| same(given, &t)) =>
                    {
                        Ok(())
                    }
                    Some(_) => Err(warp::reject::custom(Unauthorized)),
                }
            }
        })
        .untuple_one()
}

/// Every route of the admin API.
pub fn routes(
    state: AdminState,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    let health = warp::path!("health")
        .and(warp::get())
        .and(with_state(state.clone()))
        .map(handlers::health);
    let switches = warp::path!("switches")
        .and(warp::get())
        .and(with_state(state.clone()))
        .map(handlers::switches);
    let put_switch = warp::path!("switches" / String)
        .and(warp::put())
        .and(warp::body::content_length_limit(4 * 1024))
        .and(warp::body::bytes())
        .and(with_state(state.clone()))
        .and_then(handlers::put_switch);
    let status = warp::path!("status")
        .and(warp::get())
        .and(with_state(state.clone()))
        .map(handlers::status);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state(state.clone()))
        .map(handlers::metrics);
    let history = warp::path!("history")
        .and(warp::get())
        .and(with_state(state.clone()))
        .map(handlers::history);
    // The console's own files hold no data, so they need no token: the page
    // asks for it and sends it with each request it makes.
    // The path first: any other path is plainly not found here, whatever
    // its method, so the API's own rejections (405, 413) stay as they were.
    let page = warp::path::full()
        .and_then(|path: warp::path::FullPath| async move {
            super::console::file(path.as_str()).ok_or_else(warp::reject::not_found)
        })
        .and(warp::get());
    page.or(authorized(state.token.clone()).and(
        health
            .or(switches)
            .unify()
            .or(put_switch)
            .unify()
            .or(status)
            .unify()
            .or(metrics)
            .unify()
            .or(history)
            .unify(),
    ))
    .unify()
    .recover(handlers::rejection)
    .unify()
}
