//! Fuzzing the retry-record codec: whatever the bytes, decoding never
//! panics; every record round-trips through its encoding unchanged (exact
//! sums to the last micro-unit, any text); and a decoded edit of an encoding
//! encodes back to what it decoded to.
//!
//! `FOOTPRINT_FUZZ_CASES` sets the number of cases per kind (2,000 by
//! default; `scripts/fuzz.sh` runs millions).

use footprint_connectors::retry::RetryRecord;
use footprint_dataflows::{MeasureValue, Output, RecentEntry, RecentRow, WindowRow};
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

fn text() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-z0-9_|/:]{0,16}", 1 => any::<String>()]
}

fn measure() -> impl Strategy<Value = MeasureValue> {
    prop_oneof![
        any::<u64>().prop_map(MeasureValue::Count),
        any::<u64>().prop_map(MeasureValue::Distinct),
        any::<i128>().prop_map(MeasureValue::Sum),
    ]
}

fn window() -> impl Strategy<Value = Output> {
    (
        (any::<u16>(), text()),
        proptest::collection::vec((text(), text()), 0..4),
        (any::<i64>(), any::<i64>()),
        proptest::collection::vec((text(), measure()), 0..4),
        (
            any::<u64>(),
            any::<bool>(),
            proptest::option::of(any::<i64>()),
        ),
    )
        .prop_map(
            |(
                (agg, aggregate),
                key,
                (window_start, window_end),
                measures,
                (version, is_final, fresh),
            )| {
                Output::Window(WindowRow {
                    agg,
                    aggregate: aggregate.into(),
                    key: key.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
                    window_start,
                    window_end,
                    measures: measures.into_iter().map(|(k, v)| (k.into(), v)).collect(),
                    version,
                    is_final,
                    freshest_append_ms: fresh,
                })
            },
        )
}

fn recent() -> impl Strategy<Value = Output> {
    let entry = (
        any::<i64>(),
        any::<u32>(),
        any::<i64>(),
        text(),
        proptest::option::of(text()),
    )
        .prop_map(|(ts, partition, offset, event, item_id)| RecentEntry {
            ts,
            partition,
            offset,
            event: event.into(),
            item_id: item_id.map(Into::into),
        });
    (text(), text(), proptest::collection::vec(entry, 0..6)).prop_map(
        |(app_id, user_id, events)| {
            Output::Recent(RecentRow {
                app_id,
                user_id,
                events,
            })
        },
    )
}

fn record() -> impl Strategy<Value = RetryRecord> {
    (
        prop::sample::select(vec!["redis", "mysql"]),
        prop_oneof![3 => window(), 1 => recent()],
        any::<i64>(),
        any::<u32>(),
        text(),
    )
        .prop_map(|(sink, row, first_failure_ms, attempts, reason)| {
            let diversion = footprint_sinks::util::guard::Diversion {
                sink,
                reason,
                attempts,
                first_failure_ms,
            };
            RetryRecord::new(&row, &diversion)
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = RetryRecord::decode(&bytes);
    }

    #[test]
    fn every_record_round_trips(r in record()) {
        let (key, value) = r.encode();
        let prefix = format!("{}|", r.sink);
        prop_assert!(key.starts_with(prefix.as_bytes()), "key {:?}", key);
        let back = RetryRecord::decode(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, r);
    }

    #[test]
    fn edited_encodings_never_panic(
        r in record(),
        at in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let (_, mut value) = r.encode();
        let i = at % value.len().max(1);
        if cut {
            value.truncate(i);
        } else if !value.is_empty() {
            value[i] = byte;
        }
        if let Ok(decoded) = RetryRecord::decode(&value) {
            let again = RetryRecord::decode(&decoded.encode().1)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(again, decoded);
        }
    }
}
