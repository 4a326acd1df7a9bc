//! The address of the client a request came from, for the records about it (the audit log, the
//! warning of a refused token): when a token leaks, where its uses came from is the first thing
//! an analyst asks, and nothing recorded it (QA).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    static CLIENT: SocketAddr;
}

/// Middleware: the request is handled knowing its client's address ([`current_client`]).
pub(crate) async fn remember_client(request: Request, next: Next) -> Response {
    match request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
    {
        Some(addr) => CLIENT.scope(addr, next.run(request)).await,
        None => next.run(request).await,
    }
}

/// `work` on a task of its own (running to its end if the caller's future is dropped), still
/// knowing the client of the request being handled: a task-local does not follow a spawn.
pub(crate) async fn spawn_knowing_client<F>(work: F) -> Result<F::Output, tokio::task::JoinError>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    match CLIENT.try_with(|addr| *addr).ok() {
        Some(addr) => tokio::spawn(CLIENT.scope(addr, work)).await,
        None => tokio::spawn(work).await,
    }
}

/// The IP address of the client of the request being handled, if any (a request served over a
/// listener, not one made in a test or by the `perimeter` command).
pub fn current_client() -> Option<String> {
    CLIENT.try_with(|addr| addr.ip().to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_client_is_known_within_its_request_only() {
        assert_eq!(current_client(), None);
        let addr: SocketAddr = "192.0.2.7:50123".parse().unwrap();
        let inside = CLIENT.scope(addr, async { current_client() }).await;
        assert_eq!(inside.as_deref(), Some("192.0.2.7"));
    }
}
