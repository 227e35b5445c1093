//! Causeway's edges: HTTP receivers and their decoders, the event log, and the
//! HTTP client used to post to receivers and webhooks.
//!
//! Receivers decode a source's payload into normalized events and append them to
//! the event log; they answer 2xx only once the log has made them durable. The log
//! is the only hand-off to the engine.

pub mod client;
pub mod decode;
pub mod error;
pub mod eventlog;
pub mod import;
pub mod kafka;
pub mod metrics;
pub mod object_store;
pub mod receiver;
pub mod webhook;

pub use error::{Error, Result};
pub use eventlog::{EventLog, LogConsumer, LogRecord};
pub use receiver::{ReceiverConfig, ReceiverState};
