//! A deterministic clickstream generator (`footprint gen`, tests, benches).
//!
//! The same [`GenConfig`] always yields the same messages in the same
//! partitions, so a test can compute the expected results from the very
//! events it produced. Events are keyed and partitioned by user, so each
//! user's events keep their order. On request it adds disorder (an event's
//! `ts` moved back by up to `max_disorder_ms`), late events (moved back by
//! `late_by_ms` behind their partition) and bad messages of every kind.

use crate::event::BadReason;
use crate::hash::hash_bytes;

/// Generator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Random seed.
    pub seed: u64,
    /// Number of partitions to spread users over.
    pub partitions: u32,
    /// Number of apps (tenants).
    pub apps: u32,
    /// Number of users (skewed: low ids are more active).
    pub users: u32,
    /// Number of items (skewed).
    pub items: u32,
    /// Item popularity: `None` draws items as users are drawn (small ids
    /// more often, about 1/sqrt(id)); `Some(alpha)` draws item k as the
    /// whole part of X - 1, X following a Pareto law of shape `alpha` and
    /// scale 1: item k is drawn with chance (k + 1)^-alpha - (k + 2)^-alpha,
    /// so that a few items take most events (with alpha 1.2, item 0 takes
    /// 56%, the first 10 items 94%).
    pub item_alpha: Option<f64>,
    /// Event time of the first event, ms since the epoch.
    pub start_ts: i64,
    /// Events per second of event time.
    pub events_per_sec: u32,
    /// Fraction of events whose `ts` is moved back.
    pub disorder: f64,
    /// Largest move back for disordered events, ms.
    pub max_disorder_ms: u64,
    /// Fraction of events made late.
    pub late: f64,
    /// How far behind its partition's newest event a late event is, ms. Late
    /// events start once their partition has had a good event.
    pub late_by_ms: u64,
    /// Fraction of messages that are bad input.
    pub bad: f64,
    /// Fraction of messages that are random garbage: random bytes, events
    /// cut short or with bytes flipped, JSON of the wrong shape. Some of
    /// them still decode; the decoder has the last word.
    pub garbage: f64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 42,
            partitions: 4,
            apps: 3,
            users: 10_000,
            items: 1_000,
            item_alpha: None,
            start_ts: 1_767_225_600_000,
            events_per_sec: 1_000,
            disorder: 0.05,
            max_disorder_ms: 3_000,
            late: 0.0,
            late_by_ms: 3_600_000,
            bad: 0.0,
            garbage: 0.0,
        }
    }
}

/// The shape of a generated clickstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// The high-cardinality case: 3 apps, 10,000 users, 1,000 items drawn
    /// with a mild skew, 1,000 events per second of event time (the
    /// [`GenConfig`] defaults).
    #[default]
    Uniform,
    /// A skewed clickstream as real sites see it: 8 apps, 200,000 users,
    /// 20,000 items with Pareto (alpha 1.2) popularity (see
    /// [`GenConfig::item_alpha`]), 5,000 events per second of event time.
    Skewed,
}

impl Profile {
    /// Both profiles.
    pub const ALL: [Profile; 2] = [Profile::Skewed, Profile::Uniform];

    /// The profile's name: `skewed` or `uniform`.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Uniform => "uniform",
            Profile::Skewed => "skewed",
        }
    }

    /// The profile named `name`.
    pub fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The generator settings of this profile over `partitions` partitions
    /// (5% of events moved back by up to 3 s, no bad or late input).
    pub fn config(self, partitions: u32) -> GenConfig {
        let base = GenConfig {
            partitions,
            ..GenConfig::default()
        };
        match self {
            Profile::Uniform => base,
            Profile::Skewed => GenConfig {
                apps: 8,
                users: 200_000,
                items: 20_000,
                item_alpha: Some(1.2),
                events_per_sec: 5_000,
                ..base
            },
        }
    }
}

/// What a generated message was made to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A good event.
    Good,
    /// A good event placed far behind its partition's watermark.
    Late,
    /// Bad input of this kind.
    Bad(BadReason),
    /// Random garbage (see [`GenConfig::garbage`]): usually bad input.
    Garbage,
}

/// One generated message.
#[derive(Debug, Clone, PartialEq)]
pub struct GenEvent {
    /// Target partition.
    pub partition: u32,
    /// Message key (the user id).
    pub key: String,
    /// Message payload.
    pub payload: Vec<u8>,
    /// What it was made to be.
    pub kind: Kind,
}

/// SplitMix64: tiny, fast, and stable across versions.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Skewed in [0, n): small values are more likely.
    pub fn skewed(&mut self, n: u64) -> u64 {
        let u = self.unit();
        ((u * u * n as f64) as u64).min(n.saturating_sub(1))
    }

    /// In [0, n): the whole part of X - 1, X following a Pareto law of
    /// shape `alpha` and scale 1, so that k comes with chance
    /// (k + 1)^-alpha - (k + 2)^-alpha. A draw past `n` is drawn again
    /// (with alpha 1.2 and n 20,000, about one in 150,000); after 8 such
    /// draws the value is uniform.
    pub fn pareto(&mut self, n: u64, alpha: f64) -> u64 {
        for _ in 0..8 {
            // 1 - unit() is in (0, 1]: x is at least 1 and finite.
            let x = (1.0 - self.unit()).powf(-1.0 / alpha.max(0.01));
            let k = (x - 1.0) as u64;
            if k < n {
                return k;
            }
        }
        self.below(n)
    }
}

const EVENTS: [(&str, f64); 4] = [
    ("view", 0.70),
    ("click", 0.20),
    ("cart", 0.07),
    ("order", 0.03),
];
const COUNTRIES: [&str; 5] = ["fr", "de", "us", "jp", "br"];

/// The generator.
#[derive(Debug, Clone)]
pub struct Generator {
    cfg: GenConfig,
    rng: SplitMix64,
    n: u64,
    partition_max: Vec<i64>,
}

impl Generator {
    /// A generator for `cfg`.
    pub fn new(cfg: GenConfig) -> Self {
        let parts = cfg.partitions.max(1) as usize;
        Generator {
            rng: SplitMix64::new(cfg.seed),
            partition_max: vec![i64::MIN; parts],
            n: 0,
            cfg,
        }
    }

    /// The next message, with its event time following the generator's own
    /// event-time clock (`start_ts` plus `events_per_sec`).
    pub fn next_event(&mut self) -> GenEvent {
        let clock =
            self.cfg.start_ts + (self.n * 1000 / u64::from(self.cfg.events_per_sec.max(1))) as i64;
        self.next_at(clock)
    }

    /// The next message, with its event time around `clock` (used for live
    /// streams that follow the wall clock).
    pub fn next_at(&mut self, clock: i64) -> GenEvent {
        self.n += 1;
        let r = &mut self.rng;
        let user = format!("u{}", r.skewed(u64::from(self.cfg.users.max(1))));
        let partition =
            (hash_bytes(user.as_bytes()) % u64::from(self.cfg.partitions.max(1))) as u32;
        let p = partition as usize;
        let app = format!("app{}", r.below(u64::from(self.cfg.apps.max(1))));
        let items = u64::from(self.cfg.items.max(1));
        let item = match self.cfg.item_alpha {
            None => format!("i{}", r.skewed(items)),
            Some(alpha) => format!("i{}", r.pareto(items, alpha)),
        };
        let pick = r.unit();
        let mut acc = 0.0;
        let mut event = EVENTS[0].0;
        for (name, w) in EVENTS {
            acc += w;
            if pick < acc {
                event = name;
                break;
            }
        }
        let country = COUNTRIES[r.below(COUNTRIES.len() as u64) as usize];
        let value =
            matches!(event, "cart" | "order").then(|| (r.below(50_000) + 100) as f64 / 100.0);

        if r.unit() < self.cfg.bad {
            let reason = BadReason::ALL[r.below(BadReason::ALL.len() as u64) as usize];
            return GenEvent {
                partition,
                key: user.clone(),
                payload: bad_payload(reason, &app, &user, clock),
                kind: Kind::Bad(reason),
            };
        }
        let mut ts = clock;
        let mut kind = Kind::Good;
        let late_ts = self.partition_max[p].saturating_sub(self.cfg.late_by_ms as i64);
        if self.cfg.late > 0.0
            && r.unit() < self.cfg.late
            && self.partition_max[p] != i64::MIN
            && late_ts >= crate::event::MIN_TS
        {
            ts = late_ts;
            kind = Kind::Late;
        } else if r.unit() < self.cfg.disorder {
            ts -= r.below(self.cfg.max_disorder_ms + 1) as i64;
        }
        if kind == Kind::Good {
            self.partition_max[p] = self.partition_max[p].max(ts);
        }
        if self.cfg.garbage > 0.0 && r.unit() < self.cfg.garbage {
            let valid = format!(
                r#"{{"app_id":"{app}","user_id":"{user}","event":"{event}","ts":{clock},"item_id":"{item}"}}"#
            );
            return GenEvent {
                partition,
                key: user,
                payload: garbage(r, valid.into_bytes()),
                kind: Kind::Garbage,
            };
        }
        let mut json = format!(
            r#"{{"app_id":"{app}","user_id":"{user}","event":"{event}","ts":{ts},"item_id":"{item}","event_id":"e{}""#,
            self.n
        );
        if let Some(v) = value {
            json.push_str(&format!(r#","value":{v}"#));
        }
        json.push_str(&format!(r#","props":{{"country":"{country}"}}}}"#));
        GenEvent {
            partition,
            key: user,
            payload: json.into_bytes(),
            kind,
        }
    }
}

/// Garbage made from a valid event: random bytes, the event cut short, with
/// bytes flipped or inserted, or JSON of another shape.
fn garbage(r: &mut SplitMix64, valid: Vec<u8>) -> Vec<u8> {
    let mut bytes = valid;
    match r.below(6) {
        0 => (0..r.below(200)).map(|_| r.next_u64() as u8).collect(),
        1 => {
            bytes.truncate(r.below(bytes.len() as u64) as usize);
            bytes
        }
        2 => {
            for _ in 0..1 + r.below(4) {
                let i = r.below(bytes.len() as u64) as usize;
                bytes[i] = r.next_u64() as u8;
            }
            bytes
        }
        3 => {
            let i = r.below(bytes.len() as u64) as usize;
            let junk = [b'"', b'\\', b'{', b'}', b'[', b',', b':', 0, 0xc3, 0xff];
            bytes.insert(i, junk[r.below(junk.len() as u64) as usize]);
            bytes
        }
        4 => {
            const SHAPES: [&str; 8] = [
                "null",
                "42",
                "\"view\"",
                "[]",
                "[{\"app_id\":\"a\"}]",
                "{}",
                "{\"app_id\":{\"nested\":[1,2,{\"x\":null}]}}",
                "{\"app_id\":\"a\",\"user_id\":\"u\",\"event\":\"view\",\"ts\":1.5e400}",
            ];
            SHAPES[r.below(SHAPES.len() as u64) as usize]
                .as_bytes()
                .to_vec()
        }
        _ => {
            // Deeply nested.
            let depth = 1 + r.below(300) as usize;
            let mut b = vec![b'['; depth];
            b.extend(std::iter::repeat_n(b']', depth));
            b
        }
    }
}

fn bad_payload(reason: BadReason, app: &str, user: &str, ts: i64) -> Vec<u8> {
    match reason {
        BadReason::NotUtf8 => {
            let mut b = format!(r#"{{"app_id":"{app}","user_id":""#).into_bytes();
            b.extend_from_slice(&[0xff, 0xfe, 0xfd]);
            b.extend_from_slice(format!(r#"","event":"view","ts":{ts}}}"#).as_bytes());
            b
        }
        BadReason::InvalidJson => {
            format!(r#"{{"app_id":"{app}","user_id":"{user}","event":"view","ts":{ts}"#)
                .into_bytes()
        }
        BadReason::MissingField => {
            format!(r#"{{"app_id":"{app}","user_id":"{user}","ts":{ts}}}"#).into_bytes()
        }
        BadReason::WrongType => {
            format!(r#"{{"app_id":"{app}","user_id":"{user}","event":"view","ts":"{ts}"}}"#)
                .into_bytes()
        }
        BadReason::TsOutOfRange => format!(
            r#"{{"app_id":"{app}","user_id":"{user}","event":"view","ts":{}}}"#,
            ts / 1000
        )
        .into_bytes(),
        BadReason::ValueOutOfRange => format!(
            r#"{{"app_id":"{app}","user_id":"{user}","event":"order","ts":{ts},"value":1e15}}"#
        )
        .into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    #[test]
    fn the_skewed_profile_draws_items_by_their_pareto_law() {
        let cfg = Profile::Skewed.config(4);
        let items = u64::from(cfg.items);
        let mut g = Generator::new(cfg);
        let n = 200_000u32;
        let mut counts = std::collections::HashMap::<String, u32>::new();
        for _ in 0..n {
            let e = g.next_event();
            let v: serde_json::Value = serde_json::from_slice(&e.payload).expect("json");
            let item = v["item_id"].as_str().expect("item").to_owned();
            *counts.entry(item).or_default() += 1;
        }
        // Item k's share is (k + 1)^-1.2 - (k + 2)^-1.2, over the chance of
        // a draw below the item count.
        let within = 1.0 - ((items + 1) as f64).powf(-1.2);
        for k in [0u64, 1, 9, 99] {
            let share = ((k + 1) as f64).powf(-1.2) - ((k + 2) as f64).powf(-1.2);
            let expected = share / within * f64::from(n);
            let got = f64::from(counts.get(&format!("i{k}")).copied().unwrap_or(0));
            // Within 5 standard deviations of a binomial count.
            let sd = expected.sqrt();
            assert!(
                (got - expected).abs() < 5.0 * sd + 1.0,
                "item {k}: {got} events, expected about {expected:.0}"
            );
        }
        // The 10 most drawn items take most of the events (94% expected).
        let mut sorted: Vec<u32> = counts.values().copied().collect();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let top: u32 = sorted.iter().take(10).sum();
        assert!(f64::from(top) > 0.9 * f64::from(n), "top 10: {top} of {n}");
        assert_eq!(Profile::from_name("skewed"), Some(Profile::Skewed));
        assert_eq!(Profile::from_name("uniform"), Some(Profile::Uniform));
        assert_eq!(Profile::from_name("zipf"), None);
    }

    #[test]
    fn the_same_seed_gives_the_same_stream_and_labels_hold() {
        let cfg = GenConfig {
            bad: 0.05,
            late: 0.02,
            late_by_ms: 120_000,
            events_per_sec: 10,
            ..GenConfig::default()
        };
        let a: Vec<GenEvent> = {
            let mut g = Generator::new(cfg.clone());
            (0..5_000).map(|_| g.next_event()).collect()
        };
        let b: Vec<GenEvent> = {
            let mut g = Generator::new(cfg);
            (0..5_000).map(|_| g.next_event()).collect()
        };
        assert_eq!(a, b);
        let mut late = 0;
        for e in &a {
            match (e.kind, Event::decode(&e.payload)) {
                (Kind::Bad(reason), Err(bad)) => assert_eq!(
                    bad.reason,
                    reason,
                    "{}",
                    String::from_utf8_lossy(&e.payload)
                ),
                (Kind::Bad(_), Ok(_)) => panic!(
                    "bad payload decoded: {}",
                    String::from_utf8_lossy(&e.payload)
                ),
                (Kind::Garbage, _) => {}
                (_, Err(bad)) => panic!("good payload rejected: {bad}"),
                (Kind::Late, Ok(_)) => late += 1,
                (Kind::Good, Ok(_)) => {}
            }
        }
        assert!(late > 0, "asked for late events, got none");
    }
}
