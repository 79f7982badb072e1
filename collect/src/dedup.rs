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
//!
//! The window outlives a graceful stop: [`Shards::save`] writes the
//! confirmed ids, with the seeds their keys were made with, to a file in
//! the spill's directory, and [`Shards::load`] reads them back at the next
//! start, dropping those whose window has ended. A process killed with
//! SIGKILL saves nothing, so its successor starts from the last saved
//! window.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use foldhash::quality::FixedState;
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

/// An app and an event id, as 128 bits of two hashes with secret seeds:
/// 16 bytes per id whatever its length, compared without reading any
/// string. Two different ids share a key with a chance of about one in
/// 2^64 per pair, which a client cannot steer without knowing the seeds.
type Key = u128;

/// The two secret seeds keys are made with: drawn at random for a new
/// window, and saved with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeds(pub u64, pub u64);

impl Seeds {
    /// Two seeds drawn from the standard library's per-process random keys.
    pub fn random() -> Self {
        let state = std::hash::RandomState::new();
        Seeds(state.hash_one(1u8), state.hash_one(2u8))
    }
}

/// The two seeded hashers a key is made with.
#[derive(Debug, Clone)]
struct Keys {
    seeds: Seeds,
    high: FixedState,
    low: FixedState,
}

impl Keys {
    fn new(seeds: Seeds) -> Self {
        Keys {
            seeds,
            high: FixedState::with_seed(seeds.0),
            low: FixedState::with_seed(seeds.1),
        }
    }

    fn key(&self, app: &str, id: &str) -> Key {
        let high = self.high.hash_one((app, id));
        let low = self.low.hash_one((app, id));
        (u128::from(high) << 64) | u128::from(low)
    }

    /// A key the saved file carries, so that a build whose hash differs
    /// (another version of the hasher) does not read keys it cannot match.
    fn check(&self) -> Key {
        self.key("footprint", "window-check")
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
            keys: Keys::new(Seeds::random()),
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

    /// Puts back a confirmed id (from a saved window); ids must come
    /// oldest first.
    fn restore_key(&mut self, key: Key, at: Instant) {
        if self.ids.contains_key(&key) {
            return;
        }
        self.ids.insert(key, State::InFlight);
        self.confirm_key(key, at);
    }

    /// The confirmed ids, oldest first, with when they were confirmed.
    fn confirmed(&self) -> impl Iterator<Item = (Key, Instant)> + '_ {
        self.order
            .iter()
            .filter(|(at, key)| self.ids.get(key) == Some(&State::Confirmed(*at)))
            .map(|(at, key)| (*key, *at))
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
        Self::with_seeds(window, max_ids, Seeds::random())
    }

    fn with_seeds(window: Duration, max_ids: usize, seeds: Seeds) -> Self {
        let each = max_ids.div_ceil(SHARDS).max(1);
        Shards {
            shards: (0..SHARDS)
                .map(|_| std::sync::Mutex::new(Dedup::new(window, each)))
                .collect(),
            keys: Keys::new(seeds),
        }
    }

    /// Ids held now, reserved or confirmed.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len()
            })
            .sum()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

/// The first bytes of a saved window (format version 1).
const MAGIC: &[u8; 8] = b"FPIDS\0\0\x01";
/// Magic, two seeds, the check key, the time saved and the count.
const HEADER: usize = 8 + 8 + 8 + 16 + 8 + 8;
/// One id: its key and when it was confirmed (milliseconds since 1970).
const ENTRY: usize = 16 + 8;

/// Why a saved window could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a saved window, or is damaged.
    #[error("{path} is not a saved window of event ids or is damaged: {why}")]
    Damaged {
        /// The file.
        path: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The file was written by a build that hashes ids differently.
    #[error("{path} was saved by a build that hashes event ids differently")]
    OtherHash {
        /// The file.
        path: String,
    },
}

/// What [`Shards::load`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loaded {
    /// Ids put back.
    pub ids: usize,
    /// Ids whose window had ended.
    pub expired: usize,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn word<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

impl Shards {
    /// Writes the confirmed ids to `path` (durably and whole, with a
    /// checksum: [`crate::file::write_checked`]), with the seeds of their
    /// keys; `now` and `wall` are the same moment on the two clocks.
    /// Returns how many ids were saved.
    pub fn save(&self, path: &Path, now: Instant, wall: SystemTime) -> Result<usize, WindowError> {
        let io = |source| WindowError::Io {
            path: path.display().to_string(),
            source,
        };
        let saved_ms = unix_ms(wall);
        let mut entries: Vec<u8> = Vec::new();
        let mut count = 0u64;
        for shard in self.shards.iter() {
            let shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (key, at) in shard.confirmed() {
                let age = u64::try_from(now.saturating_duration_since(at).as_millis())
                    .unwrap_or(u64::MAX);
                entries.extend_from_slice(&key.to_le_bytes());
                entries.extend_from_slice(&saved_ms.saturating_sub(age).to_le_bytes());
                count += 1;
            }
        }
        let mut out = Vec::with_capacity(HEADER + entries.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.keys.seeds.0.to_le_bytes());
        out.extend_from_slice(&self.keys.seeds.1.to_le_bytes());
        out.extend_from_slice(&self.keys.check().to_le_bytes());
        out.extend_from_slice(&saved_ms.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&entries);
        crate::file::write_checked(path, &out).map_err(io)?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    /// The window saved in `path`, for ids kept `window` after their
    /// confirmation and about `max_ids` in all, as of `now` (`wall` on the
    /// wall clock); `None` when there is no such file. An id confirmed
    /// further back than the monotonic clock reaches (a machine restarted
    /// since) is kept as if confirmed `now`: remembered a little longer,
    /// never shorter.
    pub fn load(
        path: &Path,
        window: Duration,
        max_ids: usize,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Option<(Shards, Loaded)>, WindowError> {
        let name = || path.display().to_string();
        let damaged = |why| WindowError::Damaged { path: name(), why };
        let bytes = match crate::file::read_checked(path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(damaged("checksum mismatch"));
            }
            Err(source) => {
                return Err(WindowError::Io {
                    path: name(),
                    source,
                });
            }
        };
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(damaged("no header"));
        }
        let body = bytes.len();
        let seeds = Seeds(
            u64::from_le_bytes(word(&bytes, 8)),
            u64::from_le_bytes(word(&bytes, 16)),
        );
        let shards = Shards::with_seeds(window, max_ids, seeds);
        if shards.keys.check() != u128::from_le_bytes(word(&bytes, 24)) {
            return Err(WindowError::OtherHash { path: name() });
        }
        let count = u64::from_le_bytes(word(&bytes, 48));
        if usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(ENTRY))
            .and_then(|b| b.checked_add(HEADER))
            != Some(body)
        {
            return Err(damaged("its length does not match its count"));
        }
        let now_ms = unix_ms(wall);
        let mut entries: Vec<(Instant, Key)> = Vec::new();
        let mut loaded = Loaded::default();
        for entry in bytes[HEADER..body].chunks_exact(ENTRY) {
            let key = u128::from_le_bytes(word(entry, 0));
            let age =
                Duration::from_millis(now_ms.saturating_sub(u64::from_le_bytes(word(entry, 16))));
            if age >= window {
                loaded.expired += 1;
                continue;
            }
            entries.push((now.checked_sub(age).unwrap_or(now), key));
        }
        entries.sort_unstable();
        for (at, key) in entries {
            let i = (key % SHARDS as u128) as usize;
            shards.shards[i]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .restore_key(key, at);
            loaded.ids += 1;
        }
        Ok(Some((shards, loaded)))
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
    fn a_saved_window_is_loaded_back_without_the_ids_that_expired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ids");
        let (t0, wall0) = (Instant::now(), SystemTime::now());
        let d = Shards::new(10 * MIN, 1_000_000);
        for i in 0..300 {
            let id = format!("e{i}");
            assert_eq!(d.reserve("a", &id, t0), Seen::New);
            match i % 3 {
                // Confirmed 9 minutes before the save: 1 minute left.
                0 => d.confirm("a", &id, t0),
                // Confirmed just before the save.
                1 => d.confirm("a", &id, t0 + 9 * MIN),
                // Still in flight: not saved.
                _ => {}
            }
        }
        let saved = d.save(&path, t0 + 9 * MIN, wall0 + 9 * MIN).expect("save");
        assert_eq!(saved, 200);

        // Loaded 2 minutes after the save, in a process whose monotonic
        // clock has nothing to do with the first one's.
        let (t1, wall1) = (Instant::now() + 20 * MIN, wall0 + 11 * MIN);
        let (back, loaded) = Shards::load(&path, 10 * MIN, 1_000_000, t1, wall1)
            .expect("load")
            .expect("a saved window");
        assert_eq!(
            loaded,
            Loaded {
                ids: 100,
                expired: 100
            }
        );
        assert_eq!(back.len(), 100);
        for i in 0..300 {
            let id = format!("e{i}");
            let expected = if i % 3 == 1 {
                Seen::Duplicate
            } else {
                Seen::New
            };
            assert_eq!(back.reserve("a", &id, t1), expected, "{id}");
        }
        // The restored ids expire when their own window ends.
        assert_eq!(back.reserve("a", "e1", t1 + 8 * MIN), Seen::New);
    }

    #[test]
    fn a_damaged_or_missing_window_file_is_reported_not_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ids");
        let (t0, wall) = (Instant::now(), SystemTime::now());
        assert!(
            Shards::load(&path, MIN, 10, t0, wall)
                .expect("no file is no error")
                .is_none()
        );
        let d = Shards::new(MIN, 10);
        d.reserve("a", "e1", t0);
        d.confirm("a", "e1", t0);
        d.save(&path, t0, wall).expect("save");
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 10;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            Shards::load(&path, MIN, 10, t0, wall),
            Err(WindowError::Damaged { .. })
        ));
        std::fs::write(&path, b"short").expect("write");
        assert!(matches!(
            Shards::load(&path, MIN, 10, t0, wall),
            Err(WindowError::Damaged { .. })
        ));
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
