//! Arrow schemas of the history tables, and conversions from the rules crate's
//! types into record batches.
//!
//! Times are `Timestamp(Microsecond, "UTC")`, like [`causeway_rules::EventTime`].
//! Event attributes are a `Map<Utf8, Utf8>` so rules and SQL can write
//! `attributes['alertname']`.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, Float64Array, Float64Builder, MapBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray, TimestampMicrosecondBuilder, UInt32Array,
    UInt32Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use causeway_rules::{
    EdgeRole, Event, EventId, EventTime, IncidentEdge, IncidentState, IncidentVersion, Severity,
};

use crate::{Error, Result};

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
}

fn attributes_type() -> DataType {
    map_builder().finish().data_type().clone()
}

/// `events`: one row per normalized event.
pub static EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("source_event_id", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("time", ts(), false),
        Field::new("ingested_at", ts(), false),
        Field::new("scope", DataType::Utf8, false),
        Field::new("entity", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("summary", DataType::Utf8, false),
        Field::new("attributes", attributes_type(), false),
        Field::new("raw", DataType::Utf8, false),
    ]))
});

/// `incidents`: one row per incident version.
pub static INCIDENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("incident_id", DataType::Utf8, false),
        Field::new("version", DataType::UInt32, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("rule_id", DataType::Utf8, false),
        Field::new("rule_version", DataType::UInt32, false),
        Field::new("scope", DataType::Utf8, false),
        Field::new("entity", DataType::Utf8, false),
        Field::new("root_cause_event_id", DataType::Utf8, true),
        Field::new("opened_at", ts(), false),
        Field::new("updated_at", ts(), false),
        Field::new("resolved_at", ts(), true),
        Field::new("event_count", DataType::UInt32, false),
        Field::new("merged_into", DataType::Utf8, true),
        // What enrichment added to this version, as a JSON object: owners, the
        // root-cause change, links, similar past incidents.
        Field::new("enrichment", DataType::Utf8, true),
    ]))
});

/// `incident_events`: one row per (incident, event) edge.
pub static INCIDENT_EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("incident_id", DataType::Utf8, false),
        Field::new("event_id", DataType::Utf8, false),
        Field::new("role", DataType::Utf8, false),
        Field::new("linked_by", DataType::Utf8, false),
        Field::new("rule_version", DataType::UInt32, false),
        Field::new("cause_event_id", DataType::Utf8, true),
        Field::new("lag_seconds", DataType::Float64, false),
        Field::new("join_key", DataType::Utf8, false),
        Field::new("time", ts(), false),
    ]))
});

/// `actions`: one row per runbook decision (written by the runbook kernel). An
/// action has several rows as it moves on (awaiting_approval, then approved).
pub static ACTIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("action_id", DataType::Utf8, false),
        Field::new("incident_id", DataType::Utf8, false),
        Field::new("incident_version", DataType::UInt32, false),
        Field::new("runbook", DataType::Utf8, false),
        Field::new("action_class", DataType::Utf8, false),
        Field::new("decision", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("decided_at", ts(), false),
        Field::new("target", DataType::Utf8, false),
        Field::new("approver", DataType::Utf8, true),
        Field::new("expires_at", ts(), true),
        // The rendered parameters, as a JSON object.
        Field::new("params", DataType::Utf8, false),
    ]))
});

/// Runbook decisions as one record batch with the `actions` schema.
pub fn actions_batch(rows: &[causeway_rules::runbook::Decision]) -> Result<RecordBatch> {
    let n = rows.len();
    let mut action_id = StringBuilder::with_capacity(n, n * 36);
    let mut incident_id = StringBuilder::with_capacity(n, n * 36);
    let mut incident_version = UInt32Builder::with_capacity(n);
    let mut runbook = StringBuilder::with_capacity(n, n * 16);
    let mut class = StringBuilder::with_capacity(n, n * 8);
    let mut decision = StringBuilder::with_capacity(n, n * 10);
    let mut reason = StringBuilder::with_capacity(n, n * 40);
    let mut decided_at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut target = StringBuilder::with_capacity(n, n * 40);
    let mut approver = StringBuilder::with_capacity(n, n * 8);
    let mut expires_at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut params = StringBuilder::with_capacity(n, n * 64);
    for r in rows {
        action_id.append_value(&r.action_id);
        incident_id.append_value(&r.incident_id);
        incident_version.append_value(r.incident_version);
        runbook.append_value(&r.runbook);
        class.append_value(r.class.as_str());
        decision.append_value(r.decision.as_str());
        reason.append_value(&r.reason);
        decided_at.append_value(r.decided_at.as_micros());
        target.append_value(&r.target);
        approver.append_option(r.approver.as_deref());
        expires_at.append_option(r.expires_at.map(|t| t.as_micros()));
        let json = serde_json::to_string(&r.params)
            .map_err(|e| Error::Internal(format!("action params: {e}")))?;
        params.append_value(json);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(action_id.finish()),
        Arc::new(incident_id.finish()),
        Arc::new(incident_version.finish()),
        Arc::new(runbook.finish()),
        Arc::new(class.finish()),
        Arc::new(decision.finish()),
        Arc::new(reason.finish()),
        Arc::new(decided_at.finish()),
        Arc::new(target.finish()),
        Arc::new(approver.finish()),
        Arc::new(expires_at.finish()),
        Arc::new(params.finish()),
    ];
    Ok(RecordBatch::try_new(ACTIONS.clone(), columns)?)
}

/// Events as one record batch with the `events` schema.
pub fn events_batch(events: &[Event]) -> Result<RecordBatch> {
    let n = events.len();
    let mut event_id = StringBuilder::with_capacity(n, n * 36);
    let mut source = StringBuilder::with_capacity(n, n * 12);
    let mut source_event_id = StringBuilder::with_capacity(n, n * 32);
    let mut kind = StringBuilder::with_capacity(n, n * 6);
    let mut time = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut ingested = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut scope = StringBuilder::with_capacity(n, n * 8);
    let mut entity = StringBuilder::with_capacity(n, n * 12);
    let mut severity = StringBuilder::with_capacity(n, n * 8);
    let mut status = StringBuilder::with_capacity(n, n * 8);
    let mut summary = StringBuilder::with_capacity(n, events.iter().map(|e| e.summary.len()).sum());
    let (entries, key_bytes, value_bytes) = events
        .iter()
        .flat_map(|e| &e.attributes)
        .fold((0, 0, 0), |(n, k, v), (key, value)| {
            (n + 1, k + key.len(), v + value.len())
        });
    let mut attributes = MapBuilder::with_capacity(
        None,
        StringBuilder::with_capacity(entries, key_bytes),
        StringBuilder::with_capacity(entries, value_bytes),
        n,
    );
    let mut raw = StringBuilder::with_capacity(n, events.iter().map(|e| e.raw.len()).sum());
    for e in events {
        event_id.append_value(&e.id);
        source.append_value(&e.source);
        source_event_id.append_value(&e.source_event_id);
        kind.append_value(e.kind.as_str());
        time.append_value(e.time.as_micros());
        ingested.append_value(e.ingested_at.as_micros());
        scope.append_value(&e.scope);
        entity.append_value(&e.entity);
        severity.append_value(e.severity.as_str());
        status.append_value(&e.status);
        summary.append_value(&e.summary);
        for (k, v) in &e.attributes {
            attributes.keys().append_value(k);
            attributes.values().append_value(v);
        }
        attributes.append(true)?;
        raw.append_value(&e.raw);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(event_id.finish()),
        Arc::new(source.finish()),
        Arc::new(source_event_id.finish()),
        Arc::new(kind.finish()),
        Arc::new(time.finish()),
        Arc::new(ingested.finish()),
        Arc::new(scope.finish()),
        Arc::new(entity.finish()),
        Arc::new(severity.finish()),
        Arc::new(status.finish()),
        Arc::new(summary.finish()),
        Arc::new(attributes.finish()),
        Arc::new(raw.finish()),
    ];
    Ok(RecordBatch::try_new(EVENTS.clone(), columns)?)
}

/// Incident versions as one record batch with the `incidents` schema.
pub fn incidents_batch(rows: &[IncidentVersion]) -> Result<RecordBatch> {
    incidents_batch_enriched(rows, &[])
}

/// Incident versions with their enrichment (`enrichment[i]` for `rows[i]`; missing
/// entries are null).
pub fn incidents_batch_enriched(
    rows: &[IncidentVersion],
    enrichment: &[Option<Arc<str>>],
) -> Result<RecordBatch> {
    let n = rows.len();
    // Sized exactly: enrichments are ~600 bytes each, and a builder grown from
    // nothing reallocated (and the kernel zeroed fresh pages for) each doubling.
    let enriched_bytes = enrichment.iter().flatten().map(|e| e.len()).sum();
    let mut enriched = StringBuilder::with_capacity(n, enriched_bytes);
    for i in 0..n {
        enriched.append_option(enrichment.get(i).and_then(|e| e.as_deref()));
    }
    let mut id = StringBuilder::with_capacity(n, n * 36);
    let mut version = UInt32Builder::with_capacity(n);
    let mut state = StringBuilder::with_capacity(n, n * 8);
    let mut title = StringBuilder::with_capacity(n, n * 64);
    let mut severity = StringBuilder::with_capacity(n, n * 8);
    let mut rule_id = StringBuilder::with_capacity(n, n * 16);
    let mut rule_version = UInt32Builder::with_capacity(n);
    let mut scope = StringBuilder::with_capacity(n, n * 8);
    let mut entity = StringBuilder::with_capacity(n, n * 12);
    let mut root = StringBuilder::with_capacity(n, n * 36);
    let mut opened = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut updated = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut resolved = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut count = UInt32Builder::with_capacity(n);
    let mut merged = StringBuilder::with_capacity(n, 0);
    for r in rows {
        id.append_value(&*r.incident_id);
        version.append_value(r.version);
        state.append_value(r.state.as_str());
        title.append_value(&*r.title);
        severity.append_value(r.severity.as_str());
        rule_id.append_value(&*r.rule_id);
        rule_version.append_value(r.rule_version);
        scope.append_value(&*r.scope);
        entity.append_value(&*r.entity);
        match r.root_cause_event_id {
            Some(root_id) => root.append_value(root_id.text().as_str()),
            None => root.append_null(),
        }
        opened.append_value(r.opened_at.as_micros());
        updated.append_value(r.updated_at.as_micros());
        resolved.append_option(r.resolved_at.map(|t| t.as_micros()));
        count.append_value(r.event_count);
        merged.append_option(r.merged_into.as_deref());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(version.finish()),
        Arc::new(state.finish()),
        Arc::new(title.finish()),
        Arc::new(severity.finish()),
        Arc::new(rule_id.finish()),
        Arc::new(rule_version.finish()),
        Arc::new(scope.finish()),
        Arc::new(entity.finish()),
        Arc::new(root.finish()),
        Arc::new(opened.finish()),
        Arc::new(updated.finish()),
        Arc::new(resolved.finish()),
        Arc::new(count.finish()),
        Arc::new(merged.finish()),
        Arc::new(enriched.finish()),
    ];
    Ok(RecordBatch::try_new(INCIDENTS.clone(), columns)?)
}

/// Edges as one record batch with the `incident_events` schema.
pub fn edges_batch(rows: &[IncidentEdge]) -> Result<RecordBatch> {
    let n = rows.len();
    let mut incident_id = StringBuilder::with_capacity(n, n * 36);
    let mut event_id = StringBuilder::with_capacity(n, n * 36);
    let mut role = StringBuilder::with_capacity(n, n * 6);
    let mut linked_by = StringBuilder::with_capacity(n, n * 16);
    let mut rule_version = UInt32Builder::with_capacity(n);
    let mut cause = StringBuilder::with_capacity(n, n * 36);
    let mut lag = Float64Builder::with_capacity(n);
    let mut join_key = StringBuilder::with_capacity(n, n * 24);
    let mut time = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    for r in rows {
        incident_id.append_value(&*r.incident_id);
        event_id.append_value(r.event_id.text().as_str());
        role.append_value(r.role.as_str());
        linked_by.append_value(&*r.linked_by);
        rule_version.append_value(r.rule_version);
        match r.cause_event_id {
            Some(c) => cause.append_value(c.text().as_str()),
            None => cause.append_null(),
        }
        lag.append_value(r.lag_seconds);
        join_key.append_value(&*r.join_key);
        time.append_value(r.time.as_micros());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(incident_id.finish()),
        Arc::new(event_id.finish()),
        Arc::new(role.finish()),
        Arc::new(linked_by.finish()),
        Arc::new(rule_version.finish()),
        Arc::new(cause.finish()),
        Arc::new(lag.finish()),
        Arc::new(join_key.finish()),
        Arc::new(time.finish()),
    ];
    Ok(RecordBatch::try_new(INCIDENT_EVENTS.clone(), columns)?)
}

fn col<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            Error::Internal(format!(
                "history batch has no column {name} of the expected type"
            ))
        })
}

fn text(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

fn id_at(a: &StringArray, i: usize) -> Result<Option<EventId>> {
    match text(a, i) {
        None => Ok(None),
        Some(t) => EventId::parse(t)
            .map(Some)
            .ok_or_else(|| Error::Internal(format!("{t:?} is not an event id"))),
    }
}

fn time_at(a: &TimestampMicrosecondArray, i: usize) -> Option<EventTime> {
    (!a.is_null(i)).then(|| EventTime::from_micros(a.value(i)))
}

/// Rows of the `incidents` table back as incident versions.
pub fn incidents_from_batch(batch: &RecordBatch) -> Result<Vec<IncidentVersion>> {
    let id = col::<StringArray>(batch, "incident_id")?;
    let version = col::<UInt32Array>(batch, "version")?;
    let state = col::<StringArray>(batch, "state")?;
    let title = col::<StringArray>(batch, "title")?;
    let severity = col::<StringArray>(batch, "severity")?;
    let rule_id = col::<StringArray>(batch, "rule_id")?;
    let rule_version = col::<UInt32Array>(batch, "rule_version")?;
    let scope = col::<StringArray>(batch, "scope")?;
    let entity = col::<StringArray>(batch, "entity")?;
    let root = col::<StringArray>(batch, "root_cause_event_id")?;
    let opened = col::<TimestampMicrosecondArray>(batch, "opened_at")?;
    let updated = col::<TimestampMicrosecondArray>(batch, "updated_at")?;
    let resolved = col::<TimestampMicrosecondArray>(batch, "resolved_at")?;
    let count = col::<UInt32Array>(batch, "event_count")?;
    let merged = col::<StringArray>(batch, "merged_into")?;
    (0..batch.num_rows())
        .map(|i| {
            Ok(IncidentVersion {
                incident_id: id.value(i).into(),
                version: version.value(i),
                state: match state.value(i) {
                    "open" => IncidentState::Open,
                    "updated" => IncidentState::Updated,
                    _ => IncidentState::Resolved,
                },
                title: title.value(i).into(),
                severity: Severity::parse(severity.value(i)).unwrap_or_default(),
                rule_id: rule_id.value(i).into(),
                rule_version: rule_version.value(i),
                scope: scope.value(i).into(),
                entity: entity.value(i).into(),
                root_cause_event_id: id_at(root, i)?,
                opened_at: time_at(opened, i).unwrap_or(EventTime::MIN),
                updated_at: time_at(updated, i).unwrap_or(EventTime::MIN),
                resolved_at: time_at(resolved, i),
                event_count: count.value(i),
                merged_into: text(merged, i).map(Into::into),
            })
        })
        .collect()
}

/// Rows of the `incident_events` table back as edges.
pub fn edges_from_batch(batch: &RecordBatch) -> Result<Vec<IncidentEdge>> {
    let incident = col::<StringArray>(batch, "incident_id")?;
    let event = col::<StringArray>(batch, "event_id")?;
    let role = col::<StringArray>(batch, "role")?;
    let linked_by = col::<StringArray>(batch, "linked_by")?;
    let rule_version = col::<UInt32Array>(batch, "rule_version")?;
    let cause = col::<StringArray>(batch, "cause_event_id")?;
    let lag = col::<Float64Array>(batch, "lag_seconds")?;
    let join_key = col::<StringArray>(batch, "join_key")?;
    let time = col::<TimestampMicrosecondArray>(batch, "time")?;
    (0..batch.num_rows())
        .map(|i| {
            Ok(IncidentEdge {
                incident_id: incident.value(i).into(),
                event_id: id_at(event, i)?
                    .ok_or_else(|| Error::Internal("edge without event id".into()))?,
                role: match role.value(i) {
                    "cause" => EdgeRole::Cause,
                    "effect" => EdgeRole::Effect,
                    _ => EdgeRole::Context,
                },
                linked_by: linked_by.value(i).into(),
                rule_version: rule_version.value(i),
                cause_event_id: id_at(cause, i)?,
                lag_seconds: lag.value(i),
                join_key: join_key.value(i).into(),
                time: time_at(time, i).unwrap_or(EventTime::MIN),
            })
        })
        .collect()
}
