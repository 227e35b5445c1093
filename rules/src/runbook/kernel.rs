//! The runbook safety kernel: a deterministic function of (state, input, time).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::spec::{ActionClass, BudgetScope, Mode, RunbookSpec, Target};
use super::template::{RenderError, render_text};
use crate::correlate::{IncidentState, IncidentVersion};
use crate::event::{Event, EventKind, Severity};
use crate::time::ProcessingTime;
use crate::{Error, Result, id};

/// `alertname` of the event a runbook's budget exhaustion emits.
pub const BUDGET_ALERT_NAME: &str = "CausewayRunbookBudgetExhausted";

/// `source` of the events the kernel emits.
pub const KERNEL_SOURCE: &str = "causeway";

/// Version of [`Kernel::snapshot`]'s format.
const SNAPSHOT_VERSION: u32 = 1;

/// What the kernel decided about an action: the `decision` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Handed to the caller for delivery (live runbook, no approval needed).
    Triggered,
    /// Everything checked and recorded; nothing called.
    DryRun,
    /// Waits for a human until `expires_at`.
    AwaitingApproval,
    /// A human approved; delivered when the runbook is live.
    Approved,
    /// Refused: kill switch, a human, a missing template variable.
    Denied,
    /// Refused: the runbook's budget is spent and it is halted.
    BudgetExhausted,
    /// No human decided in time: not run (fails closed).
    Expired,
    /// The incident did not resolve within the runbook's validation window.
    ValidationFailed,
    /// The caller could not deliver the action, for good.
    Failed,
}

impl DecisionKind {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Triggered => "triggered",
            DecisionKind::DryRun => "dry_run",
            DecisionKind::AwaitingApproval => "awaiting_approval",
            DecisionKind::Approved => "approved",
            DecisionKind::Denied => "denied",
            DecisionKind::BudgetExhausted => "budget_exhausted",
            DecisionKind::Expired => "expired",
            DecisionKind::ValidationFailed => "validation_failed",
            DecisionKind::Failed => "failed",
        }
    }

    /// Whether a decision of this kind spends budget: a storm is caught whether
    /// the runbook is live, dry-run or waiting for approval.
    pub fn spends_budget(self) -> bool {
        matches!(
            self,
            DecisionKind::Triggered | DecisionKind::DryRun | DecisionKind::AwaitingApproval
        )
    }
}

impl fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decision: a row of the `actions` table. One action (one `action_id`) can
/// have several rows over its life: `awaiting_approval` then `approved`,
/// `denied` or `expired`; `triggered` then `validation_failed` or `failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub action_id: String,
    pub incident_id: String,
    pub incident_version: u32,
    pub runbook: String,
    #[serde(rename = "action_class")]
    pub class: ActionClass,
    pub decision: DecisionKind,
    pub reason: String,
    pub decided_at: ProcessingTime,
    /// `webhook:<url>` or `kafka:<topic>`.
    pub target: String,
    /// The rendered parameters (empty when they could not be rendered).
    pub params: BTreeMap<String, String>,
    /// Equal to `action_id`: every retry and every restart sends the same key.
    pub idempotency_key: String,
    /// Who approved or denied, on those rows.
    pub approver: Option<String>,
    /// When an `awaiting_approval` action expires.
    pub expires_at: Option<ProcessingTime>,
}

/// An action for the caller to deliver (only for `triggered` and `approved`
/// decisions of live runbooks). Deliver with `Idempotency-Key:
/// decision.idempotency_key`; report a permanent failure with
/// [`Kernel::delivery_failed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execute {
    pub decision: Decision,
    pub params: BTreeMap<String, String>,
    pub target: Target,
}

/// What one call into the kernel produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KernelOutput {
    /// Audit rows, in the order they were decided.
    pub decisions: Vec<Decision>,
    /// Actions to deliver.
    pub execute: Vec<Execute>,
    /// Events for the event log (budget exhaustion, and its resolution on resume).
    pub events: Vec<Event>,
    /// Actions whose incident resolved (or merged) within the validation window.
    pub validated: Vec<String>,
}

impl KernelOutput {
    /// Appends another output.
    pub fn extend(&mut self, other: KernelOutput) {
        self.decisions.extend(other.decisions);
        self.execute.extend(other.execute);
        self.events.extend(other.events);
        self.validated.extend(other.validated);
    }

    /// Whether nothing was produced.
    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty()
            && self.execute.is_empty()
            && self.events.is_empty()
            && self.validated.is_empty()
    }
}

/// An incident version with the runbook its rule names and the variables the
/// caller resolved for it (`service`, `namespace`, `revision`,
/// `previous_revision`, `root_cause_summary`, `actor`, `evidence_url`,
/// `label.<key>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionContext {
    pub incident: IncidentVersion,
    /// The runbook the incident's rule names.
    pub runbook: Option<String>,
    pub vars: BTreeMap<String, String>,
}

impl ActionContext {
    /// A context with no variables beyond the incident's own.
    pub fn new(incident: IncidentVersion, runbook: Option<String>) -> ActionContext {
        ActionContext {
            incident,
            runbook,
            vars: BTreeMap::new(),
        }
    }

    /// Adds a variable.
    pub fn with_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// The caller's variables plus the incident's built-ins (`incident_id`,
    /// `incident_version`, `rule_id`, `title`, `severity`, `scope`, `entity`,
    /// `root_cause_event_id`), which win over variables of the same name.
    pub fn variables(&self) -> BTreeMap<String, String> {
        let inc = &self.incident;
        let mut v = self.vars.clone();
        v.insert("incident_id".into(), inc.incident_id.to_string());
        v.insert("incident_version".into(), inc.version.to_string());
        v.insert("rule_id".into(), inc.rule_id.to_string());
        v.insert("title".into(), inc.title.to_string());
        v.insert("severity".into(), inc.severity.as_str().into());
        v.insert("scope".into(), inc.scope.to_string());
        v.insert("entity".into(), inc.entity.to_string());
        match inc.root_cause_event_id {
            Some(root) => v.insert("root_cause_event_id".into(), root.to_string()),
            None => v.remove("root_cause_event_id"),
        };
        v
    }

    fn closed(&self) -> bool {
        self.incident.state == IncidentState::Resolved || self.incident.merged_into.is_some()
    }
}

/// Tuning of the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelConfig {
    /// How long an action is remembered after its last decision: within it, a
    /// re-sent incident version, a replay or a restart never decides it again.
    pub decided_horizon: Duration,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            decided_horizon: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Sizes of the kernel's state, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub kill_switch: bool,
    pub halted_runbooks: usize,
    pub pending_approvals: usize,
    pub pending_validations: usize,
    /// Actions remembered (decided within the horizon).
    pub remembered_actions: usize,
    /// Budget windows held (runbook × scope key).
    pub budget_windows: usize,
}

/// The kernel's durable state: everything a restart must restore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelState {
    kill_switch: bool,
    /// Every action decided within the horizon, by action id.
    actions: BTreeMap<String, ActionRecord>,
    /// Budget-spending decision times, by runbook and scope key.
    budgets: BTreeMap<String, BTreeMap<String, Vec<ProcessingTime>>>,
    halted: BTreeMap<String, Halt>,
    approvals: BTreeMap<String, PendingApproval>,
    validations: BTreeMap<String, PendingValidation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ActionRecord {
    incident_id: String,
    runbook: String,
    /// The latest decision's kind and time.
    outcome: DecisionKind,
    updated_at: ProcessingTime,
    /// How a human (or the clock) settled an approval.
    approval: Option<Settled>,
    /// The row handed out for delivery, for a later `failed` row.
    executed: Option<Decision>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Settled {
    kind: DecisionKind,
    by: Option<String>,
    at: ProcessingTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Halt {
    since: ProcessingTime,
    reason: String,
    /// The event emitted when it halted; resolved on resume.
    alert: Event,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PendingApproval {
    /// The `awaiting_approval` row: what a human approves is what runs.
    row: Decision,
    target: Target,
    context: ActionContext,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PendingValidation {
    /// The row that was executed.
    row: Decision,
    deadline: ProcessingTime,
    context: ActionContext,
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    version: u32,
    state: &'a KernelState,
}

#[derive(Deserialize)]
struct SnapshotOwned {
    version: u32,
    state: KernelState,
}

/// The runbook safety kernel. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct Kernel {
    runbooks: BTreeMap<String, RunbookSpec>,
    config: KernelConfig,
    state: KernelState,
}

impl Kernel {
    /// A kernel for these runbooks with the default configuration and no state.
    pub fn new(runbooks: &[RunbookSpec]) -> Kernel {
        Kernel::with_config(runbooks, KernelConfig::default())
    }

    /// A kernel with the given configuration and no state.
    pub fn with_config(runbooks: &[RunbookSpec], config: KernelConfig) -> Kernel {
        Kernel::from_state(runbooks, config, KernelState::default())
    }

    /// A kernel over restored state.
    pub fn from_state(
        runbooks: &[RunbookSpec],
        config: KernelConfig,
        state: KernelState,
    ) -> Kernel {
        let mut k = Kernel {
            runbooks: BTreeMap::new(),
            config,
            state,
        };
        k.update_runbooks(runbooks);
        k
    }

    /// Replaces the runbooks (a configuration reload). State is kept: budgets,
    /// halts, pending approvals and validations, and what was decided. A runbook
    /// that disappears keeps its halt; its pending approvals are denied if
    /// approved, and expire otherwise.
    pub fn update_runbooks(&mut self, runbooks: &[RunbookSpec]) {
        self.runbooks = runbooks
            .iter()
            .map(|r| (r.name.clone(), r.clone()))
            .collect();
    }

    /// A declared runbook.
    pub fn runbook(&self, name: &str) -> Option<&RunbookSpec> {
        self.runbooks.get(name)
    }

    /// The id of the action an incident's runbook gets: a hash of both.
    pub fn action_id(incident_id: &str, runbook: &str) -> String {
        id::derive("act", &[incident_id, runbook, ""])
    }

    /// The id of a compensating action, run after `parent` failed validation.
    pub fn compensation_id(incident_id: &str, runbook: &str, parent: &str) -> String {
        id::derive("act", &[incident_id, runbook, parent])
    }

    /// Decides on an incident version.
    ///
    /// The first version of an incident that is neither resolved nor merged and
    /// whose rule names a declared runbook gets exactly one decision for
    /// (incident, runbook); later versions, re-sent versions and versions seen
    /// again after a restart get none. A resolved or merged version passes the
    /// validation of actions taken on that incident.
    pub fn on_incident(&mut self, ctx: &ActionContext, now: ProcessingTime) -> KernelOutput {
        let mut out = KernelOutput::default();
        let inc = &ctx.incident;
        let waiting: Vec<String> = self
            .state
            .validations
            .iter()
            .filter(|(_, v)| *v.row.incident_id == *inc.incident_id)
            .map(|(id, _)| id.clone())
            .collect();
        for action_id in waiting {
            if ctx.closed() {
                self.state.validations.remove(&action_id);
                out.validated.push(action_id);
            } else if let Some(v) = self.state.validations.get_mut(&action_id)
                && inc.version > v.context.incident.version
            {
                // Compensations render from the latest view of the incident.
                v.context.incident = inc.clone();
                v.context
                    .vars
                    .extend(ctx.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        if ctx.closed() {
            return out;
        }
        let Some(name) = ctx.runbook.as_deref() else {
            return out;
        };
        let action_id = Kernel::action_id(&inc.incident_id, name);
        if self.state.actions.contains_key(&action_id) {
            return out;
        }
        // A rule naming an undeclared runbook: the pack check refuses this
        // whenever a pack declares runbooks; nothing to run otherwise.
        let Some(spec) = self.runbooks.get(name).cloned() else {
            return out;
        };
        self.decide_new(&spec, ctx, action_id, None, now, &mut out);
        out
    }

    /// A human approves a waiting action. Approving twice is a no-op; approving a
    /// denied or expired action is a conflict. Under the kill switch the action is
    /// denied instead; on a dry-run runbook it is approved and nothing is called.
    pub fn approve(
        &mut self,
        action_id: &str,
        approver: &str,
        now: ProcessingTime,
    ) -> Result<KernelOutput> {
        let approver = self.check_approver(action_id, approver)?;
        let mut out = KernelOutput::default();
        let Some(pending) = self.state.approvals.get(action_id) else {
            return match self.settled(action_id)? {
                Settled {
                    kind: DecisionKind::Approved,
                    ..
                } => Ok(out),
                s => Err(conflict(action_id, settled_reason(&s))),
            };
        };
        if let Some(expires) = pending.row.expires_at
            && now >= expires
        {
            // The next tick records the expiry.
            return Err(conflict(action_id, format!("expired at {expires}")));
        }
        let runbook = pending.row.runbook.clone();
        if !self.state.kill_switch
            && self.runbooks.contains_key(&runbook)
            && let Some(h) = self.state.halted.get(&runbook)
        {
            return Err(conflict(
                action_id,
                format!(
                    "runbook {runbook:?} is halted since {} ({}); resume it before approving",
                    h.since, h.reason
                ),
            ));
        }
        let Some(pending) = self.state.approvals.remove(action_id) else {
            return Ok(out);
        };
        let mut row = pending.row.clone();
        row.decided_at = now;
        row.approver = Some(approver.clone());
        row.expires_at = None;
        let mode = self.runbooks.get(&runbook).map(|s| s.mode);
        let executed = match (self.state.kill_switch, mode) {
            (true, _) => {
                row.decision = DecisionKind::Denied;
                row.reason = format!("kill switch is on: approval by {approver} refused");
                false
            }
            (false, None) => {
                row.decision = DecisionKind::Denied;
                row.reason = format!(
                    "runbook {runbook:?} is no longer declared: approval by {approver} refused"
                );
                false
            }
            (false, Some(Mode::DryRun)) => {
                row.decision = DecisionKind::Approved;
                row.reason = format!("approved by {approver}; dry run: no call made");
                false
            }
            (false, Some(Mode::Live)) => {
                row.decision = DecisionKind::Approved;
                row.reason = format!("approved by {approver}");
                true
            }
        };
        self.record(&row, executed);
        if let Some(rec) = self.state.actions.get_mut(action_id) {
            rec.approval = Some(Settled {
                kind: row.decision,
                by: Some(approver),
                at: now,
            });
        }
        if executed {
            out.execute.push(Execute {
                decision: row.clone(),
                params: row.params.clone(),
                target: pending.target.clone(),
            });
            if let Some(spec) = self.runbooks.get(&runbook).cloned() {
                self.start_validation(&spec, &row, &pending.context, now);
            }
        }
        out.decisions.push(row);
        Ok(out)
    }

    /// A human denies a waiting action. Denying twice, or denying an expired
    /// action, is a no-op; denying an approved action is a conflict.
    pub fn deny(
        &mut self,
        action_id: &str,
        approver: &str,
        now: ProcessingTime,
    ) -> Result<KernelOutput> {
        let approver = self.check_approver(action_id, approver)?;
        let mut out = KernelOutput::default();
        let Some(pending) = self.state.approvals.remove(action_id) else {
            return match self.settled(action_id)? {
                Settled {
                    kind: DecisionKind::Denied | DecisionKind::Expired,
                    ..
                } => Ok(out),
                s => Err(conflict(action_id, settled_reason(&s))),
            };
        };
        let mut row = pending.row;
        row.decision = DecisionKind::Denied;
        row.reason = format!("denied by {approver}");
        row.decided_at = now;
        row.approver = Some(approver.clone());
        row.expires_at = None;
        self.record(&row, false);
        if let Some(rec) = self.state.actions.get_mut(action_id) {
            rec.approval = Some(Settled {
                kind: DecisionKind::Denied,
                by: Some(approver),
                at: now,
            });
        }
        out.decisions.push(row);
        Ok(out)
    }

    /// Advances processing time: approvals past their timeout expire (fail
    /// closed), validations past their window fail and run the runbook's
    /// compensating runbook (as a new action through every check), and state
    /// older than its window or the horizon is pruned.
    pub fn tick(&mut self, now: ProcessingTime) -> KernelOutput {
        let mut out = KernelOutput::default();
        let mut due: Vec<(ProcessingTime, String)> = self
            .state
            .approvals
            .iter()
            .filter_map(|(id, p)| {
                let at = p.row.expires_at.unwrap_or(ProcessingTime::MIN);
                (at <= now).then(|| (at, id.clone()))
            })
            .collect();
        due.sort();
        for (expires, action_id) in due {
            let Some(pending) = self.state.approvals.remove(&action_id) else {
                continue;
            };
            let mut row = pending.row;
            let waited = Duration::from_micros(
                u64::try_from(
                    expires
                        .as_micros()
                        .saturating_sub(row.decided_at.as_micros()),
                )
                .unwrap_or(0),
            );
            row.decision = DecisionKind::Expired;
            row.reason = format!(
                "no approval within {}: not run (fails closed)",
                fmt_duration(waited)
            );
            row.decided_at = now;
            row.expires_at = None;
            self.record(&row, false);
            if let Some(rec) = self.state.actions.get_mut(&action_id) {
                rec.approval = Some(Settled {
                    kind: DecisionKind::Expired,
                    by: None,
                    at: now,
                });
            }
            out.decisions.push(row);
        }

        let mut due: Vec<(ProcessingTime, String)> = self
            .state
            .validations
            .iter()
            .filter(|(_, v)| v.deadline <= now)
            .map(|(id, v)| (v.deadline, id.clone()))
            .collect();
        due.sort();
        for (deadline, action_id) in due {
            let Some(pending) = self.state.validations.remove(&action_id) else {
                continue;
            };
            let within = Duration::from_micros(
                u64::try_from(
                    deadline
                        .as_micros()
                        .saturating_sub(pending.row.decided_at.as_micros()),
                )
                .unwrap_or(0),
            );
            let compensate = self
                .runbooks
                .get(&pending.row.runbook)
                .and_then(|s| s.compensate.clone());
            let comp_spec = compensate
                .as_ref()
                .and_then(|c| self.runbooks.get(c).cloned());
            let mut row = pending.row;
            row.decision = DecisionKind::ValidationFailed;
            row.reason = format!(
                "incident {} did not resolve within {} of the action; {}",
                row.incident_id,
                fmt_duration(within),
                match (&compensate, &comp_spec) {
                    (Some(c), Some(_)) => format!("compensating with runbook {c:?}"),
                    (Some(c), None) => format!("compensating runbook {c:?} is not declared"),
                    (None, _) => "no compensating runbook".into(),
                }
            );
            row.decided_at = now;
            row.expires_at = None;
            self.record(&row, false);
            let incident_id = row.incident_id.clone();
            out.decisions.push(row);
            if let Some(spec) = comp_spec {
                let comp_id = Kernel::compensation_id(&incident_id, &spec.name, &action_id);
                if !self.state.actions.contains_key(&comp_id) {
                    let ctx = pending.context;
                    self.decide_new(&spec, &ctx, comp_id, Some(&action_id), now, &mut out);
                }
            }
        }
        self.prune(now);
        out
    }

    /// The caller gave up delivering an action: a `failed` row. Its validation,
    /// if any, is cancelled (nothing ran). Unknown, undelivered or already failed
    /// actions give nothing.
    pub fn delivery_failed(
        &mut self,
        action_id: &str,
        reason: &str,
        now: ProcessingTime,
    ) -> KernelOutput {
        let mut out = KernelOutput::default();
        let Some(rec) = self.state.actions.get(action_id) else {
            return out;
        };
        if !matches!(
            rec.outcome,
            DecisionKind::Triggered | DecisionKind::Approved
        ) {
            return out;
        }
        let Some(mut row) = rec.executed.clone() else {
            return out;
        };
        self.state.validations.remove(action_id);
        row.decision = DecisionKind::Failed;
        row.reason = format!("delivery failed for good: {reason}");
        row.decided_at = now;
        row.expires_at = None;
        self.record(&row, false);
        out.decisions.push(row);
        out
    }

    /// Turns the kill switch on or off. While on, every new action and every
    /// approval is denied. Kept in the state, so a restart does not undo it.
    pub fn set_kill_switch(&mut self, on: bool) {
        self.state.kill_switch = on;
    }

    /// Whether the kill switch is on.
    pub fn kill_switch(&self) -> bool {
        self.state.kill_switch
    }

    /// Clears a runbook's halt and empties its budget windows; the output
    /// resolves the budget-exhaustion event. Resuming a runbook that is not
    /// halted is a no-op.
    pub fn resume(&mut self, runbook: &str, now: ProcessingTime) -> Result<KernelOutput> {
        let mut out = KernelOutput::default();
        let Some(halt) = self.state.halted.remove(runbook) else {
            return if self.runbooks.contains_key(runbook) {
                Ok(out)
            } else {
                Err(Error::UnknownRunbook {
                    runbook: runbook.to_owned(),
                })
            };
        };
        self.state.budgets.remove(runbook);
        let mut e = halt.alert;
        e.status = "resolved".into();
        e.id = Event::derive_id(&e.source, &e.source_event_id, &e.status);
        // In event time, just after the firing: a human's resume has no event time,
        // and the wall clock here would move the `causeway` source's watermark ahead
        // of every other source, leaving every later event too late to correlate.
        e.time = e.time.plus(Duration::from_secs(1));
        e.ingested_at = now;
        e.summary = format!("runbook {runbook} resumed (halted since {})", halt.since);
        out.events.push(e);
        Ok(out)
    }

    /// Whether a runbook is halted.
    pub fn is_halted(&self, runbook: &str) -> bool {
        self.state.halted.contains_key(runbook)
    }

    /// Halted runbooks with when they halted and why.
    pub fn halted(&self) -> impl Iterator<Item = (&str, ProcessingTime, &str)> {
        self.state
            .halted
            .iter()
            .map(|(name, h)| (name.as_str(), h.since, h.reason.as_str()))
    }

    /// Whether an action taken on `incident_id` waits for its validation: a
    /// new version of that incident is news to the kernel even when its rule
    /// names no runbook.
    pub fn validating(&self, incident_id: &str) -> bool {
        self.state
            .validations
            .values()
            .any(|v| *v.row.incident_id == *incident_id)
    }

    /// Actions waiting for approval (their `awaiting_approval` rows).
    pub fn pending_approvals(&self) -> impl Iterator<Item = &Decision> {
        self.state.approvals.values().map(|p| &p.row)
    }

    /// The earliest time [`Kernel::tick`] has an approval to expire or a
    /// validation to fail.
    pub fn next_deadline(&self) -> Option<ProcessingTime> {
        let approvals = self
            .state
            .approvals
            .values()
            .filter_map(|p| p.row.expires_at);
        let validations = self.state.validations.values().map(|v| v.deadline);
        approvals.chain(validations).min()
    }

    /// Sizes of the state.
    pub fn stats(&self) -> KernelStats {
        KernelStats {
            kill_switch: self.state.kill_switch,
            halted_runbooks: self.state.halted.len(),
            pending_approvals: self.state.approvals.len(),
            pending_validations: self.state.validations.len(),
            remembered_actions: self.state.actions.len(),
            budget_windows: self.state.budgets.values().map(BTreeMap::len).sum(),
        }
    }

    /// The state, for callers that persist it in their own format.
    pub fn state(&self) -> &KernelState {
        &self.state
    }

    /// Serializes the state for a checkpoint (compact binary, versioned).
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        postcard::to_stdvec(&SnapshotRef {
            version: SNAPSHOT_VERSION,
            state: &self.state,
        })
        .map_err(|e| Error::InvalidState {
            reason: format!("runbook kernel: {e}"),
        })
    }

    /// Restores a state written by [`Kernel::snapshot`]; runbooks and
    /// configuration stay as they are.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let snap: SnapshotOwned = postcard::from_bytes(bytes).map_err(|e| Error::InvalidState {
            reason: format!("runbook kernel: {e}"),
        })?;
        if snap.version != SNAPSHOT_VERSION {
            return Err(Error::InvalidState {
                reason: format!(
                    "runbook kernel snapshot version {} is not {SNAPSHOT_VERSION}",
                    snap.version
                ),
            });
        }
        self.state = snap.state;
        Ok(())
    }

    fn check_approver(&self, action_id: &str, approver: &str) -> Result<String> {
        let approver = approver.trim();
        if approver.is_empty() {
            return Err(Error::InvalidApprover {
                action_id: action_id.to_owned(),
            });
        }
        Ok(approver.to_owned())
    }

    /// How a settled (no longer pending) action's approval ended.
    fn settled(&self, action_id: &str) -> Result<Settled> {
        let rec = self
            .state
            .actions
            .get(action_id)
            .ok_or_else(|| Error::ActionNotFound {
                action_id: action_id.to_owned(),
            })?;
        rec.approval.clone().ok_or_else(|| {
            conflict(
                action_id,
                format!("it did not wait for approval (decision: {})", rec.outcome),
            )
        })
    }

    /// Runs every check for a new action and records one decision.
    fn decide_new(
        &mut self,
        spec: &RunbookSpec,
        ctx: &ActionContext,
        action_id: String,
        compensates: Option<&str>,
        now: ProcessingTime,
        out: &mut KernelOutput,
    ) {
        let prefix = compensates
            .map(|p| format!("compensates {p}: "))
            .unwrap_or_default();
        let make =
            |kind: DecisionKind, reason: String, params: BTreeMap<String, String>| Decision {
                action_id: action_id.clone(),
                incident_id: ctx.incident.incident_id.to_string(),
                incident_version: ctx.incident.version,
                runbook: spec.name.clone(),
                class: spec.class,
                decision: kind,
                reason: format!("{prefix}{reason}"),
                decided_at: now,
                target: spec.target.describe(),
                params,
                idempotency_key: action_id.clone(),
                approver: None,
                expires_at: None,
            };

        if self.state.kill_switch {
            let row = make(
                DecisionKind::Denied,
                "kill switch is on: no runbook runs".into(),
                BTreeMap::new(),
            );
            self.record(&row, false);
            out.decisions.push(row);
            return;
        }
        if let Some(h) = self.state.halted.get(&spec.name) {
            let row = make(
                DecisionKind::BudgetExhausted,
                format!(
                    "runbook halted since {}: {}; resume needed",
                    h.since, h.reason
                ),
                BTreeMap::new(),
            );
            self.record(&row, false);
            out.decisions.push(row);
            return;
        }

        let key = BudgetKey::of(spec, ctx);
        let budget = &spec.budget;
        let window_start = now.minus(budget.per);
        let count = {
            let window = self
                .state
                .budgets
                .entry(spec.name.clone())
                .or_default()
                .entry(key.key.clone())
                .or_default();
            window.retain(|t| *t > window_start);
            window.len()
        };
        let max = usize::try_from(budget.max_actions).unwrap_or(usize::MAX);
        let per = fmt_duration(budget.per);
        if count >= max {
            let what = format!(
                "budget of {} actions per {per} {} exhausted ({count} in the window)",
                budget.max_actions, key.describe
            );
            let alert = budget_alert(spec, ctx, &key, &action_id, &what, count, now);
            self.state.halted.insert(
                spec.name.clone(),
                Halt {
                    since: now,
                    reason: what.clone(),
                    alert: alert.clone(),
                },
            );
            let row = make(
                DecisionKind::BudgetExhausted,
                format!("{what}: runbook halted until resumed"),
                BTreeMap::new(),
            );
            self.record(&row, false);
            out.decisions.push(row);
            out.events.push(alert);
            return;
        }

        let mut vars = ctx.variables();
        vars.insert("runbook".into(), spec.name.clone());
        vars.insert("action_id".into(), action_id.clone());
        let mut params = BTreeMap::new();
        for (name, text) in &spec.params {
            match render_text(text, &vars) {
                Ok(value) => {
                    params.insert(name.clone(), value);
                }
                Err(e) => {
                    let why = match e {
                        RenderError::Missing(var) => {
                            format!("missing variable {{{var}}} in params.{name}")
                        }
                        RenderError::Syntax(reason) => {
                            format!("invalid template in params.{name}: {reason}")
                        }
                    };
                    let row = make(
                        DecisionKind::Denied,
                        format!("{why}: not run (fails closed)"),
                        BTreeMap::new(),
                    );
                    self.record(&row, false);
                    out.decisions.push(row);
                    return;
                }
            }
        }

        if let Some(window) = self
            .state
            .budgets
            .get_mut(&spec.name)
            .and_then(|w| w.get_mut(&key.key))
        {
            window.push(now);
        }
        let spent = format!(
            "{} of {} actions per {per} {}",
            count + 1,
            budget.max_actions,
            key.describe
        );
        if spec.approval_required() {
            let expires = now.plus(spec.approval.timeout);
            let why = if spec.class.needs_approval() {
                format!("class {} needs approval", spec.class)
            } else {
                "runbook requires approval".into()
            };
            let owner = spec
                .owner
                .as_deref()
                .map(|o| format!(" (owner {o})"))
                .unwrap_or_default();
            let mut row = make(
                DecisionKind::AwaitingApproval,
                format!("{why}{owner}; expires at {expires}; {spent}"),
                params,
            );
            row.expires_at = Some(expires);
            self.record(&row, false);
            self.state.approvals.insert(
                action_id.clone(),
                PendingApproval {
                    row: row.clone(),
                    target: spec.target.clone(),
                    context: ctx.clone(),
                },
            );
            out.decisions.push(row);
            return;
        }
        if spec.mode == Mode::DryRun {
            let row = make(
                DecisionKind::DryRun,
                format!(
                    "dry run: no call made (live, it would call {}); {spent}",
                    spec.target
                ),
                params,
            );
            self.record(&row, false);
            out.decisions.push(row);
            return;
        }
        let row = make(
            DecisionKind::Triggered,
            format!("live runbook within budget: {spent}"),
            params,
        );
        self.record(&row, true);
        self.start_validation(spec, &row, ctx, now);
        out.execute.push(Execute {
            decision: row.clone(),
            params: row.params.clone(),
            target: spec.target.clone(),
        });
        out.decisions.push(row);
    }

    fn start_validation(
        &mut self,
        spec: &RunbookSpec,
        row: &Decision,
        ctx: &ActionContext,
        now: ProcessingTime,
    ) {
        if let Some(v) = &spec.validation {
            self.state.validations.insert(
                row.action_id.clone(),
                PendingValidation {
                    row: row.clone(),
                    deadline: now.plus(v.within),
                    context: ctx.clone(),
                },
            );
        }
    }

    /// Remembers a decision on its action.
    fn record(&mut self, row: &Decision, executed: bool) {
        let rec = self
            .state
            .actions
            .entry(row.action_id.clone())
            .or_insert_with(|| ActionRecord {
                incident_id: row.incident_id.clone(),
                runbook: row.runbook.clone(),
                outcome: row.decision,
                updated_at: row.decided_at,
                approval: None,
                executed: None,
            });
        rec.outcome = row.decision;
        rec.updated_at = row.decided_at;
        if executed {
            rec.executed = Some(row.clone());
        }
    }

    /// Drops budget times outside their windows and actions older than the
    /// horizon (never one still pending).
    fn prune(&mut self, now: ProcessingTime) {
        let runbooks = &self.runbooks;
        self.state.budgets.retain(|name, windows| {
            let Some(spec) = runbooks.get(name) else {
                return false;
            };
            let start = now.minus(spec.budget.per);
            windows.retain(|_, times| {
                times.retain(|t| *t > start);
                !times.is_empty()
            });
            !windows.is_empty()
        });
        let horizon = now.minus(self.config.decided_horizon);
        let approvals = &self.state.approvals;
        let validations = &self.state.validations;
        self.state.actions.retain(|id, rec| {
            rec.updated_at > horizon || approvals.contains_key(id) || validations.contains_key(id)
        });
    }
}

fn conflict(action_id: &str, reason: String) -> Error {
    Error::ActionConflict {
        action_id: action_id.to_owned(),
        reason,
    }
}

fn settled_reason(s: &Settled) -> String {
    let by =
        s.by.as_deref()
            .map(|b| format!(" by {b}"))
            .unwrap_or_default();
    match s.kind {
        DecisionKind::Approved => format!("already approved{by} at {}", s.at),
        DecisionKind::Expired => format!("expired at {} without approval", s.at),
        kind => format!("already {kind}{by} at {}", s.at),
    }
}

/// What one budget window counts: a runbook's actions overall, per service or
/// per entity.
struct BudgetKey {
    /// The window's key within the runbook.
    key: String,
    /// The entity the budget event is about.
    entity: String,
    /// For reasons: `across the runbook`, `for service checkout`.
    describe: String,
}

impl BudgetKey {
    fn of(spec: &RunbookSpec, ctx: &ActionContext) -> BudgetKey {
        let inc = &ctx.incident;
        match spec.budget.scope {
            BudgetScope::Runbook => BudgetKey {
                key: "*".into(),
                entity: format!("runbook:{}", spec.name),
                describe: "across the runbook".into(),
            },
            BudgetScope::Service => {
                let service = ctx
                    .vars
                    .get("service")
                    .filter(|s| !s.is_empty())
                    .map(String::as_str)
                    .unwrap_or(&inc.entity);
                BudgetKey {
                    key: format!("service:{service}"),
                    entity: service.to_owned(),
                    describe: format!("for service {service}"),
                }
            }
            BudgetScope::Entity => BudgetKey {
                key: format!("entity:{}/{}", inc.scope, inc.entity),
                entity: inc.entity.to_string(),
                describe: format!("for entity {}/{}", inc.scope, inc.entity),
            },
        }
    }
}

/// The event a budget exhaustion puts into the stream, so the remediator's
/// misbehaviour is correlated like anything else. It carries the incident's
/// event time so it lands near the storm.
fn budget_alert(
    spec: &RunbookSpec,
    ctx: &ActionContext,
    key: &BudgetKey,
    action_id: &str,
    what: &str,
    count: usize,
    now: ProcessingTime,
) -> Event {
    let source_event_id = format!("runbook-budget/{}/{action_id}", spec.name);
    let per = fmt_duration(spec.budget.per);
    let attributes: BTreeMap<String, String> = [
        ("alertname", BUDGET_ALERT_NAME.to_owned()),
        ("runbook", spec.name.clone()),
        ("action_class", spec.class.as_str().to_owned()),
        ("budget_scope", spec.budget.scope.as_str().to_owned()),
        ("budget_key", key.key.clone()),
        ("max_actions", spec.budget.max_actions.to_string()),
        ("per", per),
        ("count", count.to_string()),
        ("incident_id", ctx.incident.incident_id.to_string()),
        ("action_id", action_id.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let raw = serde_json::to_string(&attributes).unwrap_or_else(|_| "{}".into());
    Event {
        id: Event::derive_id(KERNEL_SOURCE, &source_event_id, "firing"),
        source: KERNEL_SOURCE.into(),
        source_event_id,
        kind: EventKind::Alert,
        time: ctx.incident.updated_at,
        ingested_at: now,
        scope: ctx.incident.scope.to_string(),
        entity: key.entity.clone(),
        severity: Severity::Error,
        status: "firing".into(),
        summary: format!("runbook {} halted: {what}", spec.name),
        attributes,
        raw,
    }
}

/// `1h30m`, `10m`, `45s`, `250ms`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let ms = d.subsec_millis();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if ms > 0 || out.is_empty() {
        if out.is_empty() && ms == 0 {
            return "0s".into();
        }
        out.push_str(&format!("{ms}ms"));
    }
    out
}
