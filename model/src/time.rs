//! Timestamp parsing for every vendor format seen in audit-log APIs.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

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
    let s = s.trim();
    if s.is_empty() {
        return Err(TimestampError);
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
}
