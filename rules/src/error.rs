//! The one error type of the rules crate.

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in pure code: bad input data or bad rule files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A timestamp could not be parsed.
    #[error("invalid timestamp {value:?}: {reason}")]
    InvalidTime { value: String, reason: String },
    /// A CloudEvents document is not a valid Causeway event.
    #[error("invalid event: {reason}")]
    InvalidEvent { reason: String },
    /// A rule file failed validation.
    #[error("{file}: {field}: {reason}")]
    InvalidRule {
        file: String,
        field: String,
        reason: String,
    },
    /// Checkpointed correlation state belongs to another rule pack.
    #[error(
        "the saved correlation state was built with other rules ({saved}); \
         correlation restarts from the log"
    )]
    RulesChanged { saved: String },
    /// Checkpointed correlation state could not be read back.
    #[error("invalid correlation state: {reason}")]
    InvalidState { reason: String },
    /// A runbook parameter template is malformed or names a missing variable.
    #[error("template {template:?}: {reason}")]
    Template { template: String, reason: String },
    /// No runbook action with this id is known (never decided, or forgotten
    /// past the kernel's horizon).
    #[error("no runbook action {action_id}")]
    ActionNotFound { action_id: String },
    /// A decision on a runbook action contradicts one already made.
    #[error("runbook action {action_id}: {reason}")]
    ActionConflict { action_id: String, reason: String },
    /// An approval or denial named no approver.
    #[error("runbook action {action_id}: the approver must be named")]
    InvalidApprover { action_id: String },
    /// No runbook is declared with this name.
    #[error("no runbook named {runbook:?}")]
    UnknownRunbook { runbook: String },
}
