//! Who may send, and how much: tokens and per-app quotas.
//!
//! - **Tokens.** Once any app has a token, every request needs one: none
//!   or an unknown one gets 401, and an event whose `app_id` is not the
//!   token's app is rejected (`wrong_app`).
//! - **Quotas.** A token bucket per app, in events per second (`governor`):
//!   an app's own rate, or the default one. A request whose events do not
//!   fit gets 429 with a `Retry-After` taken from the bucket: the whole
//!   seconds until they would. One app over its quota takes nothing from
//!   the others.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

pub use footprint_telemetry::access::retry_after_secs;
use footprint_telemetry::access::{bearer, same};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::settings::{CollectSettings, Rate};

/// Who is sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// No tokens are configured: events of any app.
    Anyone,
    /// An app's token: that app's events only.
    App(String),
}

/// A quota's answer for some events of one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quotaed {
    /// Within the quota.
    Within,
    /// Over it: try again after this long.
    Over(Duration),
    /// More events in one request than the bucket holds: never within.
    TooMany,
}

/// Tokens and quotas.
pub struct Limits {
    tokens: Vec<(String, String)>,
    apps: HashMap<String, DefaultDirectRateLimiter>,
    default: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

fn quota(r: Rate) -> Quota {
    let per_second = NonZeroU32::new(r.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(r.burst).unwrap_or(per_second);
    Quota::per_second(per_second).allow_burst(burst)
}

impl Limits {
    /// The tokens and quotas of `settings`.
    pub fn new(settings: &CollectSettings) -> Self {
        let mut apps = HashMap::new();
        for (app, a) in &settings.apps {
            if let Some(r) = a.rate {
                apps.insert(app.clone(), RateLimiter::direct(quota(r)));
            }
        }
        Limits {
            tokens: settings
                .apps
                .iter()
                .filter_map(|(app, a)| Some((a.token.clone()?, app.clone())))
                .collect(),
            apps,
            default: settings.default_rate.map(|r| RateLimiter::keyed(quota(r))),
            clock: DefaultClock::default(),
        }
    }

    /// Who the `Authorization` header names; `None`: nobody (401).
    pub fn sender(&self, header: Option<&str>) -> Option<Sender> {
        if self.tokens.is_empty() {
            return Some(Sender::Anyone);
        }
        let given = header.and_then(bearer)?;
        // Every token is compared, so the time taken says nothing of which matched.
        let mut found = None;
        for (token, app) in &self.tokens {
            if same(given, token) {
                found = Some(app.clone());
            }
        }
        found.map(Sender::App)
    }

    /// Forgets the buckets of unlisted apps that are full again, so that
    /// app ids a client makes up do not hold memory for good.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.default {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Takes `n` events of `app` from its bucket, if they fit.
    pub fn take(&self, app: &str, n: u32) -> Quotaed {
        let Some(n) = NonZeroU32::new(n) else {
            return Quotaed::Within;
        };
        let checked = match self.apps.get(app) {
            Some(limiter) => limiter.check_n(n),
            None => match &self.default {
                Some(limiter) => limiter.check_key_n(&app.to_owned(), n),
                None => return Quotaed::Within,
            },
        };
        match checked {
            Ok(Ok(())) => Quotaed::Within,
            Ok(Err(not_until)) => Quotaed::Over(not_until.wait_time_from(self.clock.now())),
            Err(_) => Quotaed::TooMany,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::AppSettings;

    fn settings() -> CollectSettings {
        let mut s = CollectSettings::new("unused".into());
        s.apps.insert(
            "shop".into(),
            AppSettings {
                token: Some("t-shop".into()),
                rate: Some(Rate {
                    per_second: 10,
                    burst: 20,
                }),
                priority: 1,
            },
        );
        s.apps.insert("blog".into(), AppSettings::default());
        s
    }

    #[test]
    fn a_token_names_its_app_and_anything_else_is_nobody() {
        let l = Limits::new(&settings());
        assert_eq!(
            l.sender(Some("Bearer t-shop")),
            Some(Sender::App("shop".into()))
        );
        assert_eq!(
            l.sender(Some("bearer t-shop ")),
            Some(Sender::App("shop".into()))
        );
        assert_eq!(l.sender(Some("Bearer t-shoq")), None);
        assert_eq!(l.sender(None), None);
        let open = Limits::new(&CollectSettings::new("unused".into()));
        assert_eq!(open.sender(None), Some(Sender::Anyone));
    }

    #[test]
    fn a_quota_takes_events_until_the_bucket_is_empty_and_says_how_long_to_wait() {
        let l = Limits::new(&settings());
        assert_eq!(l.take("shop", 15), Quotaed::Within);
        assert_eq!(l.take("shop", 5), Quotaed::Within);
        match l.take("shop", 5) {
            Quotaed::Over(wait) => {
                // 5 events at 10/s: about half a second, never more than one.
                assert!(
                    wait > Duration::ZERO && wait <= Duration::from_secs(1),
                    "{wait:?}"
                );
                assert_eq!(retry_after_secs(wait), 1);
            }
            other => panic!("expected Over, got {other:?}"),
        }
        assert_eq!(l.take("shop", 21), Quotaed::TooMany, "over the burst of 20");
        // Apps without a quota, and with no default one, are not limited.
        assert_eq!(l.take("blog", 1_000_000), Quotaed::Within);
    }
}
