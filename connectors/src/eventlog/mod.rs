//! The event log: the only hand-off between receivers and the engine.
//!
//! Producers append normalized events and get an answer only once the log has
//! made them durable. The engine reads records by `(partition, offset)` from
//! positions it keeps in its own checkpoint. Values are CloudEvents JSON, the same
//! bytes the Kafka log carries.

pub mod embedded;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use causeway_rules::Event;
use futures::future::BoxFuture;

use crate::Result;

/// One record read from the log.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub partition: u32,
    pub offset: u64,
    pub event: Event,
}

/// The write side, shared by every receiver.
pub trait EventLog: Send + Sync + Debug {
    /// Appends events; resolves once they are durable (or with
    /// [`crate::Error::LogUnavailable`]).
    fn append(&self, events: Vec<Event>) -> BoxFuture<'_, Result<()>>;

    /// Whether the log currently accepts writes (for readiness).
    fn is_available(&self) -> bool;

    /// The next offset to be written, per partition.
    fn end_offsets(&self) -> BTreeMap<u32, u64>;
}

/// The read side, owned by one engine.
pub trait LogConsumer: Send + Debug {
    /// Positions the consumer at these next offsets (partitions not named start at 0).
    fn seek(&mut self, next_offsets: &BTreeMap<u32, u64>) -> Result<()>;

    /// Up to `max` records, waiting at most `wait` for the first.
    fn poll(&mut self, max: usize, wait: Duration) -> BoxFuture<'_, Result<Vec<LogRecord>>>;
}
