//! `footprint bench --mode serve`: the query service under load.
//!
//! The stores are loaded by a real run: the worker reads the bench topic
//! (the default pipeline, recent activity included) to its end into Redis
//! and MySQL. Then `footprint serve` runs in this process, and a load
//! generator of its own (keep-alive HTTP/1.1 over `connections`
//! connections, on one thread of its own) drives it on the same machine.
//! Each scenario is measured twice per run:
//! - **most**: closed loop, every connection sending its next request as
//!   soon as the last is answered; the rate answered is the most the
//!   service gives with the generator beside it;
//! - **at half**: open loop at half that rate, each request sent at its
//!   scheduled time; its latency counts from that time (so a stall delays
//!   every request behind it instead of hiding them), and p50, p99, p999
//!   are quoted.
//!
//! Scenarios: one user's recent activity from Redis (the cache off), the
//! same from MySQL (Redis's switch degraded, the cache off), cache hits (a
//! hundred users, the cache on), window series of 10 windows, and the top
//! 10 of a window within an app: from Redis's top-N index (windows final
//! in Redis), and from MySQL (Redis degraded); all from the stores, the
//! cache off. The load keeps one top-N index in Redis,
//! `item_activity_1m` within `app_id` by `count`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use footprint_dataflows::key::GroupKey;
use footprint_sinks::util::switch::{Mode, Switches};
use serde::Serialize;

use super::Workload;
use super::e2e::Owned;
use super::load::{CONNECTIONS, Requests, Use, closed_loop, get, open_loop};
use super::median;
use crate::config::Config;
use crate::process::Process;
use crate::run::{RunOptions, run};

/// One scenario's figures in one run.
#[derive(Debug, Clone, Serialize)]
pub struct ServeRun {
    /// Requests answered per second, closed loop.
    pub most_per_sec: f64,
    /// The rate of the open-loop run.
    pub half_rate: f64,
    /// Its latencies, ms.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// See `p50_ms`.
    pub p999_ms: f64,
    /// Answers other than 200, over both loops.
    pub errors: u64,
}

/// One scenario over every run.
#[derive(Debug, Clone, Serialize)]
pub struct ServeRow {
    /// What was asked.
    pub scenario: String,
    /// Every run.
    pub runs: Vec<ServeRun>,
}

/// The requests of each scenario, from what the stores hold.
struct Targets {
    users: Vec<(String, String)>,
    series: Vec<String>,
    tops: Vec<String>,
    /// The tops of windows final in Redis.
    tops_redis: Vec<String>,
}

/// Loads the stores, then measures each scenario `runs` times for
/// `seconds` each; prints the table and returns the rows.
pub fn bench_serve(
    cfg: &Config,
    events: u64,
    workload: Workload,
    runs: usize,
    seconds: u64,
    only: Option<&str>,
) -> Result<Vec<ServeRow>> {
    let topic = super::e2e::preloaded_topic(cfg, events, workload)?;
    let owned = Owned::new("serve");
    let mut cfg = owned.config(cfg, &topic, &["redis".into(), "mysql".into()]);
    super::narrow(&mut cfg, "default")?;
    cfg.serve.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.serve.max_in_flight = 100_000;
    if let Some(r) = cfg.sinks.redis.as_mut() {
        r.top = vec![crate::config::TopIndexConfig {
            aggregate: "item_activity_1m".into(),
            within: vec!["app_id".into()],
            by: "count".into(),
        }];
    }
    eprintln!("bench: serve: loading the stores from {events} events");
    let process = Process::new(&cfg)?;
    run(
        &cfg,
        RunOptions {
            threads: Some(2),
            until_end: true,
            progress: None,
            ..RunOptions::default()
        },
        &process,
    )
    .context("loading the stores")?;
    let targets = targets(&cfg)?;
    let result = measure(&cfg, &targets, runs, seconds, only);
    owned.drop_stores();
    let rows = result?;
    print_table(&rows, seconds);
    Ok(rows)
}

fn targets(cfg: &Config) -> Result<Targets> {
    let redis = cfg.sinks.redis.as_ref().context("no redis")?;
    let mut conn = redis::Client::open(redis.url.as_str())?.get_connection()?;
    let mut users = Vec::new();
    let mut windows = Vec::new();
    footprint_sinks::redis::scan_pages(&mut conn, &format!("{}:e:*", redis.prefix), |_, keys| {
        for k in keys {
            let tag = k.rsplit(":e:").next().unwrap_or_default();
            let parts =
                GroupKey::from_encoded(tag.trim_start_matches('{').trim_end_matches('}')).parts();
            if let [app, user] = parts.as_slice()
                && users.len() < 5_000
            {
                users.push((app.clone(), user.clone()));
            }
        }
        Ok(())
    })?;
    let prefix = format!("{}:v:item_activity_1m:", redis.prefix);
    footprint_sinks::redis::scan_pages(&mut conn, &format!("{prefix}*"), |_, keys| {
        for k in keys {
            let rest = k.strip_prefix(&prefix).unwrap_or_default();
            if let Some((start, key)) = rest.split_once(':')
                && let Ok(start) = start.parse::<i64>()
                && windows.len() < 5_000
            {
                windows.push((start, GroupKey::from_encoded(key).parts()));
            }
        }
        Ok(())
    })?;
    if users.is_empty() || windows.is_empty() {
        bail!("the stores hold nothing to ask for");
    }
    let series = windows
        .iter()
        .filter_map(|(start, parts)| match parts.as_slice() {
            [app, event, item] => Some(format!(
                "/v1/aggregates/item_activity_1m/windows?app_id={app}&event={event}&item_id={item}&from={}&to={}",
                start - 5 * 60_000,
                start + 5 * 60_000
            )),
            _ => None,
        })
        .collect();
    let top = |(start, parts): &(i64, Vec<String>)| {
        parts.first().map(|app| {
            format!("/v1/aggregates/item_activity_1m/top?window_start={start}&app_id={app}&n=10")
        })
    };
    let tops = windows.iter().filter_map(top).collect();
    let marks = footprint_sinks::redis::RedisSinkFactory::new(
        &redis.url,
        &redis.prefix,
        Duration::ZERO,
        Duration::ZERO,
        0,
    )?
    .load_marks("item_activity_1m")?;
    let complete = footprint_sinks::marks::combine(&marks).unwrap_or(i64::MIN);
    let spec = cfg.spec()?;
    let agg = spec
        .aggregates
        .iter()
        .find(|a| a.name == "item_activity_1m")
        .context("no item_activity_1m")?;
    let tops_redis: Vec<String> = windows
        .iter()
        .filter(|(start, _)| agg.window.end(*start) <= complete)
        .filter_map(top)
        .collect();
    if tops_redis.is_empty() {
        bail!("no window is final in Redis (its mark: {complete}); load more events with --events");
    }
    Ok(Targets {
        users,
        series,
        tops,
        tops_redis,
    })
}

fn measure(
    cfg: &Config,
    t: &Targets,
    runs: usize,
    seconds: u64,
    only: Option<&str>,
) -> Result<Vec<ServeRow>> {
    let recent: Vec<String> = t
        .users
        .iter()
        .map(|(a, u)| format!("/v1/apps/{a}/users/{u}/recent"))
        .collect();
    let hot: Vec<String> = recent.iter().take(100).cloned().collect();
    let scenarios: [(&str, &[String], bool, bool); 6] = [
        ("recent activity, Redis", &recent, false, false),
        (
            "recent activity, MySQL (Redis degraded)",
            &recent,
            false,
            true,
        ),
        ("recent activity, cache hits", &hot, true, false),
        ("window series (10 windows), Redis", &t.series, false, false),
        (
            "top 10 of a window in an app, Redis",
            &t.tops_redis,
            false,
            false,
        ),
        (
            "top 10 of a window in an app, MySQL (Redis degraded)",
            &t.tops,
            false,
            true,
        ),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for (name, paths, cache, degrade_redis) in scenarios {
        if only.is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let mut cfg = cfg.clone();
        cfg.serve.cache.enabled = cache;
        let switches = Arc::new(Switches::new(["redis", "mysql"]));
        if degrade_redis {
            switches.set("redis", Mode::Degraded);
        }
        let serving = crate::serve::start(&cfg, Some(switches))?;
        let addr = serving.server.addr;
        let mut row = ServeRow {
            scenario: name.to_owned(),
            runs: Vec::new(),
        };
        let requests = Requests::new(paths.iter().map(|p| get(p)).collect(), Use::Wrap);
        for i in 0..runs {
            eprintln!("bench: serve: {name}, run {}/{runs}", i + 1);
            // A second of warm-up (connections, caches, prepared statements).
            runtime.block_on(closed_loop(
                addr,
                &requests,
                CONNECTIONS,
                Duration::from_secs(1),
            ))?;
            let (answered, errors, took) = runtime.block_on(closed_loop(
                addr,
                &requests,
                CONNECTIONS,
                Duration::from_secs(seconds),
            ))?;
            let most = answered as f64 / took.as_secs_f64();
            let half = (most / 2.0).max(1.0);
            let (latency, open_errors) = runtime.block_on(open_loop(
                addr,
                &requests,
                CONNECTIONS,
                half,
                Duration::from_secs(seconds),
            ))?;
            let q = latency.quantiles();
            row.runs.push(ServeRun {
                most_per_sec: most,
                half_rate: half,
                p50_ms: q.p50.as_secs_f64() * 1e3,
                p99_ms: q.p99.as_secs_f64() * 1e3,
                p999_ms: q.p999.as_secs_f64() * 1e3,
                errors: errors + open_errors,
            });
        }
        drop(serving);
        rows.push(row);
    }
    Ok(rows)
}

fn print_table(rows: &[ServeRow], seconds: u64) {
    println!();
    println!(
        "query service: medians of {} runs, {seconds} s each, {CONNECTIONS} keep-alive connections, load generator on this machine",
        rows.first().map_or(0, |r| r.runs.len())
    );
    println!("| scenario | most req/s | at half: p50 | p99 | p999 | errors |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
            r.scenario,
            median(r.runs.iter().map(|x| x.most_per_sec).collect()),
            median(r.runs.iter().map(|x| x.p50_ms).collect()),
            median(r.runs.iter().map(|x| x.p99_ms).collect()),
            median(r.runs.iter().map(|x| x.p999_ms).collect()),
            r.runs.iter().map(|x| x.errors).sum::<u64>()
        );
    }
}
