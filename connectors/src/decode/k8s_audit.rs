//! Kubernetes audit webhook decoder: `audit.k8s.io/v1` (and `v1beta1`) `EventList`
//! or a single `Event`.
//!
//! A request is counted once: at `ResponseComplete`, or at `ResponseStarted` for
//! long-running requests (exec, attach, port-forward) whose completion may come
//! hours later. Both stages of one request derive the same event id from its
//! `auditID`, so whichever comes second is a duplicate. Mutating verbs are
//! `change` events; exec/attach/port-forward and reads of secrets are `audit`
//! events; other reads (the steady list/watch of controllers) are skipped and
//! counted, not stored. Event time is `requestReceivedTimestamp`.

use std::collections::BTreeMap;

use causeway_rules::{Event, EventKind, EventTime, Severity};
use serde::Deserialize;

use super::DecodeContext;
use super::identity::pod_workload;
use crate::{Error, Result};

const SOURCE: &str = "k8s_audit";

/// Why an audit item produced no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// A stage that is not the one a request is counted at.
    Stage,
    /// A read that is not security-relevant.
    Read,
}

impl Skipped {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::Stage => "stage",
            Skipped::Read => "read",
        }
    }
}

/// Events and what was skipped.
#[derive(Debug, Default)]
pub struct Decoded {
    pub events: Vec<Event>,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: String,
    verb: String,
    #[serde(default, rename = "requestURI")]
    request_uri: String,
    #[serde(default)]
    user: User,
    #[serde(default)]
    impersonated_user: Option<User>,
    #[serde(default, rename = "sourceIPs")]
    source_ips: Vec<String>,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
    request_received_timestamp: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// Present at the Request and RequestResponse audit levels.
    #[serde(default)]
    request_object: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct User {
    #[serde(default)]
    username: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    subresource: Option<String>,
    #[serde(default)]
    api_group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: Option<u16>,
}

fn malformed(reason: impl Into<String>) -> Error {
    Error::Malformed {
        source_name: SOURCE,
        reason: reason.into(),
    }
}

/// Decodes an `EventList` or one `Event`; all or nothing.
pub fn decode(body: &[u8], cx: &DecodeContext<'_>) -> Result<Decoded> {
    let text = std::str::from_utf8(body).map_err(|_| malformed("body is not UTF-8"))?;
    let raws = super::kube_items(
        SOURCE,
        text,
        "EventList",
        "Event",
        &["audit.k8s.io/v1", "audit.k8s.io/v1beta1"],
    )?;
    let mut out = Decoded::default();
    for (i, raw) in raws.into_iter().enumerate() {
        let ev: AuditEvent =
            serde_json::from_str(raw).map_err(|e| malformed(format!("items[{i}]: {e}")))?;
        match audit_event(ev, raw, cx).map_err(|e| e.at(&format!("items[{i}]")))? {
            Ok(event) => out.events.push(event),
            Err(skip) => out.skipped.push(skip),
        }
    }
    Ok(out)
}

fn is_streaming(obj: Option<&ObjectRef>) -> bool {
    obj.and_then(|o| o.subresource.as_deref())
        .is_some_and(|s| matches!(s, "exec" | "attach" | "portforward"))
}

fn audit_event(
    ev: AuditEvent,
    raw: &str,
    cx: &DecodeContext<'_>,
) -> Result<std::result::Result<Event, Skipped>> {
    let streaming = is_streaming(ev.object_ref.as_ref());
    let counted_stage = if streaming {
        ev.stage == "ResponseStarted" || ev.stage == "ResponseComplete"
    } else {
        ev.stage == "ResponseComplete"
    };
    if !counted_stage {
        return Ok(Err(Skipped::Stage));
    }
    let time = EventTime::parse_rfc3339(&ev.request_received_timestamp)
        .map_err(|e| malformed(format!("requestReceivedTimestamp: {e}")))?;
    let obj = ev.object_ref.unwrap_or_default();
    let mutating = matches!(
        ev.verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    );
    let kind = if streaming {
        EventKind::Audit
    } else if mutating {
        EventKind::Change
    } else if obj.resource == "secrets" {
        EventKind::Audit
    } else {
        return Ok(Err(Skipped::Read));
    };
    let user = ev.impersonated_user.as_ref().unwrap_or(&ev.user);
    let actor_type = if user.username.starts_with("system:serviceaccount:") {
        "service_account"
    } else if user.username.starts_with("system:") || user.username.is_empty() {
        "system"
    } else {
        "human"
    };
    let name = obj.name.clone().unwrap_or_default();
    let namespace = obj.namespace.clone();
    let workload = match obj.resource.as_str() {
        "pods" => Some(pod_workload(&name).to_owned()),
        "deployments"
        | "statefulsets"
        | "daemonsets"
        | "replicasets"
        | "horizontalpodautoscalers" => Some(if obj.resource == "replicasets" {
            name.rsplit_once('-')
                .map(|(w, _)| w.to_owned())
                .unwrap_or(name.clone())
        } else {
            name.clone()
        }),
        _ => None,
    };
    let entity = match &workload {
        Some(w) if !w.is_empty() => cx.catalog.service_for_workload(namespace.as_deref(), w),
        // A ConfigMap or Secret stands for the service that reads it.
        _ if !name.is_empty() && matches!(obj.resource.as_str(), "configmaps" | "secrets") => {
            cx.catalog.service_for_config(namespace.as_deref(), &name)
        }
        _ if !name.is_empty() => name.clone(),
        _ => obj.resource.clone(),
    };
    let action = match obj.subresource.as_deref() {
        Some(sub) if streaming => sub.to_owned(),
        Some(sub) => format!("{} {}/{sub}", ev.verb, obj.resource),
        None => format!("{} {}", ev.verb, obj.resource),
    };
    let code = ev.response_status.as_ref().and_then(|r| r.code);
    let denied = ev
        .annotations
        .get("authorization.k8s.io/decision")
        .is_some_and(|d| d == "forbid")
        || code.is_some_and(|c| c == 401 || c == 403);
    let status = if denied {
        "denied"
    } else if code.is_some_and(|c| c >= 400) {
        "failed"
    } else {
        "succeeded"
    };
    let target = match &namespace {
        Some(ns) => format!("{ns}/{}/{name}", obj.resource),
        None => format!("{}/{name}", obj.resource),
    };
    let summary = format!(
        "{} ({actor_type}) {action} {target}",
        display_user(&user.username)
    );
    let mut attributes = BTreeMap::new();
    attributes.insert("audit_id".into(), ev.audit_id.clone());
    attributes.insert("verb".into(), ev.verb.clone());
    attributes.insert("resource".into(), obj.resource.clone());
    attributes.insert("name".into(), name.clone());
    if let Some(ns) = &namespace {
        attributes.insert("namespace".into(), ns.clone());
    }
    if let Some(sub) = &obj.subresource {
        attributes.insert("subresource".into(), sub.clone());
    }
    if let Some(g) = obj.api_group.as_deref().filter(|g| !g.is_empty()) {
        attributes.insert("api_group".into(), g.to_owned());
    }
    if let Some(w) = &workload {
        attributes.insert("workload".into(), w.clone());
    }
    attributes.insert("user".into(), user.username.clone());
    attributes.insert("user_groups".into(), user.groups.join(","));
    attributes.insert("actor_type".into(), actor_type.into());
    if ev.impersonated_user.is_some() {
        attributes.insert("impersonated_by".into(), ev.user.username.clone());
    }
    if let Some(ip) = ev.source_ips.first() {
        attributes.insert("source_ip".into(), ip.clone());
    }
    if let Some(ua) = ev.user_agent {
        attributes.insert("user_agent".into(), ua);
    }
    if let Some(c) = code {
        attributes.insert("response_code".into(), c.to_string());
    }
    attributes.insert("request_uri".into(), ev.request_uri);
    if mutating && let Some(body) = &ev.request_object {
        change_attributes(&obj.resource, body, &mut attributes);
    }
    Ok(Ok(Event {
        // The stage is not part of the id: both stages of a streaming request are
        // one event.
        id: Event::derive_id(SOURCE, &ev.audit_id, ""),
        source: SOURCE.into(),
        source_event_id: ev.audit_id,
        kind,
        time,
        ingested_at: cx.received_at,
        scope: cx.cluster(),
        entity,
        severity: if streaming || obj.resource == "secrets" {
            Severity::Warning
        } else {
            Severity::Info
        },
        status: status.into(),
        summary,
        attributes,
        raw: if obj.resource == "secrets" {
            redact_bodies(raw)
        } else {
            raw.to_owned()
        },
    }))
}

/// The audit record without its request and response bodies: what a secret's
/// audit record may keep in history.
fn redact_bodies(raw: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Object(mut m)) => {
            for key in ["requestObject", "responseObject"] {
                if m.remove(key).is_some() {
                    m.insert(key.to_owned(), serde_json::Value::from("<redacted>"));
                }
            }
            serde_json::Value::Object(m).to_string()
        }
        _ => "{}".to_owned(),
    }
}

/// What a create/update/patch body sets, as `change.*` attributes rules can test:
/// container images, replicas, resource limits and requests, changed config keys.
/// Secret values are never copied, only their key names.
fn change_attributes(
    resource: &str,
    body: &serde_json::Value,
    attrs: &mut BTreeMap<String, String>,
) {
    let mut fields = Vec::new();
    let spec = &body["spec"];
    let pod_spec = if spec["template"]["spec"].is_object() {
        &spec["template"]["spec"]
    } else {
        spec
    };
    if let Some(containers) = pod_spec["containers"].as_array() {
        let images: Vec<String> = containers
            .iter()
            .filter_map(|c| {
                let image = c["image"].as_str()?;
                Some(match c["name"].as_str() {
                    Some(name) => format!("{name}={image}"),
                    None => image.to_owned(),
                })
            })
            .collect();
        if !images.is_empty() {
            attrs.insert("change.image".into(), images.join(","));
            fields.push("image");
        }
        for (kind, field) in [("limits", "limit"), ("requests", "request")] {
            for res in ["memory", "cpu"] {
                let values: Vec<String> = containers
                    .iter()
                    .filter_map(|c| {
                        c["resources"][kind][res]
                            .as_str()
                            .map(str::to_owned)
                            .or_else(|| c["resources"][kind][res].as_f64().map(|v| v.to_string()))
                    })
                    .collect();
                if !values.is_empty() {
                    attrs.insert(format!("change.{res}_{field}"), values.join(","));
                    fields.push(if kind == "limits" {
                        "limits"
                    } else {
                        "requests"
                    });
                }
            }
        }
    }
    if let Some(replicas) = spec["replicas"].as_u64() {
        attrs.insert("change.replicas".into(), replicas.to_string());
        fields.push("replicas");
    }
    if matches!(resource, "configmaps" | "secrets") {
        let mut keys: Vec<&str> = ["data", "stringData", "binaryData"]
            .iter()
            .filter_map(|k| body[*k].as_object())
            .flat_map(|m| m.keys().map(String::as_str))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        if !keys.is_empty() {
            attrs.insert("change.keys".into(), keys.join(","));
            fields.push("data");
        }
    }
    fields.dedup();
    if !fields.is_empty() {
        attrs.insert("change.fields".into(), fields.join(","));
    }
}

fn display_user(username: &str) -> &str {
    username
        .strip_prefix("system:serviceaccount:")
        .unwrap_or(if username.is_empty() {
            "anonymous"
        } else {
            username
        })
}

#[cfg(test)]
mod tests;
