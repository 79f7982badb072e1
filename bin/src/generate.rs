//! `footprint gen`: produce a deterministic clickstream to a topic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use footprint_connectors::ConnectorError;
use footprint_connectors::admin::Admin;
use footprint_connectors::client::KafkaSettings;
use footprint_connectors::producer::EventProducer;
use footprint_dataflows::clickstream::{GenConfig, GenEvent, Generator, Kind};
use footprint_dataflows::control::RunControl;

/// How much to produce, and how fast.
#[derive(Debug, Clone)]
pub struct GenPlan {
    /// Target topic (created with `partitions` partitions if missing).
    pub topic: String,
    /// Stop after this many messages (`None`: until stopped or `duration`).
    pub count: Option<u64>,
    /// Messages per second of wall time; `None`: as fast as possible, with
    /// event time following the generator's own clock (deterministic).
    /// With a rate, event time follows the wall clock.
    pub rate: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Log progress every this often.
    pub progress: Option<Duration>,
}

/// What was produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenReport {
    /// Messages produced.
    pub messages: u64,
    /// Good events among them.
    pub good: u64,
    /// Events made late.
    pub late: u64,
    /// Bad messages.
    pub bad: u64,
    /// Random garbage (usually bad input, sometimes still a valid event).
    pub garbage: u64,
}

impl GenReport {
    /// Counts one message of `kind`.
    fn count(&mut self, kind: Kind) {
        self.messages += 1;
        match kind {
            Kind::Good => self.good += 1,
            Kind::Late => {
                self.good += 1;
                self.late += 1;
            }
            Kind::Bad(_) => self.bad += 1,
            Kind::Garbage => self.garbage += 1,
        }
    }
}

/// The next event, as `plan` paces it: `None` while its rate says to wait
/// (`sent` were sent since `started`). With a rate, event time follows the
/// wall clock.
fn paced(
    generator: &mut Generator,
    plan: &GenPlan,
    started: Instant,
    sent: u64,
) -> Option<GenEvent> {
    match plan.rate {
        Some(rate) => {
            let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            if sent >= due {
                return None;
            }
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            Some(generator.next_at(now_ms))
        }
        None => Some(generator.next_event()),
    }
}

/// Produces a clickstream; returns once `plan` is done or `control` asks to stop.
pub fn produce(
    settings: &KafkaSettings,
    cfg: GenConfig,
    plan: &GenPlan,
    control: &Arc<RunControl>,
) -> Result<GenReport> {
    let admin = Admin::new(settings)?;
    let partitions = cfg.partitions as i32;
    if admin.ensure_topic(&plan.topic, partitions, 1)? {
        tracing::info!(topic = %plan.topic, partitions, "created topic");
    }
    let existing = admin.partitions(&plan.topic)?.map_or(0, |p| p.len());
    anyhow::ensure!(
        existing >= cfg.partitions as usize,
        "topic {} has {existing} partitions, fewer than the {} asked for",
        plan.topic,
        cfg.partitions
    );
    let producer = EventProducer::new(settings)?;
    let mut generator = Generator::new(cfg);
    let mut report = GenReport::default();
    let started = Instant::now();
    let mut last_log = Instant::now();
    loop {
        if plan.count.is_some_and(|c| report.messages >= c)
            || plan.duration.is_some_and(|d| started.elapsed() >= d)
            || control.stop_requested()
        {
            break;
        }
        let Some(event) = paced(&mut generator, plan, started, report.messages) else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        producer
            .send(
                &plan.topic,
                event.partition as i32,
                event.key.as_bytes(),
                &event.payload,
            )
            .with_context(|| format!("producing to {}", plan.topic))?;
        report.count(event.kind);
        if let Some(every) = plan.progress
            && last_log.elapsed() >= every
        {
            tracing::info!(produced = report.messages, topic = %plan.topic, per_sec = (report.messages as f64 / started.elapsed().as_secs_f64()).round(), "generating");
            last_log = Instant::now();
        }
    }
    wait_acknowledged(&producer, &plan.topic, control)?;
    Ok(report)
}

/// Waits until the broker has acknowledged every message: however long it
/// takes (the producer keeps them; a broker that is down is waited for),
/// saying so every 10 s, until `control` asks to stop.
fn wait_acknowledged(
    producer: &EventProducer,
    topic: &str,
    control: &Arc<RunControl>,
) -> Result<()> {
    let started = Instant::now();
    loop {
        match producer.flush(Duration::from_secs(10)) {
            Ok(()) => return Ok(()),
            Err(ConnectorError::Unacknowledged { left, .. }) if !control.stop_requested() => {
                tracing::warn!(
                    topic,
                    waiting = left,
                    seconds = started.elapsed().as_secs(),
                    "waiting for the broker to acknowledge"
                );
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("messages to {topic} were not all written")));
            }
        }
    }
}

/// How `footprint gen --http` sends events to a collector.
#[derive(Debug, Clone)]
pub struct HttpPlan {
    /// The collector's base URL (`http://127.0.0.1:9480`).
    pub url: String,
    /// Events per request, as NDJSON.
    pub batch: usize,
    /// Whether bodies are gzip'd.
    pub gzip: bool,
    /// The app's bearer token, if the collector asks for one.
    pub token: Option<String>,
}

/// What the collector answered, over a whole `gen --http` run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpReport {
    /// What was generated.
    pub generated: GenReport,
    /// Requests sent, retries included.
    pub requests: u64,
    /// Events accepted (each counted once, on the request that took it).
    pub accepted: u64,
    /// Events answered `duplicate` (a retry of an accepted event).
    pub duplicate: u64,
    /// Events rejected.
    pub rejected: u64,
    /// Requests sent again (refused with 429/503, or no answer).
    pub retries: u64,
}

/// Generates a clickstream and sends it to a collector in NDJSON batches.
/// A batch the collector could not take (429, 503, no answer, or events
/// `shed`, `over_quota`, `unavailable` or `in_flight`) is sent again, as a
/// client should: its events carry ids, so the ones already taken come back
/// `duplicate` and are not written twice.
pub fn post(
    cfg: GenConfig,
    plan: &GenPlan,
    http: &HttpPlan,
    control: &Arc<RunControl>,
) -> Result<HttpReport> {
    anyhow::ensure!(http.batch > 0, "--batch must be at least 1");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let url = format!("{}/v1/events", http.url.trim_end_matches('/'));
    let mut generator = Generator::new(cfg);
    let mut report = HttpReport::default();
    let started = Instant::now();
    let mut last_log = Instant::now();
    let mut body: Vec<u8> = Vec::new();
    let mut in_body = 0usize;
    loop {
        let done = plan.count.is_some_and(|c| report.generated.messages >= c)
            || plan.duration.is_some_and(|d| started.elapsed() >= d)
            || control.stop_requested();
        if in_body > 0 && (in_body >= http.batch || done) {
            send_batch(&agent, &url, http, &body, &mut report, control)?;
            body.clear();
            in_body = 0;
        }
        if done {
            break;
        }
        let Some(event) = paced(&mut generator, plan, started, report.generated.messages) else {
            // Waiting for the rate: what is gathered goes now.
            if in_body > 0 {
                send_batch(&agent, &url, http, &body, &mut report, control)?;
                body.clear();
                in_body = 0;
            }
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        // NDJSON: a payload with a newline of its own (garbage) would be
        // split in two; it is sent as one line with the newline escaped
        // away, which keeps it bad input.
        body.extend(
            event
                .payload
                .iter()
                .map(|b| if *b == b'\n' || *b == b'\r' { b' ' } else { *b }),
        );
        body.push(b'\n');
        in_body += 1;
        report.generated.count(event.kind);
        if let Some(every) = plan.progress
            && last_log.elapsed() >= every
        {
            tracing::info!(sent = report.generated.messages, accepted = report.accepted, url = %url,
                per_sec = (report.generated.messages as f64 / started.elapsed().as_secs_f64()).round(), "generating");
            last_log = Instant::now();
        }
    }
    Ok(report)
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes)?;
    Ok(e.finish()?)
}

/// Sends one batch until the collector took it (or refused it for good).
fn send_batch(
    agent: &ureq::Agent,
    url: &str,
    http: &HttpPlan,
    ndjson: &[u8],
    report: &mut HttpReport,
    control: &Arc<RunControl>,
) -> Result<()> {
    let body = if http.gzip {
        gzip(ndjson)?
    } else {
        ndjson.to_vec()
    };
    let mut failing_since: Option<Instant> = None;
    loop {
        let mut request = agent
            .post(url)
            .header("content-type", "application/x-ndjson");
        if http.gzip {
            request = request.header("content-encoding", "gzip");
        }
        if let Some(t) = &http.token {
            request = request.header("authorization", &format!("Bearer {t}"));
        }
        report.requests += 1;
        let wait = match request.send(&body[..]) {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let text = response.body_mut().read_to_string().unwrap_or_default();
                let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let results = answer["results"].as_array().cloned().unwrap_or_default();
                let count = |name: &str| {
                    results
                        .iter()
                        .filter(|r| r["outcome"].as_str() == Some(name))
                        .count() as u64
                };
                report.accepted += count("accepted");
                report.duplicate += count("duplicate");
                let retry = ["shed", "over_quota", "unavailable", "in_flight"]
                    .iter()
                    .any(|o| count(o) > 0);
                match status {
                    200 | 400 if !retry => {
                        report.rejected += count("rejected");
                        return Ok(());
                    }
                    200 | 429 | 503 => Duration::from_secs(retry_after.unwrap_or(1)),
                    other => anyhow::bail!("the collector at {url} answered {other}: {text}"),
                }
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(10) {
                    tracing::warn!(error = %e, url, seconds = since.elapsed().as_secs(), "the collector does not answer; sending again");
                    failing_since = Some(Instant::now());
                }
                Duration::from_millis(200)
            }
        };
        if control.stop_requested() {
            anyhow::bail!("stopped while a batch was not yet taken by {url}");
        }
        report.retries += 1;
        std::thread::sleep(wait);
    }
}
