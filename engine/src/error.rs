//! The one error type of the engine crate.

use std::path::PathBuf;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Engine failures, by class.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rule predicate does not compile against the event schema.
    #[error("rule {rule_id}: {field}: {reason}")]
    InvalidPredicate {
        rule_id: String,
        field: String,
        reason: String,
    },
    /// A query was refused or failed; the message is safe to show to the client.
    #[error("{0}")]
    Query(String),
    /// A query ran past its time limit.
    #[error("query cancelled after {seconds}s (limit)")]
    QueryTimeout { seconds: u64 },
    /// As many queries as allowed are running; the client should retry shortly.
    #[error("{limit} SQL queries are already running (the limit); try again shortly")]
    Busy { limit: usize },
    /// Reading or writing the history or checkpoint failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// An object-store request for the history failed.
    #[error("{action} {location}: {reason}")]
    ObjectStore {
        action: &'static str,
        location: String,
        reason: String,
    },
    /// A history location (URL, options) that cannot be used.
    #[error("history location {location}: {reason}")]
    Location { location: String, reason: String },
    /// The checkpoint exists but cannot be read back.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },
    /// Arrow, Parquet or DataFusion failed on data we produced.
    #[error("internal: {0}")]
    Internal(String),
    /// Rule or event vocabulary error.
    #[error(transparent)]
    Rules(#[from] causeway_rules::Error),
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Error::Internal(e.to_string())
    }
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
