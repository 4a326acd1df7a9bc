//! A request body that sends nothing for `client_silence_seconds` ends the request with 408.
//!
//! hyper's `header_read_timeout` covers a request's headers only: a client that announced a
//! body and then sent it slowly, or stopped, held its handler (and its connection, and for
//! ingest a place among the batches being read) for as long as the socket stayed open. Every
//! body is read through [`SilenceLimitedBody`], whose read fails once no part of it has
//! arrived for the limit, and [`answer_silent_bodies`] answers such a request `408` with the
//! API's JSON error whatever the handler made of the failed read (the ingest route, the JSON
//! extractors: each says "bad body" in its own words), and closes the connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// A body whose next part must arrive within `silence` of the read asking for it.
struct SilenceLimitedBody {
    inner: Body,
    silence: Duration,
    /// Started when a read finds nothing ready; dropped when a part arrives.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Set when the deadline passed, for [`answer_silent_bodies`].
    expired: Arc<AtomicBool>,
}

/// Whether the request's body went silent (a request extension): what the request counter
/// records, since the `408` is put in place after it has seen the handler's answer.
#[derive(Clone)]
pub(crate) struct BodyWentSilent(Arc<AtomicBool>);

impl BodyWentSilent {
    /// The status a request's answer goes out with: `408` when its body went silent.
    pub(crate) fn status_of(request: &Request) -> impl Fn(StatusCode) -> StatusCode {
        let flag = request.extensions().get::<BodyWentSilent>().cloned();
        move |status| match &flag {
            Some(BodyWentSilent(expired)) if expired.load(Ordering::Relaxed) => {
                StatusCode::REQUEST_TIMEOUT
            }
            _ => status,
        }
    }
}

/// The read error of a body silent past the limit.
#[derive(Debug, thiserror::Error)]
#[error("no part of the request body arrived for {0} seconds")]
struct BodySilent(u64);

impl HttpBody for SilenceLimitedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.deadline = None;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let silence = this.silence;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(silence)));
        if deadline.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(BodySilent(silence.as_secs()).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: read the request's body through [`SilenceLimitedBody`] and answer `408`
/// (JSON error `request_timeout`, `Connection: close`) when it went silent.
pub(crate) async fn answer_silent_bodies(
    State(silence): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let expired = Arc::new(AtomicBool::new(false));
    let mut request = request;
    request
        .extensions_mut()
        .insert(BodyWentSilent(expired.clone()));
    let request = request.map(|inner| {
        Body::new(SilenceLimitedBody {
            inner,
            silence,
            deadline: None,
            expired: expired.clone(),
        })
    });
    let response = next.run(request).await;
    if !expired.load(Ordering::Relaxed) {
        return response;
    }
    tracing::info!(
        silence_seconds = silence.as_secs(),
        "a request body went silent; answered 408 and closed the connection"
    );
    let body = serde_json::json!({"error": {
        "code": "request_timeout",
        "message": format!(
            "{}; send the whole body without pauses (the limit is `client_silence_seconds`)",
            BodySilent(silence.as_secs())
        ),
    }});
    let mut response = (StatusCode::REQUEST_TIMEOUT, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
