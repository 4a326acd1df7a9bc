//! One module per resource. Handlers authenticate (the [`crate::auth::Auth`] extractor),
//! check the role, validate parameters into store queries, audit, and answer JSON.

pub mod admin;
pub mod alerts;
pub mod destinations;
pub mod events;
pub mod health;
pub mod rules;
pub mod sources;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest accepted `limit`; larger asks are refused (400), not silently capped.
pub const MAX_LIMIT: usize = 1000;

// The schema of the severity parameters and fields; the handlers read them with
// `perimeter_model::Severity::parse` (query) or its serde names (bodies).
/// An alert severity, lowest first.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SeverityName {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

/// A page of results; pass `next_cursor` back as `cursor` for the next page.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemsPage {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Value>,
    /// Null on the last page.
    pub next_cursor: Option<String>,
}

/// `limit` validated against [`MAX_LIMIT`].
pub(crate) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    limit_within("limit", limit, DEFAULT_LIMIT, MAX_LIMIT)
}

/// A count parameter called `name`: `default` when absent, refused when 0 or above `max`.
pub(crate) fn limit_within(
    name: &str,
    limit: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match limit {
        None => Ok(default),
        Some(0) => Err(ApiError::invalid_parameter(format!(
            "`{name}` must be at least 1"
        ))),
        Some(n) if n > max => Err(ApiError::bad_request(
            "limit_too_large",
            format!("`{name}` must be at most {max}, got {n}"),
        )),
        Some(n) => Ok(n),
    }
}

/// A time parameter, with the parameter's name in the error: RFC 3339
/// (`2024-05-01T10:00:00Z`), a date (`2024-05-01`, midnight UTC) or relative to now
/// (`now-24h`), as [`perimeter_model::parse_time_bound`] reads them.
pub(crate) fn parse_time(
    name: &str,
    value: Option<&str>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    perimeter_model::parse_time_bound(value, Utc::now())
        .map(Some)
        .map_err(|e| ApiError::invalid_parameter(format!("`{name}`: {e}")))
}

/// Optional lower and upper time bounds.
pub(crate) type TimeRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// `from`/`to` parsed and checked for order.
pub(crate) fn time_range(from: Option<&str>, to: Option<&str>) -> Result<TimeRange, ApiError> {
    let from = parse_time("from", from)?;
    let to = parse_time("to", to)?;
    // `to` is exclusive: `from == to` is an empty range, refused like a reversed one (and
    // the same way by every endpoint).
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(ApiError::invalid_parameter("`from` must be before `to`"));
        }
    }
    Ok((from, to))
}

/// A bounded free-text parameter (ids, names, queries): refuse absurd sizes early.
pub(crate) fn bounded<'a>(name: &str, value: &'a str, max_len: usize) -> Result<&'a str, ApiError> {
    if value.len() > max_len {
        return Err(ApiError::invalid_parameter(format!(
            "`{name}` is longer than {max_len} bytes"
        )));
    }
    Ok(value)
}

/// An optional text filter of a list, at most `max_len` bytes. An empty value is no filter, as
/// on every list (QA: `/audit?action=` from a script's unset variable answered an empty audit
/// log, which reads as "nobody did anything", while `/alerts` ignored the same).
pub(crate) fn filter_text(
    name: &str,
    value: &Option<String>,
    max_len: usize,
) -> Result<Option<String>, ApiError> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(|v| bounded(name, v, max_len).map(str::to_string))
        .transpose()
}

/// Run blocking store IO off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("store task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(page_limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(page_limit(Some(1000)).unwrap(), 1000);
        assert_eq!(
            page_limit(Some(1001)).unwrap_err().code(),
            "limit_too_large"
        );
        assert_eq!(page_limit(Some(0)).unwrap_err().code(), "invalid_parameter");
    }

    #[test]
    fn times() {
        assert_eq!(
            parse_time("to", Some("2024-05-01T12:00:00+02:00")).unwrap(),
            parse_time("from", Some("2024-05-01T10:00:00Z")).unwrap(),
            "offsets are normalized to UTC"
        );
        // `to` is exclusive: the same instant twice is an empty range.
        let e = time_range(
            Some("2024-05-01T10:00:00Z"),
            Some("2024-05-01T12:00:00+02:00"),
        )
        .unwrap_err();
        assert_eq!(e.code(), "invalid_parameter");
        assert!(parse_time("from", Some("yesterday")).is_err());
        assert!(parse_time("from", Some("2024-13-01T00:00:00Z")).is_err());
        assert!(time_range(Some("2024-05-02T00:00:00Z"), Some("2024-05-01T00:00:00Z")).is_err());
        // Dates and times relative to now, as analysts type them.
        let (f, t) = time_range(Some("2024-05-01"), Some("now-1h")).unwrap();
        assert_eq!(f.unwrap().to_rfc3339(), "2024-05-01T00:00:00+00:00");
        let age = Utc::now() - t.unwrap();
        assert!(age >= chrono::TimeDelta::hours(1) && age < chrono::TimeDelta::hours(2));
        assert!(time_range(Some("now"), Some("now-1h")).is_err());
        let e = parse_time("to", Some("now-3y")).unwrap_err();
        assert_eq!(e.code(), "invalid_parameter");
    }
}
