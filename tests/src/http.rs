//! HTTP to the services under test (the admin API, and later the query
//! service and the collector), through `ureq`: statuses are answers here,
//! not errors, so a test can assert on a 401 or a 503.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Sends `method path` with a JSON `body` (none when empty) and returns the
/// status code and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    http_as(addr, method, path, body, None)
}

/// [`http`] with `Authorization: Bearer TOKEN` when a token is given.
pub fn http_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Result<(u16, String)> {
    let url = format!("http://{addr}{path}");
    let agent = agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let response = match method {
        "GET" => {
            let mut req = agent.get(&url);
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            req.call()
        }
        "DELETE" => {
            let mut req = agent.delete(&url);
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            req.call()
        }
        "PUT" | "POST" => {
            let mut req = if method == "PUT" {
                agent.put(&url)
            } else {
                agent.post(&url)
            };
            req = req.header("content-type", "application/json");
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            req.send(body)
        }
        other => bail!("no such method in the tests: {other}"),
    };
    let mut response = response.with_context(|| format!("{method} {url}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading the answer to {method} {url}"))?;
    Ok((status, body))
}

/// `GET path`, parsed as JSON; an error unless the answer is 200.
pub fn get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value> {
    let (status, body) = http(addr, "GET", path, "")?;
    if status != 200 {
        bail!("GET {path}: {status} {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// `GET path` as text; an error unless the answer is 200.
pub fn get_text(addr: SocketAddr, path: &str) -> Result<String> {
    let (status, body) = http(addr, "GET", path, "")?;
    if status != 200 {
        bail!("GET {path}: {status} {body}");
    }
    Ok(body)
}

/// `GET path`, parsed as JSON, with its status: for answers that are JSON
/// whatever the status (`/health`'s 503).
pub fn get_json_status(addr: SocketAddr, path: &str) -> Result<(u16, serde_json::Value)> {
    let (status, body) = http(addr, "GET", path, "")?;
    let value = serde_json::from_str(&body)
        .with_context(|| format!("GET {path}: {status}, not JSON: {body}"))?;
    Ok((status, value))
}
