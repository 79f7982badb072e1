//! The TOML pipeline config: embedded defaults, then a file, then the
//! environment; validated at start-up with errors that name the bad key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use footprint_connectors::client::KafkaSettings;
use footprint_dataflows::spec::{AggregateSpec, Field, Measure, PipelineSpec, RecentSpec};
use footprint_dataflows::window::WindowSpec;
use footprint_sinks::redis::TopIndex;
use serde::Deserialize;

const DEFAULTS: &str = include_str!("default.toml");
const DAY_MS: u64 = 86_400_000;
const YEAR_MS: u64 = 365 * DAY_MS;
/// Most windows one event may fall in (sliding size / slide).
const MAX_WINDOWS_PER_EVENT: u64 = 1_000;

/// A config that cannot be used, with the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Dotted path of the bad key (`aggregate[1].window.every`), or the file.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config at `{}`: {}", self.key, self.message)
    }
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// A duration written like `"5s"`, `"1m"`, `"250ms"` or `"7d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration `{s}` ({e}); write e.g. \"500ms\", \"5s\", \"1m\", \"7d\""
            ))
        })
    }
}

impl Dur {
    fn ms(self) -> u64 {
        self.0.as_millis() as u64
    }
}

/// Where reading starts when no explicit range is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// The oldest retained offset of each partition.
    Earliest,
    /// The end of each partition at start-up.
    Latest,
    /// Where the consumer group committed (the checkpoint of the last run),
    /// or the oldest retained offset where it committed nothing.
    Committed,
}

/// `[source]`: the Kafka topics to read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Topics to read; each needs `<topic>.dlq` and `<topic>.late` (created if missing).
    pub topics: Vec<String>,
    /// Consumer group id.
    pub group_id: String,
    /// `committed`, `earliest` or `latest`.
    pub start: Start,
    /// The compacted topic that keeps each partition's checkpoint (offset
    /// and watermark) for restarts.
    pub checkpoint_topic: String,
    /// How often source offsets are committed (each commit covers only
    /// messages whose results are all written).
    pub commit_interval: Dur,
    /// Messages read per partition per round.
    pub batch: usize,
    /// Testing aid: relative per-partition read rates (cycled), to stage
    /// partitions being consumed at different speeds. Empty: all equal.
    pub read_weights: Vec<usize>,
    /// Extra librdkafka properties (security, timeouts…).
    pub properties: BTreeMap<String, String>,
}

/// `[watermark]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkConfig {
    /// Bounded disorder per partition.
    pub max_out_of_order: Dur,
    /// A partition read to its end and silent this long stops holding the watermark back.
    pub idle_timeout: Dur,
    /// How far a partition's watermark may run ahead of the slowest
    /// partition read; one further ahead waits for it ("0s": no limit).
    pub max_drift: Dur,
}

/// `[worker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Timely worker threads in this process.
    pub threads: usize,
}

/// `[admin]`: the HTTP admin service and the switches' control topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: std::net::SocketAddr,
    /// Bearer token; required when `listen` is not a loopback address
    /// (`FOOTPRINT_ADMIN_TOKEN` sets it too).
    pub token: Option<String>,
    /// Compacted topic holding the degrade switches.
    pub control_topic: String,
}

/// `[health]`: when a process calls its broker unhealthy (`/health`,
/// `/status`, an ERROR line).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// No successful request to the broker for this long: unreachable.
    pub broker_timeout: Dur,
    /// Messages waiting in the process's partitions, but nothing read for
    /// this long: stalled.
    pub stall_timeout: Dur,
}

/// A token-bucket rate in the config: `{ per_second = 100, burst = 200 }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Requests per second on average.
    pub per_second: u32,
    /// The bucket's size (default: one second's worth).
    pub burst: Option<u32>,
}

impl RateConfig {
    /// The rate and burst of `r` (the burst defaults to one second's
    /// worth), or an error at `key` if either is 0.
    fn checked(key: String, r: Option<RateConfig>) -> Result<Option<(u32, u32)>, ConfigError> {
        match r {
            None => Ok(None),
            Some(r) if r.per_second == 0 || r.burst == Some(0) => {
                Err(err(key, "per_second and burst must be at least 1"))
            }
            Some(r) => Ok(Some((r.per_second, r.burst.unwrap_or(r.per_second)))),
        }
    }
}

/// `[serve.apps.APP]`: one app's token and rate limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeAppConfig {
    /// Bearer token that reads this app's data.
    pub token: Option<String>,
    /// The app's rate limit, if not `serve.app_rate`.
    pub rate: Option<RateConfig>,
}

/// `[serve.cache]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeCacheConfig {
    /// Whether answers are cached.
    pub enabled: bool,
    /// Answers kept at most.
    pub capacity: u64,
    /// How long answers with open windows or recent activity are kept.
    pub open_ttl: Dur,
    /// How long answers of final windows only are kept.
    pub final_ttl: Dur,
}

/// `[serve]`: the query service (`footprint serve`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: std::net::SocketAddr,
    /// Threads of its runtime.
    pub threads: usize,
    /// A Redis read slower than this falls back to MySQL.
    pub redis_timeout: Dur,
    /// A MySQL read slower than this fails.
    pub mysql_timeout: Dur,
    /// Consecutive failed reads that open a store's read breaker.
    pub breaker_failures: u32,
    /// How long an open read breaker waits before one probe.
    pub breaker_open_for: Dur,
    /// Concurrent Redis reads at most.
    pub redis_concurrency: usize,
    /// Concurrent MySQL reads at most (and its connections).
    pub mysql_concurrency: usize,
    /// Requests in flight at most; more get a fast 503.
    pub max_in_flight: usize,
    /// Windows one series may span.
    pub max_windows: usize,
    /// Groups one top-N may return.
    pub max_top: usize,
    /// Users one batch lookup may name.
    pub max_batch: usize,
    /// Token that reads every app's data (`FOOTPRINT_SERVE_TOKEN` sets it too).
    pub admin_token: Option<String>,
    /// Rate of an app without a rate of its own.
    pub app_rate: Option<RateConfig>,
    /// Rate of one client address.
    pub ip_rate: Option<RateConfig>,
    /// The cache.
    pub cache: ServeCacheConfig,
    /// Apps by id.
    #[serde(default)]
    pub apps: BTreeMap<String, ServeAppConfig>,
}

/// `[collect.apps.APP]`: one app's token, quota and priority.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectAppConfig {
    /// Bearer token that sends this app's events.
    pub token: Option<String>,
    /// The app's quota in events per second, if not `collect.default_rate`.
    pub rate: Option<RateConfig>,
    /// Higher is shed later under pressure; the highest is never shed.
    #[serde(default)]
    pub priority: i32,
}

/// `[collect.spill]`: where accepted events wait while Kafka cannot take them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpillConfig {
    /// Its directory (one per collector process).
    pub dir: String,
    /// Bytes waiting at most; past it requests get 503.
    pub max_bytes: u64,
    /// The size of one segment file.
    pub segment_bytes: u64,
}

/// `[collect]`: the event collector (`footprint collect`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: std::net::SocketAddr,
    /// Threads of its runtime.
    pub threads: usize,
    /// Partitions of the source topic, when the collector creates it.
    pub partitions: i32,
    /// How long a request waits for Kafka before its events go to the spill.
    pub ack_timeout: Dur,
    /// The largest body as sent.
    pub max_body_bytes: u64,
    /// The largest body once decompressed.
    pub max_decompressed_bytes: u64,
    /// The largest event.
    pub max_event_bytes: u64,
    /// How long an event id is remembered to answer retries `duplicate`.
    pub dedup_window: Dur,
    /// Event ids remembered at most, over all apps.
    pub dedup_max_ids: usize,
    /// Pressure (spill fill or memory over budget) at which apps are shed.
    pub shed_high: f64,
    /// Pressure under which shed apps are taken back.
    pub shed_low: f64,
    /// Time between two shedding steps.
    pub shed_step: Dur,
    /// The process's memory budget in bytes, counted in the pressure.
    pub memory_budget_bytes: Option<u64>,
    /// The quota of an app without one of its own (events per second).
    pub default_rate: Option<RateConfig>,
    /// The priority of an app that is not listed.
    pub default_priority: i32,
    /// The spill.
    pub spill: SpillConfig,
    /// Apps by id.
    #[serde(default)]
    pub apps: BTreeMap<String, CollectAppConfig>,
}

/// `[retry]`: what happens to writes a store sink cannot apply.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// The retry topic (created if missing).
    pub topic: String,
    /// Brokers of the retry topic, when they are not `source.brokers`.
    pub brokers: Option<String>,
    /// Local journal for records the retry topic does not take (one per process).
    pub journal: String,
    /// How long to wait for Kafka to acknowledge a retry record before journaling it.
    pub ack_timeout: Dur,
    /// Attempts per write (the first included) before it is diverted.
    pub attempts: u32,
    /// Consecutive failed writes that open a sink's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker waits before it lets one probe write through.
    pub breaker_open_for: Dur,
}

/// `window = { tumbling = "1m" }` or `{ sliding = "10m", every = "1m" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Tumbling window size.
    pub tumbling: Option<Dur>,
    /// Sliding window size.
    pub sliding: Option<Dur>,
    /// Sliding window slide.
    pub every: Option<Dur>,
}

/// One `[[aggregate]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// Unique name.
    pub name: String,
    /// Group-by fields.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Window shape.
    pub window: WindowConfig,
    /// Measures: `count`, `distinct(FIELD)`, `sum(value)`.
    pub measures: Vec<String>,
    /// How long after its end a window still accepts events (default 0s).
    pub allowed_lateness: Option<Dur>,
    /// At most how often each changed open window is refreshed, counted from
    /// when it opened or was last emitted (default: finals only).
    pub early_updates: Option<Dur>,
    /// Sinks that receive the rows.
    pub sinks: Vec<String>,
}

/// `[recent]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecentConfig {
    /// Whether recent activity is kept (`enabled = false` turns it off).
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Latest events kept per user.
    pub keep: usize,
    /// How long a silent user's activity is kept.
    pub ttl: Dur,
    /// How often changed users are emitted.
    pub updates: Dur,
    /// Sinks that receive the rows.
    pub sinks: Vec<String>,
}

/// `[sinks.file]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Path of the JSON-lines file (`-` for standard output).
    pub path: String,
}

/// `[sinks.redis]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Key prefix.
    #[serde(default = "default_redis_prefix")]
    pub prefix: String,
    /// How long a window row lives after its last write.
    #[serde(default = "default_redis_ttl")]
    pub ttl: Dur,
    /// Top-N indexes kept in sorted sets, for the query service.
    #[serde(default)]
    pub top: Vec<TopIndexConfig>,
}

/// One `[[sinks.redis.top]]`: keep the groups of each window of
/// `aggregate`, within a prefix of its key, ordered by `by`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopIndexConfig {
    /// The aggregate's name.
    pub aggregate: String,
    /// The leading group-by fields that make the prefix (default: none,
    /// the whole window).
    #[serde(default)]
    pub within: Vec<String>,
    /// The measure, as written in the aggregate's `measures`.
    pub by: String,
}

fn enabled() -> bool {
    true
}

fn default_redis_prefix() -> String {
    "fp".into()
}

fn default_redis_ttl() -> Dur {
    Dur(Duration::from_secs(7 * 86_400))
}

/// `[sinks.mysql]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MySqlSinkConfig {
    /// `mysql://user[:password]@host:port/database` (the database is created if missing).
    pub url: String,
    /// Prefix of table names (`PREFIXaggregate`, `PREFIXrecent`).
    #[serde(default = "default_table_prefix")]
    pub table_prefix: String,
}

fn default_table_prefix() -> String {
    "fp_".into()
}

/// `[sinks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// The file sink.
    pub file: Option<FileSinkConfig>,
    /// The Redis sink.
    pub redis: Option<RedisSinkConfig>,
    /// The MySQL sink.
    pub mysql: Option<MySqlSinkConfig>,
    /// Result rows that may wait for a process's store writers before its
    /// sources pause reading (back-pressure).
    pub max_rows_waiting: u64,
}

/// The whole config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka source.
    pub source: SourceConfig,
    /// Watermarks.
    pub watermark: WatermarkConfig,
    /// This process's workers.
    pub worker: WorkerConfig,
    /// Retry topic, journal, retries and breaker.
    pub retry: RetryConfig,
    /// Admin service.
    pub admin: AdminConfig,
    /// When the broker counts as unhealthy.
    pub health: HealthConfig,
    /// The query service.
    pub serve: ServeConfig,
    /// The event collector.
    pub collect: CollectConfig,
    /// Windowed aggregates.
    #[serde(default)]
    pub aggregate: Vec<AggregateConfig>,
    /// Recent activity (`enabled = false` turns it off).
    pub recent: Option<RecentConfig>,
    /// Sinks (the embedded defaults always have the table).
    pub sinks: SinksConfig,
}

impl Config {
    /// Where the admin service's operator console is, when the admin service
    /// has a fixed port (port 0 is only known once a worker starts).
    pub fn console_url(&self) -> Option<String> {
        (self.admin.listen.port() != 0).then(|| format!("http://{}/", self.admin.listen))
    }

    /// Loads the embedded defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| err(p.display().to_string(), format!("cannot read: {e}")))?,
            ),
            None => None,
        };
        Self::from_layers(text.as_deref(), std::env::vars())
    }

    /// Builds a config from the defaults, an optional TOML text, and
    /// `FOOTPRINT__SECTION__KEY=value` variables (`FOOTPRINT_BROKERS` also sets
    /// `source.brokers`).
    pub fn from_layers(
        text: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut root: toml::Table =
            toml::from_str(DEFAULTS).map_err(|e| err("<defaults>", e.to_string()))?;
        if let Some(t) = text {
            let user: toml::Table = toml::from_str(t)
                .map_err(|e| err("<config file>", e.to_string().trim().to_owned()))?;
            merge(&mut root, user);
        }
        for (k, v) in env {
            let path: Vec<String> = if k == "FOOTPRINT_BROKERS" {
                vec!["source".into(), "brokers".into()]
            } else if k == "FOOTPRINT_ADMIN_TOKEN" {
                vec!["admin".into(), "token".into()]
            } else if k == "FOOTPRINT_SERVE_TOKEN" {
                vec!["serve".into(), "admin_token".into()]
            } else if let Some(rest) = k.strip_prefix("FOOTPRINT__") {
                rest.split("__").map(|s| s.to_ascii_lowercase()).collect()
            } else {
                continue;
            };
            let value = v
                .parse::<toml::Value>()
                .ok()
                .filter(|x| !x.is_table())
                .unwrap_or(toml::Value::String(v.clone()));
            set_path(&mut root, &path, value).map_err(|m| err(k.clone(), m))?;
        }
        let cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
                let key = e.path().to_string();
                err(
                    if key == "." {
                        "<config>".to_owned()
                    } else {
                        key
                    },
                    e.inner().to_string(),
                )
            })?;
        cfg.spec()?;
        Ok(cfg)
    }

    /// The Kafka client settings of the retry topic.
    pub fn retry_kafka(&self) -> KafkaSettings {
        let mut k = self.kafka();
        if let Some(b) = &self.retry.brokers {
            k.brokers = b.clone();
        }
        k
    }

    /// The Kafka client settings (their clients report to metrics of
    /// their own until given a process's, see `Process::kafka`).
    pub fn kafka(&self) -> KafkaSettings {
        let mut k = KafkaSettings::new(self.source.brokers.clone());
        k.properties = self.source.properties.clone();
        k
    }

    /// Validates `[serve]` and turns it into the query service's settings.
    pub fn serve_settings(&self) -> Result<footprint_query::ServeSettings, ConfigError> {
        use footprint_query::settings::{AppAccess, CacheSettings, Rate};
        let s = &self.serve;
        let rate = |key: String, r: Option<RateConfig>| -> Result<Option<Rate>, ConfigError> {
            Ok(RateConfig::checked(key, r)?.map(|(per_second, burst)| Rate { per_second, burst }))
        };
        for (key, v) in [
            ("serve.threads", s.threads),
            ("serve.redis_concurrency", s.redis_concurrency),
            ("serve.mysql_concurrency", s.mysql_concurrency),
            ("serve.max_in_flight", s.max_in_flight),
            ("serve.max_windows", s.max_windows),
            ("serve.max_top", s.max_top),
            ("serve.max_batch", s.max_batch),
        ] {
            if v == 0 {
                return Err(err(key, "must be at least 1"));
            }
        }
        if s.breaker_failures == 0 {
            return Err(err("serve.breaker_failures", "must be at least 1"));
        }
        for (key, d) in [
            ("serve.redis_timeout", s.redis_timeout),
            ("serve.mysql_timeout", s.mysql_timeout),
        ] {
            if d.0.is_zero() {
                return Err(err(key, "must be more than 0"));
            }
        }
        let mut apps = std::collections::HashMap::new();
        for (app, a) in &s.apps {
            if a.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
                return Err(err(format!("serve.apps.{app}.token"), "must not be empty"));
            }
            apps.insert(
                app.clone(),
                AppAccess {
                    token: a.token.clone(),
                    rate: rate(format!("serve.apps.{app}.rate"), a.rate)?,
                },
            );
        }
        let settings = footprint_query::ServeSettings {
            redis_timeout: s.redis_timeout.0,
            mysql_timeout: s.mysql_timeout.0,
            breaker: footprint_sinks::util::breaker::BreakerConfig {
                failures_to_open: s.breaker_failures,
                open_for: s.breaker_open_for.0,
            },
            redis_concurrency: s.redis_concurrency,
            mysql_concurrency: s.mysql_concurrency,
            max_in_flight: s.max_in_flight,
            cache: CacheSettings {
                enabled: s.cache.enabled,
                capacity: s.cache.capacity,
                open_ttl: s.cache.open_ttl.0,
                final_ttl: s.cache.final_ttl.0,
            },
            max_windows: s.max_windows,
            max_top: s.max_top,
            max_batch: s.max_batch,
            admin_token: s.admin_token.clone().filter(|t| !t.trim().is_empty()),
            apps,
            app_rate: rate("serve.app_rate".into(), s.app_rate)?,
            ip_rate: rate("serve.ip_rate".into(), s.ip_rate)?,
        };
        if !s.listen.ip().is_loopback() && !settings.needs_tokens() {
            return Err(err(
                "serve.listen",
                format!(
                    "the query service listens on {}, which is not loopback: set serve.admin_token or a token per app in [serve.apps.APP]",
                    s.listen
                ),
            ));
        }
        if self.sinks.redis.is_none() && self.sinks.mysql.is_none() {
            return Err(err(
                "sinks",
                "the query service reads [sinks.redis] and [sinks.mysql]; neither is configured",
            ));
        }
        Ok(settings)
    }

    /// Validates `[collect]` and turns it into the collector's settings.
    pub fn collect_settings(&self) -> Result<footprint_collect::CollectSettings, ConfigError> {
        use footprint_collect::{AppSettings, Rate};
        let c = &self.collect;
        let rate = |key: String, r: Option<RateConfig>| -> Result<Option<Rate>, ConfigError> {
            Ok(RateConfig::checked(key, r)?.map(|(per_second, burst)| Rate { per_second, burst }))
        };
        if c.threads == 0 {
            return Err(err("collect.threads", "must be at least 1"));
        }
        if c.partitions < 1 {
            return Err(err("collect.partitions", "must be at least 1"));
        }
        if c.ack_timeout.0.is_zero() {
            return Err(err("collect.ack_timeout", "must be more than 0"));
        }
        for (key, v) in [
            ("collect.max_body_bytes", c.max_body_bytes),
            ("collect.max_decompressed_bytes", c.max_decompressed_bytes),
            ("collect.max_event_bytes", c.max_event_bytes),
            ("collect.spill.max_bytes", c.spill.max_bytes),
            ("collect.spill.segment_bytes", c.spill.segment_bytes),
            ("collect.dedup_max_ids", c.dedup_max_ids as u64),
        ] {
            if v == 0 {
                return Err(err(key, "must be at least 1"));
            }
        }
        if c.max_decompressed_bytes < c.max_body_bytes {
            return Err(err(
                "collect.max_decompressed_bytes",
                "must be at least collect.max_body_bytes",
            ));
        }
        if !(c.shed_low > 0.0 && c.shed_low <= c.shed_high && c.shed_high <= 1.0) {
            return Err(err(
                "collect.shed_high",
                "needs 0 < shed_low <= shed_high <= 1",
            ));
        }
        let mut apps = BTreeMap::new();
        let mut tokens = std::collections::HashSet::new();
        for (app, a) in &c.apps {
            if let Some(t) = &a.token {
                if t.trim().is_empty() {
                    return Err(err(
                        format!("collect.apps.{app}.token"),
                        "must not be empty",
                    ));
                }
                if !tokens.insert(t.clone()) {
                    return Err(err(
                        format!("collect.apps.{app}.token"),
                        "is the token of another app too",
                    ));
                }
            }
            apps.insert(
                app.clone(),
                AppSettings {
                    token: a.token.clone(),
                    rate: rate(format!("collect.apps.{app}.rate"), a.rate)?,
                    priority: a.priority,
                },
            );
        }
        let mut s = footprint_collect::CollectSettings::new(c.spill.dir.clone().into());
        s.ack_timeout = c.ack_timeout.0;
        s.max_body = usize::try_from(c.max_body_bytes).unwrap_or(usize::MAX);
        s.max_decompressed = usize::try_from(c.max_decompressed_bytes).unwrap_or(usize::MAX);
        s.max_event_bytes = usize::try_from(c.max_event_bytes).unwrap_or(usize::MAX);
        s.dedup_window = c.dedup_window.0;
        s.dedup_max_ids = c.dedup_max_ids;
        s.spill_max_bytes = c.spill.max_bytes;
        s.spill_segment_bytes = c.spill.segment_bytes;
        s.shed_high = c.shed_high;
        s.shed_low = c.shed_low;
        s.shed_step = c.shed_step.0;
        s.memory_budget = c.memory_budget_bytes;
        s.default_rate = rate("collect.default_rate".into(), c.default_rate)?;
        s.default_priority = c.default_priority;
        s.apps = apps;
        if !c.listen.ip().is_loopback() && !s.needs_tokens() {
            return Err(err(
                "collect.listen",
                format!(
                    "the collector listens on {}, which is not loopback: give each app a token in [collect.apps.APP]",
                    c.listen
                ),
            ));
        }
        Ok(s)
    }

    /// Validates everything and compiles the pipeline spec.
    pub fn spec(&self) -> Result<PipelineSpec, ConfigError> {
        if self.source.brokers.trim().is_empty() {
            return Err(err("source.brokers", "must name at least one broker"));
        }
        if self.source.topics.is_empty() || self.source.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(err(
                "source.topics",
                "must list at least one non-empty topic",
            ));
        }
        if self.source.batch == 0 {
            return Err(err("source.batch", "must be at least 1"));
        }
        if self.worker.threads == 0 {
            return Err(err("worker.threads", "must be at least 1"));
        }
        if !self.admin.listen.ip().is_loopback()
            && self
                .admin
                .token
                .as_deref()
                .is_none_or(|t| t.trim().is_empty())
        {
            return Err(err(
                "admin.token",
                format!(
                    "the admin service listens on {}, which is not loopback: set a bearer token",
                    self.admin.listen
                ),
            ));
        }
        if self.sinks.max_rows_waiting == 0 {
            return Err(err("sinks.max_rows_waiting", "must be at least 1"));
        }
        for (key, d) in [
            ("health.broker_timeout", self.health.broker_timeout),
            ("health.stall_timeout", self.health.stall_timeout),
        ] {
            if d.0 < Duration::from_millis(500) {
                return Err(err(key, "must be at least 500ms"));
            }
        }
        if self.retry.attempts == 0 {
            return Err(err("retry.attempts", "must be at least 1"));
        }
        if self.retry.breaker_failures == 0 {
            return Err(err("retry.breaker_failures", "must be at least 1"));
        }
        if self.retry.topic.trim().is_empty() {
            return Err(err("retry.topic", "must not be empty"));
        }
        let known_sinks = self.sink_names();
        let check_sinks = |key: String, sinks: &[String]| -> Result<(), ConfigError> {
            for (i, s) in sinks.iter().enumerate() {
                if !known_sinks.contains(&s.as_str()) {
                    return Err(err(
                        format!("{key}[{i}]"),
                        format!("unknown sink `{s}`; configured sinks: {known_sinks:?}"),
                    ));
                }
            }
            Ok(())
        };
        let mut aggregates = Vec::new();
        for (i, a) in self.aggregate.iter().enumerate() {
            let at = |k: &str| format!("aggregate[{i}].{k}");
            let valid_name = a.name.len() <= 48
                && a.name.starts_with(|c: char| c.is_ascii_alphabetic())
                && a.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return Err(err(
                    at("name"),
                    format!(
                        "`{}` must be a letter then up to 47 letters, digits or `_` (it names store tables)",
                        a.name
                    ),
                ));
            }
            if self.aggregate[..i].iter().any(|b| b.name == a.name) {
                return Err(err(
                    at("name"),
                    format!("duplicate aggregate name `{}`", a.name),
                ));
            }
            let group_by = a
                .group_by
                .iter()
                .enumerate()
                .map(|(j, f)| Field::parse(f).map_err(|e| err(at(&format!("group_by[{j}]")), e.0)))
                .collect::<Result<Vec<_>, _>>()?;
            if a.measures.is_empty() {
                return Err(err(at("measures"), "must list at least one measure"));
            }
            let measures = a
                .measures
                .iter()
                .enumerate()
                .map(|(j, m)| {
                    Measure::parse(m).map_err(|e| err(at(&format!("measures[{j}]")), e.0))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let window = match (a.window.tumbling, a.window.sliding, a.window.every) {
                (Some(t), None, None) => WindowSpec::tumbling(t.ms()),
                (None, Some(s), Some(e)) => WindowSpec::sliding(s.ms(), e.ms()),
                (None, Some(_), None) => return Err(err(at("window.every"), "a sliding window needs `every`")),
                _ => return Err(err(at("window"), "write either { tumbling = \"1m\" } or { sliding = \"10m\", every = \"1m\" }")),
            }
            .map_err(|e| err(at("window"), e.to_string()))?;
            if let Some(e) = a.early_updates
                && !(1..=DAY_MS).contains(&e.ms())
            {
                return Err(err(
                    at("early_updates"),
                    "must be between 1ms and 1d (omit it for finals only)",
                ));
            }
            if window.windows_per_event() > MAX_WINDOWS_PER_EVENT {
                return Err(err(
                    at("window"),
                    format!(
                        "puts each event in {} windows; at most {MAX_WINDOWS_PER_EVENT} are allowed",
                        window.windows_per_event()
                    ),
                ));
            }
            if a.allowed_lateness.is_some_and(|l| l.ms() > YEAR_MS) {
                return Err(err(at("allowed_lateness"), "must be at most one year"));
            }
            check_sinks(at("sinks"), &a.sinks)?;
            aggregates.push(AggregateSpec {
                name: a.name.clone(),
                group_by,
                window,
                measures,
                allowed_lateness: a.allowed_lateness.map_or(0, Dur::ms),
                early_updates: a.early_updates.map(Dur::ms),
                sinks: a.sinks.clone(),
            });
        }
        if aggregates.len() > usize::from(u16::MAX) {
            return Err(err("aggregate", "too many aggregates"));
        }
        let recent = match &self.recent {
            Some(r) if r.enabled => {
                if r.keep == 0 {
                    return Err(err(
                        "recent.keep",
                        "must be at least 1 (set `enabled = false` to turn recent activity off)",
                    ));
                }
                if !(1..=DAY_MS).contains(&r.updates.ms()) {
                    return Err(err("recent.updates", "must be between 1ms and 1d"));
                }
                if r.ttl.ms() > 10 * YEAR_MS {
                    return Err(err("recent.ttl", "must be at most ten years"));
                }
                check_sinks("recent.sinks".into(), &r.sinks)?;
                Some(RecentSpec {
                    keep: r.keep,
                    ttl: r.ttl.ms(),
                    updates: r.updates.ms(),
                    sinks: r.sinks.clone(),
                })
            }
            Some(_) | None => None,
        };
        let spec = PipelineSpec {
            aggregates,
            recent,
            max_out_of_order: self.watermark.max_out_of_order.ms(),
        };
        self.top_indexes(&spec)?;
        Ok(spec)
    }

    /// The Redis sink's top-N indexes, checked against `spec`: each names
    /// an aggregate that writes to Redis, a prefix of its group-by fields
    /// and one of its measures.
    pub fn top_indexes(&self, spec: &PipelineSpec) -> Result<Vec<TopIndex>, ConfigError> {
        let Some(r) = &self.sinks.redis else {
            return Ok(Vec::new());
        };
        let mut out: Vec<TopIndex> = Vec::with_capacity(r.top.len());
        for (i, t) in r.top.iter().enumerate() {
            let at = |k: &str| format!("sinks.redis.top[{i}].{k}");
            let Some(agg) = spec.aggregates.iter().find(|a| a.name == t.aggregate) else {
                return Err(err(
                    at("aggregate"),
                    format!("no aggregate is named `{}`", t.aggregate),
                ));
            };
            if !agg.sinks.iter().any(|s| s == "redis") {
                return Err(err(
                    at("aggregate"),
                    format!("`{}` does not write to redis (its sinks)", agg.name),
                ));
            }
            let fields: Vec<String> = agg.group_by.iter().map(ToString::to_string).collect();
            if t.within.len() >= fields.len().max(1) || fields[..t.within.len()] != t.within[..] {
                return Err(err(
                    at("within"),
                    format!(
                        "must be a proper prefix of {}'s group_by {fields:?}",
                        agg.name
                    ),
                ));
            }
            let Some(by) = agg
                .measures
                .iter()
                .map(ToString::to_string)
                .find(|m| *m == t.by)
            else {
                return Err(err(
                    at("by"),
                    format!("`{}` is not a measure of {}", t.by, agg.name),
                ));
            };
            let index = TopIndex {
                aggregate: agg.name.clone(),
                within: t.within.len(),
                by,
            };
            if out.contains(&index) {
                return Err(err(at("within"), "the same index is listed twice"));
            }
            out.push(index);
        }
        Ok(out)
    }

    /// Names of the configured sinks.
    pub fn sink_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.sinks.file.is_some() {
            v.push("file");
        }
        if self.sinks.redis.is_some() {
            v.push("redis");
        }
        if self.sinks.mysql.is_some() {
            v.push("mysql");
        }
        v
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn set_path(root: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".into());
    };
    let mut t = root;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not a table"))?;
    }
    t.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_layers(Some(text), Vec::<(String, String)>::new())
    }

    #[test]
    fn the_defaults_are_valid_and_match_the_documented_pipeline() {
        let cfg = Config::from_layers(None, Vec::<(String, String)>::new()).expect("defaults");
        let spec = cfg.spec().expect("spec");
        assert_eq!(spec.aggregates.len(), 2);
        assert_eq!(spec.aggregates[1].window.windows_per_event(), 10);
        assert_eq!(spec.max_out_of_order, 5_000);
        assert_eq!(spec.recent.as_ref().map(|r| r.keep), Some(50));
    }

    #[test]
    fn recent_activity_can_be_turned_off_in_a_file_or_the_environment() {
        let cfg = load("[recent]\nenabled = false\n").expect("valid");
        assert!(cfg.spec().expect("spec").recent.is_none());
        let cfg = Config::from_layers(
            None,
            vec![("FOOTPRINT__RECENT__ENABLED".to_owned(), "false".to_owned())],
        )
        .expect("valid");
        assert!(cfg.spec().expect("spec").recent.is_none());
        // Turned off, its other keys are not checked.
        let cfg = load("[recent]\nenabled = false\nkeep = 0\n").expect("valid");
        assert!(cfg.spec().expect("spec").recent.is_none());
    }

    #[test]
    fn an_unknown_key_is_named() {
        let e = load("[source]\nbrokerz = \"x\"\n").expect_err("unknown key");
        assert_eq!(e.key, "source.brokerz");
        assert!(e.message.contains("brokerz"), "{e}");
    }

    #[test]
    fn a_bad_duration_is_named_with_its_path() {
        let e = load("[[aggregate]]\nname = \"a\"\nwindow = { tumbling = \"soon\" }\nmeasures = [\"count\"]\nsinks = [\"file\"]\n")
            .expect_err("bad duration");
        assert_eq!(e.key, "aggregate[0].window.tumbling");
        assert!(e.message.contains("soon"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let base = "[[aggregate]]\nname = \"a\"\nwindow = { sliding = \"10m\", every = \"3m\" }\nmeasures = [\"count\"]\nsinks = [\"file\"]\n";
        assert_eq!(
            load(base).expect_err("not a multiple").key,
            "aggregate[0].window"
        );
        let m = base
            .replace("\"count\"", "\"count\", \"median(value)\"")
            .replace("every = \"3m\"", "every = \"1m\"");
        assert_eq!(
            load(&m).expect_err("bad measure").key,
            "aggregate[0].measures[1]"
        );
        let s = base
            .replace("\"file\"", "\"redis\"")
            .replace("every = \"3m\"", "every = \"1m\"");
        assert_eq!(load(&s).expect_err("bad sink").key, "aggregate[0].sinks[0]");
    }

    #[test]
    fn top_indexes_must_name_a_redis_aggregate_a_key_prefix_and_a_measure() {
        let base = "[sinks.redis]\nurl = \"redis://127.0.0.1:6379\"\n[[aggregate]]\nname = \"a\"\ngroup_by = [\"app_id\", \"event\"]\nwindow = { tumbling = \"1m\" }\nmeasures = [\"count\", \"distinct(user_id)\"]\nsinks = [\"redis\"]\n";
        let with = |top: &str| format!("{base}[[sinks.redis.top]]\n{top}\n");
        let cfg = load(&with(
            "aggregate = \"a\"\nwithin = [\"app_id\"]\nby = \"distinct(user_id)\"",
        ))
        .expect("valid");
        let spec = cfg.spec().expect("spec");
        assert_eq!(
            cfg.top_indexes(&spec).expect("indexes"),
            vec![TopIndex {
                aggregate: "a".into(),
                within: 1,
                by: "distinct(user_id)".into()
            }]
        );
        for (top, key) in [
            (
                "aggregate = \"b\"\nby = \"count\"",
                "sinks.redis.top[0].aggregate",
            ),
            (
                "aggregate = \"a\"\nwithin = [\"event\"]\nby = \"count\"",
                "sinks.redis.top[0].within",
            ),
            (
                "aggregate = \"a\"\nwithin = [\"app_id\", \"event\"]\nby = \"count\"",
                "sinks.redis.top[0].within",
            ),
            (
                "aggregate = \"a\"\nby = \"sum(value)\"",
                "sinks.redis.top[0].by",
            ),
        ] {
            assert_eq!(load(&with(top)).expect_err(top).key, key, "{top}");
        }
        let file_only = with("aggregate = \"a\"\nby = \"count\"")
            .replace("sinks = [\"redis\"]", "sinks = [\"file\"]");
        assert_eq!(
            load(&file_only).expect_err("not redis").key,
            "sinks.redis.top[0].aggregate"
        );
    }

    #[test]
    fn the_back_pressure_limit_is_100000_rows_and_never_zero() {
        let cfg = Config::from_layers(None, Vec::<(String, String)>::new()).expect("defaults");
        assert_eq!(cfg.sinks.max_rows_waiting, 100_000);
        let e = load("[sinks]\nmax_rows_waiting = 0\n").expect_err("zero");
        assert_eq!(e.key, "sinks.max_rows_waiting");
        let cfg = load("[sinks]\nmax_rows_waiting = 500\n").expect("500");
        assert_eq!(cfg.sinks.max_rows_waiting, 500);
    }

    #[test]
    fn an_exposed_admin_service_needs_a_token() {
        let e = load("[admin]\nlisten = \"0.0.0.0:9464\"\n").expect_err("no token");
        assert_eq!(e.key, "admin.token");
        load("[admin]\nlisten = \"0.0.0.0:9464\"\ntoken = \"t\"\n").expect("with a token");
    }

    #[test]
    fn environment_overrides_single_keys() {
        let cfg = Config::from_layers(
            None,
            vec![
                ("FOOTPRINT_BROKERS".to_owned(), "10.0.0.1:9092".to_owned()),
                ("FOOTPRINT__WORKER__THREADS".to_owned(), "3".to_owned()),
            ],
        )
        .expect("config");
        assert_eq!(cfg.source.brokers, "10.0.0.1:9092");
        assert_eq!(cfg.worker.threads, 3);
    }
}
