//! The generated workload in the formats senders really use, so the load harness
//! and the decode benchmarks go through the receivers' own decoders: CloudEvents
//! (the `/ingest/events` receiver and `causeway import events`) and Alertmanager
//! webhooks (`/ingest/alertmanager`).

use std::collections::HashMap;

use causeway_rules::{Event, EventKind};
use serde_json::{Value, json};

/// One event as a CloudEvents JSON document, without Causeway's `ingestedat`
/// extension: the receiver stamps its own arrival time, as with a real sender.
pub fn cloudevent(e: &Event) -> String {
    let mut doc: Value = serde_json::from_str(&e.to_cloudevent_json()).unwrap_or(Value::Null);
    if let Some(map) = doc.as_object_mut() {
        map.remove("ingestedat");
        // The generator's raw payload is a placeholder; real senders send none.
        if let Some(data) = map.get_mut("data").and_then(Value::as_object_mut) {
            data.remove("raw");
        }
    }
    doc.to_string()
}

/// Events as CloudEvents JSON lines (the `events` import format).
pub fn cloudevents_jsonl(events: &[Event]) -> String {
    let mut out = String::with_capacity(events.len() * 400);
    for e in events {
        out.push_str(&cloudevent(e));
        out.push('\n');
    }
    out
}

/// Events as one CloudEvents batch (`application/cloudevents-batch+json`).
pub fn cloudevents_batch(events: &[Event]) -> String {
    let docs: Vec<String> = events.iter().map(cloudevent).collect();
    format!("[{}]", docs.join(","))
}

/// Turns Alertmanager alerts into version-4 webhook payloads as Alertmanager
/// sends them: a firing alert keeps its `startsAt` on every re-send (so a re-send
/// has the same native id), a resolution carries the original `startsAt` and its
/// `endsAt`. `startsAt` of each fingerprint is remembered across calls.
#[derive(Debug, Default)]
pub struct AlertmanagerEncoder {
    started: HashMap<String, String>,
}

impl AlertmanagerEncoder {
    /// Whether an event is one this encoder speaks for.
    pub fn is_alert(e: &Event) -> bool {
        e.source == "alertmanager" && e.kind == EventKind::Alert
    }

    /// One webhook carrying `alerts` (all Alertmanager alerts) in one group.
    pub fn webhook(&mut self, alerts: &[&Event]) -> String {
        let items: Vec<Value> = alerts.iter().map(|e| self.alert(e)).collect();
        let first = alerts.first();
        let alertname = first.and_then(|e| e.attr("alertname")).unwrap_or("Load");
        let status = if alerts.iter().all(|e| e.status == "resolved") {
            "resolved"
        } else {
            "firing"
        };
        json!({
            "version": "4",
            "groupKey": format!("{{}}:{{alertname=\"{alertname}\"}}"),
            "truncatedAlerts": 0,
            "status": status,
            "receiver": "causeway",
            "groupLabels": {"alertname": alertname},
            "commonLabels": {"alertname": alertname},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager.load:9093",
            "alerts": items,
        })
        .to_string()
    }

    fn alert(&mut self, e: &Event) -> Value {
        let fingerprint = fingerprint(&e.source_event_id);
        let time = e.time.to_rfc3339();
        let starts_at = if e.status == "resolved" {
            self.started
                .remove(&fingerprint)
                .unwrap_or_else(|| time.clone())
        } else {
            self.started
                .entry(fingerprint.clone())
                .or_insert_with(|| time.clone())
                .clone()
        };
        let ends_at = if e.status == "resolved" {
            time
        } else {
            "0001-01-01T00:00:00Z".to_owned()
        };
        let mut labels = serde_json::Map::new();
        labels.insert(
            "alertname".into(),
            json!(e.attr("alertname").unwrap_or("Load")),
        );
        labels.insert("severity".into(), json!(e.severity.as_str()));
        labels.insert("cluster".into(), json!(e.scope));
        labels.insert("service".into(), json!(e.entity));
        json!({
            "status": e.status,
            "labels": labels,
            "annotations": {"summary": e.summary},
            "startsAt": starts_at,
            "endsAt": ends_at,
            "generatorURL": "http://prometheus.load:9090/graph",
            "fingerprint": fingerprint,
        })
    }
}

/// A 16-hex-digit fingerprint standing for the generator's alert identity.
fn fingerprint(source_event_id: &str) -> String {
    let h = twox_hash::XxHash3_64::oneshot(source_event_id.as_bytes());
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use causeway_connectors::decode::{self, DecodeContext};
    use causeway_rules::ProcessingTime;

    use super::*;
    use crate::{Workload, catalog, generate};

    #[test]
    fn the_receivers_decode_what_the_encoders_write_into_the_same_events() {
        let w = Workload {
            events: 5_000,
            ..Workload::default()
        };
        let events = generate(&w);
        let cat = causeway_rules::IndexedCatalog::new(catalog(&w));
        let cx = DecodeContext {
            catalog: &cat,
            cluster_hint: None,
            received_at: ProcessingTime::from_micros(0),
        };
        let decoded = decode::cloudevents::decode(cloudevents_batch(&events).as_bytes(), &cx)
            .expect("cloudevents decode");
        assert_eq!(decoded.len(), events.len());
        for (a, b) in events.iter().zip(&decoded) {
            assert_eq!(
                (&a.id, &a.scope, &a.entity, a.time),
                (&b.id, &b.scope, &b.entity, b.time)
            );
        }

        let mut enc = AlertmanagerEncoder::default();
        let alerts: Vec<&Event> = events
            .iter()
            .filter(|e| AlertmanagerEncoder::is_alert(e))
            .collect();
        assert!(alerts.len() > 1_000);
        let mut ids = std::collections::HashSet::new();
        for chunk in alerts.chunks(7) {
            let body = enc.webhook(chunk);
            let got =
                decode::alertmanager::decode(body.as_bytes(), &cx).expect("alertmanager decode");
            assert_eq!(got.len(), chunk.len());
            for (a, b) in chunk.iter().zip(&got) {
                assert_eq!(
                    (&a.scope, &a.entity, &a.status),
                    (&b.scope, &b.entity, &b.status)
                );
                ids.insert(b.id.clone());
            }
        }
        // A re-send has the id of its first delivery: as many ids as distinct alerts.
        let distinct: std::collections::HashSet<&str> =
            alerts.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), distinct.len());
    }
}
