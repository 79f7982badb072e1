//! The operator console: one page, its script and its style sheet,
//! embedded in the binary and served by the admin service at `/`.
//!
//! The page polls `/status` and `/history` every two seconds and shows,
//! for someone on call:
//! - each sink's switch, breaker, rows written and diverted, write p99, and
//!   a button that flips the switch after a confirmation saying what will
//!   happen;
//! - the retry topic's backlog, the journal, and whether the replay job is
//!   applying records;
//! - each source partition's lag, watermark and state (reading, idle, held
//!   by alignment, finished), and the global watermark against the newest
//!   event and the wall clock;
//! - events in, bad and late per second over the last ten minutes;
//! - skipped ranges, each with the backfill command to copy.
//!
//! With `admin.token` set, the page asks for the token once, keeps it in the
//! tab's session storage, and sends it as `Authorization: Bearer …`; it
//! never puts it in a URL. There is no build step: the files below are the
//! page.

use warp::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use warp::reply::{Reply, Response};

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Only the page's own files, and requests to this service.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console file at `path`, if it is one.
pub fn file(path: &str) -> Option<Response> {
    let (body, kind) = match path {
        "/" | "/index.html" => (PAGE, "text/html; charset=utf-8"),
        "/console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let reply = warp::reply::with_header(body, CONTENT_TYPE, kind);
    let reply = warp::reply::with_header(reply, CONTENT_SECURITY_POLICY, POLICY);
    Some(warp::reply::with_header(reply, CACHE_CONTROL, "no-cache").into_response())
}
