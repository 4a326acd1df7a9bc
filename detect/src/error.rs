//! The detect crate's error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(transparent)]
    Normalize(#[from] perimeter_model::NormalizeError),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = DetectError> = std::result::Result<T, E>;
