//! HTTP ingestion: `POST /ingest/{source}` with a JSON-lines body (or one JSON document such as
//! a vendor API page or a webhook payload). The response is sent only after the batch is stored,
//! so a 200 means "durably acknowledged"; on any error the client must resend (replays are
//! idempotent).

use crate::bus::BusSender;
use crate::jsonl::{JsonInput, JsonlReaderConfig};
use crate::InputItem;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use std::sync::Arc;

/// Decides who may ingest: given the bearer token, the tenant it may write to (`None` = refuse).
pub type IngestAuth = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

#[derive(Clone)]
struct IngestState {
    bus: BusSender,
    auth: IngestAuth,
    reader: JsonlReaderConfig,
}

/// Routes: `POST /ingest/{source}` (source name, `auto` or `json`). Bodies up to `max_body_bytes`.
pub fn ingest_router(bus: BusSender, auth: IngestAuth, max_body_bytes: usize) -> Router {
    let state = IngestState {
        bus,
        auth,
        reader: JsonlReaderConfig::default(),
    };
    Router::new()
        .route("/ingest/{source}", post(ingest))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message.into()}});
    (status, Json(body)).into_response()
}

async fn ingest(
    State(state): State<IngestState>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let Some(tenant) = (state.auth)(token) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid ingest token is required",
        );
    };
    if source.is_empty()
        || source.len() > 64
        || !source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_source",
            "source must be [A-Za-z0-9_]{1,64}",
        );
    }
    // JSON lines, or one pretty-printed document (a vendor page or webhook payload as sent).
    let parsed = JsonInput::new(&body[..], state.reader.clone()).and_then(|input| input.collect());
    let items: Vec<InputItem> = match parsed {
        Ok(items) => items,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_body", e.to_string()),
    };
    if items.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "no records in the request body",
        );
    }
    match state.bus.submit(&source, &tenant, items).await {
        Ok(ack) => (StatusCode::OK, Json(ack)).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "not_stored", e.to_string()),
    }
}
