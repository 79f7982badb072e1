//! [`QueryService`]: where each answer comes from.
//!
//! # Fallback
//! Redis is read first. MySQL is read instead when Redis
//! - misses (a user it holds no activity for; a window it does not hold
//!   and cannot vouch for, see below);
//! - times out (`serve.redis_timeout`, 50 ms by default) or fails;
//! - has its breaker open, or its bulkhead full;
//! - has its degrade switch set to `degraded`.
//!
//! A window that Redis does not hold is missing for a reason when it ends
//! at or before Redis's completeness mark ([`footprint_sinks::marks`]):
//! every window up to there is final in Redis, so a missing one had no
//! events. A missing window after the mark may simply not have reached
//! Redis (it was degraded, say), and is read from MySQL.
//!
//! An answer that needed MySQL says `"source":"mysql"`, one from the cache
//! `"cache"`, and one given while a switch is degraded or a breaker open
//! says `"degraded":true`. When neither store can answer, the request fails
//! with [`ServeError::Unavailable`] (a 503 with `Retry-After`) within the
//! two timeouts. The top N of a window are read from Redis when its sink
//! keeps a top-N index for that prefix and measure (`[[sinks.redis.top]]`,
//! sorted sets kept under the version rule) and the window is final in
//! Redis; otherwise from MySQL, whose primary key orders one window's
//! groups by key.
//!
//! # Breakers and bulkheads
//! Each store has a breaker (the sinks' [`Breaker`]: it opens after
//! `breaker_failures` failed reads and lets one probe through every
//! `breaker_open_for`) and a cap on concurrent reads. A read is not tried
//! when the breaker is open or the cap is reached, so callers never wait for
//! a store known to be down or saturated.
//!
//! # Cache
//! Answers are cached by request: final windows for `cache.final_ttl`,
//! open windows and recent activity for `cache.open_ttl`. Concurrent misses
//! for one key share one store read (and its failure), so an outage of
//! Redis does not stampede MySQL.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use footprint_dataflows::key::GroupKey;
use footprint_dataflows::{AggregateSpec, PipelineSpec, RecentEntry, WindowRow};
use footprint_sinks::SinkError;
use footprint_sinks::marks::combine;
use footprint_sinks::util::breaker::{Breaker, BreakerState};
use footprint_sinks::util::switch::{Mode, Switches};
use footprint_telemetry::InternalEvent;
use moka::future::Cache;
use tokio::sync::Semaphore;

use crate::events::{
    BreakerSeen, CacheLooked, FellBack, QueryMetrics, StoreRead, StoreReadFailed,
    StoreReadSucceeded,
};
use crate::model::Source;
use crate::settings::ServeSettings;
use crate::stores::{MySqlStore, RedisStore};

/// Why a request could not be answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServeError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// It names something that does not exist (an aggregate, a measure).
    #[error("{0}")]
    NotFound(String),
    /// No store can answer now.
    #[error("no store can answer now: {detail}")]
    Unavailable {
        /// When to try again.
        retry_after: Duration,
        /// What failed.
        detail: String,
    },
}

/// A store behind its switch, breaker and bulkhead.
struct Guarded<S> {
    store: S,
    name: &'static str,
    breaker: Mutex<Breaker>,
    bulkhead: Semaphore,
    timeout: Duration,
}

impl<S> Guarded<S> {
    /// `store` behind a breaker of `settings` and at most `cap` reads in
    /// flight, each given `timeout`.
    fn new(
        store: S,
        name: &'static str,
        settings: &ServeSettings,
        timeout: Duration,
        cap: usize,
    ) -> Self {
        Guarded {
            store,
            name,
            breaker: Mutex::new(Breaker::new(settings.breaker)),
            bulkhead: Semaphore::new(cap.max(1)),
            timeout,
        }
    }
}

/// What came of trying a store.
enum Tried<T> {
    Answered(T),
    /// Not tried: why (`degraded`, `breaker_open`, `busy`).
    Skipped(&'static str),
    /// Tried and failed: why (`timeout`, `error`) and the error.
    Failed(&'static str, String),
}

/// Records a read's outcome in its breaker, also when the read is dropped
/// half-way (the caller went away): a probe must not stay in flight forever.
struct Outcome<'a> {
    breaker: &'a Mutex<Breaker>,
    recorded: bool,
}

impl Outcome<'_> {
    fn record(&mut self, ok: bool) {
        let mut b = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
        if ok {
            b.success();
        } else {
            b.failure(Instant::now());
        }
        self.recorded = true;
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            let mut b = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
            if b.state(Instant::now()) == BreakerState::HalfOpen {
                b.failure(Instant::now());
            }
        }
    }
}

/// A cached answer and how long it may be kept.
#[derive(Clone)]
struct Cached {
    value: Arc<Answer>,
    ttl: Duration,
}

struct Ttl;

impl moka::Expiry<String, Cached> for Ttl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Cached,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// What a store read produced, before the route shapes it.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Recent activity per user (`None`: none stored).
    Recent(Vec<Option<Vec<RecentEntry>>>),
    /// The windows of a series, and the answering store's completeness.
    Series(Vec<WindowRow>, Option<i64>),
    /// The top groups of a window, the window, and the store's completeness.
    Top(Vec<WindowRow>, i64, Option<i64>),
}

/// An answer and where it came from.
#[derive(Debug, Clone)]
pub struct Sourced {
    /// The answer.
    pub answer: Arc<Answer>,
    /// Where it came from.
    pub source: Source,
    /// Per user of a recent-activity answer, where each came from.
    pub sources: Vec<Source>,
}

/// A window series asked for.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    /// The aggregate's index.
    pub agg: usize,
    /// The group.
    pub key: GroupKey,
    /// Window starts in `[from, to)`.
    pub from: i64,
    /// See `from`.
    pub to: i64,
}

/// A top N asked for.
#[derive(Debug, Clone)]
pub struct TopQuery {
    /// The aggregate's index.
    pub agg: usize,
    /// The window, or `None` for the newest final one.
    pub window_start: Option<i64>,
    /// The key prefix (encoded).
    pub prefix: GroupKey,
    /// How many leading group-by fields the prefix holds.
    pub within: usize,
    /// The measure's index.
    pub by: usize,
    /// How many groups.
    pub n: usize,
}

/// Answers queries from the stores.
pub struct QueryService {
    spec: Arc<PipelineSpec>,
    redis: Option<Guarded<RedisStore>>,
    mysql: Option<Guarded<MySqlStore>>,
    switches: Arc<Switches>,
    cache: Option<Cache<String, Cached>>,
    settings: ServeSettings,
    metrics: Arc<QueryMetrics>,
}

impl QueryService {
    /// A service over the stores given, following `switches`.
    pub fn new(
        spec: Arc<PipelineSpec>,
        redis: Option<RedisStore>,
        mysql: Option<MySqlStore>,
        switches: Arc<Switches>,
        settings: ServeSettings,
        metrics: Arc<QueryMetrics>,
    ) -> Self {
        let redis = redis.map(|store| {
            Guarded::new(
                store,
                "redis",
                &settings,
                settings.redis_timeout,
                settings.redis_concurrency,
            )
        });
        let mysql = mysql.map(|store| {
            Guarded::new(
                store,
                "mysql",
                &settings,
                settings.mysql_timeout,
                settings.mysql_concurrency,
            )
        });
        let cache = settings.cache.enabled.then(|| {
            Cache::builder()
                .max_capacity(settings.cache.capacity)
                .expire_after(Ttl)
                .build()
        });
        QueryService {
            spec,
            redis,
            mysql,
            switches,
            cache,
            settings,
            metrics,
        }
    }

    /// The pipeline served.
    pub fn spec(&self) -> &Arc<PipelineSpec> {
        &self.spec
    }

    /// What the service was told.
    pub fn settings(&self) -> &ServeSettings {
        &self.settings
    }

    /// Its metrics.
    pub fn metrics(&self) -> &Arc<QueryMetrics> {
        &self.metrics
    }

    /// Whether a switch is degraded or a breaker not closed now.
    pub fn degraded(&self) -> bool {
        let now = Instant::now();
        self.breakers().any(|(name, breaker)| {
            breaker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .state(now)
                != BreakerState::Closed
                || self.switches.get(name) == Some(Mode::Degraded)
        })
    }

    /// Each store's breaker state and switch, for `/status`, `/health` and
    /// the breaker gauge.
    pub fn stores(&self) -> Vec<(&'static str, BreakerState, Option<Mode>)> {
        let now = Instant::now();
        self.breakers()
            .map(|(name, b)| {
                let state = b.lock().unwrap_or_else(PoisonError::into_inner).state(now);
                BreakerSeen { store: name, state }.emit(&self.metrics);
                (name, state, self.switches.get(name))
            })
            .collect()
    }

    fn breakers(&self) -> impl Iterator<Item = (&'static str, &Mutex<Breaker>)> {
        self.redis
            .as_ref()
            .map(|g| (g.name, &g.breaker))
            .into_iter()
            .chain(self.mysql.as_ref().map(|g| (g.name, &g.breaker)))
    }

    fn unavailable(&self, detail: String) -> ServeError {
        ServeError::Unavailable {
            retry_after: self.settings.breaker.open_for.max(Duration::from_secs(1)),
            detail,
        }
    }

    async fn attempt<S, T, F>(&self, g: &Guarded<S>, read: F) -> Tried<T>
    where
        F: std::future::Future<Output = Result<T, SinkError>>,
    {
        if self.switches.get(g.name) == Some(Mode::Degraded) {
            return Tried::Skipped("degraded");
        }
        // An open breaker is known at once: nobody waits for a store that
        // is down. A healthy store's bulkhead is waited for, within the
        // read's own timeout.
        if g.breaker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .state(Instant::now())
            == BreakerState::Open
        {
            return Tried::Skipped("breaker_open");
        }
        let started = Instant::now();
        let _permit = match g.bulkhead.try_acquire() {
            Ok(p) => p,
            Err(_) => match tokio::time::timeout(g.timeout, g.bulkhead.acquire()).await {
                Ok(Ok(p)) => p,
                _ => return Tried::Skipped("busy"),
            },
        };
        let left = g.timeout.saturating_sub(started.elapsed());
        if !g
            .breaker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(Instant::now())
        {
            return Tried::Skipped("breaker_open");
        }
        let mut outcome = Outcome {
            breaker: &g.breaker,
            recorded: false,
        };
        StoreRead { store: g.name }.emit(&self.metrics);
        match tokio::time::timeout(left, read).await {
            Ok(Ok(v)) => {
                outcome.record(true);
                StoreReadSucceeded { store: g.name }.emit(&self.metrics);
                Tried::Answered(v)
            }
            Ok(Err(e)) => {
                // A store that answered with an error is not down.
                outcome.record(!e.is_retryable());
                StoreReadFailed {
                    store: g.name,
                    error: &e,
                }
                .emit(&self.metrics);
                Tried::Failed("error", e.to_string())
            }
            Err(_) => {
                outcome.record(false);
                let e = format!("{}: no answer within {:?}", g.name, g.timeout);
                StoreReadFailed {
                    store: g.name,
                    error: &e,
                }
                .emit(&self.metrics);
                Tried::Failed("timeout", e)
            }
        }
    }

    /// Redis did not answer: counts the fallback to MySQL and says why.
    fn fell_back<T>(&self, tried: Tried<T>) -> String {
        let (reason, detail) = match tried {
            Tried::Answered(_) => ("miss", "missed".to_owned()),
            Tried::Skipped(why) => (why, why.to_owned()),
            Tried::Failed(why, e) => (why, e),
        };
        FellBack { reason }.emit(&self.metrics);
        detail
    }

    /// Looks `key` up in the cache, or reads it with `read`; concurrent
    /// misses of one key share one read. Returns where the answer came
    /// from: the cache, unless this call read it.
    async fn cached<F>(&self, key: String, read: F) -> Result<Sourced, ServeError>
    where
        F: std::future::Future<Output = Result<(Sourced, Duration), ServeError>>,
    {
        let Some(cache) = &self.cache else {
            return read.await.map(|(s, _)| s);
        };
        if let Some(hit) = cache.get(&key).await {
            CacheLooked { hit: true }.emit(&self.metrics);
            return Ok(cache_answer(hit.value));
        }
        let fresh_source = Arc::new(Mutex::new(None::<(Source, Vec<Source>)>));
        let slot = Arc::clone(&fresh_source);
        let entry = cache
            .entry(key)
            .or_try_insert_with(async move {
                let (sourced, ttl) = read.await?;
                *slot.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((sourced.source, sourced.sources.clone()));
                Ok::<_, ServeError>(Cached {
                    value: sourced.answer,
                    ttl,
                })
            })
            .await
            .map_err(|e| (*e).clone())?;
        let fresh = entry.is_fresh();
        CacheLooked { hit: !fresh }.emit(&self.metrics);
        let answer = entry.into_value().value;
        let took = fresh_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        Ok(match (fresh, took) {
            (true, Some((source, sources))) => Sourced {
                answer,
                source,
                sources,
            },
            _ => cache_answer(answer),
        })
    }

    /// The recent activity of `user` of `app`.
    pub async fn recent(&self, app: &str, user: &str) -> Result<Sourced, ServeError> {
        let key = format!("r|{}", GroupKey::from_parts([app, user]).as_str());
        let ttl = self.settings.cache.open_ttl;
        let users = vec![user.to_owned()];
        self.cached(
            key,
            Box::pin(async move {
                let (lists, sources) = self.read_recent(app, &users).await?;
                let source = sources.first().copied().unwrap_or(Source::Redis);
                Ok((
                    Sourced {
                        answer: Arc::new(Answer::Recent(lists)),
                        source,
                        sources,
                    },
                    ttl,
                ))
            }),
        )
        .await
    }

    /// The recent activity of `users` of `app`: the cached ones from the
    /// cache, the others in one read of each store needed.
    pub async fn recent_batch(&self, app: &str, users: &[String]) -> Result<Sourced, ServeError> {
        let mut lists: Vec<Option<Option<Vec<RecentEntry>>>> = vec![None; users.len()];
        let mut sources = vec![Source::Cache; users.len()];
        let key = |u: &str| format!("r|{}", GroupKey::from_parts([app, u]).as_str());
        if let Some(cache) = &self.cache {
            for (i, u) in users.iter().enumerate() {
                if let Some(c) = cache.get(&key(u)).await
                    && let Answer::Recent(l) = c.value.as_ref()
                {
                    lists[i] = Some(l.first().cloned().flatten());
                }
                CacheLooked {
                    hit: lists[i].is_some(),
                }
                .emit(&self.metrics);
            }
        }
        let missing: Vec<usize> = (0..users.len()).filter(|i| lists[*i].is_none()).collect();
        if !missing.is_empty() {
            let ask: Vec<String> = missing.iter().map(|i| users[*i].clone()).collect();
            let (read, read_sources) = self.read_recent(app, &ask).await?;
            for ((i, list), source) in missing.iter().zip(read).zip(read_sources) {
                if let Some(cache) = &self.cache {
                    cache
                        .insert(
                            key(&users[*i]),
                            Cached {
                                value: Arc::new(Answer::Recent(vec![list.clone()])),
                                ttl: self.settings.cache.open_ttl,
                            },
                        )
                        .await;
                }
                lists[*i] = Some(list);
                sources[*i] = source;
            }
        }
        let lists: Vec<Option<Vec<RecentEntry>>> = lists.into_iter().map(Option::flatten).collect();
        Ok(Sourced {
            answer: Arc::new(Answer::Recent(lists)),
            source: sources.first().copied().unwrap_or(Source::Cache),
            sources,
        })
    }

    async fn read_recent(
        &self,
        app: &str,
        users: &[String],
    ) -> Result<(Vec<Option<Vec<RecentEntry>>>, Vec<Source>), ServeError> {
        let mut lists: Vec<Option<Vec<RecentEntry>>> = vec![None; users.len()];
        let mut sources = vec![Source::Redis; users.len()];
        let mut need: Vec<usize> = (0..users.len()).collect();
        let mut redis_failed = None;
        if let Some(g) = &self.redis {
            match self.attempt(g, g.store.recent(app, users)).await {
                Tried::Answered(found) => {
                    need.clear();
                    for (i, f) in found.into_iter().enumerate() {
                        match f {
                            Some(l) => lists[i] = Some(l),
                            None => need.push(i),
                        }
                    }
                    if !need.is_empty() {
                        FellBack { reason: "miss" }.emit(&self.metrics);
                    }
                }
                other => redis_failed = Some(self.fell_back(other)),
            }
        }
        if need.is_empty() {
            return Ok((lists, sources));
        }
        let ask: Vec<String> = need.iter().map(|i| users[*i].clone()).collect();
        let Some(g) = &self.mysql else {
            return match redis_failed {
                // Redis answered, and holds none of these: nothing is stored.
                None if self.redis.is_some() => Ok((lists, sources)),
                other => Err(self.unavailable(other.unwrap_or_else(|| "no store".into()))),
            };
        };
        match self.attempt(g, g.store.recent(app, &ask)).await {
            Tried::Answered(found) => {
                for (i, f) in need.into_iter().zip(found) {
                    lists[i] = f;
                    sources[i] = Source::Mysql;
                }
                Ok((lists, sources))
            }
            Tried::Skipped(why) => Err(self.unavailable(format!(
                "redis: {}; mysql: {why}",
                redis_failed.as_deref().unwrap_or("missed")
            ))),
            Tried::Failed(_, e) => Err(self.unavailable(format!(
                "redis: {}; mysql: {e}",
                redis_failed.as_deref().unwrap_or("missed")
            ))),
        }
    }

    /// The aggregate at `agg`.
    pub fn aggregate(&self, agg: usize) -> &AggregateSpec {
        &self.spec.aggregates[agg]
    }

    /// The window starts of `q`'s range.
    pub fn starts(&self, q: &SeriesQuery) -> Result<Vec<i64>, ServeError> {
        let every = self.aggregate(q.agg).window.every() as i64;
        if q.to <= q.from {
            return Err(ServeError::BadRequest(format!(
                "`to` ({}) must be after `from` ({})",
                q.to, q.from
            )));
        }
        // In i128: any two i64 bounds, however far apart, fit.
        let (from, to, every) = (i128::from(q.from), i128::from(q.to), i128::from(every));
        let first = from.div_euclid(every) * every;
        let first = if first < from { first + every } else { first };
        let n = (to - first + every - 1).div_euclid(every).max(0);
        if n > self.settings.max_windows as i128 {
            return Err(ServeError::BadRequest(format!(
                "the range spans {n} windows; at most {} may be asked at once",
                self.settings.max_windows
            )));
        }
        Ok((0..n)
            .filter_map(|k| i64::try_from(first + k * every).ok())
            .collect())
    }

    /// A window series.
    pub async fn series(&self, q: SeriesQuery) -> Result<Sourced, ServeError> {
        let starts = self.starts(&q)?;
        let key = format!("w|{}|{}|{}|{}", q.agg, q.key.as_str(), q.from, q.to);
        let agg = self.aggregate(q.agg);
        let end = |s: i64| agg.window.end(s);
        let (open_ttl, final_ttl) = (self.settings.cache.open_ttl, self.settings.cache.final_ttl);
        self.cached(
            key,
            Box::pin(async move {
                let (rows, complete, source) = self.read_series(&q, &starts).await?;
                let last_end = starts.last().map_or(i64::MIN, |s| end(*s));
                let ttl = if complete.is_some_and(|c| c >= last_end) {
                    final_ttl
                } else {
                    open_ttl
                };
                Ok((
                    Sourced {
                        answer: Arc::new(Answer::Series(rows, complete)),
                        source,
                        sources: Vec::new(),
                    },
                    ttl,
                ))
            }),
        )
        .await
    }

    async fn read_series(
        &self,
        q: &SeriesQuery,
        starts: &[i64],
    ) -> Result<(Vec<WindowRow>, Option<i64>, Source), ServeError> {
        let agg = self.aggregate(q.agg);
        let mut redis_failed = None;
        let mut from_redis: Vec<WindowRow> = Vec::new();
        let mut redis_complete = None;
        let mut need: Vec<i64> = starts.to_vec();
        if let Some(g) = &self.redis {
            let read = async {
                let marks = g.store.marks(q.agg).await?;
                let rows = g.store.windows(q.agg, &q.key, starts).await?;
                Ok::<_, SinkError>((marks, rows))
            };
            match self.attempt(g, read).await {
                Tried::Answered((marks, rows)) => {
                    redis_complete = combine(&marks);
                    need.clear();
                    for (s, row) in starts.iter().zip(rows) {
                        match row {
                            Some(r) => from_redis.push(r),
                            // Missing for a reason only up to the mark.
                            None if redis_complete.is_some_and(|c| agg.window.end(*s) <= c) => {}
                            None => need.push(*s),
                        }
                    }
                    if !need.is_empty() {
                        FellBack { reason: "miss" }.emit(&self.metrics);
                    }
                }
                other => redis_failed = Some(self.fell_back(other)),
            }
        }
        if need.is_empty() {
            return Ok((from_redis, redis_complete, Source::Redis));
        }
        let mysql = match &self.mysql {
            Some(g) => {
                let read = async {
                    let marks = g.store.marks(&agg.name).await?;
                    let rows = g.store.windows(q.agg, &q.key, &need).await?;
                    Ok::<_, SinkError>((marks, rows))
                };
                self.attempt(g, read).await
            }
            None => Tried::Skipped("not configured"),
        };
        match (mysql, redis_failed) {
            (Tried::Answered((marks, rows)), failed) => {
                let mysql_complete = combine(&marks);
                let complete = if failed.is_some() {
                    mysql_complete
                } else {
                    // Rows from both: as complete as the less complete one.
                    match (redis_complete, mysql_complete) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        _ => None,
                    }
                };
                let mut all = from_redis;
                all.extend(rows);
                all.sort_by_key(|r| r.window_start);
                Ok((all, complete, Source::Mysql))
            }
            // Redis answered; the windows it could not vouch for stay
            // unknown, after its mark.
            (_, None) if self.redis.is_some() => Ok((from_redis, redis_complete, Source::Redis)),
            (Tried::Skipped(why), failed) => Err(self.unavailable(format!(
                "redis: {}; mysql: {why}",
                failed.as_deref().unwrap_or("-")
            ))),
            (Tried::Failed(_, e), failed) => Err(self.unavailable(format!(
                "redis: {}; mysql: {e}",
                failed.as_deref().unwrap_or("-")
            ))),
        }
    }

    /// The top N groups of a window: from Redis when it keeps an index
    /// for it and vouches for the window (final there), else from MySQL.
    pub async fn top(&self, q: TopQuery) -> Result<Sourced, ServeError> {
        let key = format!(
            "t|{}|{:?}|{}|{}|{}",
            q.agg,
            q.window_start,
            q.prefix.as_str(),
            q.by,
            q.n
        );
        let (open_ttl, final_ttl) = (self.settings.cache.open_ttl, self.settings.cache.final_ttl);
        self.cached(
            key,
            Box::pin(async move {
                let agg = self.aggregate(q.agg);
                let ttl = |start: i64, complete: Option<i64>| {
                    if complete.is_some_and(|c| c >= agg.window.end(start)) {
                        final_ttl
                    } else {
                        open_ttl
                    }
                };
                let answer = |rows, start, complete, source| Sourced {
                    answer: Arc::new(Answer::Top(rows, start, complete)),
                    source,
                    sources: Vec::new(),
                };
                let mut redis_failed = None;
                if let Some(g) = &self.redis
                    && g.store.has_top(q.agg, q.within, q.by)
                {
                    let read = async {
                        let complete = combine(&g.store.marks(q.agg).await?);
                        let start = q
                            .window_start
                            .or_else(|| complete.map(|c| newest_final_start(agg, c)));
                        // Redis vouches only for windows final in it.
                        match start {
                            Some(s) if complete.is_some_and(|c| agg.window.end(s) <= c) => Ok(g
                                .store
                                .top(q.agg, s, &q.prefix, q.by, q.n)
                                .await?
                                .map(|rows| (rows, s, complete))),
                            _ => Ok::<_, SinkError>(None),
                        }
                    };
                    match self.attempt(g, read).await {
                        Tried::Answered(Some((rows, start, complete))) => {
                            return Ok((
                                answer(rows, start, complete, Source::Redis),
                                ttl(start, complete),
                            ));
                        }
                        Tried::Answered(None) => FellBack { reason: "miss" }.emit(&self.metrics),
                        other => redis_failed = Some(self.fell_back(other)),
                    }
                }
                let redis_said = redis_failed.as_deref().unwrap_or("no index for it");
                let Some(g) = &self.mysql else {
                    return Err(
                        self.unavailable(format!("redis: {redis_said}; mysql: not configured"))
                    );
                };
                let read = async {
                    let complete = combine(&g.store.marks(&agg.name).await?);
                    let start = q
                        .window_start
                        .or_else(|| complete.map(|c| newest_final_start(agg, c)));
                    let rows = match start {
                        Some(s) => g.store.top(q.agg, s, &q.prefix, q.by, q.n).await?,
                        None => Vec::new(),
                    };
                    Ok::<_, SinkError>((rows, start, complete))
                };
                match self.attempt(g, read).await {
                    Tried::Answered((_, None, _)) => Err(ServeError::NotFound(format!(
                        "{} has no final window yet",
                        agg.name
                    ))),
                    Tried::Answered((rows, Some(start), complete)) => Ok((
                        answer(rows, start, complete, Source::Mysql),
                        ttl(start, complete),
                    )),
                    Tried::Skipped(why) => {
                        Err(self.unavailable(format!("redis: {redis_said}; mysql: {why}")))
                    }
                    Tried::Failed(_, e) => {
                        Err(self.unavailable(format!("redis: {redis_said}; mysql: {e}")))
                    }
                }
            }),
        )
        .await
    }

    /// Reads every cached answer's count, for `/status`.
    pub fn cache_entries(&self) -> u64 {
        self.cache.as_ref().map_or(0, Cache::entry_count)
    }
}

/// An answer the cache gave.
fn cache_answer(answer: Arc<Answer>) -> Sourced {
    let n = match answer.as_ref() {
        Answer::Recent(users) => users.len(),
        _ => 0,
    };
    Sourced {
        answer,
        source: Source::Cache,
        sources: vec![Source::Cache; n],
    }
}

/// The start of the newest window of `agg` that ends at or before `complete`.
pub fn newest_final_start(agg: &AggregateSpec, complete: i64) -> i64 {
    let every = agg.window.every() as i64;
    let size = agg.window.size() as i64;
    (complete - size).div_euclid(every) * every
}
