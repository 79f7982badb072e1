//! The load generator of the HTTP benches (`--mode serve`, `--mode
//! collect`): keep-alive HTTP/1.1 connections on one thread of the bench,
//! sending prepared requests in a closed loop (each connection sends its
//! next request as soon as the last is answered) or an open loop (each
//! request at its scheduled time, latency counted from that time, so a
//! stall delays every request behind it instead of hiding them).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use footprint_telemetry::Latency;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Keep-alive connections of the load generator, unless `--connections`
/// says otherwise.
pub const CONNECTIONS: usize = 64;

/// How the prepared requests are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Over and over (reads).
    Wrap,
    /// Each at most once (writes whose ids must not repeat).
    Once,
}

/// Prepared requests, raw HTTP/1.1.
#[derive(Clone)]
pub struct Requests {
    all: Arc<[Vec<u8>]>,
    use_: Use,
}

impl Requests {
    /// `requests`, used as `use_` says.
    pub fn new(requests: Vec<Vec<u8>>, use_: Use) -> Self {
        Requests {
            all: requests.into(),
            use_,
        }
    }

    /// How many there are.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// The `i`-th request sent, if there is one.
    fn nth(&self, i: u64) -> Option<&[u8]> {
        let n = self.all.len() as u64;
        match self.use_ {
            Use::Wrap if n > 0 => Some(&self.all[((i * 7919) % n) as usize]),
            Use::Wrap => None,
            Use::Once => self.all.get(i as usize).map(Vec::as_slice),
        }
    }
}

/// `GET path`.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n").into_bytes()
}

/// `POST path` with `headers` and `body`.
pub fn post(path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One keep-alive connection.
struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    line: String,
    body: Vec<u8>,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok(Conn {
            reader: BufReader::new(r),
            writer: w,
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// Sends one request and reads the answer; its status.
    async fn send(&mut self, request: &[u8]) -> Result<u16> {
        self.writer.write_all(request).await?;
        self.line.clear();
        self.reader.read_line(&mut self.line).await?;
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no status line")?;
        let mut length = 0usize;
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line).await? == 0 {
                bail!("the connection closed");
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        self.body.resize(length, 0);
        self.reader.read_exact(&mut self.body).await?;
        Ok(status)
    }
}

/// Closed loop for `how_long` (or until `Once` requests run out): the
/// answers that were 200, the others, and the time taken.
pub async fn closed_loop(
    addr: std::net::SocketAddr,
    requests: &Requests,
    connections: usize,
    how_long: Duration,
) -> Result<(u64, u64, Duration)> {
    let started = Instant::now();
    let end = started + how_long;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (requests, next) = (requests.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await?;
            let (mut answered, mut errors) = (0u64, 0u64);
            while Instant::now() < end {
                let Some(request) = requests.nth(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                if conn.send(request).await? == 200 {
                    answered += 1;
                } else {
                    errors += 1;
                }
            }
            Ok::<_, anyhow::Error>((answered, errors))
        }));
    }
    let (mut answered, mut errors) = (0, 0);
    for t in tasks {
        let (a, e) = t.await??;
        answered += a;
        errors += e;
    }
    Ok((answered, errors, started.elapsed()))
}

/// Requests at `rate` a second for `how_long`, each sent at its scheduled
/// time on the next free connection; latency counts from that time.
pub async fn open_loop(
    addr: std::net::SocketAddr,
    requests: &Requests,
    connections: usize,
    rate: f64,
    how_long: Duration,
) -> Result<(Latency, u64)> {
    let latency = Latency::default();
    let total = (rate * how_long.as_secs_f64()) as u64;
    let started = tokio::time::Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (requests, latency, next) = (requests.clone(), latency.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await?;
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(request) = requests.nth(i).filter(|_| i < total) else {
                    return Ok::<_, anyhow::Error>(errors);
                };
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due).await;
                let status = conn.send(request).await?;
                latency.record(due.elapsed());
                errors += u64::from(status != 200);
            }
        }));
    }
    let mut errors = 0;
    for t in tasks {
        errors += t.await??;
    }
    Ok((latency, errors))
}
