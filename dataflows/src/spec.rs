//! The compiled pipeline: which aggregates to keep and how.
//!
//! `footprint`'s TOML config is parsed and validated in the binary; this is
//! the checked form the dataflow runs from. Building one through
//! [`Field::parse`] and [`Measure::parse`] is the only validation needed.

use std::borrow::Cow;
use std::fmt;

use crate::event::Event;
use crate::window::WindowSpec;

/// An event field that can be grouped by or counted distinctly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// `app_id`
    AppId,
    /// `user_id`
    UserId,
    /// `event`
    Event,
    /// `item_id` (empty when absent)
    ItemId,
    /// `event_id` (empty when absent)
    EventId,
    /// `props.NAME` (empty when absent or null)
    Prop(String),
}

/// A field or measure name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

impl Field {
    /// Parses a field name: `app_id`, `user_id`, `event`, `item_id`,
    /// `event_id` or `props.NAME`.
    pub fn parse(name: &str) -> Result<Self, SpecError> {
        Ok(match name {
            "app_id" => Field::AppId,
            "user_id" => Field::UserId,
            "event" => Field::Event,
            "item_id" => Field::ItemId,
            "event_id" => Field::EventId,
            _ => match name.strip_prefix("props.") {
                Some(p) if !p.is_empty() => Field::Prop(p.to_owned()),
                _ => {
                    return Err(SpecError(format!(
                        "unknown field `{name}`: expected app_id, user_id, event, item_id, event_id or props.NAME"
                    )));
                }
            },
        })
    }

    /// This field's value in `ev`, `None` when it is absent.
    pub fn get<'a>(&self, ev: &Event<'a>) -> Option<Cow<'a, str>> {
        match self {
            Field::AppId => Some(ev.app_id.clone()),
            Field::UserId => Some(ev.user_id.clone()),
            Field::Event => Some(ev.event.clone()),
            Field::ItemId => ev.item_id.clone(),
            Field::EventId => ev.event_id.clone(),
            Field::Prop(name) => ev.prop(name),
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::AppId => f.write_str("app_id"),
            Field::UserId => f.write_str("user_id"),
            Field::Event => f.write_str("event"),
            Field::ItemId => f.write_str("item_id"),
            Field::EventId => f.write_str("event_id"),
            Field::Prop(p) => write!(f, "props.{p}"),
        }
    }
}

/// One measure of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Measure {
    /// `count`: events in the window.
    Count,
    /// `distinct(FIELD)`: exact number of distinct present values.
    Distinct(Field),
    /// `sum(value)`: exact sum of `value`, in micro-units.
    SumValue,
}

impl Measure {
    /// Parses `count`, `distinct(FIELD)` or `sum(value)`.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let t = text.trim();
        if t == "count" {
            return Ok(Measure::Count);
        }
        if let Some(inner) = t
            .strip_prefix("distinct(")
            .and_then(|r| r.strip_suffix(')'))
        {
            return Ok(Measure::Distinct(Field::parse(inner.trim())?));
        }
        if let Some(inner) = t.strip_prefix("sum(").and_then(|r| r.strip_suffix(')')) {
            return match inner.trim() {
                "value" => Ok(Measure::SumValue),
                other => Err(SpecError(format!(
                    "cannot sum `{other}`: only sum(value) is supported"
                ))),
            };
        }
        Err(SpecError(format!(
            "unknown measure `{text}`: expected count, distinct(FIELD) or sum(value)"
        )))
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Measure::Count => f.write_str("count"),
            Measure::Distinct(field) => write!(f, "distinct({field})"),
            Measure::SumValue => f.write_str("sum(value)"),
        }
    }
}

/// One windowed aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateSpec {
    /// Unique name, used in results and store tables.
    pub name: String,
    /// Group-by fields, in key order.
    pub group_by: Vec<Field>,
    /// Window shape.
    pub window: WindowSpec,
    /// Measures, in output order.
    pub measures: Vec<Measure>,
    /// How long after a window's end, in watermark milliseconds, it still accepts events.
    pub allowed_lateness: u64,
    /// At most how often (processing time, ms) each changed open window is
    /// refreshed, counted from when it opened or was last emitted; `None`
    /// emits finals only.
    pub early_updates: Option<u64>,
    /// Names of the sinks that receive this aggregate's rows.
    pub sinks: Vec<String>,
}

impl AggregateSpec {
    /// The watermark at which the window starting at `start` becomes final.
    pub fn close_time(&self, start: i64) -> u64 {
        (self.window.end(start).max(0) as u64).saturating_add(self.allowed_lateness)
    }

    /// The earliest window start that is still open for an event read at
    /// watermark `stamp`: a window is late once `end + allowed_lateness <= stamp`.
    pub fn first_open_start(&self, stamp: u64) -> i64 {
        let bound = stamp as i128 - self.window.size() as i128 - self.allowed_lateness as i128 + 1;
        bound.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// Indices of the distinct measures, in measure order.
    pub fn distinct_fields(&self) -> impl Iterator<Item = &Field> {
        self.measures.iter().filter_map(|m| match m {
            Measure::Distinct(f) => Some(f),
            _ => None,
        })
    }

    /// Whether any measure is `sum(value)`.
    pub fn sums_value(&self) -> bool {
        self.measures.contains(&Measure::SumValue)
    }
}

/// Each user's recent activity.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentSpec {
    /// How many of the latest events to keep per user.
    pub keep: usize,
    /// How long a silent user's activity is kept, in event-time milliseconds.
    pub ttl: u64,
    /// How often (processing time, ms) changed users are emitted.
    pub updates: u64,
    /// Names of the sinks that receive recent-activity rows.
    pub sinks: Vec<String>,
}

/// Everything the dataflow computes.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    /// The windowed aggregates; their index is their id in records.
    pub aggregates: Vec<AggregateSpec>,
    /// Recent activity, if kept.
    pub recent: Option<RecentSpec>,
    /// Bounded disorder per partition, in milliseconds.
    pub max_out_of_order: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_measures_and_names_the_bad_ones() {
        assert_eq!(
            Field::parse("props.country"),
            Ok(Field::Prop("country".into()))
        );
        assert!(Field::parse("props.").is_err());
        assert_eq!(
            Measure::parse("distinct(user_id)"),
            Ok(Measure::Distinct(Field::UserId))
        );
        assert_eq!(Measure::parse(" sum(value) "), Ok(Measure::SumValue));
        let err = Measure::parse("avg(value)").expect_err("unknown");
        assert!(err.0.contains("avg(value)"));
        assert!(Measure::parse("sum(user_id)").is_err());
    }

    #[test]
    fn a_window_is_late_exactly_when_the_stamp_reaches_end_plus_lateness() {
        let a = AggregateSpec {
            name: "a".into(),
            group_by: vec![],
            window: WindowSpec::tumbling(60_000).expect("valid"),
            measures: vec![Measure::Count],
            allowed_lateness: 5_000,
            early_updates: None,
            sinks: vec![],
        };
        let start = 1_767_225_600_000;
        let close = a.close_time(start);
        assert_eq!(close, (start + 65_000) as u64);
        assert!(a.first_open_start(close - 1) <= start);
        assert!(a.first_open_start(close) > start);
    }
}
