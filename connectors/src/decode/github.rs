//! GitHub webhook decoder: `deployment` and `deployment_status`.
//!
//! A deployment status is a deploy event at the status' `created_at`, with the
//! status' `state` (success, failure, error, in_progress, …) and the native id
//! `deployment_status.id`. The repository maps to a service through the catalog
//! (else its name); the environment maps to a cluster (else it is the scope as
//! given). `ping` is accepted with no event.

use std::collections::BTreeMap;

use causeway_rules::{Event, EventKind, EventTime, Severity};
use serde::Deserialize;

use super::DecodeContext;
use crate::{Error, Result};

const SOURCE: &str = "github";

/// The GitHub event types this decoder takes.
pub const SUPPORTED_EVENTS: [&str; 3] = ["deployment", "deployment_status", "ping"];

#[derive(Debug, Deserialize)]
struct Repository {
    full_name: String,
    #[serde(default)]
    html_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct User {
    login: String,
}

#[derive(Debug, Deserialize)]
struct Deployment {
    id: u64,
    #[serde(default)]
    sha: String,
    #[serde(default, rename = "ref")]
    git_ref: String,
    #[serde(default)]
    task: Option<String>,
    environment: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    creator: Option<User>,
    created_at: String,
    /// Free-form JSON the deployer attached; CD tools put the image here
    /// (`{"image": "ghcr.io/acme/checkout:4f1c2ab"}`).
    #[serde(default)]
    payload: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct DeploymentStatus {
    id: u64,
    state: String,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    target_url: Option<String>,
    #[serde(default)]
    creator: Option<User>,
    created_at: String,
}

#[derive(Debug, Deserialize)]
struct DeploymentPayload {
    deployment: Deployment,
    repository: Repository,
}

#[derive(Debug, Deserialize)]
struct DeploymentStatusPayload {
    deployment_status: DeploymentStatus,
    deployment: Deployment,
    repository: Repository,
}

fn malformed(reason: impl Into<String>) -> Error {
    Error::Malformed {
        source_name: SOURCE,
        reason: reason.into(),
    }
}

/// Decodes one delivery. `event_type` is `X-GitHub-Event`, `delivery` is
/// `X-GitHub-Delivery`.
pub fn decode(
    event_type: &str,
    delivery: Option<&str>,
    body: &[u8],
    cx: &DecodeContext<'_>,
) -> Result<Vec<Event>> {
    let raw = std::str::from_utf8(body).map_err(|_| malformed("body is not UTF-8"))?;
    super::expect_object(SOURCE, "the delivery body", body)?;
    match event_type {
        "ping" => {
            serde_json::from_str::<serde_json::Value>(raw)
                .map_err(|e| malformed(format!("not JSON: {e}")))?;
            Ok(Vec::new())
        }
        "deployment" => {
            let p: DeploymentPayload = serde_json::from_str(raw)
                .map_err(|e| malformed(format!("not a deployment event: {e}")))?;
            let d = &p.deployment;
            let time = parse_time("deployment.created_at", &d.created_at)?;
            let sha7: String = d.sha.chars().take(7).collect();
            let summary = format!(
                "{} {} to {} requested",
                p.repository.full_name, sha7, d.environment
            );
            let mut attributes = deployment_attributes(d, &p.repository, delivery);
            attributes.insert("task".into(), d.task.clone().unwrap_or_default());
            Ok(vec![deploy_event(
                format!("deployment:{}", d.id),
                "created",
                time,
                &d.environment,
                &p.repository,
                summary,
                attributes,
                raw,
                cx,
            )])
        }
        "deployment_status" => {
            let p: DeploymentStatusPayload = serde_json::from_str(raw)
                .map_err(|e| malformed(format!("not a deployment_status event: {e}")))?;
            let s = &p.deployment_status;
            let d = &p.deployment;
            let time = parse_time("deployment_status.created_at", &s.created_at)?;
            let environment = s
                .environment
                .clone()
                .unwrap_or_else(|| d.environment.clone());
            let sha7: String = d.sha.chars().take(7).collect();
            let summary = format!(
                "deploy {} {} to {}: {}",
                p.repository.full_name, sha7, environment, s.state
            );
            let mut attributes = deployment_attributes(d, &p.repository, delivery);
            attributes.insert("deployment_status_id".into(), s.id.to_string());
            attributes.insert("environment".into(), environment.clone());
            if let Some(url) = s.target_url.clone().filter(|u| !u.is_empty()) {
                attributes.insert("target_url".into(), url);
            }
            if let Some(desc) = s.description.clone().filter(|u| !u.is_empty()) {
                attributes.insert("status_description".into(), desc);
            }
            if let Some(c) = &s.creator {
                attributes.insert("status_creator".into(), c.login.clone());
            }
            Ok(vec![deploy_event(
                s.id.to_string(),
                &s.state,
                time,
                &environment,
                &p.repository,
                summary,
                attributes,
                raw,
                cx,
            )])
        }
        other => Err(Error::Unsupported {
            source_name: SOURCE,
            reason: format!(
                "event type {other:?} (supported: {})",
                SUPPORTED_EVENTS.join(", ")
            ),
        }),
    }
}

fn parse_time(field: &str, value: &str) -> Result<EventTime> {
    EventTime::parse_rfc3339(value).map_err(|e| malformed(format!("{field}: {e}")))
}

fn deployment_attributes(
    d: &Deployment,
    repo: &Repository,
    delivery: Option<&str>,
) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("deployment_id".into(), d.id.to_string());
    a.insert("sha".into(), d.sha.clone());
    a.insert("ref".into(), d.git_ref.clone());
    a.insert("environment".into(), d.environment.clone());
    a.insert("repository".into(), repo.full_name.clone());
    if let Some(url) = &repo.html_url {
        a.insert("repository_url".into(), url.clone());
        if !d.sha.is_empty() {
            a.insert("commit_url".into(), format!("{url}/commit/{}", d.sha));
        }
    }
    if let Some(c) = &d.creator {
        a.insert("creator".into(), c.login.clone());
    }
    // The payload may be an object or a JSON string holding one.
    let payload = match &d.payload {
        Some(serde_json::Value::String(text)) => serde_json::from_str(text).ok(),
        other => other.clone(),
    };
    for key in ["image", "images"] {
        if let Some(image) = payload.as_ref().and_then(|p| p[key].as_str()) {
            a.insert("image".into(), image.to_owned());
        }
    }
    if let Some(desc) = d.description.clone().filter(|s| !s.is_empty()) {
        a.insert("description".into(), desc);
    }
    if let Some(id) = delivery {
        a.insert("delivery_id".into(), id.to_owned());
    }
    a
}

#[allow(clippy::too_many_arguments)]
fn deploy_event(
    source_event_id: String,
    status: &str,
    time: EventTime,
    environment: &str,
    repo: &Repository,
    summary: String,
    attributes: BTreeMap<String, String>,
    raw: &str,
    cx: &DecodeContext<'_>,
) -> Event {
    let entity = cx.catalog.service_for_repo(&repo.full_name);
    let mut attributes = attributes;
    if let Some(ns) = cx.catalog.namespace_of(&entity) {
        attributes.insert("namespace".into(), ns.to_owned());
    }
    Event {
        id: Event::derive_id(SOURCE, &source_event_id, status),
        source: SOURCE.into(),
        source_event_id,
        kind: EventKind::Deploy,
        time,
        ingested_at: cx.received_at,
        scope: cx.catalog.cluster_for_environment(environment),
        entity,
        severity: match status {
            "failure" | "error" => Severity::Warning,
            _ => Severity::None,
        },
        status: status.to_owned(),
        summary,
        attributes,
        raw: raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use causeway_rules::{Catalog, IndexedCatalog, ProcessingTime, ServiceEntry};

    use super::*;

    const STATUS: &str = r#"{
      "action": "created",
      "deployment_status": {"id": 42, "state": "success", "environment": "production",
        "description": "", "target_url": "https://ci.example/run/7",
        "creator": {"login": "octo"}, "created_at": "2024-05-01T10:00:00Z"},
      "deployment": {"id": 7, "sha": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e", "ref": "main",
        "task": "deploy", "environment": "production", "description": null,
        "creator": {"login": "octo"}, "created_at": "2024-05-01T09:59:00Z"},
      "repository": {"full_name": "acme/payments-service", "html_url": "https://github.example/acme/payments-service"}
    }"#;

    fn catalog() -> IndexedCatalog {
        IndexedCatalog::new(Catalog {
            default_cluster: "default".into(),
            environments: [("production".to_owned(), "prod-eu".to_owned())].into(),
            services: vec![ServiceEntry {
                name: "payments".into(),
                namespace: Some("shop".into()),
                workloads: vec![],
                repos: vec!["acme/payments-service".into()],
                resources: vec![],
                ..ServiceEntry::default()
            }],
            ..Catalog::default()
        })
    }

    fn cx(c: &IndexedCatalog) -> DecodeContext<'_> {
        DecodeContext {
            catalog: c,
            cluster_hint: None,
            received_at: ProcessingTime::from_micros(0),
        }
    }

    #[test]
    fn deployment_status_is_a_deploy_of_the_catalog_service() {
        let c = catalog();
        let events =
            decode("deployment_status", Some("d-1"), STATUS.as_bytes(), &cx(&c)).expect("decodes");
        let e = &events[0];
        assert_eq!(e.kind, EventKind::Deploy);
        assert_eq!(e.source_event_id, "42");
        assert_eq!(e.status, "success");
        assert_eq!(e.entity, "payments");
        assert_eq!(e.scope, "prod-eu");
        assert_eq!(e.time.to_rfc3339(), "2024-05-01T10:00:00Z");
        assert_eq!(
            e.attr("sha"),
            Some("f95f852bd8fca8fcc58a9a2d6c842781e32a215e")
        );
        assert_eq!(e.attr("namespace"), Some("shop"));
        assert!(e.summary.contains("f95f852"));
    }

    #[test]
    fn without_a_catalog_the_repository_name_and_environment_are_used() {
        let c = IndexedCatalog::default();
        let e = &decode("deployment_status", None, STATUS.as_bytes(), &cx(&c)).expect("ok")[0];
        assert_eq!(e.entity, "payments-service");
        assert_eq!(e.scope, "production");
    }

    #[test]
    fn ping_is_accepted_and_other_events_are_unsupported() {
        let c = catalog();
        assert!(
            decode("ping", None, b"{\"zen\":\"x\"}", &cx(&c))
                .expect("ok")
                .is_empty()
        );
        let err = decode("push", None, b"{}", &cx(&c)).expect_err("push");
        assert!(err.to_string().starts_with("unsupported"), "{err}");
        let err = decode("deployment_status", None, b"{\"action\":1}", &cx(&c)).expect_err("bad");
        assert!(err.to_string().starts_with("malformed"), "{err}");
    }
}
