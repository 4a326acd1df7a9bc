//! `/events`: full-text search over the tenant's masked events, and dead letters.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use perimeter_store::{EventQuery, EventSort, ExportFormat, ExportSummary};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::{
    blocking, bounded, limit_within, page_limit, time_range, ItemsPage, TimeRange, MAX_LIMIT,
};
use crate::auth::{AdminRole, Auth};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery, NoParams};
use crate::state::AppState;

const MAX_QUERY_BYTES: usize = 4096;
const MAX_ID_BYTES: usize = 512;

/// The query text (`*` when absent or blank) and time range shared by search and export.
fn event_filter<'a>(
    q: &'a Option<String>,
    from: &Option<String>,
    to: &Option<String>,
) -> Result<(&'a str, TimeRange), ApiError> {
    let range = time_range(from.as_deref(), to.as_deref())?;
    let text = q
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .unwrap_or("*");
    bounded("q", text, MAX_QUERY_BYTES)?;
    Ok((text, range))
}

/// Parameters of `GET /events/search`. Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventSearchParams {
    /// tantivy query syntax over the masked events (`user.name:alice AND event.outcome:failure`,
    /// `NOT`, wildcards `dan*` / `user.session.*`, IPv4 ranges and CIDR blocks on `source.ip`/`related.ip`:
    /// `source.ip:192.0.2.0/24`; times on `@timestamp` written as for `from`, a date alone
    /// being its whole day: `@timestamp:2024-05-01`, `@timestamp:[now-2h TO now-1h]`);
    /// absent means all events. Bare words match ECS values and raw record values, except the
    /// raw values of sources in the store's `raw_text_search_off`.
    pub q: Option<String>,
    /// Events at or after this time: RFC 3339, a date (`2024-05-01`, UTC) or relative (`now-24h`).
    pub from: Option<String>,
    /// Events before this time (exclusive): RFC 3339, a date or relative (`now-1h`).
    pub to: Option<String>,
    /// Page size, 1..=1000 (default 50).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `newest` first (default) or `oldest` first (a timeline).
    #[param(inline, value_type = Option<EventSortName>)]
    pub sort: Option<String>,
}

// The schema of `sort`; `EventSort`'s `FromStr` reads it.
/// The order of the event endpoints.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventSortName {
    Newest,
    Oldest,
}

/// `sort` of the event endpoints: `newest` (default) or `oldest`.
fn parse_event_sort(sort: Option<&str>) -> Result<EventSort, ApiError> {
    sort.map_or(Ok(EventSort::Newest), str::parse)
        .map_err(ApiError::invalid_parameter)
}

/// Search events.
#[utoipa::path(get, path = "/events/search", tag = "events", params(EventSearchParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of events (newest first, or oldest with `sort=oldest`)", body = ItemsPage),
        (status = 400, description = "Bad query syntax or parameter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub async fn search_events(
    State(state): State<AppState>,
    auth: Auth,
    params: Result<ApiQuery<EventSearchParams>, ApiError>,
) -> Result<Json<ItemsPage>, ApiError> {
    let mut details = json!({});
    let result = async {
        let ApiQuery(params) = params?;
        details =
            json!({"q": params.q, "from": params.from, "to": params.to, "limit": params.limit});
        search(&state, &auth, params, &mut details).await
    }
    .await;
    state.audit_result(&auth.0, "events.search", None, details, result)
}

async fn search(
    state: &AppState,
    auth: &Auth,
    params: EventSearchParams,
    details: &mut serde_json::Value,
) -> Result<Json<ItemsPage>, ApiError> {
    let (query_text, (from, to)) = event_filter(&params.q, &params.from, &params.to)?;
    let cursor = super::filter_text("cursor", &params.cursor, MAX_QUERY_BYTES)?;
    let sort = parse_event_sort(params.sort.as_deref())?;
    let query = EventQuery {
        query: query_text.to_string(),
        from,
        to,
        limit: page_limit(params.limit)?,
        cursor,
        sort,
    };
    *details = json!({"q": query_text, "from": params.from, "to": params.to, "limit": query.limit});
    let store = state.store.clone();
    let tenant = auth.tenant().to_string();
    let page = blocking(move || store.search_events(&tenant, &query)).await??;
    Ok(Json(ItemsPage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// Parameters of `GET /events/histogram`. Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventHistogramParams {
    /// The search whose events are counted, as `q` of `GET /events/search`; absent means all
    /// events.
    pub q: Option<String>,
    /// Count events at or after this time (the first bucket holds it): RFC 3339, a date or
    /// relative (`now-24h`). Absent: from the oldest event the search matches.
    pub from: Option<String>,
    /// Count events before this time (exclusive). Absent: up to the newest event the search
    /// matches.
    pub to: Option<String>,
    /// Bucket width: a whole number and a unit, `s`, `m`, `h`, `d` or `w` (`30s`, `5m`, `1h`,
    /// `1d`). Absent: the smallest of 1s, 5s, 10s, 30s, 1m, 5m, 10m, 30m, 1h, 3h, 6h, 12h, 1d,
    /// 1w giving at most 100 buckets. At most 1000 buckets either way.
    pub interval: Option<String>,
}

/// How many events a search matches per interval of time, with the total.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventHistogramBody {
    /// Matching events in the time range.
    pub total: u64,
    /// The bucket width in seconds.
    pub interval_seconds: i64,
    /// Consecutive buckets, oldest first, empty ones included. Buckets start at multiples of
    /// the interval since the Unix epoch (hours on the hour, days at midnight UTC). Without
    /// `from` (`to`), they start (end) with the first (last) bucket holding an event.
    pub buckets: Vec<HistogramBucketBody>,
}

/// One bucket of [`EventHistogramBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct HistogramBucketBody {
    /// Start of the interval, RFC 3339 UTC (inclusive).
    pub start: String,
    /// Matching events in `[start, start + interval)`.
    pub count: u64,
}

/// Count the events a search matches, interval by interval: when something started, whether
/// it goes on. Only the time column of matching events is read.
#[utoipa::path(get, path = "/events/histogram", tag = "events", params(EventHistogramParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Matching events per interval", body = EventHistogramBody),
        (status = 400, description = "Bad query syntax, time, interval, or more than 1000 buckets", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub async fn event_histogram(
    State(state): State<AppState>,
    auth: Auth,
    params: Result<ApiQuery<EventHistogramParams>, ApiError>,
) -> Result<Json<EventHistogramBody>, ApiError> {
    let mut details = json!({});
    let result = async {
        let ApiQuery(params) = params?;
        details = json!({"q": params.q, "from": params.from, "to": params.to, "interval": params.interval});
        event_histogram_audited(&state, &auth, params, &mut details).await
    }
    .await;
    state.audit_result(&auth.0, "events.histogram", None, details, result)
}

async fn event_histogram_audited(
    state: &AppState,
    auth: &Auth,
    params: EventHistogramParams,
    details: &mut serde_json::Value,
) -> Result<Json<EventHistogramBody>, ApiError> {
    let (query_text, (from, to)) = event_filter(&params.q, &params.from, &params.to)?;
    let interval_seconds = params
        .interval
        .as_deref()
        .map(|i| {
            perimeter_model::parse_duration(i)
                .map_err(|e| ApiError::invalid_parameter(format!("`interval`: {e}")))
        })
        .transpose()?;
    let query = perimeter_store::EventHistogramQuery {
        query: query_text.to_string(),
        from,
        to,
        interval_seconds,
    };
    *details =
        json!({"q": query_text, "from": params.from, "to": params.to, "interval": params.interval});
    let store = state.store.clone();
    let tenant = auth.tenant().to_string();
    let histogram = blocking(move || store.event_histogram(&tenant, &query)).await??;
    Ok(Json(EventHistogramBody {
        total: histogram.total,
        interval_seconds: histogram.interval_seconds,
        buckets: histogram
            .buckets
            .into_iter()
            .map(|b| HistogramBucketBody {
                start: b.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                count: b.count,
            })
            .collect(),
    }))
}

/// Parameters of `GET /events/top`. Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventTopValuesParams {
    /// The ECS field whose values are counted: `event.module`, a field indexed whole
    /// (`event.action`, `event.outcome`, `event.category`, `event.type`, `source.ip`,
    /// `source.geo.country_iso_code`, `organization.id`, `cloud.account.id`, `related.ip`) or one
    /// indexed as words (`user.name`, `user.email`, `user.id`, `user.target.name`,
    /// `user.target.email`, `user.target.id`, `user_agent.original`, `related.user`).
    pub field: String,
    /// The search whose events are counted, as `q` of `GET /events/search`; absent means all
    /// events.
    pub q: Option<String>,
    /// Count events at or after this time: RFC 3339, a date or relative (`now-24h`).
    pub from: Option<String>,
    /// Count events before this time (exclusive).
    pub to: Option<String>,
    /// Values listed, most frequent first (default 10, at most 100).
    pub limit: Option<usize>,
    /// Matches read from stored events at most (default 10000, at most 100000). More matches
    /// than this are counted exactly on fields indexed whole; on fields indexed as words, the
    /// newest `sample` matches are counted and the answer says `exact: false`.
    pub sample: Option<usize>,
}

/// The most frequent values of a field among the events a search matches.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventTopValuesBody {
    pub field: String,
    /// Matching events in the time range.
    pub total: u64,
    /// The events whose values were counted: `total` when `exact`, else the newest `sample`.
    pub counted: u64,
    /// Whether every matching event was counted.
    pub exact: bool,
    /// Most frequent first. Values are grouped without regard to case, as search matches them.
    pub values: Vec<ValueCountBody>,
    /// Occurrences of the values not listed.
    pub other: u64,
    /// Counted events without the field.
    pub missing: u64,
}

/// One value of [`EventTopValuesBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ValueCountBody {
    /// The value as stored (masked like everything stored).
    pub value: String,
    /// Counted events holding it.
    pub count: u64,
}

/// Count the values of one field among the events a search matches: which users, addresses or
/// actions are behind the hits.
#[utoipa::path(get, path = "/events/top", tag = "events", params(EventTopValuesParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The field's most frequent values", body = EventTopValuesBody),
        (status = 400, description = "Bad query syntax, time, field, limit or sample", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub async fn event_top_values(
    State(state): State<AppState>,
    auth: Auth,
    params: Result<ApiQuery<EventTopValuesParams>, ApiError>,
) -> Result<Json<EventTopValuesBody>, ApiError> {
    let mut details = json!({});
    let result = async {
        let ApiQuery(params) = params?;
        details =
            json!({"q": params.q, "from": params.from, "to": params.to, "field": params.field});
        event_top_values_audited(&state, &auth, params, &mut details).await
    }
    .await;
    state.audit_result(&auth.0, "events.top", None, details, result)
}

async fn event_top_values_audited(
    state: &AppState,
    auth: &Auth,
    params: EventTopValuesParams,
    details: &mut serde_json::Value,
) -> Result<Json<EventTopValuesBody>, ApiError> {
    let (query_text, (from, to)) = event_filter(&params.q, &params.from, &params.to)?;
    let field = bounded("field", &params.field, 128)?;
    let limit = limit_within(
        "limit",
        params.limit,
        perimeter_store::DEFAULT_TOP_VALUES,
        perimeter_store::MAX_TOP_VALUES,
    )?;
    let sample = limit_within(
        "sample",
        params.sample,
        perimeter_store::DEFAULT_TOP_SAMPLE,
        perimeter_store::MAX_TOP_SAMPLE,
    )?;
    let query = perimeter_store::TopValuesQuery {
        query: query_text.to_string(),
        from,
        to,
        field: field.to_string(),
        limit,
        sample,
    };
    *details = json!({"q": query_text, "from": params.from, "to": params.to, "field": field});
    let store = state.store.clone();
    let tenant = auth.tenant().to_string();
    let top = blocking(move || store.top_values(&tenant, &query)).await??;
    Ok(Json(EventTopValuesBody {
        field: top.field,
        total: top.total,
        counted: top.counted,
        exact: top.exact,
        values: top
            .values
            .into_iter()
            .map(|v| ValueCountBody {
                value: v.value,
                count: v.count,
            })
            .collect(),
        other: top.other,
        missing: top.missing,
    }))
}

/// One event by id. Another tenant's id answers 404.
#[utoipa::path(get, path = "/events/{id}", tag = "events",
    params(("id" = String, Path, description = "Event id")),
    security(("bearer" = [])),
    responses(
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 200, description = "The stored (masked) event", body = Object),
        (status = 400, description = "A query parameter (none is taken) or an id too long", body = ErrorBody),
        (status = 404, description = "No such event for this tenant", body = ErrorBody),
    ))]
pub async fn get_event(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    no_params: Result<ApiQuery<NoParams>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let result = async {
        no_params?;
        bounded("id", &id, MAX_ID_BYTES)?;
        let store = state.store.clone();
        let tenant = auth.tenant().to_string();
        let lookup_id = id.clone();
        let event = blocking(move || store.get_event(&tenant, &lookup_id)).await??;
        event
            .map(Json)
            .ok_or_else(|| ApiError::NotFound(format!("no event `{id}`")))
    }
    .await;
    state.audit_result(&auth.0, "events.get", Some(&id), json!({}), result)
}

/// Parameters of `GET /events/{id}/context`. Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventContextParams {
    /// `user` (default): the events of the event's user (`user.name`, `user.email`) as actor or
    /// target; `ip`: the events from or about its addresses (`related.ip`).
    #[param(inline, value_type = Option<ContextPivotName>)]
    pub by: Option<String>,
    /// How far before and after the event: a whole number and a unit, `s`, `m`, `h`, `d` or `w`
    /// (default `15m`, at most `30d`).
    pub window: Option<String>,
    /// Events listed at most, oldest first (default 100, at most 1000).
    pub limit: Option<usize>,
}

// The schema of `by`; `perimeter_store::ContextPivot`'s `FromStr` reads it.
/// What `GET /events/{id}/context` pivots on.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContextPivotName {
    User,
    Ip,
}

/// The events around one event: what its user (or its address) did shortly before and after.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventContextBody {
    /// The event asked about, as stored.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
    /// `user` or `ip`.
    pub by: String,
    /// The users or addresses the listed events share with it.
    pub values: Vec<String>,
    /// The window, RFC 3339 UTC: `[from, to)`.
    pub from: String,
    pub to: String,
    /// The search that finds them, for `GET /events/search` (to page on or narrow it).
    pub query: String,
    /// Oldest first, the event itself included.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Value>,
    /// More events matched than `limit`.
    pub more: bool,
}

/// What the user (or address) of one event did shortly before and after it: the first pivot of
/// a triage. Another tenant's event id answers 404.
#[utoipa::path(get, path = "/events/{id}/context", tag = "events",
    params(("id" = String, Path, description = "Event id"), EventContextParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The events around it", body = EventContextBody),
        (status = 400, description = "Bad `by`, `window` or `limit`, or an event without a user (address)", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such event for this tenant", body = ErrorBody),
    ))]
pub async fn event_context(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    params: Result<ApiQuery<EventContextParams>, ApiError>,
) -> Result<Json<EventContextBody>, ApiError> {
    let mut details = json!({});
    let result = async {
        let ApiQuery(params) = params?;
        details = json!({"by": params.by, "window": params.window});
        event_context_audited(&state, &auth, &id, params).await
    }
    .await;
    state.audit_result(&auth.0, "events.context", Some(&id), details, result)
}

async fn event_context_audited(
    state: &AppState,
    auth: &Auth,
    id: &str,
    params: EventContextParams,
) -> Result<Json<EventContextBody>, ApiError> {
    let id = id.to_string();
    bounded("id", &id, MAX_ID_BYTES)?;
    let by: perimeter_store::ContextPivot = params
        .by
        .as_deref()
        .unwrap_or("user")
        .parse()
        .map_err(|e| ApiError::invalid_parameter(format!("`by`: {e}")))?;
    let window = params.window.as_deref().unwrap_or("15m");
    let window = perimeter_model::parse_time_delta(window)
        .map_err(|e| ApiError::invalid_parameter(format!("`window`: {e}")))?;
    if window > chrono::TimeDelta::days(perimeter_store::MAX_CONTEXT_WINDOW_DAYS) {
        return Err(ApiError::invalid_parameter(format!(
            "`window`: at most {}d",
            perimeter_store::MAX_CONTEXT_WINDOW_DAYS
        )));
    }
    let limit = limit_within(
        "limit",
        params.limit,
        100,
        perimeter_store::MAX_CONTEXT_EVENTS,
    )?;
    let store = state.store.clone();
    let tenant = auth.tenant().to_string();
    let lookup_id = id.clone();
    let context =
        blocking(move || store.event_context(&tenant, &lookup_id, by, window, limit)).await??;
    let context = context.ok_or_else(|| ApiError::NotFound(format!("no event `{id}`")))?;
    let time =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    Ok(Json(EventContextBody {
        event: context.event,
        by: context.by.as_str().into(),
        values: context.values,
        from: time(context.from),
        to: time(context.to),
        query: context.query,
        items: context.items,
        more: context.more,
    }))
}

pub use perimeter_store::{DEFAULT_EXPORT_EVENTS, MAX_EXPORT_EVENTS};

/// Parameters of `GET /events/export`. Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventExportParams {
    /// tantivy query syntax, as for `/events/search`; absent means all events.
    pub q: Option<String>,
    /// Events at or after this time: RFC 3339, a date (`2024-05-01`, UTC) or relative (`now-24h`).
    pub from: Option<String>,
    /// Events before this time (exclusive): RFC 3339, a date or relative (`now-1h`).
    pub to: Option<String>,
    /// Most events to export, 1..=10 000 000 (default 100 000); the newest ones are kept
    /// (the oldest with `sort=oldest`).
    pub max_events: Option<usize>,
    /// `jsonl` (default: every stored event document whole), `csv` (one row per event with
    /// the main ECS columns, for a spreadsheet; cells are guarded against formula injection) or
    /// `parquet` (one file with the columns of the store's Parquet files plus `tenant` and
    /// `source`, for DuckDB, pyarrow or pandas).
    #[param(inline, value_type = Option<ExportFormatName>)]
    pub format: Option<String>,
    /// `newest` first (default) or `oldest` first.
    #[param(inline, value_type = Option<EventSortName>)]
    pub sort: Option<String>,
}

// The schema of `format`; `export_events_audited` reads it.
/// The file format of `GET /events/export`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormatName {
    Jsonl,
    Csv,
    Parquet,
}

/// A file's bytes (the Parquet export), as the OpenAPI document describes it: binary, not a
/// JSON array of numbers.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct BinaryFile(Vec<u8>);

/// Export headers: how many events the search matched, how many the file holds (at most
/// `max_events`), and whether it holds fewer than matched.
const EXPORT_MATCHED: header::HeaderName = header::HeaderName::from_static("x-perimeter-matched");
const EXPORT_EVENTS: header::HeaderName = header::HeaderName::from_static("x-perimeter-exported");
const EXPORT_TRUNCATED: header::HeaderName =
    header::HeaderName::from_static("x-perimeter-truncated");

/// Export the masked events a query matches, newest first, as JSON lines (one stored event
/// document per line), CSV or Parquet. The body streams page by page (a Parquet file row group
/// by row group, its footer last), so exports far larger than a search page
/// need neither server memory nor paging by the client. Bad parameters and bad query syntax are
/// refused before the first byte; a store failure mid-stream cuts the response short (the
/// chunked body does not end cleanly), so a partial export cannot pass for a complete one.
#[utoipa::path(get, path = "/events/export", tag = "events", params(EventExportParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "JSON lines (`application/x-ndjson`), one event per line; CSV (`text/csv`) with `format=csv`; one Parquet file (`application/vnd.apache.parquet`) with `format=parquet`",
            content(
                (String = "application/x-ndjson"),
                (String = "text/csv"),
                (BinaryFile = "application/vnd.apache.parquet"),
            ),
            headers(
                ("x-perimeter-matched" = u64, description = "How many events the query matched"),
                ("x-perimeter-exported" = u64, description = "How many events the file holds"),
                ("x-perimeter-truncated" = bool, description = "Whether `max_events` cut the export short"),
            )),
        (status = 400, description = "Bad query syntax or parameter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
    ))]
pub async fn export_events(
    State(state): State<AppState>,
    auth: Auth<AdminRole>,
    params: Result<ApiQuery<EventExportParams>, ApiError>,
) -> Result<Response, ApiError> {
    let mut details = json!({});
    let result = async {
        let ApiQuery(params) = params?;
        details = json!({"q": params.q, "from": params.from, "to": params.to, "max_events": params.max_events, "sort": params.sort, "format": params.format});
        export_events_audited(&state, &auth, params, &mut details).await
    }
    .await;
    state.audit_result(&auth.0, "events.export", None, details, result)
}

async fn export_events_audited(
    state: &AppState,
    auth: &Auth<AdminRole>,
    params: EventExportParams,
    details: &mut serde_json::Value,
) -> Result<Response, ApiError> {
    let (query_text, (from, to)) = event_filter(&params.q, &params.from, &params.to)?;
    let max_events = limit_within(
        "max_events",
        params.max_events,
        DEFAULT_EXPORT_EVENTS,
        MAX_EXPORT_EVENTS,
    )?;
    let format = match params.format.as_deref() {
        None => ExportFormat::Jsonl,
        Some(name) => name.parse().map_err(ApiError::invalid_parameter)?,
    };
    let query = EventQuery {
        query: query_text.to_string(),
        from,
        to,
        limit: 0,
        cursor: None,
        sort: parse_event_sort(params.sort.as_deref())?,
    };
    // The snapshot, the first page and the count are taken before answering, so bad query
    // syntax is still a 400, and the headers say how many events the body holds: events stored
    // while a long export streams are not in its snapshot.
    let store = state.store.clone();
    let tenant = auth.tenant().to_string();
    let export =
        blocking(move || store.start_export(&tenant, &query, max_events, format)).await??;
    let ExportSummary { matched, exported } = export.summary();
    *details = json!({"q": query_text, "from": params.from, "to": params.to, "max_events": max_events,
               "sort": params.sort.as_deref().unwrap_or("newest"),
               "format": format.as_str(), "matched": matched});

    // The file is written on a blocking thread and streamed as it comes; the channel's bound
    // holds the writer back while the client reads slowly. A client gone ends the writing; a
    // store failure mid-stream ends the body with an error, so the response does not end
    // cleanly and a partial export cannot pass for a complete one.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut send = |bytes: Vec<u8>| {
            tx.blocking_send(Ok(Bytes::from(bytes))).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
            })
        };
        if let Err(e) = export.write(&store, &mut send, &mut |_, _| {}) {
            if !matches!(&e, perimeter_store::StoreError::ExportOutput(_)) {
                tracing::warn!(error = %e, "an export failed while streaming");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let content_type = format.content_type();
    let disposition = format!(
        "attachment; filename=\"perimeter-events.{}\"",
        format.as_str()
    );
    let (matched, exported, truncated) = (
        matched.to_string(),
        exported.to_string(),
        (matched > exported).to_string(),
    );
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition.as_str()),
            (EXPORT_MATCHED, matched.as_str()),
            (EXPORT_EVENTS, exported.as_str()),
            (EXPORT_TRUNCATED, truncated.as_str()),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// Parameters of `GET /dead-letters`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterParams {
    /// How many (newest first), 1..=1000 (default 50).
    pub limit: Option<usize>,
    /// Only this source (case-insensitive: `OKTA` finds `okta`'s).
    pub source: Option<String>,
    /// Only those whose reason or masked excerpt holds this text (case-insensitive).
    pub q: Option<String>,
    /// Received at or after this time: RFC 3339, a date (midnight UTC) or relative (`now-24h`).
    pub from: Option<String>,
    /// Received before this time, written as `from`.
    pub to: Option<String>,
    /// `next_cursor` of the previous page: older dead letters.
    pub cursor: Option<String>,
}

/// Records that could not be processed, with the reason and a masked excerpt.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Value>,
    /// Pass back as `cursor` for older ones; null on the last page.
    pub next_cursor: Option<String>,
}

/// The tenant's dead letters (input that could not be processed), newest first, all of them
/// back to retention a page at a time, filtered by source, text and receive time.
#[utoipa::path(get, path = "/dead-letters", tag = "events", params(DeadLetterParams),
    security(("bearer" = [])),
    responses(
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 200, description = "Dead letters", body = DeadLetterList),
        (status = 400, description = "Bad parameter", body = ErrorBody),
    ))]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    auth: Auth,
    params: Result<ApiQuery<DeadLetterParams>, ApiError>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let mut details = json!({});
    let result = async {
        let ApiQuery(params) = params?;
        details = json!({"limit": params.limit, "source": params.source, "q": params.q, "from": params.from, "to": params.to});
        list_dead_letters_audited(&state, &auth, params, &mut details).await
    }
    .await;
    state.audit_result(&auth.0, "dead_letters.list", None, details, result)
}

async fn list_dead_letters_audited(
    state: &AppState,
    auth: &Auth,
    params: DeadLetterParams,
    details: &mut serde_json::Value,
) -> Result<Json<DeadLetterList>, ApiError> {
    let limit = limit_within("limit", params.limit, super::DEFAULT_LIMIT, MAX_LIMIT)?;
    let (from, to) = time_range(params.from.as_deref(), params.to.as_deref())?;
    let text = |name: &str, v: &Option<String>| super::filter_text(name, v, 1024);
    let query = perimeter_store::DeadLetterQuery {
        limit,
        source: text("source", &params.source)?,
        text: text("q", &params.q)?,
        from,
        to,
        cursor: text("cursor", &params.cursor)?,
    };
    *details = json!({"limit": limit, "source": query.source, "q": query.text, "from": params.from, "to": params.to});
    let store = state.store.clone();
    let tenant = auth.tenant().to_string();
    let page = blocking(move || store.list_dead_letters(&tenant, &query)).await??;
    let items = page
        .items
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Internal(format!("encode dead letter: {e}")))?;
    Ok(Json(DeadLetterList {
        items,
        next_cursor: page.next_cursor,
    }))
}
