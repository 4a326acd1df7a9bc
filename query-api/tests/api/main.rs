//! The query API's integration tests: one binary, a real server on loopback per test, a real
//! store in a tempdir.

mod certs;
mod fuzz;
mod http;
mod tls;
mod util;
mod webhook_receiver;
