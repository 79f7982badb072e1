//! Event decoding and validation (`docs/design.md#events`).
//!
//! [`Event::decode`] borrows every string from the message payload when it
//! holds no JSON escapes, so a typical event is decoded without allocating.
//! `props` is kept as raw JSON and only parsed when a group-by or distinct
//! field asks for `props.NAME`.
//!
//! This module decides what is *bad input*; it does not count or forward it.
//! The source does that with the [`BadReason`] returned here.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

mod fast;

/// Smallest accepted event time: 2000-01-01T00:00:00Z in milliseconds.
pub const MIN_TS: i64 = 946_684_800_000;
/// Largest accepted event time (exclusive): 2100-01-01T00:00:00Z in milliseconds.
pub const MAX_TS: i64 = 4_102_444_800_000;
/// Largest accepted magnitude of `value`, so that sums stay exact in micro-units.
pub const MAX_ABS_VALUE: f64 = 1e12;

/// Why a message was rejected. Each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BadReason {
    /// The payload is not UTF-8.
    NotUtf8,
    /// The payload is not valid JSON (or not a JSON object).
    InvalidJson,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type.
    WrongType,
    /// `ts` is outside [`MIN_TS`, `MAX_TS`).
    TsOutOfRange,
    /// `value` is not finite or larger in magnitude than [`MAX_ABS_VALUE`].
    ValueOutOfRange,
}

impl BadReason {
    /// Every reason, in counter order.
    pub const ALL: [BadReason; 6] = [
        BadReason::NotUtf8,
        BadReason::InvalidJson,
        BadReason::MissingField,
        BadReason::WrongType,
        BadReason::TsOutOfRange,
        BadReason::ValueOutOfRange,
    ];

    /// Stable snake_case name, used in metrics labels and DLQ headers.
    pub fn as_str(self) -> &'static str {
        match self {
            BadReason::NotUtf8 => "not_utf8",
            BadReason::InvalidJson => "invalid_json",
            BadReason::MissingField => "missing_field",
            BadReason::WrongType => "wrong_type",
            BadReason::TsOutOfRange => "ts_out_of_range",
            BadReason::ValueOutOfRange => "value_out_of_range",
        }
    }

    /// Index into [`BadReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for BadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected message: the reason class and a human-readable detail.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct BadInput {
    /// The reason class.
    pub reason: BadReason,
    /// What exactly was wrong, for the DLQ header and logs.
    pub detail: String,
}

impl BadInput {
    fn new(reason: BadReason, detail: impl Into<String>) -> Self {
        BadInput {
            reason,
            detail: detail.into(),
        }
    }
}

/// A decoded, validated behaviour event borrowing from its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    /// Tenant: the app or site that sent the event.
    pub app_id: Cow<'a, str>,
    /// Who acted.
    pub user_id: Cow<'a, str>,
    /// Behaviour type (view, click, cart, order, …).
    pub event: Cow<'a, str>,
    /// Event time in milliseconds since the Unix epoch.
    pub ts: i64,
    /// What was acted on.
    pub item_id: Option<Cow<'a, str>>,
    /// Producer's id for the event.
    pub event_id: Option<Cow<'a, str>>,
    /// Amount, for `sum(value)`.
    pub value: Option<f64>,
    /// Free properties, as their raw JSON text (checked to be valid JSON),
    /// read only when a `props.NAME` field is asked for.
    pub props: Option<&'a str>,
}

/// The event as `serde_json` reads it.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    app_id: Cow<'a, str>,
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    ts: i64,
    #[serde(default, borrow)]
    item_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default, borrow)]
    props: Option<&'a RawValue>,
}

impl<'a> From<Wire<'a>> for Event<'a> {
    fn from(w: Wire<'a>) -> Self {
        Event {
            app_id: w.app_id,
            user_id: w.user_id,
            event: w.event,
            ts: w.ts,
            item_id: w.item_id,
            event_id: w.event_id,
            value: w.value,
            props: w.props.map(RawValue::get),
        }
    }
}

impl<'a> Event<'a> {
    /// Decodes and validates one message payload.
    ///
    /// The common shape (a flat object whose strings hold no escapes) is
    /// read by a scanner of its own; anything else by `serde_json`, which
    /// decides every case the scanner leaves (see [`Event::decode_fast`]).
    pub fn decode(payload: &'a [u8]) -> Result<Event<'a>, BadInput> {
        let text = std::str::from_utf8(payload)
            .map_err(|e| BadInput::new(BadReason::NotUtf8, format!("payload is not UTF-8: {e}")))?;
        let event = match fast::decode(text) {
            Some(event) => event,
            None => Event::from(serde_json::from_str::<Wire<'a>>(text).map_err(classify)?),
        };
        event.validate()?;
        Ok(event)
    }

    /// The fast path alone, before validation: `None` for anything but the
    /// common shape. Whatever it returns, `serde_json` returns too (the
    /// fuzz tests check it); exposed for them and for benchmarks.
    pub fn decode_fast(payload: &'a [u8]) -> Option<Event<'a>> {
        fast::decode(std::str::from_utf8(payload).ok()?)
    }

    /// `serde_json` alone, before validation (for the fuzz tests and benchmarks).
    pub fn decode_serde(payload: &'a [u8]) -> Option<Event<'a>> {
        serde_json::from_str::<Wire<'a>>(std::str::from_utf8(payload).ok()?)
            .ok()
            .map(Event::from)
    }

    fn validate(&self) -> Result<(), BadInput> {
        if !(MIN_TS..MAX_TS).contains(&self.ts) {
            return Err(BadInput::new(
                BadReason::TsOutOfRange,
                format!(
                    "ts {} is outside [{MIN_TS}, {MAX_TS}) (years 2000 to 2100, in milliseconds)",
                    self.ts
                ),
            ));
        }
        if let Some(v) = self.value
            && !(v.is_finite() && v.abs() <= MAX_ABS_VALUE)
        {
            return Err(BadInput::new(
                BadReason::ValueOutOfRange,
                format!("value {v} is not within ±{MAX_ABS_VALUE}"),
            ));
        }
        if let Some(props) = self.props
            && !props.trim_start().starts_with('{')
        {
            return Err(BadInput::new(
                BadReason::WrongType,
                "invalid type: `props` must be a JSON object",
            ));
        }
        Ok(())
    }

    /// The value of `props.NAME`: a string's text, or another scalar's JSON
    /// text. `null`, nested objects and arrays, and absent names give `None`.
    pub fn prop(&self, name: &str) -> Option<Cow<'a, str>> {
        let raw = self.props?;
        match fast::flat_prop(raw, name) {
            Some(found) => found.map(Cow::Borrowed),
            None => prop_with_serde(raw, name),
        }
    }

    /// `value` in exact micro-units (millionths), 0 when absent.
    pub fn value_micros(&self) -> i128 {
        self.value.map_or(0, |v| (v * 1e6).round() as i128)
    }
}

/// `props.NAME` read with `serde_json`: any props object.
fn prop_with_serde<'a>(raw: &'a str, name: &str) -> Option<Cow<'a, str>> {
    let map: HashMap<Cow<'a, str>, &'a RawValue> = serde_json::from_str(raw).ok()?;
    let value = map.get(name)?.get();
    let first = value.as_bytes().first()?;
    match first {
        b'"' => serde_json::from_str::<Cow<'a, str>>(value).ok(),
        b'{' | b'[' | b'n' => None,
        _ => Some(Cow::Borrowed(value)),
    }
}

fn classify(err: serde_json::Error) -> BadInput {
    use serde_json::error::Category;
    let detail = err.to_string();
    let reason = match err.classify() {
        Category::Data if detail.starts_with("missing field") => BadReason::MissingField,
        Category::Data => BadReason::WrongType,
        Category::Syntax | Category::Eof | Category::Io => BadReason::InvalidJson,
    };
    BadInput { reason, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Reading `props.NAME` from a flat object gives what serde_json gives.
        #[test]
        fn flat_props_read_like_serde(
            entries in proptest::collection::vec(
                (
                    prop::sample::select(vec!["country", "n", "x", ""]),
                    prop_oneof![
                        "[a-z]{0,4}".prop_map(|s| format!("\"{s}\"")),
                        any::<i32>().prop_map(|n| n.to_string()),
                        Just("true".to_owned()),
                        Just("null".to_owned()),
                        Just("1.5e3".to_owned()),
                    ],
                ),
                0..5,
            ),
            name in prop::sample::select(vec!["country", "n", "x", "y"]),
        ) {
            let body: Vec<String> = entries.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let raw = format!("{{{}}}", body.join(","));
            let fast = fast::flat_prop(&raw, name);
            prop_assert!(fast.is_some(), "{} is flat", raw);
            prop_assert_eq!(fast.flatten().map(Cow::Borrowed), prop_with_serde(&raw, name), "{}", raw);
        }
    }

    const GOOD: &str = r#"{"app_id":"shop","user_id":"u1","event":"view","ts":1767225600000,"item_id":"i9","value":12.5,"props":{"country":"fr","n":3}}"#;

    #[test]
    fn decodes_a_good_event_without_copying_strings() {
        let ev = Event::decode(GOOD.as_bytes()).expect("good event");
        assert!(matches!(ev.app_id, Cow::Borrowed("shop")));
        assert_eq!(ev.ts, 1_767_225_600_000);
        assert_eq!(ev.value_micros(), 12_500_000);
        assert_eq!(ev.prop("country").as_deref(), Some("fr"));
        assert_eq!(ev.prop("n").as_deref(), Some("3"));
        assert_eq!(ev.prop("absent"), None);
    }

    fn reason(payload: &[u8]) -> BadReason {
        Event::decode(payload).expect_err("must be rejected").reason
    }

    #[test]
    fn classifies_each_kind_of_bad_input() {
        assert_eq!(reason(b"\xff\xfe"), BadReason::NotUtf8);
        assert_eq!(reason(b"{\"app_id\":"), BadReason::InvalidJson);
        assert_eq!(reason(b"not json"), BadReason::InvalidJson);
        assert_eq!(
            reason(br#"{"app_id":"a","user_id":"u","event":"view"}"#),
            BadReason::MissingField
        );
        assert_eq!(
            reason(br#"{"app_id":"a","user_id":"u","event":"view","ts":"soon"}"#),
            BadReason::WrongType
        );
        assert_eq!(reason(b"[1,2]"), BadReason::WrongType);
        assert_eq!(
            reason(br#"{"app_id":"a","user_id":"u","event":"view","ts":5}"#),
            BadReason::TsOutOfRange
        );
        assert_eq!(
            reason(
                br#"{"app_id":"a","user_id":"u","event":"view","ts":1767225600000,"value":1e300}"#
            ),
            BadReason::ValueOutOfRange
        );
        assert_eq!(
            reason(
                br#"{"app_id":"a","user_id":"u","event":"view","ts":1767225600000,"props":[1]}"#
            ),
            BadReason::WrongType
        );
    }

    #[test]
    fn unescapes_strings_that_need_it() {
        let ev =
            Event::decode(br#"{"app_id":"a\"b","user_id":"u","event":"view","ts":1767225600000}"#)
                .expect("good event");
        assert_eq!(ev.app_id, "a\"b");
    }
}
