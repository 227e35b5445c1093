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

use causeway_rules::{Catalog, Event, EventKind, IncidentVersion};
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
