//! Who may ask what, and how often.
//!
//! - **Tokens.** Each app may have a bearer token, which reads only that
//!   app's data; an admin token reads everything. Once any token is
//!   configured every request needs one: none or an unknown one gets 401,
//!   another app's gets 403.
//! - **Rate limits.** A token bucket per app (its own rate, or the default
//!   one) and one per client address (`governor`). A request over either
//!   gets 429 with `Retry-After`, the whole seconds until the bucket has a
//!   token again. One app over its limit takes nothing from the others.
//! - **Load shedding.** A cap on requests in flight; past it a request gets
//!   a 503 at once, before its latency can grow without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::settings::{Rate, ServeSettings};

pub use footprint_telemetry::access::{bearer, retry_after_secs, same};

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No tokens are configured: anyone may read anything.
    Anyone,
    /// The admin token: reads everything.
    Admin,
    /// An app's token: reads that app's data.
    App(String),
}

/// Why a request is refused before any store is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or an unknown one: 401.
    Unauthorized,
    /// A token that may not read this: 403.
    Forbidden(String),
    /// Over a rate limit (`rate_app` or `rate_ip`): 429 after this long.
    TooMany(&'static str, Duration),
    /// Too many requests in flight: 503.
    Overloaded,
}

/// Tokens, rate limits and the in-flight cap.
pub struct Limits {
    admin: Option<String>,
    tokens: Vec<(String, String)>,
    apps: HashMap<String, DefaultDirectRateLimiter>,
    default_app: Option<DefaultKeyedRateLimiter<String>>,
    ips: Option<DefaultKeyedRateLimiter<IpAddr>>,
    in_flight: Arc<Semaphore>,
    /// Made once: making one reads the CPU's features, which is slow.
    clock: DefaultClock,
}

fn quota(rate: Rate) -> Quota {
    let per_second = NonZeroU32::new(rate.per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(rate.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_second).allow_burst(burst)
}

impl Limits {
    /// The limits `settings` ask for.
    pub fn new(settings: &ServeSettings) -> Self {
        Limits {
            admin: settings.admin_token.clone(),
            tokens: settings
                .apps
                .iter()
                .filter_map(|(app, a)| a.token.clone().map(|t| (t, app.clone())))
                .collect(),
            apps: settings
                .apps
                .iter()
                .filter_map(|(app, a)| a.rate.map(|r| (app.clone(), RateLimiter::direct(quota(r)))))
                .collect(),
            default_app: settings.app_rate.map(|r| RateLimiter::keyed(quota(r))),
            ips: settings.ip_rate.map(|r| RateLimiter::keyed(quota(r))),
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            clock: DefaultClock::default(),
        }
    }

    /// Who the `Authorization` header names.
    pub fn caller(&self, header: Option<&str>) -> Result<Caller, Refusal> {
        if self.admin.is_none() && self.tokens.is_empty() {
            return Ok(Caller::Anyone);
        }
        let Some(given) = header.and_then(bearer) else {
            return Err(Refusal::Unauthorized);
        };
        if self.admin.as_deref().is_some_and(|t| same(given, t)) {
            return Ok(Caller::Admin);
        }
        // Every token is compared, so the time taken says nothing of which matched.
        let mut found = None;
        for (token, app) in &self.tokens {
            if same(given, token) {
                found = Some(app.clone());
            }
        }
        found.map(Caller::App).ok_or(Refusal::Unauthorized)
    }

    /// Whether `caller` may read `app`'s data (`None`: data of every app).
    pub fn may_read(&self, caller: &Caller, app: Option<&str>) -> Result<(), Refusal> {
        match (caller, app) {
            (Caller::Anyone | Caller::Admin, _) => Ok(()),
            (Caller::App(mine), Some(app)) if mine == app => Ok(()),
            (Caller::App(mine), Some(app)) => Err(Refusal::Forbidden(format!(
                "the token of app `{mine}` may not read app `{app}`"
            ))),
            (Caller::App(mine), None) => Err(Refusal::Forbidden(format!(
                "the token of app `{mine}` reads only its own app's data: give `app_id={mine}`, or use the admin token"
            ))),
        }
    }

    /// Takes a token from `app`'s bucket (if the request concerns one) and
    /// from `ip`'s.
    pub fn admit(&self, app: Option<&str>, ip: Option<IpAddr>) -> Result<(), Refusal> {
        let clock = &self.clock;
        if let Some(app) = app {
            let checked = match self.apps.get(app) {
                Some(limiter) => limiter.check(),
                None => match &self.default_app {
                    Some(limiter) => limiter.check_key(&app.to_owned()),
                    None => Ok(()),
                },
            };
            if let Err(not_until) = checked {
                return Err(Refusal::TooMany(
                    "rate_app",
                    not_until.wait_time_from(clock.now()),
                ));
            }
        }
        if let (Some(limiter), Some(ip)) = (&self.ips, ip)
            && let Err(not_until) = limiter.check_key(&ip)
        {
            return Err(Refusal::TooMany(
                "rate_ip",
                not_until.wait_time_from(clock.now()),
            ));
        }
        Ok(())
    }

    /// A place among the requests in flight, or a refusal when there is none.
    pub fn enter(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        Arc::clone(&self.in_flight)
            .try_acquire_owned()
            .map_err(|_| Refusal::Overloaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::AppAccess;

    fn settings() -> ServeSettings {
        let mut s = ServeSettings {
            admin_token: Some("root".into()),
            ..ServeSettings::default()
        };
        for (app, token, rate) in [("a", "ta", Some(2)), ("b", "tb", None)] {
            s.apps.insert(
                app.into(),
                AppAccess {
                    token: Some(token.into()),
                    rate: rate.map(|r| Rate {
                        per_second: r,
                        burst: r,
                    }),
                },
            );
        }
        s
    }

    #[test]
    fn tokens_name_their_app_and_no_other() {
        let l = Limits::new(&settings());
        assert_eq!(l.caller(None), Err(Refusal::Unauthorized));
        assert_eq!(l.caller(Some("Bearer nope")), Err(Refusal::Unauthorized));
        assert_eq!(l.caller(Some("bearer root")), Ok(Caller::Admin));
        let a = l.caller(Some("Bearer ta")).expect("app a");
        assert_eq!(a, Caller::App("a".into()));
        assert!(l.may_read(&a, Some("a")).is_ok());
        assert!(matches!(
            l.may_read(&a, Some("b")),
            Err(Refusal::Forbidden(_))
        ));
        assert!(matches!(l.may_read(&a, None), Err(Refusal::Forbidden(_))));
        assert!(l.may_read(&Caller::Admin, None).is_ok());
        let open = Limits::new(&ServeSettings::default());
        assert_eq!(open.caller(None), Ok(Caller::Anyone));
    }

    #[test]
    fn one_app_over_its_rate_leaves_the_others_alone() {
        let l = Limits::new(&settings());
        assert!(l.admit(Some("a"), None).is_ok());
        assert!(l.admit(Some("a"), None).is_ok());
        match l.admit(Some("a"), None) {
            Err(Refusal::TooMany("rate_app", wait)) => {
                assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
                assert_eq!(retry_after_secs(wait), 1);
            }
            other => panic!("app a is over its rate: {other:?}"),
        }
        for _ in 0..100 {
            assert!(l.admit(Some("b"), None).is_ok(), "b has no limit");
        }
    }

    #[test]
    fn retry_after_rounds_up_to_a_whole_second() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
