//! Perimeter's ingest stage: turns bytes from files, stdin and HTTP into parsed JSON records or
//! dead letters, and carries them over the in-process bus.
//!
//! Guarantees:
//! - no input line is dropped silently: every non-blank line becomes either a [`InputItem::Record`]
//!   or an [`InputItem::Invalid`] with its 1-based line number and the reason;
//! - memory stays bounded on hostile input: a line longer than `max_line_bytes` is skipped while it
//!   is read (never buffered whole) and reported;
//! - nothing here panics on input bytes (invalid UTF-8, truncated JSON, wrong types).

pub mod bus;
pub mod csv_rows;
pub mod http;
pub mod jsonl;
pub mod kafka;
mod kafka_seal;
pub mod poll;
pub mod spool;

pub use csv_rows::CsvRows;
pub use jsonl::{
    decompressed, InputFormat, InputItem, JsonInput, JsonlReader, JsonlReaderConfig,
    DEFAULT_MAX_LINE_BYTES,
};

/// Errors of the ingest crate.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("reading {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the pipeline is gone (shutting down)")]
    PipelineClosed,
    #[error("the pipeline rejected the batch: {0}")]
    Rejected(String),
}

pub type Result<T, E = IngestError> = std::result::Result<T, E>;
