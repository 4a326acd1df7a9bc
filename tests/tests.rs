//! Perimeter's integration tests: one binary, run by `cargo test --workspace`.

mod util;

// The query API's certificate helpers, for the TLS tests of the service.
#[path = "../query-api/tests/api/certs.rs"]
mod certs;

// A real Kafka-protocol broker for the Kafka bus tests.
#[path = "support/kafka_broker.rs"]
mod kafka_broker;

// A TLS terminator in front of that broker, for the Kafka bus over TLS.
#[path = "support/tls_front.rs"]
mod tls_front;

pub mod cli;
mod parquet_readers;
pub mod secrets;
mod service;
