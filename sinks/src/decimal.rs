//! Exact conversion between sums in micro-units (`i128`) and decimal text:
//! what MySQL reads into and returns from `DECIMAL(38,6)`, and what Redis
//! stores in a sum field. No floating point
//! is involved in either direction.

/// `micros` as a decimal with six fractional digits: `300000` → `0.300000`,
/// `-1500001` → `-1.500001`.
pub(crate) fn from_micros(micros: i128) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    format!("{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
}

/// Parses a decimal (as MySQL returns a `DECIMAL`) into micro-units.
/// `None` when it is not a decimal, has non-zero digits beyond the sixth
/// fractional place, or does not fit.
pub(crate) fn to_micros(text: &str) -> Option<i128> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let (kept, dropped) = frac.split_at(frac.len().min(6));
    if dropped.bytes().any(|b| b != b'0') {
        return None;
    }
    let mut abs: i128 = 0;
    for b in int.bytes().chain(kept.bytes()) {
        abs = abs.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    for _ in kept.len()..6 {
        abs = abs.checked_mul(10)?;
    }
    Some(if negative { -abs } else { abs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_micro_units_with_six_fractional_digits() {
        assert_eq!(from_micros(0), "0.000000");
        assert_eq!(from_micros(300_000), "0.300000");
        assert_eq!(from_micros(-1), "-0.000001");
        assert_eq!(from_micros(-1_500_001), "-1.500001");
        assert_eq!(
            from_micros(12_345_678_901_234_567_890_123_456),
            "12345678901234567890.123456"
        );
        assert_eq!(
            from_micros(i128::MIN),
            "-170141183460469231731687303715884.105728"
        );
    }

    #[test]
    fn parses_what_it_formats_and_what_mysql_returns() {
        for m in [
            0,
            1,
            -1,
            300_000,
            -1_500_001,
            99_999_999_999_999_999_999_999_999_999_999_999_999,
        ] {
            assert_eq!(to_micros(&from_micros(m)), Some(m), "{m}");
        }
        assert_eq!(to_micros("12"), Some(12_000_000));
        assert_eq!(to_micros("-.5"), Some(-500_000));
        assert_eq!(to_micros("1.2500000"), Some(1_250_000));
        assert_eq!(to_micros("1.0000001"), None);
        assert_eq!(to_micros(""), None);
        assert_eq!(to_micros("-"), None);
        assert_eq!(to_micros("1e5"), None);
        assert_eq!(to_micros(&"9".repeat(40)), None);
    }
}
