//! At most `max_connections` open connections: past it, new ones are closed as accepted.
//!
//! The silence limits close idle and slow connections, but a client opening connections
//! faster than they time out (or many clients at once) could still take every file descriptor
//! the process may hold, and the store, which opens index and Parquet files as it writes,
//! would then fail. Refused connections are counted (`api_connections_refused_total`) and
//! logged at most once a minute.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The count of open connections and the limit.
#[derive(Debug)]
pub(crate) struct ConnectionCap {
    open: AtomicUsize,
    max: usize,
    metrics: Arc<perimeter_model::Metrics>,
    started: Instant,
    /// Seconds since `started` of the last warning, and the refusals since.
    warned_at: AtomicU64,
    refused_since_warning: AtomicU64,
}

const WARN_EVERY: Duration = Duration::from_secs(60);

impl ConnectionCap {
    pub(crate) fn new(max: usize, metrics: Arc<perimeter_model::Metrics>) -> Arc<ConnectionCap> {
        Arc::new(ConnectionCap {
            open: AtomicUsize::new(0),
            max,
            metrics,
            started: Instant::now(),
            warned_at: AtomicU64::new(0),
            refused_since_warning: AtomicU64::new(0),
        })
    }

    /// A place for one more connection, or `None` at the limit.
    fn take(self: &Arc<Self>) -> Option<OpenConnection> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .is_ok();
        if taken {
            return Some(OpenConnection(self.clone()));
        }
        self.metrics.inc("api_connections_refused_total", &[], 1);
        let refused = self.refused_since_warning.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.started.elapsed().as_secs() + WARN_EVERY.as_secs();
        let last = self.warned_at.load(Ordering::Relaxed);
        if now >= last + WARN_EVERY.as_secs()
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.refused_since_warning
                .fetch_sub(refused, Ordering::Relaxed);
            tracing::warn!(
                max_connections = self.max,
                refused,
                "connections refused: `[api] max_connections` are open (clients holding \
                 connections open, or more clients than the limit allows)"
            );
        }
        None
    }
}

/// One open connection's place under the cap, given back when dropped.
#[derive(Debug)]
pub(crate) struct OpenConnection(Arc<ConnectionCap>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts through `inner` only while under the cap; a connection past it is closed at once.
#[derive(Debug, Clone)]
pub(crate) struct CappedAcceptor<A> {
    pub(crate) inner: A,
    pub(crate) cap: Arc<ConnectionCap>,
}

impl<A, I, S> axum_server::accept::Accept<I, S> for CappedAcceptor<A>
where
    A: axum_server::accept::Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Capped<A::Stream>;
    type Service = A::Service;
    type Future = BoxFuture<'static, io::Result<(Capped<A::Stream>, A::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        // The socket is dropped (closed) with the refused future.
        let Some(place) = self.cap.take() else {
            return futures_util::future::ready(Err(io::Error::other(
                "max_connections reached; connection closed",
            )))
            .boxed();
        };
        self.inner
            .accept(stream, service)
            .map(move |accepted| {
                accepted.map(|(inner, service)| {
                    (
                        Capped {
                            inner,
                            _place: place,
                        },
                        service,
                    )
                })
            })
            .boxed()
    }
}

/// A connection holding its place under the cap.
#[derive(Debug)]
pub(crate) struct Capped<S> {
    inner: S,
    _place: OpenConnection,
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
