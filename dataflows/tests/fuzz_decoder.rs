//! Fuzzing the event decoder: whatever the bytes, decoding never panics, the
//! fast path accepts nothing that `serde_json` does not accept with the same
//! values, an accepted event is within the contract (`docs/design.md#events`), and routing
//! it through a spec that reads every field (`props.NAME` included) never
//! panics either.
//!
//! Inputs: random bytes; valid events with random edits (bytes flipped,
//! inserted, removed, cut short); and random JSON trees whose keys are the
//! event's own fields. `FOOTPRINT_FUZZ_CASES` sets the number of cases per
//! kind (2,000 by default; `scripts/fuzz.sh` runs millions).

use footprint_dataflows::event::{Event, MAX_ABS_VALUE, MAX_TS, MIN_TS};
use footprint_dataflows::route::{Record, route};
use footprint_dataflows::{AggregateSpec, Field, Measure, PipelineSpec, RecentSpec, WindowSpec};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

fn config() -> Config {
    let cases = std::env::var("FOOTPRINT_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(2_000);
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..Config::default()
    }
}

fn spec() -> PipelineSpec {
    PipelineSpec {
        aggregates: vec![AggregateSpec {
            name: "everything".into(),
            group_by: vec![
                Field::AppId,
                Field::UserId,
                Field::Event,
                Field::ItemId,
                Field::EventId,
                Field::Prop("country".into()),
                Field::Prop("n".into()),
            ],
            window: WindowSpec::sliding(600_000, 60_000).expect("valid"),
            measures: vec![
                Measure::Count,
                Measure::Distinct(Field::Prop("country".into())),
                Measure::SumValue,
            ],
            allowed_lateness: 1_000,
            early_updates: None,
            sinks: vec![],
        }],
        recent: Some(RecentSpec {
            keep: 5,
            ttl: 86_400_000,
            updates: 1,
            sinks: vec![],
        }),
        max_out_of_order: 5_000,
    }
}

/// Whatever the fast path accepts, `serde_json` accepts with the same values.
fn same_as_serde(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Some(fast) = Event::decode_fast(bytes) else {
        return Ok(());
    };
    let slow = Event::decode_serde(bytes);
    prop_assert!(
        slow.is_some(),
        "the fast path accepted what serde_json rejects: {:?}",
        String::from_utf8_lossy(bytes)
    );
    let slow = slow.expect("checked");
    let same = fast.app_id == slow.app_id
        && fast.user_id == slow.user_id
        && fast.event == slow.event
        && fast.ts == slow.ts
        && fast.item_id == slow.item_id
        && fast.event_id == slow.event_id
        && fast.value.map(f64::to_bits) == slow.value.map(f64::to_bits)
        && fast.props == slow.props;
    prop_assert!(
        same,
        "the paths disagree on {:?}: {fast:?} vs {slow:?}",
        String::from_utf8_lossy(bytes)
    );
    Ok(())
}

/// Decodes `bytes`; when accepted, checks the contract and routes it.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    same_as_serde(bytes)?;
    let Ok(ev) = Event::decode(bytes) else {
        return Ok(());
    };
    prop_assert!((MIN_TS..MAX_TS).contains(&ev.ts), "ts {}", ev.ts);
    if let Some(v) = ev.value {
        prop_assert!(v.is_finite() && v.abs() <= MAX_ABS_VALUE, "value {v}");
    }
    let spec = spec();
    let mut out = Vec::new();
    let mut late = Vec::new();
    let stamp = (ev.ts as u64).saturating_sub(spec.max_out_of_order);
    let need = route(&spec, &ev, stamp, &mut |r| out.push(r), &mut late);
    prop_assert!(need.is_some(), "recent activity always needs a time");
    for r in &out {
        if let Record::Window(c) = r {
            prop_assert_eq!(c.key.parts().len(), spec.aggregates[0].group_by.len());
        }
    }
    Ok(())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9]{0,12}",
        1 => any::<String>(),
        1 => Just("\\u0000".to_owned()),
        1 => Just("\\ud800".to_owned()),
        1 => Just("é\"\\\n".to_owned()),
    ]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (MIN_TS - 10..MAX_TS + 10).prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:e}")),
        1 => Just("1e400".to_owned()),
        1 => Just("-0".to_owned()),
        1 => Just("18446744073709551616".to_owned()),
        1 => Just("1767225600000.5".to_owned()),
    ]
}

/// A valid-looking event, fields in random order, some left out.
fn event() -> impl Strategy<Value = Vec<u8>> {
    (
        text(),
        text(),
        text(),
        number(),
        proptest::option::of(text()),
        proptest::option::of(number()),
        proptest::option::of((text(), number())),
        any::<u64>(),
    )
        .prop_map(|(app, user, ev, ts, item, value, props, order)| {
            let mut fields = vec![
                format!("\"app_id\":{}", serde_json::Value::String(app)),
                format!("\"user_id\":{}", serde_json::Value::String(user)),
                format!("\"event\":{}", serde_json::Value::String(ev)),
                format!("\"ts\":{ts}"),
            ];
            if let Some(i) = item {
                fields.push(format!("\"item_id\":{}", serde_json::Value::String(i)));
            }
            if let Some(v) = value {
                fields.push(format!("\"value\":{v}"));
            }
            if let Some((country, n)) = props {
                fields.push(format!(
                    "\"props\":{{\"country\":{},\"n\":{n}}}",
                    serde_json::Value::String(country)
                ));
            }
            let k = fields.len();
            fields.rotate_left((order % k as u64) as usize);
            format!("{{{}}}", fields.join(",")).into_bytes()
        })
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Cut(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
            (
                any::<usize>(),
                prop::sample::select(b"\"\\{}[],:0-e\xff\xc3".to_vec())
            )
                .prop_map(|(i, b)| Edit::Insert(i, b)),
            any::<usize>().prop_map(Edit::Remove),
            any::<usize>().prop_map(Edit::Cut),
        ],
        1..6,
    )
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = bytes.len().max(1);
        match *e {
            Edit::Flip(i, b) if !bytes.is_empty() => bytes[i % n] = b,
            Edit::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Edit::Remove(i) if !bytes.is_empty() => {
                bytes.remove(i % n);
            }
            Edit::Cut(i) => bytes.truncate(i % n),
            _ => {}
        }
    }
    bytes
}

fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (MIN_TS..MAX_TS).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        let key = prop::sample::select(vec![
            "app_id", "user_id", "event", "ts", "item_id", "event_id", "value", "props", "country",
            "n", "",
        ]);
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(key.prop_map(str::to_owned), inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check(&bytes)?;
    }

    #[test]
    fn edited_events_never_panic(bytes in event(), edits in edits()) {
        check(&bytes)?;
        check(&apply(bytes, &edits))?;
    }

    #[test]
    fn json_of_any_shape_never_panics(value in json()) {
        check(value.to_string().as_bytes())?;
    }
}
