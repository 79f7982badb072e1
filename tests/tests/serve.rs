//! The query service (`footprint serve`) against the real Redis and MariaDB,
//! after a run through the real broker.
//!
//! - Every route answers what the sequential reference computes: each
//!   user's recent activity (one by one and in batches), each group's
//!   window series, the top N of windows within key prefixes; from Redis,
//!   and from MySQL when Redis is degraded.
//! - A Redis outage under a steady load: every request is answered 200,
//!   from MySQL, and from Redis again once it is back.
//! - Both stores down: every request gets 503 with `Retry-After`.
//! - With Redis down, 1,000 concurrent requests for one key make one MySQL
//!   read.
//! - Tokens and rate limits: 401, 403, 429 with `Retry-After`, and one app
//!   over its limit leaves the others alone.
//! - Recent activity an earlier version stored (a Redis list, a MySQL JSON
//!   list) is served merged with what the pipeline wrote since.
//! - Window rows an earlier version stored (Redis hashes) are served, and
//!   against the rows written since, the newer one by the version rule.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use footprint::config::Config;
use footprint_dataflows::clickstream::GenConfig;
use footprint_dataflows::key::GroupKey;
use footprint_dataflows::reference::{Reference, compute};
use footprint_dataflows::{MeasureValue, RecentEntry, WindowRow};
use footprint_sinks::util::switch::{Mode, Switches};
use footprint_tests::{
    Scenario, TcpProxy, get_json_status, http, mysql_url, preload, redis_url, run_to_end,
    wait_until,
};
use serde_json::Value;

const EVENTS: u64 = 12_000;

fn gen_cfg(seed: u64) -> GenConfig {
    GenConfig {
        seed,
        partitions: 4,
        users: 150,
        items: 12,
        apps: 2,
        events_per_sec: 40,
        disorder: 0.05,
        max_disorder_ms: 2_000,
        ..GenConfig::default()
    }
}

/// A scenario's stores loaded by a bounded run, and its reference.
struct Loaded {
    s: Scenario,
    cfg: Config,
    expected: Reference,
}

fn loaded(name: &str, seed: u64, serve: &str) -> Loaded {
    let s = Scenario::new(name).expect("scenario");
    let (parts, _) = preload(&s.topic, &gen_cfg(seed), EVENTS).expect("preload");
    let toml = s.toml("", &format!("[serve]\nlisten = \"127.0.0.1:0\"\n{serve}"));
    let (_, cfg) = s.write_config("footprint.toml", &toml).expect("config");
    run_to_end(&cfg, 2).expect("the bounded run");
    let expected = compute(&cfg.spec().expect("spec"), &parts);
    Loaded { s, cfg, expected }
}

/// The same config reading the stores through proxies the test controls.
fn through(cfg: &Config, redis: &TcpProxy, mysql: &TcpProxy) -> Config {
    let mut cfg = cfg.clone();
    if let Some(r) = cfg.sinks.redis.as_mut() {
        r.url = r.url.replace(
            redis_url().trim_start_matches("redis://"),
            &redis.addr.to_string(),
        );
    }
    if let Some(m) = cfg.sinks.mysql.as_mut() {
        let host = mysql_url()
            .trim_start_matches("mysql://")
            .split('@')
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        // The driver would switch to the server's Unix socket, around the proxy.
        m.url = format!(
            "{}?prefer_socket=false",
            m.url.replace(&host, &mysql.addr.to_string())
        );
    }
    cfg
}

/// `footprint serve` over `l`'s stores, read through proxies the test
/// controls: (Redis's proxy, MySQL's proxy, the service).
fn serve_through_proxies(l: &Loaded) -> (TcpProxy, TcpProxy, footprint::serve::Serving) {
    let redis_proxy = TcpProxy::start(host_port(&redis_url())).expect("redis proxy");
    let mysql_proxy = TcpProxy::start(host_port(&mysql_url())).expect("mysql proxy");
    let cfg = through(&l.cfg, &redis_proxy, &mysql_proxy);
    let serving = footprint::serve::start(&cfg, Some(switches())).expect("serve");
    (redis_proxy, mysql_proxy, serving)
}

fn host_port(url: &str) -> SocketAddr {
    let rest = url.split("://").nth(1).expect("scheme");
    let rest = rest.rsplit('@').next().expect("host");
    let hp = rest.split('/').next().expect("host:port");
    hp.parse().expect("a host:port")
}

fn switches() -> Arc<Switches> {
    Arc::new(Switches::new(["redis", "mysql"]))
}

fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    get_json_status(addr, path).unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
}

/// `GET path`, which must answer 200: its body.
fn get_ok(addr: SocketAddr, path: &str) -> Value {
    let (code, body) = get(addr, path);
    assert_eq!(code, 200, "{path}: {body}");
    body
}

fn entries_json(events: &[footprint_dataflows::RecentEntry]) -> Value {
    Value::Array(
        events
            .iter()
            .map(|e| {
                serde_json::json!({
                    "ts": e.ts, "event": e.event.as_str(), "item_id": e.item_id.as_deref(),
                    "partition": e.partition, "offset": e.offset,
                })
            })
            .collect(),
    )
}

fn measure_json(v: MeasureValue) -> Value {
    v.to_json()
}

/// A window row as the API shows it.
fn row_json(w: &WindowRow, with_key: bool) -> Value {
    let mut m = serde_json::Map::new();
    if with_key {
        m.insert(
            "key".into(),
            Value::Object(
                w.key
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::from(v.as_str())))
                    .collect(),
            ),
        );
    }
    m.insert("window_start".into(), w.window_start.into());
    m.insert("window_end".into(), w.window_end.into());
    m.insert("final".into(), w.is_final.into());
    m.insert("version".into(), w.version.into());
    for (name, v) in &w.measures {
        m.insert(name.to_string(), measure_json(*v));
    }
    Value::Object(m)
}

/// Every window with an end at or before `complete_up_to` is final.
fn assert_fresh(body: &Value, rows: &str) {
    let Some(complete) = body["complete_up_to"].as_i64() else {
        return;
    };
    for w in body[rows].as_array().expect("rows") {
        if w["window_end"].as_i64().expect("end") <= complete {
            assert_eq!(w["final"], true, "complete_up_to {complete} passes {w}");
        }
    }
}

fn query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[test]
fn every_route_answers_the_reference_from_redis_and_from_mysql() {
    // Redis keeps top-N indexes of both aggregates, whole and per app, by
    // their first two measures; no cache, so each pass reads its store.
    let mut indexes = String::from("[serve.cache]\nenabled = false\n");
    for agg in ["item_activity_1m", "app_events_10m"] {
        for within in ["[]", "[\"app_id\"]"] {
            for by in ["count", "distinct(user_id)"] {
                indexes.push_str(&format!(
                    "[[sinks.redis.top]]\naggregate = \"{agg}\"\nwithin = {within}\nby = \"{by}\"\n"
                ));
            }
        }
    }
    let l = loaded("serve-ref", 71, &indexes);
    let spec = l.cfg.spec().expect("spec");
    // What Redis vouches for, per aggregate: its own marks (MySQL's may
    // differ; each store has its own).
    let redis_complete: Vec<Option<i64>> = store_marks(&l.s, &l.cfg)
        .into_iter()
        .map(|(redis, _)| redis)
        .collect();
    let sw = switches();
    let serving = footprint::serve::start(&l.cfg, Some(Arc::clone(&sw))).expect("serve");
    let addr = serving.server.addr;

    for (store, mode) in [("redis", Mode::Auto), ("mysql", Mode::Degraded)] {
        sw.set("redis", mode);
        let mut tops_from_redis = 0;
        let want_source = store;
        let fresh = |v: &Value| v["source"] == want_source || v["source"] == "cache";

        // Recent activity, one by one and in batches of the same app.
        let mut by_app: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for ((app, user), row) in &l.expected.recent {
            let body = get_ok(addr, &format!("/v1/apps/{app}/users/{user}/recent"));
            assert_eq!(body["found"], true);
            assert_eq!(body["events"], entries_json(&row.events), "{app}/{user}");
            assert!(fresh(&body), "{store}: {body}");
            by_app.entry(app).or_default().push(user);
        }
        for (app, users) in &by_app {
            for chunk in users.chunks(99) {
                let mut asked: Vec<&str> = chunk.to_vec();
                asked.push("nobody-at-all");
                let (code, text) = http(
                    addr,
                    "POST",
                    &format!("/v1/apps/{app}/users/recent"),
                    &serde_json::json!({ "users": asked }).to_string(),
                )
                .expect("POST");
                assert_eq!(code, 200, "{text}");
                let body: Value = serde_json::from_str(&text).expect("json");
                let got = body["users"].as_array().expect("users");
                assert_eq!(got.len(), asked.len());
                for (u, g) in asked.iter().zip(got) {
                    assert_eq!(g["user_id"], *u);
                    match l.expected.recent.get(&(app.to_string(), u.to_string())) {
                        Some(row) => assert_eq!(g["events"], entries_json(&row.events)),
                        None => assert_eq!(g["found"], false, "{g}"),
                    }
                }
            }
        }
        let (code, body) = get(addr, "/v1/apps/app01/users/nobody-at-all/recent");
        assert_eq!((code, &body["found"]), (200, &Value::Bool(false)), "{body}");

        // Window series of every group of each aggregate.
        for (agg_index, agg) in spec.aggregates.iter().enumerate() {
            let all: Vec<&WindowRow> = l
                .expected
                .windows
                .values()
                .filter(|r| usize::from(r.agg) == agg_index)
                .collect();
            let from = all.iter().map(|r| r.window_start).min().expect("windows");
            let to = all.iter().map(|r| r.window_start).max().expect("windows") + 1;
            let keys: BTreeSet<Vec<(String, String)>> = all
                .iter()
                .map(|r| {
                    r.key
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
                .collect();
            for key in &keys {
                let mut want: Vec<&&WindowRow> = all
                    .iter()
                    .filter(|r| {
                        r.key
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect::<Vec<_>>()
                            == *key
                    })
                    .collect();
                want.sort_by_key(|r| r.window_start);
                let mut params = key.clone();
                params.push(("from".into(), from.to_string()));
                params.push(("to".into(), to.to_string()));
                let body = get_ok(
                    addr,
                    &format!("/v1/aggregates/{}/windows?{}", agg.name, query(&params)),
                );
                let expected: Vec<Value> = want.iter().map(|r| row_json(r, false)).collect();
                assert_eq!(
                    body["windows"],
                    Value::Array(expected),
                    "{} {key:?}",
                    agg.name
                );
                assert_fresh(&body, "windows");
                assert!(
                    body["source"] == store
                        || body["source"] == "cache"
                        || body["source"] == "mysql",
                    "{body}"
                );
            }

            // The top 3 of every window, whole and per app, by the first
            // two measures (distinct users tie often).
            let starts: BTreeSet<i64> = all.iter().map(|r| r.window_start).collect();
            for (start, by) in starts.into_iter().flat_map(|s| [(s, 0), (s, 1)]) {
                let in_window: Vec<&&WindowRow> =
                    all.iter().filter(|r| r.window_start == start).collect();
                let apps: BTreeSet<String> =
                    in_window.iter().map(|r| r.key[0].1.to_string()).collect();
                let mut prefixes: Vec<Option<String>> = vec![None];
                prefixes.extend(apps.into_iter().map(Some));
                for prefix in prefixes {
                    let mut want: Vec<&&WindowRow> = in_window
                        .iter()
                        .filter(|r| prefix.as_deref().is_none_or(|p| r.key[0].1 == p))
                        .copied()
                        .collect();
                    let key_of =
                        |r: &WindowRow| GroupKey::from_parts(r.key.iter().map(|(_, v)| v.as_str()));
                    want.sort_by(|a, b| {
                        let (ca, cb) = (&a.measures[by].1, &b.measures[by].1);
                        let n = |m: &MeasureValue| match m {
                            MeasureValue::Count(n) | MeasureValue::Distinct(n) => *n as i128,
                            MeasureValue::Sum(s) => *s,
                        };
                        n(cb).cmp(&n(ca)).then(key_of(a).cmp(&key_of(b)))
                    });
                    want.truncate(3);
                    let mut params = vec![
                        ("window_start".to_owned(), start.to_string()),
                        ("n".to_owned(), "3".to_owned()),
                        ("by".to_owned(), agg.measures[by].to_string()),
                    ];
                    if let Some(p) = &prefix {
                        params.push(("app_id".into(), p.clone()));
                    }
                    let body = get_ok(
                        addr,
                        &format!("/v1/aggregates/{}/top?{}", agg.name, query(&params)),
                    );
                    let expected: Vec<Value> = want.iter().map(|r| row_json(r, true)).collect();
                    assert_eq!(
                        body["groups"],
                        Value::Array(expected),
                        "{} {start} {prefix:?} by {by}",
                        agg.name
                    );
                    assert_fresh(&body, "groups");
                    // Redis answers every window final in it; MySQL the
                    // others, and all of them while Redis is degraded.
                    let vouched =
                        redis_complete[agg_index].is_some_and(|c| c >= agg.window.end(start));
                    let want_source = if store == "redis" && vouched {
                        "redis"
                    } else {
                        "mysql"
                    };
                    assert_eq!(body["source"], want_source, "{body}");
                    tops_from_redis += usize::from(body["source"] == "redis");
                }
            }
        }
        if store == "redis" {
            assert!(tops_from_redis > 0, "no top N came from Redis");
        } else {
            assert_eq!(tops_from_redis, 0);
        }
    }
    drop(serving);
    l.s.clean();
}

#[test]
fn a_redis_outage_under_load_is_answered_from_mysql_and_redis_again_after() {
    let l = loaded(
        "serve-outage",
        72,
        "redis_timeout = \"50ms\"\nbreaker_open_for = \"300ms\"\n[serve.cache]\nenabled = false\n",
    );
    let (redis_proxy, _mysql_proxy, serving) = serve_through_proxies(&l);
    let addr = serving.server.addr;
    let users: Vec<(String, String)> = l.expected.recent.keys().take(50).cloned().collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, from_mysql) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load: Vec<_> = (0..4)
        .map(|t| {
            let (users, stop, answered, from_mysql) = (
                users.clone(),
                Arc::clone(&stop),
                Arc::clone(&answered),
                Arc::clone(&from_mysql),
            );
            std::thread::spawn(move || {
                let mut i = t;
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let (app, user) = &users[i % users.len()];
                    let (code, body) = get(addr, &format!("/v1/apps/{app}/users/{user}/recent"));
                    if code != 200 || body["found"] != true {
                        failures.push(format!("{code} {body}"));
                    }
                    if body["source"] == "mysql" {
                        from_mysql.fetch_add(1, Ordering::SeqCst);
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                    i += 4;
                }
                failures
            })
        })
        .collect();
    let redis_answers = || {
        let (_, body) = get(
            addr,
            &format!("/v1/apps/{}/users/{}/recent", users[0].0, users[0].1),
        );
        body["source"] == "redis"
    };
    wait_until(Duration::from_secs(30), "answers from Redis", redis_answers).expect("redis first");
    let before = answered.load(Ordering::SeqCst);
    redis_proxy.set_down(true);
    let down_at = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "requests answered during the outage",
        || {
            answered.load(Ordering::SeqCst) >= before + 500
                && from_mysql.load(Ordering::SeqCst) >= 400
        },
    )
    .expect("load during the outage");
    let during = answered.load(Ordering::SeqCst) - before;
    redis_proxy.set_down(false);
    let up_at = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "answers from Redis again",
        redis_answers,
    )
    .expect("redis again");
    let back_after = up_at.elapsed();
    stop.store(true, Ordering::SeqCst);
    let failures: Vec<String> = load
        .into_iter()
        .flat_map(|h| h.join().expect("load thread"))
        .collect();
    println!(
        "FIGURE redis outage under load: {during} requests answered in {:.1} s of outage, {} from MySQL; Redis answered again {:.2} s after it returned",
        (up_at - down_at).as_secs_f64(),
        from_mysql.load(Ordering::SeqCst),
        back_after.as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "every request answered 200: {:?}",
        &failures[..failures.len().min(5)]
    );
    drop(serving);
    l.s.clean();
}

#[test]
fn both_stores_down_answer_503_with_retry_after() {
    let l = loaded(
        "serve-down",
        73,
        "redis_timeout = \"50ms\"\nmysql_timeout = \"300ms\"\n[serve.cache]\nenabled = false\n",
    );
    let (redis_proxy, mysql_proxy, serving) = serve_through_proxies(&l);
    let addr = serving.server.addr;
    let ((app, user), _) = l.expected.recent.iter().next().expect("a user");
    let windows = l.expected.windows.values().next().expect("a window");
    let mut params: Vec<(String, String)> = windows
        .key
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    params.push(("from".into(), windows.window_start.to_string()));
    params.push(("to".into(), (windows.window_start + 1).to_string()));
    let paths = [
        format!("/v1/apps/{app}/users/{user}/recent"),
        format!(
            "/v1/aggregates/{}/windows?{}",
            windows.aggregate,
            query(&params)
        ),
        format!("/v1/aggregates/{}/top?n=3", windows.aggregate),
    ];
    for p in &paths {
        assert_eq!(get(addr, p).0, 200, "{p} before the outage");
    }
    redis_proxy.set_down(true);
    mysql_proxy.set_down(true);
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        for p in &paths {
            let t = Instant::now();
            let url = format!("http://{addr}{p}");
            let response = ureq::get(&url)
                .config()
                .http_status_as_error(false)
                .build()
                .call()
                .expect("an answer");
            slowest = slowest.max(t.elapsed());
            assert_eq!(response.status().as_u16(), 503, "{p}");
            let retry = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            assert!(retry.is_some_and(|s| s >= 1), "{p}: Retry-After {retry:?}");
        }
    }
    println!(
        "FIGURE both stores down: the slowest 503 took {:.0} ms (timeouts: redis 50 ms, mysql 300 ms)",
        slowest.as_secs_f64() * 1e3
    );
    let (code, health) = get(addr, "/health");
    assert_eq!(code, 503, "{health}");
    drop(serving);
    l.s.clean();
}

#[test]
fn with_redis_down_a_thousand_requests_for_one_key_make_one_mysql_read() {
    let l = loaded("serve-stampede", 74, "[serve.cache]\nopen_ttl = \"60s\"\n");
    let (redis_proxy, _mysql_proxy, serving) = serve_through_proxies(&l);
    let addr = serving.server.addr;
    redis_proxy.set_down(true);
    let ((app, user), row) = l.expected.recent.iter().next().expect("a user");
    let path = format!("/v1/apps/{app}/users/{user}/recent");
    let metrics = serving.service.metrics();
    let before = metrics.store_reads("mysql");
    let threads = 100;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (barrier, path) = (Arc::clone(&barrier), path.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..10).map(|_| get(addr, &path)).collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<(u16, Value)> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect();
    assert_eq!(answers.len(), 1_000);
    for (code, body) in &answers {
        assert_eq!(*code, 200, "{body}");
        assert_eq!(body["events"], entries_json(&row.events));
    }
    let reads = metrics.store_reads("mysql") - before;
    println!(
        "FIGURE stampede: 1000 concurrent requests for one key, Redis down: {reads} MySQL read(s)"
    );
    assert_eq!(reads, 1, "one MySQL read for the whole burst");
    drop(serving);
    l.s.clean();
}

#[test]
fn tokens_and_rate_limits_refuse_with_the_right_status() {
    let l = loaded(
        "serve-limits",
        75,
        "admin_token = \"root-token\"\n[serve.apps.app01]\ntoken = \"t1\"\nrate = { per_second = 1, burst = 5 }\n[serve.apps.app02]\ntoken = \"t2\"\n",
    );
    let serving = footprint::serve::start(&l.cfg, Some(switches())).expect("serve");
    let addr = serving.server.addr;
    let with = |token: Option<&str>, path: &str| -> (u16, Option<u64>) {
        let url = format!("http://{addr}{path}");
        let mut req = ureq::get(&url).config().http_status_as_error(false).build();
        if let Some(t) = token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        let r = req.call().expect("an answer");
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        (r.status().as_u16(), retry)
    };
    let recent = |app: &str| format!("/v1/apps/{app}/users/u0001/recent");
    assert_eq!(with(None, &recent("app01")).0, 401, "no token");
    assert_eq!(
        with(Some("nope"), &recent("app01")).0,
        401,
        "an unknown token"
    );
    assert_eq!(
        with(Some("t2"), &recent("app01")).0,
        403,
        "another app's token"
    );
    assert_eq!(
        with(Some("t1"), "/v1/aggregates/app_events_10m/top?n=3").0,
        403,
        "an app token reading every app"
    );
    assert_eq!(
        with(Some("t1"), "/status").0,
        401,
        "operators' routes need the admin token"
    );
    assert_eq!(with(Some("root-token"), "/status").0, 200);
    // app01: a burst of 5, then 429 with Retry-After.
    for i in 0..5 {
        assert_eq!(with(Some("t1"), &recent("app01")).0, 200, "request {i}");
    }
    let (code, retry) = with(Some("t1"), &recent("app01"));
    assert_eq!(code, 429);
    assert!(retry.is_some_and(|s| s >= 1), "Retry-After {retry:?}");
    // app02 has no limit of its own and is not affected.
    for _ in 0..50 {
        assert_eq!(with(Some("t2"), &recent("app02")).0, 200);
    }
    assert_eq!(with(Some("root-token"), &recent("app02")).0, 200);
    let metrics = footprint_tests::get_text(addr, "/metrics");
    assert!(metrics.is_err(), "metrics need the admin token");
    drop(serving);
    l.s.clean();
}

/// A window a series may hold: its start, its end, and its reference row.
type Expected = (i64, i64, Option<Value>);

/// The generated stream's reference over its first `count` messages.
fn reference_of(cfg: &Config, generator: &GenConfig, count: u64) -> Reference {
    compute(
        &cfg.spec().expect("spec"),
        &footprint_tests::generated(generator, count),
    )
}

#[test]
fn complete_up_to_never_passes_a_window_that_is_not_final_where_it_was_read() {
    use footprint::process::Process;
    use footprint::replay::{ReplayOptions, run_replay};
    use footprint_dataflows::control::RunControl;

    let stage: u64 = 6_000;
    let s = Scenario::new("serve-fresh").expect("scenario");
    // 40 events a second of event time: each stage closes a few windows.
    let stream_cfg = gen_cfg(76);
    let toml = s.toml(
        "batch = 50",
        "[serve]\nlisten = \"127.0.0.1:0\"\n[serve.cache]\nenabled = false\n",
    );
    let (_, mut cfg) = s.write_config("footprint.toml", &toml).expect("config");
    // The worker waits for each stage at the end of its partitions: they
    // must not go idle meanwhile (an idle partition's next events could turn
    // late, which the reference, reading the whole stream, would not have).
    cfg.watermark.idle_timeout = footprint::config::Dur(Duration::from_secs(3_600));
    // The new worker's lag is measured every second or so.
    cfg.health.broker_timeout = footprint::config::Dur(Duration::from_secs(3));
    // Only the 1-minute windows: checkpoints then trail the watermark by
    // about a minute, so a restarted worker does not emit again the final
    // rows diverted long before it started (a 10-minute window would hold
    // the checkpoints back over all of them).
    cfg.aggregate.retain(|a| a.name == "item_activity_1m");
    let spec = cfg.spec().expect("spec");
    let expected = reference_of(&cfg, &stream_cfg, 5 * stage);
    let mut stream =
        footprint_tests::StagedStream::new(&cfg.kafka(), &s.topic, &stream_cfg).expect("the topic");
    stream.produce(stage).expect("stage 1");

    let process = Process::new(&cfg).expect("process");
    let (control, worker) = footprint_tests::spawn_worker(&cfg, &process, 2);
    let serving =
        footprint::serve::start(&cfg, Some(Arc::clone(&process.switches))).expect("serve");
    let addr = serving.server.addr;

    // The series the checker reads: a few groups of each aggregate.
    let mut asked: Vec<String> = Vec::new();
    for (i, agg) in spec.aggregates.iter().enumerate() {
        let rows: Vec<&WindowRow> = expected
            .windows
            .values()
            .filter(|r| usize::from(r.agg) == i)
            .collect();
        let from = rows.iter().map(|r| r.window_start).min().expect("windows");
        let to = rows.iter().map(|r| r.window_start).max().expect("windows") + 1;
        let keys: BTreeSet<String> = rows
            .iter()
            .map(|r| {
                r.key
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("&")
            })
            .collect();
        for k in keys.into_iter().take(12) {
            asked.push(format!(
                "/v1/aggregates/{}/windows?{k}&from={from}&to={to}",
                agg.name
            ));
        }
    }
    // Every reference window by (aggregate, key query, start), as the API shows it.
    let want = |path: &str, start: i64| -> Option<Value> {
        expected
            .windows
            .values()
            .find(|r| {
                path.contains(&format!("/{}/", r.aggregate))
                    && r.window_start == start
                    && path.contains(&format!(
                        "?{}&from=",
                        r.key
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join("&")
                    ))
            })
            .map(|r| row_json(r, false))
    };
    let stop = Arc::new(AtomicBool::new(false));
    let checker = {
        let (stop, asked, spec) = (Arc::clone(&stop), asked.clone(), spec.clone());
        let expected_starts: Vec<(String, Vec<Expected>)> = asked
            .iter()
            .map(|p| {
                let agg = spec
                    .aggregates
                    .iter()
                    .find(|a| p.contains(&format!("/{}/", a.name)))
                    .expect("aggregate");
                let every = agg.window.every() as i64;
                let from: i64 = p
                    .split("from=")
                    .nth(1)
                    .and_then(|v| v.split('&').next())
                    .and_then(|v| v.parse().ok())
                    .expect("from");
                let to: i64 = p
                    .split("to=")
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .expect("to");
                let starts = (0..)
                    .map(|k| from + k * every)
                    .take_while(|s| *s < to)
                    .map(|s| (s, agg.window.end(s), want(p, s)))
                    .collect();
                (p.clone(), starts)
            })
            .collect();
        std::thread::spawn(move || {
            let (mut checks, mut windows_vouched, mut best) = (0u64, 0u64, i64::MIN);
            let mut sources: BTreeMap<String, u64> = BTreeMap::new();
            while !stop.load(Ordering::SeqCst) {
                for (path, starts) in &expected_starts {
                    let body = get_ok(addr, path);
                    *sources.entry(body["source"].to_string()).or_default() += 1;
                    checks += 1;
                    let Some(complete) = body["complete_up_to"].as_i64() else {
                        continue;
                    };
                    best = best.max(complete);
                    let got: BTreeMap<i64, &Value> = body["windows"]
                        .as_array()
                        .expect("windows")
                        .iter()
                        .map(|w| (w["window_start"].as_i64().expect("start"), w))
                        .collect();
                    for (start, end, reference) in starts {
                        if *end > complete {
                            continue;
                        }
                        windows_vouched += 1;
                        assert_eq!(
                            got.get(start).copied(),
                            reference.as_ref(),
                            "complete_up_to {complete} (from {}) vouches for the window at {start} of {path}",
                            body["source"]
                        );
                    }
                }
            }
            (checks, windows_vouched, best, sources)
        })
    };
    let (dataflow, flow) = (&process.dataflow, &process.flow);
    let settled = |n: u64| dataflow.events_in() >= n && flow.rows_waiting() == 0;
    wait_until(Duration::from_secs(180), "stage 1 read", || settled(stage)).expect("stage 1");

    // Redis degraded: its rows, finals among them, wait in the retry topic.
    process.switches.set("redis", Mode::Degraded);
    stream.produce(stage).expect("stage 2");
    wait_until(Duration::from_secs(180), "stage 2 read", || {
        settled(2 * stage)
    })
    .expect("stage 2");
    let held = process.holds.len("redis");
    assert!(held > 0, "final rows for Redis were diverted");
    process.switches.set("redis", Mode::Auto);
    stream.produce(stage).expect("stage 3");
    wait_until(Duration::from_secs(180), "stage 3 read", || {
        settled(3 * stage)
    })
    .expect("stage 3");
    // The checker reads Redis while its diverted finals still wait; then
    // replay applies them.
    std::thread::sleep(Duration::from_secs(2));
    let replay = || {
        run_replay(
            &cfg,
            &ReplayOptions {
                once: true,
                ..ReplayOptions::default()
            },
            Some(Arc::new(Switches::new(["redis", "mysql"]))),
            &Arc::new(RunControl::default()),
        )
        .expect("replay")
    };
    let replayed = replay();
    wait_until(Duration::from_secs(60), "the held rows read back", || {
        process.holds.len("redis") == 0
    })
    .expect("holds released after replay");

    // Redis degraded again, and the worker stops with finals waiting in the
    // retry topic: a new worker does not know them, and must not vouch for
    // their windows in Redis until replay has applied them.
    process.switches.set("redis", Mode::Degraded);
    stream.produce(stage).expect("stage 4");
    wait_until(Duration::from_secs(180), "stage 4 read", || {
        settled(4 * stage)
    })
    .expect("stage 4");
    let held_again = process.holds.len("redis");
    assert!(held_again > 0, "final rows for Redis were diverted again");
    control.request_stop();
    worker
        .join()
        .expect("worker thread")
        .expect("the first worker");
    process.switches.set("redis", Mode::Auto);
    let second = Process::new(&cfg).expect("process");
    let (control, worker) = footprint_tests::spawn_worker(&cfg, &second, 2);
    stream.produce(stage).expect("stage 5");
    wait_until(Duration::from_secs(180), "stage 5 read", || {
        second.health.behind().is_some_and(|b| b <= 0) && second.flow.rows_waiting() == 0
    })
    .expect("stage 5");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        second.holds.starting(),
        "the new worker waits for the retry topic to be drained"
    );
    let replayed_again = replay();
    wait_until(
        Duration::from_secs(60),
        "the retry topic seen drained",
        || !second.holds.starting(),
    )
    .expect("marks released once replay drained the retry topic");
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let (checks, vouched, best, sources) = checker.join().expect("the checker");
    control.request_stop();
    worker
        .join()
        .expect("worker thread")
        .expect("the second worker");
    let held = format!("{held} then {held_again}");
    let replayed = format!("{} then {}", replayed.applied, replayed_again.applied);
    println!(
        "FIGURE freshness: {checks} answers checked, {vouched} windows vouched for by complete_up_to, every one final and equal to the reference; {held} Redis finals held until {replayed} records replayed; sources {sources:?}; newest complete_up_to {best}"
    );
    assert!(vouched > 0, "complete_up_to vouched for windows");
    let first_end = expected
        .windows
        .values()
        .map(|r| r.window_end)
        .min()
        .expect("windows");
    assert!(
        best >= first_end,
        "complete_up_to moved past the first window ({best} < {first_end})"
    );
    drop(serving);
    s.clean();
}

#[test]
fn malformed_requests_get_a_4xx_and_never_a_500() {
    let s = Scenario::new("serve-bad").expect("scenario");
    let toml = s.toml("", "[serve]\nlisten = \"127.0.0.1:0\"\n");
    let (_, cfg) = s.write_config("footprint.toml", &toml).expect("config");
    let serving = footprint::serve::start(&cfg, Some(switches())).expect("serve");
    let addr = serving.server.addr;
    let w = "/v1/aggregates/item_activity_1m/windows";
    let huge = "x".repeat(70_000);
    let cases: Vec<(&str, String, &str, u16)> = vec![
        ("GET", "/nowhere".into(), "", 404),
        (
            "GET",
            "/v1/aggregates/nope/windows?from=0&to=1".into(),
            "",
            404,
        ),
        (
            "GET",
            format!("{w}?app_id=a&event=v&item_id=i&from=x&to=1"),
            "",
            400,
        ),
        (
            "GET",
            format!("{w}?app_id=a&event=v&item_id=i&from=0"),
            "",
            400,
        ),
        (
            "GET",
            format!("{w}?app_id=a&event=v&item_id=i&from=0&to=9223372036854775807"),
            "",
            400,
        ),
        (
            "GET",
            format!("{w}?app_id=a&event=v&item_id=i&from=10&to=5"),
            "",
            400,
        ),
        ("GET", format!("{w}?app_id=a&from=0&to=60000"), "", 400),
        (
            "GET",
            format!("{w}?app_id=a&event=v&item_id=i&from=0&to=6000000000"),
            "",
            400,
        ),
        (
            "GET",
            format!("{w}?app_id=a&event=v&item_id=i&from=0&to=60000&color=red"),
            "",
            400,
        ),
        (
            "GET",
            "/v1/aggregates/item_activity_1m/top?event=v".into(),
            "",
            400,
        ),
        (
            "GET",
            "/v1/aggregates/item_activity_1m/top?by=median".into(),
            "",
            404,
        ),
        (
            "GET",
            "/v1/aggregates/item_activity_1m/top?n=0".into(),
            "",
            400,
        ),
        (
            "GET",
            "/v1/aggregates/item_activity_1m/top?n=-1".into(),
            "",
            400,
        ),
        (
            "GET",
            "/v1/aggregates/item_activity_1m/top?window_start=9223372036854775807".into(),
            "",
            400,
        ),
        (
            "GET",
            "/v1/apps/a/users/u/recent?limit=lots".into(),
            "",
            400,
        ),
        ("POST", "/v1/apps/a/users/recent".into(), "{not json", 400),
        (
            "POST",
            "/v1/apps/a/users/recent".into(),
            r#"{"users":[]}"#,
            400,
        ),
        (
            "POST",
            "/v1/apps/a/users/recent".into(),
            r#"{"users":["u"],"extra":1}"#,
            400,
        ),
        ("POST", "/v1/apps/a/users/recent".into(), huge.as_str(), 413),
        ("DELETE", "/v1/apps/a/users/u/recent".into(), "", 405),
        ("PUT", "/health".into(), "{}", 405),
    ];
    for (method, path, body, want) in &cases {
        let (code, text) = http(addr, method, path, body).expect("an answer");
        assert_eq!(code, *want, "{method} {path}: {text}");
        let parsed: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        assert!(parsed["error"].is_string(), "{method} {path}: {text}");
    }
    let big = serde_json::json!({ "users": (0..101).map(|i| format!("u{i}")).collect::<Vec<_>>() });
    let (code, _) =
        http(addr, "POST", "/v1/apps/a/users/recent", &big.to_string()).expect("answer");
    assert_eq!(code, 400, "101 users");
    let (code, body) = get(addr, "/v1/apps/a/users/nobody/recent");
    assert_eq!((code, &body["found"]), (200, &Value::Bool(false)), "{body}");
    drop(serving);
    s.clean();
}

/// Each store's completeness per aggregate: (Redis, MySQL).
fn store_marks(s: &Scenario, cfg: &Config) -> Vec<(Option<i64>, Option<i64>)> {
    let spec = Arc::new(cfg.spec().expect("spec"));
    let mysql = footprint_sinks::mysql::read::MySqlReader::new(
        &format!("{}/{}", mysql_url(), s.database),
        &spec,
        "fp_",
        1,
        Duration::from_secs(5),
    )
    .expect("mysql");
    let redis = footprint_sinks::redis::RedisSinkFactory::new(
        &redis_url(),
        &s.prefix,
        Duration::ZERO,
        Duration::ZERO,
        0,
    )
    .expect("redis");
    spec.aggregates
        .iter()
        .map(|a| {
            let redis = redis.load_marks(&a.name).expect("redis marks");
            let mysql = mysql.marks(&a.name).expect("mysql marks");
            (
                footprint_sinks::marks::combine(&redis),
                footprint_sinks::marks::combine(&mysql),
            )
        })
        .collect()
}

#[test]
fn a_bounded_run_vouches_only_for_windows_that_later_input_cannot_change() {
    let stage: u64 = 6_000;
    let s = Scenario::new("serve-bounded").expect("scenario");
    let stream_cfg = gen_cfg(78);
    let toml = s.toml("", "");
    let (_, mut cfg) = s.write_config("footprint.toml", &toml).expect("config");
    cfg.aggregate.retain(|a| a.name == "item_activity_1m");
    let spec = cfg.spec().expect("spec");
    let expected = reference_of(&cfg, &stream_cfg, 2 * stage);
    let mut stream =
        footprint_tests::StagedStream::new(&cfg.kafka(), &s.topic, &stream_cfg).expect("the topic");
    stream.produce(stage).expect("stage 1");
    run_to_end(&cfg, 2).expect("the first bounded run");

    // The first run ends with every window emitted as final, yet each
    // store vouches only for those every partition's events had closed:
    // the least partition's largest event time, less the bounded disorder
    // (3 s) and the allowed lateness (5 s).
    let first = s.stored(&spec).expect("stores");
    let marks = store_marks(&s, &cfg);
    let (redis_mark, mysql_mark) = marks[0];
    let closed = footprint_tests::generated(&stream_cfg, stage)
        .iter()
        .map(|part| {
            part.iter()
                .filter_map(|m| serde_json::from_slice::<Value>(m).ok()?["ts"].as_i64())
                .max()
                .expect("every partition has events")
        })
        .min()
        .expect("partitions")
        - 3_000;
    assert_eq!(
        marks[0],
        (Some(closed - 5_000 - 1), Some(closed - 5_000 - 1))
    );
    for (store, mark, rows) in [
        ("redis", redis_mark, &first.redis_windows),
        ("mysql", mysql_mark, &first.mysql_windows),
    ] {
        let mark = mark.unwrap_or_else(|| panic!("{store}: a bounded run published no mark"));
        let vouched: Vec<&WindowRow> = rows.values().filter(|r| r.window_end <= mark).collect();
        assert!(
            !vouched.is_empty(),
            "{store}: the mark {mark} vouches for nothing"
        );
        for r in &vouched {
            let id = (r.aggregate.clone(), r.key.clone(), r.window_start);
            assert_eq!(
                Some(*r),
                expected.windows.get(&id),
                "{store}: vouched for at {mark}, yet the whole stream ends it otherwise"
            );
        }
        let missing = expected
            .windows
            .values()
            .filter(|r| r.window_end <= mark)
            .filter(|r| !rows.contains_key(&(r.aggregate.clone(), r.key.clone(), r.window_start)))
            .count();
        assert_eq!(
            missing, 0,
            "{store}: windows before its mark {mark} are missing"
        );
        // The windows past the mark were emitted as final by the end of the
        // input; the second stage changes some of them, so a mark past them
        // would have been wrong.
        let changed = rows
            .values()
            .filter(|r| r.window_end > mark)
            .filter(|r| {
                expected
                    .windows
                    .get(&(r.aggregate.clone(), r.key.clone(), r.window_start))
                    != Some(*r)
            })
            .count();
        assert!(
            changed > 0,
            "{store}: no window past the mark {mark} changes later"
        );
    }

    stream.produce(stage).expect("stage 2");
    run_to_end(&cfg, 2).expect("the second bounded run");
    let second = s.stored(&spec).expect("stores");
    assert_eq!(
        footprint_tests::differences(&expected.windows, &second.redis_windows),
        0
    );
    assert_eq!(
        footprint_tests::differences(&expected.windows, &second.mysql_windows),
        0
    );
    let after = store_marks(&s, &cfg);
    assert!(
        after[0].0 > marks[0].0 && after[0].1 > marks[0].1,
        "the marks move on: {marks:?} then {after:?}"
    );
    s.clean();
}

/// Recent activity an earlier version stored, as a Redis list
/// (`PREFIX:r:{…}`) and a row of MySQL's `fp_recent_activity`, is served
/// merged with the entries the pipeline wrote, from Redis and from MySQL,
/// and a user only the earlier layouts know is found too.
#[test]
fn recent_activity_of_the_earlier_layouts_is_served_merged() {
    let l = loaded("serve-legacy", 73, "[serve.cache]\nenabled = false\n");
    let spec = l.cfg.spec().expect("spec");
    let keep = spec.recent.as_ref().expect("recent activity").keep;
    let ((app, user), row) = l.expected.recent.iter().next().expect("a user");
    // Newer than the user's newest entry, so the merge must show it; the
    // list is full (`keep`), so its oldest entry must go.
    let newest = row.events.first().expect("an entry").ts;
    let old = |ts: i64, offset: i64| RecentEntry {
        ts,
        partition: 9,
        offset,
        event: "order".into(),
        item_id: Some("from-before".into()),
    };
    let earlier = [
        (user.as_str(), old(newest + 1, 1)),
        ("only-before", old(newest, 2)),
    ];

    let redis_cfg = l.cfg.sinks.redis.as_ref().expect("redis");
    let mut redis = redis::Client::open(redis_cfg.url.as_str())
        .and_then(|c| c.get_connection())
        .expect("redis");
    let mysql_cfg = l.cfg.sinks.mysql.as_ref().expect("mysql");
    let mut mysql =
        mysql::Conn::new(mysql::Opts::from_url(&mysql_cfg.url).expect("url")).expect("mysql");
    let legacy = format!("`{}recent_activity`", mysql_cfg.table_prefix);
    mysql::prelude::Queryable::query_drop(
        &mut mysql,
        format!(
            "CREATE TABLE {legacy} (`app_id` VARBINARY(255) NOT NULL, \
             `user_id` VARBINARY(255) NOT NULL, `events` LONGTEXT NOT NULL, \
             PRIMARY KEY (`app_id`, `user_id`))"
        ),
    )
    .expect("create the earlier table");
    for (u, e) in &earlier {
        let _: () = redis::cmd("RPUSH")
            .arg(footprint_sinks::redis::recent_list(
                &redis_cfg.prefix,
                app,
                u,
            ))
            .arg(serde_json::to_string(e).expect("json"))
            .query(&mut redis)
            .expect("the earlier list");
        mysql::prelude::Queryable::exec_drop(
            &mut mysql,
            format!("INSERT INTO {legacy} (`app_id`, `user_id`, `events`) VALUES (?, ?, ?)"),
            (app.as_str(), *u, serde_json::to_string(&[e]).expect("json")),
        )
        .expect("the earlier row");
    }
    let mut merged = row.events.clone();
    merged.push(earlier[0].1.clone());
    assert_eq!(row.events.len(), keep, "a user whose list is full");
    let expected = [
        (user.as_str(), RecentEntry::newest(&merged, keep)),
        ("only-before", vec![earlier[1].1.clone()]),
    ];

    let sw = switches();
    let serving = footprint::serve::start(&l.cfg, Some(Arc::clone(&sw))).expect("serve");
    let addr = serving.server.addr;
    for (store, mode) in [("redis", Mode::Auto), ("mysql", Mode::Degraded)] {
        sw.set("redis", mode);
        for (u, events) in &expected {
            let body = get_ok(addr, &format!("/v1/apps/{app}/users/{u}/recent"));
            assert_eq!(body["found"], true, "{store}: {body}");
            assert_eq!(body["source"], store, "{body}");
            assert_eq!(body["events"], entries_json(events), "{store}: {app}/{u}");
        }
    }
}

/// Window rows an earlier version stored as Redis hashes (`PREFIX:w:…`)
/// are served from Redis: a row only a hash holds, and a row held both
/// ways, whose newer side by the version rule wins, in a window series and
/// in a top N.
#[test]
fn window_rows_of_the_earlier_layout_are_served_by_the_version_rule() {
    let l = loaded(
        "serve-legacy-windows",
        74,
        "[serve.cache]\nenabled = false\n[[sinks.redis.top]]\n\
         aggregate = \"item_activity_1m\"\nwithin = []\nby = \"count\"\n",
    );
    let spec = l.cfg.spec().expect("spec");
    let agg = &spec.aggregates[0];
    assert_eq!(agg.name, "item_activity_1m");
    let count = agg
        .measures
        .iter()
        .position(|m| m.to_string() == "count")
        .expect("a count");
    let redis_complete = store_marks(&l.s, &l.cfg)[0].0;
    // The first window Redis vouches for that has at least three groups.
    let start = l
        .expected
        .windows
        .values()
        .filter(|r| {
            r.agg == 0 && redis_complete.is_some_and(|c| c >= agg.window.end(r.window_start))
        })
        .map(|r| r.window_start)
        .collect::<BTreeSet<i64>>()
        .into_iter()
        .find(|s| {
            l.expected
                .windows
                .values()
                .filter(|r| r.agg == 0 && r.window_start == *s)
                .count()
                >= 3
        })
        .expect("a vouched window with three groups");
    let rows: Vec<WindowRow> = l
        .expected
        .windows
        .values()
        .filter(|r| r.agg == 0 && r.window_start == start)
        .cloned()
        .collect();
    let (only_hash, newer_hash, older_hash) = (&rows[0], &rows[1], &rows[2]);

    let redis_cfg = l.cfg.sinks.redis.as_ref().expect("redis");
    let mut redis = redis::Client::open(redis_cfg.url.as_str())
        .and_then(|c| c.get_connection())
        .expect("redis");
    let group = |r: &WindowRow| GroupKey::from_parts(r.key.iter().map(|(_, v)| v.as_str()));
    let put_hash = |redis: &mut redis::Connection, r: &WindowRow| {
        let _: () = redis::cmd("HSET")
            .arg(footprint_sinks::redis::window_hash(
                &redis_cfg.prefix,
                &r.aggregate,
                r.window_start,
                &group(r),
            ))
            .arg(footprint_sinks::redis::window_hash_fields(r))
            .query(redis)
            .expect("a hash of the earlier layout");
    };
    // One row only as a hash: its string goes.
    let _: () = redis::cmd("DEL")
        .arg(footprint_sinks::redis::window_key(
            &redis_cfg.prefix,
            only_hash,
        ))
        .query(&mut redis)
        .expect("del");
    put_hash(&mut redis, only_hash);
    // One row with a newer hash (another count), one with an older hash.
    let mut newer = newer_hash.clone();
    newer.version += 1;
    if let MeasureValue::Count(n) = &mut newer.measures[count].1 {
        *n += 1_000;
    }
    put_hash(&mut redis, &newer);
    // The earlier version indexed the row it wrote by its own count.
    let _: () = redis::cmd("ZADD")
        .arg(footprint_sinks::redis::top_key(
            &redis_cfg.prefix,
            &agg.name,
            start,
            "count",
            &GroupKey::from_parts(std::iter::empty::<&str>()),
        ))
        .arg(footprint_sinks::redis::score(newer.measures[count].1))
        .arg(group(&newer).as_str())
        .query(&mut redis)
        .expect("zadd");
    let mut older = older_hash.clone();
    older.version = 0;
    older.is_final = false;
    older.measures[count].1 = MeasureValue::Count(1_000_000);
    put_hash(&mut redis, &older);
    let served = [only_hash.clone(), newer.clone(), older_hash.clone()];

    let sw = switches();
    let serving = footprint::serve::start(&l.cfg, Some(Arc::clone(&sw))).expect("serve");
    let addr = serving.server.addr;
    for want in &served {
        let mut params: Vec<(String, String)> = want
            .key
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        params.push(("from".into(), start.to_string()));
        params.push(("to".into(), (start + 1).to_string()));
        let body = get_ok(
            addr,
            &format!("/v1/aggregates/{}/windows?{}", agg.name, query(&params)),
        );
        assert_eq!(body["source"], "redis", "{body}");
        assert_eq!(
            body["windows"],
            Value::Array(vec![row_json(want, false)]),
            "{:?}",
            want.key
        );
    }
    let mut top: Vec<WindowRow> = rows
        .iter()
        .map(|r| served.iter().find(|s| s.key == r.key).unwrap_or(r).clone())
        .collect();
    let n = |r: &WindowRow| match r.measures[count].1 {
        MeasureValue::Count(n) | MeasureValue::Distinct(n) => n,
        MeasureValue::Sum(_) => 0,
    };
    top.sort_by(|a, b| n(b).cmp(&n(a)).then(group(a).cmp(&group(b))));
    top.truncate(3);
    assert_eq!(top[0], newer, "the newer hash leads by its count");
    let body = get_ok(
        addr,
        &format!(
            "/v1/aggregates/{}/top?window_start={start}&n=3&by=count",
            agg.name
        ),
    );
    assert_eq!(body["source"], "redis", "{body}");
    assert_eq!(
        body["groups"],
        Value::Array(top.iter().map(|r| row_json(r, true)).collect())
    );
    drop(serving);
    l.s.clean();
}
