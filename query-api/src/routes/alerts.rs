//! `/alerts`: the analyst's queue and the triage workflow.

use axum::extract::State;
use axum::Json;
use perimeter_model::{AlertStatus, Severity};
use perimeter_store::{AlertQuery, AlertSort, AlertUpdate};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::{blocking, bounded, page_limit, time_range, ItemsPage, SeverityName};
use crate::auth::{Auth, ResponderRole};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, NoParams};
use crate::state::AppState;

const MAX_NOTE_BYTES: usize = 16 * 1024;
const MAX_LABEL_BYTES: usize = 512;

/// Filters for `GET /alerts`. Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertListParams {
    /// Alerts with an occurrence at or after this time (a grouped alert's last one counts):
    /// RFC 3339, a date (`2024-05-01`, UTC) or relative (`now-24h`).
    pub from: Option<String>,
    /// Alerts whose first occurrence is before this time (exclusive): RFC 3339, a date or
    /// relative (`now-1h`).
    pub to: Option<String>,
    /// Minimum severity: `informational`, `low`, `medium`, `high` or `critical`
    /// (`high` also returns `critical`).
    #[param(inline, value_type = Option<SeverityName>)]
    pub severity: Option<String>,
    /// `open`, `acknowledged`, `resolved` or `false_positive`, or several separated by commas
    /// (`open,acknowledged`: the queue still to be worked).
    #[param(inline, value_type = Option<Vec<AlertStatusParam>>, style = Form, explode = false)]
    pub status: Option<String>,
    /// Rule id.
    pub rule: Option<String>,
    /// Source name (`okta`, `github`, ...).
    pub source: Option<String>,
    /// Entity (user, IP, token) the alert is about.
    pub entity: Option<String>,
    /// Words and `"quoted phrases"`, each case-insensitive text found in the title,
    /// description, explanation, entity, rule id, matched field values, tags, ATT&CK technique
    /// ids (`T1098`), assignee or notes; all must be found (`spray 203.0.113.66`).
    pub q: Option<String>,
    /// Page size, 1..=1000 (default 50).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `newest` (default), `oldest`, or `severity` (highest first, then newest).
    #[param(inline, value_type = Option<AlertSortName>)]
    pub sort: Option<String>,
}

// The schema of `sort`; `parse_sort` reads it.
/// The order of `GET /alerts`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertSortName {
    Newest,
    Oldest,
    Severity,
}

/// Filters for `GET /alerts/summary`: those of `GET /alerts`, without paging. Unknown
/// parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertSummaryParams {
    /// Alerts with an occurrence at or after this time: RFC 3339, a date or relative
    /// (`now-24h`).
    pub from: Option<String>,
    /// Alerts whose first occurrence is before this time (exclusive).
    pub to: Option<String>,
    /// Minimum severity.
    #[param(inline, value_type = Option<SeverityName>)]
    pub severity: Option<String>,
    /// `open`, `acknowledged`, `resolved` or `false_positive`, or several separated by commas
    /// (`open,acknowledged`: the queue still to be worked).
    #[param(inline, value_type = Option<Vec<AlertStatusParam>>, style = Form, explode = false)]
    pub status: Option<String>,
    /// Rule id.
    pub rule: Option<String>,
    /// Source name.
    pub source: Option<String>,
    /// Entity the alert is about.
    pub entity: Option<String>,
    /// Case-insensitive text, as for `GET /alerts`.
    pub q: Option<String>,
}

/// Counts of the selected alerts: total, per severity and status, the busiest rules (at most
/// 50) and entities (at most 20), and the time of the oldest and newest.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertSummaryBody {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub summary: serde_json::Value,
}

/// Triage status, as accepted by `PATCH /alerts/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatusParam {
    Open,
    Acknowledged,
    Resolved,
    FalsePositive,
}

impl From<AlertStatusParam> for AlertStatus {
    fn from(s: AlertStatusParam) -> AlertStatus {
        match s {
            AlertStatusParam::Open => AlertStatus::Open,
            AlertStatusParam::Acknowledged => AlertStatus::Acknowledged,
            AlertStatusParam::Resolved => AlertStatus::Resolved,
            AlertStatusParam::FalsePositive => AlertStatus::FalsePositive,
        }
    }
}

/// A change to an alert. At least one field; unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertPatch {
    pub status: Option<AlertStatusParam>,
    /// Who works on it; `null` or an empty string unassigns.
    #[serde(default, deserialize_with = "null_unassigns")]
    pub assignee: Option<String>,
    /// A note appended to the alert's notes.
    pub note: Option<String>,
}

/// `assignee`: absent is no change (`None`); `null` clears it, as `""` does (`Some("")`).
fn null_unassigns<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(deserializer).map(|v| Some(v.unwrap_or_default()))
}

/// An alert with its triage record and the events that caused it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertDetail {
    /// The stored alert record (alert, assignee, notes, history).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub record: serde_json::Value,
    /// The evidence events (masked), as stored.
    #[schema(value_type = Vec<Object>)]
    pub evidence: Vec<serde_json::Value>,
    /// Ids of evidence events no longer stored: removed by event retention, which alerts can
    /// outlive (`alert_retention_days`).
    pub evidence_missing: Vec<String>,
}

fn parse_status(value: &str) -> Result<AlertStatus, ApiError> {
    // Case aside, as severities are (`ACKNOWLEDGED` as `acknowledged`).
    serde_json::from_value::<AlertStatusParam>(json!(value.to_ascii_lowercase()))
        .map(Into::into)
        .map_err(|_| {
            ApiError::invalid_parameter(format!(
            "unknown status `{value}` (expected open, acknowledged, resolved or false_positive)"
        ))
        })
}

/// `status=open,acknowledged`: any of the listed statuses; none or an empty value: any.
fn parse_statuses(value: Option<&str>) -> Result<Vec<AlertStatus>, ApiError> {
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_status)
        .collect()
}

fn parse_severity(value: &str) -> Result<Severity, ApiError> {
    Severity::parse(value).ok_or_else(|| {
        ApiError::invalid_parameter(format!(
            "unknown severity `{value}` (expected informational, low, medium, high or critical)"
        ))
    })
}

fn parse_sort(value: Option<&str>) -> Result<AlertSort, ApiError> {
    Ok(match value.unwrap_or("newest") {
        "newest" => AlertSort::Newest,
        "oldest" => AlertSort::Oldest,
        "severity" => AlertSort::Severity,
        other => {
            return Err(ApiError::invalid_parameter(format!(
                "unknown sort `{other}` (expected newest, oldest or severity)"
            )))
        }
    })
}

fn alert_query(p: &AlertListParams) -> Result<AlertQuery, ApiError> {
    let (from, to) = time_range(p.from.as_deref(), p.to.as_deref())?;
    // An empty value filters nothing, for every filter alike (`entity=` found no alert while
    // `q=` found all).
    let label = |name: &str, v: &Option<String>| -> Result<Option<String>, ApiError> {
        v.as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(|s| bounded(name, s, MAX_LABEL_BYTES).map(str::to_string))
            .transpose()
    };
    Ok(AlertQuery {
        from,
        to,
        severity: p.severity.as_deref().map(parse_severity).transpose()?,
        statuses: parse_statuses(p.status.as_deref())?,
        rule_id: label("rule", &p.rule)?,
        source: label("source", &p.source)?,
        entity: label("entity", &p.entity)?,
        text: label("q", &p.q)?,
        limit: page_limit(p.limit)?,
        cursor: label("cursor", &p.cursor)?,
        sort: parse_sort(p.sort.as_deref())?,
        stored_forms: Vec::new(),
    })
}

/// List the token's tenant's alerts.
#[utoipa::path(get, path = "/alerts", tag = "alerts", params(AlertListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of alerts", body = ItemsPage),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub async fn list_alerts(
    State(state): State<AppState>,
    auth: Auth,
    params: Result<ApiQuery<AlertListParams>, ApiError>,
) -> Result<Json<ItemsPage>, ApiError> {
    let (params, query) = match params {
        Ok(ApiQuery(params)) => {
            let query = alert_query(&params);
            (params, query)
        }
        Err(e) => (AlertListParams::default(), Err(e)),
    };
    let limit = query.as_ref().map_or(params.limit, |q| Some(q.limit));
    let query = state.audit_result(
        &auth.0,
        "alerts.list",
        None,
        json!({
            "from": params.from, "to": params.to, "severity": params.severity,
            "status": params.status, "rule": params.rule, "source": params.source,
            "entity": params.entity, "q": params.q, "limit": limit,
        }),
        query,
    )?;
    let store = state.store.clone();
    let tenant = auth.tenant().to_string();
    let page = blocking(move || store.list_alerts(&tenant, &query)).await??;
    let items = page
        .items
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Internal(format!("encode alert: {e}")))?;
    Ok(Json(ItemsPage {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// The token's tenant's alert queue at a glance: counts per severity, status, rule and entity
/// of the alerts the filters select.
#[utoipa::path(get, path = "/alerts/summary", tag = "alerts", params(AlertSummaryParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Counts of the selected alerts", body = AlertSummaryBody),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub async fn alert_summary(
    State(state): State<AppState>,
    auth: Auth,
    params: Result<ApiQuery<AlertSummaryParams>, ApiError>,
) -> Result<Json<AlertSummaryBody>, ApiError> {
    let (p, params_rejected) = match params {
        Ok(ApiQuery(p)) => (p, None),
        Err(e) => (AlertSummaryParams::default(), Some(e)),
    };
    let query = params_rejected.map_or_else(
        || {
            alert_query(&AlertListParams {
                from: p.from.clone(),
                to: p.to.clone(),
                severity: p.severity.clone(),
                status: p.status.clone(),
                rule: p.rule.clone(),
                source: p.source.clone(),
                entity: p.entity.clone(),
                q: p.q.clone(),
                ..AlertListParams::default()
            })
        },
        Err,
    );
    let query = state.audit_result(
        &auth.0,
        "alerts.summary",
        None,
        json!({
            "from": p.from, "to": p.to, "severity": p.severity, "status": p.status,
            "rule": p.rule, "source": p.source, "entity": p.entity, "q": p.q,
        }),
        query,
    )?;
    let store = state.store.clone();
    let tenant = auth.tenant().to_string();
    let summary = blocking(move || store.alert_summary(&tenant, &query)).await?;
    let summary = serde_json::to_value(&summary)
        .map_err(|e| ApiError::Internal(format!("encode summary: {e}")))?;
    Ok(Json(AlertSummaryBody { summary }))
}

/// One alert with its evidence events. Another tenant's id answers 404.
#[utoipa::path(get, path = "/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    security(("bearer" = [])),
    responses(
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 200, description = "The alert", body = AlertDetail),
        (status = 400, description = "A query parameter (none is taken) or an id too long", body = ErrorBody),
        (status = 404, description = "No such alert for this tenant", body = ErrorBody),
    ))]
pub async fn get_alert(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    no_params: Result<ApiQuery<NoParams>, ApiError>,
) -> Result<Json<AlertDetail>, ApiError> {
    let found = async {
        no_params?;
        bounded("id", &id, MAX_LABEL_BYTES)?;
        let store = state.store.clone();
        let tenant = auth.tenant().to_string();
        let id = id.clone();
        blocking(move || -> Result<_, ApiError> {
            let Some(record) = store.get_alert(&tenant, &id)? else {
                return Err(ApiError::NotFound(format!("no alert `{id}`")));
            };
            let evidence = store.alert_evidence(&tenant, &id)?;
            Ok((record, evidence))
        })
        .await?
    }
    .await;
    let (record, evidence) =
        state.audit_result(&auth.0, "alerts.get", Some(&id), json!({}), found)?;
    let record = serde_json::to_value(&record)
        .map_err(|e| ApiError::Internal(format!("encode alert: {e}")))?;
    Ok(Json(AlertDetail {
        record,
        evidence: evidence.events,
        evidence_missing: evidence.missing,
    }))
}

/// Change status, assignee or add a note. The store records who (the token) and when.
#[utoipa::path(patch, path = "/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    request_body = AlertPatch,
    security(("bearer" = [])),
    responses(
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 200, description = "The updated alert record", body = Object),
        (status = 400, description = "Malformed body, unknown status, or a query parameter (none is taken)", body = ErrorBody),
        (status = 403, description = "Needs role responder", body = ErrorBody),
        (status = 404, description = "No such alert for this tenant", body = ErrorBody),
        (status = 413, description = "Body over the request size limit", body = ErrorBody),
        (status = 415, description = "Body not sent as `Content-Type: application/json`", body = ErrorBody),
    ))]
pub async fn update_alert(
    State(state): State<AppState>,
    auth: Auth<ResponderRole>,
    ApiPath(id): ApiPath<String>,
    no_params: Result<ApiQuery<NoParams>, ApiError>,
    patch: Result<ApiJson<AlertPatch>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut details = json!({});
    let result = async {
        no_params?;
        let ApiJson(patch) = patch?;
        update_alert_audited(&state, &auth, &id, patch, &mut details).await
    }
    .await;
    state.audit_result(&auth.0, "alerts.update", Some(&id), details, result)
}

async fn update_alert_audited(
    state: &AppState,
    auth: &Auth<ResponderRole>,
    id: &str,
    patch: AlertPatch,
    details: &mut serde_json::Value,
) -> Result<Json<serde_json::Value>, ApiError> {
    // What was asked, recorded also when it is refused; the note's text lives in the alert's
    // history, the audit line says that one was added.
    *details = json!({
        "status": patch.status,
        "assignee": patch.assignee,
        "note_bytes": patch.note.as_ref().map(String::len),
    });
    bounded("id", id, MAX_LABEL_BYTES)?;
    if patch.status.is_none() && patch.assignee.is_none() && patch.note.is_none() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "nothing to change: give at least one of status, assignee, note",
        ));
    }
    if let Some(a) = &patch.assignee {
        bounded("assignee", a, MAX_LABEL_BYTES)?;
        // A name: one line of printable text (it is shown in lists, Slack lines, terminals).
        if a.chars().any(char::is_control) {
            return Err(ApiError::invalid_parameter(
                "`assignee` has control characters (line breaks, escapes): give a name",
            ));
        }
    }
    if let Some(n) = &patch.note {
        bounded("note", n, MAX_NOTE_BYTES)?;
        if n.trim().is_empty() {
            return Err(ApiError::invalid_parameter("`note` is empty"));
        }
    }
    // Stored and returned masked, like everything else Perimeter keeps.
    let update = AlertUpdate {
        status: patch.status.map(Into::into),
        // `"  "` clears as `""` does (it was kept as an assignee nobody could read).
        assignee: patch.assignee.as_deref().map(|a| state.mask_text(a.trim())),
        note: patch.note.as_deref().map(|n| state.mask_text(n)),
    };
    let store = state.store.clone();
    let tenant = auth.tenant().to_string();
    let actor = auth.0.actor();
    let target = id.to_string();
    let updated = blocking(move || store.update_alert(&tenant, &target, &update, &actor)).await??;
    // An attempt on an id the tenant does not have is recorded too (`outcome: not_found`, as
    // reads of one are): it may be a guess at another tenant's alert.
    let Some(record) = updated else {
        return Err(ApiError::NotFound(format!("no alert `{id}`")));
    };
    let record = serde_json::to_value(&record)
        .map_err(|e| ApiError::Internal(format!("encode alert: {e}")))?;
    Ok(Json(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_severity_parsing() {
        assert_eq!(
            parse_status("false_positive").unwrap(),
            AlertStatus::FalsePositive
        );
        assert!(parse_status("closed").is_err());
        assert_eq!(parse_severity("HIGH").unwrap(), Severity::High);
        assert!(parse_severity("urgent").is_err());
        assert!(parse_sort(Some("random")).is_err());
    }

    #[test]
    fn query_validation() {
        let ok = AlertListParams {
            limit: Some(10),
            severity: Some("low".into()),
            ..Default::default()
        };
        assert_eq!(alert_query(&ok).unwrap().limit, 10);
        let huge = AlertListParams {
            limit: Some(5000),
            ..Default::default()
        };
        assert_eq!(
            alert_query(&huge).err().map(|e| e.code()),
            Some("limit_too_large")
        );
        let bad_date = AlertListParams {
            from: Some("2024-02-30T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(
            alert_query(&bad_date).err().map(|e| e.code()),
            Some("invalid_parameter")
        );
    }
}
