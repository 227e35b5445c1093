//! Causeway's engine: where events become Arrow batches, rules become vectorized
//! predicates, the pure correlator is driven by watermarks, and results land in a
//! Parquet history that DataFusion queries.
//!
//! The engine never talks to Kafka or HTTP: the binary feeds it records read from
//! the event log and hands what it emits to the sinks. It owns time: per-source
//! watermarks with idleness are computed here from processing time, and passed to
//! the correlator as data.

pub mod driver;
pub mod error;
pub mod examples;
pub mod history;
pub mod metrics;
pub mod operator;
pub mod predicate;
pub mod replay;
pub mod schema;
pub mod sql;
pub mod store;
mod text_in_list;
pub mod watermark;

pub use driver::{
    Engine, EngineOptions, EngineOutput, EngineStatus, Enricher, LogPosition, PartitionStateMode,
};
pub use error::{Error, Result};
pub use history::History;
pub use operator::Operator;
pub use sql::{HistoryReader, QueryLimits};
pub use store::{HistoryLocation, ObjectHistory, ObjectStoreSpec};
pub use watermark::{LogClock, SourceTiming, WatermarkConfig};
