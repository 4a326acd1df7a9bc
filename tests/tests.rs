//! Perimeter's integration tests: one binary, run by `cargo test --workspace`.

mod util;

pub mod cli;
pub mod secrets;
mod service;
