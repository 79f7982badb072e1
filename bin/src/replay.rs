//! `footprint replay`: the retry replay job. It reads the retry topic
//! (through [`RetryReader`]) and applies each record to its store through
//! the same sinks the worker writes with, so the version rule fences them:
//! replaying an old record over a newer value changes nothing.
//!
//! - Per retry-topic partition, records are applied in offset order, and the
//!   offset is committed only past records that were dealt with.
//! - A record whose sink is degraded, or whose store is failing, stops its
//!   partition until that changes; the later records of that partition,
//!   whatever their sink, wait behind it. A failing store is tried again
//!   after the sinks' retry policy's jittered, doubling delay (up to 10 s).
//!   The job neither drops nor spins.
//! - A record that can never be applied (undecodable, or refused by its
//!   store for good) goes to `<retry topic>.dlq` with the reason, and only
//!   then is it committed past.
//! - With `once`, the job exits when every partition is caught up and
//!   everything read has been applied.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use footprint_connectors::admin::Admin;
use footprint_connectors::replay::{Entry, REPLAY_GROUP, Read, RetryReader};
use footprint_connectors::retry::RetryRecord;
use footprint_dataflows::Output;
use footprint_dataflows::control::RunControl;
use footprint_sinks::Sink;
use footprint_sinks::util::retry::{Jitter, RetryPolicy};
use footprint_sinks::util::switch::{Mode, Switches};
use footprint_telemetry::{Throttle, log_repeated};

use crate::config::Config;
use crate::process::Process;
use crate::stores::{STORE_SINKS, follow_switches, sink_factories};

/// How a replay runs.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Exit once caught up.
    pub once: bool,
    /// Log progress this often.
    pub progress: Option<Duration>,
    /// How long a waiting job sleeps before it looks at the switch again.
    pub poll_interval: Duration,
    /// Most records held in memory while waiting.
    pub max_pending: usize,
    /// Records per write of a run of records for the same sink.
    pub batch: usize,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            once: false,
            progress: Some(Duration::from_secs(5)),
            poll_interval: Duration::from_millis(200),
            max_pending: 50_000,
            batch: 500,
        }
    }
}

/// What a replay run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records applied to their store.
    pub applied: u64,
    /// Records that could not be decoded (sent to the dead-letter topic).
    pub undecodable: u64,
    /// Records their store refuses for good (sent to the dead-letter topic).
    pub rejected: u64,
}

/// Replays the retry topic into the stores until stopped or, with
/// `opts.once`, until caught up. The switches follow the control topic
/// unless `switches` are given.
pub fn run_replay(
    cfg: &Config,
    opts: &ReplayOptions,
    switches: Option<Arc<Switches>>,
    control: &Arc<RunControl>,
) -> Result<ReplayReport> {
    let spec = Arc::new(cfg.spec()?);
    let mut sinks: HashMap<String, Box<dyn Sink>> = HashMap::new();
    for (name, f) in sink_factories(cfg, &spec)?.sinks {
        if STORE_SINKS.contains(&name.as_str()) {
            sinks.insert(name, f.build(0, 1)?);
        }
    }
    anyhow::ensure!(
        !sinks.is_empty(),
        "no store sink is configured ([sinks.redis] or [sinks.mysql]); there is nothing to replay into"
    );
    let process = Process::new(cfg)?;
    let admin = Admin::new(&process.kafka(cfg.retry_kafka())).with_context(|| {
        format!(
            "connecting to the retry topic's brokers ({})",
            cfg.retry_kafka().brokers
        )
    })?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (switches, follower) = match switches {
        Some(s) => (s, None),
        None => {
            // Follow the control topic, so operator toggles reach the replay job.
            let s = Arc::clone(&process.switches);
            let h = follow_switches(cfg, &admin, &s, &stop)
                .context("following the degrade switches on the control topic")?;
            (s, Some(h))
        }
    };
    let reader = RetryReader::open(&admin, &cfg.retry.topic, REPLAY_GROUP)
        .with_context(|| format!("opening the retry topic {}", cfg.retry.topic))?;
    let mut job = Replay {
        reader,
        sinks,
        switches,
        opts: opts.clone(),
        pending: BTreeMap::new(),
        one_at_a_time: BTreeMap::new(),
        unhealthy: HashMap::new(),
        waiting_logged: HashMap::new(),
        policy: RetryPolicy {
            attempts: u32::MAX,
            base: Duration::from_millis(500),
            max: Duration::from_secs(10),
        },
        jitter: Jitter::from_clock(0),
        throttle: Throttle::default(),
        report: ReplayReport::default(),
    };
    let result = job.run(&|| control.stop_requested());
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(h) = follower {
        let _ = h.join();
    }
    let applied = job.report.applied;
    let report = result.with_context(|| {
        format!(
            "replaying {} (after applying {applied} records)",
            cfg.retry.topic
        )
    })?;
    tracing::info!(
        applied = report.applied,
        undecodable = report.undecodable,
        rejected = report.rejected,
        "replay stopped"
    );
    Ok(report)
}

/// A store that failed: when to try it again, and how many tries failed.
struct Unhealthy {
    retry_at: Instant,
    failures: u32,
}

/// The replay job's state.
struct Replay {
    reader: RetryReader,
    sinks: HashMap<String, Box<dyn Sink>>,
    switches: Arc<Switches>,
    opts: ReplayOptions,
    /// Per partition, the records read and not dealt with yet, in offset order.
    pending: BTreeMap<i32, VecDeque<(i64, Entry)>>,
    /// Partitions whose next run is written one record at a time, to find
    /// the record a store refuses.
    one_at_a_time: BTreeMap<i32, bool>,
    unhealthy: HashMap<String, Unhealthy>,
    waiting_logged: HashMap<String, bool>,
    policy: RetryPolicy,
    jitter: Jitter,
    /// Rate-limits the warnings of a store that stays down.
    throttle: Throttle,
    report: ReplayReport,
}

impl Replay {
    fn held(&self) -> usize {
        self.pending.values().map(VecDeque::len).sum()
    }

    fn run(&mut self, stop: &dyn Fn() -> bool) -> Result<ReplayReport> {
        let mut last_log = Instant::now();
        loop {
            if stop() {
                return Ok(self.report);
            }
            let mut progressed = self.read();
            progressed |= self.apply()?;
            let held = self.held();
            if let Some(every) = self.opts.progress
                && last_log.elapsed() >= every
            {
                let (caught_up, partitions) = self.reader.partitions_caught_up();
                tracing::info!(
                    applied = self.report.applied,
                    pending = held,
                    backlog = held as u64 + self.reader.unread(),
                    partitions_caught_up = caught_up,
                    partitions,
                    "replay progress"
                );
                last_log = Instant::now();
            }
            if self.opts.once && held == 0 && self.reader.caught_up() {
                return Ok(self.report);
            }
            if !progressed {
                // Nothing new and nothing applicable: wait instead of spinning.
                std::thread::sleep(self.opts.poll_interval);
            }
        }
    }

    /// Reads while there is room, for at most one poll interval.
    fn read(&mut self) -> bool {
        let mut progressed = false;
        let deadline = Instant::now() + self.opts.poll_interval;
        while Instant::now() < deadline && self.held() < self.opts.max_pending {
            let Some(Read {
                partition,
                offset,
                entry,
            }) = self.reader.poll(Duration::from_millis(20))
            else {
                if self.reader.caught_up() {
                    break;
                }
                continue;
            };
            progressed = true;
            if let Entry::Undecodable { reason, .. } = &entry {
                self.report.undecodable += 1;
                tracing::error!(partition, offset, error = %reason, "an undecodable retry record goes to the dead-letter topic");
            }
            // In offset order: it is dealt with (and committed past) only
            // once every record before it is.
            self.pending
                .entry(partition)
                .or_default()
                .push_back((offset, entry));
        }
        progressed
    }

    /// Why `sink` cannot take records now, if it cannot.
    fn blocked(&self, sink: &str, now: Instant) -> Option<&'static str> {
        match self.switches.get(sink) {
            Some(Mode::Degraded) => Some("switch degraded"),
            None => Some("no such sink configured"),
            Some(Mode::Auto) if self.unhealthy.get(sink).is_some_and(|u| now < u.retry_at) => {
                Some("store unavailable")
            }
            Some(Mode::Auto) if !self.sinks.contains_key(sink) => Some("no such sink configured"),
            Some(Mode::Auto) => None,
        }
    }

    /// Applies, per partition, in offset order, as far as possible.
    fn apply(&mut self) -> Result<bool> {
        let mut progressed = false;
        let now = Instant::now();
        let partitions: Vec<i32> = self.pending.keys().copied().collect();
        for partition in partitions {
            let mut committed_to = None;
            while let Some((offset, front)) = self.pending.get(&partition).and_then(|q| q.front()) {
                let offset = *offset;
                let sink_name = match front {
                    Entry::Undecodable { payload, reason } => {
                        self.reader
                            .dead_letter(payload, reason, partition, offset)?;
                        self.pop(partition, 1);
                        committed_to = Some(offset + 1);
                        progressed = true;
                        continue;
                    }
                    Entry::Apply(r) => r.sink.clone(),
                };
                if let Some(why) = self.blocked(&sink_name, now) {
                    if !self
                        .waiting_logged
                        .insert(sink_name.clone(), true)
                        .unwrap_or(false)
                    {
                        tracing::info!(sink = %sink_name, reason = why, "replay is waiting; later records of this partition wait too");
                    }
                    break;
                }
                match self.write_run(partition, &sink_name) {
                    Applied::All { n, last } => {
                        self.report.applied += n;
                        committed_to = Some(last + 1);
                        progressed = true;
                    }
                    Applied::FindRefused => {
                        self.one_at_a_time.insert(partition, true);
                    }
                    Applied::Refused { record, error } => {
                        // The store will never take this record: keep it, in
                        // the dead-letter topic.
                        self.report.rejected += 1;
                        tracing::error!(sink = %sink_name, identity = %record.identity, error = %error, "the store rejects a retry record; it goes to the dead-letter topic");
                        self.reader
                            .dead_letter(&record.encode().1, &error, partition, offset)?;
                        self.pop(partition, 1);
                        self.one_at_a_time.remove(&partition);
                        committed_to = Some(offset + 1);
                        progressed = true;
                    }
                    Applied::Failed(error) => {
                        let failures = self.unhealthy.get(&sink_name).map_or(0, |u| u.failures) + 1;
                        let wait = self.policy.delay(failures, &mut self.jitter);
                        log_repeated! { warn, self.throttle, format!("apply/{sink_name}"),
                        sink = %sink_name, %error, retry_in_ms = wait.as_millis() as u64,
                        "replay could not apply records; will retry" }
                        self.unhealthy.insert(
                            sink_name,
                            Unhealthy {
                                retry_at: Instant::now() + wait,
                                failures,
                            },
                        );
                        break;
                    }
                }
            }
            if let Some(offset) = committed_to {
                self.reader.commit(partition, offset)?;
            }
        }
        Ok(progressed)
    }

    fn pop(&mut self, partition: i32, n: usize) -> Option<i64> {
        let q = self.pending.get_mut(&partition)?;
        let mut last = None;
        for _ in 0..n {
            last = q.pop_front().map(|(o, _)| o);
        }
        last
    }

    /// Writes the run of consecutive records for `sink` at the front of
    /// `partition` in one write (one at a time after a refusal).
    fn write_run(&mut self, partition: i32, sink: &str) -> Applied {
        let single = self.one_at_a_time.get(&partition).copied().unwrap_or(false);
        let limit = if single { 1 } else { self.opts.batch };
        let Some(queue) = self.pending.get(&partition) else {
            return Applied::All { n: 0, last: 0 };
        };
        let run: Vec<Output> = queue
            .iter()
            .map_while(|(_, e)| match e {
                Entry::Apply(r) if r.sink == sink => Some(r.row.clone()),
                _ => None,
            })
            .take(limit)
            .collect();
        let n = run.len();
        let Some(target) = self.sinks.get_mut(sink) else {
            return Applied::Failed("no such sink configured".into());
        };
        match target.write(&run).and_then(|()| target.flush()) {
            Ok(()) => {
                if let Some(r) = self.throttle.end(&format!("apply/{sink}")) {
                    tracing::info!(
                        sink,
                        failed_tries = r.total,
                        seconds = r.seconds_since_began(),
                        "replay applies records again"
                    );
                }
                self.unhealthy.remove(sink);
                self.waiting_logged.remove(sink);
                self.one_at_a_time.remove(&partition);
                let last = self.pop(partition, n).unwrap_or(0);
                Applied::All { n: n as u64, last }
            }
            Err(e) if !e.is_retryable() && n > 1 => Applied::FindRefused,
            Err(e) if !e.is_retryable() => {
                let record = match self.pending.get(&partition).and_then(|q| q.front()) {
                    Some((_, Entry::Apply(r))) => Box::new(r.clone()),
                    _ => return Applied::Failed(e.to_string()),
                };
                Applied::Refused {
                    record,
                    error: e.to_string(),
                }
            }
            Err(e) => Applied::Failed(e.to_string()),
        }
    }
}

/// What became of a run of records.
enum Applied {
    /// All `n` written; the last one's offset.
    All { n: u64, last: i64 },
    /// A store refused one of several: write them one at a time to find it.
    FindRefused,
    /// The store refuses this record for good.
    Refused {
        record: Box<RetryRecord>,
        error: String,
    },
    /// The store failed; try again later.
    Failed(String),
}
