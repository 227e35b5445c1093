//! Runbooks and the safety kernel that decides whether they run.
//!
//! A runbook is declared next to the rules (`runbooks:` in a rule file) and named
//! by rules (`runbook:`). It has an [`ActionClass`] that fixes its reversibility
//! and whether it needs a human's approval, a [`Mode`] (every runbook starts in
//! dry run), a [`Target`] (webhook or Kafka topic), parameter templates rendered
//! from the incident, a [`Budget`], an [`Approval`] timeout, an optional
//! [`Validation`] window and an optional compensating runbook.
//!
//! The [`Kernel`] is pure and deterministic: time comes in as data
//! ([`ProcessingTime`](crate::ProcessingTime)), it performs no I/O, and it hands
//! back [`KernelOutput`]s: audit rows ([`Decision`], the `actions` table),
//! actions for the caller to deliver ([`Execute`]) and events for the event log.
//!
//! For a new action the checks run in this order, and the first that applies
//! decides:
//! 1. the kill switch is on → `denied`;
//! 2. the runbook is halted → `budget_exhausted` (until [`Kernel::resume`]);
//! 3. the budget window for the runbook and its scope key (the runbook, the
//!    `service` variable, or the incident's entity) already holds `max_actions`
//!    triggered, dry-run or awaiting-approval decisions → `budget_exhausted`, the
//!    runbook halts, and one `CausewayRunbookBudgetExhausted` alert goes into the
//!    stream (once per halt);
//! 4. a parameter names a variable that is missing or empty → `denied` (fails
//!    closed);
//! 5. approval is required → `awaiting_approval`, until approved, denied or
//!    expired (expiry fails closed);
//! 6. the runbook is in dry run → `dry_run`, nothing to deliver;
//! 7. else `triggered`, with an [`Execute`].
//!
//! Exactly one such decision is made per (incident, runbook): the action id is a
//! hash of both, and the kernel remembers decided ids for a horizon (7 days by
//! default) and across restarts ([`Kernel::snapshot`]), so re-sent incident
//! versions, replays and restarts never trigger twice; the id is also the
//! `Idempotency-Key` of every delivery attempt. After a delivered action with a
//! validation window, the incident must resolve (or be merged) within it, or the
//! action is `validation_failed` and the compensating runbook goes through the
//! same checks as a new action of its own.

mod kernel;
mod spec;
mod template;
#[cfg(test)]
mod tests;

pub use kernel::{
    ActionContext, BUDGET_ALERT_NAME, Decision, DecisionKind, Execute, KERNEL_SOURCE, Kernel,
    KernelConfig, KernelOutput, KernelState, KernelStats,
};
pub use spec::{
    ActionClass, Approval, Budget, BudgetScope, DEFAULT_ACTIONS_TOPIC, Mode, RunbookSpec,
    TEMPLATE_VARIABLES, Target, Validation, is_known_variable,
};
pub use template::render;

pub(crate) use spec::{Declared, validate, validate_pack};
