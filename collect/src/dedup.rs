//! Client retries turned into `duplicate` outcomes: the event ids each app
//! sent in the last `window` (10 minutes by default).
//!
//! An id is *reserved* when its event is taken for writing, and
//! *confirmed* once the event is durable (Kafka acknowledged it, or it is
//! in the spill); a write that failed *releases* it, so that the client's
//! retry is taken again. A retry that arrives while the first copy is
//! still being written is answered [`Seen::InFlight`] (the client should
//! retry later), never [`Seen::Duplicate`], which promises that the first
//! copy is durable.
//!
//! Confirmed ids are kept per app for `window` after their confirmation,
//! at most `max_ids` over all apps: past that the oldest go first, and
//! [`Dedup::evicted`] counts them, so memory stays bounded under any load.
//! The collector holds them in [`Shards`]: 64 of these, by the hash of app
//! and id, so that no request waits for one large map to grow.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;

/// What an event id was, when its event came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen in the window: take the event (the id is now reserved).
    New,
    /// Seen and durable: answer `duplicate`, write nothing.
    Duplicate,
    /// Seen, and its first copy is still being written.
    InFlight,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    InFlight,
    Confirmed(Instant),
}

/// The recent event ids of every app. Each app and id is stored once and
/// shared with the expiry queue.
#[derive(Debug)]
pub struct Dedup {
    window: Duration,
    max_ids: usize,
    apps: HashMap<Arc<str>, HashMap<Arc<str>, State>>,
    /// Confirmed ids, oldest first.
    order: VecDeque<(Instant, Arc<str>, Arc<str>)>,
    evicted: u64,
}

impl Dedup {
    /// Ids kept for `window` after their confirmation, at most `max_ids`.
    pub fn new(window: Duration, max_ids: usize) -> Self {
        Dedup {
            window,
            max_ids: max_ids.max(1),
            apps: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    /// Looks `id` of `app` up, and reserves it when it is new.
    pub fn reserve(&mut self, app: &str, id: &str, now: Instant) -> Seen {
        self.expire(now);
        let ids = match self.apps.get_mut(app) {
            Some(ids) => ids,
            None => self.apps.entry(Arc::from(app)).or_default(),
        };
        match ids.get(id) {
            Some(State::InFlight) => Seen::InFlight,
            Some(State::Confirmed(_)) => Seen::Duplicate,
            None => {
                ids.insert(Arc::from(id), State::InFlight);
                Seen::New
            }
        }
    }

    /// The event of a reserved `id` is durable: retries are duplicates for
    /// the window from `now`.
    pub fn confirm(&mut self, app: &str, id: &str, now: Instant) {
        let Some((app, ids)) = self.apps.get_key_value_mut(app) else {
            return;
        };
        let Some((id, state)) = ids.get_key_value_mut(id) else {
            return;
        };
        if *state != State::InFlight {
            return;
        }
        *state = State::Confirmed(now);
        self.order.push_back((now, Arc::clone(app), Arc::clone(id)));
        while self.order.len() > self.max_ids {
            if let Some((at, app, id)) = self.order.pop_front() {
                self.forget(&app, &id, at);
                self.evicted += 1;
            }
        }
    }

    /// The write of a reserved `id` failed: its retry is new.
    pub fn release(&mut self, app: &str, id: &str) {
        if let Some(ids) = self.apps.get_mut(app)
            && ids.get(id) == Some(&State::InFlight)
        {
            ids.remove(id);
        }
    }

    /// Confirmed ids forgotten before their window ended, to stay within
    /// `max_ids`.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Ids held now, reserved or confirmed.
    pub fn len(&self) -> usize {
        self.apps.values().map(HashMap::len).sum()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            if let Some((at, app, id)) = self.order.pop_front() {
                self.forget(&app, &id, at);
            }
        }
    }

    /// Forgets `id` of `app` if it is still the confirmation made at `at`.
    fn forget(&mut self, app: &str, id: &str, at: Instant) {
        if let Some(ids) = self.apps.get_mut(app) {
            if ids.get(id) == Some(&State::Confirmed(at)) {
                ids.remove(id);
            }
            if ids.is_empty() {
                self.apps.remove(app);
            }
        }
    }
}

/// [`Dedup`] split into shards by the hash of app and id, each behind its
/// own lock: a request locks only the shards of its ids, and a shard's map
/// grows (and rehashes) a fraction of the whole at a time, so no request
/// waits for one large rehash.
#[derive(Debug)]
pub struct Shards {
    shards: Box<[std::sync::Mutex<Dedup>]>,
    hasher: hashbrown::DefaultHashBuilder,
}

/// Shards of a [`Shards`].
const SHARDS: usize = 64;

impl Shards {
    /// Ids kept for `window` after their confirmation, about `max_ids` in
    /// all (each shard keeps its share).
    pub fn new(window: Duration, max_ids: usize) -> Self {
        let each = max_ids.div_ceil(SHARDS).max(1);
        Shards {
            shards: (0..SHARDS)
                .map(|_| std::sync::Mutex::new(Dedup::new(window, each)))
                .collect(),
            hasher: hashbrown::DefaultHashBuilder::default(),
        }
    }

    fn shard(&self, app: &str, id: &str) -> std::sync::MutexGuard<'_, Dedup> {
        use std::hash::BuildHasher;
        let i = (self.hasher.hash_one((app, id)) % SHARDS as u64) as usize;
        self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`Dedup::reserve`] in the id's shard.
    pub fn reserve(&self, app: &str, id: &str, now: Instant) -> Seen {
        self.shard(app, id).reserve(app, id, now)
    }

    /// [`Dedup::confirm`] in the id's shard.
    pub fn confirm(&self, app: &str, id: &str, now: Instant) {
        self.shard(app, id).confirm(app, id, now);
    }

    /// [`Dedup::release`] in the id's shard.
    pub fn release(&self, app: &str, id: &str) {
        self.shard(app, id).release(app, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_retry_of_a_durable_event_is_a_duplicate_until_the_window_ends() {
        let t0 = Instant::now();
        let mut d = Dedup::new(10 * MIN, 1000);
        assert_eq!(d.reserve("a", "e1", t0), Seen::New);
        assert_eq!(d.reserve("a", "e1", t0), Seen::InFlight, "not durable yet");
        d.confirm("a", "e1", t0);
        assert_eq!(d.reserve("a", "e1", t0 + 9 * MIN), Seen::Duplicate);
        assert_eq!(
            d.reserve("b", "e1", t0),
            Seen::New,
            "apps have their own ids"
        );
        assert_eq!(
            d.reserve("a", "e1", t0 + 10 * MIN),
            Seen::New,
            "the window ended"
        );
    }

    #[test]
    fn a_failed_write_releases_its_id() {
        let t0 = Instant::now();
        let mut d = Dedup::new(10 * MIN, 1000);
        assert_eq!(d.reserve("a", "e1", t0), Seen::New);
        d.release("a", "e1");
        assert_eq!(d.reserve("a", "e1", t0), Seen::New);
        d.confirm("a", "e1", t0);
        d.release("a", "e1");
        assert_eq!(
            d.reserve("a", "e1", t0),
            Seen::Duplicate,
            "a durable id is never released"
        );
    }

    #[test]
    fn at_most_max_ids_are_kept_and_the_oldest_go_first() {
        let t0 = Instant::now();
        let mut d = Dedup::new(10 * MIN, 3);
        for i in 0..5u64 {
            let id = format!("e{i}");
            assert_eq!(d.reserve("a", &id, t0), Seen::New);
            d.confirm("a", &id, t0 + Duration::from_secs(i));
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.evicted(), 2);
        assert_eq!(d.reserve("a", "e4", t0), Seen::Duplicate);
        assert_eq!(d.reserve("a", "e0", t0), Seen::New, "evicted");
    }

    #[test]
    fn shards_answer_as_one_dedup() {
        let t0 = Instant::now();
        let d = Shards::new(10 * MIN, 1_000_000);
        for i in 0..1000 {
            let id = format!("e{i}");
            assert_eq!(d.reserve("a", &id, t0), Seen::New);
            if i % 2 == 0 {
                d.confirm("a", &id, t0);
            } else {
                d.release("a", &id);
            }
        }
        for i in 0..1000 {
            let id = format!("e{i}");
            let expected = if i % 2 == 0 {
                Seen::Duplicate
            } else {
                Seen::New
            };
            assert_eq!(d.reserve("a", &id, t0), expected, "{id}");
        }
    }

    #[test]
    fn an_id_confirmed_again_after_its_window_is_kept_for_the_new_window() {
        let t0 = Instant::now();
        let mut d = Dedup::new(MIN, 1000);
        d.reserve("a", "e1", t0);
        d.confirm("a", "e1", t0);
        let t1 = t0 + MIN;
        assert_eq!(d.reserve("a", "e1", t1), Seen::New);
        d.confirm("a", "e1", t1);
        assert_eq!(d.reserve("a", "e1", t1 + MIN / 2), Seen::Duplicate);
        assert_eq!(d.len(), 1);
        assert!(!d.is_empty());
    }
}
