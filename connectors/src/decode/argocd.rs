//! Argo CD notifications decoder: exactly the body of the template Causeway ships
//! in `deploy/argocd/causeway-notifications.yaml` (`"schema": "causeway.argocd/v1"`).
//!
//! The template says which trigger fired (`notification`): a finished sync is a
//! `deploy` at `finishedAt` (status success, failure or error); a degraded
//! application is an alert (`ArgoCDAppDegraded`), so it can be the effect of a
//! deploy; an out-of-sync application is a `change`: running state and Git
//! disagree (drift). A body without `notification` (an older template) is read
//! from its phase and statuses. The scope is the destination name, else its server
//! (the in-cluster server is the default cluster); the entity is the application,
//! through the catalog.

use std::collections::BTreeMap;

use causeway_rules::{Event, EventKind, EventTime, Severity};
use serde::Deserialize;

use super::DecodeContext;
use crate::{Error, Result};

const SOURCE: &str = "argocd";
const SCHEMA: &str = "causeway.argocd/v1";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Notification {
    schema: String,
    /// `sync-finished`, `degraded` or `out-of-sync`.
    #[serde(default)]
    notification: String,
    event_id: String,
    app: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    destination_name: String,
    #[serde(default)]
    destination_server: String,
    #[serde(default)]
    repo_url: String,
    #[serde(default)]
    revision: String,
    #[serde(default)]
    phase: String,
    #[serde(default)]
    started_at: String,
    #[serde(default)]
    finished_at: String,
    #[serde(default)]
    sync_status: String,
    #[serde(default)]
    health: String,
    #[serde(default)]
    reconciled_at: String,
    #[serde(default)]
    initiated_by: String,
    #[serde(default)]
    images: Option<Vec<String>>,
    #[serde(default)]
    app_url: String,
}

fn malformed(reason: impl Into<String>) -> Error {
    Error::Malformed {
        source_name: SOURCE,
        reason: reason.into(),
    }
}

fn time_of(field: &str, value: &str) -> Result<Option<EventTime>> {
    // Go templates render a missing value as "" or "<no value>".
    if value.is_empty() || value == "<no value>" {
        return Ok(None);
    }
    EventTime::parse_rfc3339(value)
        .map(Some)
        .map_err(|e| malformed(format!("{field}: {e}")))
}

/// Decodes one notification.
pub fn decode(body: &[u8], cx: &DecodeContext<'_>) -> Result<Vec<Event>> {
    super::expect_object(SOURCE, "the notification body", body)?;
    let n: Notification = serde_json::from_slice(body).map_err(|e| {
        malformed(format!(
            "not the body of deploy/argocd/causeway-notifications.yaml: {e}"
        ))
    })?;
    if n.schema != SCHEMA {
        return Err(Error::Unsupported {
            source_name: SOURCE,
            reason: format!("schema {:?} (expected {SCHEMA:?})", n.schema),
        });
    }
    if n.app.is_empty() || n.event_id.is_empty() {
        return Err(malformed("app and event_id must not be empty"));
    }
    let finished = time_of("finished_at", &n.finished_at)?;
    let reconciled = time_of("reconciled_at", &n.reconciled_at)?;
    let observed = reconciled.or(finished).unwrap_or_else(|| now(cx));
    let (kind, status, time, severity) = match (n.notification.as_str(), n.phase.as_str(), finished)
    {
        ("degraded", _, _) => (EventKind::Alert, "firing", observed, Severity::Error),
        ("out-of-sync", _, _) => (
            EventKind::Change,
            "out_of_sync",
            observed,
            Severity::Warning,
        ),
        ("sync-finished", "Succeeded", Some(t)) => {
            (EventKind::Deploy, "success", t, Severity::None)
        }
        ("sync-finished", "Failed", Some(t)) => {
            (EventKind::Deploy, "failure", t, Severity::Warning)
        }
        ("sync-finished", "Error", Some(t)) => (EventKind::Deploy, "error", t, Severity::Warning),
        ("sync-finished", phase, _) => {
            return Err(Error::Unsupported {
                source_name: SOURCE,
                reason: format!("sync-finished with phase {phase:?} and no finishedAt"),
            });
        }
        ("", _, _) => legacy(&n, finished, observed)?,
        (other, _, _) => {
            return Err(Error::Unsupported {
                source_name: SOURCE,
                reason: format!(
                    "notification {other:?} (expected sync-finished, degraded or out-of-sync)"
                ),
            });
        }
    };
    let scope = if !n.destination_name.is_empty() && n.destination_name != "<no value>" {
        n.destination_name.clone()
    } else if n.destination_server.is_empty()
        || n.destination_server == "https://kubernetes.default.svc"
    {
        cx.catalog.default_cluster.clone()
    } else {
        cx.catalog.cluster_for_environment(&n.destination_server)
    };
    let namespace = Some(n.namespace.as_str()).filter(|s| !s.is_empty());
    let entity = cx.catalog.service_for_argo_app(namespace, &n.app);
    let rev7: String = n.revision.chars().take(7).collect();
    let summary = match kind {
        EventKind::Deploy => format!("Argo CD sync of {} to {rev7}: {}", n.app, n.phase),
        EventKind::Alert => format!("Argo CD application {} is Degraded", n.app),
        _ => format!("Argo CD application {} is OutOfSync with Git", n.app),
    };
    let mut attributes = BTreeMap::new();
    attributes.insert("app".into(), n.app.clone());
    if kind == EventKind::Alert {
        attributes.insert("alertname".into(), "ArgoCDAppDegraded".into());
    }
    for (k, v) in [
        ("project", &n.project),
        ("namespace", &n.namespace),
        ("destination_name", &n.destination_name),
        ("destination_server", &n.destination_server),
        ("repo_url", &n.repo_url),
        ("revision", &n.revision),
        ("phase", &n.phase),
        ("started_at", &n.started_at),
        ("finished_at", &n.finished_at),
        ("sync_status", &n.sync_status),
        ("health", &n.health),
        ("initiated_by", &n.initiated_by),
        ("app_url", &n.app_url),
    ] {
        if !v.is_empty() && v != "<no value>" {
            attributes.insert(k.to_owned(), v.clone());
        }
    }
    if let Some(images) = &n.images {
        attributes.insert("images".into(), images.join(","));
    }
    let raw = String::from_utf8_lossy(body).into_owned();
    Ok(vec![Event {
        id: Event::derive_id(SOURCE, &n.event_id, status),
        source: SOURCE.into(),
        source_event_id: n.event_id,
        kind,
        time,
        ingested_at: cx.received_at,
        scope,
        entity,
        severity,
        status: status.into(),
        summary,
        attributes,
        raw,
    }])
}

/// A body without `notification`: read from the last operation's phase and the
/// statuses.
fn legacy(
    n: &Notification,
    finished: Option<EventTime>,
    observed: EventTime,
) -> Result<(EventKind, &'static str, EventTime, Severity)> {
    Ok(match (n.phase.as_str(), finished) {
        ("Succeeded", Some(t)) => (EventKind::Deploy, "success", t, Severity::None),
        ("Failed", Some(t)) => (EventKind::Deploy, "failure", t, Severity::Warning),
        ("Error", Some(t)) => (EventKind::Deploy, "error", t, Severity::Warning),
        _ if n.health == "Degraded" => (EventKind::Alert, "firing", observed, Severity::Error),
        _ if n.sync_status == "OutOfSync" => (
            EventKind::Change,
            "out_of_sync",
            observed,
            Severity::Warning,
        ),
        _ => {
            return Err(Error::Unsupported {
                source_name: SOURCE,
                reason: format!(
                    "nothing to record: phase {:?}, health {:?}, sync {:?}",
                    n.phase, n.health, n.sync_status
                ),
            });
        }
    })
}

fn now(cx: &DecodeContext<'_>) -> EventTime {
    EventTime::from_micros(cx.received_at.as_micros())
}

#[cfg(test)]
mod tests {
    use causeway_rules::{IndexedCatalog, ProcessingTime};

    use super::*;

    fn body(phase: &str, health: &str, sync: &str, finished: &str) -> String {
        format!(
            r#"{{"schema":"causeway.argocd/v1","event_id":"uid-1/abc/{phase}/{health}/{sync}/{finished}","app":"checkout","project":"default",
            "namespace":"shop","destination_name":"","destination_server":"https://kubernetes.default.svc","repo_url":"https://git.example/acme/deploy",
            "revision":"4f1c2ab9e0","phase":"{phase}","started_at":"2024-05-01T09:59:00Z","finished_at":"{finished}",
            "sync_status":"{sync}","health":"{health}","reconciled_at":"2024-05-01T10:05:00Z","initiated_by":"alice",
            "images":["ghcr.io/acme/checkout:1.4.2"],"app_url":"https://argocd.example/applications/checkout"}}"#
        )
    }

    fn cx(c: &IndexedCatalog) -> DecodeContext<'_> {
        DecodeContext {
            catalog: c,
            cluster_hint: None,
            received_at: ProcessingTime::from_micros(0),
        }
    }

    #[test]
    fn a_finished_sync_is_a_deploy_and_degraded_health_an_alert() {
        let c = IndexedCatalog::default();
        let d = &decode(
            body("Succeeded", "Healthy", "Synced", "2024-05-01T10:00:00Z").as_bytes(),
            &cx(&c),
        )
        .expect("ok")[0];
        assert_eq!((d.kind, d.status.as_str()), (EventKind::Deploy, "success"));
        assert_eq!(d.entity, "checkout");
        assert_eq!(d.scope, "default");
        assert_eq!(d.time.to_rfc3339(), "2024-05-01T10:00:00Z");
        assert_eq!(d.attr("images"), Some("ghcr.io/acme/checkout:1.4.2"));
        let a = &decode(
            body("Running", "Degraded", "Synced", "").as_bytes(),
            &cx(&c),
        )
        .expect("ok")[0];
        assert_eq!((a.kind, a.status.as_str()), (EventKind::Alert, "firing"));
        assert_eq!(a.attr("alertname"), Some("ArgoCDAppDegraded"));
        let o = &decode(body("", "Healthy", "OutOfSync", "").as_bytes(), &cx(&c)).expect("ok")[0];
        assert_eq!(o.kind, EventKind::Change);
    }

    #[test]
    fn the_trigger_named_by_the_template_decides_what_a_notification_is() {
        let c = IndexedCatalog::default();
        let named = |n: &str, phase: &str, health: &str, sync: &str| {
            body(phase, health, sync, "2024-05-01T10:00:00Z").replacen(
                "\"event_id\"",
                &format!("\"notification\":\"{n}\",\"event_id\""),
                1,
            )
        };
        // Drift after an earlier successful sync: a change at reconciliation, not
        // that old sync again.
        let o = &decode(
            named("out-of-sync", "Succeeded", "Healthy", "OutOfSync").as_bytes(),
            &cx(&c),
        )
        .expect("ok")[0];
        assert_eq!(
            (o.kind, o.status.as_str()),
            (EventKind::Change, "out_of_sync")
        );
        assert_eq!(o.time.to_rfc3339(), "2024-05-01T10:05:00Z");
        let d = &decode(
            named("degraded", "Succeeded", "Degraded", "Synced").as_bytes(),
            &cx(&c),
        )
        .expect("ok")[0];
        assert_eq!((d.kind, d.status.as_str()), (EventKind::Alert, "firing"));
        let s = &decode(
            named("sync-finished", "Failed", "Degraded", "OutOfSync").as_bytes(),
            &cx(&c),
        )
        .expect("ok")[0];
        assert_eq!((s.kind, s.status.as_str()), (EventKind::Deploy, "failure"));
        let unknown = named("mystery", "Succeeded", "Healthy", "Synced");
        assert!(
            decode(unknown.as_bytes(), &cx(&c))
                .expect_err("unknown trigger")
                .to_string()
                .contains("mystery")
        );
    }

    #[test]
    fn other_bodies_are_refused() {
        let c = IndexedCatalog::default();
        assert!(decode(b"{}", &cx(&c)).is_err());
        let other = body("Succeeded", "Healthy", "Synced", "2024-05-01T10:00:00Z")
            .replace("causeway.argocd/v1", "x");
        assert!(
            decode(other.as_bytes(), &cx(&c))
                .expect_err("schema")
                .to_string()
                .starts_with("unsupported")
        );
        let extra = body("Succeeded", "Healthy", "Synced", "2024-05-01T10:00:00Z").replacen(
            '{',
            "{\"surprise\":1,",
            1,
        );
        assert!(decode(extra.as_bytes(), &cx(&c)).is_err());
    }
}
