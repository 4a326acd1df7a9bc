//! Liveness, readiness and metrics: unauthenticated, for orchestrators and Prometheus.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    /// `ok` (liveness) or `ready` (readiness).
    pub status: &'static str,
}

/// Liveness: the process answers HTTP.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = HealthStatus)))]
pub async fn healthz() -> Json<HealthStatus> {
    Json(HealthStatus { status: "ok" })
}

/// Readiness: the server is not shutting down, the store writes what it is given, and no part
/// of the service stopped. While the store fails batch after batch (disk full, unwritable
/// files) the service takes input it cannot store, so it is not ready: 503 says since when and
/// why, and clears with the next batch stored. A part that stopped until a restart (the Kafka
/// consumer, on a record sealed with a key it lacks) keeps it not ready, saying which and why.
/// Searches keep working meanwhile.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = HealthStatus),
        (status = 503, description = "Not ready: shutting down, the store is failing to write batches, or a part of the service stopped", body = ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<HealthStatus>, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::Unavailable("shutting down".into()));
    }
    if let Some(f) = state.store.write_failure() {
        return Err(ApiError::Unavailable(format!(
            "the store is failing to write: {} batch(es) failed since {}, last error: {}",
            f.batches,
            f.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            f.error
        )));
    }
    if let Some((part, why)) = state.metrics.stopped_parts().into_iter().next() {
        return Err(ApiError::Unavailable(format!(
            "the {part} stopped until a restart: {why}"
        )));
    }
    if let Some((part, why)) = state.metrics.failing_parts().into_iter().next() {
        return Err(ApiError::Unavailable(format!(
            "the {part} is failing: {why}"
        )));
    }
    Ok(Json(HealthStatus { status: "ready" }))
}

/// Prometheus text: pipeline counters (events in/out per source, alerts per rule, dead
/// letters, lag, commit latency), the store's own counters and API request counters.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition format", body = String,
        content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // A `source` is the name a client put in `POST /ingest/{source}`: masked as the log masks
    // it (QA: a token sent as the name was masked in the log and shown here, unauthenticated).
    let mut text = state.metrics.render_prometheus_with(|name, value| {
        if name == "source" {
            std::borrow::Cow::Owned(state.mask_text(value))
        } else {
            std::borrow::Cow::Borrowed(value)
        }
    });
    let store = state.store.clone();
    // stats() takes the store's locks: off the async workers.
    if let Ok((stats, failure)) =
        tokio::task::spawn_blocking(move || (store.stats(), store.write_failure())).await
    {
        render_store_stats(&mut text, &stats);
        let failing = failure.map_or(0, |f| f.batches);
        push_series(&mut text, "store_batches_failing", "gauge", failing as f64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// The store's counters, read at scrape time, as `perimeter_store_*`.
fn render_store_stats(out: &mut String, stats: &perimeter_store::StoreStats) {
    let series: [(&str, &str, f64); 11] = [
        ("store_events_stored", "gauge", stats.events_stored as f64),
        (
            "store_events_written_total",
            "counter",
            stats.events_written_total as f64,
        ),
        (
            "store_events_duplicate_total",
            "counter",
            stats.events_duplicate_total as f64,
        ),
        ("store_alerts_stored", "gauge", stats.alerts_stored as f64),
        (
            "store_dead_letters_written_total",
            "counter",
            stats.dead_letters_written_total as f64,
        ),
        (
            "store_batches_written_total",
            "counter",
            stats.batches_written_total as f64,
        ),
        (
            "store_last_commit_seconds",
            "gauge",
            stats.last_commit_seconds,
        ),
        (
            "store_last_batch_seconds",
            "gauge",
            stats.last_batch_seconds,
        ),
        ("store_index_days", "gauge", stats.index_days as f64),
        (
            "store_open_index_writers",
            "gauge",
            stats.open_index_writers as f64,
        ),
        (
            "store_parquet_files_written_total",
            "counter",
            stats.parquet_files_written_total as f64,
        ),
    ];
    for (name, kind, value) in series {
        push_series(out, name, kind, value);
    }
}

/// One unlabelled series with its `# HELP` and `# TYPE` lines.
fn push_series(out: &mut String, name: &str, kind: &str, value: f64) {
    perimeter_model::metrics::push_header(out, name, kind);
    out.push_str(&format!("perimeter_{name} {value}\n"));
}
