//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations. Routes
//! are registered only through [`api_router`], which adds each handler to the axum router and
//! to the document in the same call, so the two cannot drift (a test checks it anyway).

use std::sync::Arc;

use axum::{Extension, Json};
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Object, RefOr, Schema};
use utoipa::Number;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ErrorBody;
use crate::routes::{admin, alerts, destinations, events, health, rules, sources, MAX_LIMIT};
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
    let mut router = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .nest(API_PREFIX, v1);
    document_bounds(router.get_openapi_mut());
    router
}

/// The count parameters (`GET` path, name) and the largest value each handler accepts; every
/// one refuses 0 (`routes::limit_within`). utoipa's `#[param(maximum = ..)]` takes only
/// literals, so the bounds are written into the document here from the constants the handlers
/// check, not copied into the attributes.
const COUNT_PARAMETERS: [(&str, &str, usize); 8] = [
    ("/alerts", "limit", MAX_LIMIT),
    ("/events/search", "limit", MAX_LIMIT),
    ("/events/top", "limit", perimeter_store::MAX_TOP_VALUES),
    ("/events/top", "sample", perimeter_store::MAX_TOP_SAMPLE),
    (
        "/events/{id}/context",
        "limit",
        perimeter_store::MAX_CONTEXT_EVENTS,
    ),
    ("/events/export", "max_events", events::MAX_EXPORT_EVENTS),
    ("/dead-letters", "limit", MAX_LIMIT),
    ("/audit", "limit", MAX_LIMIT),
];

/// Bounds and closed sets the derives cannot say: the ranges of [`COUNT_PARAMETERS`] and of a
/// rule test's `limit`, and the fields `GET /events/top` counts. A name missing from the
/// document is a bug in this table, caught by any test that builds the router.
fn document_bounds(doc: &mut utoipa::openapi::OpenApi) {
    for (path, name, max) in COUNT_PARAMETERS {
        set_range(query_parameter(doc, path, name), 1, max);
    }
    let fields = perimeter_store::top_value_fields();
    query_parameter(doc, "/events/top", "field").enum_values =
        Some(fields.into_iter().map(Into::into).collect());
    let rule_test = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("RuleTestRequest"));
    let Some(RefOr::T(Schema::Object(rule_test))) = rule_test else {
        panic!("no RuleTestRequest schema in the OpenAPI document");
    };
    match rule_test.properties.get_mut("limit") {
        Some(RefOr::T(Schema::Object(limit))) => set_range(limit, 1, rules::MAX_TEST_EVENTS),
        _ => panic!("no `limit` in the RuleTestRequest schema"),
    }
}

fn set_range(schema: &mut Object, min: usize, max: usize) {
    schema.minimum = Some(Number::UInt(min));
    schema.maximum = Some(Number::UInt(max));
}

/// The schema of query parameter `name` of `GET <API_PREFIX><path>`.
fn query_parameter<'a>(
    doc: &'a mut utoipa::openapi::OpenApi,
    path: &str,
    name: &str,
) -> &'a mut Object {
    let full = format!("{API_PREFIX}{path}");
    let parameter = doc
        .paths
        .paths
        .get_mut(&full)
        .and_then(|item| item.get.as_mut())
        .and_then(|op| op.parameters.as_mut())
        .and_then(|ps| {
            ps.iter_mut()
                .find(|p| p.name == name && p.parameter_in == ParameterIn::Query)
        });
    match parameter.and_then(|p| p.schema.as_mut()) {
        Some(RefOr::T(Schema::Object(schema))) => schema,
        _ => panic!("no query parameter `{name}` of GET {full} in the OpenAPI document"),
    }
}

/// The OpenAPI document of this API (what `/api/v1/openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().into_openapi()
}

/// This document, as JSON.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses(
        (status = 200, description = "OpenAPI 3 document", body = Object),
        (status = 400, description = "A query parameter (none is taken)", body = ErrorBody),
    ))]
pub async fn openapi_json(
    Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>,
    _: crate::extract::ApiQuery<crate::extract::NoParams>,
) -> Json<serde_json::Value> {
    Json(serde_json::to_value(doc.as_ref()).unwrap_or_default())
}
