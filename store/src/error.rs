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
    /// Writing an export's bytes where its caller sends them failed (a full disk, a closed
    /// pipe).
    #[error("writing the export: {0}")]
    ExportOutput(#[source] std::io::Error),
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
    /// A write failed while the filesystem of the data directory is (nearly) full: said
    /// outright, as the error underneath may not name it (tantivy's "index writer was killed"
    /// hides the io error of its indexing thread). See [`name_full_disk`].
    #[error("no space left on device: {path} has {free_bytes} bytes free; {cause}")]
    NoSpace {
        path: PathBuf,
        free_bytes: u64,
        cause: Box<StoreError>,
    },
}

impl StoreError {
    /// Whether the store could not write for want of space (a full disk, a quota): a client
    /// may retry once space is freed.
    pub fn is_no_space(&self) -> bool {
        match self {
            StoreError::NoSpace { .. } => true,
            StoreError::Io { source, .. } | StoreError::ExportOutput(source) => {
                source.raw_os_error() == Some(28) // ENOSPC
                    || source.raw_os_error() == Some(122) // EDQUOT
            }
            _ => false,
        }
    }
}

/// Below this many free bytes a write failure is put down to a full disk: a batch of 50k events
/// takes tens of MB (its index segment, its Parquet file), and a failed segment's files stay
/// until the next commit cleans them up.
const LOW_SPACE_BYTES: u64 = 64 << 20;

/// `error`, a failed write to the store in `root`, as [`StoreError::NoSpace`] when `root`'s
/// filesystem has less than [`LOW_SPACE_BYTES`] free and the error does not say so already.
pub(crate) fn name_full_disk(error: StoreError, root: &std::path::Path) -> StoreError {
    name_full_disk_with(error, root, free_bytes(root))
}

fn name_full_disk_with(error: StoreError, root: &std::path::Path, free: Option<u64>) -> StoreError {
    let wrong_input = matches!(
        error,
        StoreError::InvalidQuery(_)
            | StoreError::InvalidBatch(_)
            | StoreError::InvalidConfig(_)
            | StoreError::Locked { .. }
            | StoreError::ReadOnly { .. }
            | StoreError::NoSpace { .. }
    );
    match free {
        Some(free_bytes) if free_bytes < LOW_SPACE_BYTES && !wrong_input => {
            // An io error of our own (Parquet, the journals) names it already.
            if error.to_string().contains("No space left on device") {
                return error;
            }
            StoreError::NoSpace {
                path: root.to_path_buf(),
                free_bytes,
                cause: Box::new(error),
            }
        }
        _ => error,
    }
}

/// Bytes free for unprivileged writers on the filesystem holding `path`, if it can be told.
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    fs4::available_space(path).ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn writer_killed() -> StoreError {
        StoreError::Tantivy(tantivy::TantivyError::ErrorInThread(
            "An index writer was killed.. A worker thread encountered an error (io::Error most likely) or panicked.".into(),
        ))
    }

    /// The QA finding: a full disk answered every batch with tantivy's "index writer was
    /// killed", never "No space left on device".
    #[test]
    fn a_write_failure_on_a_full_disk_says_so() {
        let error = name_full_disk_with(writer_killed(), Path::new("/data"), Some(4096));
        assert_eq!(
            error.to_string(),
            format!(
                "no space left on device: /data has 4096 bytes free; {}",
                writer_killed()
            )
        );
    }

    #[test]
    fn a_full_disk_is_named_only_when_it_is_full_and_not_named_already() {
        let root = Path::new("/data");
        // Space left, or unknown: the error as it was.
        for free in [Some(10 << 30), None] {
            let error = name_full_disk_with(writer_killed(), root, free);
            assert!(matches!(error, StoreError::Tantivy(_)), "{error}");
        }
        // An io error naming it already is not wrapped.
        let enospc = StoreError::Io {
            path: "/data/parquet/x.parquet".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        let error = name_full_disk_with(enospc, root, Some(0));
        assert!(matches!(error, StoreError::Io { .. }), "{error}");
        // A batch refused for what it holds is not about the disk.
        let error =
            name_full_disk_with(StoreError::InvalidBatch("no tenant".into()), root, Some(0));
        assert!(matches!(error, StoreError::InvalidBatch(_)), "{error}");
    }
}
