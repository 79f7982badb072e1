//! The collector's core: events in, each acknowledged only once it is
//! durable, in Kafka or in the spill.
//!
//! # The write path
//! Requests are in one of two modes, kept in the *gate* with the spill:
//! - **direct** (the spill is empty): a request hands its records to the
//!   [`Outlet`] under the gate's lock (no I/O there, only queueing), then
//!   waits up to `ack_timeout` for Kafka. Records Kafka acknowledged in
//!   time are `accepted`. The others, still in the producer or given up,
//!   are appended to the spill and fsync'd, and only then `accepted`; from
//!   that moment the gate is in spill mode.
//! - **spill** (the spill holds records): a request appends its records to
//!   the spill behind the older ones, under the gate's lock, so that a
//!   user's events keep their order.
//!
//! # The drainer
//! One task reads the spill from its cursor, in order, and produces each
//! record through the same outlet (so into the same partition). A record a
//! request spilled while its first copy was still in the producer is not
//! produced again until that copy's fate is known: if Kafka acknowledged it
//! after all, the record is skipped (`collect_delivered_late`). The cursor
//! is committed past every record Kafka holds; once the spill is empty the
//! gate goes back to direct mode, under the same lock the requests append
//! under, so no record can be left behind.
//!
//! # When an event reaches Kafka twice
//! Only when the process dies after Kafka acknowledged a spilled record
//! (or its first copy) and before the spill's cursor moved past it: the
//! restarted drainer produces it again. The same holds when the producer
//! fails for good with records in flight (Kafka may hold some of them;
//! they are produced again from the spill).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use footprint_telemetry::InternalEvent;
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::body;
use crate::dedup::{Seen, Shards};
use crate::events::{
    AppShed, CollectMetrics, EventRejected, EventsAnswered, EventsSpilled, SpillDrained,
    SpillingChanged,
};
use crate::limits::{Limits, Quotaed, Sender, retry_after_secs};
use crate::outlet::{Delivery, Outlet, OutletError};
use crate::settings::CollectSettings;
use crate::shed::{Shedder, Step};
use crate::spill::{Position, Record, Recovered, Spill, SpillError, stored_len};

/// The pseudo-app that stands for every app the config does not list, in
/// shedding.
pub const UNLISTED: &str = "*";

/// A first copy's fate: `None` while it is in the producer, then whether
/// Kafka acknowledged it.
type Fate = watch::Receiver<Option<bool>>;

/// Records read for one drain round: each with the position after it and
/// its first copy's fate, if it has one.
type Round = Vec<(Record, Position, Option<Fate>)>;

/// The spill and the mode, under one lock.
struct Gate {
    spill: Spill,
    /// New records go to the spill.
    spilling: bool,
    /// Requests that decided to spill and have not appended yet: the gate
    /// does not go back to direct mode while there are any, so nothing
    /// written straight to Kafka can overtake them.
    pending_spills: usize,
    /// First copies of spilled records still in the producer, by the
    /// position after the record.
    firsts: HashMap<Position, Fate>,
    /// Records waiting in the spill.
    records: u64,
}

/// Where one record went.
#[derive(Debug)]
enum Durable {
    Kafka,
    Spill,
    /// Not durable (the spill is full or failed); its first copy may still
    /// be in the producer.
    No(Option<Fate>),
}

/// One event's outcome, as the response lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// `accepted`, `duplicate`, `rejected`, `shed`, `over_quota`,
    /// `unavailable` or `in_flight`.
    pub outcome: &'static str,
    /// The event's id (the collector's, when it assigned one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Why it was rejected: a dead-letter reason name, or `wrong_app`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// What was wrong, for a rejected event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Outcome {
    fn of(outcome: &'static str, event_id: Option<String>) -> Self {
        Outcome {
            outcome,
            event_id,
            reason: None,
            detail: None,
        }
    }
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The HTTP status: 200 when anything was taken (accepted or a
    /// duplicate), else 503 (spill full, app shed, or a retry still in
    /// flight), 429 (over quota) or 400 (nothing valid).
    pub status: u16,
    /// Seconds to wait before a retry, for 429 and 503.
    pub retry_after: Option<u64>,
    /// One outcome per event, in the body's order.
    pub outcomes: Vec<Outcome>,
}

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The spill could not be opened.
    #[error("the spill in {dir} cannot be opened: {source}")]
    Spill {
        /// Its directory.
        dir: String,
        /// Why.
        #[source]
        source: SpillError,
    },
}

/// An event that passed the checks.
struct Checked {
    index: usize,
    app: String,
    id: String,
    record: Record,
}

/// An event being written: where it was in the body, and its id.
struct Taken {
    index: usize,
    app: String,
    id: String,
}

/// The collector.
pub struct Collector {
    settings: CollectSettings,
    outlet: Arc<dyn Outlet>,
    gate: Mutex<Gate>,
    spilling: AtomicBool,
    dedup: Shards,
    shedder: Mutex<Shedder>,
    limits: Limits,
    metrics: Arc<CollectMetrics>,
    wake: Notify,
    stop: AtomicBool,
    spill_bytes: AtomicU64,
    /// The last append was refused for want of room, and nothing was
    /// drained since.
    spill_full: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The Kafka key of an event: its app and user, so that each user's events
/// stay in order in one partition.
pub fn kafka_key(app: &str, user: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(app.len() + 1 + user.len());
    key.extend_from_slice(app.as_bytes());
    key.push(b':');
    key.extend_from_slice(user.as_bytes());
    key
}

/// `event` with `"event_id":"ID"` added as its first member (the event is
/// a JSON object the decoder accepted, so it begins with `{`).
pub fn with_event_id(event: &[u8], id: &str) -> Vec<u8> {
    let at = event.iter().position(|b| *b == b'{').map_or(0, |i| i + 1);
    let rest = &event[at..];
    let empty = rest
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_none_or(|b| *b == b'}');
    let mut out = Vec::with_capacity(event.len() + id.len() + 16);
    out.extend_from_slice(&event[..at]);
    out.extend_from_slice(b"\"event_id\":\"");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(if empty { b"\"" } else { b"\"," });
    out.extend_from_slice(rest);
    out
}

/// The delivery's result if it has one already, without waiting.
fn futures_now(d: &mut Delivery) -> Option<Result<(), OutletError>> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match d.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => Some(r),
        std::task::Poll::Pending => None,
    }
}

/// The file in the spill's directory that holds the window of recent
/// event ids across a restart.
pub const WINDOW_FILE: &str = "ids";

/// The window of recent event ids a graceful stop saved, or an empty one.
fn load_window(settings: &CollectSettings) -> Shards {
    let path = settings.spill_dir.join(WINDOW_FILE);
    let (window, max_ids) = (settings.dedup_window, settings.dedup_max_ids);
    match Shards::load(&path, window, max_ids, Instant::now(), SystemTime::now()) {
        Ok(Some((shards, loaded))) => {
            tracing::info!(ids = loaded.ids, expired = loaded.expired, path = %path.display(),
                "loaded the window of recent event ids that the last stop saved");
            shards
        }
        Ok(None) => Shards::new(window, max_ids),
        Err(e) => {
            tracing::warn!(error = %e,
                "the saved window of recent event ids is not used: a client's retry of an event sent before this start may be written again");
            Shards::new(window, max_ids)
        }
    }
}

/// The process's resident memory, in bytes (Linux; `None` elsewhere).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

impl Collector {
    /// Opens the spill (recovering what a crash left in it) and makes the
    /// collector; a spill that holds records puts it in spill mode, and
    /// the drainer drains them once it runs.
    pub fn open(
        settings: CollectSettings,
        outlet: Arc<dyn Outlet>,
        metrics: Arc<CollectMetrics>,
    ) -> Result<(Arc<Collector>, Recovered), CollectError> {
        let (spill, recovered) = Spill::open(
            &settings.spill_dir,
            settings.spill_max_bytes,
            settings.spill_segment_bytes,
        )
        .map_err(|source| CollectError::Spill {
            dir: settings.spill_dir.display().to_string(),
            source,
        })?;
        let spilling = !spill.is_empty();
        let mut apps: Vec<(String, i32)> = settings
            .apps
            .iter()
            .map(|(app, a)| (app.clone(), a.priority))
            .collect();
        apps.push((UNLISTED.to_owned(), settings.default_priority));
        let shedder = Shedder::new(
            &apps,
            settings.shed_high,
            settings.shed_low,
            settings.shed_step,
        );
        let dedup = load_window(&settings);
        let collector = Collector {
            limits: Limits::new(&settings),
            dedup,
            shedder: Mutex::new(shedder),
            spill_bytes: AtomicU64::new(spill.bytes()),
            gate: Mutex::new(Gate {
                spill,
                spilling,
                pending_spills: 0,
                firsts: HashMap::new(),
                records: recovered.records,
            }),
            spilling: AtomicBool::new(spilling),
            settings,
            outlet,
            metrics,
            wake: Notify::new(),
            stop: AtomicBool::new(false),
            spill_full: AtomicBool::new(false),
        };
        if spilling {
            tracing::warn!(
                records = recovered.records,
                bytes = recovered.bytes,
                "the spill holds events from an earlier run: they are drained to Kafka first"
            );
        }
        Ok((Arc::new(collector), recovered))
    }

    /// Saves the window of recent event ids next to the spill, so that a
    /// client's retry after a restart is still answered `duplicate`. Call
    /// it once no request is being answered.
    pub fn save_window(&self) {
        let path = self.settings.spill_dir.join(WINDOW_FILE);
        match self.dedup.save(&path, Instant::now(), SystemTime::now()) {
            Ok(ids) => {
                tracing::info!(ids, path = %path.display(), "saved the window of recent event ids")
            }
            Err(e) => tracing::error!(error = %e,
                "the window of recent event ids was not saved: after the restart, a client's retry of an event it sent before may be written again"),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &CollectSettings {
        &self.settings
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<CollectMetrics> {
        &self.metrics
    }

    /// Who the `Authorization` header names; `None`: nobody (401).
    pub fn sender(&self, authorization: Option<&str>) -> Option<Sender> {
        self.limits.sender(authorization)
    }

    /// Whether new events go to the spill now.
    pub fn spilling(&self) -> bool {
        self.spilling.load(Ordering::Acquire)
    }

    /// Bytes waiting in the spill (as of the last append or drain).
    pub fn spill_bytes(&self) -> u64 {
        self.spill_bytes.load(Ordering::Relaxed)
    }

    /// Whether the spill has room for more: it is under its cap, and no
    /// append was refused for want of room since it last drained.
    pub fn spill_has_room(&self) -> bool {
        self.spill_bytes() < self.settings.spill_max_bytes
            && !self.spill_full.load(Ordering::Relaxed)
    }

    /// The apps shed now.
    pub fn shed_apps(&self) -> Vec<String> {
        lock(&self.shedder).refused().to_vec()
    }

    /// Asks the background tasks to stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    /// Takes the events of one request (each as its own bytes, in the
    /// body's order) from `sender`.
    pub async fn take(self: &Arc<Self>, sender: &Sender, events: &[&[u8]]) -> Answer {
        let now = Instant::now();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
        let mut checked: Vec<Checked> = Vec::with_capacity(events.len());
        for (index, raw) in events.iter().enumerate() {
            if raw.len() > self.settings.max_event_bytes {
                EventRejected {
                    app: None,
                    reason: "too_large",
                }
                .emit(&self.metrics);
                outcomes[index] = Some(Outcome {
                    reason: Some("too_large"),
                    detail: Some(format!(
                        "the event is {} bytes, over collect.max_event_bytes ({})",
                        raw.len(),
                        self.settings.max_event_bytes
                    )),
                    ..Outcome::of("rejected", None)
                });
                continue;
            }
            let event = match body::check(raw) {
                Ok(e) => e,
                Err((reason, detail)) => {
                    EventRejected {
                        app: None,
                        reason: reason.as_str(),
                    }
                    .emit(&self.metrics);
                    outcomes[index] = Some(Outcome {
                        reason: Some(reason.as_str()),
                        detail: Some(detail),
                        ..Outcome::of("rejected", None)
                    });
                    continue;
                }
            };
            if let Sender::App(app) = sender
                && *event.app_id != **app
            {
                EventRejected {
                    app: Some(&event.app_id),
                    reason: "wrong_app",
                }
                .emit(&self.metrics);
                outcomes[index] = Some(Outcome {
                    reason: Some("wrong_app"),
                    detail: Some(format!(
                        "the token sends events of app `{app}`, not `{}`",
                        event.app_id
                    )),
                    ..Outcome::of("rejected", event.event_id.as_deref().map(str::to_owned))
                });
                continue;
            }
            let (id, value) = match &event.event_id {
                Some(id) => (id.to_string(), raw.to_vec()),
                None => {
                    let id = uuid::Uuid::now_v7().to_string();
                    let value = with_event_id(raw, &id);
                    (id, value)
                }
            };
            checked.push(Checked {
                index,
                app: event.app_id.to_string(),
                record: Record {
                    key: kafka_key(&event.app_id, &event.user_id),
                    value,
                },
                id,
            });
        }

        // Whole apps: shed, or over their quota.
        let mut by_app: BTreeMap<&str, u32> = BTreeMap::new();
        for t in &checked {
            *by_app.entry(t.app.as_str()).or_default() += 1;
        }
        let mut refused: HashMap<String, &'static str> = HashMap::new();
        let mut quota_wait: Option<Duration> = None;
        // More events of an app in this request than its bucket holds.
        let mut too_many = false;
        {
            let shedder = lock(&self.shedder);
            for (app, n) in &by_app {
                let listed = self.settings.apps.contains_key(*app);
                if shedder.refuses(if listed { app } else { UNLISTED }) {
                    refused.insert((*app).to_owned(), "shed");
                    continue;
                }
                match self.limits.take(app, *n) {
                    Quotaed::Within => {}
                    Quotaed::Over(wait) => {
                        quota_wait = Some(quota_wait.map_or(wait, |w| w.max(wait)));
                        refused.insert((*app).to_owned(), "over_quota");
                    }
                    Quotaed::TooMany => {
                        too_many = true;
                        refused.insert((*app).to_owned(), "over_quota");
                    }
                }
            }
        }

        // Event ids: retries of durable events are duplicates.
        let mut write = vec![false; checked.len()];
        let mut repeats: Vec<(usize, usize)> = Vec::new();
        {
            let dedup = &self.dedup;
            let mut in_request: HashMap<(&str, &str), usize> = HashMap::new();
            for (k, t) in checked.iter().enumerate() {
                if let Some(outcome) = refused.get(&t.app) {
                    outcomes[t.index] = Some(Outcome::of(outcome, Some(t.id.clone())));
                    continue;
                }
                if let Some(first) = in_request.get(&(t.app.as_str(), t.id.as_str())) {
                    repeats.push((t.index, *first));
                    continue;
                }
                in_request.insert((t.app.as_str(), t.id.as_str()), t.index);
                match dedup.reserve(&t.app, &t.id, now) {
                    Seen::New => write[k] = true,
                    Seen::Duplicate => {
                        outcomes[t.index] = Some(Outcome::of("duplicate", Some(t.id.clone())));
                    }
                    Seen::InFlight => {
                        outcomes[t.index] = Some(Outcome::of("in_flight", Some(t.id.clone())));
                    }
                }
            }
        }
        // The apps of the events, for the counts.
        let mut apps: Vec<Option<String>> = vec![None; events.len()];
        let mut taken: Vec<Taken> = Vec::with_capacity(checked.len());
        let mut records: Vec<Record> = Vec::with_capacity(checked.len());
        for (t, w) in checked.into_iter().zip(write) {
            if w {
                records.push(t.record);
                taken.push(Taken {
                    index: t.index,
                    app: t.app,
                    id: t.id,
                });
            } else {
                apps[t.index] = Some(t.app);
            }
        }

        let durable = if records.is_empty() {
            Vec::new()
        } else {
            self.write(records).await
        };
        let done = Instant::now();
        let mut spilled: BTreeMap<&str, u64> = BTreeMap::new();
        {
            let dedup = &self.dedup;
            for (t, d) in taken.iter().zip(durable) {
                let outcome = match d {
                    Durable::Kafka => "accepted",
                    Durable::Spill => {
                        *spilled.entry(t.app.as_str()).or_default() += 1;
                        "accepted"
                    }
                    Durable::No(first) => {
                        match first {
                            // The first copy may yet reach Kafka: the id
                            // stays reserved until it is known, so that a
                            // retry is not written twice.
                            Some(fate) => self.settle_later(t.app.clone(), t.id.clone(), fate),
                            None => dedup.release(&t.app, &t.id),
                        }
                        "unavailable"
                    }
                };
                if outcome == "accepted" {
                    dedup.confirm(&t.app, &t.id, done);
                }
                outcomes[t.index] = Some(Outcome::of(outcome, Some(t.id.clone())));
            }
        }
        for (app, count) in spilled {
            EventsSpilled { app, count }.emit(&self.metrics);
        }
        for t in taken {
            apps[t.index] = Some(t.app);
        }
        for (index, first) in repeats {
            let outcome = match outcomes[first].as_ref().map(|o| o.outcome) {
                Some("accepted" | "duplicate") => "duplicate",
                Some(other) => other,
                None => "in_flight",
            };
            let id = outcomes[first].as_ref().and_then(|o| o.event_id.clone());
            outcomes[index] = Some(Outcome::of(outcome, id));
        }

        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::of("in_flight", None)))
            .collect();
        self.count(&apps, &outcomes);
        let has = |name: &str| outcomes.iter().any(|o| o.outcome == name);
        let (status, retry_after) = if has("accepted") || has("duplicate") {
            (200, None)
        } else if has("unavailable") || has("shed") || has("in_flight") {
            (503, Some(1))
        } else if has("over_quota") {
            match quota_wait {
                Some(wait) => (429, Some(retry_after_secs(wait))),
                // Never within the quota, however long the client waits.
                None if too_many => (413, None),
                None => (429, Some(1)),
            }
        } else {
            (400, None)
        };
        Answer {
            status,
            retry_after,
            outcomes,
        }
    }

    /// Counts the outcomes by app (rejections were counted as they came).
    fn count(&self, apps: &[Option<String>], outcomes: &[Outcome]) {
        let mut by: BTreeMap<(&str, &'static str), u64> = BTreeMap::new();
        for (app, o) in apps.iter().zip(outcomes) {
            if o.outcome != "rejected" {
                *by.entry((app.as_deref().unwrap_or("-"), o.outcome))
                    .or_default() += 1;
            }
        }
        for ((app, outcome), count) in by {
            EventsAnswered {
                app,
                outcome,
                count,
            }
            .emit(&self.metrics);
        }
    }

    /// Keeps `id` reserved until its first copy's fate is known: confirmed
    /// when Kafka took it, released when it did not.
    fn settle_later(self: &Arc<Self>, app: String, id: String, mut fate: Fate) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let delivered = matches!(
                fate.wait_for(Option::is_some).await.as_deref(),
                Ok(Some(true))
            );
            let dedup = &this.dedup;
            if delivered {
                dedup.confirm(&app, &id, Instant::now());
            } else {
                dedup.release(&app, &id);
            }
        });
    }

    /// Writes `records`, in order, and says where each became durable.
    async fn write(self: &Arc<Self>, records: Vec<Record>) -> Vec<Durable> {
        let n = records.len();
        let mut sent: Vec<Delivery> = Vec::with_capacity(n);
        {
            let mut gate = lock(&self.gate);
            if !gate.spilling {
                for r in &records {
                    match self.outlet.send(&r.key, &r.value) {
                        Ok(d) => sent.push(d),
                        Err(_) => break,
                    }
                }
            }
            if sent.len() < n {
                // Some records are not in the producer: from now on, new
                // records queue behind them.
                self.spill_decided(&mut gate, "producer_refused");
            }
        }
        if sent.is_empty() {
            let firsts = records.into_iter().map(|r| (r, None)).collect();
            return self.to_spill(firsts, "spilling").await;
        }
        // Wait for Kafka, up to the timeout.
        // One timer for the whole request.
        let deadline = tokio::time::sleep(self.settings.ack_timeout);
        tokio::pin!(deadline);
        let mut timed_out = false;
        let mut durable: Vec<Option<Durable>> = Vec::with_capacity(n);
        let mut late: Vec<(Record, Option<Delivery>)> = Vec::new();
        let mut records = records.into_iter();
        let sent_count = sent.len();
        for mut d in sent {
            let Some(r) = records.next() else { break };
            let answered = if timed_out {
                futures_now(&mut d)
            } else {
                tokio::select! {
                    biased;
                    a = &mut d => Some(a),
                    () = &mut deadline => {
                        timed_out = true;
                        futures_now(&mut d)
                    }
                }
            };
            match answered {
                Some(Ok(())) => durable.push(Some(Durable::Kafka)),
                Some(Err(_)) => {
                    durable.push(None);
                    late.push((r, None));
                }
                None => {
                    durable.push(None);
                    late.push((r, Some(d)));
                }
            }
        }
        // Records the producer did not even queue.
        for r in records {
            durable.push(None);
            late.push((r, None));
        }
        if late.is_empty() {
            return durable.into_iter().flatten().collect();
        }
        if sent_count == n {
            // All were in the producer: this request has not decided to
            // spill yet.
            self.spill_decided(&mut lock(&self.gate), "kafka_timeout");
        }
        let mut spilled = self.to_spill(late, "kafka_timeout").await.into_iter();
        durable
            .into_iter()
            .map(|d| d.or_else(|| spilled.next()).unwrap_or(Durable::No(None)))
            .collect()
    }

    /// A request decided to spill (under the gate's lock): the gate is in
    /// spill mode until that request has appended and the spill drained.
    fn spill_decided(&self, gate: &mut Gate, why: &'static str) {
        gate.pending_spills += 1;
        if !gate.spilling {
            gate.spilling = true;
            self.spilling.store(true, Ordering::Release);
            SpillingChanged {
                spilling: true,
                why,
            }
            .emit(&self.metrics);
        }
    }

    /// Appends `records` to the spill, fsync'd, and turns the gate to spill
    /// mode. A record whose first copy is still in the producer is tracked,
    /// so that the drainer produces it only if that copy fails.
    async fn to_spill(
        self: &Arc<Self>,
        records: Vec<(Record, Option<Delivery>)>,
        why: &'static str,
    ) -> Vec<Durable> {
        let mut fates: Vec<Option<(watch::Sender<Option<bool>>, Fate)>> = Vec::new();
        let mut firsts: Vec<Option<Delivery>> = Vec::new();
        let mut batch: Vec<Record> = Vec::with_capacity(records.len());
        for (r, first) in records {
            fates.push(first.as_ref().map(|_| watch::channel(None)));
            firsts.push(first);
            batch.push(r);
        }
        let receivers: Vec<Option<Fate>> = fates
            .iter()
            .map(|f| f.as_ref().map(|(_, rx)| rx.clone()))
            .collect();
        // Every first copy's fate is followed, whether or not the spill
        // takes the record.
        for (first, fate) in firsts.into_iter().zip(fates) {
            if let (Some(d), Some((tx, _))) = (first, fate) {
                tokio::spawn(async move {
                    let ok = d.await.is_ok();
                    let _ = tx.send(Some(ok));
                });
            }
        }
        let this = Arc::clone(self);
        let regs = receivers.clone();
        let appended = tokio::task::spawn_blocking(move || this.append(&batch, regs, why)).await;
        match appended {
            Ok(Ok(())) => receivers.iter().map(|_| Durable::Spill).collect(),
            Ok(Err(e)) => {
                if !matches!(e, SpillError::Full { .. }) {
                    tracing::error!(error = %e, "the spill could not take events: they were not acknowledged");
                }
                receivers.into_iter().map(Durable::No).collect()
            }
            Err(e) => {
                tracing::error!(error = %e, "a spill append did not finish");
                receivers.into_iter().map(Durable::No).collect()
            }
        }
    }

    /// The blocking part of [`to_spill`](Self::to_spill), under the gate's lock.
    fn append(
        &self,
        batch: &[Record],
        fates: Vec<Option<Fate>>,
        why: &'static str,
    ) -> Result<(), SpillError> {
        let mut gate = lock(&self.gate);
        gate.pending_spills = gate.pending_spills.saturating_sub(1);
        let appended = gate.spill.append(batch);
        self.spill_full.store(
            matches!(appended, Err(SpillError::Full { .. })),
            Ordering::Relaxed,
        );
        let end = appended?;
        let total: u64 = batch.iter().map(stored_len).sum();
        // A batch is appended whole to one segment: it begins `total`
        // bytes before its end.
        let Some(mut at) = end.offset.checked_sub(total) else {
            tracing::error!(
                ?end,
                total,
                "a spill append ended before its own length: its records are not tracked for their first copies"
            );
            gate.records += batch.len() as u64;
            self.spill_bytes
                .store(gate.spill.bytes(), Ordering::Relaxed);
            return Ok(());
        };
        for (r, fate) in batch.iter().zip(fates) {
            at += stored_len(r);
            if let Some(fate) = fate {
                gate.firsts.insert(
                    Position {
                        segment: end.segment,
                        offset: at,
                    },
                    fate,
                );
            }
        }
        gate.records += batch.len() as u64;
        self.spill_bytes
            .store(gate.spill.bytes(), Ordering::Relaxed);
        if !gate.spilling {
            gate.spilling = true;
            self.spilling.store(true, Ordering::Release);
            SpillingChanged {
                spilling: true,
                why,
            }
            .emit(&self.metrics);
        }
        drop(gate);
        self.wake.notify_one();
        Ok(())
    }

    /// Drains the spill into Kafka until [`stop`](Self::stop); run it once
    /// per collector, on the runtime that serves the requests.
    pub async fn drain(self: Arc<Self>) {
        // Records after the cursor that Kafka already holds.
        let mut delivered: HashSet<Position> = HashSet::new();
        let mut failures = 0u32;
        while !self.stop.load(Ordering::SeqCst) {
            let this = Arc::clone(&self);
            let round = tokio::task::spawn_blocking(move || this.next_round()).await;
            let (cursor, batch) = match round {
                Ok(Ok(Some(round))) => round,
                Ok(Ok(None)) => {
                    let woken = self.wake.notified();
                    let _ = tokio::time::timeout(Duration::from_millis(200), woken).await;
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "the spill cannot be read: draining again in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "a drain round did not finish");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut late = 0u64;
            for (_, at, fate) in &batch {
                if let Some(fate) = fate {
                    let mut fate = fate.clone();
                    if matches!(
                        fate.wait_for(Option::is_some).await.as_deref(),
                        Ok(Some(true))
                    ) {
                        delivered.insert(*at);
                        late += 1;
                    }
                }
            }
            let mut sending = Vec::new();
            let mut failed = None;
            'round: for (r, at, _) in &batch {
                if delivered.contains(at) {
                    continue;
                }
                loop {
                    match self.outlet.send(&r.key, &r.value) {
                        Ok(d) => {
                            sending.push((*at, d));
                            break;
                        }
                        Err(OutletError::QueueFull) => {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(e) => {
                            // Nothing after it is sent this round, so that
                            // no record overtakes it.
                            failed = Some(e);
                            break 'round;
                        }
                    }
                }
            }
            let mut produced = 0u64;
            for (at, d) in sending {
                match d.await {
                    Ok(()) => {
                        delivered.insert(at);
                        produced += 1;
                    }
                    Err(e) => failed = Some(e),
                }
            }
            SpillDrained {
                produced,
                delivered_late: late,
            }
            .emit(&self.metrics);
            let mut to = cursor;
            for (_, at, _) in &batch {
                if !delivered.contains(at) {
                    break;
                }
                to = *at;
            }
            if to > cursor {
                let this = Arc::clone(&self);
                let drained = batch.iter().filter(|(_, at, _)| *at <= to).count() as u64;
                let committed = tokio::task::spawn_blocking(move || this.commit(to, drained)).await;
                match committed {
                    Ok(Ok(())) => delivered.retain(|p| *p > to),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "the spill's cursor cannot be saved: trying again in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "a spill commit did not finish: trying again in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            if let Some(e) = failed {
                failures += 1;
                let wait = Duration::from_millis(200 * u64::from(failures.min(25)));
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "Kafka refused spilled events: draining them again");
                tokio::time::sleep(wait).await;
            } else {
                failures = 0;
            }
        }
    }

    /// The next records to drain from the cursor, each with the position
    /// after it and its first copy's fate; `None` when the spill is empty
    /// (the gate is then back in direct mode).
    fn next_round(&self) -> Result<Option<(Position, Round)>, SpillError> {
        let mut gate = lock(&self.gate);
        if gate.spill.is_empty() {
            gate.firsts.clear();
            gate.records = 0;
            if gate.spilling && gate.pending_spills == 0 {
                gate.spilling = false;
                self.spilling.store(false, Ordering::Release);
                SpillingChanged {
                    spilling: false,
                    why: "drained",
                }
                .emit(&self.metrics);
            }
            return Ok(None);
        }
        let cursor = gate.spill.cursor();
        let read = gate.spill.read(cursor, self.settings.drain_batch.max(1))?;
        let batch = read
            .into_iter()
            .map(|(r, at)| {
                let fate = gate.firsts.get(&at).cloned();
                (r, at, fate)
            })
            .collect();
        Ok(Some((cursor, batch)))
    }

    /// Moves the cursor to `to`.
    fn commit(&self, to: Position, drained: u64) -> Result<(), SpillError> {
        let mut gate = lock(&self.gate);
        gate.spill.commit(to)?;
        self.spill_full.store(false, Ordering::Relaxed);
        gate.firsts.retain(|p, _| *p > to);
        gate.records = gate.records.saturating_sub(drained);
        self.spill_bytes
            .store(gate.spill.bytes(), Ordering::Relaxed);
        Ok(())
    }

    /// Watches the pressure (the spill's fill and the process's memory
    /// against its budget) and sheds or takes back apps, until
    /// [`stop`](Self::stop).
    pub async fn watch_pressure(self: Arc<Self>) {
        let mut ticks = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            self.observe(Instant::now());
            ticks += 1;
            if ticks.is_multiple_of(100) {
                self.limits.forget_idle();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The pressure now: the larger of the spill's fill and the memory
    /// against its budget.
    pub fn pressure(&self) -> f64 {
        let spill = self.spill_bytes() as f64 / self.settings.spill_max_bytes.max(1) as f64;
        let memory = match (self.settings.memory_budget, resident_bytes()) {
            (Some(budget), Some(rss)) if budget > 0 => rss as f64 / budget as f64,
            _ => 0.0,
        };
        spill.max(memory)
    }

    /// Takes one look at the pressure and the levels.
    fn observe(&self, now: Instant) {
        let pressure = self.pressure();
        let step = lock(&self.shedder).observe(pressure, now);
        match step {
            Some(Step::Shed(app)) => AppShed {
                app: &app,
                shed: true,
                pressure,
            }
            .emit(&self.metrics),
            Some(Step::Restored(app)) => AppShed {
                app: &app,
                shed: false,
                pressure,
            }
            .emit(&self.metrics),
            None => {}
        }
        let records = lock(&self.gate).records;
        self.metrics.set_levels(
            self.spill_bytes(),
            records,
            self.outlet.queue_depth(),
            self.spilling(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outlet::Delivery;
    use tokio::sync::oneshot;

    type Resolve = oneshot::Sender<Result<(), OutletError>>;

    /// An outlet in memory: `up`, it delivers at once; `down`, it keeps
    /// records until it is brought up (delivered) or told to fail them.
    #[derive(Default)]
    struct Memory {
        state: Mutex<MemoryState>,
    }

    #[derive(Default)]
    struct MemoryState {
        down: bool,
        log: Vec<Vec<u8>>,
        waiting: Vec<(Vec<u8>, Resolve)>,
    }

    impl Memory {
        fn set_down(&self, down: bool) {
            let mut s = lock(&self.state);
            s.down = down;
            if !down {
                for (value, tx) in std::mem::take(&mut s.waiting) {
                    s.log.push(value);
                    let _ = tx.send(Ok(()));
                }
            }
        }

        fn fail_waiting(&self) {
            let mut s = lock(&self.state);
            for (_, tx) in std::mem::take(&mut s.waiting) {
                let _ = tx.send(Err(OutletError::Failed("fenced".into())));
            }
        }

        fn log(&self) -> Vec<String> {
            lock(&self.state)
                .log
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        }
    }

    impl Outlet for Memory {
        fn send(&self, _key: &[u8], value: &[u8]) -> Result<Delivery, OutletError> {
            let mut s = lock(&self.state);
            if s.down {
                let (tx, rx) = oneshot::channel();
                s.waiting.push((value.to_vec(), tx));
                Ok(Box::pin(async move {
                    rx.await
                        .unwrap_or(Err(OutletError::Failed("dropped".into())))
                }))
            } else {
                s.log.push(value.to_vec());
                Ok(Box::pin(async { Ok(()) }))
            }
        }

        fn queue_depth(&self) -> u64 {
            lock(&self.state).waiting.len() as u64
        }
    }

    fn event(n: u32) -> String {
        format!(
            r#"{{"event_id":"e{n}","app_id":"a","user_id":"u","event":"view","ts":{}}}"#,
            1_767_225_600_000i64 + i64::from(n)
        )
    }

    fn collector(dir: &std::path::Path, outlet: Arc<Memory>) -> Arc<Collector> {
        collector_with(dir, outlet, |_| {})
    }

    /// A collector on `outlet` with a 50 ms acknowledgement timeout and a
    /// 4 KiB spill, then `tweak`ed, its drainer running.
    fn collector_with(
        dir: &std::path::Path,
        outlet: Arc<Memory>,
        tweak: impl FnOnce(&mut CollectSettings),
    ) -> Arc<Collector> {
        let mut s = CollectSettings::new(dir.to_owned());
        s.ack_timeout = Duration::from_millis(50);
        s.spill_max_bytes = 4096;
        tweak(&mut s);
        let mut registry = footprint_telemetry::registry();
        let metrics = CollectMetrics::register(&mut registry);
        let (c, _) = Collector::open(s, outlet, metrics).expect("open");
        tokio::spawn(Arc::clone(&c).drain());
        c
    }

    async fn take(c: &Arc<Collector>, events: &[String]) -> Answer {
        let items: Vec<&[u8]> = events.iter().map(|e| e.as_bytes()).collect();
        c.take(&Sender::Anyone, &items).await
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_accepted_while_kafka_is_down_reach_it_once_and_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outlet = Arc::new(Memory::default());
        let c = collector(dir.path(), Arc::clone(&outlet));
        outlet.set_down(true);
        // The first request is sent, times out and is spilled with its
        // first copy still in the producer; the next ones go to the spill.
        let a = take(&c, &[event(1), event(2)]).await;
        assert_eq!(a.status, 200);
        assert!(c.spilling());
        let b = take(&c, &[event(3)]).await;
        assert!(
            a.outcomes
                .iter()
                .chain(&b.outcomes)
                .all(|o| o.outcome == "accepted")
        );
        assert!(outlet.log().is_empty());
        // Kafka comes back: the first copies are delivered late, and the
        // drainer skips them and produces only what it alone holds.
        outlet.set_down(false);
        until("the spill to drain", || !c.spilling()).await;
        assert_eq!(outlet.log(), [event(1), event(2), event(3)]);
        assert_eq!(c.spill_bytes(), 0);
        // Back in direct mode.
        let d = take(&c, &[event(4)]).await;
        assert_eq!(d.status, 200);
        assert_eq!(outlet.log().len(), 4);
        c.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_first_copy_the_producer_gives_up_is_produced_from_the_spill() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outlet = Arc::new(Memory::default());
        let c = collector(dir.path(), Arc::clone(&outlet));
        outlet.set_down(true);
        let a = take(&c, &[event(1), event(2)]).await;
        assert_eq!(a.status, 200);
        outlet.fail_waiting();
        outlet.set_down(false);
        until("the spill to drain", || !c.spilling()).await;
        assert_eq!(outlet.log(), [event(1), event(2)]);
        c.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_spill_refuses_with_503_and_writes_nothing_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outlet = Arc::new(Memory::default());
        let c = collector(dir.path(), Arc::clone(&outlet));
        outlet.set_down(true);
        let mut n = 0;
        let refused = loop {
            let batch: Vec<String> = (n..n + 5).map(event).collect();
            n += 5;
            let a = take(&c, &batch).await;
            if a.status == 503 {
                break a;
            }
            assert!(n < 1000, "the spill never filled");
        };
        assert_eq!(refused.retry_after, Some(1));
        assert!(refused.outcomes.iter().all(|o| o.outcome == "unavailable"));
        assert!(!c.spill_has_room());
        // The spill is full and Kafka down: a retry is refused again and
        // nothing of it is written twice.
        let again: Vec<String> = (n - 5..n).map(event).collect();
        assert_eq!(take(&c, &again).await.status, 503);
        outlet.set_down(false);
        until("the spill to drain", || !c.spilling()).await;
        let log = outlet.log();
        let unique: std::collections::HashSet<&String> = log.iter().collect();
        assert_eq!(unique.len(), log.len(), "nothing written twice");
        c.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_over_the_size_cap_is_rejected_and_the_rest_is_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outlet = Arc::new(Memory::default());
        let c = collector_with(dir.path(), Arc::clone(&outlet), |s| s.max_event_bytes = 120);
        let big = format!(
            r#"{{"event_id":"big","app_id":"a","user_id":"u","event":"view","ts":1767225600000,"item_id":"{}"}}"#,
            "x".repeat(100)
        );
        let a = take(&c, &[event(1), big]).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.outcomes[0].outcome, "accepted");
        assert_eq!(a.outcomes[1].outcome, "rejected");
        assert_eq!(a.outcomes[1].reason, Some("too_large"));
        assert_eq!(outlet.log(), [event(1)]);
        c.stop();
    }

    #[test]
    fn an_assigned_event_id_makes_a_valid_event() {
        let raw = r#" {"app_id":"a","user_id":"u","event":"view","ts":1767225600000}"#;
        let with = with_event_id(raw.as_bytes(), "id-1");
        let e = body::check(&with).expect("valid");
        assert_eq!(e.event_id.as_deref(), Some("id-1"));
        assert_eq!(e.app_id, "a");
        assert_eq!(with_event_id(b"{}", "x"), br#"{"event_id":"x"}"#);
        assert_eq!(kafka_key("shop", "u1"), b"shop:u1");
    }
}
