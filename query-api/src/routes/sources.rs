//! `/sources`: what each of the tenant's sources has sent lately, to see an integration that
//! went quiet.

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::blocking;
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::state::AppState;

/// `GET /sources` takes no parameters; unknown ones are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SourcesParams {}

/// The tenant's sources, by name.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceList {
    pub items: Vec<SourceItem>,
}

/// One source of the tenant, as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceItem {
    /// The source name (`event.module`).
    pub source: String,
    /// `@timestamp` of its newest stored event, RFC 3339 UTC.
    pub newest_event: String,
    /// Seconds from that event to now (0 for an event stamped in the future): how long the
    /// source has been quiet, vendor delay included.
    pub silent_seconds: i64,
    /// Its events with `@timestamp` in the last 24 hours.
    pub events_24h: u64,
}

/// Each source with stored events for the token's tenant: its newest event, how long it has
/// been quiet, and its events of the last 24 hours. A source that stopped sending (an expired
/// API token, a removed webhook, an audit log switched off) shows here first.
#[utoipa::path(get, path = "/sources", tag = "events", params(SourcesParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tenant's sources, by name", body = SourceList),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub async fn list_sources(
    State(state): State<AppState>,
    auth: Auth,
    params: Result<ApiQuery<SourcesParams>, ApiError>,
) -> Result<Json<SourceList>, ApiError> {
    state.audit_result(&auth.0, "sources.list", None, json!({}), params)?;
    let store = state.store.clone();
    let tenant = auth.tenant().to_string();
    let now = Utc::now();
    let activity = blocking(move || store.source_activity(&tenant, now)).await??;
    let items = activity
        .into_iter()
        .map(|a| SourceItem::new(a, now))
        .collect();
    Ok(Json(SourceList { items }))
}

impl SourceItem {
    /// The answer's item for a source's stored activity, its quiet time counted up to `now`.
    pub fn new(a: perimeter_store::SourceActivity, now: chrono::DateTime<Utc>) -> SourceItem {
        SourceItem {
            silent_seconds: (now - a.newest_event).num_seconds().max(0),
            newest_event: a
                .newest_event
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            source: a.source,
            events_24h: a.events_24h,
        }
    }
}
