//! Times in `@timestamp` terms and ranges, written as an analyst writes them.
//!
//! The `from`/`to` parameters take RFC 3339, a date or a time relative to now
//! ([`parse_time_bound`]), but inside a query tantivy took RFC 3339 only:
//! `@timestamp:>2026-11-24` and `@timestamp:[now-1h TO now]` were refused with "The date field
//! has an invalid format". Each bound is read the way the parameters read it and handed on as
//! RFC 3339. A date alone stands for its whole day (UTC), as in Elasticsearch's date math:
//! - `@timestamp:2026-11-24` is that day, `[2026-11-24T00:00Z, 2026-11-25T00:00Z)`;
//! - `>2026-11-24` starts after that day, `<=2026-11-24` and `[.. TO 2026-11-24]` end with it;
//! - `>=2026-11-24` and `<2026-11-24` start and end at its midnight;
//! - one instant, `@timestamp:"2026-11-24T10:00:00Z"`, is the range of that instant alone (the
//!   field is a fast field, which tantivy searches by range only: the term was refused);
//! - instants are cut to the microsecond, the precision the field is stored at (an event's
//!   receive time has nanoseconds, and copied into a query it found nothing).

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use perimeter_model::parse_time_bound;
use tantivy::query_grammar::{UserInputAst, UserInputBound, UserInputLeaf};

use crate::catch_all::try_map_leaves;
use crate::tantivy_sink::TIMESTAMP_FIELD;

/// `field:>="value"` as `field:>=value`: tantivy's grammar takes no quotes after a comparison,
/// yet times are quoted elsewhere (`@timestamp:"2026-11-24T10:00:00Z"`), so analysts quote
/// them here too. Only a quoted value without spaces or quotes inside is unquoted.
pub(crate) fn unquote_comparisons(query: &str) -> String {
    static QUOTED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"(:\s*(?:>=|<=|>|<))"([^"\s\\]+)""#).expect("a valid pattern")
    });
    // The bounds of a range too: `["2026-11-24" TO "2026-11-25"]`.
    static RANGE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"([\[{]\s*)"([^"\s\\]+)"(\s+TO\s+)"([^"\s\\]+)"(\s*[\]}])"#)
            .expect("a valid pattern")
    });
    let compared = QUOTED.replace_all(query, "${1}${2}");
    RANGE
        .replace_all(&compared, "${1}${2}${3}${4}${5}")
        .into_owned()
}

/// `@timestamp:2026-11-24T14:13:31Z` as `@timestamp:"2026-11-24T14:13:31Z"`: the colons of a
/// time are query syntax, so pasted unquoted (from an alert, an event) it was a bare syntax
/// error. Only a term that is a whole date-time is quoted.
pub(crate) fn quote_bare_instants(query: &str) -> String {
    static BARE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"(^|[\s(+-])(@timestamp:)(\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:?\d\d)?)(\s|\)|$)",
        )
        .expect("a valid pattern")
    });
    // A match takes the space after its time, which the next one starts with: terms side by side
    // take more than one pass (a quoted time matches no more).
    let mut text = query.to_string();
    loop {
        let quoted = BARE.replace_all(&text, "${1}${2}\"${3}\"${4}");
        if quoted == text {
            return text;
        }
        text = quoted.into_owned();
    }
}

/// Rewrite every `@timestamp` literal and range bound into RFC 3339; `Err` says which value is
/// no time. `now` anchors relative times (`now-15m`).
pub(crate) fn rewrite_times(ast: UserInputAst, now: DateTime<Utc>) -> Result<UserInputAst, String> {
    try_map_leaves(ast, &|leaf| rewrite_leaf(leaf, now))
}

fn is_time_field(field: &Option<String>) -> bool {
    field.as_deref() == Some(TIMESTAMP_FIELD)
}

/// A bound as typed: a whole day, or an instant.
enum Time {
    Day(NaiveDate),
    Instant(DateTime<Utc>),
}

fn read(text: &str, now: DateTime<Utc>) -> Result<Time, String> {
    let t = text.trim();
    if let Ok(day) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        // The last representable day has no next midnight to end at.
        if day.succ_opt().is_none() {
            return Err(format!(
                "`{TIMESTAMP_FIELD}`: `{t}` reaches outside the representable time range"
            ));
        }
        return Ok(Time::Day(day));
    }
    parse_time_bound(t, now)
        .map(Time::Instant)
        .map_err(|e| format!("`{TIMESTAMP_FIELD}`: {e}"))
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// Midnight after `day`; [`read`] refuses the one day without one.
fn next_midnight(day: NaiveDate) -> DateTime<Utc> {
    midnight(day.succ_opt().unwrap_or(day))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn rewrite_leaf(leaf: UserInputLeaf, now: DateTime<Utc>) -> Result<UserInputLeaf, String> {
    match leaf {
        UserInputLeaf::Literal(lit) if is_time_field(&lit.field_name) => {
            Ok(match read(&lit.phrase, now)? {
                Time::Day(day) => UserInputLeaf::Range {
                    field: lit.field_name,
                    lower: UserInputBound::Inclusive(rfc3339(midnight(day))),
                    upper: UserInputBound::Exclusive(rfc3339(next_midnight(day))),
                },
                // The field is a fast field, not indexed for terms: one instant is a range too.
                Time::Instant(t) => {
                    let t = stored_precision(t);
                    UserInputLeaf::Range {
                        field: lit.field_name,
                        lower: UserInputBound::Inclusive(rfc3339(t)),
                        upper: UserInputBound::Inclusive(rfc3339(t)),
                    }
                }
            })
        }
        UserInputLeaf::Range {
            field,
            lower,
            upper,
        } if is_time_field(&field) => Ok(UserInputLeaf::Range {
            field,
            // From a day on, or after it: from its midnight, or from the next one.
            lower: bound(lower, now, |day, inclusive| {
                UserInputBound::Inclusive(rfc3339(if inclusive {
                    midnight(day)
                } else {
                    next_midnight(day)
                }))
            })?,
            // Up to and including a day, or up to it: before the next midnight, or its own.
            upper: bound(upper, now, |day, inclusive| {
                UserInputBound::Exclusive(rfc3339(if inclusive {
                    next_midnight(day)
                } else {
                    midnight(day)
                }))
            })?,
        }),
        other => Ok(other),
    }
}

/// One range bound read as a time: a day becomes `day(date, inclusive)`, an instant keeps its
/// side of the bound.
fn bound(
    b: UserInputBound,
    now: DateTime<Utc>,
    day: fn(NaiveDate, bool) -> UserInputBound,
) -> Result<UserInputBound, String> {
    let (text, inclusive) = match b {
        UserInputBound::Unbounded => return Ok(UserInputBound::Unbounded),
        UserInputBound::Inclusive(t) => (t, true),
        UserInputBound::Exclusive(t) => (t, false),
    };
    Ok(match read(&text, now)? {
        Time::Day(d) => day(d, inclusive),
        // Finer than the index keeps: which side of it a stored microsecond lies on is not
        // known, so that microsecond is in.
        Time::Instant(t) if t != stored_precision(t) => {
            UserInputBound::Inclusive(rfc3339(stored_precision(t)))
        }
        Time::Instant(t) if inclusive => UserInputBound::Inclusive(rfc3339(t)),
        Time::Instant(t) => UserInputBound::Exclusive(rfc3339(t)),
    })
}

/// `t` cut to whole microseconds, the precision `@timestamp` is indexed at: an event's own time
/// copied from its document (receive times have nanoseconds) must find it.
fn stored_precision(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::query_grammar::parse_query;

    fn now() -> DateTime<Utc> {
        "2026-12-02T12:00:00Z".parse().unwrap()
    }

    /// The rewritten query, printed in the grammar's debug form.
    fn rewritten(q: &str) -> String {
        format!(
            "{:?}",
            rewrite_times(parse_query(q).unwrap(), now()).unwrap()
        )
    }

    #[test]
    fn an_unquoted_instant_is_read_as_the_quoted_one() {
        for (bare, quoted) in [
            (
                "@timestamp:2026-11-24T14:13:31Z",
                "@timestamp:\"2026-11-24T14:13:31Z\"",
            ),
            (
                "okta AND (@timestamp:2026-11-24T14:13:31.5+01:00) -x",
                "okta AND (@timestamp:\"2026-11-24T14:13:31.5+01:00\") -x",
            ),
            (
                "@timestamp:2026-11-24T14:13:31Z @timestamp:2026-11-24T14:13:32Z",
                "@timestamp:\"2026-11-24T14:13:31Z\" @timestamp:\"2026-11-24T14:13:32Z\"",
            ),
            (
                "-@timestamp:2026-11-24T14:13:00Z",
                "-@timestamp:\"2026-11-24T14:13:00Z\"",
            ),
        ] {
            assert_eq!(quote_bare_instants(bare), quoted);
            assert_eq!(rewritten(&quote_bare_instants(bare)), rewritten(quoted));
        }
        // Dates, quoted times, comparisons and ranges are left as they are.
        for kept in [
            "@timestamp:2026-11-24",
            "@timestamp:\"2026-11-24T14:13:31Z\"",
            "@timestamp:>=2026-11-24T14:13:31Z",
            "@timestamp:[2026-11-24T14:13:31Z TO now]",
            "x@timestamp:2026-11-24T14:13:31Z",
        ] {
            assert_eq!(quote_bare_instants(kept), kept);
        }
    }

    #[test]
    fn instants_finer_than_a_microsecond_are_cut_to_the_stored_one() {
        assert_eq!(
            rewritten("@timestamp:\"2026-11-24T10:00:00.123456789Z\""),
            "\"@timestamp\":[\"2026-11-24T10:00:00.123456Z\" TO \"2026-11-24T10:00:00.123456Z\"]"
        );
        // Either side of a bound inside a microsecond takes that microsecond in.
        assert_eq!(
            rewritten(
                "@timestamp:{2026-11-24T10:00:00.123456789Z TO 2026-11-24T11:00:00.000000500Z}"
            ),
            "\"@timestamp\":[\"2026-11-24T10:00:00.123456Z\" TO \"2026-11-24T11:00:00Z\"]"
        );
        assert_eq!(
            rewritten("@timestamp:<2026-11-24T10:00:00.123456Z"),
            "\"@timestamp\":{\"*\" TO \"2026-11-24T10:00:00.123456Z\"}"
        );
    }

    #[test]
    fn days_stand_for_their_whole_day() {
        assert_eq!(
            rewritten("@timestamp:2026-11-24"),
            "\"@timestamp\":[\"2026-11-24T00:00:00Z\" TO \"2026-11-25T00:00:00Z\"}"
        );
        assert_eq!(
            rewritten("@timestamp:>2026-11-24"),
            "\"@timestamp\":[\"2026-11-25T00:00:00Z\" TO \"*\"}"
        );
        assert_eq!(
            rewritten("@timestamp:>=2026-11-24"),
            "\"@timestamp\":[\"2026-11-24T00:00:00Z\" TO \"*\"}"
        );
        assert_eq!(
            rewritten("@timestamp:<2026-11-24"),
            "\"@timestamp\":{\"*\" TO \"2026-11-24T00:00:00Z\"}"
        );
        assert_eq!(
            rewritten("@timestamp:[2026-11-24 TO 2026-11-25]"),
            "\"@timestamp\":[\"2026-11-24T00:00:00Z\" TO \"2026-11-26T00:00:00Z\"}"
        );
    }

    #[test]
    fn relative_times_and_other_spellings_become_rfc3339() {
        assert_eq!(
            rewritten("@timestamp:[now-1h TO now]"),
            "\"@timestamp\":[\"2026-12-02T11:00:00Z\" TO \"2026-12-02T12:00:00Z\"]"
        );
        assert_eq!(
            rewritten("@timestamp:>1764669600000"),
            "\"@timestamp\":{\"2025-12-02T10:00:00Z\" TO \"*\"}"
        );
        assert_eq!(
            rewritten("@timestamp:\"2026-11-24T10:00:00.5+01:00\""),
            "\"@timestamp\":[\"2026-11-24T09:00:00.500Z\" TO \"2026-11-24T09:00:00.500Z\"]"
        );
        // Other fields are left alone.
        assert_eq!(
            rewritten("event.action:2026-11-24"),
            format!("{:?}", parse_query("event.action:2026-11-24").unwrap())
        );
    }

    #[test]
    fn values_that_are_no_time_say_what_is_accepted() {
        let e = rewrite_times(parse_query("@timestamp:>yesterday").unwrap(), now()).unwrap_err();
        assert!(e.contains("`yesterday` is not a time"), "{e}");
        assert!(e.contains("now-15m"), "{e}");
        // The ends of the calendar are errors, not a panic.
        let last = NaiveDate::MAX.format("%Y-%m-%d").to_string();
        for q in [
            format!("@timestamp:{last}"),
            format!("@timestamp:[* TO {last}]"),
            "@timestamp:>now-99999999999w".to_string(),
        ] {
            let ast = parse_query(&q).unwrap_or_else(|_| panic!("{q} parses"));
            assert!(rewrite_times(ast, now()).is_err(), "{q}");
        }
    }
}
