//! The one error type of the connectors crate.

use std::path::PathBuf;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Connector failures. Receivers map them onto HTTP status codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The payload is not what the format says (bad JSON, missing fields): 400.
    #[error("malformed {source_name} payload: {reason}")]
    Malformed {
        source_name: &'static str,
        reason: String,
    },
    /// Well-formed but not something we accept (version, event type): 422.
    #[error("unsupported {source_name} payload: {reason}")]
    Unsupported {
        source_name: &'static str,
        reason: String,
    },
    /// The event log cannot take writes now: 503, the sender should retry.
    #[error("event log unavailable: {reason}")]
    LogUnavailable { reason: String },
    /// Local file I/O failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The event log holds a record that is not a valid event.
    #[error("event log record {offset}: {reason}")]
    CorruptRecord { offset: u64, reason: String },
    /// A Kafka operation failed.
    #[error("kafka: {operation}: {reason}")]
    Kafka {
        operation: &'static str,
        reason: String,
    },
    /// An outbound HTTP request failed.
    #[error("object store {url}: {reason}")]
    ObjectStore { url: String, reason: String },
    #[error("http request to {url} failed: {reason}")]
    Http { url: String, reason: String },
}

impl Error {
    /// Says where in a payload a decode error happened (`alerts[3]`, `line 7`);
    /// other errors pass through unchanged.
    pub(crate) fn at(self, place: &str) -> Error {
        match self {
            Error::Malformed {
                source_name,
                reason,
            } => Error::Malformed {
                source_name,
                reason: format!("{place}: {reason}"),
            },
            Error::Unsupported {
                source_name,
                reason,
            } => Error::Unsupported {
                source_name,
                reason: format!("{place}: {reason}"),
            },
            other => other,
        }
    }

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
