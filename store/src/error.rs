//! The store's one error enum.

use std::path::PathBuf;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The caller's query is malformed (tantivy syntax, unknown field, bad cursor, bad range).
    /// The API maps this to 400.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// The batch cannot be stored as given (for example an event without a tenant). Nothing
    /// of the batch was written.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// Another batch of the same group commit failed (see `commit_interval_ms`); nothing of
    /// this batch's events is acknowledged.
    #[error("group commit failed: {0}")]
    GroupCommit(String),
    /// The configuration is inconsistent (checked in [`crate::Store::open`]).
    #[error("invalid store config: {0}")]
    InvalidConfig(String),
    /// A file on disk does not hold what the store wrote there.
    #[error("corrupt store file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// Another process (a running `perimeter run` or `perimeter demo`) has the data directory
    /// open for writing: two writers would undo each other's unfinished batches.
    #[error("{path} is in use by another Perimeter process (`perimeter run` or `perimeter demo`): stop it first, or send reads to it with --server")]
    Locked { path: PathBuf },
    /// The store was opened for reading ([`crate::Store::open_read_only`]).
    #[error("the store in {path} is open read-only")]
    ReadOnly { path: PathBuf },
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tantivy: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// The store's result type.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Attach the path to an IO error.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| StoreError::Io {
            path: path.into(),
            source,
        })
    }
}
