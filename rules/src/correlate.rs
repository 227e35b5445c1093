//! The pure correlation state machine: links, chains and incident lifecycle.
//!
//! Input is a stream of events, each with the set of rules it matches as a cause or
//! as an effect (the engine evaluates the predicates, vectorized), plus a watermark.
//! Events wait in a reorder buffer until the watermark passes them and are then
//! applied in `(event time, changes first, id)` order, so the outcome does not
//! depend on arrival order within the watermark delay. An event that arrives behind
//! the watermark but within its source's allowed lateness is applied at once and
//! updates its incident as a new version; one further behind is reported too late.
//!
//! Applying an event:
//! - a resolved alert resolves its member in the incident that holds it; when no
//!   member fires any more the incident is resolved;
//! - an effect of a rule is linked to the most recent buffered cause of that rule on
//!   the same scope and entity within `within`: the cause's incident is opened or
//!   updated, with the cause as root;
//! - a firing alert that nothing caused joins the open group of its
//!   `(alertname, scope, entity)` if that group was active within the group interval
//!   and is younger than the maximum duration, else opens a new group;
//! - a cause is buffered for its rules until the watermark passes `time + within`.
//!
//! An incident resolves when all its alerts have resolved; one whose alerts no longer
//! fire and that saw nothing for `resolve_after` resolves as quiet; one whose alerts
//! still fire resolves at `max_duration` (senders that never send resolutions).
//!
//! Every change to an incident is one new version. Ids are hashes of what opened the
//! incident, so replays and restarts give the same ids and versions. State is bounded:
//! causes, groups, resolved incidents and remembered event ids are evicted once the
//! watermark is past them by more than the maximum allowed lateness.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind, Severity};
use crate::rule::RuleSpec;
use crate::time::EventTime;
use crate::{Error, Result, id};

/// The `rule_id` of incidents made by grouping uncaused alerts.
pub const ALERT_GROUP_RULE: &str = "alert-group";

/// Which rules an event matches, as causes and as effects (bit `i` = rule `i`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matches {
    pub cause: u64,
    pub effect: u64,
}

/// Tuning of the state machine.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelatorConfig {
    /// An uncaused alert joins its group if the group was active this recently.
    pub group_interval: Duration,
    /// No incident keeps absorbing events for longer than this after it opened.
    pub max_duration: Duration,
    /// An incident with no activity for this long is resolved.
    pub resolve_after: Duration,
    /// The largest allowed lateness of any source: how long past the watermark
    /// state is kept so late events still find their incident.
    pub max_lateness: Duration,
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        CorrelatorConfig {
            group_interval: Duration::from_secs(5 * 60),
            max_duration: Duration::from_secs(6 * 3600),
            resolve_after: Duration::from_secs(3600),
            max_lateness: Duration::from_secs(3600),
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
    pub incident_id: String,
    pub version: u32,
    pub state: IncidentState,
    pub title: String,
    pub severity: Severity,
    pub rule_id: String,
    pub rule_version: u32,
    pub scope: String,
    pub entity: String,
    pub root_cause_event_id: Option<String>,
    pub opened_at: EventTime,
    pub updated_at: EventTime,
    pub resolved_at: Option<EventTime>,
    pub event_count: u32,
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
    pub incident_id: String,
    pub event_id: String,
    pub role: EdgeRole,
    /// The rule that made the link.
    pub linked_by: String,
    pub rule_version: u32,
    /// Seconds from the incident's root (or first) event to this one.
    pub lag_seconds: f64,
    /// The key the join matched on (`scope/entity`, or the alert group).
    pub join_key: String,
    /// Event time of the linked event.
    pub time: EventTime,
}

/// What applying events produced, in the order it happened.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    pub incidents: Vec<IncidentVersion>,
    pub edges: Vec<IncidentEdge>,
    /// Events that arrived behind the watermark by more than their allowed lateness.
    pub too_late: Vec<Event>,
}

impl Output {
    /// Appends another output.
    pub fn extend(&mut self, other: Output) {
        self.incidents.extend(other.incidents);
        self.edges.extend(other.edges);
        self.too_late.extend(other.too_late);
    }

    /// Whether nothing was produced.
    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty() && self.edges.is_empty() && self.too_late.is_empty()
    }
}

/// What happened to a pushed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// New; buffered until the watermark passes it.
    Buffered,
    /// New and behind the watermark within its allowed lateness; applied at once.
    AppliedLate,
    /// Its id was seen before: a re-send or a redelivery.
    Duplicate,
    /// Behind the watermark by more than its allowed lateness: not correlated.
    TooLate,
}

/// A rule's facts the state machine needs (predicates are evaluated elsewhere).
#[derive(Debug, Clone)]
struct LinkRule {
    id: String,
    version: u32,
    title: String,
    severity: Severity,
    within: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingEvent {
    event: Event,
    matches: Matches,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CauseRef {
    event_id: String,
    time: EventTime,
    summary: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Incident {
    current: IncidentVersion,
    cause_summary: Option<String>,
    alertnames: BTreeSet<String>,
    /// Alerts still firing, by `(source, source_event_id)`.
    firing: BTreeSet<(String, String)>,
    members: BTreeSet<String>,
    title_template: String,
    /// For alert groups: the group key.
    group: Option<(String, String, String)>,
}

/// Serializable state: everything a checkpoint needs to resume exactly.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    watermark: Option<EventTime>,
    #[serde(with = "pairs")]
    pending: BTreeMap<(EventTime, u8, String), PendingEvent>,
    seen: BTreeSet<String>,
    seen_by_time: BTreeSet<(EventTime, String)>,
    #[serde(with = "pairs")]
    causes: BTreeMap<(usize, String, String), Vec<CauseRef>>,
    #[serde(with = "pairs")]
    incidents: BTreeMap<String, Incident>,
    /// Open incident per (rule, cause event id).
    #[serde(with = "pairs")]
    cause_incident: BTreeMap<(usize, String), String>,
    /// How many incidents each (rule, cause) has opened, for fresh ids.
    #[serde(with = "pairs")]
    cause_generation: BTreeMap<(usize, String), u32>,
    /// Open alert group per (alertname, scope, entity).
    #[serde(with = "pairs")]
    groups: BTreeMap<(String, String, String), String>,
    /// Which incident holds a firing alert.
    #[serde(with = "pairs")]
    alert_members: BTreeMap<(String, String), String>,
    /// Quiet-resolution deadlines.
    quiet: BTreeSet<(EventTime, String)>,
}

/// The correlation state machine.
#[derive(Debug)]
pub struct Correlator {
    rules: Vec<LinkRule>,
    config: CorrelatorConfig,
    state: State,
}

impl Correlator {
    /// A fresh state machine for these rules.
    pub fn new(rules: &[RuleSpec], config: CorrelatorConfig) -> Correlator {
        let rules = rules
            .iter()
            .map(|r| LinkRule {
                id: r.id.clone(),
                version: r.version,
                title: r.title.clone(),
                severity: r.severity,
                within: r.within,
            })
            .collect();
        Correlator {
            rules,
            config,
            state: State::default(),
        }
    }

    /// Serializes the whole state for a checkpoint.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&self.state).map_err(|e| Error::InvalidState {
            reason: e.to_string(),
        })
    }

    /// Restores a state written by [`Correlator::snapshot`].
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        self.state = serde_json::from_slice(bytes).map_err(|e| Error::InvalidState {
            reason: e.to_string(),
        })?;
        Ok(())
    }

    /// The current watermark, if any event advanced it yet.
    pub fn watermark(&self) -> Option<EventTime> {
        self.state.watermark
    }

    /// Events waiting for the watermark.
    pub fn pending_len(&self) -> usize {
        self.state.pending.len()
    }

    /// Incidents held in state.
    pub fn incidents_len(&self) -> usize {
        self.state.incidents.len()
    }

    /// Causes buffered for linking.
    pub fn buffered_causes_len(&self) -> usize {
        self.state.causes.values().map(Vec::len).sum()
    }

    /// Offers one event. `allowed_lateness` is its source's.
    pub fn push(
        &mut self,
        event: Event,
        matches: Matches,
        allowed_lateness: Duration,
        out: &mut Output,
    ) -> PushOutcome {
        if self.state.seen.contains(&event.id) {
            return PushOutcome::Duplicate;
        }
        // Alertmanager re-sends a still-firing alert with its original `startsAt`
        // for as long as it fires, long after its id has left the dedup horizon:
        // while an incident holds it as firing, it is a re-send, not a late event.
        if event.kind == EventKind::Alert
            && event.status == "firing"
            && self
                .state
                .alert_members
                .contains_key(&(event.source.clone(), event.source_event_id.clone()))
        {
            return PushOutcome::Duplicate;
        }
        let behind = self.state.watermark.is_some_and(|w| event.time < w);
        if behind {
            let w = self.state.watermark.unwrap_or(EventTime::MIN);
            if event.time < w.minus(allowed_lateness) {
                out.too_late.push(event);
                return PushOutcome::TooLate;
            }
        }
        self.state.seen.insert(event.id.clone());
        self.state
            .seen_by_time
            .insert((event.time, event.id.clone()));
        if behind {
            self.resolve_quiet_before(event.time, out);
            self.apply(PendingEvent { event, matches }, out);
            PushOutcome::AppliedLate
        } else {
            let key = order_key(&event);
            self.state
                .pending
                .insert(key, PendingEvent { event, matches });
            PushOutcome::Buffered
        }
    }

    /// Moves the watermark forward (never back) and applies every buffered event at
    /// or before it, in order; then evicts state the watermark has left behind.
    pub fn advance(&mut self, watermark: EventTime, out: &mut Output) {
        if self.state.watermark.is_some_and(|w| watermark <= w) {
            return;
        }
        self.state.watermark = Some(watermark);
        while let Some(entry) = self.state.pending.first_entry() {
            if entry.key().0 > watermark {
                break;
            }
            let pending = entry.remove();
            self.resolve_quiet_before(pending.event.time, out);
            self.apply(pending, out);
        }
        self.resolve_quiet_before(watermark, out);
        self.evict(watermark);
    }

    fn apply(&mut self, p: PendingEvent, out: &mut Output) {
        let e = p.event;
        if e.kind == EventKind::Alert && e.status == "resolved" {
            self.apply_resolution(&e, out);
            return;
        }
        let mut linked = false;
        if p.matches.effect != 0 {
            linked = self.link_effect(&e, p.matches.effect, out);
        }
        if !linked && e.kind == EventKind::Alert && e.status == "firing" {
            self.group_alert(&e, out);
        }
        for i in 0..self.rules.len() {
            if p.matches.cause & (1u64 << i) != 0 {
                self.state
                    .causes
                    .entry((i, e.scope.clone(), e.entity.clone()))
                    .or_default()
                    .push(CauseRef {
                        event_id: e.id.clone(),
                        time: e.time,
                        summary: e.summary.clone(),
                    });
            }
        }
    }

    fn link_effect(&mut self, e: &Event, effect_bits: u64, out: &mut Output) -> bool {
        // The most recent cause in window, over all rules this event is an effect of;
        // ties go to the earlier rule in the pack.
        let mut best: Option<(usize, CauseRef)> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if effect_bits & (1u64 << i) == 0 {
                continue;
            }
            let Some(causes) = self
                .state
                .causes
                .get(&(i, e.scope.clone(), e.entity.clone()))
            else {
                continue;
            };
            let candidate = causes
                .iter()
                .filter(|c| c.time <= e.time && e.time <= c.time.plus(rule.within))
                .filter(|c| c.event_id != e.id)
                .max_by(|a, b| (a.time, &a.event_id).cmp(&(b.time, &b.event_id)));
            if let Some(c) = candidate
                && best.as_ref().is_none_or(|(_, b)| c.time > b.time)
            {
                best = Some((i, c.clone()));
            }
        }
        let Some((rule_idx, cause)) = best else {
            return false;
        };
        let rule = self.rules[rule_idx].clone();
        let key = (rule_idx, cause.event_id.clone());
        let join_key = format!("{}/{}", e.scope, e.entity);
        let existing = self
            .state
            .cause_incident
            .get(&key)
            .filter(|id| {
                self.state.incidents.get(*id).is_some_and(|inc| {
                    inc.current.state != IncidentState::Resolved
                        && e.time <= inc.current.opened_at.plus(self.config.max_duration)
                })
            })
            .cloned();
        let incident_id = match existing {
            Some(id) => id,
            None => {
                let generation = self.state.cause_generation.entry(key.clone()).or_insert(0);
                *generation += 1;
                let id = id::derive("inc", &[&rule.id, &cause.event_id, &generation.to_string()]);
                let incident = Incident {
                    current: IncidentVersion {
                        incident_id: id.clone(),
                        version: 0,
                        state: IncidentState::Open,
                        title: String::new(),
                        severity: rule.severity,
                        rule_id: rule.id.clone(),
                        rule_version: rule.version,
                        scope: e.scope.clone(),
                        entity: e.entity.clone(),
                        root_cause_event_id: Some(cause.event_id.clone()),
                        opened_at: cause.time,
                        updated_at: cause.time,
                        resolved_at: None,
                        event_count: 1,
                    },
                    cause_summary: Some(cause.summary.clone()),
                    alertnames: BTreeSet::new(),
                    firing: BTreeSet::new(),
                    members: [cause.event_id.clone()].into(),
                    title_template: rule.title.clone(),
                    group: None,
                };
                self.state.incidents.insert(id.clone(), incident);
                self.state.cause_incident.insert(key, id.clone());
                out.edges.push(IncidentEdge {
                    incident_id: id.clone(),
                    event_id: cause.event_id.clone(),
                    role: EdgeRole::Cause,
                    linked_by: rule.id.clone(),
                    rule_version: rule.version,
                    lag_seconds: 0.0,
                    join_key: join_key.clone(),
                    time: cause.time,
                });
                id
            }
        };
        self.add_member(
            &incident_id,
            e,
            EdgeRole::Effect,
            &rule.id,
            rule.version,
            join_key,
            out,
        );
        true
    }

    fn group_alert(&mut self, e: &Event, out: &mut Output) {
        let alertname = e.attr("alertname").unwrap_or("alert").to_owned();
        let gkey = (alertname.clone(), e.scope.clone(), e.entity.clone());
        let existing = self
            .state
            .groups
            .get(&gkey)
            .filter(|id| {
                self.state.incidents.get(*id).is_some_and(|inc| {
                    inc.current.state != IncidentState::Resolved
                        && e.time <= inc.current.updated_at.plus(self.config.group_interval)
                        && e.time <= inc.current.opened_at.plus(self.config.max_duration)
                })
            })
            .cloned();
        let incident_id = match existing {
            Some(id) => id,
            None => {
                let id = id::derive(
                    "inc",
                    &[ALERT_GROUP_RULE, &alertname, &e.scope, &e.entity, &e.id],
                );
                let incident = Incident {
                    current: IncidentVersion {
                        incident_id: id.clone(),
                        version: 0,
                        state: IncidentState::Open,
                        title: String::new(),
                        severity: Severity::None,
                        rule_id: ALERT_GROUP_RULE.into(),
                        rule_version: 1,
                        scope: e.scope.clone(),
                        entity: e.entity.clone(),
                        root_cause_event_id: None,
                        opened_at: e.time,
                        updated_at: e.time,
                        resolved_at: None,
                        event_count: 0,
                    },
                    cause_summary: None,
                    alertnames: BTreeSet::new(),
                    firing: BTreeSet::new(),
                    members: BTreeSet::new(),
                    title_template: "{alerts} on {entity}".into(),
                    group: Some(gkey.clone()),
                };
                self.state.incidents.insert(id.clone(), incident);
                self.state.groups.insert(gkey.clone(), id.clone());
                id
            }
        };
        let join_key = format!("{}/{}/{}", gkey.1, gkey.2, gkey.0);
        self.add_member(
            &incident_id,
            e,
            EdgeRole::Effect,
            ALERT_GROUP_RULE,
            1,
            join_key,
            out,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn add_member(
        &mut self,
        incident_id: &str,
        e: &Event,
        role: EdgeRole,
        linked_by: &str,
        rule_version: u32,
        join_key: String,
        out: &mut Output,
    ) {
        let Some(inc) = self.state.incidents.get_mut(incident_id) else {
            return;
        };
        if !inc.members.insert(e.id.clone()) {
            return;
        }
        let old_deadline = quiet_deadline(&inc.current, self.config.resolve_after);
        inc.current.event_count += 1;
        if e.time > inc.current.updated_at {
            inc.current.updated_at = e.time;
        }
        inc.current.severity = inc.current.severity.max(e.severity);
        if e.kind == EventKind::Alert {
            if let Some(name) = e.attr("alertname") {
                inc.alertnames.insert(name.to_owned());
            }
            let key = (e.source.clone(), e.source_event_id.clone());
            inc.firing.insert(key.clone());
            self.state.alert_members.insert(key, incident_id.to_owned());
        }
        let lag = e.time.seconds_since(inc.current.opened_at);
        out.edges.push(IncidentEdge {
            incident_id: incident_id.to_owned(),
            event_id: e.id.clone(),
            role,
            linked_by: linked_by.to_owned(),
            rule_version,
            lag_seconds: lag,
            join_key,
            time: e.time,
        });
        let new_deadline = quiet_deadline(&inc.current, self.config.resolve_after);
        self.state
            .quiet
            .remove(&(old_deadline, incident_id.to_owned()));
        self.state
            .quiet
            .insert((new_deadline, incident_id.to_owned()));
        emit(inc, out);
    }

    fn apply_resolution(&mut self, e: &Event, out: &mut Output) {
        let key = (e.source.clone(), e.source_event_id.clone());
        let Some(incident_id) = self.state.alert_members.remove(&key) else {
            return;
        };
        let Some(inc) = self.state.incidents.get_mut(&incident_id) else {
            return;
        };
        if inc.current.state == IncidentState::Resolved {
            return;
        }
        inc.firing.remove(&key);
        if inc.members.insert(e.id.clone()) {
            inc.current.event_count += 1;
            out.edges.push(IncidentEdge {
                incident_id: incident_id.clone(),
                event_id: e.id.clone(),
                role: EdgeRole::Context,
                linked_by: inc.current.rule_id.clone(),
                rule_version: inc.current.rule_version,
                lag_seconds: e.time.seconds_since(inc.current.opened_at),
                join_key: format!("{}/{}", e.scope, e.entity),
                time: e.time,
            });
        }
        let old_deadline = quiet_deadline(&inc.current, self.config.resolve_after);
        if e.time > inc.current.updated_at {
            inc.current.updated_at = e.time;
        }
        self.state
            .quiet
            .remove(&(old_deadline, incident_id.clone()));
        if inc.firing.is_empty() {
            inc.current.state = IncidentState::Resolved;
            inc.current.resolved_at = Some(inc.current.updated_at);
            emit(inc, out);
        } else {
            let deadline = quiet_deadline(&inc.current, self.config.resolve_after);
            self.state.quiet.insert((deadline, incident_id.clone()));
            emit(inc, out);
        }
    }

    /// Resolves every incident whose quiet deadline lies before `t`.
    fn resolve_quiet_before(&mut self, t: EventTime, out: &mut Output) {
        while let Some(first) = self.state.quiet.first() {
            if first.0 >= t {
                break;
            }
            let Some((deadline, id)) = self.state.quiet.pop_first() else {
                break;
            };
            if let Some(inc) = self.state.incidents.get_mut(&id)
                && inc.current.state != IncidentState::Resolved
            {
                // Alerts still firing are not quiet: wait for their resolution, or
                // until the incident's maximum duration.
                let expiry = inc.current.opened_at.plus(self.config.max_duration);
                if !inc.firing.is_empty() && deadline < expiry {
                    self.state.quiet.insert((expiry, id));
                    continue;
                }
                inc.current.state = IncidentState::Resolved;
                inc.current.resolved_at = Some(deadline);
                inc.current.updated_at = deadline;
                for key in std::mem::take(&mut inc.firing) {
                    self.state.alert_members.remove(&key);
                }
                emit(inc, out);
            }
        }
    }

    fn evict(&mut self, watermark: EventTime) {
        let horizon = watermark.minus(self.config.max_lateness);
        // Remembered ids: anything older than the horizon would be too late anyway.
        while let Some(first) = self.state.seen_by_time.first() {
            if first.0 >= horizon {
                break;
            }
            if let Some((_, id)) = self.state.seen_by_time.pop_first() {
                self.state.seen.remove(&id);
            }
        }
        let rules = &self.rules;
        self.state.causes.retain(|(i, _, _), causes| {
            let within = rules.get(*i).map(|r| r.within).unwrap_or_default();
            causes.retain(|c| c.time.plus(within) >= horizon);
            !causes.is_empty()
        });
        let max_duration = self.config.max_duration;
        let group_interval = self.config.group_interval;
        let incidents = &mut self.state.incidents;
        let mut dropped = Vec::new();
        incidents.retain(|id, inc| {
            let done = match inc.current.state {
                IncidentState::Resolved => {
                    inc.current.resolved_at.unwrap_or(inc.current.updated_at) < horizon
                }
                _ => inc.current.opened_at.plus(max_duration) < horizon,
            };
            let group_idle = inc.group.is_some()
                && inc.current.updated_at.plus(group_interval) < horizon
                && inc.current.state == IncidentState::Resolved;
            if done || group_idle {
                dropped.push(id.clone());
                false
            } else {
                true
            }
        });
        if !dropped.is_empty() {
            let gone: BTreeSet<String> = dropped.into_iter().collect();
            self.state.groups.retain(|_, id| !gone.contains(id));
            self.state.cause_incident.retain(|_, id| !gone.contains(id));
            self.state.alert_members.retain(|_, id| !gone.contains(id));
            self.state.quiet.retain(|(_, id)| !gone.contains(id));
        }
        let live: BTreeSet<(usize, &str)> = self
            .state
            .causes
            .iter()
            .flat_map(|((i, _, _), refs)| refs.iter().map(move |r| (*i, r.event_id.as_str())))
            .collect();
        self.state
            .cause_generation
            .retain(|(i, cause_id), _| live.contains(&(*i, cause_id.as_str())));
    }
}

fn quiet_deadline(v: &IncidentVersion, resolve_after: Duration) -> EventTime {
    v.updated_at.plus(resolve_after)
}

/// Orders changes before symptoms at the same instant, then by id.
fn order_key(e: &Event) -> (EventTime, u8, String) {
    (e.time, u8::from(!e.kind.is_change()), e.id.clone())
}

fn emit(inc: &mut Incident, out: &mut Output) {
    inc.current.version += 1;
    if inc.current.version > 1 && inc.current.state == IncidentState::Open {
        inc.current.state = IncidentState::Updated;
    }
    inc.current.title = render_title(inc);
    out.incidents.push(inc.current.clone());
}

fn render_title(inc: &Incident) -> String {
    let alerts = if inc.alertnames.is_empty() {
        "alerts".to_owned()
    } else {
        inc.alertnames
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    inc.title_template
        .replace("{entity}", &inc.current.entity)
        .replace("{scope}", &inc.current.scope)
        .replace(
            "{cause}",
            inc.cause_summary.as_deref().unwrap_or("unknown cause"),
        )
        .replace("{alerts}", &alerts)
        .replace("{count}", &inc.current.event_count.to_string())
}

/// Serializes maps with structured keys as sequences of pairs (JSON keys must be
/// strings).
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S, K, V>(map: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        K: Serialize,
        V: Serialize,
    {
        s.collect_seq(map.iter())
    }

    pub(super) fn deserialize<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        Vec::<(K, V)>::deserialize(d).map(|v| v.into_iter().collect())
    }
}

#[cfg(test)]
mod tests;
