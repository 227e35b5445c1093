//! The pure correlation state machine: keyed interval joins, causal chains and the
//! incident lifecycle.
//!
//! Input is a stream of [`EventRow`]s, each with the rules it matches as a cause,
//! an effect or an absence follow-up (the engine evaluates the predicates,
//! vectorized), plus a watermark. Events wait in a reorder buffer until the
//! watermark passes them and are then applied in `(event time, changes first, id)`
//! order, so the outcome does not depend on arrival order, batching or processing
//! time while events arrive before the watermark passes them. An event that arrives
//! behind the watermark but within its source's allowed lateness is applied at once
//! and updates its incident as a new version; one further behind is reported too
//! late, never silently dropped.
//!
//! Applying an event:
//! - a resolved alert resolves its member in the incident that holds it; when no
//!   member fires any more the incident is resolved;
//! - an effect of a rule is linked to the most recent buffered cause of that rule on
//!   the same join key within `within` (for a `threshold` rule, once enough effects
//!   of one cause fall within the threshold's window; for a `rises` rule, only if
//!   its value rose over its series' baseline). Links form a graph: the event joins
//!   its causes' incident, incidents its causes sit in are merged into the one
//!   opened first, and a cause not in a live incident opens one;
//! - a firing alert that nothing caused joins the open group of its
//!   `(alertname, scope, entity)` if that group was active within the group interval
//!   and is younger than the maximum duration, else opens a new group: every alert
//!   lands in exactly one incident;
//! - a cause is buffered for its rules; a cause that arrives after effects it
//!   explains (late) links the buffered effects and absorbs their incidents;
//! - an absence rule's cause waits for its follow-up until `within` has passed;
//!   without one it escalates the cause's incident or opens one.
//!
//! An incident's root cause is the member with no cause of its own ranked first by
//! (is a change, rule priority, earliest, id). An incident resolves when all its
//! alerts have resolved; one whose alerts no longer fire and that saw nothing for
//! its rule's resolve window resolves as quiet; one whose alerts still fire
//! resolves at `max_duration`, and no incident absorbs events after that. A
//! resolved incident never absorbs a new alert: that opens a new incident.
//!
//! Versions: every incident changed by the events of one event-time instant gets
//! one new version, emitted when the next instant begins or the watermark passes.
//! Ids are hashes of what opened the incident. State is bounded: join records,
//! incidents and remembered event ids are evicted once the watermark is past them
//! by more than the lateness that could still need them, and a hard cap evicts the
//! oldest buffered effects first (counted) when it is reached.

mod state;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::{EventKind, Severity};
use crate::id::EventId;
use crate::time::EventTime;

pub use state::Correlator;

/// The `rule_id` of incidents made by grouping uncaused alerts.
pub const ALERT_GROUP_RULE: &str = "alert-group";

/// Which rules an event matches (bit `i` = rule `i`): as a cause, as an effect, and
/// as the follow-up an absence rule waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matches {
    pub cause: u64,
    pub effect: u64,
    pub follow: u64,
}

/// Which side of a rule a value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Cause,
    Effect,
}

/// Values the engine computes per row of a batch for rules that need more than
/// the event's columns: join expressions and `rises` values.
pub trait RuleValues {
    /// Rule `rule`'s join expression for row `row`, on `side`; `None` when NULL.
    fn join_key(&self, row: usize, rule: usize, side: Side) -> Option<&str>;
    /// Rule `rule`'s `effect.rises` value for row `row`, with its series.
    fn rise(&self, row: usize, rule: usize) -> Option<(f64, Option<&str>)>;
}

/// No per-rule values (packs without join expressions or `rises`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoValues;

impl RuleValues for NoValues {
    fn join_key(&self, _row: usize, _rule: usize, _side: Side) -> Option<&str> {
        None
    }

    fn rise(&self, _row: usize, _rule: usize) -> Option<(f64, Option<&str>)> {
        None
    }
}

/// One event as the correlator reads it: borrowed from a record batch's columns.
#[derive(Clone, Copy)]
pub struct EventRow<'a> {
    pub id: EventId,
    pub source: &'a str,
    pub source_event_id: &'a str,
    pub kind: EventKind,
    pub time: EventTime,
    pub scope: &'a str,
    pub entity: &'a str,
    pub severity: Severity,
    pub status: &'a str,
    pub summary: &'a str,
    /// `attributes['alertname']`.
    pub alertname: Option<&'a str>,
    pub matches: Matches,
    /// How far behind the watermark this event's source may be.
    pub allowed_lateness: Duration,
    /// Per-rule values, read at `row`.
    pub values: &'a dyn RuleValues,
    pub row: usize,
    /// The caller's position of the event (a log offset): see
    /// [`Correlator::oldest_pending_tag`].
    pub tag: u64,
}

impl std::fmt::Debug for EventRow<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRow")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("time", &self.time)
            .field("scope", &self.scope)
            .field("entity", &self.entity)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl<'a> EventRow<'a> {
    /// A row over an owned event (tests, examples, replay of single events).
    /// `None` when the event's id is not canonical.
    pub fn from_event(
        e: &'a crate::Event,
        matches: Matches,
        allowed_lateness: Duration,
        values: &'a dyn RuleValues,
    ) -> Option<EventRow<'a>> {
        Some(EventRow {
            id: EventId::parse(&e.id)?,
            source: &e.source,
            source_event_id: &e.source_event_id,
            kind: e.kind,
            time: e.time,
            scope: &e.scope,
            entity: &e.entity,
            severity: e.severity,
            status: &e.status,
            summary: &e.summary,
            alertname: e.attr("alertname"),
            matches,
            allowed_lateness,
            values,
            row: 0,
            tag: 0,
        })
    }
}

/// Tuning of the state machine.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelatorConfig {
    /// An uncaused alert joins its group if the group was active this recently.
    pub group_interval: Duration,
    /// No incident absorbs events for longer than this after it opened.
    pub max_duration: Duration,
    /// An incident with no activity for this long is resolved (rules may override).
    pub resolve_after: Duration,
    /// The largest allowed lateness of any source: how long past the watermark
    /// causes and incidents are kept so late events still find them.
    pub max_lateness: Duration,
    /// How long an applied effect stays buffered for a cause that arrives after it.
    pub effect_retention: Duration,
    /// Hard cap on buffered events (reorder buffer and join records); past it the
    /// oldest buffered effects are evicted, then the watermark is forced forward.
    pub max_buffered: usize,
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        CorrelatorConfig {
            group_interval: Duration::from_secs(5 * 60),
            max_duration: Duration::from_secs(6 * 3600),
            resolve_after: Duration::from_secs(3600),
            max_lateness: Duration::from_secs(3600),
            effect_retention: Duration::from_secs(3600),
            max_buffered: 2_000_000,
        }
    }
}

/// Lifecycle state of an incident version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Open,
    Updated,
    Resolved,
}

impl IncidentState {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Updated => "updated",
            IncidentState::Resolved => "resolved",
        }
    }
}

/// One version of an incident: a row of the `incidents` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentVersion {
    pub incident_id: Arc<str>,
    pub version: u32,
    pub state: IncidentState,
    pub title: Arc<str>,
    pub severity: Severity,
    pub rule_id: Arc<str>,
    pub rule_version: u32,
    pub scope: Arc<str>,
    pub entity: Arc<str>,
    pub root_cause_event_id: Option<EventId>,
    pub opened_at: EventTime,
    pub updated_at: EventTime,
    pub resolved_at: Option<EventTime>,
    pub event_count: u32,
    /// The incident this one was merged into (its final version).
    pub merged_into: Option<Arc<str>>,
}

/// The role of an event in an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeRole {
    Cause,
    Effect,
    Context,
}

impl EdgeRole {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeRole::Cause => "cause",
            EdgeRole::Effect => "effect",
            EdgeRole::Context => "context",
        }
    }
}

/// An (incident, event) edge with its evidence: a row of `incident_events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentEdge {
    pub incident_id: Arc<str>,
    pub event_id: EventId,
    pub role: EdgeRole,
    /// The rule that made the link.
    pub linked_by: Arc<str>,
    pub rule_version: u32,
    /// The event this one was linked to as an effect of.
    pub cause_event_id: Option<EventId>,
    /// Seconds from the cause (or, for alert groups, the group's first alert).
    pub lag_seconds: f64,
    /// The key the join matched on (`scope/entity`, `scope/dependency`, …).
    pub join_key: Arc<str>,
    /// Event time of the linked event.
    pub time: EventTime,
}

/// How many versions and edges an [`Output`] held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputSize {
    pub incidents: usize,
    pub edges: usize,
}

/// What applying events produced, in the order it happened.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    pub incidents: Vec<IncidentVersion>,
    pub edges: Vec<IncidentEdge>,
    /// For each of `incidents`, how many of `edges` had been produced when that
    /// version was cut: a version's evidence is its incident's edges before its
    /// mark and after its previous version's ([`edges_per_version`]).
    pub edge_marks: Vec<usize>,
}

impl Output {
    /// An empty output with room for as much as `previous` held, and a quarter
    /// more. Consecutive batches produce outputs of about the same size; a vector
    /// of versions grown from empty is copied about twice over and faults in fresh
    /// pages each time, and one sized exactly is copied whole by the first batch
    /// that yields one version more.
    pub fn sized_like(previous: &OutputSize) -> Output {
        let room = |n: usize| n.saturating_add(n / 4);
        Output {
            incidents: Vec::with_capacity(room(previous.incidents)),
            edges: Vec::with_capacity(room(previous.edges)),
            edge_marks: Vec::with_capacity(room(previous.incidents)),
        }
    }

    /// How much this output holds, for [`Output::sized_like`].
    pub fn size(&self) -> OutputSize {
        OutputSize {
            incidents: self.incidents.len(),
            edges: self.edges.len(),
        }
    }

    /// Appends another output.
    pub fn extend(&mut self, other: Output) {
        let offset = self.edges.len();
        self.incidents.extend(other.incidents);
        self.edges.extend(other.edges);
        self.edge_marks
            .extend(other.edge_marks.into_iter().map(|m| m + offset));
    }

    /// The evidence new in each of `incidents`, in order.
    pub fn edges_by_version(&self) -> Vec<Vec<&IncidentEdge>> {
        edges_per_version(&self.incidents, &self.edges, &self.edge_marks)
    }

    /// Whether nothing was produced.
    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty() && self.edges.is_empty()
    }
}

/// What happened to a pushed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// New; buffered until the watermark passes it.
    Buffered,
    /// New and behind the watermark within its allowed lateness; applied at once.
    AppliedLate,
    /// Its id was seen before, or it is a re-send of an alert still held: counted once.
    Duplicate,
    /// Behind the watermark by more than its allowed lateness: not correlated.
    TooLate,
}

/// Sizes and counters of the state, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateStats {
    /// Events in the reorder buffer.
    pub pending: usize,
    /// Join keys with buffered events, over all rules.
    pub open_keys: usize,
    /// Buffered causes.
    pub causes: usize,
    /// Buffered effects (waiting for late causes or a threshold).
    pub effects: usize,
    /// Remembered event ids (for de-duplication).
    pub remembered_ids: usize,
    /// Incidents held (open, and resolved ones late events may still update).
    pub incidents: usize,
    /// Join records evicted because they aged out (total).
    pub evicted_expired: u64,
    /// Join records evicted because the hard cap was reached (total).
    pub evicted_cap: u64,
    /// Events applied early because the reorder buffer reached the cap (total).
    pub forced: u64,
}

impl StateStats {
    /// Buffered events: reorder buffer plus join records.
    pub fn buffered(&self) -> usize {
        self.pending + self.causes + self.effects
    }
}

/// The evidence new in each version of `incidents`: the edges of its incident
/// produced before its mark and after the previous version of the same incident
/// in this output. Edges produced after an incident's last version here go with
/// that last version; without marks, every version gets all its incident's edges.
pub fn edges_per_version<'a>(
    incidents: &[IncidentVersion],
    edges: &'a [IncidentEdge],
    marks: &[usize],
) -> Vec<Vec<&'a IncidentEdge>> {
    /// One incident's edges here (with their positions), how many of them
    /// earlier versions took, and the index of its last version.
    #[derive(Default)]
    struct Of<'a> {
        edges: Vec<(usize, &'a IncidentEdge)>,
        taken: usize,
        last: usize,
    }
    // FxHash: this runs for every output, over ids made here.
    let mut by_incident: rustc_hash::FxHashMap<&str, Of<'a>> = rustc_hash::FxHashMap::default();
    by_incident.reserve(incidents.len());
    for (k, v) in incidents.iter().enumerate() {
        by_incident.entry(&*v.incident_id).or_default().last = k;
    }
    for (i, e) in edges.iter().enumerate() {
        // Edges of an incident with no version here go with none.
        if let Some(of) = by_incident.get_mut(&*e.incident_id) {
            of.edges.push((i, e));
        }
    }
    incidents
        .iter()
        .enumerate()
        .map(|(k, v)| {
            let Some(of) = by_incident.get_mut(&*v.incident_id) else {
                return Vec::new();
            };
            let Some(&mark) = marks.get(k) else {
                return of.edges.iter().map(|(_, e)| *e).collect();
            };
            let from = of.taken;
            let to = if of.last == k {
                of.edges.len()
            } else {
                from + of.edges[from..].partition_point(|(i, _)| *i < mark)
            };
            of.taken = to;
            of.edges[from..to].iter().map(|(_, e)| *e).collect()
        })
        .collect()
}
