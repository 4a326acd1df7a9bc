//! Perimeter's integration tests: one binary, run by `cargo test --workspace`.

mod util;

mod cli;
mod secrets;
mod service;
