//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations. Routes
//! are registered only through [`api_router`], which adds each handler to the axum router and
//! to the document in the same call, so the two cannot drift (a test checks it anyway).

use std::sync::Arc;

use axum::{Extension, Json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::routes::{admin, alerts, destinations, events, health, rules, sources};
use crate::state::AppState;

/// Prefix of the versioned API.
pub const API_PREFIX: &str = "/api/v1";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Perimeter API",
        description = "Alerts, event search, rules and audit of a Perimeter mini-SIEM. \
            Authenticate with `Authorization: Bearer <token>`; a token sees only its tenant."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "alerts", description = "Alert queue and triage"),
        (name = "events", description = "Event search and dead letters"),
        (name = "rules", description = "Detection rules"),
        (name = "admin", description = "Audit log"),
        (name = "health", description = "Liveness, readiness, metrics (no auth)"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route of the API, with its documentation.
pub fn api_router() -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new()
        .routes(routes!(alerts::list_alerts))
        .routes(routes!(alerts::alert_summary))
        .routes(routes!(alerts::get_alert, alerts::update_alert))
        .routes(routes!(events::search_events))
        .routes(routes!(events::event_histogram))
        .routes(routes!(events::event_top_values))
        .routes(routes!(events::event_context))
        .routes(routes!(events::export_events))
        .routes(routes!(events::get_event))
        .routes(routes!(events::list_dead_letters))
        .routes(routes!(sources::list_sources))
        .routes(routes!(rules::list_rules))
        .routes(routes!(rules::switch_rule))
        .routes(routes!(rules::test_rule))
        .routes(routes!(admin::list_audit))
        .routes(routes!(
            destinations::list_destinations,
            destinations::create_destination
        ))
        .routes(routes!(destinations::delete_destination))
        .routes(routes!(openapi_json));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .nest(API_PREFIX, v1)
}

/// The OpenAPI document of this API (what `/api/v1/openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().into_openapi()
}

/// This document, as JSON.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3 document", body = Object)))]
pub async fn openapi_json(
    Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>,
    _: crate::extract::ApiQuery<crate::extract::NoParams>,
) -> Json<serde_json::Value> {
    Json(serde_json::to_value(doc.as_ref()).unwrap_or_default())
}
