//! Helpers for Footprint's end-to-end tests: where the services are, unique
//! names per test, pre-loading and live-producing topics, reading topics and
//! stores back, running the `footprint` binary, a broker of a test's own
//! ([`OwnBroker`]), and the failure-drill harness ([`drill`]).
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

pub mod drill;

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
    read_all_from(&kafka(), topic)
}

/// [`read_all`] from the brokers of `settings`.
pub fn read_all_from(settings: &KafkaSettings, topic: &str) -> Result<Vec<Read>> {
    let parts = admin::partitions(settings, topic)?
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

/// Every message `topic` holds, per partition (`partitions` of them), in
/// offset order: the input a reference should be computed from, since the
/// pipeline reads what the broker holds, whatever was produced.
pub fn held_parts(
    settings: &KafkaSettings,
    topic: &str,
    partitions: usize,
) -> Result<Vec<Vec<Vec<u8>>>> {
    let mut held = read_all_from(settings, topic)?;
    held.sort_by_key(|m| (m.partition, m.offset));
    let mut parts = vec![Vec::new(); partitions];
    for m in held {
        let slot = parts
            .get_mut(usize::try_from(m.partition).unwrap_or(usize::MAX))
            .with_context(|| format!("{topic} has a partition {}", m.partition))?;
        slot.push(m.payload);
    }
    Ok(parts)
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
    let control = Arc::new(RunControl::default());
    let opts = RunOptions {
        threads: Some(threads),
        until_end: true,
        extra_sinks: vec![extra],
        progress: None,
        control: Arc::clone(&control),
        ..RunOptions::default()
    };
    // A run that cannot finish is stopped, so its test fails instead of hanging.
    let watchdog = Watchdog::start(Duration::from_secs(300), control);
    let report = run(cfg, opts, metrics)?;
    if watchdog.fired() {
        bail!("the run did not finish within 300 s and was stopped");
    }
    Ok((report, memory.take()))
}

/// Requests a stop when its time runs out, unless dropped first.
struct Watchdog {
    done: Arc<std::sync::atomic::AtomicBool>,
    fired: Arc<std::sync::atomic::AtomicBool>,
}

impl Watchdog {
    fn start(timeout: Duration, control: Arc<RunControl>) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let done = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicBool::new(false));
        let (d, f) = (Arc::clone(&done), Arc::clone(&fired));
        std::thread::spawn(move || {
            let deadline = Instant::now() + timeout;
            while !d.load(Ordering::SeqCst) {
                if Instant::now() > deadline {
                    f.store(true, Ordering::SeqCst);
                    control.request_stop();
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Watchdog { done, fired }
    }

    fn fired(&self) -> bool {
        self.fired.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
    }
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
/// level, no colours) written to `log`, and its standard output to `log`
/// with `.out` added.
pub fn spawn_footprint(
    config: &std::path::Path,
    args: &[&str],
    log: &std::path::Path,
) -> Result<Running> {
    spawn_footprint_env(config, args, log, &[])
}

/// [`spawn_footprint`] with extra environment variables.
pub fn spawn_footprint_env(
    config: &std::path::Path,
    args: &[&str],
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> Result<Running> {
    let out_path = std::path::PathBuf::from(format!("{}.out", log.display()));
    let out = std::fs::File::create(&out_path)
        .with_context(|| format!("create {}", out_path.display()))?;
    let log = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let child = std::process::Command::new(footprint_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdout(out)
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

/// Every table of MySQL database `database` as text, byte for byte: tables
/// by name, columns in table order (but `updated_at`, the wall-clock time of
/// the last write), rows by primary key. Two databases that hold the same
/// results give the same text.
pub fn dump_mysql(database: &str) -> Result<String> {
    use mysql::prelude::Queryable;
    let opts = mysql::Opts::from_url(&format!("{}/{database}", mysql_url()))?;
    let mut conn = mysql::Conn::new(opts)?;
    let mut tables: Vec<String> = conn.query("SHOW TABLES")?;
    tables.sort();
    let mut out = String::new();
    for table in tables {
        let columns: Vec<(String, String)> = conn
            .query::<mysql::Row, _>(format!(
                "SELECT COLUMN_NAME, COLUMN_KEY FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = '{database}' AND TABLE_NAME = '{table}' ORDER BY ORDINAL_POSITION"
            ))?
            .into_iter()
            .map(|mut r| {
                (
                    r.take::<String, _>(0).unwrap_or_default(),
                    r.take::<String, _>(1).unwrap_or_default(),
                )
            })
            .collect();
        let keep: Vec<&str> = columns
            .iter()
            .map(|(c, _)| c.as_str())
            .filter(|c| *c != "updated_at")
            .collect();
        let pk: Vec<&str> = columns
            .iter()
            .filter(|(_, k)| k == "PRI")
            .map(|(c, _)| c.as_str())
            .collect();
        let quoted = |cs: &[&str]| {
            cs.iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(",")
        };
        out.push_str(&format!("== {table} ({})\n", keep.join(",")));
        let rows: Vec<mysql::Row> = conn.query(format!(
            "SELECT {} FROM `{table}` ORDER BY {}",
            quoted(&keep),
            quoted(&pk)
        ))?;
        for row in rows {
            let cells: Vec<String> = row.unwrap().iter().map(|v| v.as_sql(true)).collect();
            out.push_str(&cells.join("\t"));
            out.push('\n');
        }
    }
    Ok(out)
}

/// Every Redis key under `prefix` as text, byte for byte: keys in order
/// (with the prefix cut off), hash fields sorted, lists in list order.
pub fn dump_redis(prefix: &str) -> Result<String> {
    let mut c = redis::Client::open(redis_url())?.get_connection()?;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut c)?;
    keys.sort();
    let mut out = String::new();
    for k in keys {
        let kind: String = redis::cmd("TYPE").arg(&k).query(&mut c)?;
        let name = k.strip_prefix(prefix).unwrap_or(&k);
        match kind.as_str() {
            "hash" => {
                let mut fields: Vec<(String, String)> =
                    redis::cmd("HGETALL").arg(&k).query(&mut c)?;
                fields.sort();
                out.push_str(&format!("{name} {fields:?}\n"));
            }
            "list" => {
                let items: Vec<String> =
                    redis::cmd("LRANGE").arg(&k).arg(0).arg(-1).query(&mut c)?;
                out.push_str(&format!("{name} {items:?}\n"));
            }
            other => out.push_str(&format!("{name} <{other}>\n")),
        }
    }
    Ok(out)
}

/// Waits (bounded) for `child` to exit and returns its status.
pub fn wait_exit(
    child: &mut Running,
    timeout: Duration,
    what: &str,
) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("{what} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Free loopback TCP addresses (`127.0.0.1:PORT`), for cluster hosts files.
pub fn free_addresses(n: usize) -> Result<Vec<String>> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    listeners
        .iter()
        .map(|l| Ok(format!("127.0.0.1:{}", l.local_addr()?.port())))
        .collect()
}

/// The sum of the offsets `group` has committed over `topic`'s partitions 0..`partitions`.
pub fn committed_total(group: &str, topic: &str, partitions: i32) -> Result<i64> {
    committed_total_at(&kafka(), group, topic, partitions)
}

/// [`committed_total`] on the brokers of `settings`.
pub fn committed_total_at(
    settings: &KafkaSettings,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<i64> {
    let pairs: Vec<(String, i32)> = (0..partitions).map(|p| (topic.to_owned(), p)).collect();
    Ok(admin::committed(settings, group, &pairs)?
        .iter()
        .map(|c| c.map_or(0, |c| c.offset))
        .sum())
}

/// Names and files one store scenario owns: its topic, consumer group,
/// Redis prefix, MySQL database and a directory for configs and logs
/// (kept after a failure, for a look; [`Scenario::clean`] removes it all).
pub struct Scenario {
    /// Brokers (the test broker unless a drill brings its own).
    pub brokers: String,
    /// Source topic.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// Redis key prefix.
    pub prefix: String,
    /// MySQL database.
    pub database: String,
    /// Configs, logs and journals.
    pub dir: std::path::PathBuf,
}

impl Scenario {
    /// Fresh names for a scenario called `name`.
    pub fn new(name: &str) -> Result<Self> {
        let topic = unique(name);
        Ok(Scenario {
            brokers: brokers(),
            group: format!("{topic}-group"),
            prefix: unique(&format!("fp{name}")),
            database: unique(&format!("fp_{name}")).replace('-', "_"),
            dir: tempfile_dir(name)?,
            topic,
        })
    }

    /// The same topic, read by another group into other stores (to compare
    /// two ways of running over the same input).
    pub fn sibling(&self, name: &str) -> Result<Self> {
        Ok(Scenario {
            topic: self.topic.clone(),
            ..Scenario::new(name)?
        })
    }

    /// A pipeline config over the stores: the default aggregates (1-minute
    /// tumbling count, distinct users and sum by app, event and item with
    /// early updates; 10-minute sliding count and distinct users by app and
    /// event) and recent activity (5 events), written to Redis and MySQL.
    /// `source_extra` goes into `[source]`, `tail` after everything.
    pub fn toml(&self, source_extra: &str, tail: &str) -> String {
        format!(
            r#"
[source]
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "{group}"
{source_extra}

[watermark]
max_out_of_order = "3s"

[retry]
topic = "{topic}-retry"
journal = "{journal}"

[admin]
listen = "127.0.0.1:0"
control_topic = "{topic}-control"

[[aggregate]]
name = "item_activity_1m"
group_by = ["app_id", "event", "item_id"]
window = {{ tumbling = "1m" }}
measures = ["count", "distinct(user_id)", "sum(value)"]
allowed_lateness = "5s"
early_updates = "50ms"
sinks = ["redis", "mysql"]

[[aggregate]]
name = "app_events_10m"
group_by = ["app_id", "event"]
window = {{ sliding = "10m", every = "1m" }}
measures = ["count", "distinct(user_id)"]
sinks = ["redis", "mysql"]

[recent]
keep = 5
updates = "50ms"
sinks = ["redis", "mysql"]

[sinks.redis]
url = "{redis}"
prefix = "{prefix}"

[sinks.mysql]
url = "{mysql}/{database}"
{tail}
"#,
            brokers = self.brokers,
            topic = self.topic,
            group = self.group,
            journal = self.dir.join("retry.journal").display(),
            prefix = self.prefix,
            database = self.database,
            redis = redis_url(),
            mysql = mysql_url(),
        )
    }

    /// Writes `toml` as this scenario's config file `name` and parses it.
    pub fn write_config(&self, name: &str, toml: &str) -> Result<(std::path::PathBuf, Config)> {
        let path = self.dir.join(name);
        std::fs::write(&path, toml)?;
        let cfg = Config::from_layers(Some(toml), Vec::<(String, String)>::new())?;
        Ok((path, cfg))
    }

    /// Both stores' contents.
    pub fn stored(&self, spec: &footprint_dataflows::PipelineSpec) -> Result<StoredRows> {
        Stores::open(spec, &self.prefix, &self.database)?.load()
    }

    /// Drops the database and the Redis keys, and removes the directory.
    pub fn clean(&self) {
        drop_database(&self.database);
        delete_redis_prefix(&self.prefix);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tempfile_dir(name: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(unique(&format!("footprint-{name}")));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Every message of the first `count` generated by `cfg`, per partition, in order.
pub fn generated(cfg: &GenConfig, count: u64) -> Vec<Vec<Vec<u8>>> {
    let mut generator = Generator::new(cfg.clone());
    let mut parts = vec![Vec::new(); cfg.partitions as usize];
    for _ in 0..count {
        let e = generator.next_event();
        parts[e.partition as usize].push(e.payload);
    }
    parts
}

/// Produces messages `skip..skip + count` of the stream `cfg` generates to
/// `topic` (created if missing), so that a test can feed one stream in parts.
pub fn produce_slice(topic: &str, cfg: &GenConfig, skip: u64, count: u64) -> Result<()> {
    let settings = kafka();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(admin::ensure_topic(
            &settings,
            topic,
            cfg.partitions as i32,
            1,
        ))?;
    let producer = footprint_connectors::producer::EventProducer::new(&settings)?;
    let mut generator = Generator::new(cfg.clone());
    for i in 0..skip + count {
        let e = generator.next_event();
        if i >= skip {
            producer.send(topic, e.partition as i32, e.key.as_bytes(), &e.payload)?;
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}

/// Creates `topic` on the brokers of `settings` and starts producing the
/// first `count` messages that `cfg` generates to it, at about `rate` messages a second, in a thread of
/// its own: a live stream for drills. Join the thread to wait for the end.
pub fn produce_live(
    settings: &KafkaSettings,
    topic: &str,
    cfg: &GenConfig,
    count: u64,
    rate: u64,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    let settings = settings.clone();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(admin::ensure_topic(
            &settings,
            topic,
            cfg.partitions as i32,
            1,
        ))?;
    let producer = footprint_connectors::producer::EventProducer::new(&settings)?;
    let (topic, cfg) = (topic.to_owned(), cfg.clone());
    Ok(std::thread::spawn(move || {
        let mut generator = Generator::new(cfg);
        let started = Instant::now();
        for i in 0..count {
            let due = started + Duration::from_secs_f64(i as f64 / rate.max(1) as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let e = generator.next_event();
            producer.send(&topic, e.partition as i32, e.key.as_bytes(), &e.payload)?;
        }
        producer.flush(Duration::from_secs(60))?;
        Ok(())
    }))
}

/// Waits (bounded) until the `footprint` log at `log` says where its admin
/// API listens, and returns that address.
pub fn admin_addr_from_log(log: &std::path::Path) -> Result<std::net::SocketAddr> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(rest) = text.split("admin API: http://").nth(1)
            && let Some(addr) = rest.split('/').next()
        {
            return Ok(addr.parse()?);
        }
        if Instant::now() > deadline {
            bail!("{} never said where the admin API listens", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` on an admin API, parsed as JSON.
pub fn get_json(addr: std::net::SocketAddr, path: &str) -> Result<serde_json::Value> {
    let (status, body) = http(addr, "GET", path, "")?;
    if status != 200 {
        bail!("GET {path}: {status} {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// A tansu broker of a test's own, with a file (SQLite) store, that the
/// test can kill and restart on the same port: for broker drills. Killed
/// when dropped.
pub struct OwnBroker {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    db: std::path::PathBuf,
    log: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl OwnBroker {
    /// Starts tansu on a free loopback port, storing in `dir/broker.db`.
    pub fn start(dir: &std::path::Path) -> Result<Self> {
        let addr = free_addresses(1)?.remove(0);
        let mut b = OwnBroker {
            addr,
            db: dir.join("broker.db"),
            log: dir.join("broker.log"),
            child: None,
        };
        b.restart()?;
        Ok(b)
    }

    /// Kills the broker with SIGKILL.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Starts the broker again (same port, same store) and waits until it accepts connections.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        let tansu =
            which_tansu().context("tansu is not installed: scripts/services.sh installs it")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let listener = format!("tcp://{}", self.addr);
        let child = std::process::Command::new(tansu)
            .current_dir("/")
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("DATA_LAKE")
            .args([
                "broker",
                "--cluster-id",
                "footprint-drill",
                "--listener-url",
            ])
            .arg(&listener)
            .arg("--advertised-listener-url")
            .arg(&listener)
            .arg("--storage-engine")
            .arg(format!("sqlite://{}", self.db.display()))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start tansu")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "tansu did not listen on {}; see {}",
                    self.addr,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Kafka settings for this broker.
    pub fn settings(&self) -> KafkaSettings {
        KafkaSettings::new(self.addr.clone())
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

fn which_tansu() -> Option<std::path::PathBuf> {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("tansu"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain(home.map(|h| h.join(".cargo/bin/tansu")))
        .find(|p| p.is_file())
}
