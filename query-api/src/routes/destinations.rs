//! `/destinations`: the webhooks that receive a tenant's new alerts (admin only).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use perimeter_model::Severity;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::bounded;
use crate::auth::{AdminRole, Auth};
use crate::destinations::{Destination, DestinationError, DestinationFormat};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, NoParams};
use crate::state::AppState;

/// The tenant's destinations.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationList {
    pub items: Vec<Destination>,
}

/// Body of `POST /destinations`. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDestination {
    /// A name for people (1 to 100 characters).
    pub name: String,
    /// `http://` or `https://` URL the alerts are POSTed to as
    /// `{"tenant", "destination", "alerts": [...]}`.
    pub url: String,
    /// Only alerts at or above this severity are sent (default `medium`).
    #[serde(default)]
    #[schema(inline, value_type = super::SeverityName, example = "high")]
    pub min_severity: Severity,
    /// `json` (default: the alerts whole) or `slack` (`{"text"}`, one line per alert, for a
    /// Slack incoming webhook or a compatible chat).
    #[serde(default)]
    pub format: DestinationFormat,
}

fn invalid(e: DestinationError) -> ApiError {
    match e {
        DestinationError::Invalid(m) => ApiError::invalid_parameter(m),
        DestinationError::Io { .. } => ApiError::Internal(e.to_string()),
    }
}

/// The tenant's alert destinations, their URLs masked (a webhook URL is often a credential).
#[utoipa::path(get, path = "/destinations", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Destinations", body = DestinationList),
        (status = 400, description = "A query parameter (none is taken)", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs role admin", body = ErrorBody),
    ))]
pub async fn list_destinations(
    State(state): State<AppState>,
    auth: Auth<AdminRole>,
    no_params: Result<ApiQuery<NoParams>, ApiError>,
) -> Result<Json<DestinationList>, ApiError> {
    state.audit_result(&auth.0, "destinations.list", None, json!({}), no_params)?;
    // A webhook URL is often a credential itself (Slack's, or one with `?token=`): listed
    // masked; only the delivery worker reads it in clear.
    let items = state
        .destinations
        .list(auth.tenant())
        .into_iter()
        .map(|d| Destination {
            url: state.mask_text(&d.url),
            ..d
        })
        .collect();
    Ok(Json(DestinationList { items }))
}

/// Register a webhook for the tenant's new alerts.
#[utoipa::path(post, path = "/destinations", tag = "admin", request_body = NewDestination,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Destination),
        (status = 400, description = "Bad name, URL or body, or a query parameter (none is taken)", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs role admin", body = ErrorBody),
        (status = 413, description = "Body over the request size limit", body = ErrorBody),
        (status = 415, description = "Body not sent as `Content-Type: application/json`", body = ErrorBody),
    ))]
pub async fn create_destination(
    State(state): State<AppState>,
    auth: Auth<AdminRole>,
    no_params: Result<ApiQuery<NoParams>, ApiError>,
    new: Result<ApiJson<NewDestination>, ApiError>,
) -> Result<(StatusCode, Json<Destination>), ApiError> {
    let created = (|| {
        no_params?;
        let ApiJson(new) = new?;
        bounded("url", &new.url, 2048)?;
        // The name is only for people: stored masked, like everything else said about a tenant.
        let name = state.mask_text(&new.name);
        state
            .destinations
            .create_as(
                auth.tenant(),
                &name,
                &new.url,
                new.min_severity,
                new.format,
                &auth.0.id,
            )
            .map_err(invalid)
    })();
    // The URL is not audited: webhook URLs often carry their own secret.
    let details = created.as_ref().map_or_else(
        |_| json!({}),
        |c| json!({"name": c.name, "min_severity": c.min_severity, "format": c.format}),
    );
    let target = created.as_ref().ok().map(|c| c.id.clone());
    let created = state.audit_result(
        &auth.0,
        "destinations.create",
        target.as_deref(),
        details,
        created,
    )?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Remove one of the tenant's destinations. Another tenant's id answers 404.
#[utoipa::path(delete, path = "/destinations/{id}", tag = "admin",
    params(("id" = String, Path, description = "Destination id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A query parameter (none is taken) or an id too long", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs role admin", body = ErrorBody),
        (status = 404, description = "No such destination for this tenant", body = ErrorBody),
    ))]
pub async fn delete_destination(
    State(state): State<AppState>,
    auth: Auth<AdminRole>,
    ApiPath(id): ApiPath<String>,
    no_params: Result<ApiQuery<NoParams>, ApiError>,
) -> Result<StatusCode, ApiError> {
    let deleted = (|| {
        no_params?;
        bounded("id", &id, 64)?;
        if !state
            .destinations
            .delete(auth.tenant(), &id)
            .map_err(invalid)?
        {
            return Err(ApiError::NotFound(format!("no destination `{id}`")));
        }
        Ok(StatusCode::NO_CONTENT)
    })();
    state.audit_result(
        &auth.0,
        "destinations.delete",
        Some(&id),
        json!({}),
        deleted,
    )
}
