//! Timestamp parsing for every vendor format seen in audit-log APIs.

use chrono::{DateTime, Datelike, NaiveDateTime, TimeZone, Utc};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("unrecognised timestamp format")]
pub struct TimestampError;

/// Parse a vendor timestamp to UTC.
///
/// Accepts RFC 3339 / ISO 8601 with or without offset (`2021-06-24T00:04:08.123Z`,
/// `2023-03-15T16:33:50-03:00`, `2021-06-24T00:04:08`), `2021-06-24 00:04:08` (UTC assumed),
/// RFC 2822, and epoch numbers in seconds, milliseconds, microseconds or nanoseconds (decided
/// by magnitude), as JSON numbers or numeric strings (with an optional fraction).
pub fn parse_timestamp(value: &crate::RawJson) -> Result<DateTime<Utc>, TimestampError> {
    use sonic_rs::{JsonNumberTrait, ValueRef};
    match value.as_ref() {
        ValueRef::Number(n) => {
            if let Some(i) = n.as_i64() {
                from_epoch_int(i)
            } else if let Some(f) = n.as_f64() {
                from_epoch_float(f)
            } else {
                Err(TimestampError)
            }
        }
        ValueRef::String(s) => parse_timestamp_str(s),
        _ => Err(TimestampError),
    }
}

/// String form of [`parse_timestamp`].
pub fn parse_timestamp_str(s: &str) -> Result<DateTime<Utc>, TimestampError> {
    parse_timestamp_text(s).map(without_leap_second)
}

/// `t` with a leap second (`10:00:60Z`, which the parsers accept) moved to the next minute's
/// first second: written back as `:60`, it is a time most consumers refuse (Python's
/// `datetime`, JavaScript's `Date`), in exports and webhooks alike.
pub fn without_leap_second(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Timelike;
    let nanos = t.nanosecond();
    if nanos < 1_000_000_000 {
        return t;
    }
    t.with_nanosecond(nanos - 1_000_000_000)
        .map_or(t, |t| t + chrono::Duration::seconds(1))
}

fn parse_timestamp_text(s: &str) -> Result<DateTime<Utc>, TimestampError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(TimestampError);
    }
    // First: what nearly every record holds, and never an epoch number (it has a `T`).
    if let Some(t) = parse_rfc3339_common(s.as_bytes()) {
        return Ok(t);
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'-') && s.len() > 4 && !s.contains('-') {
        return s
            .parse::<i64>()
            .map_err(|_| TimestampError)
            .and_then(from_epoch_int);
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') && s.contains('.') {
        return s
            .parse::<f64>()
            .map_err(|_| TimestampError)
            .and_then(from_epoch_float);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.with_timezone(&Utc));
    }
    // Fast paths before the format-string loops below (which cost ~0.3-0.8 us per call): a
    // zone-less ISO time (M365 `CreationTime`, UTC by contract) and chrono's relaxed ISO parser.
    if let Ok(naive) = s.parse::<NaiveDateTime>() {
        return Ok(Utc.from_utc_datetime(&naive));
    }
    if let Ok(dt) = s.parse::<DateTime<chrono::FixedOffset>>() {
        return Ok(dt.with_timezone(&Utc));
    }
    // ISO 8601 variants chrono's RFC 3339 parser refuses: `+0000` offsets, space separator.
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f %z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Ok(dt.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.fZ",
        "%Y-%m-%d %H:%M:%S%.f UTC",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(Utc.from_utc_datetime(&naive));
        }
    }
    if let Ok(dt) = DateTime::parse_from_rfc2822(s) {
        return Ok(dt.with_timezone(&Utc));
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).ok_or(TimestampError)?));
    }
    Err(TimestampError)
}

/// The RFC 3339 form nearly every vendor writes, `2021-06-24T00:04:08Z` with an optional fraction
/// of up to 9 digits and `Z` or a `+hh:mm`/`-hh:mm` offset, read directly, without chrono's
/// general parsing (every event has a timestamp: on the `normalize_mask` bench, timestamp parsing
/// went from 7.7M to 5.7M instructions). Anything else (a leap second,
/// lowercase `t`/`z`, longer fractions, other layouts) is `None`, left to the parsers after it,
/// which accept what this accepts with the same result (a proptest compares them).
fn parse_rfc3339_common(b: &[u8]) -> Option<DateTime<Utc>> {
    // The digit at `at`; `None` for any other byte. Fields are read two digits at a time at
    // their fixed places: a loop folding each field's bytes measured no cheaper than chrono.
    let digit = |at: usize| -> Option<u32> {
        let d = b[at].wrapping_sub(b'0');
        (d < 10).then_some(u32::from(d))
    };
    let two = |at: usize| Some(digit(at)? * 10 + digit(at + 1)?);
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = two(0)? * 100 + two(2)?;
    let (month, day) = (two(5)?, two(8)?);
    let (hour, minute, second) = (two(11)?, two(14)?, two(17)?);
    if second > 59 {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0;
    if b[at] == b'.' {
        at += 1;
        let mut scale = 1_000_000_000;
        while let Some(d) = b.get(at).and_then(|_| digit(at)) {
            if scale == 1 {
                // More than 9 digits: past what this reads.
                return None;
            }
            scale /= 10;
            nanos += d * scale;
            at += 1;
        }
        if scale == 1_000_000_000 {
            return None;
        }
    }
    let offset_seconds = match &b[at..] {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (two(at + 1)?, two(at + 4)?);
            if h > 23 || m > 59 {
                return None;
            }
            let seconds = i64::from(h * 3600 + m * 60);
            if *sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => return None,
    };
    let local = chrono::NaiveDate::from_ymd_opt(year as i32, month, day)?
        .and_hms_nano_opt(hour, minute, second, nanos)?;
    let utc = if offset_seconds == 0 {
        local
    } else {
        local.checked_sub_signed(chrono::TimeDelta::seconds(offset_seconds))?
    };
    Some(Utc.from_utc_datetime(&utc))
}

/// Why a time bound given by a person (`--from`, `?from=`) was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TimeBoundError {
    #[error(
        "`{0}` is not a time: use RFC 3339 (2024-05-01T10:00:00Z), a date (2024-05-01, midnight \
         UTC), or a time relative to now (now, now-15m, now-24h, now-7d; units s, m, h, d, w)"
    )]
    Unrecognised(String),
    #[error("`{0}` reaches outside the representable time range")]
    OutOfRange(String),
}

/// A time bound as an analyst types it, for search and alert filters:
/// - RFC 3339 or any vendor format [`parse_timestamp_str`] reads (`2024-05-01T10:00:00Z`,
///   epoch seconds/milliseconds, `2024-05-01 10:00:00`);
/// - a date, `2024-05-01` (or `20240501`), meaning midnight UTC at its start;
/// - `now`, or `now-<n><unit>` / `now+<n><unit>` with unit `s`, `m`, `h`, `d` or `w`
///   (`now-15m`, `now-7d`), relative to `now`.
pub fn parse_time_bound(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, TimeBoundError> {
    let t = s.trim();
    // A date in ISO 8601's basic form (`20261125`), not the epoch second of 1970 it also is
    // (QA: `--from 20261125` matched everything since 1970, without a word).
    if t.len() == 8 && t.bytes().all(|b| b.is_ascii_digit()) {
        return chrono::NaiveDate::parse_from_str(t, "%Y%m%d")
            .ok()
            .filter(|d| (1900..3000).contains(&d.year()))
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
            .ok_or_else(|| TimeBoundError::Unrecognised(s.to_string()));
    }
    let Some(rest) = t.strip_prefix("now") else {
        return parse_timestamp_str(t).map_err(|_| TimeBoundError::Unrecognised(s.to_string()));
    };
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Ok(now);
    }
    let unrecognised = || TimeBoundError::Unrecognised(s.to_string());
    let (sign, offset) = match rest.as_bytes()[0] {
        b'-' => (-1, rest[1..].trim_start()),
        b'+' => (1, rest[1..].trim_start()),
        _ => return Err(unrecognised()),
    };
    let split = offset
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(unrecognised)?;
    let (digits, unit) = offset.split_at(split);
    let n: i64 = digits.parse().map_err(|_| unrecognised())?;
    let seconds_per_unit = unit_seconds(unit).ok_or_else(unrecognised)?;
    n.checked_mul(seconds_per_unit)
        .and_then(chrono::TimeDelta::try_seconds)
        .and_then(|d| {
            if sign < 0 {
                now.checked_sub_signed(d)
            } else {
                now.checked_add_signed(d)
            }
        })
        .ok_or_else(|| TimeBoundError::OutOfRange(s.to_string()))
}

/// Seconds in one of the units analysts type after a number: `s`, `m`, `h`, `d`, `w`.
fn unit_seconds(unit: &str) -> Option<i64> {
    match unit {
        "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3_600),
        "d" => Some(86_400),
        "w" => Some(604_800),
        _ => None,
    }
}

/// Why a duration given by a person (`--interval 1h`, `?interval=`) was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error(
    "`{0}` is not a duration: use a whole number above 0 and a unit, s, m, h, d or w (30s, 5m, 1h, 1d, 1w), up to 1000 years"
)]
pub struct DurationError(pub String);

/// A duration as an analyst types it, in seconds: a positive whole number and a unit of
/// [`parse_time_bound`]'s (`30s`, `15m`, `1h`, `1d`, `1w`).
pub fn parse_duration(s: &str) -> Result<i64, DurationError> {
    let t = s.trim();
    let refused = || DurationError(s.to_string());
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(refused)?;
    let (digits, unit) = t.split_at(split);
    let n: i64 = digits.parse().map_err(|_| refused())?;
    let seconds = n
        .checked_mul(unit_seconds(unit).ok_or_else(refused)?)
        .ok_or_else(refused)?;
    // Past a thousand years nothing is measured in it; the bound keeps every product of a
    // duration and a timestamp in range.
    if seconds <= 0 || seconds > 1_000 * 366 * 86_400 {
        return Err(refused());
    }
    Ok(seconds)
}

/// [`parse_duration`] as a [`chrono::TimeDelta`]. Its bound (a thousand years) keeps it in
/// range, and any time of this era plus or minus it too: callers need no overflow checks.
pub fn parse_time_delta(s: &str) -> Result<chrono::TimeDelta, DurationError> {
    parse_duration(s).map(chrono::TimeDelta::seconds)
}

fn from_epoch_int(i: i64) -> Result<DateTime<Utc>, TimestampError> {
    let a = i.unsigned_abs();
    // Magnitude decides the unit: 1e11 s is year 5138, 1e14 ms is year 5138, and so on.
    let dt = if a < 100_000_000_000 {
        Utc.timestamp_opt(i, 0).single()
    } else if a < 100_000_000_000_000 {
        Utc.timestamp_millis_opt(i).single()
    } else if a < 100_000_000_000_000_000 {
        Some(Utc.timestamp_nanos(i.saturating_mul(1000)))
    } else {
        Some(Utc.timestamp_nanos(i))
    };
    dt.ok_or(TimestampError)
}

fn from_epoch_float(f: f64) -> Result<DateTime<Utc>, TimestampError> {
    if !f.is_finite() {
        return Err(TimestampError);
    }
    if f.abs() < 100_000_000_000.0 {
        let secs = f.floor() as i64;
        let nanos = ((f - f.floor()) * 1e9).round() as u32;
        Utc.timestamp_opt(secs, nanos.min(999_999_999))
            .single()
            .ok_or(TimestampError)
    } else {
        from_epoch_int(f as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonic_rs::json;

    proptest::proptest! {
        /// The direct reading of the common RFC 3339 form agrees with chrono's parser on every
        /// text it accepts, and accepts the form whenever chrono does (its fraction and offset
        /// variants included).
        #[test]
        fn the_common_rfc3339_form_reads_as_chrono_reads_it(
            year in 0u32..10_000,
            month in 0u32..14,
            day in 0u32..33,
            hour in 0u32..25,
            minute in 0u32..61,
            second in 0u32..61,
            fraction in proptest::option::of("[0-9]{1,10}"),
            offset in proptest::sample::select(vec![
                "Z", "+00:00", "-00:00", "+05:30", "-03:00", "+14:00", "-23:59", "+24:00",
                "+05:60", "z", "+0530", "",
            ]),
            separator in proptest::sample::select(vec!["T", "t", " "]),
        ) {
            let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
            let text = format!(
                "{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}{fraction}{offset}"
            );
            let chrono_reads = DateTime::parse_from_rfc3339(&text).ok().map(|t| t.with_timezone(&Utc));
            let direct = parse_rfc3339_common(text.as_bytes());
            if let Some(t) = direct {
                proptest::prop_assert_eq!(Some(t), chrono_reads, "{}", text);
            }
            let common_form = separator == "T"
                && second < 60
                && fraction.len() <= 10
                && matches!(offset.len(), 1 | 6)
                && offset != "z";
            if common_form && chrono_reads.is_some() {
                proptest::prop_assert_eq!(direct, chrono_reads, "{}", text);
            }
            // And the public parser reads the same instant either way.
            if let Some(t) = chrono_reads {
                proptest::prop_assert_eq!(parse_timestamp_str(&text).ok(), Some(without_leap_second(t)));
            }
        }

        /// Bytes changed anywhere in a common-form text never make the direct reading accept
        /// something chrono reads otherwise.
        #[test]
        fn a_damaged_rfc3339_text_is_never_misread(
            at in 0usize..30,
            byte in proptest::num::u8::ANY,
            base in proptest::sample::select(vec![
                "2026-11-01T10:00:00Z", "2026-11-01T10:00:00.123456Z",
                "2024-02-29T23:59:59.9-03:00", "1999-12-31T00:00:00+14:00",
            ]),
        ) {
            let mut bytes = base.as_bytes().to_vec();
            if at < bytes.len() {
                bytes[at] = byte;
            } else {
                bytes.push(byte);
            }
            if let Some(t) = parse_rfc3339_common(&bytes) {
                let text = std::str::from_utf8(&bytes).expect("only ASCII is accepted");
                let chrono_reads = DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc));
                proptest::prop_assert_eq!(Some(t), chrono_reads, "{}", text);
            }
        }
    }

    #[test]
    fn durations_as_analysts_type_them() {
        assert_eq!(parse_duration("30s"), Ok(30));
        assert_eq!(parse_duration(" 5m "), Ok(300));
        assert_eq!(parse_duration("1h"), Ok(3_600));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert_eq!(parse_duration("1w"), Ok(604_800));
        for bad in [
            "",
            "h",
            "1",
            "0m",
            "-1h",
            "1.5h",
            "1 h",
            "1y",
            "99999999999999999999s",
            "1000000w",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert_eq!(e, DurationError(bad.to_string()), "{bad}");
            assert!(e.to_string().contains("30s, 5m, 1h"), "{e}");
            assert_eq!(parse_time_delta(bad), Err(e));
        }
        assert_eq!(parse_time_delta("15m"), Ok(chrono::TimeDelta::minutes(15)));
        // The longest one taken still adds to now without overflow.
        let longest = parse_time_delta("52000w").unwrap();
        assert!(Utc::now().checked_add_signed(longest).is_some());
    }

    fn rfc(v: crate::RawJson) -> String {
        parse_timestamp(&v)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    #[test]
    fn vendor_formats_parse_to_utc() {
        assert_eq!(
            rfc(json!("2021-06-24T00:04:08.123Z")),
            "2021-06-24T00:04:08.123Z"
        );
        assert_eq!(
            rfc(json!("2023-03-15T16:33:50-03:00")),
            "2023-03-15T19:33:50.000Z"
        );
        assert_eq!(rfc(json!(1625045793351i64)), "2021-06-30T09:36:33.351Z");
        assert_eq!(rfc(json!(1521214344)), "2018-03-16T15:32:24.000Z");
        assert_eq!(rfc(json!("1521214344")), "2018-03-16T15:32:24.000Z");
        assert_eq!(rfc(json!(1521214344.5)), "2018-03-16T15:32:24.500Z");
        assert_eq!(
            rfc(json!("2021-06-24 00:04:08")),
            "2021-06-24T00:04:08.000Z"
        );
        assert_eq!(
            rfc(json!("2021-06-24T00:04:08+0000")),
            "2021-06-24T00:04:08.000Z"
        );
        assert_eq!(rfc(json!(1625045793351000i64)), "2021-06-30T09:36:33.351Z");
        assert_eq!(
            rfc(json!("2026-11-24T08:15:02")),
            "2026-11-24T08:15:02.000Z"
        );
        assert_eq!(
            rfc(json!("2021-04-03T14:05:39.950458")),
            "2021-04-03T14:05:39.950Z"
        );
        assert_eq!(
            rfc(json!("2025-11-12T16:28:36.943+0000")),
            "2025-11-12T16:28:36.943Z"
        );
        assert_eq!(
            rfc(json!("2025-11-12T16:28:36.943+0130")),
            "2025-11-12T14:58:36.943Z"
        );
        assert_eq!(
            rfc(json!("2019-01-01T12:00:00.00")),
            "2019-01-01T12:00:00.000Z"
        );
    }

    #[test]
    fn a_leap_second_is_the_next_minute() {
        for (text, want) in [
            ("2026-12-04T10:00:60Z", "2026-12-04T10:01:00.000Z"),
            ("2026-12-31T23:59:60.5Z", "2027-01-01T00:00:00.500Z"),
            ("2026-12-04 10:00:60", "2026-12-04T10:01:00.000Z"),
            ("2026-12-04T10:00:60+01:00", "2026-12-04T09:01:00.000Z"),
        ] {
            assert_eq!(rfc(json!(text)), want, "{text}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for v in [
            json!("yesterday"),
            json!(""),
            json!(null),
            json!(true),
            json!("9999999999999999999999"),
        ] {
            assert!(parse_timestamp(&v).is_err(), "{v}");
        }
    }

    #[test]
    fn time_bounds_read_dates_and_relative_times() {
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
        let at = |s: &str| parse_time_bound(s, now).unwrap().to_rfc3339();
        assert_eq!(at("2026-12-01"), "2026-12-01T00:00:00+00:00");
        assert_eq!(at("2026-12-01T10:30:00+02:00"), "2026-12-01T08:30:00+00:00");
        assert_eq!(at("now"), "2026-12-02T12:00:00+00:00");
        assert_eq!(at("now-15m"), "2026-12-02T11:45:00+00:00");
        // A compact date is the date, not an epoch second of 1970; eight digits that are no
        // date are refused.
        assert_eq!(at("20261125"), "2026-11-25T00:00:00+00:00");
        let now = chrono::Utc::now();
        assert!(parse_time_bound("20261345", now).is_err());
        assert!(parse_time_bound("00000001", now).is_err());
        assert_eq!(at(" now - 24h "), "2026-12-01T12:00:00+00:00");
        assert_eq!(at("now-7d"), "2026-11-25T12:00:00+00:00");
        assert_eq!(at("now-2w"), "2026-11-18T12:00:00+00:00");
        assert_eq!(at("now+30s"), "2026-12-02T12:00:30+00:00");
        for bad in [
            "yesterday",
            "now-",
            "now-5",
            "now-5y",
            "now*5m",
            "now-m",
            "2026-13-01",
            "",
            "nowish",
        ] {
            let e = parse_time_bound(bad, now).unwrap_err();
            assert!(
                matches!(&e, TimeBoundError::Unrecognised(s) if s == bad),
                "{bad}: {e}"
            );
            assert!(e.to_string().contains("now-15m"), "{e}");
        }
        assert!(matches!(
            parse_time_bound("now-99999999999999w", now),
            Err(TimeBoundError::OutOfRange(_))
        ));
    }
}
