//! The correlator's state and the algorithm over it; the semantics are described
//! on the parent module.
//!
//! Memory is the design constraint: every buffered event costs a fixed, small
//! record. Ids are [`EventId`]s (16 bytes), join keys and alert identities 64-bit
//! hashes, scope/entity pairs and alert names interned behind `Arc`s, and an applied
//! effect is buffered once (by its subject), not once per rule. Maps are keyed by
//! those hashes with a fixed hasher, but nothing ever iterates a hash map to decide
//! output: output order comes from event order, `BTreeSet`s and incident sequence
//! numbers, so it is the same after a snapshot and restore.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::{
    ALERT_GROUP_RULE, CorrelatorConfig, EdgeRole, EventRow, IncidentEdge, IncidentState,
    IncidentVersion, Matches, Output, PushOutcome, Side, StateStats,
};
use crate::catalog::Catalog;
use crate::event::{EventKind, Severity};
use crate::id::{self, EventId, key_hash};
use crate::rule::{Join, RuleSpec};
use crate::time::{EventTime, duration_micros};
use crate::{Error, Result};

/// The rule index of alert groups.
const GROUP: u8 = u8::MAX;
/// Format version of [`Correlator::snapshot`] (3: event ids as 16 bytes).
const SNAPSHOT_VERSION: u32 = 3;
/// State is swept at most this often in event time (and only once enough events
/// were applied to pay for it).
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// A `rises` baseline unused this long is forgotten.
const BASELINE_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// A rule's facts the state machine needs (predicates are evaluated elsewhere).
#[derive(Debug)]
struct RuleFacts {
    id: Arc<str>,
    version: u32,
    title: Arc<Title>,
    severity: Severity,
    priority: i32,
    within: Duration,
    join: JoinKind,
    /// `Some(require_incident)` for absence rules.
    absence: Option<bool>,
    threshold: Option<(usize, Duration)>,
    /// `(percent, baseline values)`.
    rise: Option<(f64, usize)>,
    resolve_after: Duration,
    max_duration: Duration,
    /// Effects join their cause's incident, never open one.
    attach_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinKind {
    Entity,
    Service,
    DependsOn,
    Expr,
}

/// The catalog relations joins need, indexed once.
#[derive(Debug, Default)]
struct CatalogIndex {
    /// Any name the catalog knows (workload, app, resource, service) → its service.
    service: FxHashMap<Box<str>, Arc<str>>,
    /// Service → every entity it depends on, transitively.
    dependencies: FxHashMap<Arc<str>, Vec<Arc<str>>>,
    /// Entity → every service that depends on it, transitively.
    dependents: FxHashMap<Arc<str>, Vec<Arc<str>>>,
    /// Service → every name events about it may carry.
    names: FxHashMap<Arc<str>, Vec<Arc<str>>>,
}

impl CatalogIndex {
    fn new(catalog: &Catalog) -> CatalogIndex {
        let mut index = CatalogIndex::default();
        for s in &catalog.services {
            let name: Arc<str> = s.name.as_str().into();
            let mut names = vec![name.clone()];
            for alias in s.workloads.iter().chain(&s.argo_apps).chain(&s.resources) {
                index
                    .service
                    .entry(alias.as_str().into())
                    .or_insert_with(|| name.clone());
                names.push(alias.as_str().into());
            }
            index.service.insert(s.name.as_str().into(), name.clone());
            names.sort();
            names.dedup();
            index.names.insert(name.clone(), names);
        }
        for s in &catalog.services {
            let name: Arc<str> = s.name.as_str().into();
            let deps: Vec<Arc<str>> = catalog
                .dependency_entities(&s.name)
                .into_iter()
                .map(Arc::from)
                .collect();
            for d in &deps {
                index
                    .dependents
                    .entry(d.clone())
                    .or_default()
                    .push(name.clone());
            }
            index.dependencies.insert(name, deps);
        }
        for v in index.dependents.values_mut() {
            v.sort();
            v.dedup();
        }
        index
    }

    fn service_of(&self, entity: &str) -> Option<&Arc<str>> {
        self.service.get(entity)
    }
}

/// What the catalog says about a subject, for `service` and `depends_on` joins:
/// computed once per subject, not per event.
#[derive(Debug)]
struct SubjectJoins {
    service: Arc<str>,
    service_key: u64,
    /// Every entity the subject's service depends on, with its key.
    dependencies: Vec<(u64, Arc<str>)>,
}

/// A scope and entity, interned: most events share a few of them.
#[derive(Debug, Serialize, Deserialize)]
struct Subject {
    scope: Arc<str>,
    entity: Arc<str>,
    /// `key_hash([scope, entity])`.
    key: u64,
}

impl Subject {
    fn label(&self) -> Arc<str> {
        format!("{}/{}", self.scope, self.entity).into()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Status {
    Firing,
    Resolved,
    Other,
}

impl Status {
    fn of(kind: EventKind, status: &str) -> Status {
        match (kind, status) {
            (EventKind::Alert, "firing") => Status::Firing,
            (EventKind::Alert, "resolved") => Status::Resolved,
            _ => Status::Other,
        }
    }
}

/// Per-rule values captured at push time for the rules that need them.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Extra {
    Key {
        rule: u8,
        cause_side: bool,
        hash: u64,
        value: Arc<str>,
    },
    Rise {
        rule: u8,
        value: f64,
        series: u64,
    },
}

/// An event waiting in the reorder buffer: what applying it needs, no more.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    time: EventTime,
    /// 0 for changes, 1 otherwise: changes apply before symptoms at one instant.
    order: u8,
    id: EventId,
    kind: EventKind,
    status: Status,
    severity: Severity,
    subject: Arc<Subject>,
    alertname: Option<Arc<str>>,
    /// `key_hash([source, source_event_id])` of an alert: its identity across
    /// firing, re-sends and resolution.
    alert_key: u64,
    matches: Matches,
    /// What only some events carry, behind one pointer: the reorder buffer holds
    /// every event for the watermark delay, so each byte here counts per event.
    tail: Option<Box<PendingTail>>,
    tag: u64,
}

/// The rarer parts of a [`Pending`].
#[derive(Debug, Serialize, Deserialize)]
struct PendingTail {
    /// Kept only for events that can be causes (titles name the root cause).
    summary: Option<Box<str>>,
    extra: Box<[Extra]>,
}

impl Pending {
    fn summary(&self) -> Option<&str> {
        self.tail.as_ref().and_then(|t| t.summary.as_deref())
    }

    fn extra(&self) -> &[Extra] {
        self.tail.as_ref().map_or(&[], |t| &t.extra)
    }
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time, self.order, self.id).cmp(&(other.time, other.order, other.id))
    }
}

/// A buffered cause of one rule on one join key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CauseRec {
    time: EventTime,
    id: EventId,
    kind: EventKind,
    severity: Severity,
    summary: Arc<str>,
    /// Incidents this cause has opened for this rule (for fresh ids).
    generation: u32,
    /// Threshold rules: effects counted so far, and whether the count was reached.
    candidates: Vec<(EffectRec, Arc<Subject>)>,
    threshold_met: bool,
}

/// The causes of one rule on one join key, by `(time, id)`.
#[derive(Debug, Serialize, Deserialize)]
struct CauseList {
    label: Arc<str>,
    causes: Vec<CauseRec>,
}

/// An applied effect, buffered for causes that arrive after it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct EffectRec {
    time: EventTime,
    id: EventId,
    /// The incident it was placed in (0: none).
    seq: u64,
    /// The rules it is an effect of.
    rules: u64,
    severity: Severity,
}

/// Applied effects of one subject, by `(time, id)`.
#[derive(Debug, Serialize, Deserialize)]
struct EffectList {
    subject: Arc<Subject>,
    effects: Vec<EffectRec>,
}

/// A candidate root cause of an incident: a member with no cause of its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RootCand {
    id: EventId,
    time: EventTime,
    change: bool,
    priority: i32,
    rule: u8,
    summary: Arc<str>,
}

impl RootCand {
    fn rank(&self) -> (Reverse<bool>, Reverse<i32>, EventTime, EventId) {
        (
            Reverse(self.change),
            Reverse(self.priority),
            self.time,
            self.id,
        )
    }
}

/// Which incident an event that can be a cause belongs to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Member {
    seq: u64,
    has_cause: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Incident {
    id: Arc<str>,
    version: u32,
    state: IncidentState,
    /// The rule of its root cause (`GROUP` for alert groups).
    rule: u8,
    /// The rule whose title it carries (an absence escalation changes it).
    template: u8,
    severity: Severity,
    subject: Arc<Subject>,
    opened_at: EventTime,
    updated_at: EventTime,
    last_activity: EventTime,
    resolved_at: Option<EventTime>,
    event_count: u32,
    alertnames: Vec<Arc<str>>,
    firing: FxHashSet<u64>,
    roots: Vec<RootCand>,
    root: Option<EventId>,
    cause_summary: Option<Arc<str>>,
    /// For alert groups: the group key and its label.
    group: Option<(u64, Arc<str>)>,
    merged_into: Option<u64>,
    /// The entry in the deadline queue.
    deadline: Option<EventTime>,
    resolve_after: Duration,
    /// How long after opening it absorbs events: the engine's maximum, or its
    /// rule's window when that is longer (a cost rise days after a scaling change).
    max_duration: Duration,
    title: Arc<str>,
    title_stale: bool,
}

impl Incident {
    fn live_at(&self, t: EventTime) -> bool {
        self.state != IncidentState::Resolved && t <= self.opened_at.plus(self.max_duration)
    }
}

/// Incidents by sequence number: a window of slots from the oldest held, since
/// sequence numbers only grow and incidents leave roughly in age order. A lookup
/// is an index, not a hash probe.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Incidents {
    base: u64,
    slots: VecDeque<Option<Box<Incident>>>,
    len: usize,
}

impl Incidents {
    fn slot(&self, seq: u64) -> Option<usize> {
        seq.checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < self.slots.len())
    }

    fn get(&self, seq: &u64) -> Option<&Incident> {
        self.slot(*seq)
            .and_then(|i| self.slots.get(i))
            .and_then(|s| s.as_deref())
    }

    fn get_mut(&mut self, seq: &u64) -> Option<&mut Incident> {
        let i = self.slot(*seq)?;
        self.slots.get_mut(i).and_then(|s| s.as_deref_mut())
    }

    /// Inserts at a sequence number at or after every one held.
    fn insert(&mut self, seq: u64, inc: Incident) {
        if self.slots.is_empty() {
            self.base = seq;
        }
        let Some(i) = seq
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        while self.slots.len() <= i {
            self.slots.push_back(None);
        }
        if self.slots[i].replace(Box::new(inc)).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, seq: &u64) -> Option<Incident> {
        let i = self.slot(*seq)?;
        let taken = self.slots.get_mut(i)?.take()?;
        self.len -= 1;
        self.trim();
        Some(*taken)
    }

    fn trim(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(s, _)| s)
    }

    fn iter(&self) -> impl Iterator<Item = (u64, &Incident)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_deref().map(|inc| (self.base + i as u64, inc)))
    }

    fn retain(&mut self, mut keep: impl FnMut(u64, &Incident) -> bool) {
        let base = self.base;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot
                .as_deref()
                .is_some_and(|inc| !keep(base + i as u64, inc))
            {
                *slot = None;
                self.len -= 1;
            }
        }
        self.trim();
    }
}

/// An absence rule's cause waiting for its follow-up.
#[derive(Debug, Serialize, Deserialize)]
struct Wait {
    time: EventTime,
    key: u64,
    label: Arc<str>,
    subject: Arc<Subject>,
    summary: Arc<str>,
    kind: EventKind,
    severity: Severity,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Baseline {
    values: VecDeque<f64>,
    last: Option<EventTime>,
}

/// Everything a checkpoint needs to resume exactly.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    watermark: Option<EventTime>,
    /// Event time of the last event applied in order: versions group by instant.
    instant: Option<EventTime>,
    /// The reorder buffer; sorted by `(time, order, id)` when `pending_sorted`
    /// (events mostly arrive in order, so appending keeps it sorted).
    /// A deque: released from the front, appended at the back, its capacity kept
    /// across watermark steps (a `Vec` split at each step copied the rest).
    pending: VecDeque<Pending>,
    pending_sorted: bool,
    /// Remembered ids, with the time after which a copy would be too late anyway.
    seen: FxHashMap<EventId, EventTime>,
    /// Buffered causes by join key, then rule: one probe serves every rule that
    /// joins on the same key (most join on the entity).
    causes: FxHashMap<u64, SmallVec<[(u8, CauseList); 1]>>,
    effects: FxHashMap<u64, EffectList>,
    /// Effects of rules joined by an expression, by `(rule, key)`.
    expr_effects: FxHashMap<(u8, u64), EffectList>,
    incidents: Incidents,
    next_seq: u64,
    members: FxHashMap<EventId, Member>,
    /// Alert group key → incident.
    groups: FxHashMap<u64, u64>,
    /// Alert identity → the incident holding it.
    alerts: FxHashMap<u64, u64>,
    /// Resolution deadlines (quiet or maximum duration). An entry is current only
    /// while it equals its incident's `deadline`: rescheduling pushes a new one and
    /// leaves the old to be skipped, which costs less than removing it.
    deadlines: BinaryHeap<Reverse<(EventTime, u64)>>,
    waits: BTreeMap<(EventTime, u8, EventId), Wait>,
    wait_index: FxHashMap<(u8, u64), Vec<(EventTime, EventId)>>,
    baselines: FxHashMap<(u8, u64, u64), Baseline>,
    /// Incidents changed since the last flush (repeats allowed; put in sequence
    /// order and deduplicated at the flush). Postcard writes it as the same
    /// sequence as the ordered set it replaced, so snapshots of either read back.
    dirty: Vec<u64>,
    last_sweep: Option<EventTime>,
    applied_since_sweep: u64,
    evicted_expired: u64,
    evicted_cap: u64,
    forced: u64,
}

/// The fields of a [`Snapshot`] before its state, in its order: what
/// [`Correlator::snapshot`] writes ahead of the state's length and bytes.
#[derive(Debug, Serialize)]
struct SnapshotHead {
    version: u32,
    rules: Vec<(String, u32)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Snapshot<'a> {
    version: u32,
    /// Rule ids and versions the state was built with: a different pack restarts
    /// correlation state rather than misreading rule indexes.
    rules: Vec<(String, u32)>,
    #[serde(borrow, with = "serde_bytes")]
    state: std::borrow::Cow<'a, [u8]>,
}

/// A join key of one event for one rule.
#[derive(Debug, Clone)]
struct Key {
    hash: u64,
    /// `None`: the event's own scope/entity; else the joined value.
    value: Option<Arc<str>>,
}

/// A link found for an effect: rule, cause and join key.
#[derive(Debug, Clone)]
struct Link {
    rule: u8,
    key: u64,
    label: Arc<str>,
    cause: EventId,
    cause_time: EventTime,
}

/// The correlation state machine.
#[derive(Debug)]
pub struct Correlator {
    rules: Vec<RuleFacts>,
    catalog: CatalogIndex,
    config: CorrelatorConfig,
    group_rule_id: Arc<str>,
    group_title: Arc<Title>,
    /// Bits of absence rules (their "effects" are follow-ups, not links).
    absence_rules: u64,
    /// Bits of rules whose events carry values: expression join keys or a `rises`
    /// series.
    valued_rules: u64,
    /// Bits of rules that join on an expression (their effects have buffers of
    /// their own, `expr_effects`).
    expr_rules: u64,
    state: State,
    /// Interned alert names and subjects (rebuilt after a restore); subjects by
    /// [`text_hash`] of their scope and entity.
    names: FxHashSet<Arc<str>>,
    subjects: FxHashMap<u64, Arc<Subject>>,
    /// Catalog relations per subject key (derived; rebuilt on demand).
    joins: FxHashMap<u64, Arc<SubjectJoins>>,
    /// Whether any rule joins through the catalog.
    catalog_joins: bool,
}

fn bits(mut set: u64) -> impl Iterator<Item = u8> {
    std::iter::from_fn(move || {
        if set == 0 {
            return None;
        }
        let i = set.trailing_zeros() as u8;
        set &= set - 1;
        Some(i)
    })
}

/// A process-local hash of a subject's text, for interning only: unlike
/// [`key_hash`] it is never stored, so it may be the fastest one at hand.
fn text_hash(scope: &str, entity: &str) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one((scope, entity))
}

fn seconds(d: Duration) -> f64 {
    duration_micros(d) as f64 / 1e6
}

impl Correlator {
    /// A fresh state machine for these rules and this catalog.
    pub fn new(rules: &[RuleSpec], catalog: &Catalog, config: CorrelatorConfig) -> Correlator {
        let rules: Vec<RuleFacts> = rules
            .iter()
            .map(|r| RuleFacts {
                id: r.id.as_str().into(),
                version: r.version,
                title: Arc::new(Title::parse(&r.title)),
                severity: r.severity,
                priority: r.priority,
                within: r.within,
                join: match r.join {
                    Join::Entity => JoinKind::Entity,
                    Join::Service => JoinKind::Service,
                    Join::DependsOn => JoinKind::DependsOn,
                    Join::Expr { .. } => JoinKind::Expr,
                },
                absence: r.not_followed_by.as_ref().map(|a| a.require_incident),
                threshold: r.threshold.as_ref().map(|t| (t.count as usize, t.within)),
                rise: r
                    .effect
                    .as_ref()
                    .and_then(|e| e.rises.as_ref())
                    .map(|r| (r.percent, r.baseline as usize)),
                resolve_after: r.resolve_after.unwrap_or(config.resolve_after),
                max_duration: config.max_duration.max(r.within),
                attach_only: r.attach_only,
            })
            .collect();
        let rule_bits = |pick: fn(&RuleFacts) -> bool| {
            rules
                .iter()
                .enumerate()
                .filter(|(_, r)| pick(r))
                .fold(0u64, |acc, (i, _)| acc | (1 << i))
        };
        let absence_rules = rule_bits(|r| r.absence.is_some());
        let valued_rules = rule_bits(|r| r.join == JoinKind::Expr || r.rise.is_some());
        let expr_rules = rule_bits(|r| r.join == JoinKind::Expr);
        let catalog_joins = rules
            .iter()
            .any(|r| matches!(r.join, JoinKind::Service | JoinKind::DependsOn));
        Correlator {
            catalog_joins,
            joins: FxHashMap::default(),
            rules,
            absence_rules,
            valued_rules,
            expr_rules,
            catalog: CatalogIndex::new(catalog),
            config,
            group_rule_id: ALERT_GROUP_RULE.into(),
            group_title: Arc::new(Title::parse("{alerts} on {entity}")),
            state: State {
                next_seq: 1,
                pending_sorted: true,
                ..State::default()
            },
            names: FxHashSet::default(),
            subjects: FxHashMap::default(),
        }
    }

    /// The rule ids and versions a snapshot is made with (and must match).
    fn rule_versions(&self) -> Vec<(String, u32)> {
        self.rules
            .iter()
            .map(|r| (r.id.to_string(), r.version))
            .collect()
    }

    /// Serializes the whole state for a checkpoint (compact binary).
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        let invalid = |e: postcard::Error| Error::InvalidState {
            reason: e.to_string(),
        };
        // The encoding of a [`Snapshot`] written into one buffer of its exact size:
        // the state is sized first (a pass that allocates nothing), then its
        // header, length and bytes are written in place instead of being encoded
        // apart and copied in (a large state, such as a full reorder buffer, was
        // written twice into fresh memory at every checkpoint).
        let size = postcard::experimental::serialized_size(&self.state).map_err(invalid)?;
        let head = SnapshotHead {
            version: SNAPSHOT_VERSION,
            rules: self.rule_versions(),
        };
        let head_size = postcard::experimental::serialized_size(&head).map_err(invalid)?;
        // 10: the longest varint a length can take.
        let mut out = Vec::with_capacity(head_size + 10 + size);
        out = postcard::to_extend(&head, out).map_err(invalid)?;
        // `serde_bytes` writes a length as a varint, as postcard writes a `usize`.
        out = postcard::to_extend(&size, out).map_err(invalid)?;
        postcard::to_extend(&self.state, out).map_err(invalid)
    }

    /// A [`Snapshot`] encoded as the struct it is read back as: what
    /// [`Correlator::snapshot`] must equal byte for byte.
    #[cfg(test)]
    pub(super) fn snapshot_encoded_whole(&self) -> Vec<u8> {
        let state = postcard::to_allocvec(&self.state).expect("state encodes");
        let snap = Snapshot {
            version: SNAPSHOT_VERSION,
            rules: self.rule_versions(),
            state: state.into(),
        };
        postcard::to_allocvec(&snap).expect("snapshot encodes")
    }

    /// Restores a state written by [`Correlator::snapshot`]. A snapshot of another
    /// rule pack is refused: its rule indexes would mean other rules.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let invalid = |reason: String| Error::InvalidState { reason };
        let snap: Snapshot<'_> = postcard::from_bytes(bytes).map_err(|e| invalid(e.to_string()))?;
        if snap.version != SNAPSHOT_VERSION {
            return Err(invalid(format!(
                "snapshot version {} is not {SNAPSHOT_VERSION}",
                snap.version
            )));
        }
        let ours = self.rule_versions();
        if snap.rules != ours {
            return Err(Error::RulesChanged {
                saved: snap
                    .rules
                    .iter()
                    .map(|(id, v)| format!("{id}@{v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            });
        }
        self.state = postcard::from_bytes(&snap.state).map_err(|e| invalid(e.to_string()))?;
        self.reintern();
        Ok(())
    }

    /// Shares equal subjects and names again after a restore.
    fn reintern(&mut self) {
        self.names.clear();
        self.subjects.clear();
        let mut pending = std::mem::take(&mut self.state.pending);
        for p in &mut pending {
            p.subject = self.share_subject(&p.subject);
            if let Some(n) = &p.alertname {
                p.alertname = Some(self.intern_name(n));
            }
        }
        self.state.pending = pending;
        let seqs: Vec<u64> = self.state.incidents.keys().collect();
        for seq in seqs {
            let Some(subject) = self.state.incidents.get(&seq).map(|i| i.subject.clone()) else {
                continue;
            };
            let shared = self.share_subject(&subject);
            if let Some(inc) = self.state.incidents.get_mut(&seq) {
                inc.subject = shared;
            }
        }
    }

    fn share_subject(&mut self, s: &Arc<Subject>) -> Arc<Subject> {
        let text = text_hash(&s.scope, &s.entity);
        match self.subjects.get(&text) {
            Some(existing) if existing.scope == s.scope && existing.entity == s.entity => {
                existing.clone()
            }
            Some(_) => s.clone(),
            None => {
                self.subjects.insert(text, s.clone());
                if self.catalog_joins && !self.joins.contains_key(&s.key) {
                    let joins = Arc::new(self.subject_joins(s));
                    self.joins.insert(s.key, joins);
                }
                s.clone()
            }
        }
    }

    fn intern_subject(&mut self, scope: &str, entity: &str) -> Arc<Subject> {
        // Looked up by a quick hash of the text; the stable key is computed only
        // for a subject not seen yet (this runs for every event).
        let text = text_hash(scope, entity);
        if let Some(s) = self.subjects.get(&text)
            && &*s.scope == scope
            && &*s.entity == entity
        {
            return s.clone();
        }
        let key = key_hash(&[scope, entity]);
        let s = Arc::new(Subject {
            scope: scope.into(),
            entity: entity.into(),
            key,
        });
        // On a (64-bit) collision the first subject keeps the slot; the other is
        // simply not shared.
        self.subjects.entry(text).or_insert_with(|| s.clone());
        if self.catalog_joins && !self.joins.contains_key(&key) {
            let joins = Arc::new(self.subject_joins(&s));
            self.joins.insert(key, joins);
        }
        s
    }

    fn subject_joins(&self, s: &Subject) -> SubjectJoins {
        let service = self
            .catalog
            .service_of(&s.entity)
            .cloned()
            .unwrap_or_else(|| s.entity.clone());
        let dependencies = self
            .catalog
            .dependencies
            .get(&service)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .map(|d| (key_hash(&[&s.scope, d]), d.clone()))
            .collect();
        SubjectJoins {
            service_key: key_hash(&[&s.scope, &service]),
            service,
            dependencies,
        }
    }

    fn intern_name(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.names.get(name) {
            return n.clone();
        }
        let n: Arc<str> = name.into();
        self.names.insert(n.clone());
        n
    }

    /// The current watermark, if any event advanced it yet.
    pub fn watermark(&self) -> Option<EventTime> {
        self.state.watermark
    }

    /// Events waiting for the watermark.
    pub fn pending_len(&self) -> usize {
        self.state.pending.len()
    }

    /// The smallest tag of the events still in the reorder buffer: reading the log
    /// again from there gives a fresh correlator every event not yet applied.
    pub fn oldest_pending_tag(&self) -> Option<u64> {
        self.state.pending.iter().map(|p| p.tag).min()
    }

    /// Sizes and eviction counters.
    pub fn stats(&self) -> StateStats {
        StateStats {
            pending: self.state.pending.len(),
            open_keys: self.state.causes.values().map(|v| v.len()).sum::<usize>()
                + self.state.effects.len()
                + self.state.expr_effects.len(),
            causes: self
                .state
                .causes
                .values()
                .flatten()
                .map(|(_, l)| l.causes.len())
                .sum(),
            effects: self
                .state
                .effects
                .values()
                .chain(self.state.expr_effects.values())
                .map(|l| l.effects.len())
                .sum(),
            remembered_ids: self.state.seen.len(),
            incidents: self.state.incidents.len(),
            evicted_expired: self.state.evicted_expired,
            evicted_cap: self.state.evicted_cap,
            forced: self.state.forced,
        }
    }

    /// Offers one event.
    pub fn push(&mut self, row: &EventRow<'_>, out: &mut Output) -> PushOutcome {
        // One probe of the id set: the vacant slot is filled once the event is
        // known to be neither a re-send nor too late.
        let unseen = match self.state.seen.entry(row.id) {
            std::collections::hash_map::Entry::Occupied(_) => return PushOutcome::Duplicate,
            std::collections::hash_map::Entry::Vacant(v) => v,
        };
        let status = Status::of(row.kind, row.status);
        let alert_key = if row.kind == EventKind::Alert {
            key_hash(&[row.source, row.source_event_id])
        } else {
            0
        };
        // Alertmanager re-sends a still-firing alert with its original `startsAt`
        // for as long as it fires, long after its id left the dedup horizon: while
        // an incident holds it, it is a re-send, not a late event.
        if status == Status::Firing && self.state.alerts.contains_key(&alert_key) {
            return PushOutcome::Duplicate;
        }
        let expiry = row.time.plus(row.allowed_lateness);
        if let Some(w) = self.state.watermark
            && row.time <= w
        {
            if row.time < w.minus(row.allowed_lateness) {
                return PushOutcome::TooLate;
            }
            unseen.insert(expiry);
            let p = self.pending_of(row, status, alert_key);
            // A late event gets versions of its own.
            self.flush(out);
            self.apply(&p, out);
            self.flush(out);
            return PushOutcome::AppliedLate;
        }
        unseen.insert(expiry);
        let p = self.pending_of(row, status, alert_key);
        if self.state.pending.back().is_some_and(|last| *last > p) {
            self.state.pending_sorted = false;
        }
        // Grown by a quarter, not doubled: a doubled buffer holds up to half its
        // size unused, which is most of what a buffered event costs.
        let pending = &mut self.state.pending;
        if pending.len() == pending.capacity() {
            pending.reserve_exact((pending.len() / 4).max(1024));
        }
        pending.push_back(p);
        if self.state.pending.len() > self.config.max_buffered {
            self.enforce_cap(out);
        }
        PushOutcome::Buffered
    }

    fn pending_of(&mut self, row: &EventRow<'_>, status: Status, alert_key: u64) -> Pending {
        let subject = self.intern_subject(row.scope, row.entity);
        let alertname = row.alertname.map(|n| self.intern_name(n));
        let m = row.matches;
        let mut extra: Vec<Extra> = Vec::new();
        // Only rules that join on an expression or watch a rise carry values.
        for rule_idx in bits((m.cause | m.effect | m.follow) & self.valued_rules) {
            let i = usize::from(rule_idx);
            let Some(rule) = self.rules.get(i) else {
                continue;
            };
            let bit = 1u64 << i;
            if rule.join == JoinKind::Expr {
                for (cause_side, on) in [
                    (true, m.cause & bit != 0),
                    (false, m.effect & bit != 0 || m.follow & bit != 0),
                ] {
                    if !on {
                        continue;
                    }
                    let side = if cause_side {
                        Side::Cause
                    } else {
                        Side::Effect
                    };
                    if let Some(v) = row
                        .values
                        .join_key(row.row, i, side)
                        .filter(|v| !v.is_empty())
                    {
                        extra.push(Extra::Key {
                            rule: rule_idx,
                            cause_side,
                            hash: key_hash(&[row.scope, v]),
                            value: v.into(),
                        });
                    }
                }
            }
            if rule.rise.is_some()
                && m.effect & bit != 0
                && let Some((value, series)) = row.values.rise(row.row, i)
                && value.is_finite()
            {
                extra.push(Extra::Rise {
                    rule: rule_idx,
                    value,
                    series: key_hash(&[series.unwrap_or("")]),
                });
            }
        }
        Pending {
            time: row.time,
            order: u8::from(!row.kind.is_change()),
            id: row.id,
            kind: row.kind,
            status,
            severity: row.severity,
            subject,
            alertname,
            alert_key,
            matches: m,
            tail: (m.cause != 0 || !extra.is_empty()).then(|| {
                Box::new(PendingTail {
                    summary: (m.cause != 0).then(|| row.summary.into()),
                    extra: extra.into_boxed_slice(),
                })
            }),
            tag: row.tag,
        }
    }

    /// Moves the watermark forward (never back) and applies every buffered event at
    /// or before it, in order; deadlines up to it fire; then state the watermark
    /// has left behind is evicted.
    pub fn advance(&mut self, watermark: EventTime, out: &mut Output) {
        if self.state.watermark.is_some_and(|w| watermark <= w) {
            return;
        }
        self.state.watermark = Some(watermark);
        self.sort_pending();
        let k = self.state.pending.partition_point(|p| p.time <= watermark);
        for _ in 0..k {
            let Some(p) = self.state.pending.pop_front() else {
                break;
            };
            self.apply_in_order(&p, out);
        }
        self.flush(out);
        self.run_deadlines(watermark, true, out);
        self.maybe_sweep(watermark);
        if self.stats().buffered() > self.config.max_buffered {
            self.enforce_cap(out);
        }
    }

    /// How far toward `target` the watermark can move while releasing at most
    /// about `max_events` buffered events: `target` itself when fewer wait at or
    /// before it, else the time of the `max_events`-th (its ties come along).
    /// Advancing in such steps gives the same incidents and versions as one jump
    /// (versions are cut per instant), with only a step's output in memory at once.
    pub fn release_bound(&mut self, target: EventTime, max_events: usize) -> EventTime {
        if max_events == 0 || self.state.pending.len() <= max_events {
            return target;
        }
        self.sort_pending();
        let watermark = self.state.watermark;
        match self.state.pending.get(max_events - 1) {
            // A step must move the watermark (events forced out by the cap may
            // have left it at the time of the next one).
            Some(p) if p.time < target && watermark.is_none_or(|w| p.time > w) => p.time,
            _ => target,
        }
    }

    fn sort_pending(&mut self) {
        if !self.state.pending_sorted {
            // Adaptive: a sorted run plus a few stragglers sorts in about O(n).
            self.state.pending.make_contiguous().sort();
            self.state.pending_sorted = true;
        }
    }

    /// Applies an event the watermark released: versions of the previous instant
    /// are emitted first, and deadlines before this instant fire.
    fn apply_in_order(&mut self, p: &Pending, out: &mut Output) {
        if self.state.instant.is_none_or(|i| p.time > i) {
            self.flush(out);
            self.run_deadlines(p.time, false, out);
            self.state.instant = Some(p.time);
        }
        self.apply(p, out);
        self.state.applied_since_sweep += 1;
    }

    /// Fires deadlines before `until` (or at it, when `inclusive`), one instant at a
    /// time, flushing after each so versions do not depend on how far the
    /// watermark jumped.
    fn run_deadlines(&mut self, until: EventTime, inclusive: bool, out: &mut Output) {
        let due = |t: EventTime| if inclusive { t <= until } else { t < until };
        loop {
            let next_wait = self.state.waits.keys().next().map(|k| k.0);
            let next_quiet = self.next_deadline();
            let t = match (next_wait, next_quiet) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => return,
            };
            if !due(t) {
                return;
            }
            while let Some(entry) = self.state.waits.first_entry() {
                if entry.key().0 != t {
                    break;
                }
                let ((deadline, rule, cause), wait) = entry.remove_entry();
                self.unindex_wait(rule, wait.key, deadline, cause);
                self.fire_absence(rule, cause, wait, deadline, out);
            }
            while let Some(d) = self.next_deadline() {
                if d != t {
                    break;
                }
                let Some(Reverse((d, seq))) = self.state.deadlines.pop() else {
                    break;
                };
                self.deadline_reached(seq, d);
            }
            self.flush(out);
        }
    }

    /// The earliest current deadline, dropping superseded entries on the way.
    fn next_deadline(&mut self) -> Option<EventTime> {
        while let Some(&Reverse((d, seq))) = self.state.deadlines.peek() {
            let current = self
                .state
                .incidents
                .get(&seq)
                .is_some_and(|i| i.deadline == Some(d));
            if current {
                return Some(d);
            }
            self.state.deadlines.pop();
        }
        None
    }

    fn apply(&mut self, p: &Pending, out: &mut Output) {
        if p.status == Status::Resolved {
            self.resolve_alert(p, out);
            return;
        }
        if p.matches.follow != 0 {
            self.cancel_waits(p);
        }
        // Links this effect makes now, and threshold causes it counts toward.
        let mut links: Vec<Link> = Vec::new();
        let mut counted: Vec<(u8, u64, EventId, EventTime)> = Vec::new();
        // Most rules join on the entity: one probe says whether any cause waits
        // under this subject's key at all (none for an event that is no effect).
        let entity_causes = p.matches.effect != 0 && self.state.causes.contains_key(&p.subject.key);
        for r in bits(p.matches.effect) {
            let Some(rule) = self.rules.get(usize::from(r)) else {
                continue;
            };
            if rule.absence.is_some() {
                continue;
            }
            let (within, threshold, rises, entity) = (
                rule.within,
                rule.threshold.is_some(),
                rule.rise.is_some(),
                rule.join == JoinKind::Entity,
            );
            if rises && !self.rose(r, p) {
                continue;
            }
            if entity && !entity_causes {
                continue;
            }
            for key in self.key_hashes(r, Side::Effect, p) {
                let Some(list) = self.cause_list(r, key) else {
                    continue;
                };
                let upto = list.causes.partition_point(|c| c.time <= p.time);
                let Some(c) = list.causes[..upto]
                    .iter()
                    .rev()
                    .find(|c| c.id != p.id)
                    .filter(|c| p.time <= c.time.plus(within))
                else {
                    continue;
                };
                if threshold && !c.threshold_met {
                    counted.push((r, key, c.id, c.time));
                    continue;
                }
                links.push(Link {
                    rule: r,
                    key,
                    label: list.label.clone(),
                    cause: c.id,
                    cause_time: c.time,
                });
            }
        }
        // Attach-only links count only where their cause is in a live incident.
        links.retain(|l| {
            !self.rules[usize::from(l.rule)].attach_only
                || self.live_incident_of(l.cause, p.time).is_some()
        });
        let seq = if !links.is_empty() {
            self.place_linked(p, &links, out)
        } else if p.status == Status::Firing {
            self.place_in_group(p, out)
        } else {
            0
        };
        let effect_rules = p.matches.effect & !self.absence_rules;
        let rec = EffectRec {
            time: p.time,
            id: p.id,
            seq,
            rules: effect_rules,
            severity: p.severity,
        };
        if effect_rules != 0 {
            self.buffer_effect(p, rec);
        }
        for (r, key, cause, cause_time) in counted {
            self.count_toward_threshold(r, key, cause, cause_time, rec, &p.subject, out);
        }
        if p.matches.cause != 0 {
            self.register_cause(p, out);
        }
    }

    /// The join keys of an event for rule `r` on `side`.
    fn keys(&self, r: u8, side: Side, p: &Pending) -> SmallVec<[Key; 2]> {
        let mut keys = SmallVec::new();
        self.each_key(r, side, p, |hash, value| {
            keys.push(Key {
                hash,
                value: value.cloned(),
            });
        });
        keys
    }

    /// The hashes of [`Self::keys`]: where the joined values are not needed, their
    /// `Arc`s are not cloned (an atomic increment and decrement per key).
    fn key_hashes(&self, r: u8, side: Side, p: &Pending) -> SmallVec<[u64; 2]> {
        let mut hashes = SmallVec::new();
        self.each_key(r, side, p, |hash, _| hashes.push(hash));
        hashes
    }

    /// Calls `f` with each join key's hash and joined value (`None`: the event's
    /// own scope/entity).
    fn each_key(&self, r: u8, side: Side, p: &Pending, mut f: impl FnMut(u64, Option<&Arc<str>>)) {
        let Some(rule) = self.rules.get(usize::from(r)) else {
            return;
        };
        match rule.join {
            JoinKind::Entity => f(p.subject.key, None),
            JoinKind::Service | JoinKind::DependsOn => {
                let computed;
                let joins = match self.joins.get(&p.subject.key) {
                    Some(j) => &**j,
                    None => {
                        computed = self.subject_joins(&p.subject);
                        &computed
                    }
                };
                if rule.join == JoinKind::DependsOn && side == Side::Effect {
                    for (hash, dep) in &joins.dependencies {
                        f(*hash, Some(dep));
                    }
                } else {
                    f(joins.service_key, Some(&joins.service));
                }
            }
            JoinKind::Expr => {
                let want_cause = side == Side::Cause;
                for x in p.extra() {
                    if let Extra::Key {
                        rule,
                        cause_side,
                        hash,
                        value,
                    } = x
                        && *rule == r
                        && *cause_side == want_cause
                    {
                        f(*hash, Some(value));
                    }
                }
            }
        }
    }

    fn label(p: &Pending, key: &Key) -> Arc<str> {
        match &key.value {
            None => p.subject.label(),
            Some(v) => format!("{}/{v}", p.subject.scope).into(),
        }
    }

    /// `rises` rules: whether this effect's value rose over its series' baseline;
    /// the value then joins the baseline.
    fn rose(&mut self, r: u8, p: &Pending) -> bool {
        let Some((percent, n)) = self.rules.get(usize::from(r)).and_then(|x| x.rise) else {
            return false;
        };
        let Some((value, series)) = p.extra().iter().find_map(|x| match x {
            Extra::Rise {
                rule,
                value,
                series,
            } if *rule == r => Some((*value, *series)),
            _ => None,
        }) else {
            return false;
        };
        let b = self
            .state
            .baselines
            .entry((r, p.subject.key, series))
            .or_default();
        let rose = b.values.len() >= n && {
            let mean = b.values.iter().sum::<f64>() / b.values.len() as f64;
            if mean > 0.0 {
                value >= mean * (1.0 + percent / 100.0)
            } else {
                value > 0.0
            }
        };
        b.values.push_back(value);
        while b.values.len() > n {
            b.values.pop_front();
        }
        b.last = Some(b.last.map_or(p.time, |l| l.max(p.time)));
        rose
    }

    fn buffer_effect(&mut self, p: &Pending, rec: EffectRec) {
        let insert = |list: &mut EffectList| {
            // Effects are applied in time order: almost always an append.
            if list
                .effects
                .last()
                .is_none_or(|l| (l.time, l.id) < (rec.time, rec.id))
            {
                list.effects.push(rec);
                return;
            }
            let at = list
                .effects
                .partition_point(|e| (e.time, e.id) < (rec.time, rec.id));
            list.effects.insert(at, rec);
        };
        // Expression joins keep their own buffers: their keys are not the subject.
        let mut expr_rules = 0u64;
        for r in bits(rec.rules) {
            if self
                .rules
                .get(usize::from(r))
                .is_some_and(|x| x.join == JoinKind::Expr)
            {
                expr_rules |= 1 << r;
                for key in self.key_hashes(r, Side::Effect, p) {
                    let list =
                        self.state
                            .expr_effects
                            .entry((r, key))
                            .or_insert_with(|| EffectList {
                                subject: p.subject.clone(),
                                effects: Vec::new(),
                            });
                    insert(list);
                }
            }
        }
        if rec.rules & !expr_rules != 0 {
            let list = self
                .state
                .effects
                .entry(p.subject.key)
                .or_insert_with(|| EffectList {
                    subject: p.subject.clone(),
                    effects: Vec::new(),
                });
            insert(list);
        }
    }

    /// The incident an event belongs to, following merges, if it is live at `t`.
    fn live_incident_of(&self, event: EventId, t: EventTime) -> Option<u64> {
        let seq = self.forward(self.state.members.get(&event)?.seq)?;
        self.state
            .incidents
            .get(&seq)
            .filter(|i| i.live_at(t))
            .map(|_| seq)
    }

    /// The incident a sequence number stands for now, following merges.
    fn forward(&self, mut seq: u64) -> Option<u64> {
        for _ in 0..64 {
            let inc = self.state.incidents.get(&seq)?;
            match inc.merged_into {
                Some(next) => seq = next,
                None => return Some(seq),
            }
        }
        None
    }

    fn cause_list(&self, rule: u8, key: u64) -> Option<&CauseList> {
        self.state
            .causes
            .get(&key)?
            .iter()
            .find(|(r, _)| *r == rule)
            .map(|(_, l)| l)
    }

    fn cause_rec(&self, rule: u8, key: u64, cause: EventId, time: EventTime) -> Option<&CauseRec> {
        let list = self.cause_list(rule, key)?;
        let at = list
            .causes
            .binary_search_by(|c| (c.time, c.id).cmp(&(time, cause)))
            .ok()?;
        list.causes.get(at)
    }

    fn cause_rec_mut(
        &mut self,
        rule: u8,
        key: u64,
        cause: EventId,
        time: EventTime,
    ) -> Option<&mut CauseRec> {
        let list = self
            .state
            .causes
            .get_mut(&key)?
            .iter_mut()
            .find(|(r, _)| *r == rule)
            .map(|(_, l)| l)?;
        let at = list
            .causes
            .binary_search_by(|c| (c.time, c.id).cmp(&(time, cause)))
            .ok()?;
        list.causes.get_mut(at)
    }

    /// Places an effect with links into its causes' incident (merging theirs, or
    /// opening one), returning that incident.
    fn place_linked(&mut self, p: &Pending, links: &[Link], out: &mut Output) -> u64 {
        let mut live: Vec<u64> = links
            .iter()
            .filter_map(|l| self.live_incident_of(l.cause, p.time))
            .collect();
        live.sort_unstable();
        live.dedup();
        let target = match live.as_slice() {
            [] => {
                // The strongest link opens it: rule priority, then the latest cause.
                let Some(best) = links.iter().max_by(|a, b| {
                    let pa = self.rules[usize::from(a.rule)].priority;
                    let pb = self.rules[usize::from(b.rule)].priority;
                    (pa, a.cause_time, Reverse(a.rule)).cmp(&(pb, b.cause_time, Reverse(b.rule)))
                }) else {
                    return 0;
                };
                self.open_chain(best, p.subject.clone(), out)
            }
            [one] => *one,
            many => self.merge_all(many, p.time),
        };
        for l in links {
            self.add_cause_member(target, l, out);
        }
        self.add_effect_member(target, p, links, out);
        target
    }

    /// Opens a chain incident for a link: its cause is the first member.
    fn open_chain(&mut self, link: &Link, subject: Arc<Subject>, out: &mut Output) -> u64 {
        let rule_idx = link.rule;
        let generation = match self.cause_rec_mut(link.rule, link.key, link.cause, link.cause_time)
        {
            Some(c) => {
                c.generation += 1;
                c.generation
            }
            None => 1,
        };
        let rule = &self.rules[usize::from(rule_idx)];
        let id = id::incident(&[&rule.id, &link.cause.to_string(), &generation.to_string()]);
        let seq = self.new_incident(
            id.into(),
            rule_idx,
            rule.severity,
            subject,
            link.cause_time,
            None,
            rule.resolve_after,
            rule.max_duration,
        );
        self.add_cause_member(seq, link, out);
        seq
    }

    #[allow(clippy::too_many_arguments)]
    fn new_incident(
        &mut self,
        id: Arc<str>,
        rule: u8,
        severity: Severity,
        subject: Arc<Subject>,
        opened_at: EventTime,
        group: Option<(u64, Arc<str>)>,
        resolve_after: Duration,
        max_duration: Duration,
    ) -> u64 {
        let seq = self.state.next_seq;
        self.state.next_seq += 1;
        self.state.incidents.insert(
            seq,
            Incident {
                id,
                version: 0,
                state: IncidentState::Open,
                rule,
                template: rule,
                severity,
                subject,
                opened_at,
                updated_at: opened_at,
                last_activity: opened_at,
                resolved_at: None,
                event_count: 0,
                alertnames: Vec::new(),
                // Room for a typical alert group's alerts: growing from empty
                // rehashed each group's set three or four times.
                firing: FxHashSet::with_capacity_and_hasher(8, Default::default()),
                roots: Vec::new(),
                root: None,
                cause_summary: None,
                group,
                merged_into: None,
                deadline: None,
                resolve_after,
                max_duration,
                title: "".into(),
                title_stale: true,
            },
        );
        self.state.dirty.push(seq);
        seq
    }

    /// Adds a link's cause to an incident as a cause member.
    fn add_cause_member(&mut self, seq: u64, link: &Link, out: &mut Output) {
        let Some(c) = self
            .cause_rec(link.rule, link.key, link.cause, link.cause_time)
            .cloned()
        else {
            return;
        };
        let rule = &self.rules[usize::from(link.rule)];
        let (rule_id, rule_version, priority) = (rule.id.clone(), rule.version, rule.priority);
        let member = self.state.members.get(&c.id).copied();
        let has_cause = member.is_some_and(|m| m.has_cause);
        let already = member.and_then(|m| self.forward(m.seq)) == Some(seq);
        if !already {
            self.state.members.insert(c.id, Member { seq, has_cause });
        }
        let Some(inc) = self.state.incidents.get_mut(&seq) else {
            return;
        };
        if !already {
            inc.event_count += 1;
            inc.severity = inc.severity.max(c.severity);
            if c.time < inc.opened_at {
                inc.opened_at = c.time;
            }
        }
        if !has_cause {
            match inc.roots.iter_mut().find(|r| r.id == c.id) {
                Some(existing) if existing.priority < priority => {
                    existing.priority = priority;
                    existing.rule = link.rule;
                }
                Some(_) => {}
                None => inc.roots.push(RootCand {
                    id: c.id,
                    time: c.time,
                    change: c.kind.is_change(),
                    priority,
                    rule: link.rule,
                    summary: c.summary.clone(),
                }),
            }
        }
        // A cause already in the incident (linked by another rule) gains no edge of
        // its own: the effect's edge names the rule; its rank as a root may rise.
        if !already {
            out.edges.push(IncidentEdge {
                incident_id: inc.id.clone(),
                event_id: c.id,
                role: EdgeRole::Cause,
                linked_by: rule_id,
                rule_version,
                cause_event_id: None,
                lag_seconds: 0.0,
                join_key: link.label.clone(),
                time: c.time,
            });
        }
        self.recompute_root(seq);
        self.state.dirty.push(seq);
    }

    /// Adds an effect to an incident, with one edge per link.
    fn add_effect_member(&mut self, seq: u64, p: &Pending, links: &[Link], out: &mut Output) {
        if p.matches.cause != 0 {
            self.state.members.insert(
                p.id,
                Member {
                    seq,
                    has_cause: true,
                },
            );
        }
        let Some(inc) = self.state.incidents.get_mut(&seq) else {
            return;
        };
        for l in links {
            let rule = &self.rules[usize::from(l.rule)];
            out.edges.push(IncidentEdge {
                incident_id: inc.id.clone(),
                event_id: p.id,
                role: EdgeRole::Effect,
                linked_by: rule.id.clone(),
                rule_version: rule.version,
                cause_event_id: Some(l.cause),
                lag_seconds: p.time.seconds_since(l.cause_time),
                join_key: l.label.clone(),
                time: p.time,
            });
            inc.severity = inc.severity.max(rule.severity);
        }
        self.note_member(seq, p);
    }

    /// Counts an applied event into an incident: activity, severity, alerts.
    fn note_member(&mut self, seq: u64, p: &Pending) {
        let Some(inc) = self.state.incidents.get_mut(&seq) else {
            return;
        };
        inc.event_count += 1;
        inc.severity = inc.severity.max(p.severity);
        if p.time > inc.updated_at {
            inc.updated_at = p.time;
        }
        if p.time > inc.last_activity {
            inc.last_activity = p.time;
        }
        if p.status == Status::Firing {
            inc.firing.insert(p.alert_key);
            self.state.alerts.insert(p.alert_key, seq);
            if let Some(name) = &p.alertname
                && let Err(at) = inc.alertnames.binary_search(name)
            {
                inc.alertnames.insert(at, name.clone());
                inc.title_stale = true;
            }
        }
        self.schedule(seq);
        self.state.dirty.push(seq);
    }

    /// Puts an uncaused firing alert in its `(alertname, scope, entity)` group.
    fn place_in_group(&mut self, p: &Pending, out: &mut Output) -> u64 {
        let name = p.alertname.as_deref().unwrap_or("alert");
        let gkey = key_hash(&[&p.subject.scope, &p.subject.entity, name]);
        let existing = self.state.groups.get(&gkey).and_then(|s| self.forward(*s));
        let joinable = existing.filter(|s| {
            self.state.incidents.get(s).is_some_and(|inc| {
                inc.live_at(p.time) && p.time <= inc.updated_at.plus(self.config.group_interval)
            })
        });
        let seq = match joinable {
            Some(s) => s,
            None => {
                let id = id::incident(&[
                    ALERT_GROUP_RULE,
                    name,
                    &p.subject.scope,
                    &p.subject.entity,
                    p.id.text().as_str(),
                ]);
                let label: Arc<str> =
                    format!("{}/{}/{name}", p.subject.scope, p.subject.entity).into();
                let seq = self.new_incident(
                    id.into(),
                    GROUP,
                    Severity::None,
                    p.subject.clone(),
                    p.time,
                    Some((gkey, label)),
                    self.config.resolve_after,
                    self.config.max_duration,
                );
                self.state.groups.insert(gkey, seq);
                seq
            }
        };
        if p.matches.cause != 0 {
            self.state.members.insert(
                p.id,
                Member {
                    seq,
                    has_cause: false,
                },
            );
        }
        if let Some(inc) = self.state.incidents.get(&seq) {
            let label = inc
                .group
                .as_ref()
                .map(|g| g.1.clone())
                .unwrap_or_else(|| inc.subject.label());
            out.edges.push(IncidentEdge {
                incident_id: inc.id.clone(),
                event_id: p.id,
                role: EdgeRole::Effect,
                linked_by: self.group_rule_id.clone(),
                rule_version: 1,
                cause_event_id: None,
                lag_seconds: p.time.seconds_since(inc.opened_at),
                join_key: label,
                time: p.time,
            });
        }
        self.note_member(seq, p);
        seq
    }

    /// Buffers a cause for its rules (or an absence wait), and links effects that
    /// were applied before it arrived.
    fn register_cause(&mut self, p: &Pending, out: &mut Output) {
        let summary: Arc<str> = p.summary().unwrap_or("").into();
        for r in bits(p.matches.cause) {
            let Some(rule) = self.rules.get(usize::from(r)) else {
                continue;
            };
            let within = rule.within;
            let absence = rule.absence.is_some();
            for key in self.keys(r, Side::Cause, p) {
                let label = Self::label(p, &key);
                if absence {
                    let deadline = p.time.plus(within);
                    self.state.waits.insert(
                        (deadline, r, p.id),
                        Wait {
                            time: p.time,
                            key: key.hash,
                            label,
                            subject: p.subject.clone(),
                            summary: summary.clone(),
                            kind: p.kind,
                            severity: p.severity,
                        },
                    );
                    self.state
                        .wait_index
                        .entry((r, key.hash))
                        .or_default()
                        .push((deadline, p.id));
                    continue;
                }
                let lists = self.state.causes.entry(key.hash).or_default();
                let at = match lists.iter().position(|(x, _)| *x == r) {
                    Some(at) => at,
                    None => {
                        lists.push((
                            r,
                            CauseList {
                                label: label.clone(),
                                causes: Vec::new(),
                            },
                        ));
                        lists.len() - 1
                    }
                };
                let list = &mut lists[at].1;
                let at = if list
                    .causes
                    .last()
                    .is_none_or(|l| (l.time, l.id) < (p.time, p.id))
                {
                    list.causes.len()
                } else {
                    list.causes
                        .partition_point(|c| (c.time, c.id) < (p.time, p.id))
                };
                list.causes.insert(
                    at,
                    CauseRec {
                        time: p.time,
                        id: p.id,
                        kind: p.kind,
                        severity: p.severity,
                        summary: summary.clone(),
                        generation: 0,
                        candidates: Vec::new(),
                        threshold_met: false,
                    },
                );
                let link = Link {
                    rule: r,
                    key: key.hash,
                    label: list.label.clone(),
                    cause: p.id,
                    cause_time: p.time,
                };
                self.link_applied_effects(&link, within, p, out);
            }
        }
    }

    /// A cause arriving after effects it explains: link the buffered effects in its
    /// window (for threshold rules, count them first).
    fn link_applied_effects(
        &mut self,
        link: &Link,
        within: Duration,
        p: &Pending,
        out: &mut Output,
    ) {
        let r = link.rule;
        let hi = p.time.plus(within);
        // Which buffers hold this rule's effects on this key.
        let mut lists: SmallVec<[(bool, u64); 4]> = SmallVec::new();
        match self.rules[usize::from(r)].join {
            JoinKind::Entity => lists.push((false, link.key)),
            JoinKind::Expr => lists.push((true, link.key)),
            JoinKind::Service | JoinKind::DependsOn => {
                let service = self
                    .catalog
                    .service_of(&p.subject.entity)
                    .cloned()
                    .unwrap_or_else(|| p.subject.entity.clone());
                let mut names: Vec<Arc<str>> = Vec::new();
                let services: Vec<Arc<str>> =
                    if self.rules[usize::from(r)].join == JoinKind::Service {
                        vec![service]
                    } else {
                        self.catalog
                            .dependents
                            .get(&service)
                            .cloned()
                            .unwrap_or_default()
                    };
                for s in services {
                    match self.catalog.names.get(&s) {
                        Some(n) => names.extend(n.iter().cloned()),
                        None => names.push(s),
                    }
                }
                for n in names {
                    lists.push((false, key_hash(&[&p.subject.scope, &n])));
                }
            }
        }
        let mut found: Vec<(EffectRec, Arc<Subject>)> = Vec::new();
        for (expr, k) in lists {
            let list = if expr {
                self.state.expr_effects.get(&(r, k))
            } else {
                self.state.effects.get(&k)
            };
            let Some(list) = list else { continue };
            let from = list.effects.partition_point(|e| e.time < p.time);
            for e in &list.effects[from..] {
                if e.time > hi {
                    break;
                }
                if e.rules & (1 << r) != 0 && e.id != p.id {
                    found.push((*e, list.subject.clone()));
                }
            }
        }
        if found.is_empty() {
            return;
        }
        found.sort_by_key(|(e, _)| (e.time, e.id));
        if self.rules[usize::from(r)].threshold.is_some() {
            for (e, subject) in found {
                self.count_toward_threshold(
                    r,
                    link.key,
                    link.cause,
                    link.cause_time,
                    e,
                    &subject,
                    out,
                );
            }
            return;
        }
        for (e, subject) in found {
            self.link_existing(link, e, &subject, out);
        }
    }

    /// Counts an effect toward a threshold rule's cause; once the count is reached
    /// within the window, every counted effect is linked.
    #[allow(clippy::too_many_arguments)]
    fn count_toward_threshold(
        &mut self,
        r: u8,
        key: u64,
        cause: EventId,
        cause_time: EventTime,
        e: EffectRec,
        subject: &Arc<Subject>,
        out: &mut Output,
    ) {
        let Some((count, window)) = self.rules.get(usize::from(r)).and_then(|x| x.threshold) else {
            return;
        };
        let Some(label) = self.cause_list(r, key).map(|l| l.label.clone()) else {
            return;
        };
        let link = Link {
            rule: r,
            key,
            label,
            cause,
            cause_time,
        };
        let Some(c) = self.cause_rec_mut(r, key, cause, cause_time) else {
            return;
        };
        if c.threshold_met {
            self.link_existing(&link, e, subject, out);
            return;
        }
        if c.candidates.iter().any(|(x, _)| x.id == e.id) {
            return;
        }
        let at = c
            .candidates
            .partition_point(|(x, _)| (x.time, x.id) < (e.time, e.id));
        c.candidates.insert(at, (e, subject.clone()));
        // Any `count` candidates within `window` of each other reach it.
        let reached = c
            .candidates
            .windows(count)
            .any(|w| w[count - 1].0.time <= w[0].0.time.plus(window));
        if !reached {
            return;
        }
        c.threshold_met = true;
        let candidates = std::mem::take(&mut c.candidates);
        for (cand, subject) in candidates {
            self.link_existing(&link, cand, &subject, out);
        }
    }

    /// Links a cause to an effect that was already applied (and placed, or not).
    fn link_existing(
        &mut self,
        link: &Link,
        e: EffectRec,
        subject: &Arc<Subject>,
        out: &mut Output,
    ) {
        let current = self.effect_incident(e);
        let cause_inc = self.live_incident_of(link.cause, e.time);
        if self.rules[usize::from(link.rule)].attach_only && cause_inc.is_none() {
            return;
        }
        let target = match (current, cause_inc) {
            (Some(j), Some(t)) if j == t => j,
            (Some(j), Some(t)) => self.merge_all(&[j, t], e.time),
            (Some(j), None) => j,
            (None, Some(t)) => t,
            (None, None) => self.open_chain(link, subject.clone(), out),
        };
        self.add_cause_member(target, link, out);
        // The effect now has a cause: it is no root candidate any more.
        if let Some(m) = self.state.members.get_mut(&e.id) {
            m.has_cause = true;
        }
        let rule = &self.rules[usize::from(link.rule)];
        let (rule_id, rule_version, severity) = (rule.id.clone(), rule.version, rule.severity);
        // An effect already in an incident (now the target, or merged into it) is
        // counted there; an unplaced one joins now.
        let placed = current.is_some();
        if let Some(inc) = self.state.incidents.get_mut(&target) {
            inc.roots.retain(|r| r.id != e.id);
            inc.severity = inc.severity.max(severity);
            if !placed {
                inc.event_count += 1;
                inc.severity = inc.severity.max(e.severity);
                if e.time > inc.updated_at {
                    inc.updated_at = e.time;
                }
                if e.time > inc.last_activity {
                    inc.last_activity = e.time;
                }
            }
            out.edges.push(IncidentEdge {
                incident_id: inc.id.clone(),
                event_id: e.id,
                role: EdgeRole::Effect,
                linked_by: rule_id,
                rule_version,
                cause_event_id: Some(link.cause),
                lag_seconds: e.time.seconds_since(link.cause_time),
                join_key: link.label.clone(),
                time: e.time,
            });
        }
        if !placed {
            self.set_effect_seq(e, subject.key, target);
            self.schedule(target);
        }
        self.recompute_root(target);
        self.state.dirty.push(target);
    }

    /// The incident an applied effect sits in now (following merges).
    fn effect_incident(&self, e: EffectRec) -> Option<u64> {
        if e.seq == 0 {
            return None;
        }
        self.forward(e.seq)
    }

    /// Notes in every buffered copy of an applied effect of `subject_key` the
    /// incident it was placed in. Only the lists [`Self::buffer_effect`] can have
    /// put it in are visited: its subject's, and those of the expression rules it
    /// is an effect of (visiting every list made each late link cost a search per
    /// subject in the state).
    fn set_effect_seq(&mut self, e: EffectRec, subject_key: u64, seq: u64) {
        let set = |list: &mut EffectList| {
            if let Ok(at) = list
                .effects
                .binary_search_by(|x| (x.time, x.id).cmp(&(e.time, e.id)))
            {
                list.effects[at].seq = seq;
            }
        };
        if e.rules & !self.expr_rules != 0
            && let Some(list) = self.state.effects.get_mut(&subject_key)
        {
            set(list);
        }
        if e.rules & self.expr_rules != 0 {
            for ((r, _), list) in self.state.expr_effects.iter_mut() {
                if e.rules & (1 << r) != 0 {
                    set(list);
                }
            }
        }
    }

    /// Merges incidents into the one opened first (a live one before a resolved
    /// one); the others end, pointing at it.
    fn merge_all(&mut self, seqs: &[u64], t: EventTime) -> u64 {
        let Some(&survivor) = seqs.iter().min_by_key(|s| {
            let (dead, opened) = self
                .state
                .incidents
                .get(s)
                .map_or((true, EventTime::MIN), |inc| {
                    (!inc.live_at(t), inc.opened_at)
                });
            (dead, opened, **s)
        }) else {
            return 0;
        };
        for &s in seqs {
            if s == survivor {
                continue;
            }
            let Some(mut gone) = self.state.incidents.remove(&s) else {
                continue;
            };
            gone.deadline = None;
            if let Some(inc) = self.state.incidents.get_mut(&survivor) {
                inc.max_duration = inc.max_duration.max(gone.max_duration);
                inc.event_count += gone.event_count;
                inc.severity = inc.severity.max(gone.severity);
                inc.opened_at = inc.opened_at.min(gone.opened_at);
                inc.updated_at = inc.updated_at.max(gone.updated_at).max(t);
                inc.last_activity = inc.last_activity.max(gone.last_activity);
                for n in &gone.alertnames {
                    if let Err(at) = inc.alertnames.binary_search(n) {
                        inc.alertnames.insert(at, n.clone());
                    }
                }
                for k in gone.firing.drain() {
                    inc.firing.insert(k);
                }
                for r in gone.roots.drain(..) {
                    if !inc.roots.iter().any(|x| x.id == r.id) {
                        inc.roots.push(r);
                    }
                }
                inc.title_stale = true;
            }
            gone.state = IncidentState::Resolved;
            gone.resolved_at = Some(t);
            gone.updated_at = gone.updated_at.max(t);
            gone.merged_into = Some(survivor);
            self.state.incidents.insert(s, gone);
            self.state.dirty.push(s);
        }
        if let Some(inc) = self.state.incidents.get_mut(&survivor)
            && inc.state == IncidentState::Resolved
            && !inc.firing.is_empty()
        {
            // A resolved incident absorbing firing alerts is not resolved.
            inc.state = IncidentState::Updated;
            inc.resolved_at = None;
        }
        self.recompute_root(survivor);
        self.schedule(survivor);
        self.state.dirty.push(survivor);
        survivor
    }

    fn recompute_root(&mut self, seq: u64) {
        let Some(inc) = self.state.incidents.get_mut(&seq) else {
            return;
        };
        let best = inc.roots.iter().min_by_key(|r| r.rank()).cloned();
        if let Some(b) = best
            && (inc.root != Some(b.id) || inc.rule != b.rule)
        {
            inc.root = Some(b.id);
            inc.cause_summary = Some(b.summary.clone());
            if inc.template == inc.rule {
                inc.template = b.rule;
            }
            inc.rule = b.rule;
            inc.title_stale = true;
        }
    }

    /// (Re)schedules an incident's resolution deadline.
    fn schedule(&mut self, seq: u64) {
        let Some(inc) = self.state.incidents.get_mut(&seq) else {
            return;
        };
        if inc.state == IncidentState::Resolved {
            inc.deadline = None;
            return;
        }
        let expiry = inc.opened_at.plus(inc.max_duration);
        let d = if inc.firing.is_empty() {
            inc.last_activity.plus(inc.resolve_after).min(expiry)
        } else {
            expiry
        };
        // Unchanged (a firing incident's expiry): its heap entry is still current.
        if inc.deadline == Some(d) {
            return;
        }
        inc.deadline = Some(d);
        self.state.deadlines.push(Reverse((d, seq)));
    }

    /// A quiet or maximum-duration deadline passed.
    fn deadline_reached(&mut self, seq: u64, d: EventTime) {
        let Some(inc) = self.state.incidents.get_mut(&seq) else {
            return;
        };
        inc.deadline = None;
        if inc.state == IncidentState::Resolved {
            return;
        }
        inc.state = IncidentState::Resolved;
        inc.resolved_at = Some(d);
        inc.updated_at = inc.updated_at.max(d);
        self.state.dirty.push(seq);
    }

    fn resolve_alert(&mut self, p: &Pending, out: &mut Output) {
        let Some(seq) = self
            .state
            .alerts
            .get(&p.alert_key)
            .and_then(|s| self.forward(*s))
        else {
            return;
        };
        let Some(inc) = self.state.incidents.get_mut(&seq) else {
            return;
        };
        if inc.state == IncidentState::Resolved {
            return;
        }
        self.state.alerts.remove(&p.alert_key);
        inc.firing.remove(&p.alert_key);
        inc.event_count += 1;
        if p.time > inc.updated_at {
            inc.updated_at = p.time;
        }
        if p.time > inc.last_activity {
            inc.last_activity = p.time;
        }
        let linked_by = if inc.rule == GROUP {
            self.group_rule_id.clone()
        } else {
            self.rules[usize::from(inc.rule)].id.clone()
        };
        let rule_version = if inc.rule == GROUP {
            1
        } else {
            self.rules[usize::from(inc.rule)].version
        };
        out.edges.push(IncidentEdge {
            incident_id: inc.id.clone(),
            event_id: p.id,
            role: EdgeRole::Context,
            linked_by,
            rule_version,
            cause_event_id: None,
            lag_seconds: p.time.seconds_since(inc.opened_at),
            join_key: inc
                .group
                .as_ref()
                .map(|g| g.1.clone())
                .unwrap_or_else(|| p.subject.label()),
            time: p.time,
        });
        if inc.firing.is_empty() {
            inc.state = IncidentState::Resolved;
            inc.resolved_at = Some(p.time);
        }
        self.schedule(seq);
        self.state.dirty.push(seq);
    }

    fn cancel_waits(&mut self, p: &Pending) {
        for r in bits(p.matches.follow) {
            if self
                .rules
                .get(usize::from(r))
                .is_none_or(|x| x.absence.is_none())
            {
                continue;
            }
            for key in self.key_hashes(r, Side::Effect, p) {
                let Some(list) = self.state.wait_index.get_mut(&(r, key)) else {
                    continue;
                };
                let mut cancelled = Vec::new();
                list.retain(|(deadline, cause)| {
                    let Some(w) = self.state.waits.get(&(*deadline, r, *cause)) else {
                        return false;
                    };
                    let followed = *cause != p.id && w.time <= p.time && p.time <= *deadline;
                    if followed {
                        cancelled.push((*deadline, *cause));
                    }
                    !followed
                });
                if list.is_empty() {
                    self.state.wait_index.remove(&(r, key));
                }
                for (deadline, cause) in cancelled {
                    self.state.waits.remove(&(deadline, r, cause));
                }
            }
        }
    }

    fn unindex_wait(&mut self, r: u8, key: u64, deadline: EventTime, cause: EventId) {
        if let Some(list) = self.state.wait_index.get_mut(&(r, key)) {
            list.retain(|x| *x != (deadline, cause));
            if list.is_empty() {
                self.state.wait_index.remove(&(r, key));
            }
        }
    }

    /// An absence rule's deadline passed without the follow-up: escalate the
    /// cause's incident, or open one.
    fn fire_absence(
        &mut self,
        r: u8,
        cause: EventId,
        wait: Wait,
        deadline: EventTime,
        out: &mut Output,
    ) {
        let Some(rule) = self.rules.get(usize::from(r)) else {
            return;
        };
        let (rule_id, rule_version, severity, priority, require, resolve_after, within) = (
            rule.id.clone(),
            rule.version,
            rule.severity,
            rule.priority,
            rule.absence == Some(true),
            rule.resolve_after,
            rule.within,
        );
        let max_duration = rule.max_duration;
        let seq = match self.live_incident_of(cause, deadline) {
            Some(seq) => seq,
            None if require => return,
            None => {
                let id = id::incident(&[&rule_id, &cause.to_string(), "absent"]);
                let seq = self.new_incident(
                    id.into(),
                    r,
                    severity,
                    wait.subject.clone(),
                    wait.time,
                    None,
                    resolve_after,
                    max_duration,
                );
                let has_cause = self.state.members.get(&cause).is_some_and(|m| m.has_cause);
                self.state.members.insert(cause, Member { seq, has_cause });
                if let Some(inc) = self.state.incidents.get_mut(&seq) {
                    inc.event_count = 1;
                    inc.severity = inc.severity.max(wait.severity);
                    inc.roots.push(RootCand {
                        id: cause,
                        time: wait.time,
                        change: wait.kind.is_change(),
                        priority,
                        rule: r,
                        summary: wait.summary.clone(),
                    });
                    out.edges.push(IncidentEdge {
                        incident_id: inc.id.clone(),
                        event_id: cause,
                        role: EdgeRole::Cause,
                        linked_by: rule_id.clone(),
                        rule_version,
                        cause_event_id: None,
                        lag_seconds: 0.0,
                        join_key: wait.label.clone(),
                        time: wait.time,
                    });
                }
                self.recompute_root(seq);
                seq
            }
        };
        let Some(inc) = self.state.incidents.get_mut(&seq) else {
            return;
        };
        inc.severity = inc.severity.max(severity);
        inc.template = r;
        inc.title_stale = true;
        inc.updated_at = inc.updated_at.max(deadline);
        inc.last_activity = inc.last_activity.max(deadline);
        // The absence itself is evidence: the cause, `within` later, unanswered.
        out.edges.push(IncidentEdge {
            incident_id: inc.id.clone(),
            event_id: cause,
            role: EdgeRole::Context,
            linked_by: rule_id,
            rule_version,
            cause_event_id: None,
            lag_seconds: seconds(within),
            join_key: wait.label,
            time: wait.time,
        });
        self.schedule(seq);
        self.state.dirty.push(seq);
    }

    /// Emits one version of every incident changed since the last flush.
    fn flush(&mut self, out: &mut Output) {
        if self.state.dirty.is_empty() {
            return;
        }
        let mut dirty = std::mem::take(&mut self.state.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &seq in &dirty {
            let merged_into = self
                .state
                .incidents
                .get(&seq)
                .and_then(|i| i.merged_into)
                .and_then(|m| self.state.incidents.get(&m))
                .map(|m| m.id.clone());
            let Some(inc) = self.state.incidents.get_mut(&seq) else {
                continue;
            };
            inc.version += 1;
            if inc.state != IncidentState::Resolved {
                inc.state = if inc.version == 1 {
                    IncidentState::Open
                } else {
                    IncidentState::Updated
                };
            }
            // Borrowed, not cloned: this runs once per version.
            let (rule_id, rule_version, template): (&Arc<str>, u32, &Title) = if inc.rule == GROUP {
                (&self.group_rule_id, 1, &self.group_title)
            } else {
                let r = &self.rules[usize::from(inc.rule)];
                let t = self
                    .rules
                    .get(usize::from(inc.template))
                    .map_or(&r.title, |t| &t.title);
                (&r.id, r.version, t)
            };
            if inc.title_stale || template.uses_count {
                inc.title = template.render(inc, rule_id).into();
                inc.title_stale = false;
            }
            out.edge_marks.push(out.edges.len());
            out.incidents.push(IncidentVersion {
                incident_id: inc.id.clone(),
                version: inc.version,
                state: inc.state,
                title: inc.title.clone(),
                severity: inc.severity,
                rule_id: rule_id.clone(),
                rule_version,
                scope: inc.subject.scope.clone(),
                entity: inc.subject.entity.clone(),
                root_cause_event_id: inc.root,
                opened_at: inc.opened_at,
                updated_at: inc.updated_at,
                resolved_at: inc.resolved_at,
                event_count: inc.event_count,
                merged_into,
            });
        }
        // Kept for its capacity.
        dirty.clear();
        self.state.dirty = dirty;
    }

    /// Applies the oldest buffered events (and evicts the oldest effects) until the
    /// state is under its cap.
    fn enforce_cap(&mut self, out: &mut Output) {
        let cap = self.config.max_buffered;
        let stats = self.stats();
        if stats.buffered() <= cap {
            return;
        }
        let excess = stats.buffered() - cap;
        if stats.effects > 0 {
            let mut times: Vec<EventTime> = self
                .state
                .effects
                .values()
                .chain(self.state.expr_effects.values())
                .flat_map(|l| l.effects.iter().map(|e| e.time))
                .collect();
            let k = excess.min(times.len()) - 1;
            let (_, cutoff, _) = times.select_nth_unstable(k);
            let cutoff = *cutoff;
            let mut evicted = 0u64;
            for list in self
                .state
                .effects
                .values_mut()
                .chain(self.state.expr_effects.values_mut())
            {
                let before = list.effects.len();
                list.effects.retain(|e| e.time > cutoff);
                evicted += (before - list.effects.len()) as u64;
            }
            self.state.effects.retain(|_, l| !l.effects.is_empty());
            self.state.expr_effects.retain(|_, l| !l.effects.is_empty());
            self.state.evicted_cap += evicted;
        }
        if self.state.pending.len() > cap {
            let excess = self.state.pending.len() - cap;
            self.sort_pending();
            for _ in 0..excess {
                let Some(p) = self.state.pending.pop_front() else {
                    break;
                };
                let t = p.time;
                self.apply_in_order(&p, out);
                self.state.forced += 1;
                if self.state.watermark.is_none_or(|w| t > w) {
                    self.state.watermark = Some(t);
                }
            }
        }
        self.flush(out);
    }

    fn maybe_sweep(&mut self, w: EventTime) {
        let due_by_time = self
            .state
            .last_sweep
            .is_none_or(|l| w >= l.plus(SWEEP_EVERY));
        // Sweeping costs O(state): only once enough events were applied to pay for
        // it, or when the watermark moved far (idle sources).
        let size = self.state.seen.len() as u64 + self.state.incidents.len() as u64;
        let long_idle = self
            .state
            .last_sweep
            .is_none_or(|l| w >= l.plus(SWEEP_EVERY * 10));
        if !(due_by_time && (self.state.applied_since_sweep.saturating_mul(8) >= size || long_idle))
        {
            return;
        }
        self.sweep(w);
    }

    /// Evicts what the watermark has left behind.
    fn sweep(&mut self, w: EventTime) {
        self.state.last_sweep = Some(w);
        self.state.applied_since_sweep = 0;
        let lateness = self.config.max_lateness;
        let mut evicted = 0u64;
        self.state.seen.retain(|_, expiry| *expiry >= w);
        let rules = &self.rules;
        for (r, list) in self.state.causes.values_mut().flatten() {
            let within = rules
                .get(usize::from(*r))
                .map(|x| x.within)
                .unwrap_or_default();
            let before = list.causes.len();
            list.causes
                .retain(|c| c.time.plus(within).plus(lateness) >= w);
            for c in &mut list.causes {
                if let Some((_, window)) = rules.get(usize::from(*r)).and_then(|x| x.threshold) {
                    c.candidates
                        .retain(|(e, _)| e.time.plus(window).plus(lateness) >= w);
                }
            }
            evicted += (before - list.causes.len()) as u64;
        }
        for lists in self.state.causes.values_mut() {
            lists.retain(|(_, l)| !l.causes.is_empty());
        }
        self.state.causes.retain(|_, l| !l.is_empty());
        let retention = self.config.effect_retention;
        for list in self
            .state
            .effects
            .values_mut()
            .chain(self.state.expr_effects.values_mut())
        {
            let before = list.effects.len();
            let keep_from = list.effects.partition_point(|e| e.time.plus(retention) < w);
            list.effects.drain(..keep_from);
            evicted += (before - list.effects.len()) as u64;
        }
        self.state.effects.retain(|_, l| !l.effects.is_empty());
        self.state.expr_effects.retain(|_, l| !l.effects.is_empty());
        self.state.evicted_expired += evicted;
        // Incidents no late event can update any more.
        let horizon = w.minus(lateness);
        let gone: FxHashSet<u64> = self
            .state
            .incidents
            .iter()
            .filter(|(_, inc)| {
                inc.state == IncidentState::Resolved
                    && inc.resolved_at.unwrap_or(inc.updated_at) < horizon
            })
            .map(|(s, _)| s)
            .collect();
        if self.state.deadlines.len() > 2 * self.state.incidents.len() + 64 {
            let incidents = &self.state.incidents;
            let current: BinaryHeap<Reverse<(EventTime, u64)>> = self
                .state
                .deadlines
                .drain()
                .filter(|Reverse((d, s))| incidents.get(s).is_some_and(|i| i.deadline == Some(*d)))
                .collect();
            self.state.deadlines = current;
        }
        if !gone.is_empty() {
            self.state.incidents.retain(|s, _| !gone.contains(&s));
            self.state.groups.retain(|_, s| !gone.contains(s));
            self.state.alerts.retain(|_, s| !gone.contains(s));
            self.state.members.retain(|_, m| !gone.contains(&m.seq));
        }
        self.state
            .baselines
            .retain(|_, b| b.last.is_some_and(|l| l.plus(BASELINE_RETENTION) >= w));
        self.names.retain(|n| Arc::strong_count(n) > 1);
        self.subjects.retain(|_, s| Arc::strong_count(s) > 1);
        // `joins` is keyed by the subjects' stable keys, `subjects` by their text.
        let live: FxHashSet<u64> = self.subjects.values().map(|s| s.key).collect();
        self.joins.retain(|k, _| live.contains(k));
    }
}

/// A title template, parsed once: text and the incident fields it names.
#[derive(Debug)]
struct Title {
    parts: Vec<TitlePart>,
    uses_count: bool,
}

#[derive(Debug)]
enum TitlePart {
    Text(Box<str>),
    Entity,
    Scope,
    Cause,
    Alerts,
    Count,
    Rule,
}

impl Title {
    fn parse(template: &str) -> Title {
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            const FIELDS: [&str; 6] = [
                "{entity}", "{scope}", "{cause}", "{alerts}", "{count}", "{rule}",
            ];
            let field = FIELDS
                .iter()
                .enumerate()
                .filter_map(|(i, name)| rest.find(name).map(|at| (at, i, name.len())))
                .min();
            match field {
                Some((at, i, len)) => {
                    if at > 0 {
                        parts.push(TitlePart::Text(rest[..at].into()));
                    }
                    parts.push(match i {
                        0 => TitlePart::Entity,
                        1 => TitlePart::Scope,
                        2 => TitlePart::Cause,
                        3 => TitlePart::Alerts,
                        4 => TitlePart::Count,
                        _ => TitlePart::Rule,
                    });
                    rest = &rest[at + len..];
                }
                None => {
                    parts.push(TitlePart::Text(rest.into()));
                    rest = "";
                }
            }
        }
        let uses_count = parts.iter().any(|p| matches!(p, TitlePart::Count));
        Title { parts, uses_count }
    }

    fn render(&self, inc: &Incident, rule_id: &str) -> String {
        let mut out = String::with_capacity(96);
        for part in &self.parts {
            match part {
                TitlePart::Text(t) => out.push_str(t),
                TitlePart::Entity => out.push_str(&inc.subject.entity),
                TitlePart::Scope => out.push_str(&inc.subject.scope),
                TitlePart::Cause => {
                    out.push_str(inc.cause_summary.as_deref().unwrap_or("unknown cause"))
                }
                TitlePart::Alerts => {
                    if inc.alertnames.is_empty() {
                        out.push_str("alerts");
                    }
                    for (i, name) in inc.alertnames.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        out.push_str(name);
                    }
                }
                TitlePart::Count => out.push_str(&inc.event_count.to_string()),
                TitlePart::Rule => out.push_str(rule_id),
            }
        }
        out
    }
}
