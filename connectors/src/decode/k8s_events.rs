//! Kubernetes Events decoder: core/v1 and events.k8s.io/v1, one `Event` or an
//! `EventList`.
//!
//! Kubernetes updates an Event in place as it repeats (`count`, `series.count`), so
//! the native id is `uid#count`: each repetition is new information, a re-post of
//! the same state is a duplicate. Event time is the latest occurrence
//! (`series.lastObservedTime`, `lastTimestamp`, `eventTime`, `firstTimestamp`, then
//! `metadata.creationTimestamp`). The status is the reason (`BackOff`,
//! `OOMKilling`, `Unhealthy`, `FailedScheduling`, `ScalingReplicaSet`, …).

use std::collections::BTreeMap;

use causeway_rules::{Event, EventKind, EventTime, Severity};
use serde::Deserialize;

use super::DecodeContext;
use super::identity::pod_workload;
use crate::{Error, Result};

const SOURCE: &str = "k8s_event";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    field_path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    creation_timestamp: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Series {
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    last_observed_time: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Source {
    #[serde(default)]
    component: Option<String>,
    #[serde(default)]
    host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct K8sEvent {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default, rename = "type")]
    event_type: Option<String>,
    #[serde(default)]
    involved_object: Option<ObjectRef>,
    #[serde(default)]
    regarding: Option<ObjectRef>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    series: Option<Series>,
    #[serde(default)]
    event_time: Option<String>,
    #[serde(default)]
    first_timestamp: Option<String>,
    #[serde(default)]
    last_timestamp: Option<String>,
    #[serde(default)]
    deprecated_last_timestamp: Option<String>,
    #[serde(default)]
    deprecated_count: Option<u64>,
    #[serde(default)]
    source: Option<Source>,
    #[serde(default)]
    reporting_controller: Option<String>,
    #[serde(default)]
    reporting_component: Option<String>,
}

fn malformed(reason: impl Into<String>) -> Error {
    Error::Malformed {
        source_name: SOURCE,
        reason: reason.into(),
    }
}

/// Decodes one Event or an EventList; all or nothing.
pub fn decode(body: &[u8], cx: &DecodeContext<'_>) -> Result<Vec<Event>> {
    let text = std::str::from_utf8(body).map_err(|_| malformed("body is not UTF-8"))?;
    let raws = super::kube_items(
        SOURCE,
        text,
        "EventList",
        "Event",
        &["v1", "events.k8s.io/v1", "events.k8s.io/v1beta1"],
    )?;
    raws.into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let ev: K8sEvent =
                serde_json::from_str(raw).map_err(|e| malformed(format!("items[{i}]: {e}")))?;
            k8s_event(ev, raw, cx).map_err(|e| e.at(&format!("items[{i}]")))
        })
        .collect()
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

fn k8s_event(ev: K8sEvent, raw: &str, cx: &DecodeContext<'_>) -> Result<Event> {
    let series = ev.series.unwrap_or_default();
    let time_text = non_empty(&series.last_observed_time)
        .or(non_empty(&ev.last_timestamp))
        .or(non_empty(&ev.deprecated_last_timestamp))
        .or(non_empty(&ev.event_time))
        .or(non_empty(&ev.first_timestamp))
        .or(non_empty(&ev.metadata.creation_timestamp))
        .ok_or_else(|| malformed("no timestamp (eventTime, lastTimestamp, firstTimestamp)"))?;
    let time = EventTime::parse_rfc3339(time_text).map_err(|e| malformed(e.to_string()))?;
    let obj = ev.regarding.or(ev.involved_object).unwrap_or_default();
    let reason = ev.reason.clone().unwrap_or_else(|| "Unknown".into());
    let message = ev.note.or(ev.message).unwrap_or_default();
    let count = series
        .count
        .or(ev.count)
        .or(ev.deprecated_count)
        .unwrap_or(1);
    let uid = ev
        .metadata
        .uid
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            format!(
                "{}/{}",
                ev.metadata.namespace.clone().unwrap_or_default(),
                ev.metadata.name
            )
        });
    let source_event_id = format!("{uid}#{count}");
    let namespace = obj.namespace.clone().or(ev.metadata.namespace.clone());
    let workload = match obj.kind.as_str() {
        "Pod" => pod_workload(&obj.name).to_owned(),
        "ReplicaSet" => obj
            .name
            .rsplit_once('-')
            .map(|(w, _)| w.to_owned())
            .unwrap_or_else(|| obj.name.clone()),
        _ => obj.name.clone(),
    };
    let entity = match obj.kind.as_str() {
        "Node" | "Namespace" => obj.name.clone(),
        _ => cx
            .catalog
            .service_for_workload(namespace.as_deref(), &workload),
    };
    let warning = ev.event_type.as_deref() == Some("Warning");
    let severity = match reason.as_str() {
        "OOMKilling" | "OOMKilled" | "Evicted" | "NodeNotReady" => Severity::Error,
        _ if warning => Severity::Warning,
        _ => Severity::Info,
    };
    let mut attributes = BTreeMap::new();
    attributes.insert("reason".into(), reason.clone());
    attributes.insert("type".into(), ev.event_type.unwrap_or_default());
    attributes.insert("object_kind".into(), obj.kind.clone());
    attributes.insert("object_name".into(), obj.name.clone());
    attributes.insert("workload".into(), workload);
    attributes.insert("count".into(), count.to_string());
    attributes.insert("message".into(), message.clone());
    if let Some(ns) = &namespace {
        attributes.insert("namespace".into(), ns.clone());
    }
    if let Some(fp) = obj.field_path {
        attributes.insert("field_path".into(), fp);
    }
    let reporter = ev
        .reporting_controller
        .filter(|s| !s.is_empty())
        .or(ev.reporting_component.filter(|s| !s.is_empty()))
        .or(ev.source.as_ref().and_then(|s| s.component.clone()));
    if let Some(r) = reporter {
        attributes.insert("reporter".into(), r);
    }
    if let Some(host) = ev.source.and_then(|s| s.host) {
        attributes.insert("host".into(), host);
    }
    Ok(Event {
        id: Event::derive_id(SOURCE, &source_event_id, &reason),
        source: SOURCE.into(),
        source_event_id,
        kind: EventKind::K8sEvent,
        time,
        ingested_at: cx.received_at,
        scope: cx.cluster(),
        entity,
        severity,
        summary: format!("{reason}: {message}"),
        status: reason,
        attributes,
        raw: raw.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use causeway_rules::{IndexedCatalog, ProcessingTime};

    use super::*;

    fn cx(c: &IndexedCatalog) -> DecodeContext<'_> {
        DecodeContext {
            catalog: c,
            cluster_hint: None,
            received_at: ProcessingTime::from_micros(0),
        }
    }

    #[test]
    fn core_v1_backoff_maps_to_its_workload_at_the_last_occurrence() {
        let body = r#"{"apiVersion":"v1","kind":"Event","metadata":{"name":"checkout-7d9f8b6c5d-x2k4q.17a","namespace":"shop","uid":"u-1"},
          "involvedObject":{"kind":"Pod","name":"checkout-7d9f8b6c5d-x2k4q","namespace":"shop","fieldPath":"spec.containers{app}"},
          "reason":"BackOff","message":"Back-off restarting failed container","type":"Warning","count":4,
          "firstTimestamp":"2024-05-01T10:00:00Z","lastTimestamp":"2024-05-01T10:03:00Z","source":{"component":"kubelet","host":"node-1"}}"#;
        let c = IndexedCatalog::default();
        let e = &decode(body.as_bytes(), &cx(&c)).expect("decodes")[0];
        assert_eq!(e.entity, "checkout");
        assert_eq!(e.status, "BackOff");
        assert_eq!(e.severity, Severity::Warning);
        assert_eq!(e.source_event_id, "u-1#4");
        assert_eq!(e.time.to_rfc3339(), "2024-05-01T10:03:00Z");
        assert_eq!(e.scope, "default");
    }

    #[test]
    fn events_k8s_io_v1_and_lists_decode() {
        let body = r#"{"kind":"EventList","apiVersion":"v1","items":[
          {"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"n","namespace":"shop","uid":"u-2"},
           "regarding":{"kind":"Node","name":"node-3"},"reason":"OOMKilling","note":"Memory cgroup out of memory",
           "type":"Warning","eventTime":"2024-05-01T10:00:00.000000Z","reportingController":"kernel-monitor",
           "series":{"count":2,"lastObservedTime":"2024-05-01T10:05:00.000000Z"}}]}"#;
        let c = IndexedCatalog::default();
        let e = &decode(body.as_bytes(), &cx(&c)).expect("decodes")[0];
        assert_eq!(e.entity, "node-3");
        assert_eq!(e.severity, Severity::Error);
        assert_eq!(e.source_event_id, "u-2#2");
        assert_eq!(e.time.to_rfc3339(), "2024-05-01T10:05:00Z");
        assert!(decode(br#"{"kind":"Pod"}"#, &cx(&c)).is_err());
        let err = decode(br#"{"kind":"Event","metadata":{}}"#, &cx(&c)).expect_err("no time");
        let msg = err.to_string();
        assert_eq!(msg.matches("malformed").count(), 1, "{msg}");
        assert!(msg.contains("items[0]: no timestamp"), "{msg}");
    }
}
