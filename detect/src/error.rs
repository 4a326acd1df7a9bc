//! The detect crate's error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The cause is in the message (and not a `source`, which would print it twice in a
    /// cause chain).
    #[error("reading {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// Writing (or replacing, removing) a file failed: a full disk must not read as a read
    /// error. Kept apart from `Io`, which restoring state treats as "the file may be fine".
    #[error("writing {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(transparent)]
    Normalize(#[from] perimeter_model::NormalizeError),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = DetectError> = std::result::Result<T, E>;
