//! The normalized event every source is decoded into, and its CloudEvents form.
//!
//! An [`Event`] is what flows through the event log, the engine and the `events`
//! history table. On the wire (Kafka values, the embedded log, `/ingest/events`) it
//! is a CloudEvents 1.0 JSON document: Causeway's own fields are extension
//! attributes, and the decoded summary, attributes and original payload are `data`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::id::EventId;
use crate::time::{EventTime, ProcessingTime};
use crate::{Error, Result, id};

/// What an event tells us, which decides the role it can play in a causal chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A symptom: a firing or resolved alert.
    Alert,
    /// A rollout of new code or configuration through a delivery system.
    Deploy,
    /// A direct change to running state (kubectl edit, cloud API mutation).
    Change,
    /// A read or access worth keeping as context.
    Audit,
    /// A cost record.
    Cost,
    /// A Kubernetes Event (BackOff, OOMKilling, …).
    K8sEvent,
}

impl EventKind {
    /// All kinds, in a stable order.
    pub const ALL: [EventKind; 6] = [
        EventKind::Alert,
        EventKind::Deploy,
        EventKind::Change,
        EventKind::Audit,
        EventKind::Cost,
        EventKind::K8sEvent,
    ];

    /// The column value, as in CONTRACT.md.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Alert => "alert",
            EventKind::Deploy => "deploy",
            EventKind::Change => "change",
            EventKind::Audit => "audit",
            EventKind::Cost => "cost",
            EventKind::K8sEvent => "k8s_event",
        }
    }

    /// The kind a column value names.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether this kind changes production and so can be a root cause.
    pub fn is_change(self) -> bool {
        matches!(self, EventKind::Deploy | EventKind::Change)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::InvalidEvent {
                reason: format!(
                    "unknown kind {s:?} (expected one of alert, deploy, change, audit, cost, k8s_event)"
                ),
            })
    }
}

/// Normalized severity, ordered from least to most severe.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The source gave no severity (deploys, most changes).
    #[default]
    None,
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::None => "none",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    /// The severity a column value names.
    pub fn parse(s: &str) -> Option<Severity> {
        [
            Severity::None,
            Severity::Info,
            Severity::Warning,
            Severity::Error,
            Severity::Critical,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// Maps the many spellings found in alert labels onto the normalized scale.
    pub fn from_label(value: &str) -> Severity {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Severity::None,
            "critical" | "crit" | "page" | "p1" | "disaster" | "fatal" | "emergency" => {
                Severity::Critical
            }
            "error" | "err" | "high" | "major" | "severe" | "p2" => Severity::Error,
            "warning" | "warn" | "medium" | "minor" | "p3" => Severity::Warning,
            _ => Severity::Info,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One normalized event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Deterministic id: a hash of source, native id and status.
    pub id: String,
    /// Which kind of system told us (alertmanager, github, …).
    pub source: String,
    /// The source's own id for what happened (fingerprint + startsAt, status id, …).
    pub source_event_id: String,
    pub kind: EventKind,
    /// When it happened, by the source.
    pub time: EventTime,
    /// When a receiver accepted it.
    pub ingested_at: ProcessingTime,
    /// Correlation scope and partition key: a cluster or a cloud account.
    pub scope: String,
    /// The canonical workload, service or resource it is about.
    pub entity: String,
    pub severity: Severity,
    /// Source status (firing, resolved, success, failure, …).
    pub status: String,
    /// One human line.
    pub summary: String,
    /// Flattened string attributes rules can test (`alertname`, `namespace`, `sha`, …).
    pub attributes: BTreeMap<String, String>,
    /// The original payload fragment, as JSON text.
    pub raw: String,
}

impl Event {
    /// The deterministic event id for a source, native id and status: the same
    /// alert re-sent by Alertmanager gets the same id, its resolution another.
    pub fn derive_id(source: &str, source_event_id: &str, status: &str) -> String {
        id::derive("evt", &[source, source_event_id, status])
    }

    /// An attribute, if present.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Serializes as a CloudEvents 1.0 structured-mode JSON document.
    pub fn to_cloudevent_json(&self) -> String {
        let raw = RawValue::from_string(self.raw.clone())
            .or_else(|_| RawValue::from_string("null".to_owned()));
        let doc = CloudEvent {
            specversion: "1.0".into(),
            id: self.id.clone(),
            source: self.source.clone(),
            ty: format!("dev.causeway.{}", self.kind.as_str()).into(),
            time: self.time.to_rfc3339().into(),
            subject: Some(self.entity.clone()),
            datacontenttype: Some("application/json".into()),
            sourceeventid: self.source_event_id.clone(),
            scope: self.scope.clone(),
            severity: Some(self.severity),
            status: Some(self.status.clone()),
            ingestedat: Some(self.ingested_at.to_rfc3339().into()),
            data: Some(CloudEventData {
                summary: Some(self.summary.clone()),
                attributes: self.attributes.clone(),
                raw: raw.ok(),
            }),
        };
        // Serializing owned strings and maps into a String cannot fail.
        serde_json::to_string(&doc).unwrap_or_default()
    }

    /// Parses a CloudEvents 1.0 JSON document into an event. `ingested_at` is used
    /// when the document has no `ingestedat` extension. Missing Causeway extensions
    /// get defaults (`scope` "default", `entity` from `subject`); a missing id is
    /// derived from source and `sourceeventid`, and an id that is not Causeway's
    /// (`evt_` and 32 hex digits) from source and that id.
    pub fn from_cloudevent_json(text: &str, ingested_at: ProcessingTime) -> Result<Event> {
        Event::from_cloudevent(cloudevent_document(text)?, ingested_at)
    }

    /// Whether [`Event::from_cloudevent_json`] would take `text`, with the error it
    /// would give, without building the event: a file import checks every line
    /// before it appends any, and this check borrows or skips every string the
    /// decode would copy. The two accept the same documents (a test holds them to
    /// it).
    pub fn check_cloudevent_json(text: &str) -> Result<()> {
        let doc: CheckedCloudEvent<'_> = cloudevent_document(text)?;
        check_envelope(
            &doc.specversion,
            &doc.ty,
            &doc.time,
            doc.ingestedat.as_deref(),
            &doc.source,
        )
        .map(|_| ())
    }

    fn from_cloudevent(doc: CloudEvent<'_>, ingested_at: ProcessingTime) -> Result<Event> {
        let (kind, time, given_ingested_at) = check_envelope(
            &doc.specversion,
            &doc.ty,
            &doc.time,
            doc.ingestedat.as_deref(),
            &doc.source,
        )?;
        let ingested_at = given_ingested_at.unwrap_or(ingested_at);
        let data = doc.data.unwrap_or_default();
        let status = doc.status.unwrap_or_default();
        let source_event_id = if doc.sourceeventid.is_empty() {
            doc.id.clone()
        } else {
            doc.sourceeventid
        };
        // Causeway's event ids are `evt_<32 hex>`: a foreign id stays the source's
        // own id and the event id is derived from it.
        let id = if doc.id.is_empty() {
            Event::derive_id(&doc.source, &source_event_id, &status)
        } else if EventId::is_canonical(&doc.id) {
            doc.id
        } else {
            EventId::foreign(&doc.source, &doc.id)
        };
        Ok(Event {
            id,
            source: doc.source,
            source_event_id,
            kind,
            time,
            ingested_at,
            scope: if doc.scope.is_empty() {
                "default".into()
            } else {
                doc.scope
            },
            entity: doc.subject.unwrap_or_default(),
            severity: doc.severity.unwrap_or_default(),
            status,
            summary: data.summary.unwrap_or_default(),
            attributes: data.attributes,
            raw: data
                .raw
                .map(|r| r.get().to_owned())
                .unwrap_or_else(|| "null".into()),
        })
    }
}

/// A CloudEvents JSON document deserialized as `T` ([`CloudEvent`] to decode it,
/// [`CheckedCloudEvent`] to check it), with the errors both give.
fn cloudevent_document<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T> {
    // Serde would also take a struct from an array of its fields; CloudEvents
    // are objects.
    if !text.trim_start().starts_with('{') {
        return Err(Error::InvalidEvent {
            reason: "a CloudEvent must be a JSON object".into(),
        });
    }
    serde_json::from_str(text).map_err(|e| Error::InvalidEvent {
        reason: format!("not a CloudEvents JSON document: {e}"),
    })
}

/// What can refuse a CloudEvent once it has deserialized: its version, type and
/// times, and an empty source. Returns the kind, event time and the document's
/// own ingestion time, if it has one.
fn check_envelope(
    specversion: &str,
    ty: &str,
    time: &str,
    ingestedat: Option<&str>,
    source: &str,
) -> Result<(EventKind, EventTime, Option<ProcessingTime>)> {
    if specversion != "1.0" {
        return Err(Error::InvalidEvent {
            reason: format!("unsupported specversion {specversion:?}"),
        });
    }
    let kind_str = ty
        .strip_prefix("dev.causeway.")
        .ok_or_else(|| Error::InvalidEvent {
            reason: format!("type {ty:?} is not a Causeway type (dev.causeway.<kind>)"),
        })?;
    let kind: EventKind = kind_str.parse()?;
    let time = EventTime::parse_rfc3339(time)?;
    let ingested_at = ingestedat.map(ProcessingTime::parse_rfc3339).transpose()?;
    if source.is_empty() {
        return Err(Error::InvalidEvent {
            reason: "source is empty".into(),
        });
    }
    Ok((kind, time, ingested_at))
}

/// [`CloudEvent`] as [`Event::check_cloudevent_json`] reads it: the same fields
/// with the same types as JSON sees them, but nothing kept that the envelope
/// check does not read.
#[derive(Deserialize)]
#[serde(expecting = "struct CloudEvent")] // errors read as the decode's
#[allow(dead_code)] // the unread fields are checked by deserializing them
struct CheckedCloudEvent<'a> {
    #[serde(borrow)]
    specversion: Cow<'a, str>,
    #[serde(default)]
    id: CheckedString,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(default)]
    subject: Option<CheckedString>,
    #[serde(default)]
    datacontenttype: Option<CheckedString>,
    #[serde(default)]
    sourceeventid: CheckedString,
    #[serde(default)]
    scope: CheckedString,
    #[serde(default)]
    severity: Option<Severity>,
    #[serde(default)]
    status: Option<CheckedString>,
    #[serde(default, borrow)]
    ingestedat: Option<Cow<'a, str>>,
    #[serde(default)]
    data: Option<CheckedData>,
}

/// [`CloudEventData`], checked and not kept.
#[derive(Deserialize)]
#[serde(expecting = "struct CloudEventData")]
#[allow(dead_code)] // checked by deserializing
struct CheckedData {
    #[serde(default)]
    summary: Option<CheckedString>,
    #[serde(default)]
    attributes: CheckedStringMap,
    #[serde(default)]
    raw: Option<serde::de::IgnoredAny>,
}

/// A JSON string, checked and not kept (a `String` would copy it).
#[derive(Default)]
struct CheckedString;

impl<'de> Deserialize<'de> for CheckedString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = CheckedString;
            // What `String` expects, so errors read the same as the decode's.
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(
                self,
                _: &str,
            ) -> std::result::Result<Self::Value, E> {
                Ok(CheckedString)
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// A JSON object of strings, checked and not kept (a `BTreeMap<String, String>`
/// would copy every entry).
#[derive(Default)]
struct CheckedStringMap;

impl<'de> Deserialize<'de> for CheckedStringMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = CheckedStringMap;
            // What `BTreeMap` expects, so errors read the same as the decode's.
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                while map.next_entry::<CheckedString, CheckedString>()?.is_some() {}
                Ok(CheckedStringMap)
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// A CloudEvent as written and read. The fields only checked or parsed on the
/// way in borrow from the document (no allocation per event for them).
#[derive(Debug, Serialize, Deserialize)]
struct CloudEvent<'a> {
    #[serde(borrow)]
    specversion: Cow<'a, str>,
    #[serde(default)]
    id: String,
    source: String,
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    datacontenttype: Option<Cow<'a, str>>,
    #[serde(default)]
    sourceeventid: String,
    #[serde(default)]
    scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    ingestedat: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<CloudEventData>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CloudEventData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    summary: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw: Option<Box<RawValue>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Event {
        Event {
            id: Event::derive_id("alertmanager", "abc@2024-05-01T10:00:00Z", "firing"),
            source: "alertmanager".into(),
            source_event_id: "abc@2024-05-01T10:00:00Z".into(),
            kind: EventKind::Alert,
            time: EventTime::parse_rfc3339("2024-05-01T10:00:00Z").expect("valid"),
            ingested_at: ProcessingTime::parse_rfc3339("2024-05-01T10:00:01Z").expect("valid"),
            scope: "prod-eu".into(),
            entity: "checkout".into(),
            severity: Severity::Critical,
            status: "firing".into(),
            summary: "HighErrorRate on checkout".into(),
            attributes: [("alertname".to_owned(), "HighErrorRate".to_owned())].into(),
            raw: r#"{"labels":{"alertname":"HighErrorRate"}}"#.into(),
        }
    }

    #[test]
    fn cloudevent_json_round_trips() {
        let e = sample();
        let json = e.to_cloudevent_json();
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "dev.causeway.alert");
        assert_eq!(v["subject"], "checkout");
        let back = Event::from_cloudevent_json(&json, ProcessingTime::MIN).expect("parse");
        assert_eq!(back, e);
    }

    #[test]
    fn foreign_cloudevent_types_are_rejected_with_a_reason() {
        let err = Event::from_cloudevent_json(
            r#"{"specversion":"1.0","id":"1","source":"x","type":"com.example.thing","time":"2024-01-01T00:00:00Z"}"#,
            ProcessingTime::MIN,
        )
        .expect_err("foreign type");
        assert!(err.to_string().contains("not a Causeway type"), "{err}");
    }

    #[test]
    fn foreign_ids_become_causeway_ids_and_stay_as_the_source_id() {
        let e = Event::from_cloudevent_json(
            r#"{"specversion":"1.0","id":"order-17","source":"shop","type":"dev.causeway.change","time":"2024-01-01T00:00:00Z"}"#,
            ProcessingTime::from_micros(0),
        )
        .expect("valid");
        assert!(EventId::is_canonical(&e.id), "{}", e.id);
        assert_eq!(e.source_event_id, "order-17");
        let again = Event::from_cloudevent_json(&e.to_cloudevent_json(), ProcessingTime::MIN)
            .expect("round trip");
        assert_eq!(again.id, e.id);
    }

    #[test]
    fn severity_labels_normalise() {
        assert_eq!(Severity::from_label("PAGE"), Severity::Critical);
        assert_eq!(Severity::from_label("warning"), Severity::Warning);
        assert_eq!(Severity::from_label("severe"), Severity::Error);
        assert!(Severity::Critical > Severity::Warning);
    }
}
