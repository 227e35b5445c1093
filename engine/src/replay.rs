//! Deterministic replay and backtests: stored events run again through the
//! correlation operator, in the order they arrived, and the result compared with
//! the incidents stored.
//!
//! Arrival is replayed, not just event time: events are fed grouped by
//! `ingested_at` (one receiver request, one group), with processing time set to
//! it, so watermarks, idleness and lateness behave as they did live, and the same
//! events give the same incident ids and versions. After the last event, time runs
//! on until every source is idle, as a live engine does when traffic stops.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, TimestampMicrosecondArray};
use causeway_rules::{
    Catalog, CorrelatorConfig, EventId, IncidentVersion, Output, ProcessingTime, RulePack,
};

use crate::examples::{FinalIncident, final_incidents};
use crate::operator::Operator;
use crate::watermark::WatermarkConfig;
use crate::{Error, Result};

/// What replay needs besides the events.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub rules: RulePack,
    pub catalog: Catalog,
    pub correlator: CorrelatorConfig,
    pub watermark: WatermarkConfig,
}

/// Replays `events` batches (the `events` schema, in arrival order: by
/// `ingested_at`). Returns every incident version and edge, as live.
pub fn replay(events: &[RecordBatch], options: &ReplayOptions) -> Result<Output> {
    let mut op = Operator::new(
        &options.rules,
        &options.catalog,
        options.correlator.clone(),
        options.watermark.clone(),
    )?;
    let mut out = Output::default();
    let mut last = None;
    for batch in events {
        if let Some(t) = op.push_arrivals(batch, &mut out)? {
            last = Some(t);
        }
    }
    if let Some(t) = last {
        // Traffic stops: every source goes idle and the watermark catches up.
        let idle = t
            .plus(options.watermark.idle_timeout)
            .plus(std::time::Duration::from_millis(1));
        op.tick(idle, &mut out);
    }
    Ok(out)
}

/// An incident as the diff sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Compared {
    pub latest: IncidentVersion,
    pub members: BTreeSet<EventId>,
}

impl From<&FinalIncident> for Compared {
    fn from(f: &FinalIncident) -> Compared {
        Compared {
            latest: f.latest.clone(),
            members: f.members(),
        }
    }
}

/// What a replay changed against stored incidents.
#[derive(Debug, Default, Clone)]
pub struct IncidentDiff {
    /// In the replay only.
    pub added: Vec<Compared>,
    /// In the history only.
    pub removed: Vec<Compared>,
    /// In both, with the fields that differ.
    pub changed: Vec<(Compared, Compared, Vec<&'static str>)>,
    /// In both and identical.
    pub unchanged: usize,
}

impl IncidentDiff {
    /// Whether the replay gave exactly the stored incidents.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compares stored incidents with replayed ones, by incident id.
pub fn diff(stored: &[FinalIncident], replayed: &[FinalIncident]) -> IncidentDiff {
    let by_id = |v: &[FinalIncident]| -> BTreeMap<Arc<str>, Compared> {
        v.iter()
            .map(|f| (f.latest.incident_id.clone(), Compared::from(f)))
            .collect()
    };
    let mut old = by_id(stored);
    let new = by_id(replayed);
    let mut d = IncidentDiff::default();
    for (id, n) in new {
        match old.remove(&id) {
            None => d.added.push(n),
            Some(o) => {
                let fields = changed_fields(&o, &n);
                if fields.is_empty() {
                    d.unchanged += 1;
                } else {
                    d.changed.push((o, n, fields));
                }
            }
        }
    }
    d.removed = old.into_values().collect();
    d
}

fn changed_fields(a: &Compared, b: &Compared) -> Vec<&'static str> {
    let (x, y) = (&a.latest, &b.latest);
    let mut f = Vec::new();
    let checks: [(&'static str, bool); 12] = [
        ("version", x.version != y.version),
        ("state", x.state != y.state),
        ("title", x.title != y.title),
        ("severity", x.severity != y.severity),
        ("rule_id", x.rule_id != y.rule_id),
        ("rule_version", x.rule_version != y.rule_version),
        (
            "root_cause_event_id",
            x.root_cause_event_id != y.root_cause_event_id,
        ),
        ("opened_at", x.opened_at != y.opened_at),
        ("updated_at", x.updated_at != y.updated_at),
        ("resolved_at", x.resolved_at != y.resolved_at),
        ("event_count", x.event_count != y.event_count),
        ("members", a.members != b.members),
    ];
    for (name, differs) in checks {
        if differs {
            f.push(name);
        }
    }
    f
}

/// Stored history as an [`Output`]: every incident version and edge.
pub fn stored_output(incidents: &[RecordBatch], edges: &[RecordBatch]) -> Result<Output> {
    let mut out = Output::default();
    for b in incidents {
        out.incidents
            .extend(crate::schema::incidents_from_batch(b)?);
    }
    for b in edges {
        out.edges.extend(crate::schema::edges_from_batch(b)?);
    }
    Ok(out)
}

/// The `ingested_at` column of an events batch.
pub(crate) fn ingested_at(batch: &RecordBatch) -> Result<&TimestampMicrosecondArray> {
    batch
        .column_by_name("ingested_at")
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .ok_or_else(|| Error::Internal("events batch has no ingested_at".into()))
}

/// The processing time of row `i`.
pub(crate) fn arrival(column: &TimestampMicrosecondArray, i: usize) -> ProcessingTime {
    ProcessingTime::from_micros(if column.is_null(i) {
        0
    } else {
        column.value(i)
    })
}

/// Stored final incidents, merged ones folded in.
pub fn stored_final(
    incidents: &[RecordBatch],
    edges: &[RecordBatch],
) -> Result<Vec<FinalIncident>> {
    Ok(final_incidents(&stored_output(incidents, edges)?))
}
