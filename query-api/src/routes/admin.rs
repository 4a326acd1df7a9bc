//! Admin-only endpoints: the API's own audit trail.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::{blocking, page_limit, time_range};
use crate::audit::{AuditEntry, AuditError, AuditQuery};
use crate::auth::{AdminRole, Auth};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Parameters of `GET /audit`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// How many entries (newest first), 1..=1000 (default 50).
    pub limit: Option<usize>,
    /// Only this action (`alerts.update`, `events.search`, `events.export`, ...); a trailing
    /// `*` matches a prefix (`alerts.*`).
    pub action: Option<String>,
    /// Only the entries of this token, by its id or its name.
    pub token: Option<String>,
    /// Only the entries about this alert or event id, requests refused for the role on its path
    /// (`request.denied`, target `PATCH /api/v1/alerts/<id>`) included.
    pub target: Option<String>,
    /// Entries at or after this time: RFC 3339, a date (midnight UTC) or relative (`now-24h`).
    pub from: Option<String>,
    /// Entries before this time, written as `from`.
    pub to: Option<String>,
    /// `next_cursor` of the previous page: older entries.
    pub cursor: Option<String>,
}

/// Audit entries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    pub items: Vec<AuditEntry>,
    /// Pass back as `cursor` for older entries; null on the last page.
    pub next_cursor: Option<String>,
}

/// Who did what through the API, for the token's tenant: who searched what, who changed or
/// read which alert, who exported, newest first, filtered by action, token, target and time.
#[utoipa::path(get, path = "/audit", tag = "admin", params(AuditParams),
    security(("bearer" = [])),
    responses(
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 200, description = "Audit entries", body = AuditList),
        (status = 400, description = "Bad parameter or cursor", body = ErrorBody),
        (status = 403, description = "Needs role admin", body = ErrorBody),
    ))]
pub async fn list_audit(
    State(state): State<AppState>,
    auth: Auth<AdminRole>,
    params: Result<ApiQuery<AuditParams>, ApiError>,
) -> Result<Json<AuditList>, ApiError> {
    let mut details = json!({});
    let result = async {
        let ApiQuery(params) = params?;
        // The `token` filter names a token (`acme-viewer`), no secret: recorded as `by`, which
        // masking leaves, where a key named `token` is masked whole (QA: the audit of an audit
        // read could not say whose trail was read). A pasted token secret is still masked by
        // its pattern.
        details = json!({
            "limit": params.limit, "action": params.action, "by": params.token,
            "target": params.target, "from": params.from, "to": params.to,
        });
        list_audit_audited(&state, &auth, params, &mut details).await
    }
    .await;
    state.audit_result(&auth.0, "audit.list", None, details, result)
}

async fn list_audit_audited(
    state: &AppState,
    auth: &Auth<AdminRole>,
    params: AuditParams,
    details: &mut serde_json::Value,
) -> Result<Json<AuditList>, ApiError> {
    let limit = page_limit(params.limit)?;
    let (from, to) = time_range(params.from.as_deref(), params.to.as_deref())?;
    let text = |name: &str, v: &Option<String>| super::filter_text(name, v, 256);
    let query = AuditQuery {
        tenant: auth.tenant().to_string(),
        limit,
        action: text("action", &params.action)?,
        token: text("token", &params.token)?,
        target: text("target", &params.target)?,
        from,
        to,
        cursor: text("cursor", &params.cursor)?,
    };
    *details = json!({
        "limit": limit, "action": query.action, "by": query.token, "target": query.target,
        "from": params.from, "to": params.to,
    });
    // Read before recording this read, so the answer shows what happened before it.
    let audit = state.audit.clone();
    let page = blocking(move || audit.query(&query))
        .await?
        .map_err(|e| match e {
            // As a bad cursor of the other pages (a store `InvalidQuery`).
            AuditError::Cursor(_) => ApiError::bad_request("invalid_query", e.to_string()),
            e => ApiError::Internal(e.to_string()),
        })?;
    Ok(Json(AuditList {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}
