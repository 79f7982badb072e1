//! [`Scenario`]: the names, config and files one store scenario owns.

use anyhow::Result;
use footprint::config::Config;

use crate::services::{brokers, delete_redis_prefix, drop_database, mysql_url, redis_url, unique};
use crate::stores::{StoredRows, Stores};

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

    /// Drops the database and the Redis keys, and removes the directory
    /// (kept when `FOOTPRINT_KEEP_DIRS` is set, for a look at the logs of a
    /// run that passed).
    pub fn clean(&self) {
        drop_database(&self.database);
        delete_redis_prefix(&self.prefix);
        if std::env::var_os("FOOTPRINT_KEEP_DIRS").is_some() {
            eprintln!("kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn tempfile_dir(name: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(unique(&format!("footprint-{name}")));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
