//! Alertmanager webhook (`version: "4"`) decoder.
//!
//! One event per alert. The native id is `fingerprint@startsAt`: Alertmanager
//! re-sends a still-firing alert with the same fingerprint and `startsAt`, so the
//! re-send gets the same event id and counts once; its resolution gets another id
//! (the status is part of the id). Event time is `startsAt` when firing and
//! `endsAt` when resolved. A payload without `fingerprint` (older senders) gets the
//! fingerprint Alertmanager itself would compute from the label set.

use std::collections::BTreeMap;

use causeway_rules::{Event, EventKind, EventTime, Severity};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::DecodeContext;
use super::identity::workload_from_labels;
use crate::{Error, Result};

const SOURCE: &str = "alertmanager";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Webhook<'a> {
    version: String,
    #[serde(default)]
    receiver: String,
    #[serde(default, rename = "externalURL")]
    external_url: String,
    #[serde(default)]
    group_key: String,
    /// The group's status; speaks for alerts that carry none of their own.
    #[serde(default)]
    status: Option<String>,
    #[serde(borrow)]
    alerts: Vec<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    #[serde(default)]
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: String,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
}

fn malformed(reason: impl Into<String>) -> Error {
    Error::Malformed {
        source_name: SOURCE,
        reason: reason.into(),
    }
}

fn unsupported(reason: impl Into<String>) -> Error {
    Error::Unsupported {
        source_name: SOURCE,
        reason: reason.into(),
    }
}

/// Decodes a webhook body into one event per alert.
pub fn decode(body: &[u8], cx: &DecodeContext<'_>) -> Result<Vec<Event>> {
    super::expect_object(SOURCE, "the webhook body", body)?;
    let hook: Webhook<'_> =
        serde_json::from_slice(body).map_err(|e| malformed(format!("not a webhook body: {e}")))?;
    if hook.version != "4" {
        return Err(unsupported(format!(
            "webhook version {:?} (only \"4\" is supported)",
            hook.version
        )));
    }
    let mut events = Vec::with_capacity(hook.alerts.len());
    for (i, raw) in hook.alerts.iter().enumerate() {
        super::expect_object(SOURCE, format_args!("alerts[{i}]"), raw.get().as_bytes())?;
        let mut alert: Alert =
            serde_json::from_str(raw.get()).map_err(|e| malformed(format!("alerts[{i}]: {e}")))?;
        if alert.status.is_empty() {
            // Some senders put the status on the group only.
            alert.status = hook.status.clone().unwrap_or_else(|| "firing".into());
        }
        let extra = WebhookContext {
            receiver: &hook.receiver,
            external_url: &hook.external_url,
            group_key: &hook.group_key,
        };
        events.push(
            alert_event(alert, raw.get(), &extra, cx).map_err(|e| e.at(&format!("alerts[{i}]")))?,
        );
    }
    Ok(events)
}

/// What a webhook envelope adds to each alert.
#[derive(Debug, Default)]
struct WebhookContext<'a> {
    receiver: &'a str,
    external_url: &'a str,
    group_key: &'a str,
}

/// Decodes a Prometheus → Alertmanager API v2 `PostableAlert` array. Such alerts
/// carry no status: an alert whose `endsAt` has passed when it is received is
/// resolved, otherwise firing (Prometheus sets `endsAt` ahead while it fires).
pub fn decode_api_v2(body: &[u8], cx: &DecodeContext<'_>) -> Result<Vec<Event>> {
    let alerts: Vec<&RawValue> = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("not a PostableAlert array: {e}")))?;
    let mut events = Vec::with_capacity(alerts.len());
    for (i, raw) in alerts.iter().enumerate() {
        super::expect_object(SOURCE, format_args!("[{i}]"), raw.get().as_bytes())?;
        let mut value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw.get())
            .map_err(|e| malformed(format!("[{i}]: not an object: {e}")))?;
        let ends = value
            .get("endsAt")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty() && !s.starts_with("0001-01-01"))
            .map(EventTime::parse_rfc3339)
            .transpose()
            .map_err(|e| malformed(format!("[{i}]: endsAt: {e}")))?;
        let resolved = ends.is_some_and(|end| end.as_micros() <= cx.received_at.as_micros());
        if value
            .get("startsAt")
            .and_then(|v| v.as_str())
            .is_none_or(str::is_empty)
        {
            // Alertmanager defaults a missing startsAt to the time it receives the alert.
            value.insert("startsAt".into(), cx.received_at.to_rfc3339().into());
        }
        value.insert(
            "status".into(),
            if resolved { "resolved" } else { "firing" }.into(),
        );
        let alert: Alert = serde_json::from_value(serde_json::Value::Object(value))
            .map_err(|e| malformed(format!("[{i}]: {e}")))?;
        let mut event = alert_event(alert, raw.get(), &WebhookContext::default(), cx)
            .map_err(|e| e.at(&format!("[{i}]")))?;
        // A firing alert's `endsAt` is only Prometheus' lease; it is no end.
        if !resolved {
            event.attributes.remove("ends_at");
        }
        events.push(event);
    }
    Ok(events)
}

fn alert_event(
    alert: Alert,
    raw: &str,
    hook: &WebhookContext<'_>,
    cx: &DecodeContext<'_>,
) -> Result<Event> {
    if alert.status != "firing" && alert.status != "resolved" {
        return Err(unsupported(format!(
            "status {:?} (expected firing or resolved)",
            alert.status
        )));
    }
    let Some(alertname) = alert.labels.get("alertname").filter(|n| !n.is_empty()) else {
        return Err(malformed("labels.alertname is missing"));
    };
    let starts_at = EventTime::parse_rfc3339(&alert.starts_at)
        .map_err(|e| malformed(format!("startsAt: {e}")))?;
    let ends_at = match alert.ends_at.as_deref() {
        // Alertmanager sends the zero time for "not ended".
        None | Some("") => None,
        Some(s) if s.starts_with("0001-01-01") => None,
        Some(s) => {
            Some(EventTime::parse_rfc3339(s).map_err(|e| malformed(format!("endsAt: {e}")))?)
        }
    };
    let time = match (alert.status.as_str(), ends_at) {
        ("resolved", Some(end)) => end,
        _ => starts_at,
    };
    let fingerprint = alert
        .fingerprint
        .clone()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| label_fingerprint(&alert.labels));
    let source_event_id = format!("{fingerprint}@{}", starts_at.to_rfc3339());
    let scope = alert
        .labels
        .get("cluster")
        .filter(|c| !c.is_empty())
        .cloned()
        .unwrap_or_else(|| cx.cluster());
    let namespace = alert.labels.get("namespace").map(String::as_str);
    let entity = match workload_from_labels(&alert.labels) {
        Some(w) => cx.catalog.service_for_workload(namespace, &w),
        None => alert
            .labels
            .get("instance")
            .cloned()
            .unwrap_or_else(|| "unknown".into()),
    };
    let summary = alert
        .annotations
        .get("summary")
        .or_else(|| alert.annotations.get("description"))
        .cloned()
        .unwrap_or_else(|| format!("{alertname} on {entity}"));
    let severity = alert
        .labels
        .get("severity")
        .map(|s| Severity::from_label(s))
        .unwrap_or(Severity::Warning);
    // Nothing more is read from the labels: they become the attributes.
    let mut attributes = alert.labels;
    for (k, v) in alert.annotations {
        attributes.insert(format!("annotation.{k}"), v);
    }
    attributes.insert("fingerprint".into(), fingerprint);
    attributes.insert("starts_at".into(), starts_at.to_rfc3339());
    if let Some(end) = ends_at {
        attributes.insert("ends_at".into(), end.to_rfc3339());
    }
    if let Some(url) = alert.generator_url.filter(|u| !u.is_empty()) {
        attributes.insert("generator_url".into(), url);
    }
    if !hook.external_url.is_empty() {
        attributes.insert("external_url".into(), hook.external_url.to_owned());
    }
    if !hook.receiver.is_empty() {
        attributes.insert("receiver".into(), hook.receiver.to_owned());
    }
    if !hook.group_key.is_empty() {
        attributes.insert("group_key".into(), hook.group_key.to_owned());
    }
    Ok(Event {
        id: Event::derive_id(SOURCE, &source_event_id, &alert.status),
        source: SOURCE.into(),
        source_event_id,
        kind: EventKind::Alert,
        time,
        ingested_at: cx.received_at,
        scope,
        entity,
        severity,
        status: alert.status,
        summary,
        attributes,
        raw: raw.to_owned(),
    })
}

/// Prometheus' label-set fingerprint (FNV-1a 64 over sorted names and values,
/// each followed by 0xff), as Alertmanager reports it.
pub fn label_fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (k, v) in labels {
        add(k.as_bytes());
        add(&[0xff]);
        add(v.as_bytes());
        add(&[0xff]);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests;
