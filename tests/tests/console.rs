//! The operator console in a real headless browser (Chromium through
//! chromedriver), against a running `footprint worker` process, the test
//! broker and the real stores.
//!
//! - The figures the page shows match `/status` and `/metrics`.
//! - Clicking flips MySQL to degraded (after the confirmation that says what
//!   will happen), `/switches` changes and the page shows it; clicking again
//!   sets it back; cancelling changes nothing.
//! - During a MySQL outage the page shows the open breaker, the diverted
//!   rows and the retry backlog.
//! - With `admin.token` set, the page without the token, or with a wrong
//!   one, shows an error and changes nothing; with it, it works, and the
//!   token never appears in the page's address.
//!
//! Screenshots are kept under `target/tmp/console/` as the tests'
//! artifacts. With `FOOTPRINT_CONSOLE_SHOT=PATH`, the outage screenshot is
//! also written to `PATH` (the README's picture comes from there).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use footprint_dataflows::clickstream::GenConfig;
use footprint_tests::{
    Browser, Running, Scenario, TcpProxy, admin_addr_from_log, get_json, get_text, host_port, http,
    http_as, kafka, mysql_url, preload, produce_live, spawn_footprint, wait_until,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);

fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("console")
        .join(name)
}

fn stream() -> GenConfig {
    GenConfig {
        seed: 23,
        partitions: 2,
        users: 300,
        items: 20,
        events_per_sec: 50,
        ..GenConfig::default()
    }
}

/// A sample's value in Prometheus text, by name and labels.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).ok()?;
    scrape.samples.into_iter().find_map(|s| {
        let matches = s.metric == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(k).is_some_and(|got| got == *v));
        match (matches, s.value) {
            (true, prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v)) => {
                Some(v)
            }
            (true, prometheus_parse::Value::Untyped(v)) => Some(v),
            _ => None,
        }
    })
}

fn int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_u64().and_then(|u| i64::try_from(u).ok()))
}

/// Notes in `wrong` unless the page, `/status` and `/metrics` show the
/// same figure (or none of them shows one yet).
fn check(
    wrong: &mut Vec<String>,
    what: String,
    page: Option<String>,
    api: Option<i64>,
    prom: Option<f64>,
) {
    let page_n = page
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<i64>().unwrap_or(i64::MIN));
    let prom_n = prom.map(|f| f.round() as i64);
    if page_n != api || prom_n != api {
        wrong.push(format!(
            "{what}: page {page:?}, /status {api:?}, /metrics {prom:?}"
        ));
    }
}

/// The figures the page shows that do not match what `/status` and
/// `/metrics` say now; empty when they all match.
fn mismatches(browser: &Browser, addr: SocketAddr) -> anyhow::Result<Vec<String>> {
    let status = get_json(addr, "/status")?;
    let metrics = get_text(addr, "/metrics")?;
    let mut wrong = Vec::new();
    check(
        &mut wrong,
        "events in".into(),
        browser.value("[data-field=events_in]")?,
        int(&status["events_in"]),
        metric(&metrics, "footprint_events_in_total", &[]),
    );
    check(
        &mut wrong,
        "retry backlog".into(),
        browser.value("[data-field=retry_backlog]")?,
        int(&status["retry"]["backlog_records"]),
        metric(&metrics, "footprint_retry_backlog_records", &[]),
    );
    for sink in ["mysql", "redis"] {
        let s = &status["sinks"][sink];
        let row = format!("tr[data-sink={sink}]");
        check(
            &mut wrong,
            format!("{sink} rows written"),
            browser.value(&format!("{row} [data-field=written]"))?,
            int(&s["written"]),
            metric(&metrics, "footprint_sink_writes_total", &[("sink", sink)]),
        );
        check(
            &mut wrong,
            format!("{sink} rows diverted"),
            browser.value(&format!("{row} [data-field=diverted]"))?,
            int(&s["diverted"]),
            // A counter that never moved is not shown yet.
            metric(&metrics, "footprint_sink_diverted_total", &[("sink", sink)]).or(Some(0.0)),
        );
        let mode = browser.value(&format!("{row} [data-field=mode]"))?;
        if mode.as_deref() != s["mode"].as_str() {
            wrong.push(format!("{sink} mode: page {mode:?}, /status {}", s["mode"]));
        }
    }
    let parts = status["partitions"].as_array().cloned().unwrap_or_default();
    if parts.is_empty() {
        wrong.push("no partition in /status".into());
    }
    for p in parts {
        let topic = p["topic"].as_str().unwrap_or_default().to_owned();
        let partition = p["partition"].to_string();
        let row = format!("tr[data-partition=\"{topic}/{partition}\"]");
        let labels = [("topic", topic.as_str()), ("partition", partition.as_str())];
        check(
            &mut wrong,
            format!("{topic}/{partition} watermark"),
            browser.value(&format!("{row} [data-field=watermark_ms]"))?,
            int(&p["watermark_ms"]),
            metric(&metrics, "footprint_partition_watermark_seconds", &labels).map(|s| s * 1000.0),
        );
        check(
            &mut wrong,
            format!("{topic}/{partition} lag"),
            browser.value(&format!("{row} [data-field=lag]"))?,
            int(&p["lag"]),
            metric(&metrics, "footprint_consumer_lag_messages", &labels),
        );
        let state = browser.value(&format!("{row} [data-field=state]"))?;
        if state.as_deref() != p["state"].as_str() {
            wrong.push(format!(
                "{topic}/{partition} state: page {state:?}, /status {}",
                p["state"]
            ));
        }
    }
    Ok(wrong)
}

/// Waits until the page shows what the API says, and fails with the last
/// differences if it never does.
fn wait_matching(browser: &Browser, addr: SocketAddr, what: &str) {
    let mut last = Vec::new();
    let done = wait_until(WAIT, what, || match mismatches(browser, addr) {
        Ok(w) => {
            let ok = w.is_empty();
            last = w;
            ok
        }
        Err(e) => {
            last = vec![e.to_string()];
            false
        }
    });
    assert!(done.is_ok(), "{what}: the page never matched: {last:#?}");
}

fn switch_of(addr: SocketAddr, sink: &str, token: Option<&str>) -> String {
    let (status, body) = http_as(addr, "GET", "/switches", "", token).expect("GET /switches");
    assert_eq!(status, 200, "GET /switches: {body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v[sink].as_str().unwrap_or_default().to_owned()
}

/// The page's last refresh, as the page shows it (`/status`'s `now_ms`).
fn refreshed_at(browser: &Browser) -> Option<i64> {
    browser
        .value("[data-field=updated]")
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok())
}

/// Waits until the page has refreshed from the service since `after`.
fn wait_refresh(browser: &Browser, after: Option<i64>) {
    wait_until(Duration::from_secs(30), "the page to refresh", || {
        refreshed_at(browser).is_some_and(|t| after.is_none_or(|a| t > a))
    })
    .expect("the page refreshes every 2 s");
}

/// Waits until the result line says `words`.
fn wait_result(browser: &Browser, words: &str) {
    let mut last = String::new();
    let done = wait_until(Duration::from_secs(30), "the result line", || {
        last = browser
            .find("#action-result")
            .ok()
            .flatten()
            .and_then(|el| browser.text(&el).ok())
            .unwrap_or_default();
        last.contains(words)
    });
    assert!(
        done.is_ok(),
        "the page shows the result {words:?}; it shows {last:?}"
    );
}

/// One browser test at a time: each runs Chromium and a worker, and the
/// machine may have two cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Clicks `sink`'s switch button, checks the confirmation's words, and
/// answers it with `answer` (`#confirm-yes` or `#confirm-no`).
fn click_switch(browser: &Browser, sink: &str, expect_words: &str, answer: &str) {
    let button = browser
        .get(&format!("tr[data-sink={sink}] button.flip"))
        .expect("the switch button");
    browser.click(&button).expect("click");
    let dialog = browser.get("#confirm").expect("dialog");
    wait_until(Duration::from_secs(10), "the confirmation", || {
        browser.displayed(&dialog).unwrap_or(false)
    })
    .expect("the page asks before it flips a switch");
    let text = browser
        .text(&browser.get("#confirm-text").expect("text"))
        .expect("text");
    assert!(
        text.contains(expect_words),
        "the confirmation says what will happen: {text:?}"
    );
    browser
        .click(&browser.get(answer).expect("answer"))
        .expect("click the answer");
}

/// Flips MySQL to `mode` by clicking its button and confirming, and waits
/// until `/switches`, the sink's row and the result line all show it.
fn flip_mysql(browser: &Browser, addr: SocketAddr, token: Option<&str>, mode: &str) {
    let words = if mode == "degraded" {
        "go to the retry topic until you set it back to auto"
    } else {
        "Writes go to MySQL again"
    };
    click_switch(browser, "mysql", words, "#confirm-yes");
    wait_until(Duration::from_secs(30), "/switches to change", || {
        switch_of(addr, "mysql", token) == mode
    })
    .expect("the click flips the switch");
    wait_until(
        Duration::from_secs(30),
        "the page to show the new mode",
        || page_mode(browser, "mysql").as_deref() == Some(mode),
    )
    .expect("the page shows the new mode");
    wait_result(browser, &format!("MySQL is now {mode}"));
}

fn page_mode(browser: &Browser, sink: &str) -> Option<String> {
    browser
        .value(&format!("tr[data-sink={sink}] [data-field=mode]"))
        .ok()
        .flatten()
}

fn start_worker(s: &Scenario, toml: &str, args: &[&str]) -> (Running, SocketAddr) {
    let (path, _) = s.write_config("worker.toml", toml).expect("config");
    let log = s.dir.join("worker.log");
    let worker = spawn_footprint(&path, args, &log).expect("start the worker");
    let addr = admin_addr_from_log(&log).expect("the worker's admin address");
    (worker, addr)
}

#[test]
fn the_console_shows_the_worker_and_flips_mysql_by_clicking() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = Scenario::new("console").expect("scenario");
    let mysql_proxy = TcpProxy::start(host_port(&mysql_url())).expect("mysql proxy");
    let toml = s.toml("", "").replace(
        &format!("url = \"{}/{}\"", mysql_url(), s.database),
        &format!(
            "url = \"mysql://root@{}/{}?prefer_socket=false\"",
            mysql_proxy.addr, s.database
        ),
    );
    assert!(
        toml.contains(&mysql_proxy.addr.to_string()),
        "MySQL goes through the proxy"
    );
    let gen_cfg = stream();
    preload(&s.topic, &gen_cfg, 3_000).expect("preload");
    let (_worker, addr) = start_worker(&s, &toml, &["worker"]);

    let mut browser = Browser::start(1280, 1400).expect("headless Chromium");
    browser.screenshot_on_failure(artifact("console-failed.png"));
    browser
        .goto(&format!("http://{addr}/"))
        .expect("open the console");
    wait_until(WAIT, "the worker to read the stream", || {
        get_json(addr, "/status").is_ok_and(|v| v["events_in"] == 3_000)
    })
    .expect("the worker reads the stream");
    wait_matching(&browser, addr, "the page to show the worker's figures");
    browser
        .screenshot(&artifact("console-auto.png"))
        .expect("screenshot");

    // Cancel changes nothing, also after the page's next refresh.
    let before = refreshed_at(&browser);
    click_switch(
        &browser,
        "mysql",
        "go to the retry topic until you set it back to auto",
        "#confirm-no",
    );
    wait_refresh(&browser, before);
    assert_eq!(
        switch_of(addr, "mysql", None),
        "auto",
        "cancelling changes nothing"
    );
    assert_eq!(page_mode(&browser, "mysql").as_deref(), Some("auto"));
    assert!(
        !browser
            .displayed(&browser.get("#action-result").expect("result"))
            .expect("displayed"),
        "no change was made, so no result is shown"
    );

    // Degrade MySQL by clicking.
    flip_mysql(&browser, addr, None, "degraded");
    assert_eq!(switch_of(addr, "redis", None), "auto", "only MySQL changed");
    browser
        .screenshot(&artifact("console-degraded.png"))
        .expect("screenshot");

    // And back.
    flip_mysql(&browser, addr, None, "auto");

    // A MySQL outage: the breaker opens, rows are diverted, the retry
    // topic's backlog grows (no replay job runs here), and the page says so.
    mysql_proxy.set_down(true);
    // A live stream that goes on where the preloaded one ended: 6,000
    // events over about 30 s, so batch after batch fails and the breaker
    // opens.
    let live = produce_live(
        &kafka(),
        &s.topic,
        &GenConfig {
            seed: 24,
            start_ts: gen_cfg.start_ts + 60_000,
            ..gen_cfg.clone()
        },
        6_000,
        200,
    )
    .expect("a live stream");
    wait_until(WAIT, "the page to show the outage", || {
        let breaker = browser
            .value("tr[data-sink=mysql] [data-field=breaker]")
            .ok()
            .flatten();
        let diverted = browser
            .value("tr[data-sink=mysql] [data-field=diverted]")
            .ok()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let backlog = browser
            .value("[data-field=retry_backlog]")
            .ok()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        breaker.as_deref() == Some("open") && diverted > 0 && backlog > 0
    })
    .expect("the outage shows: open breaker, diverted rows, retry backlog");
    wait_matching(
        &browser,
        addr,
        "the page to match the API during the outage",
    );
    let shot = artifact("console-mysql-outage.png");
    browser.screenshot(&shot).expect("screenshot");
    if let Ok(path) = std::env::var("FOOTPRINT_CONSOLE_SHOT") {
        std::fs::copy(&shot, &path).expect("copy the screenshot");
    }
    live.join()
        .expect("the producer thread")
        .expect("the live stream");
    eprintln!("console screenshots in {}", artifact("").display());
    mysql_proxy.set_down(false);
    drop(browser);
    s.clean();
}

#[test]
fn with_a_token_the_console_asks_for_it_and_changes_nothing_without_it() {
    const TOKEN: &str = "console-test-token-7f3a";
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = Scenario::new("consoletoken").expect("scenario");
    let toml = s
        .toml("", "")
        .replace("[admin]\n", &format!("[admin]\ntoken = \"{TOKEN}\"\n"));
    // The worker skips what was produced before it started, so the page
    // has skipped ranges and their backfill commands to show.
    preload(&s.topic, &stream(), 500).expect("preload");
    let (_worker, addr) = start_worker(&s, &toml, &["worker", "--skip-to-latest"]);
    let (status, _) = http(addr, "GET", "/status", "").expect("GET /status");
    assert_eq!(status, 401, "the API needs the token");

    let mut browser = Browser::start(1280, 900).expect("headless Chromium");
    browser.screenshot_on_failure(artifact("console-token-failed.png"));
    browser
        .goto(&format!("http://{addr}/"))
        .expect("the page itself needs no token");
    let error = browser.get("#error").expect("error banner");
    wait_until(
        Duration::from_secs(30),
        "the page to ask for the token",
        || {
            browser.displayed(&error).unwrap_or(false)
                && browser
                    .text(&error)
                    .is_ok_and(|t| t.contains("needs its bearer token"))
        },
    )
    .expect("without the token the page shows an error");
    let auth = browser.get("#auth").expect("token form");
    assert!(browser.displayed(&auth).expect("displayed"));
    assert!(
        !browser
            .displayed(&browser.get("#board").expect("board"))
            .expect("displayed"),
        "nothing is shown without the token"
    );
    assert!(
        browser
            .find("tr[data-sink=mysql] button.flip")
            .expect("find")
            .is_none(),
        "no switch can be flipped without the token"
    );

    // A wrong token is refused, and still nothing changes.
    let input = browser.get("#token-input").expect("input");
    browser.type_text(&input, "not-the-token").expect("type");
    browser
        .click(&browser.get("#token-save").expect("save"))
        .expect("click");
    wait_until(
        Duration::from_secs(30),
        "the page to refuse the token",
        || {
            browser
                .text(&error)
                .is_ok_and(|t| t.contains("refused this token"))
        },
    )
    .expect("a wrong token shows an error");
    assert_eq!(
        switch_of(addr, "mysql", Some(TOKEN)),
        "auto",
        "nothing changed"
    );
    browser
        .screenshot(&artifact("console-token-refused.png"))
        .expect("screenshot");

    // The right token: the page works, and the token stays out of the URL.
    browser.type_text(&input, TOKEN).expect("type");
    browser
        .click(&browser.get("#token-save").expect("save"))
        .expect("click");
    wait_until(WAIT, "the page to show the sinks", || {
        page_mode(&browser, "mysql").as_deref() == Some("auto")
    })
    .expect("with the token the page shows the worker");
    flip_mysql(&browser, addr, Some(TOKEN), "degraded");
    flip_mysql(&browser, addr, Some(TOKEN), "auto");
    // Each skipped range with the command that backfills it, as /status
    // gives it.
    let (_, body) = http_as(addr, "GET", "/status", "", Some(TOKEN)).expect("GET /status");
    let status: Value = serde_json::from_str(&body).expect("json");
    let skipped = status["skipped"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        skipped.len(),
        2,
        "both partitions were skipped: {skipped:?}"
    );
    for r in &skipped {
        let key = format!(
            "{}/{}/{}",
            r["topic"].as_str().unwrap_or_default(),
            r["partition"],
            r["from"]
        );
        let code = browser
            .get(&format!(
                "tr[data-range=\"{key}\"] [data-field=backfill] code"
            ))
            .expect("the range's command");
        let shown = browser.text(&code).expect("text");
        assert_eq!(Some(shown.as_str()), r["backfill"].as_str(), "{key}");
        assert!(shown.starts_with("footprint worker --from "), "{shown}");
    }
    let url = browser.url().expect("url");
    assert!(!url.contains(TOKEN), "the token is never in the URL: {url}");
    browser
        .screenshot(&artifact("console-token.png"))
        .expect("screenshot");
    drop(browser);
    s.clean();
}
