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
//! An id is held as a 128-bit keyed hash of its app and itself (16 bytes,
//! whatever its length). The collector holds them in [`Shards`]: 64 of
//! these, by that key, so that no request waits for one large map to grow.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use hashbrown::{DefaultHashBuilder, HashMap};

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

/// An app and an event id, as 128 bits of two hashes seeded at random
/// when the process starts: 16 bytes per id whatever its length, compared
/// without reading any string. Two different ids share a key with a
/// chance of about one in 2^64 per pair, which a client cannot steer
/// without knowing the seeds.
type Key = u128;

/// The two seeded hashers a key is made with.
#[derive(Debug, Clone, Default)]
struct Keys(DefaultHashBuilder, DefaultHashBuilder);

impl Keys {
    fn key(&self, app: &str, id: &str) -> Key {
        let high = self.0.hash_one((app, id));
        let low = self.1.hash_one((app, id));
        (u128::from(high) << 64) | u128::from(low)
    }
}

/// The recent event ids of every app.
#[derive(Debug)]
pub struct Dedup {
    window: Duration,
    max_ids: usize,
    keys: Keys,
    ids: HashMap<Key, State>,
    /// Confirmed ids, oldest first.
    order: VecDeque<(Instant, Key)>,
    evicted: u64,
}

impl Dedup {
    /// Ids kept for `window` after their confirmation, at most `max_ids`.
    pub fn new(window: Duration, max_ids: usize) -> Self {
        Dedup {
            window,
            max_ids: max_ids.max(1),
            keys: Keys::default(),
            ids: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    /// Looks `id` of `app` up, and reserves it when it is new.
    pub fn reserve(&mut self, app: &str, id: &str, now: Instant) -> Seen {
        let key = self.keys.key(app, id);
        self.reserve_key(key, now)
    }

    fn reserve_key(&mut self, key: Key, now: Instant) -> Seen {
        self.expire(now);
        match self.ids.entry(key) {
            hashbrown::hash_map::Entry::Occupied(e) => match e.get() {
                State::InFlight => Seen::InFlight,
                State::Confirmed(_) => Seen::Duplicate,
            },
            hashbrown::hash_map::Entry::Vacant(e) => {
                e.insert(State::InFlight);
                Seen::New
            }
        }
    }

    /// The event of a reserved `id` is durable: retries are duplicates for
    /// the window from `now`.
    pub fn confirm(&mut self, app: &str, id: &str, now: Instant) {
        let key = self.keys.key(app, id);
        self.confirm_key(key, now);
    }

    fn confirm_key(&mut self, key: Key, now: Instant) {
        let Some(state) = self.ids.get_mut(&key) else {
            return;
        };
        if *state != State::InFlight {
            return;
        }
        *state = State::Confirmed(now);
        self.order.push_back((now, key));
        while self.order.len() > self.max_ids {
            if let Some((at, key)) = self.order.pop_front() {
                self.forget(key, at);
                self.evicted += 1;
            }
        }
    }

    /// The write of a reserved `id` failed: its retry is new.
    pub fn release(&mut self, app: &str, id: &str) {
        let key = self.keys.key(app, id);
        self.release_key(key);
    }

    fn release_key(&mut self, key: Key) {
        if self.ids.get(&key) == Some(&State::InFlight) {
            self.ids.remove(&key);
        }
    }

    /// Confirmed ids forgotten before their window ended, to stay within
    /// `max_ids`.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Ids held now, reserved or confirmed.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            if let Some((at, key)) = self.order.pop_front() {
                self.forget(key, at);
            }
        }
    }

    /// Forgets `key` if it is still the confirmation made at `at`.
    fn forget(&mut self, key: Key, at: Instant) {
        if self.ids.get(&key) == Some(&State::Confirmed(at)) {
            self.ids.remove(&key);
        }
    }
}

/// [`Dedup`] split into shards by the key of app and id, each behind its
/// own lock: a request locks only the shards of its ids, and a shard's map
/// grows (and rehashes) a fraction of the whole at a time, so no request
/// waits for one large rehash.
#[derive(Debug)]
pub struct Shards {
    shards: Box<[std::sync::Mutex<Dedup>]>,
    keys: Keys,
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
            keys: Keys::default(),
        }
    }

    fn shard(&self, app: &str, id: &str) -> (Key, std::sync::MutexGuard<'_, Dedup>) {
        let key = self.keys.key(app, id);
        let i = (key % SHARDS as u128) as usize;
        let guard = self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (key, guard)
    }

    /// [`Dedup::reserve`] in the id's shard.
    pub fn reserve(&self, app: &str, id: &str, now: Instant) -> Seen {
        let (key, mut shard) = self.shard(app, id);
        shard.reserve_key(key, now)
    }

    /// [`Dedup::confirm`] in the id's shard.
    pub fn confirm(&self, app: &str, id: &str, now: Instant) {
        let (key, mut shard) = self.shard(app, id);
        shard.confirm_key(key, now);
    }

    /// [`Dedup::release`] in the id's shard.
    pub fn release(&self, app: &str, id: &str) {
        let (key, mut shard) = self.shard(app, id);
        shard.release_key(key);
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
