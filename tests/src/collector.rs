//! The collector under test: `footprint collect` as a process of its own,
//! a client that drives steady ingest and remembers what was acknowledged,
//! and the check of what the topic holds against it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use footprint_connectors::client::KafkaSettings;

use crate::processes::{Running, address_in_log, spawn_footprint_env};
use crate::topics::read_all_from;

/// A `footprint collect` process; killed with SIGKILL when dropped.
pub struct CollectorProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
    brokers: String,
    starts: u32,
    child: Option<Running>,
}

impl CollectorProcess {
    /// Writes `toml` to `dir/collect.toml` and starts the collector on it
    /// (its `[collect] listen` should be `127.0.0.1:0`), with `brokers`
    /// (which `FOOTPRINT_BROKERS` in the tests' environment would
    /// otherwise override).
    pub fn start(dir: &std::path::Path, brokers: &str, toml: &str) -> Result<Self> {
        let config = dir.join("collect.toml");
        std::fs::write(&config, toml)?;
        let mut c = CollectorProcess {
            addr: "127.0.0.1:1".parse()?,
            config,
            log: dir.join("collect.log"),
            brokers: brokers.to_owned(),
            starts: 0,
            child: None,
        };
        c.restart()?;
        Ok(c)
    }

    /// Kills the collector with SIGKILL.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Asks the collector to stop with SIGTERM and waits until it has
    /// exited; returns its log.
    pub fn terminate(&mut self) -> Result<String> {
        let Some(mut child) = self.child.take() else {
            bail!("the collector is not running");
        };
        let pid = child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()?;
        if !sent.success() {
            bail!("kill -TERM {pid} failed: {sent}");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                bail!("the collector did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = self.log.with_extension(format!("{}.log", self.starts));
        if !status.success() {
            bail!(
                "the collector exited with {status} after SIGTERM; see {}",
                log.display()
            );
        }
        Ok(std::fs::read_to_string(&log)?)
    }

    /// Starts it again on the same config and spill (a new port), and
    /// waits until it listens.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        self.starts += 1;
        let log = self.log.with_extension(format!("{}.log", self.starts));
        let child = spawn_footprint_env(
            &self.config,
            &["collect"],
            &log,
            &[("FOOTPRINT_BROKERS", &self.brokers)],
        )?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(addr) = address_in_log(&log, "collector: POST http://") {
                self.addr = addr?;
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!("the collector exited with {status}; see {}", log.display());
            }
            if Instant::now() > deadline {
                bail!("the collector did not start; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// A number from its `/metrics` (0 when absent).
    pub fn metric(&self, line_prefix: &str) -> f64 {
        crate::get_text(self.addr, "/metrics")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(line_prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until the spill is drained and events go straight to Kafka.
    pub fn wait_drained(&self, timeout: Duration) -> Result<()> {
        crate::wait_until(timeout, "the collector's spill to drain", || {
            let text = crate::get_text(self.addr, "/metrics").unwrap_or_default();
            text.contains("footprint_collect_spill_records 0")
                && text.contains("footprint_collect_spilling 0")
        })
    }
}

/// An answer of `POST /v1/events`.
#[derive(Debug, Clone)]
pub struct Posted {
    /// The status.
    pub status: u16,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
    /// The body, parsed (`Null` if it is not JSON).
    pub body: serde_json::Value,
}

impl Posted {
    /// The outcome of each event.
    pub fn outcomes(&self) -> Vec<String> {
        self.body["results"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|o| o["outcome"].as_str().unwrap_or("?").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `POST /v1/events` with `body` and `headers`.
pub fn post_events(addr: SocketAddr, body: &[u8], headers: &[(&str, &str)]) -> Result<Posted> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut request = agent.post(format!("http://{addr}/v1/events"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let mut response = request.send(body).context("POST /v1/events")?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Ok(Posted {
        status,
        retry_after,
        body: serde_json::from_str(&text).unwrap_or_default(),
    })
}

/// Event number `n` of a drill's stream: app `n % apps`, user `n % users`,
/// id `d{n}`, event time `base + n` ms (so each user's events are in order
/// of `n`).
pub fn drill_event(n: u64, apps: u64, users: u64, base_ts: i64) -> String {
    format!(
        r#"{{"event_id":"d{n}","app_id":"app{}","user_id":"u{}","event":"view","ts":{},"item_id":"i{}"}}"#,
        n % apps,
        n % users,
        base_ts + n as i64,
        n % 97
    )
}

/// What a steady client sent and what the collector acknowledged.
#[derive(Debug, Default)]
pub struct Sent {
    /// Ids acknowledged (`accepted` or `duplicate`).
    pub acknowledged: BTreeSet<String>,
    /// Requests answered 200.
    pub ok: u64,
    /// Requests answered 503 or 429, or not answered: sent again.
    pub retried: u64,
    /// Events sent, first copies only.
    pub events: u64,
}

/// A client that sends NDJSON batches at a steady rate until stopped,
/// sending a batch again until the collector takes it, as a real app
/// would; it re-reads the collector's address before each request, so the
/// collector may restart on another port.
pub struct SteadyClient {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Sent>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SteadyClient {
    /// Starts sending `rate` events/s in batches of `batch` to the address
    /// `addr` holds.
    pub fn start(addr: Arc<Mutex<SocketAddr>>, rate: u64, batch: u64, base_ts: i64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Sent::default()));
        let (st, se) = (Arc::clone(&stop), Arc::clone(&sent));
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut n = 0u64;
            while !st.load(Ordering::SeqCst) {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                if n + batch > due {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                let body: String = (n..n + batch)
                    .map(|i| drill_event(i, 4, 500, base_ts) + "\n")
                    .collect();
                loop {
                    let to = *addr.lock().unwrap_or_else(|p| p.into_inner());
                    match post_events(
                        to,
                        body.as_bytes(),
                        &[("content-type", "application/x-ndjson")],
                    ) {
                        Ok(p) if p.status == 200 => {
                            let results = p.body["results"].as_array().cloned().unwrap_or_default();
                            let mut s = se.lock().unwrap_or_else(|p| p.into_inner());
                            s.ok += 1;
                            let mut all = true;
                            for r in results {
                                match r["outcome"].as_str() {
                                    Some("accepted" | "duplicate") => {
                                        if let Some(id) = r["event_id"].as_str() {
                                            s.acknowledged.insert(id.to_owned());
                                        }
                                    }
                                    _ => all = false,
                                }
                            }
                            if all {
                                break;
                            }
                            s.retried += 1;
                        }
                        _ => se.lock().unwrap_or_else(|p| p.into_inner()).retried += 1,
                    }
                    if st.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                n += batch;
                se.lock().unwrap_or_else(|p| p.into_inner()).events = n;
            }
        });
        SteadyClient {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Stops sending and returns what was sent.
    pub fn finish(mut self) -> Sent {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for SteadyClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a topic holds, against what was acknowledged.
#[derive(Debug, Default)]
pub struct Held {
    /// Messages in the topic.
    pub messages: u64,
    /// Acknowledged ids the topic does not hold.
    pub lost: Vec<String>,
    /// Ids held more than once, and how many extra copies.
    pub duplicates: u64,
    /// Users whose events are in more than one partition.
    pub split_users: u64,
    /// Users whose events (first copies) are out of order.
    pub out_of_order_users: u64,
}

/// Reads `topic` and checks it against `acknowledged`: every acknowledged
/// id held, each user in one partition, each user's first copies in the
/// order of their event number (`d{n}`).
pub fn check_held(
    settings: &KafkaSettings,
    topic: &str,
    acknowledged: &BTreeSet<String>,
) -> Result<Held> {
    let read = read_all_from(settings, topic)?;
    let mut held = Held {
        messages: read.len() as u64,
        ..Held::default()
    };
    let mut by_partition: BTreeMap<i32, Vec<(i64, serde_json::Value)>> = BTreeMap::new();
    for m in read {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
        by_partition
            .entry(m.partition)
            .or_default()
            .push((m.offset, v));
    }
    let mut copies: HashMap<String, u64> = HashMap::new();
    let mut user_partition: HashMap<String, i32> = HashMap::new();
    let mut last_n: HashMap<String, u64> = HashMap::new();
    let mut bad_users: BTreeSet<String> = BTreeSet::new();
    let mut split: BTreeSet<String> = BTreeSet::new();
    for (partition, mut messages) in by_partition {
        messages.sort_by_key(|(o, _)| *o);
        for (_, v) in messages {
            let id = v["event_id"].as_str().unwrap_or_default().to_owned();
            let user = format!(
                "{}/{}",
                v["app_id"].as_str().unwrap_or_default(),
                v["user_id"].as_str().unwrap_or_default()
            );
            let c = copies.entry(id.clone()).or_default();
            *c += 1;
            if *c > 1 {
                continue;
            }
            if *user_partition.entry(user.clone()).or_insert(partition) != partition {
                split.insert(user.clone());
            }
            if let Some(n) = id.strip_prefix('d').and_then(|n| n.parse::<u64>().ok()) {
                let last = last_n.entry(user.clone()).or_insert(n);
                if n < *last {
                    bad_users.insert(user);
                } else {
                    *last = n;
                }
            }
        }
    }
    held.duplicates = copies.values().map(|c| c - 1).sum();
    held.split_users = split.len() as u64;
    held.out_of_order_users = bad_users.len() as u64;
    held.lost = acknowledged
        .iter()
        .filter(|id| !copies.contains_key(*id))
        .cloned()
        .collect();
    Ok(held)
}
