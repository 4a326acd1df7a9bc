//! Admin-only endpoints: the API's own audit trail.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::{blocking, page_limit};
use crate::audit::AuditEntry;
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
}

/// Audit entries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    pub items: Vec<AuditEntry>,
}

/// Who did what through the API, for the token's tenant.
#[utoipa::path(get, path = "/audit", tag = "admin", params(AuditParams),
    security(("bearer" = [])),
    responses(
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 200, description = "Audit entries", body = AuditList),
        (status = 403, description = "Needs role admin", body = ErrorBody),
    ))]
pub async fn list_audit(
    State(state): State<AppState>,
    auth: Auth<AdminRole>,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditList>, ApiError> {
    let limit = page_limit(params.limit)?;
    // Read before recording this read, so the answer shows what happened before it.
    let audit = state.audit.clone();
    let tenant = auth.tenant().to_string();
    let items = blocking(move || audit.recent(&tenant, limit))
        .await?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    state.audit(&auth.0, "audit.list", None, json!({"limit": limit}))?;
    Ok(Json(AuditList { items }))
}
