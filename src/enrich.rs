//! What the sources told us about changes, kept for the incidents they cause.
//!
//! An incident names its root cause by event id; the runbook that answers it needs
//! that change's facts (service, namespace, the revision deployed and the one
//! before it, who made it, a link to it). Changes are rare next to alerts, so the
//! recent ones are kept in a bounded cache (moka: size cap and TTL) fed in log
//! order as the engine reads events; nothing here blocks correlation or grows
//! without bound.
//!
//! What is touched for every incident version (what an incident gathered, similar
//! incidents) lives in `quick_cache` caches instead: bounded by size only, one shard
//! lock per access and no housekeeping queue — moka's bookkeeping per insert and
//! lookup was a fifth of the engine thread in a 1 M-event import. The facts of every
//! alert are kept in insertion order and forgotten oldest first ([`RecentFacts`]):
//! each is read once, soon after it was written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use causeway_rules::{
    Catalog, Event, EventId, EventKind, EventTime, IncidentVersion, IndexedCatalog,
};
use moka::sync::Cache;
use serde::Serialize;

/// The facts of one change event, with what preceded it on the same subject.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChangeFacts {
    pub(crate) source: String,
    pub(crate) kind: EventKind,
    pub(crate) summary: String,
    pub(crate) attributes: BTreeMap<String, String>,
    /// The revision this change put in place (commit sha, Argo CD revision).
    pub(crate) revision: Option<String>,
    /// The revision running before it, if an earlier change told us.
    pub(crate) previous_revision: Option<String>,
    /// The image this change put in place, and the one before it.
    pub(crate) image: Option<String>,
    pub(crate) previous_image: Option<String>,
}

/// What was last deployed on one (scope, entity).
#[derive(Debug, Clone, Default)]
struct Running {
    revision: Option<String>,
    previous_revision: Option<String>,
    image: Option<String>,
    previous_image: Option<String>,
}

/// Bounded index of recent changes, by event id, and of what runs where.
#[derive(Clone)]
pub(crate) struct ChangeIndex {
    changes: Cache<EventId, Arc<ChangeFacts>>,
    running: Cache<(String, String), Running>,
}

impl std::fmt::Debug for ChangeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeIndex")
            .field("changes", &self.changes.entry_count())
            .finish()
    }
}

impl ChangeIndex {
    /// An index holding at most `capacity` changes, each for at most `ttl`.
    pub(crate) fn new(capacity: u64, ttl: Duration) -> ChangeIndex {
        ChangeIndex {
            changes: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            running: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Records the change events among `events` (in log order).
    pub(crate) fn observe<'a>(&self, events: impl IntoIterator<Item = &'a Event>) {
        for e in events {
            if !matches!(
                e.kind,
                EventKind::Deploy | EventKind::Change | EventKind::Audit
            ) {
                continue;
            }
            let revision = e
                .attr("sha")
                .or_else(|| e.attr("revision"))
                .map(str::to_owned);
            let image = e
                .attr("change.image")
                .map(|i| i.split_once('=').map_or(i, |(_, img)| img).to_owned())
                .or_else(|| e.attr("image").map(str::to_owned))
                .or_else(|| e.attr("images").map(str::to_owned));
            let key = (e.scope.clone(), e.entity.clone());
            let mut run = self.running.get(&key).unwrap_or_default();
            // A deploy reports in_progress then success with the same revision:
            // the previous one is what ran before that revision.
            if let Some(r) = &revision
                && run.revision.as_ref() != Some(r)
            {
                run.previous_revision = run.revision.take();
                run.revision = Some(r.clone());
            }
            if let Some(i) = &image
                && run.image.as_ref() != Some(i)
            {
                run.previous_image = run.image.take();
                run.image = Some(i.clone());
            }
            let facts = ChangeFacts {
                source: e.source.clone(),
                kind: e.kind,
                summary: e.summary.clone(),
                attributes: e.attributes.clone(),
                previous_revision: revision.as_ref().and(run.previous_revision.clone()),
                revision,
                previous_image: image.as_ref().and(run.previous_image.clone()),
                image,
            };
            self.running.insert(key, run);
            if let Some(id) = EventId::parse(&e.id) {
                self.changes.insert(id, Arc::new(facts));
            }
        }
    }

    /// The facts of a change, if still known.
    #[cfg(test)]
    pub(crate) fn get(&self, event_id: &str) -> Option<Arc<ChangeFacts>> {
        EventId::parse(event_id).and_then(|id| self.changes.get(&id))
    }

    /// Runbook template variables for an incident: its service and namespace from
    /// the catalog, and its root-cause change's facts.
    pub(crate) fn variables(
        &self,
        catalog: &Catalog,
        incident: &IncidentVersion,
    ) -> BTreeMap<String, String> {
        let mut vars = BTreeMap::new();
        let service = catalog.service_of(&incident.entity);
        if let Some(ns) = catalog.namespace_of(&service) {
            vars.insert("namespace".to_owned(), ns.to_owned());
        }
        if let Some(entry) = catalog.service(&service) {
            if let Some(team) = &entry.team {
                vars.insert("team".to_owned(), team.clone());
            }
            if let Some(oncall) = &entry.oncall {
                vars.insert("oncall".to_owned(), oncall.clone());
            }
        }
        vars.insert("service".to_owned(), service);
        let root = incident
            .root_cause_event_id
            .and_then(|id| self.changes.get(&id));
        if let Some(root) = root {
            let attr = |k: &str| root.attributes.get(k).cloned();
            if let Some(ns) = attr("namespace") {
                vars.insert("namespace".into(), ns);
            }
            for (name, value) in [
                ("revision", root.revision.clone()),
                ("previous_revision", root.previous_revision.clone()),
                ("image", root.image.clone()),
                ("previous_image", root.previous_image.clone()),
                ("root_cause_summary", Some(root.summary.clone())),
                (
                    "actor",
                    attr("creator")
                        .or_else(|| attr("user"))
                        .or_else(|| attr("actor")),
                ),
                (
                    "evidence_url",
                    attr("commit_url")
                        .or_else(|| attr("app_url"))
                        .or_else(|| attr("target_url")),
                ),
            ] {
                if let Some(v) = value {
                    vars.insert(name.to_owned(), v);
                }
            }
        }
        vars
    }
}

/// What an alert contributes to its incident: owners and links.
#[derive(Debug, Clone, Default)]
struct AlertFacts {
    alertname: Option<String>,
    team: Option<String>,
    runbook_url: Option<String>,
    generator_url: Option<String>,
    external_url: Option<String>,
}

/// The labels of an alert that [`AlertFacts`] is made from.
#[derive(Default)]
struct AlertLabels<'a> {
    alertname: Option<&'a str>,
    team: Option<&'a str>,
    owner: Option<&'a str>,
    runbook_url: Option<&'a str>,
    generator_url: Option<&'a str>,
    app_url: Option<&'a str>,
    external_url: Option<&'a str>,
}

/// What an incident gathered from its events so far.
#[derive(Debug, Clone, Default)]
struct Gathered {
    alertnames: std::collections::BTreeSet<String>,
    teams: std::collections::BTreeSet<String>,
    runbook_urls: std::collections::BTreeSet<String>,
    generator_urls: std::collections::BTreeSet<String>,
    external_url: Option<String>,
    argocd_out_of_sync: bool,
    /// Cost rows linked to the incident: (event id, charge period start, amount).
    costs: Vec<(EventId, EventTime, f64)>,
    currency: Option<String>,
    /// The enrichment last recorded, and what it was made from.
    last: Option<(EnrichmentKey, Arc<str>)>,
}

impl Gathered {
    /// What was gathered, in sizes: the sets only grow (to a cap) and the single
    /// values are set once, so equal sizes mean equal contents.
    fn fingerprint(&self) -> [usize; 8] {
        [
            self.alertnames.len(),
            self.teams.len(),
            self.runbook_urls.len(),
            self.generator_urls.len(),
            usize::from(self.external_url.is_some()),
            usize::from(self.argocd_out_of_sync),
            self.costs.len(),
            usize::from(self.currency.is_some()),
        ]
    }
}

/// Everything an incident's enrichment is made from besides the catalog and the
/// incident's identity: when it is unchanged from the previous version, so is
/// the enrichment (most versions are one more alert of the same kind).
#[derive(Debug, Clone, PartialEq)]
struct EnrichmentKey {
    gathered: [usize; 8],
    root: Option<causeway_rules::EventId>,
    root_known: bool,
    similar: Vec<PastIncident>,
}

/// What one event contributes to the incidents it joins.
#[derive(Debug)]
enum EventFacts {
    Alert(AlertFacts),
    Cost(CostRow),
}

/// One cost row, as the cost-impact figure needs it.
#[derive(Debug, Clone)]
struct CostRow {
    time: EventTime,
    amount: f64,
    currency: Option<String>,
}

/// Cost rows kept per service for the baseline.
const COST_ROWS_PER_SERVICE: usize = 200;
/// Cost rows one incident keeps.
const COST_ROWS_PER_INCIDENT: usize = 500;

/// Caps on what one incident keeps: enough to act on, bounded.
const MAX_LISTED: usize = 5;

/// An earlier incident, as the similar-incident lookup keeps it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PastIncident {
    pub(crate) incident_id: Arc<str>,
    pub(crate) rule_id: Arc<str>,
    pub(crate) entity: Arc<str>,
    pub(crate) title: Arc<str>,
    pub(crate) opened_at: EventTime,
    pub(crate) resolved_at: Option<EventTime>,
    /// Runbook decisions taken on it (`runbook: decision`).
    pub(crate) actions: Vec<String>,
}

/// A size-bounded cache on the engine's per-event path (see the module doc).
type HotCache<K, V> = Arc<quick_cache::sync::Cache<K, V>>;

fn hot_cache<K: Eq + std::hash::Hash, V: Clone>(capacity: usize) -> HotCache<K, V> {
    Arc::new(quick_cache::sync::Cache::new(capacity))
}

/// Event facts by id, forgetting the oldest inserted first once full. Each is read
/// when its event's edge comes out, soon after the event was observed, so
/// insertion order is the right thing to forget by; a cache's recency policy
/// (every insert into a full `quick_cache` evicts by scanning) cost ~7 % of a 1 M
/// import's CPU. One lock, held for a hash probe.
#[derive(Clone)]
struct RecentFacts {
    inner: Arc<std::sync::Mutex<RecentFactsInner>>,
    capacity: usize,
}

#[derive(Default)]
struct RecentFactsInner {
    by_id: rustc_hash::FxHashMap<EventId, Arc<EventFacts>>,
    /// Ids in first-insertion order (a re-insert replaces the value in place).
    order: std::collections::VecDeque<EventId>,
}

impl RecentFacts {
    fn new(capacity: usize) -> Self {
        RecentFacts {
            inner: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecentFactsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, id: EventId, facts: Arc<EventFacts>) {
        let mut inner = self.lock();
        if inner.by_id.insert(id, facts).is_none() {
            inner.order.push_back(id);
            if inner.order.len() > self.capacity
                && let Some(oldest) = inner.order.pop_front()
            {
                inner.by_id.remove(&oldest);
            }
        }
    }

    fn get(&self, id: &EventId) -> Option<Arc<EventFacts>> {
        self.lock().by_id.get(id).cloned()
    }

    fn len(&self) -> usize {
        self.lock().by_id.len()
    }
}

/// The value under `key`, created empty first if absent.
fn get_or_default<V: Clone + Default>(cache: &HotCache<Arc<str>, V>, key: &Arc<str>) -> V {
    let created: Result<V, std::convert::Infallible> =
        cache.get_or_insert_with(key, || Ok(V::default()));
    match created {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

/// The past incidents of one entity, newest first: at most [`PAST_PER_KEY`] per
/// rule and [`PAST_PER_ENTITY`] in all.
type EntityPast = Arc<std::sync::Mutex<Vec<PastIncident>>>;

/// Similar past incidents, by entity: loaded from the history with DataFusion at
/// start (bounded in time and rows), kept current from the incidents that pass
/// through, bounded in memory.
///
/// Every incident version passes through here, so the list of an entity is
/// updated in place under its own lock (one cache lookup, no copy) and only when
/// what it remembers of the incident changed.
#[derive(Clone)]
pub(crate) struct SimilarIndex {
    by_entity: HotCache<Arc<str>, EntityPast>,
}

/// Past incidents kept per (rule, entity).
const PAST_PER_KEY: usize = 10;
/// Past incidents kept per entity, all rules together.
const PAST_PER_ENTITY: usize = 40;

impl SimilarIndex {
    pub(crate) fn new(capacity: usize) -> SimilarIndex {
        SimilarIndex {
            by_entity: hot_cache(capacity),
        }
    }

    /// Loads incidents opened in the last `horizon` from the history: the latest
    /// version of each, with the runbook decisions taken on it.
    pub(crate) async fn load(
        &self,
        reader: &causeway_engine::HistoryReader,
        horizon: Duration,
        max_rows: usize,
    ) -> anyhow::Result<usize> {
        let since = causeway_rules::ProcessingTime::now()
            .as_micros()
            .saturating_sub(i64::try_from(horizon.as_micros()).unwrap_or(i64::MAX));
        let query = format!(
            "SELECT i.incident_id, i.rule_id, i.entity, i.title, \
                    CAST(to_unixtime(i.opened_at) * 1000000 AS BIGINT) AS opened_us, \
                    CAST(to_unixtime(i.resolved_at) * 1000000 AS BIGINT) AS resolved_us, \
                    string_agg(a.runbook || ': ' || a.decision, ', ') AS actions \
             FROM incidents_latest i LEFT JOIN actions a ON a.incident_id = i.incident_id \
             WHERE i.merged_into IS NULL AND i.opened_at >= to_timestamp_micros({since}) \
             GROUP BY i.incident_id, i.rule_id, i.entity, i.title, i.opened_at, i.resolved_at \
             ORDER BY i.opened_at DESC LIMIT {max_rows}"
        );
        let result = reader
            .query(
                &query,
                causeway_engine::QueryLimits {
                    timeout: Duration::from_secs(30),
                    memory_bytes: 256 << 20,
                },
            )
            .await?;
        let bytes = crate::format::json_rows(&result.batches)?;
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&bytes)?;
        let mut n = 0;
        for r in rows.iter().rev() {
            let text = |k: &str| Arc::<str>::from(r[k].as_str().unwrap_or_default());
            let Some(opened) = r["opened_us"].as_i64() else {
                continue;
            };
            self.remember(PastIncident {
                incident_id: text("incident_id"),
                rule_id: text("rule_id"),
                entity: text("entity"),
                title: text("title"),
                opened_at: EventTime::from_micros(opened),
                resolved_at: r["resolved_us"].as_i64().map(EventTime::from_micros),
                actions: r["actions"]
                    .as_str()
                    .map(|a| a.split(", ").map(str::to_owned).collect())
                    .unwrap_or_default(),
            });
            n += 1;
        }
        Ok(n)
    }

    /// Adds or updates one incident.
    pub(crate) fn remember(&self, past: PastIncident) {
        let list = get_or_default(&self.by_entity, &past.entity);
        let mut list = list.lock().unwrap_or_else(|p| p.into_inner());
        remember_in(&mut list, past);
    }

    /// Up to `n` incidents like `incident` that opened before it: same rule and
    /// entity first, then others on the same entity.
    #[cfg(test)]
    pub(crate) fn similar(&self, incident: &IncidentVersion, n: usize) -> Vec<PastIncident> {
        let Some(list) = self.by_entity.get(&incident.entity) else {
            return Vec::new();
        };
        let list = list.lock().unwrap_or_else(|p| p.into_inner());
        similar_in(&list, incident, n)
    }

    /// Finds the similar incidents of `incident`, then remembers it for the next
    /// ones (one lookup for both: this runs for every incident version).
    fn similar_then_remember(&self, incident: &IncidentVersion, n: usize) -> Vec<PastIncident> {
        let list = get_or_default(&self.by_entity, &incident.entity);
        let mut list = list.lock().unwrap_or_else(|p| p.into_inner());
        let found = similar_in(&list, incident, n);
        if incident.merged_into.is_none() {
            let known = list.iter().find(|p| p.incident_id == incident.incident_id);
            let unchanged = known.is_some_and(|p| {
                p.title == incident.title
                    && p.opened_at == incident.opened_at
                    && p.resolved_at == incident.resolved_at
            });
            // An entity with more live incidents of one rule than it keeps would
            // otherwise insert and at once evict its oldest ones at every version.
            let dropped_at_once =
                known.is_none() && would_be_dropped(&list, &incident.rule_id, incident.opened_at);
            if !unchanged && !dropped_at_once {
                remember_in(
                    &mut list,
                    PastIncident {
                        incident_id: incident.incident_id.clone(),
                        rule_id: incident.rule_id.clone(),
                        entity: incident.entity.clone(),
                        title: incident.title.clone(),
                        opened_at: incident.opened_at,
                        resolved_at: incident.resolved_at,
                        actions: Vec::new(),
                    },
                );
            }
        }
        found
    }
}

/// Inserts or updates `past` in an entity's list (newest first), keeping the
/// actions already known when the update carries none, and the bounds.
fn remember_in(list: &mut Vec<PastIncident>, mut past: PastIncident) {
    if let Some(i) = list.iter().position(|p| p.incident_id == past.incident_id) {
        let old = list.remove(i);
        if past.actions.is_empty() {
            past.actions = old.actions;
        }
    }
    let at = list.partition_point(|p| p.opened_at >= past.opened_at);
    list.insert(at, past);
    let rule = list[at].rule_id.clone();
    let same_rule: Vec<usize> = list
        .iter()
        .enumerate()
        .filter(|(_, p)| p.rule_id == rule)
        .map(|(i, _)| i)
        .collect();
    if same_rule.len() > PAST_PER_KEY
        && let Some(&oldest) = same_rule.last()
    {
        list.remove(oldest);
    }
    list.truncate(PAST_PER_ENTITY);
}

/// Whether [`remember_in`] would evict a new incident of `rule` opened at
/// `opened_at` as soon as it inserted it: the entity's list is full there, and
/// the newcomer is the oldest of its rule or falls past the list's end.
fn would_be_dropped(list: &[PastIncident], rule: &str, opened_at: EventTime) -> bool {
    // Inserted after every incident opened at or after it (`remember_in`).
    let at = list.partition_point(|p| p.opened_at >= opened_at);
    if at >= PAST_PER_ENTITY {
        return true;
    }
    let same_rule = list.iter().filter(|p| &*p.rule_id == rule).count();
    same_rule >= PAST_PER_KEY && list[at..].iter().all(|p| &*p.rule_id != rule)
}

/// Up to `n` of `list` that opened before `incident`: its own rule first.
fn similar_in(list: &[PastIncident], incident: &IncidentVersion, n: usize) -> Vec<PastIncident> {
    let earlier = |p: &&PastIncident| {
        p.incident_id != incident.incident_id && p.opened_at < incident.opened_at
    };
    let mut out: Vec<PastIncident> = list
        .iter()
        .filter(earlier)
        .filter(|p| p.rule_id == incident.rule_id)
        .take(n)
        .cloned()
        .collect();
    for p in list.iter().filter(earlier) {
        if out.len() >= n {
            break;
        }
        if p.rule_id != incident.rule_id {
            out.push(p.clone());
        }
    }
    out
}

/// The enrichment of one incident version as written. Fields are in the order
/// a `serde_json::Value` (a sorted map) wrote them, so the text stayed the same
/// when it stopped being built as a `Value` first (building, writing and
/// dropping those was 9 % of an import's instructions).
#[derive(Serialize)]
struct EnrichmentDoc<'a> {
    alerts: &'a std::collections::BTreeSet<String>,
    change: Option<ChangeDoc<'a>>,
    cost: serde_json::Value,
    links: LinksDoc<'a>,
    owner: OwnerDoc<'a>,
    service: &'a str,
    similar: Vec<SimilarDoc<'a>>,
}

/// The root-cause change of an [`EnrichmentDoc`].
#[derive(Serialize)]
struct ChangeDoc<'a> {
    actor: Option<&'a str>,
    drift: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<FromTo<'a>>,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_parameters: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<FromTo<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    set: BTreeMap<&'a str, &'a str>,
    source: &'a str,
    summary: &'a str,
}

/// What a change replaced, and with what.
#[derive(Serialize)]
struct FromTo<'a> {
    from: Option<&'a str>,
    to: Option<&'a str>,
}

/// Where to look next, in an [`EnrichmentDoc`].
#[derive(Serialize)]
struct LinksDoc<'a> {
    alertmanager: Option<&'a str>,
    alerts: &'a std::collections::BTreeSet<String>,
    argocd: Option<&'a str>,
    change: Option<&'a str>,
    sql: String,
}

/// Who owns the service, in an [`EnrichmentDoc`].
#[derive(Serialize)]
struct OwnerDoc<'a> {
    oncall: Option<&'a str>,
    repository: Option<&'a str>,
    runbook_url: Option<&'a str>,
    team: Option<&'a str>,
}

/// One similar past incident, in an [`EnrichmentDoc`].
#[derive(Serialize)]
struct SimilarDoc<'a> {
    actions: &'a [String],
    incident_id: &'a str,
    opened_at: String,
    resolved_at: Option<String>,
    rule_id: &'a str,
    time_to_resolve_seconds: Option<i64>,
    title: &'a str,
}

/// The enrichment stage: owners, the root-cause change, links and similar past
/// incidents, from memory only (the caches above), so correlation never waits.
#[derive(Clone)]
pub(crate) struct IncidentEnricher {
    catalog: Arc<IndexedCatalog>,
    changes: ChangeIndex,
    /// What alerts and cost rows contribute, by event id (one lookup per edge).
    facts: RecentFacts,
    gathered: HotCache<Arc<str>, Arc<std::sync::Mutex<Gathered>>>,
    similar: SimilarIndex,
    /// Per service: (charge period start, amount), oldest first, bounded.
    cost_history: Cache<String, Arc<Vec<(EventTime, f64)>>>,
}

impl std::fmt::Debug for IncidentEnricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncidentEnricher")
            .field("facts", &self.facts.len())
            .field("incidents", &self.gathered.len())
            .finish()
    }
}

impl IncidentEnricher {
    /// `catalog` is shared with the receivers' decoders (one index per process).
    pub(crate) fn new(
        catalog: Arc<IndexedCatalog>,
        changes: ChangeIndex,
        similar: SimilarIndex,
    ) -> Self {
        let ttl = Duration::from_secs(7 * 24 * 3600);
        IncidentEnricher {
            catalog,
            changes,
            facts: RecentFacts::new(400_000),
            gathered: hot_cache(100_000),
            similar,
            cost_history: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Remembers what alerts and Argo CD events say about owners and links (and
    /// feeds the change index), in log order, before the engine takes the batch.
    pub(crate) fn observe<'a>(&self, events: impl IntoIterator<Item = &'a Event> + Clone) {
        self.changes.observe(events.clone());
        for e in events {
            if e.kind == EventKind::Cost {
                self.observe_cost(e);
                continue;
            }
            let interesting = e.kind == EventKind::Alert
                || (e.source == "argocd" && e.attr("sync_status") == Some("OutOfSync"));
            if !interesting {
                continue;
            }
            let Some(id) = EventId::parse(&e.id) else {
                continue;
            };
            // One pass over the labels (an alert has a handful) instead of a map
            // lookup per name: this runs for every alert.
            let mut l = AlertLabels::default();
            for (k, v) in &e.attributes {
                let slot = match k.as_str() {
                    "alertname" => &mut l.alertname,
                    "team" => &mut l.team,
                    "owner" => &mut l.owner,
                    "annotation.runbook_url" => &mut l.runbook_url,
                    "generator_url" => &mut l.generator_url,
                    "app_url" => &mut l.app_url,
                    "external_url" => &mut l.external_url,
                    _ => continue,
                };
                *slot = Some(v.as_str());
            }
            let owned = |v: Option<&str>| v.map(str::to_owned);
            self.facts.insert(
                id,
                Arc::new(EventFacts::Alert(AlertFacts {
                    alertname: owned(l.alertname)
                        .or_else(|| (e.source == "argocd").then(|| "ArgoCDOutOfSync".to_owned())),
                    team: owned(l.team.or(l.owner)),
                    runbook_url: owned(l.runbook_url),
                    generator_url: owned(l.generator_url.or(l.app_url)),
                    external_url: owned(l.external_url),
                })),
            );
        }
    }

    fn observe_cost(&self, e: &Event) {
        let amount = ["effective_cost", "billed_cost", "total_cost"]
            .iter()
            .find_map(|k| e.attr(k).and_then(|v| v.parse::<f64>().ok()));
        let Some(amount) = amount.filter(|a| a.is_finite()) else {
            return;
        };
        let service = self.catalog.service_of(&e.entity);
        let mut history: Vec<(EventTime, f64)> = self
            .cost_history
            .get(&service)
            .map(|h| (*h).clone())
            .unwrap_or_default();
        let at = history.partition_point(|(t, _)| *t <= e.time);
        history.insert(at, (e.time, amount));
        if history.len() > COST_ROWS_PER_SERVICE {
            history.remove(0);
        }
        self.cost_history.insert(service, Arc::new(history));
        let Some(id) = EventId::parse(&e.id) else {
            return;
        };
        self.facts.insert(
            id,
            Arc::new(EventFacts::Cost(CostRow {
                time: e.time,
                amount,
                currency: e.attr("currency").map(str::to_owned),
            })),
        );
    }

    /// What an incident's linked cost rows add up to, against as many rows of the
    /// same service just before them (the baseline).
    fn cost_impact(&self, service: &str, g: &Gathered) -> serde_json::Value {
        if g.costs.is_empty() {
            return serde_json::Value::Null;
        }
        let during: f64 = g.costs.iter().map(|(_, _, a)| a).sum();
        let first = g
            .costs
            .iter()
            .map(|(_, t, _)| *t)
            .min()
            .unwrap_or(EventTime::MIN);
        let linked: std::collections::BTreeSet<(EventTime, u64)> =
            g.costs.iter().map(|(_, t, a)| (*t, a.to_bits())).collect();
        let before: Vec<f64> = self
            .cost_history
            .get(service)
            .map(|h| {
                h.iter()
                    .filter(|(t, a)| *t < first && !linked.contains(&(*t, a.to_bits())))
                    .rev()
                    .take(g.costs.len())
                    .map(|(_, a)| *a)
                    .collect()
            })
            .unwrap_or_default();
        let round = |x: f64| (x * 100.0).round() / 100.0;
        let baseline = (!before.is_empty()).then(|| {
            let mean = before.iter().sum::<f64>() / before.len() as f64;
            mean * g.costs.len() as f64
        });
        serde_json::json!({
            "rows": g.costs.len(),
            "during": round(during),
            "baseline": baseline.map(round),
            "delta": baseline.map(|b| round(during - b)),
            "delta_percent": baseline.filter(|b| *b > 0.0).map(|b| round((during - b) / b * 100.0)),
            "currency": g.currency,
        })
    }

    /// The enrichment of one incident version, as a JSON object.
    pub(crate) fn enrichment(
        &self,
        incident: &IncidentVersion,
        edges: &[&causeway_rules::IncidentEdge],
    ) -> serde_json::Value {
        let text = self.enrichment_text(incident, edges);
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// The enrichment of one incident version, as JSON text; the previous
    /// version's text when nothing it is made from changed.
    fn enrichment_text(
        &self,
        incident: &IncidentVersion,
        edges: &[&causeway_rules::IncidentEdge],
    ) -> Arc<str> {
        let gathered = get_or_default(&self.gathered, &incident.incident_id);
        // Held to the end: this incident's versions are enriched one at a time.
        let mut g = gathered.lock().unwrap_or_else(|p| p.into_inner());
        for edge in edges {
            let id = edge.event_id;
            let Some(facts) = self.facts.get(&id) else {
                continue;
            };
            let a = match &*facts {
                EventFacts::Alert(a) => a,
                EventFacts::Cost(c) => {
                    if g.costs.len() < COST_ROWS_PER_INCIDENT
                        && !g.costs.iter().any(|(x, _, _)| *x == id)
                    {
                        g.costs.push((id, c.time, c.amount));
                    }
                    if g.currency.is_none() {
                        g.currency.clone_from(&c.currency);
                    }
                    continue;
                }
            };
            let add = |set: &mut std::collections::BTreeSet<String>, v: &Option<String>| {
                if let Some(v) = v
                    && set.len() < MAX_LISTED
                    && !set.contains(v)
                {
                    set.insert(v.clone());
                }
            };
            add(&mut g.alertnames, &a.alertname);
            add(&mut g.teams, &a.team);
            add(&mut g.runbook_urls, &a.runbook_url);
            add(&mut g.generator_urls, &a.generator_url);
            if g.external_url.is_none() {
                g.external_url.clone_from(&a.external_url);
            }
            if a.alertname.as_deref() == Some("ArgoCDOutOfSync") {
                g.argocd_out_of_sync = true;
            }
        }
        let root = incident
            .root_cause_event_id
            .and_then(|id| self.changes.changes.get(&id));
        // This incident is a similar one for the next.
        let key = EnrichmentKey {
            gathered: g.fingerprint(),
            root: incident.root_cause_event_id,
            root_known: root.is_some(),
            similar: self.similar.similar_then_remember(incident, 3),
        };
        // Cost figures also depend on other rows of the service: always fresh.
        if g.costs.is_empty()
            && let Some((last, text)) = &g.last
            && *last == key
        {
            return text.clone();
        }
        let service = self.catalog.service_of(&incident.entity);
        let entry = self.catalog.service(&service);
        let argo_app = entry.and_then(|s| s.argo_apps.first());
        let change = root.as_deref().map(|c| {
            let attr = |k: &str| c.attributes.get(k).map(String::as_str);
            let human = attr("actor_type") == Some("human");
            // Production is what runs: a human changing a workload that Git
            // declares (Argo CD) leaves it drifted until Git catches up.
            let drift =
                g.argocd_out_of_sync || (human && c.source == "k8s_audit" && argo_app.is_some());
            ChangeDoc {
                actor: attr("creator")
                    .or_else(|| attr("user"))
                    .or_else(|| attr("actor")),
                drift,
                image: c.image.is_some().then_some(FromTo {
                    from: c.previous_image.as_deref(),
                    to: c.image.as_deref(),
                }),
                kind: c.kind.as_str(),
                request_parameters: attr("request_parameters").map(|params| {
                    serde_json::from_str(params)
                        .unwrap_or_else(|_| serde_json::Value::String(params.to_owned()))
                }),
                revision: c.revision.is_some().then_some(FromTo {
                    from: c.previous_revision.as_deref(),
                    to: c.revision.as_deref(),
                }),
                set: c
                    .attributes
                    .iter()
                    .filter_map(|(k, v)| k.strip_prefix("change.").map(|k| (k, v.as_str())))
                    .collect(),
                source: &c.source,
                summary: &c.summary,
            }
        });
        let root_attr = |k: &str| {
            root.as_deref()
                .and_then(|c| c.attributes.get(k))
                .map(String::as_str)
        };
        let doc = EnrichmentDoc {
            alerts: &g.alertnames,
            change,
            cost: self.cost_impact(&service, &g),
            links: LinksDoc {
                alertmanager: g.external_url.as_deref(),
                alerts: &g.generator_urls,
                argocd: argo_app.and(root_attr("app_url")),
                change: ["commit_url", "target_url", "app_url"]
                    .iter()
                    .find_map(|k| root_attr(k)),
                sql: format!(
                    "causeway sql \"SELECT role, linked_by, lag_seconds, event_id FROM incident_events WHERE incident_id = '{}' ORDER BY time\"",
                    incident.incident_id
                ),
            },
            owner: OwnerDoc {
                oncall: entry.and_then(|s| s.oncall.as_deref()),
                repository: entry.and_then(|s| s.repos.first()).map(String::as_str),
                runbook_url: entry
                    .and_then(|s| s.runbook_url.as_deref())
                    .or_else(|| g.runbook_urls.iter().next().map(String::as_str)),
                team: entry
                    .and_then(|s| s.team.as_deref())
                    .or_else(|| g.teams.iter().next().map(String::as_str)),
            },
            service: &service,
            similar: key
                .similar
                .iter()
                .map(|p| SimilarDoc {
                    actions: &p.actions,
                    incident_id: &p.incident_id,
                    opened_at: p.opened_at.to_rfc3339(),
                    resolved_at: p.resolved_at.map(|t| t.to_rfc3339()),
                    rule_id: &p.rule_id,
                    time_to_resolve_seconds: p
                        .resolved_at
                        .map(|r| (r.as_micros() - p.opened_at.as_micros()) / 1_000_000),
                    title: &p.title,
                })
                .collect(),
        };
        // Writing owned strings and maps into a String cannot fail.
        let text: Arc<str> = serde_json::to_string(&doc).unwrap_or_default().into();
        g.last = Some((key, text.clone()));
        text
    }
}

impl causeway_engine::Enricher for IncidentEnricher {
    fn enrich(
        &self,
        incident: &IncidentVersion,
        edges: &[&causeway_rules::IncidentEdge],
    ) -> Option<Arc<str>> {
        Some(self.enrichment_text(incident, edges))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_rules::{EventTime, ProcessingTime, Severity};

    fn deploy(id: &str, sha: &str, status: &str) -> Event {
        Event {
            id: id.into(),
            source: "github".into(),
            source_event_id: id.into(),
            kind: EventKind::Deploy,
            time: EventTime::from_micros(0),
            ingested_at: ProcessingTime::from_micros(0),
            scope: "prod".into(),
            entity: "checkout".into(),
            severity: Severity::Info,
            status: status.into(),
            summary: format!("deploy {sha}"),
            attributes: [
                ("sha".to_owned(), sha.to_owned()),
                ("creator".to_owned(), "alice".to_owned()),
            ]
            .into(),
            raw: "{}".into(),
        }
    }

    #[test]
    fn recent_facts_forget_the_oldest_inserted_first() {
        let facts = RecentFacts::new(2);
        let id = |n: u8| EventId::parse(&format!("evt_{:032x}", n)).expect("an id");
        let cost = |amount: f64| {
            Arc::new(EventFacts::Cost(CostRow {
                time: EventTime::from_micros(0),
                amount,
                currency: None,
            }))
        };
        let amount = |facts: &RecentFacts, n: u8| match facts.get(&id(n)).as_deref() {
            Some(EventFacts::Cost(c)) => Some(c.amount),
            _ => None,
        };
        facts.insert(id(1), cost(1.0));
        facts.insert(id(2), cost(2.0));
        // A re-insert replaces the value and keeps the first insertion's place.
        facts.insert(id(1), cost(10.0));
        assert_eq!((facts.len(), amount(&facts, 1)), (2, Some(10.0)));
        facts.insert(id(3), cost(3.0));
        assert_eq!(facts.len(), 2);
        assert_eq!(amount(&facts, 1), None, "the oldest insertion went first");
        assert_eq!(
            (amount(&facts, 2), amount(&facts, 3)),
            (Some(2.0), Some(3.0))
        );
    }

    #[test]
    fn a_deploy_knows_the_revision_it_replaced_across_progress_reports() {
        let index = ChangeIndex::new(100, Duration::from_secs(3600));
        let id = |n: &str| Event::derive_id("github", n, "success");
        index.observe(&[
            deploy(&id("1"), "aaa", "success"),
            deploy(&id("2"), "bbb", "in_progress"),
            deploy(&id("3"), "bbb", "success"),
        ]);
        let facts = index.get(&id("3")).expect("known");
        assert_eq!(facts.revision.as_deref(), Some("bbb"));
        assert_eq!(facts.previous_revision.as_deref(), Some("aaa"));
        assert_eq!(
            index.get(&id("1")).expect("known").previous_revision,
            None,
            "nothing ran before the first deploy we saw"
        );
    }

    fn alert(id: &str, entity: &str, labels: &[(&str, &str)]) -> Event {
        let mut e = deploy(id, "x", "firing");
        e.source = "alertmanager".into();
        e.kind = EventKind::Alert;
        e.entity = entity.into();
        e.attributes = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        e
    }

    fn incident(
        id: &str,
        rule: &str,
        entity: &str,
        root: Option<&str>,
        opened: i64,
    ) -> IncidentVersion {
        IncidentVersion {
            incident_id: id.into(),
            version: 1,
            state: causeway_rules::IncidentState::Open,
            title: format!("{rule} on {entity}").into(),
            severity: Severity::Critical,
            rule_id: rule.into(),
            rule_version: 1,
            scope: "prod".into(),
            entity: entity.into(),
            root_cause_event_id: root.and_then(causeway_rules::EventId::parse),
            opened_at: EventTime::from_micros(opened),
            updated_at: EventTime::from_micros(opened),
            resolved_at: None,
            event_count: 2,
            merged_into: None,
        }
    }

    fn edge(incident: &str, event: &str) -> causeway_rules::IncidentEdge {
        causeway_rules::IncidentEdge {
            incident_id: incident.into(),
            event_id: causeway_rules::EventId::parse(event).expect("event id"),
            role: causeway_rules::EdgeRole::Effect,
            linked_by: "deploy-regression".into(),
            rule_version: 1,
            cause_event_id: None,
            lag_seconds: 60.0,
            join_key: "prod/checkout".into(),
            time: EventTime::from_micros(0),
        }
    }

    #[test]
    fn an_incident_names_its_owner_change_links_and_cost_from_catalog_labels_and_rows() {
        let catalog = Catalog {
            services: vec![causeway_rules::ServiceEntry {
                name: "checkout".into(),
                namespace: Some("shop".into()),
                repos: vec!["acme/checkout".into()],
                team: Some("shop-team".into()),
                oncall: Some("#oncall-shop".into()),
                ..Default::default()
            }],
            ..Catalog::default()
        };
        let changes = ChangeIndex::new(100, Duration::from_secs(3600));
        let enricher = IncidentEnricher::new(
            Arc::new(IndexedCatalog::new(catalog)),
            changes,
            SimilarIndex::new(100),
        );
        let d1 = Event::derive_id("github", "1", "success");
        let d2 = Event::derive_id("github", "2", "success");
        let a = Event::derive_id("alertmanager", "a", "firing");
        let mut first = deploy(&d1, "aaa", "success");
        first
            .attributes
            .insert("commit_url".into(), "https://git/aaa".into());
        let mut second = deploy(&d2, "bbb", "success");
        second
            .attributes
            .insert("commit_url".into(), "https://git/bbb".into());
        let mut cost_before = deploy(&Event::derive_id("cost", "c1", ""), "", "Usage");
        cost_before.kind = EventKind::Cost;
        cost_before.attributes = [("effective_cost".to_owned(), "10.0".to_owned())].into();
        let mut cost_during = cost_before.clone();
        cost_during.id = Event::derive_id("cost", "c2", "");
        cost_during.time = EventTime::from_micros(3_600_000_000);
        cost_during.attributes = [("effective_cost".to_owned(), "16.0".to_owned())].into();
        enricher.observe(&[
            first,
            second,
            alert(
                &a,
                "checkout",
                &[
                    ("alertname", "HighErrorRate"),
                    ("generator_url", "http://prom/graph?x"),
                    ("external_url", "http://am:9093"),
                    ("annotation.runbook_url", "https://runbooks/checkout"),
                ],
            ),
            cost_before,
            cost_during.clone(),
        ]);
        let inc = incident("inc_1", "deploy-regression", "checkout", Some(&d2), 1);
        let e = enricher.enrichment(&inc, &[&edge("inc_1", &a), &edge("inc_1", &cost_during.id)]);
        assert_eq!(e["owner"]["team"], "shop-team", "{e}");
        assert_eq!(e["owner"]["oncall"], "#oncall-shop");
        assert_eq!(e["owner"]["repository"], "acme/checkout");
        assert_eq!(
            e["owner"]["runbook_url"], "https://runbooks/checkout",
            "from the alert"
        );
        assert_eq!(e["change"]["revision"]["from"], "aaa");
        assert_eq!(e["change"]["revision"]["to"], "bbb");
        assert_eq!(e["change"]["actor"], "alice");
        assert_eq!(e["links"]["change"], "https://git/bbb");
        assert_eq!(e["links"]["alerts"][0], "http://prom/graph?x");
        assert_eq!(e["links"]["alertmanager"], "http://am:9093");
        assert_eq!(e["cost"]["during"], 16.0);
        assert_eq!(e["cost"]["baseline"], 10.0);
        assert_eq!(e["cost"]["delta"], 6.0);
        // A later version with no new edges keeps what the first gathered.
        let again = enricher.enrichment(&inc, &[]);
        assert_eq!(again["links"]["alerts"], e["links"]["alerts"]);
        assert_written_as_a_json_value_would_be(&enricher.enrichment_text(&inc, &[]));
    }

    #[test]
    fn every_field_of_an_enrichment_is_written_in_the_order_of_a_json_value() {
        let names = std::collections::BTreeSet::from(["HighLatency".to_owned()]);
        let actions = ["rollback: approved".to_owned()];
        let from_to = || {
            Some(FromTo {
                from: Some("a"),
                to: Some("b"),
            })
        };
        let doc = EnrichmentDoc {
            alerts: &names,
            change: Some(ChangeDoc {
                actor: Some("alice"),
                drift: true,
                image: from_to(),
                kind: "deploy",
                request_parameters: Some(serde_json::json!({"b": 1, "a": 2})),
                revision: from_to(),
                set: BTreeMap::from([("replicas", "3"), ("image", "x")]),
                source: "github",
                summary: "deploy",
            }),
            cost: serde_json::json!({"rows": 1, "during": 2.5}),
            links: LinksDoc {
                alertmanager: Some("http://am"),
                alerts: &names,
                argocd: Some("http://argo"),
                change: Some("http://git"),
                sql: "causeway sql".into(),
            },
            owner: OwnerDoc {
                oncall: Some("#oncall"),
                repository: Some("acme/x"),
                runbook_url: Some("http://rb"),
                team: Some("team"),
            },
            service: "checkout",
            similar: vec![SimilarDoc {
                actions: &actions,
                incident_id: "inc_0",
                opened_at: "2024-05-01T10:00:00Z".into(),
                resolved_at: Some("2024-05-01T11:00:00Z".into()),
                rule_id: "alert-group",
                time_to_resolve_seconds: Some(3600),
                title: "earlier",
            }],
        };
        assert_written_as_a_json_value_would_be(&serde_json::to_string(&doc).expect("JSON"));
    }

    /// The text has its keys in the order a `serde_json::Value` writes them (sorted),
    /// as enrichments did when they were built as one.
    fn assert_written_as_a_json_value_would_be(text: &str) {
        let value: serde_json::Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(value.to_string(), text);
    }

    #[test]
    fn similar_incidents_prefer_the_same_rule_and_entity_and_only_earlier_ones() {
        let index = SimilarIndex::new(100);
        let past = |id: &str, rule: &str, entity: &str, opened: i64| PastIncident {
            incident_id: id.into(),
            rule_id: rule.into(),
            entity: entity.into(),
            title: id.into(),
            opened_at: EventTime::from_micros(opened),
            resolved_at: Some(EventTime::from_micros(opened + 600_000_000)),
            actions: vec!["rollback-deploy: dry_run".into()],
        };
        index.remember(past("old-same", "deploy-regression", "checkout", 10));
        index.remember(past("old-other-rule", "alert-group", "checkout", 20));
        index.remember(past("other-entity", "deploy-regression", "search", 30));
        index.remember(past("later", "deploy-regression", "checkout", 500));
        let now = incident("inc_now", "deploy-regression", "checkout", None, 100);
        let ids: Vec<String> = index
            .similar(&now, 3)
            .into_iter()
            .map(|p| p.incident_id.to_string())
            .collect();
        assert_eq!(ids, ["old-same", "old-other-rule"]);
    }

    #[test]
    fn the_index_stays_bounded_under_many_distinct_services() {
        let index = ChangeIndex::new(1_000, Duration::from_secs(3600));
        for i in 0..20_000 {
            let id = Event::derive_id("github", &i.to_string(), "success");
            let mut e = deploy(&id, &format!("sha{i}"), "success");
            e.entity = format!("svc-{i}");
            index.observe(&[e]);
        }
        index.changes.run_pending_tasks();
        index.running.run_pending_tasks();
        assert!(index.changes.entry_count() <= 1_000);
        assert!(index.changes.entry_count() > 0, "changes were kept");
        assert!(index.running.entry_count() <= 1_000);
    }
    #[test]
    fn an_entity_keeps_its_rare_rules_among_many_incidents_of_a_noisy_one() {
        let mut list = Vec::new();
        let past = |i: i64, rule: &str| PastIncident {
            incident_id: format!("{rule}-{i}").into(),
            rule_id: rule.into(),
            entity: "checkout".into(),
            title: "t".into(),
            opened_at: EventTime::from_micros(i),
            resolved_at: None,
            actions: vec![],
        };
        remember_in(&mut list, past(1, "deploy-regression"));
        for i in 2..100 {
            remember_in(&mut list, past(i, "alert-group"));
        }
        // A later version of an incident replaces it, keeping its actions.
        let mut acted = past(95, "alert-group");
        remember_in(&mut list, acted.clone());
        acted.actions = vec!["restart: executed".into()];
        remember_in(&mut list, acted.clone());
        acted.actions.clear();
        remember_in(&mut list, acted);
        let noisy = list.iter().filter(|p| &*p.rule_id == "alert-group").count();
        assert_eq!(noisy, PAST_PER_KEY);
        assert!(list.iter().any(|p| &*p.rule_id == "deploy-regression"));
        assert!(list.windows(2).all(|w| w[0].opened_at >= w[1].opened_at));
        let kept = list.iter().find(|p| &*p.incident_id == "alert-group-95");
        assert_eq!(kept.map(|p| p.actions.len()), Some(1));
        for i in 0..100 {
            remember_in(&mut list, past(1000 + i, &format!("rule-{i}")));
        }
        assert_eq!(list.len(), PAST_PER_ENTITY);
    }
    proptest::proptest! {
        /// The shortcut of `similar_then_remember` agrees with `remember_in`:
        /// what it skips is exactly what `remember_in` would insert and drop.
        #[test]
        fn would_be_dropped_is_what_remember_in_drops(
            inserts in proptest::collection::vec((0i64..60, 0usize..4), 0..120),
            newcomer in (0i64..60, 0usize..4),
        ) {
            let rules = ["alert-group", "deploy-regression", "drift", "cost"];
            let past = |i: usize, (t, r): (i64, usize)| PastIncident {
                incident_id: format!("inc-{i}").into(),
                rule_id: rules[r].into(),
                entity: "checkout".into(),
                title: "t".into(),
                opened_at: EventTime::from_micros(t),
                resolved_at: None,
                actions: vec![],
            };
            let mut list = Vec::new();
            for (i, x) in inserts.into_iter().enumerate() {
                remember_in(&mut list, past(i, x));
            }
            let new = past(usize::MAX, newcomer);
            let predicted = would_be_dropped(&list, &new.rule_id, new.opened_at);
            let before = list.clone();
            remember_in(&mut list, new);
            proptest::prop_assert_eq!(predicted, list == before);
        }
    }
    #[test]
    fn an_alert_falls_back_to_owner_and_app_url_labels_and_prefers_team_and_generator_url() {
        let enricher = IncidentEnricher::new(
            Arc::default(),
            ChangeIndex::new(100, Duration::from_secs(60)),
            SimilarIndex::new(100),
        );
        let ids: Vec<String> = ["a", "b"]
            .iter()
            .map(|s| Event::derive_id("alertmanager", s, "firing"))
            .collect();
        enricher.observe(&[
            alert(
                &ids[0],
                "checkout",
                &[
                    ("owner", "owners"),
                    ("app_url", "http://app"),
                    ("zone", "z"),
                ],
            ),
            alert(
                &ids[1],
                "checkout",
                &[
                    ("alertname", "HighLatency"),
                    ("app_url", "http://app"),
                    ("generator_url", "http://prom"),
                    ("owner", "owners"),
                    ("team", "team"),
                ],
            ),
        ]);
        let facts = |id: &str| {
            let facts = EventId::parse(id).and_then(|id| enricher.facts.get(&id));
            match facts.as_deref() {
                Some(EventFacts::Alert(a)) => a.clone(),
                other => panic!("alert facts expected, got {other:?}"),
            }
        };
        let fallback = facts(&ids[0]);
        assert_eq!(fallback.alertname, None);
        assert_eq!(fallback.team.as_deref(), Some("owners"));
        assert_eq!(fallback.generator_url.as_deref(), Some("http://app"));
        assert_eq!(fallback.external_url, None);
        let preferred = facts(&ids[1]);
        assert_eq!(preferred.alertname.as_deref(), Some("HighLatency"));
        assert_eq!(preferred.team.as_deref(), Some("team"));
        assert_eq!(preferred.generator_url.as_deref(), Some("http://prom"));
    }
    #[test]
    fn an_unchanged_incident_reuses_its_enrichment_and_a_new_fact_renews_it() {
        let enricher = IncidentEnricher::new(
            Arc::default(),
            ChangeIndex::new(100, Duration::from_secs(60)),
            SimilarIndex::new(100),
        );
        let ids: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|s| Event::derive_id("alertmanager", s, "firing"))
            .collect();
        enricher.observe(&[
            alert(&ids[0], "checkout", &[("alertname", "HighLatency")]),
            alert(&ids[1], "checkout", &[("alertname", "HighLatency")]),
            alert(&ids[2], "checkout", &[("alertname", "ErrorBudgetBurn")]),
        ]);
        let mut inc = incident("inc_1", "alert-group", "checkout", None, 1);
        let first = enricher.enrichment_text(&inc, &[&edge("inc_1", &ids[0])]);
        inc.version = 2;
        let same = enricher.enrichment_text(&inc, &[&edge("inc_1", &ids[1])]);
        assert!(
            Arc::ptr_eq(&first, &same),
            "one more alert of the same kind"
        );
        inc.version = 3;
        let renewed = enricher.enrichment_text(&inc, &[&edge("inc_1", &ids[2])]);
        let v: serde_json::Value = serde_json::from_str(&renewed).expect("json");
        assert_eq!(
            v["alerts"],
            serde_json::json!(["ErrorBudgetBurn", "HighLatency"])
        );
        // A similar incident appearing before it renews it too.
        enricher.similar.remember(PastIncident {
            incident_id: "inc_0".into(),
            rule_id: "alert-group".into(),
            entity: "checkout".into(),
            title: "earlier".into(),
            opened_at: EventTime::from_micros(0),
            resolved_at: None,
            actions: vec![],
        });
        inc.version = 4;
        let with_similar = enricher.enrichment_text(&inc, &[]);
        assert_written_as_a_json_value_would_be(&with_similar);
        let v: serde_json::Value = serde_json::from_str(&with_similar).expect("json");
        assert_eq!(v["similar"][0]["incident_id"], "inc_0");
    }
}
