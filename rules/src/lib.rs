//! Causeway's vocabulary and its pure correlation core.
//!
//! Everything here is deterministic and free of I/O: events, the service catalog,
//! rule files and the correlation state machine that links causes to effects and
//! turns chains into incidents. Time enters only as data ([`EventTime`] values and
//! the watermark), so the same events always produce the same incidents, whether
//! they arrive live, from a restart, or from a replay of history.

pub mod catalog;
pub mod correlate;
pub mod error;
pub mod event;
pub mod id;
pub mod rule;
pub mod runbook;
pub mod time;

pub use catalog::{Catalog, IndexedCatalog, ServiceEntry};
pub use correlate::{
    Correlator, CorrelatorConfig, EdgeRole, EventRow, IncidentEdge, IncidentState, IncidentVersion,
    Matches, NoValues, Output, OutputSize, PushOutcome, RuleValues, Side, StateStats,
    edges_per_version,
};
pub use error::{Error, Result};
pub use event::{Event, EventKind, Severity};
pub use id::EventId;
pub use rule::{Example, ExpectedIncident, Join, RulePack, RuleSpec};
pub use runbook::{
    ActionClass, ActionContext, Decision, DecisionKind, Execute, Kernel, KernelOutput, RunbookSpec,
};
pub use time::{EventTime, ProcessingTime};
