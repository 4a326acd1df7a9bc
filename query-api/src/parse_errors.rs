//! JSON bodies for the errors hyper answers itself.
//!
//! A request hyper cannot parse never reaches the router: a request line whose URI is longer
//! than 65,534 bytes (a limit fixed in hyper, not configurable), headers over its buffer, a
//! malformed request line. hyper then writes `414 URI Too Long`, `431` or `400` with an empty
//! body and closes the connection. The API promises `{"error": {"code", "message"}}` on every
//! client error, so each connection's output passes through [`JsonParseErrors`], which swaps
//! such an answer for the same status with a JSON body.
//!
//! The router never writes these answers: its errors always carry a
//! `content-type: application/json` body. An answer with an empty body, no content type and
//! one of these statuses, written whole at the start of a write, is therefore hyper's own.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Wraps each connection the inner acceptor (plain TCP, or TLS) produces in
/// [`JsonParseErrors`]; each answer replaced is counted in `metrics` (`api_requests_total`
/// with `route="unparsed"`: QA found them counted nowhere).
#[derive(Clone)]
pub(crate) struct JsonParseErrorsAcceptor<A>(pub A, pub std::sync::Arc<perimeter_model::Metrics>);

type Wrap<S, V> = Box<dyn FnOnce((S, V)) -> (JsonParseErrors<S>, V) + Send>;

impl<A, I, S> axum_server::accept::Accept<I, S> for JsonParseErrorsAcceptor<A>
where
    A: axum_server::accept::Accept<I, S>,
{
    type Stream = JsonParseErrors<A::Stream>;
    type Service = A::Service;
    type Future = futures_util::future::MapOk<A::Future, Wrap<A::Stream, A::Service>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let metrics = self.1.clone();
        futures_util::TryFutureExt::map_ok(
            self.0.accept(stream, service),
            Box::new(move |(stream, service)| {
                (
                    JsonParseErrors {
                        inner: stream,
                        replacing: None,
                        metrics,
                    },
                    service,
                )
            }),
        )
    }
}

/// A connection whose empty-bodied parse-error answers from hyper get a JSON error body.
#[derive(Debug)]
pub(crate) struct JsonParseErrors<S> {
    inner: S,
    /// The answer written in place of hyper's, how much of it is written, and the length of
    /// hyper's buffer (what to report written once the replacement is out).
    replacing: Option<(Vec<u8>, usize, usize)>,
    metrics: std::sync::Arc<perimeter_model::Metrics>,
}

/// The JSON answer to send instead of `head`, when `head` is one of hyper's own.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    const LONGEST_HEAD: usize = 512;
    if head.len() > LONGEST_HEAD || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head = std::str::from_utf8(head).ok()?;
    let status_line = head
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| head.strip_prefix("HTTP/1.0 "))?;
    let (code, message) = match status_line.get(..4)? {
        "414 " => ("uri_too_long", "the request URI is longer than 65534 bytes"),
        "431 " => (
            "headers_too_large",
            "the request's headers are larger than the server accepts",
        ),
        "400 " => ("bad_request", "the request is not valid HTTP"),
        _ => return None,
    };
    let lower = head.to_ascii_lowercase();
    if !lower.contains("\r\ncontent-length: 0\r\n") || lower.contains("\r\ncontent-type:") {
        return None;
    }
    let status_line = &head[..head.find("\r\n")?];
    // hyper's `date` line is kept (a server with a clock sends one).
    let date = head
        .split("\r\n")
        .find(|l| l.len() > 5 && l[..5].eq_ignore_ascii_case("date:"))
        .map(|l| format!("{l}\r\n"))
        .unwrap_or_default();
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    Some(
        format!(
            "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             {date}connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncWrite + Unpin> JsonParseErrors<S> {
    /// Write what is left of a replacement; `Ready(Some(n))` once it is all out, `n` being the
    /// length of the buffer it stands for.
    fn poll_replacing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<usize>>> {
        let Some((bytes, written, stands_for)) = &mut self.replacing else {
            return Poll::Ready(Ok(None));
        };
        while *written < bytes.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        let stands_for = *stands_for;
        self.replacing = None;
        Poll::Ready(Ok(Some(stands_for)))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonParseErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // hyper offers the same buffer again after `Pending`: the replacement goes on.
        if this.replacing.is_none() {
            if let Some(bytes) = replacement(buf) {
                let status = std::str::from_utf8(&bytes[9..12]).unwrap_or("400");
                this.metrics.inc(
                    "api_requests_total",
                    &[
                        ("route", "unparsed"),
                        ("method", "unknown"),
                        ("status", status),
                    ],
                    1,
                );
                this.replacing = Some((bytes, 0, buf.len()));
            }
        }
        if let Some(stands_for) = ready!(this.poll_replacing(cx))? {
            return Poll::Ready(Ok(stands_for));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacing(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacing(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored, so hyper hands over a response's head in one buffer.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_empty_parse_error_answers_are_replaced() {
        let hyper_414 = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Fri, 04 Dec 2026 10:00:00 GMT\r\n\r\n";
        let replaced = String::from_utf8(replacement(hyper_414).unwrap()).unwrap();
        assert!(
            replaced.starts_with("HTTP/1.1 414 URI Too Long\r\n"),
            "{replaced}"
        );
        let (head, body) = replaced.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(
            head.contains("\r\ndate: Fri, 04 Dec 2026 10:00:00 GMT\r\n"),
            "hyper's date is kept: {head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "uri_too_long");
        let hyper_431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement(hyper_431).is_some());
        // The API's own answers, and bytes that are not a whole empty answer, pass untouched.
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 12\r\n\r\n",
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n",
            b"{\"event\": \"HTTP/1.1 414 \"}\n",
        ] {
            assert!(replacement(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}
