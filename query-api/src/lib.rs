//! Perimeter's HTTP API (axum, JSON, versioned under `/api/v1`): the alert queue and triage,
//! full-text event search, rules, the audit log, health and metrics.
//!
//! Guarantees:
//! - every `/api/v1` route except `openapi.json` needs a bearer token; a token only ever sees
//!   its own tenant (another tenant's id answers 404, exactly like an unknown id);
//! - every error is `{"error": {"code", "message"}}` with one status mapping ([`error`]); bad
//!   client input (JSON, parameters, query syntax, dates, limits) is 4xx, never 500;
//! - tokens are stored only as SHA-256 hashes and compared in constant time ([`auth`]);
//! - searches and alert changes are appended to the audit log before the answer is sent
//!   ([`audit`]);
//! - the OpenAPI document is generated from the same registrations that build the router
//!   ([`openapi`]).
//!
//! The rule engine is reached through [`RuleService`], so this crate depends on the store's
//! read side and the model only.

pub mod audit;
pub mod auth;
mod body_silence;
pub mod client;
mod connection_cap;
pub mod destinations;
pub mod egress;
pub mod error;
pub mod extract;
mod files;
pub mod openapi;
pub mod outbox;
mod parse_errors;
pub mod routes;
pub mod rule_switches;
pub mod server;
pub mod state;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};

pub use audit::{AuditEntry, AuditError, AuditLog, AuditPage, AuditQuery};
pub use auth::{Refusal, Role, TokenInfo, TokenStore};
pub use destinations::{AlertNotifier, Destination, DestinationStore};
pub use error::ApiError;
pub use outbox::DeliveryOutbox;
pub use rule_switches::{RuleSwitchError, RuleSwitchStore};
pub use server::{
    certificate_place, check_server_certificate, check_server_chain, parse_listen, serve,
    ApiConfig, CertificateProblem, CertificateReloader, CertificateValidity, ChainProblem,
    CutoffGate, ListenerCheck, PreparedServer, ServeError, Server, CERTIFICATE_EXPIRY_WARNING,
};
pub use state::{AppState, RuleService, RuleTestError};

/// The complete API as an axum router (what [`serve`] serves); tests can drive it directly.
pub fn router(state: AppState) -> Router {
    router_documenting(state, None)
}

/// [`router`] whose OpenAPI document also holds `extra` (routes the binary serves beside the
/// API, such as HTTP ingest).
pub fn router_documenting(state: AppState, extra: Option<utoipa::openapi::OpenApi>) -> Router {
    let (router, mut doc) = openapi::api_router().split_for_parts();
    if let Some(extra) = extra {
        doc.merge(extra);
    }
    router
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(Arc::new(doc)))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            mask_error_bodies,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        // Outermost: a change whose client hung up is also counted (QA: it was audited, not
        // counted).
        .layer(middleware::from_fn(finish_changes))
        .with_state(state)
}

/// Largest accepted request body (a rule test with thousands of inline events fits). A body
/// announced larger is refused before it is read, once the caller's token and role passed
/// ([`extract::ApiJson`]).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Longest error body read back for masking; the API's own are a few hundred bytes.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Error answers quote what was asked (a query, an id, a parameter's value), and an analyst may
/// have pasted a secret there: they are masked as what the API stores is, so the secret is not
/// sent back to land in proxies' and clients' logs.
pub(crate) async fn mask_error_bodies(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !response.status().is_client_error() || !json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let masked = axum::body::to_bytes(body, MAX_ERROR_BODY_BYTES)
        .await
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .map(|mut value| {
            state.mask_value(&mut value);
            value
        })
        // Not what the API writes: say so rather than pass on what could not be masked.
        .unwrap_or_else(|| {
            serde_json::json!({"error": {"code": "error", "message": "the error's text could not be shown"}})
        });
    parts.headers.remove(header::CONTENT_LENGTH);
    (parts, axum::Json(masked)).into_response()
}

/// A request that may change something (every method but `GET`, `HEAD` and `OPTIONS`) runs to
/// its end on a task of its own, even when its client hangs up: hyper drops a request's future
/// then, and a handler stopped between the change and its audit line left the change applied
/// and unaudited (QA: alerts resolved and a rule switched off by clients that closed the
/// connection at once, none in the audit log).
async fn finish_changes(request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    match client::spawn_knowing_client(next.run(request)).await {
        Ok(response) => response,
        Err(e) => ApiError::Internal(format!("the request's task ended: {e}")).into_response(),
    }
}

async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// `api_requests_total{route,method,status}`; `route` is the route template (`/api/v1/alerts/{id}`),
/// never the concrete path, to keep label cardinality bounded.
pub(crate) async fn count_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(request.method());
    // (QA: a silent body's 408 was counted as the handler's 400.)
    let sent_status = crate::body_silence::BodyWentSilent::status_of(&request);
    let response = next.run(request).await;
    state.metrics.inc(
        "api_requests_total",
        &[
            ("route", &route),
            ("method", method),
            ("status", sent_status(response.status()).as_str()),
        ],
        1,
    );
    response
}

/// The `method` label: a client may send any token as the method (`FOO1`, even without a
/// token), and each would be a new series, so methods outside the standard ones count as
/// `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    /// House rule: the API reads the store's read side and the model, never the detector or
    /// ingest (the rule engine comes in through `RuleService`).
    #[test]
    fn depends_on_neither_detect_nor_ingest() {
        let manifest = include_str!("../Cargo.toml");
        for forbidden in ["perimeter-detect", "perimeter-ingest", "perimeter ="] {
            assert!(
                !manifest.contains(forbidden),
                "query-api must not depend on {forbidden}"
            );
        }
        assert!(manifest.contains("perimeter-store"));
    }
}
