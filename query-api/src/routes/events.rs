//! `/events`: full-text search over the tenant's masked events, and dead letters.

use axum::extract::State;
use axum::Json;
use perimeter_store::EventQuery;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::{blocking, bounded, limit_within, page_limit, time_range, ItemsPage, MAX_LIMIT};
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

const MAX_QUERY_BYTES: usize = 4096;
const MAX_ID_BYTES: usize = 512;

/// Parameters of `GET /events/search`. Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventSearchParams {
    /// tantivy query syntax over the masked events (`user.name:alice AND event.outcome:failure`);
    /// absent means all events.
    pub q: Option<String>,
    /// Events at or after this time (RFC 3339).
    pub from: Option<String>,
    /// Events before this time (RFC 3339, exclusive).
    pub to: Option<String>,
    /// Page size, 1..=1000 (default 50).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Search events.
#[utoipa::path(get, path = "/events/search", tag = "events", params(EventSearchParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of events (newest first)", body = ItemsPage),
        (status = 400, description = "Bad query syntax or parameter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub async fn search_events(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(params): ApiQuery<EventSearchParams>,
) -> Result<Json<ItemsPage>, ApiError> {
    let (from, to) = time_range(params.from.as_deref(), params.to.as_deref())?;
    let query_text = params
        .q
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .unwrap_or("*");
    bounded("q", query_text, MAX_QUERY_BYTES)?;
    if let Some(c) = &params.cursor {
        bounded("cursor", c, MAX_QUERY_BYTES)?;
    }
    let query = EventQuery {
        query: query_text.to_string(),
        from,
        to,
        limit: page_limit(params.limit)?,
        cursor: params.cursor.clone(),
    };
    state.audit(
        &auth.0,
        "events.search",
        None,
        json!({"q": query_text, "from": params.from, "to": params.to, "limit": query.limit}),
    )?;
    let store = state.store.clone();
    let tenant = auth.tenant().to_string();
    let page = blocking(move || store.search_events(&tenant, &query)).await??;
    Ok(Json(ItemsPage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// One event by id. Another tenant's id answers 404.
#[utoipa::path(get, path = "/events/{id}", tag = "events",
    params(("id" = String, Path, description = "Event id")),
    security(("bearer" = [])),
    responses(
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 200, description = "The stored (masked) event", body = Object),
        (status = 404, description = "No such event for this tenant", body = ErrorBody),
    ))]
pub async fn get_event(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    bounded("id", &id, MAX_ID_BYTES)?;
    state.audit(&auth.0, "events.get", Some(&id), json!({}))?;
    let store = state.store.clone();
    let tenant = auth.tenant().to_string();
    let lookup_id = id.clone();
    let event = blocking(move || store.get_event(&tenant, &lookup_id)).await??;
    event
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no event `{id}`")))
}

/// Parameters of `GET /dead-letters`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterParams {
    /// How many (newest first), 1..=1000 (default 50).
    pub limit: Option<usize>,
}

/// Records that could not be processed, with the reason and a masked excerpt.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Value>,
}

/// The tenant's dead letters (input that could not be processed).
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
    ApiQuery(params): ApiQuery<DeadLetterParams>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let limit = limit_within(params.limit, super::DEFAULT_LIMIT, MAX_LIMIT)?;
    state.audit(&auth.0, "dead_letters.list", None, json!({"limit": limit}))?;
    let store = state.store.clone();
    let tenant = auth.tenant().to_string();
    let letters = blocking(move || store.list_dead_letters(&tenant, limit)).await??;
    let items = letters
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Internal(format!("encode dead letter: {e}")))?;
    Ok(Json(DeadLetterList { items }))
}
