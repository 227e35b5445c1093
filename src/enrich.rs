//! What the sources told us about changes, kept for the incidents they cause.
//!
//! An incident names its root cause by event id; the runbook that answers it needs
//! that change's facts (service, namespace, the revision deployed and the one
//! before it, who made it, a link to it). Changes are rare next to alerts, so the
//! recent ones are kept in a bounded cache (moka: size cap and TTL) fed in log
//! order as the engine reads events; nothing here blocks correlation or grows
//! without bound.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use causeway_rules::{Catalog, Event, EventKind, EventTime, IncidentVersion};
use moka::sync::Cache;

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
    changes: Cache<String, Arc<ChangeFacts>>,
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
            self.changes.insert(e.id.clone(), Arc::new(facts));
        }
    }

    /// The facts of a change, if still known.
    pub(crate) fn get(&self, event_id: &str) -> Option<Arc<ChangeFacts>> {
        self.changes.get(event_id)
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
            .and_then(|id| self.get(&id.to_string()));
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

/// What an incident gathered from its events so far.
#[derive(Debug, Clone, Default)]
struct Gathered {
    alertnames: std::collections::BTreeSet<String>,
    teams: std::collections::BTreeSet<String>,
    runbook_urls: std::collections::BTreeSet<String>,
    generator_urls: std::collections::BTreeSet<String>,
    external_url: Option<String>,
    argocd_out_of_sync: bool,
}

/// Caps on what one incident keeps: enough to act on, bounded.
const MAX_LISTED: usize = 5;

/// An earlier incident, as the similar-incident lookup keeps it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PastIncident {
    pub(crate) incident_id: String,
    pub(crate) rule_id: String,
    pub(crate) entity: String,
    pub(crate) title: String,
    pub(crate) opened_at: EventTime,
    pub(crate) resolved_at: Option<EventTime>,
    /// Runbook decisions taken on it (`runbook: decision`).
    pub(crate) actions: Vec<String>,
}

/// Similar past incidents, by (rule, entity): loaded from the history with
/// DataFusion at start (bounded in time and rows), kept current from the incidents
/// that pass through, bounded in memory.
#[derive(Clone)]
pub(crate) struct SimilarIndex {
    by_key: Cache<(String, String), Arc<Vec<PastIncident>>>,
    by_entity: Cache<String, Arc<Vec<PastIncident>>>,
}

/// Past incidents kept per key.
const PAST_PER_KEY: usize = 10;

impl SimilarIndex {
    pub(crate) fn new(capacity: u64) -> SimilarIndex {
        SimilarIndex {
            by_key: Cache::builder().max_capacity(capacity).build(),
            by_entity: Cache::builder().max_capacity(capacity).build(),
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
            let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
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
        let upsert = |list: Option<Arc<Vec<PastIncident>>>| -> Arc<Vec<PastIncident>> {
            let mut v: Vec<PastIncident> = list.map(|l| (*l).clone()).unwrap_or_default();
            match v.iter_mut().find(|p| p.incident_id == past.incident_id) {
                Some(p) => {
                    let actions = std::mem::take(&mut p.actions);
                    *p = past.clone();
                    if p.actions.is_empty() {
                        p.actions = actions;
                    }
                }
                None => v.push(past.clone()),
            }
            v.sort_by_key(|p| std::cmp::Reverse(p.opened_at));
            v.truncate(PAST_PER_KEY);
            Arc::new(v)
        };
        let key = (past.rule_id.clone(), past.entity.clone());
        self.by_key.insert(key.clone(), upsert(self.by_key.get(&key)));
        self.by_entity
            .insert(past.entity.clone(), upsert(self.by_entity.get(&past.entity)));
    }

    /// Up to `n` incidents like `incident` that opened before it: same rule and
    /// entity first, then others on the same entity.
    pub(crate) fn similar(&self, incident: &IncidentVersion, n: usize) -> Vec<PastIncident> {
        let earlier = |p: &&PastIncident| {
            p.incident_id != *incident.incident_id && p.opened_at < incident.opened_at
        };
        let key = (incident.rule_id.to_string(), incident.entity.to_string());
        let mut out: Vec<PastIncident> = self
            .by_key
            .get(&key)
            .map(|l| l.iter().filter(earlier).take(n).cloned().collect())
            .unwrap_or_default();
        if out.len() < n
            && let Some(l) = self.by_entity.get(&*incident.entity)
        {
            for p in l.iter().filter(earlier) {
                if out.len() >= n {
                    break;
                }
                if !out.iter().any(|o| o.incident_id == p.incident_id) {
                    out.push(p.clone());
                }
            }
        }
        out
    }
}

/// The enrichment stage: owners, the root-cause change, links and similar past
/// incidents, from memory only (the caches above), so correlation never waits.
#[derive(Clone)]
pub(crate) struct IncidentEnricher {
    catalog: Arc<Catalog>,
    changes: ChangeIndex,
    alerts: Cache<String, Arc<AlertFacts>>,
    gathered: Cache<Arc<str>, Arc<std::sync::Mutex<Gathered>>>,
    similar: SimilarIndex,
}

impl std::fmt::Debug for IncidentEnricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncidentEnricher")
            .field("alerts", &self.alerts.entry_count())
            .field("incidents", &self.gathered.entry_count())
            .finish()
    }
}

impl IncidentEnricher {
    pub(crate) fn new(catalog: Catalog, changes: ChangeIndex, similar: SimilarIndex) -> Self {
        let ttl = Duration::from_secs(7 * 24 * 3600);
        IncidentEnricher {
            catalog: Arc::new(catalog),
            changes,
            alerts: Cache::builder()
                .max_capacity(200_000)
                .time_to_live(ttl)
                .build(),
            gathered: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            similar,
        }
    }

    /// Remembers what alerts and Argo CD events say about owners and links (and
    /// feeds the change index), in log order, before the engine takes the batch.
    pub(crate) fn observe<'a>(&self, events: impl IntoIterator<Item = &'a Event> + Clone) {
        self.changes.observe(events.clone());
        for e in events {
            let interesting = e.kind == EventKind::Alert
                || (e.source == "argocd" && e.attr("sync_status") == Some("OutOfSync"));
            if !interesting {
                continue;
            }
            let label = |k: &str| e.attr(k).map(str::to_owned);
            self.alerts.insert(
                e.id.clone(),
                Arc::new(AlertFacts {
                    alertname: label("alertname").or_else(|| {
                        (e.source == "argocd").then(|| "ArgoCDOutOfSync".to_owned())
                    }),
                    team: label("team").or_else(|| label("owner")),
                    runbook_url: label("annotation.runbook_url"),
                    generator_url: label("generator_url").or_else(|| label("app_url")),
                    external_url: label("external_url"),
                }),
            );
        }
    }

    /// The enrichment of one incident version, as a JSON object.
    pub(crate) fn enrichment(
        &self,
        incident: &IncidentVersion,
        edges: &[&causeway_rules::IncidentEdge],
    ) -> serde_json::Value {
        use serde_json::json;
        let gathered = self
            .gathered
            .get_with(incident.incident_id.clone(), Default::default);
        let g = {
            let mut g = gathered.lock().unwrap_or_else(|p| p.into_inner());
            for edge in edges {
                let Some(a) = self.alerts.get(&edge.event_id.to_string()) else {
                    continue;
                };
                let add = |set: &mut std::collections::BTreeSet<String>, v: &Option<String>| {
                    if let Some(v) = v
                        && set.len() < MAX_LISTED
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
            g.clone()
        };
        let service = self.catalog.service_of(&incident.entity);
        let entry = self.catalog.service(&service);
        let team = entry
            .and_then(|s| s.team.clone())
            .or_else(|| g.teams.iter().next().cloned());
        let runbook_url = entry
            .and_then(|s| s.runbook_url.clone())
            .or_else(|| g.runbook_urls.iter().next().cloned());
        let repository = entry.and_then(|s| s.repos.first().cloned());
        let argo_app = entry.and_then(|s| s.argo_apps.first().cloned());
        let root = incident
            .root_cause_event_id
            .and_then(|id| self.changes.get(&id.to_string()));
        let change = root.as_ref().map(|c| {
            let attr = |k: &str| c.attributes.get(k).cloned();
            let human = attr("actor_type").as_deref() == Some("human");
            let mut change = json!({
                "source": c.source,
                "kind": c.kind.as_str(),
                "summary": c.summary,
                "actor": attr("creator").or_else(|| attr("user")).or_else(|| attr("actor")),
            });
            if c.revision.is_some() {
                change["revision"] = json!({"from": c.previous_revision, "to": c.revision});
            }
            if c.image.is_some() {
                change["image"] = json!({"from": c.previous_image, "to": c.image});
            }
            let changed: BTreeMap<&str, &String> = c
                .attributes
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("change.").map(|k| (k, v)))
                .collect();
            if !changed.is_empty() {
                change["set"] = json!(changed);
            }
            if let Some(params) = attr("request_parameters") {
                change["request_parameters"] =
                    serde_json::from_str(&params).unwrap_or(serde_json::Value::String(params));
            }
            // Production is what runs: a human changing a workload that Git
            // declares (Argo CD) leaves it drifted until Git catches up.
            let drift = g.argocd_out_of_sync
                || (human && c.source == "k8s_audit" && argo_app.is_some());
            change["drift"] = json!(drift);
            change
        });
        let evidence = root.as_ref().and_then(|c| {
            ["commit_url", "target_url", "app_url"]
                .iter()
                .find_map(|k| c.attributes.get(*k).cloned())
        });
        let similar: Vec<serde_json::Value> = self
            .similar
            .similar(incident, 3)
            .iter()
            .map(|p| {
                json!({
                    "incident_id": p.incident_id,
                    "rule_id": p.rule_id,
                    "title": p.title,
                    "opened_at": p.opened_at.to_rfc3339(),
                    "resolved_at": p.resolved_at.map(|t| t.to_rfc3339()),
                    "time_to_resolve_seconds": p.resolved_at
                        .map(|r| (r.as_micros() - p.opened_at.as_micros()) / 1_000_000),
                    "actions": p.actions,
                })
            })
            .collect();
        // This incident is a similar one for the next.
        if incident.merged_into.is_none() {
            self.similar.remember(PastIncident {
                incident_id: incident.incident_id.to_string(),
                rule_id: incident.rule_id.to_string(),
                entity: incident.entity.to_string(),
                title: incident.title.to_string(),
                opened_at: incident.opened_at,
                resolved_at: incident.resolved_at,
                actions: Vec::new(),
            });
        }
        json!({
            "service": service,
            "owner": {
                "team": team,
                "oncall": entry.and_then(|s| s.oncall.clone()),
                "repository": repository,
                "runbook_url": runbook_url,
            },
            "change": change,
            "alerts": g.alertnames,
            "links": {
                "alerts": g.generator_urls,
                "alertmanager": g.external_url,
                "argocd": argo_app.as_ref().and(root.as_ref().and_then(|c| c.attributes.get("app_url").cloned())),
                "change": evidence,
                "sql": format!(
                    "causeway sql \"SELECT role, linked_by, lag_seconds, event_id FROM incident_events WHERE incident_id = '{}' ORDER BY time\"",
                    incident.incident_id
                ),
            },
            "similar": similar,
        })
    }
}

impl causeway_engine::Enricher for IncidentEnricher {
    fn enrich(
        &self,
        incident: &IncidentVersion,
        edges: &[&causeway_rules::IncidentEdge],
    ) -> Option<Arc<str>> {
        Some(self.enrichment(incident, edges).to_string().into())
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
    fn a_deploy_knows_the_revision_it_replaced_across_progress_reports() {
        let index = ChangeIndex::new(100, Duration::from_secs(3600));
        index.observe(&[
            deploy("e1", "aaa", "success"),
            deploy("e2", "bbb", "in_progress"),
            deploy("e3", "bbb", "success"),
        ]);
        let facts = index.get("e3").expect("known");
        assert_eq!(facts.revision.as_deref(), Some("bbb"));
        assert_eq!(facts.previous_revision.as_deref(), Some("aaa"));
        assert_eq!(
            index.get("e1").expect("known").previous_revision,
            None,
            "nothing ran before the first deploy we saw"
        );
    }

    #[test]
    fn the_index_stays_bounded_under_many_distinct_services() {
        let index = ChangeIndex::new(1_000, Duration::from_secs(3600));
        for i in 0..20_000 {
            let mut e = deploy(&format!("e{i}"), &format!("sha{i}"), "success");
            e.entity = format!("svc-{i}");
            index.observe(&[e]);
        }
        index.changes.run_pending_tasks();
        index.running.run_pending_tasks();
        assert!(index.changes.entry_count() <= 1_000);
        assert!(index.running.entry_count() <= 1_000);
    }
}
