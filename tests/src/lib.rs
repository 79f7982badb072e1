//! Helpers for Footprint's end-to-end tests: where the services are, unique
//! names per test, pre-loading topics, and reading topics back.
//!
//! Endpoints come from the environment that `scripts/services.sh` writes
//! (`FOOTPRINT_BROKERS`); `scripts/test.sh` starts the services and runs the
//! tests. A test that needs a broker fails with a clear message without one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use footprint::config::Config;
use footprint::generate::{GenPlan, GenReport, produce};
use footprint::run::{RunOptions, RunReport, run};
use footprint_connectors::admin;
use footprint_connectors::client::KafkaSettings;
use footprint_dataflows::clickstream::{GenConfig, Generator};
use footprint_dataflows::control::RunControl;
use footprint_dataflows::metrics::Metrics;
use footprint_dataflows::reference::WindowId;
use footprint_dataflows::{Output, RecentRow, WindowRow};
use footprint_sinks::SinkFactory;
use footprint_sinks::memory::MemorySinkFactory;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// The broker to test against.
pub fn brokers() -> String {
    match std::env::var("FOOTPRINT_BROKERS") {
        Ok(b) if !b.is_empty() => b,
        _ => panic!(
            "FOOTPRINT_BROKERS is not set: run the tests with scripts/test.sh, which starts a broker"
        ),
    }
}

/// The Redis to test against (`FOOTPRINT_REDIS_URL`, default local).
pub fn redis_url() -> String {
    std::env::var("FOOTPRINT_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The MySQL server to test against, without a database
/// (`FOOTPRINT_MYSQL_URL`, default local root).
pub fn mysql_url() -> String {
    std::env::var("FOOTPRINT_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
        .trim_end_matches('/')
        .to_owned()
}

/// Drops a test database (best effort).
pub fn drop_database(name: &str) {
    use mysql::prelude::Queryable;
    if let Ok(mut c) = mysql::Conn::new(mysql::Opts::from_url(&mysql_url()).unwrap_or_default()) {
        let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"));
    }
}

/// Deletes every Redis key under a test prefix (best effort).
pub fn delete_redis_prefix(prefix: &str) {
    if let Ok(mut c) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut c)
            .unwrap_or_default();
        for k in keys {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(k).query(&mut c);
        }
    }
}

/// Kafka settings for the test broker.
pub fn kafka() -> KafkaSettings {
    KafkaSettings::new(brokers())
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Produces `count` generated messages to a new `topic` and returns the
/// payloads per partition, in offset order, as the broker holds them.
pub fn preload(topic: &str, cfg: &GenConfig, count: u64) -> Result<(Vec<Vec<Vec<u8>>>, GenReport)> {
    let plan = GenPlan {
        topic: topic.to_owned(),
        count: Some(count),
        rate: None,
        duration: None,
        progress: None,
    };
    let report = produce(
        &kafka(),
        cfg.clone(),
        &plan,
        &Arc::new(RunControl::default()),
    )?;
    let mut generator = Generator::new(cfg.clone());
    let mut parts = vec![Vec::new(); cfg.partitions as usize];
    for _ in 0..count {
        let e = generator.next_event();
        parts[e.partition as usize].push(e.payload);
    }
    Ok((parts, report))
}

/// One message read back from a topic.
#[derive(Debug, Clone)]
pub struct Read {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Payload.
    pub payload: Vec<u8>,
    /// Headers, by key.
    pub headers: BTreeMap<String, String>,
}

/// Reads every message of `topic` (all partitions, until each is caught up).
pub fn read_all(topic: &str) -> Result<Vec<Read>> {
    let settings = kafka();
    let parts = admin::partitions(&settings, topic)?
        .with_context(|| format!("topic {topic} does not exist"))?;
    let consumer = settings.consumer("footprint-tests", &[])?;
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut open: Vec<i32> = parts.clone();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !open.is_empty() {
        if Instant::now() > deadline {
            bail!("timed out reading {topic}; partitions not caught up: {open:?}");
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => open.retain(|x| *x != p),
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                let mut headers = BTreeMap::new();
                if let Some(h) = m.headers() {
                    for i in 0..h.count() {
                        let hd = h.get(i);
                        headers.insert(
                            hd.key.to_owned(),
                            String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(Read {
                    partition: m.partition(),
                    offset: m.offset(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
        }
    }
    Ok(out)
}

/// Runs the worker over `cfg` until every partition is caught up, with
/// `threads` workers, and returns its report and every row it emitted.
pub fn run_to_end(cfg: &Config, threads: usize) -> Result<(RunReport, Vec<Output>)> {
    let spec = cfg.spec()?;
    let memory = MemorySinkFactory::new("memory");
    let metrics = Arc::new(Metrics::new(
        spec.aggregates.iter().map(|a| a.name.clone()).collect(),
    ));
    let extra: Arc<dyn SinkFactory> = Arc::new(memory.clone());
    let opts = RunOptions {
        threads: Some(threads),
        until_end: true,
        extra_sinks: vec![extra],
        progress: None,
        ..RunOptions::default()
    };
    let report = run(cfg, opts, metrics)?;
    Ok((report, memory.take()))
}

/// A TCP proxy a test can cut and restore, to stage a store outage: while
/// it is down, open connections are closed and new ones are dropped at once.
pub struct TcpProxy {
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    down: Arc<std::sync::atomic::AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    generation: Arc<std::sync::atomic::AtomicU64>,
    mine: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        if generation.load(Ordering::Relaxed) != mine || stop.load(Ordering::Relaxed) {
            let _ = from.shutdown(std::net::Shutdown::Both);
            let _ = to.shutdown(std::net::Shutdown::Both);
            return;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                let _ = to.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

impl TcpProxy {
    /// Proxies a free loopback port to `target`.
    pub fn start(target: std::net::SocketAddr) -> Result<Self> {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let down = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, g, st) = (
            Arc::clone(&down),
            Arc::clone(&generation),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if d.load(Ordering::Relaxed) {
                            drop(client);
                            continue;
                        }
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = std::net::TcpStream::connect(target) else {
                            continue;
                        };
                        let mine = g.load(Ordering::Relaxed);
                        if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                            let (g1, st1, g2, st2) = (
                                Arc::clone(&g),
                                Arc::clone(&st),
                                Arc::clone(&g),
                                Arc::clone(&st),
                            );
                            std::thread::spawn(move || pump(client, s2, g1, mine, st1));
                            std::thread::spawn(move || pump(server, c2, g2, mine, st2));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(TcpProxy {
            addr,
            down,
            generation,
            stop,
        })
    }

    /// Cuts every connection and refuses new ones (`true`), or lets them through again.
    pub fn set_down(&self, down: bool) {
        use std::sync::atomic::Ordering;
        self.down.store(down, Ordering::SeqCst);
        if down {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Sends one HTTP/1.1 request over a plain TCP connection and returns the
/// status code and body.
pub fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(15)))?;
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The `footprint` binary built for the tests (`target/debug/footprint`).
pub fn footprint_bin() -> std::path::PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/footprint");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --bin footprint` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A `footprint` process that is killed when dropped, so a failing test
/// leaves no process behind.
pub struct Running(pub std::process::Child);

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `footprint --config CONFIG ARGS…` with its log (stderr, at info
/// level, no colours) written to `log`.
pub fn spawn_footprint(
    config: &std::path::Path,
    args: &[&str],
    log: &std::path::Path,
) -> Result<Running> {
    let log = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let child = std::process::Command::new(footprint_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .context("start footprint")?;
    Ok(Running(child))
}

/// Window rows by identity (aggregate, key, window start).
pub fn windows_by_id(rows: Vec<WindowRow>) -> BTreeMap<WindowId, WindowRow> {
    rows.into_iter()
        .map(|w| ((w.aggregate.clone(), w.key.clone(), w.window_start), w))
        .collect()
}

/// Recent-activity rows by (app, user).
pub fn recent_by_user(rows: Vec<RecentRow>) -> BTreeMap<(String, String), RecentRow> {
    rows.into_iter()
        .map(|r| ((r.app_id.clone(), r.user_id.clone()), r))
        .collect()
}

/// The stores a test wrote to: Redis keys under `prefix`, and the MySQL
/// database `database` with the default `fp_` tables.
pub struct Stores {
    spec: footprint_dataflows::PipelineSpec,
    redis: footprint_sinks::redis::RedisSinkFactory,
    mysql: footprint_sinks::mysql::MySqlSinkFactory,
}

/// What both stores hold, by identity.
pub struct StoredRows {
    /// Window rows in MySQL.
    pub mysql_windows: BTreeMap<WindowId, WindowRow>,
    /// Window rows in Redis.
    pub redis_windows: BTreeMap<WindowId, WindowRow>,
    /// Recent activity in MySQL.
    pub mysql_recent: BTreeMap<(String, String), RecentRow>,
    /// Recent activity in Redis.
    pub redis_recent: BTreeMap<(String, String), RecentRow>,
}

impl Stores {
    /// Opens both stores for `spec`.
    pub fn open(
        spec: &footprint_dataflows::PipelineSpec,
        prefix: &str,
        database: &str,
    ) -> Result<Self> {
        let keep = spec.recent.as_ref().map_or(0, |r| r.keep);
        let redis = footprint_sinks::redis::RedisSinkFactory::new(
            &redis_url(),
            prefix,
            Duration::ZERO,
            Duration::ZERO,
            keep,
        )?;
        let mysql = footprint_sinks::mysql::MySqlSinkFactory::new(
            &format!("{}/{database}", mysql_url()),
            Arc::new(spec.clone()),
            "fp_",
        )?;
        Ok(Stores {
            spec: spec.clone(),
            redis,
            mysql,
        })
    }

    /// Everything both stores hold.
    pub fn load(&self) -> Result<StoredRows> {
        Ok(StoredRows {
            mysql_windows: windows_by_id(self.mysql.load_windows()?),
            redis_windows: windows_by_id(self.redis.load_windows(&self.spec)?),
            mysql_recent: recent_by_user(self.mysql.load_recent()?),
            redis_recent: recent_by_user(self.redis.load_recent()?),
        })
    }
}

/// How many identities differ between `expected` and `got`: missing,
/// different, or there but not expected.
pub fn differences<K: Ord, V: PartialEq>(expected: &BTreeMap<K, V>, got: &BTreeMap<K, V>) -> usize {
    expected
        .iter()
        .filter(|(id, row)| got.get(*id) != Some(*row))
        .count()
        + got.keys().filter(|id| !expected.contains_key(*id)).count()
}
