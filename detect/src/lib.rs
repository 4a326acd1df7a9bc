//! Perimeter's detection stage: everything between a raw vendor record and a stored result.
//!
//! - [`normalize`]: vendor records -> [`perimeter_model::Event`] with ECS fields (built-in
//!   normalizers per SaaS + declarative mappings for new sources).
//! - [`mask`]: secrets and PII masked before anything leaves memory.
//! - [`sigma`]: Sigma rules, correlations and filters compiled into a fast matcher.
//! - [`ueba`]: behavioural baselines (auth-failure bursts, spraying, volume anomalies, ...).
//! - [`silence`]: alerts for sources that stopped sending.
//! - [`pipeline`]: the synchronous, batch-oriented middle that wires them together.
//!
//! Guarantee: every event and alert that leaves [`pipeline::Pipeline`] has been masked;
//! detectors see clear values in memory only.

mod case_fold;
pub mod error;
mod identity_hash;
pub mod mask;
pub mod normalize;
pub mod pipeline;
pub mod sigma;
pub mod silence;
mod state_file;
mod stream_clock;
pub mod ueba;

pub use error::{DetectError, Result};

/// Fewest events between two sweeps of detection state forced regardless of event time, in the
/// correlator and in the UEBA engine alike: their sweeps follow the newest event time of all
/// streams, which stops when that stream stalls ahead of the others.
pub(crate) const FORCED_SWEEP_MIN_EVENTS: u64 = 4096;
