//! The correlation operator: Arrow batches of events in, incident versions and
//! their evidence out.
//!
//! A batch is evaluated once (compiled predicates, join expressions, `rises`
//! values), then each row is read straight from the batch's columns into the pure
//! correlator, and the watermark is advanced from per-source clocks. The engine
//! driver runs one correlator per log partition over the same steps
//! ([`push_rows`]); [`Operator`] is the one-partition form used by `rules test`,
//! scenario tests, replay and benchmarks.

use std::time::Duration;

use arrow::array::{Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use causeway_rules::{
    Catalog, Correlator, CorrelatorConfig, EventId, EventKind, EventRow, EventTime, Output,
    ProcessingTime, PushOutcome, RulePack, Severity,
};

use crate::predicate::{CompiledRules, Evaluated};
use crate::watermark::{WatermarkConfig, WatermarkTracker};
use crate::{Error, Result};

/// Typed columns of an `events` batch.
#[derive(Debug)]
pub struct BatchView<'a> {
    id: &'a StringArray,
    source: &'a StringArray,
    source_event_id: &'a StringArray,
    kind: &'a StringArray,
    time: &'a TimestampMicrosecondArray,
    scope: &'a StringArray,
    entity: &'a StringArray,
    severity: &'a StringArray,
    status: &'a StringArray,
    summary: &'a StringArray,
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            Error::Internal(format!(
                "events batch has no column {name} of the expected type"
            ))
        })
}

impl<'a> BatchView<'a> {
    /// The columns of a batch with the `events` schema.
    pub fn new(batch: &'a RecordBatch) -> Result<BatchView<'a>> {
        Ok(BatchView {
            id: column(batch, "event_id")?,
            source: column(batch, "source")?,
            source_event_id: column(batch, "source_event_id")?,
            kind: column(batch, "kind")?,
            time: column(batch, "time")?,
            scope: column(batch, "scope")?,
            entity: column(batch, "entity")?,
            severity: column(batch, "severity")?,
            status: column(batch, "status")?,
            summary: column(batch, "summary")?,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.id.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    /// The source of row `i`.
    pub fn source(&self, i: usize) -> &'a str {
        self.source.value(i)
    }

    /// Event time of row `i`.
    pub fn time(&self, i: usize) -> EventTime {
        EventTime::from_micros(self.time.value(i))
    }

    /// Row `i` as the correlator reads it.
    pub fn row(
        &self,
        i: usize,
        evaluated: &'a Evaluated,
        allowed_lateness: Duration,
        tag: u64,
    ) -> EventRow<'a> {
        let id_text = self.id.value(i);
        let source = self.source.value(i);
        // Decoders only make canonical ids; anything else is keyed by its hash.
        let id = EventId::parse(id_text).unwrap_or_else(|| EventId::foreign_id(source, id_text));
        EventRow {
            id,
            source,
            source_event_id: self.source_event_id.value(i),
            kind: EventKind::parse(self.kind.value(i)).unwrap_or(EventKind::Audit),
            time: self.time(i),
            scope: self.scope.value(i),
            entity: self.entity.value(i),
            severity: Severity::parse(self.severity.value(i)).unwrap_or_default(),
            status: self.status.value(i),
            summary: self.summary.value(i),
            alertname: evaluated.alertname(i),
            matches: evaluated.matches.get(i).copied().unwrap_or_default(),
            allowed_lateness,
            values: evaluated,
            row: i,
            tag,
        }
    }
}

/// Pushes rows of an evaluated batch into a correlator, noting each source's clock;
/// `tags[i]` is row `i`'s log position (0 when not from a log). Returns each row's
/// outcome; rows for which `skip(i)` holds are not pushed (`None`).
#[allow(clippy::too_many_arguments)]
pub fn push_rows(
    correlator: &mut Correlator,
    clocks: &mut WatermarkTracker,
    timing: &WatermarkConfig,
    view: &BatchView<'_>,
    evaluated: &Evaluated,
    rows: impl Iterator<Item = (usize, u64)>,
    now: ProcessingTime,
    out: &mut Output,
    outcomes: &mut [Option<PushOutcome>],
) {
    // Each source's lateness and latest time in these rows: a batch holds a
    // handful of sources, so a short scan beats two map lookups per row, and the
    // clocks are told once per source (they keep the maximum; `now` is the same).
    // A re-send (an id already seen) is no sign of progress: it repeats an old
    // event time, and counting it as activity would keep a source that resends
    // (Alertmanager re-notifies every firing alert) holding the watermark at its
    // last new event for as long as anything fires.
    let mut sources: Vec<(&str, Duration, Option<EventTime>)> = Vec::new();
    for (i, tag) in rows {
        let source = view.source(i);
        let k = match sources.iter().position(|s| s.0 == source) {
            Some(k) => k,
            None => {
                let lateness = timing.timing(source).allowed_lateness;
                sources.push((source, lateness, None));
                sources.len() - 1
            }
        };
        let row = view.row(i, evaluated, sources[k].1, tag);
        let outcome = correlator.push(&row, out);
        if outcome != PushOutcome::Duplicate {
            let time = view.time(i);
            sources[k].2 = Some(sources[k].2.map_or(time, |t| t.max(time)));
        }
        if let Some(o) = outcomes.get_mut(i) {
            *o = Some(outcome);
        }
    }
    for (source, _, time) in sources {
        if let Some(time) = time {
            clocks.observe(source, time, now);
        }
    }
}

/// What one watermark step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    /// The watermark moved.
    pub moved: bool,
    /// The clocks allow more than this step released: step again.
    pub more: bool,
}

/// Moves a correlator's watermark toward what its clocks allow at `now`,
/// releasing at most about `max_release` buffered events (`usize::MAX`: all).
pub fn advance_from_clocks(
    correlator: &mut Correlator,
    clocks: &WatermarkTracker,
    timing: &WatermarkConfig,
    now: ProcessingTime,
    max_release: usize,
    out: &mut Output,
) -> Step {
    match clocks.watermark(timing, now) {
        Some(target) if correlator.watermark().is_none_or(|cur| target > cur) => {
            let w = correlator.release_bound(target, max_release);
            correlator.advance(w, out);
            Step {
                moved: true,
                more: w < target,
            }
        }
        _ => Step::default(),
    }
}

/// One correlator over batches: the operator without a log.
#[derive(Debug)]
pub struct Operator {
    compiled: CompiledRules,
    correlator: Correlator,
    timing: WatermarkConfig,
    clocks: WatermarkTracker,
}

impl Operator {
    /// Compiles the pack and starts an empty correlator.
    pub fn new(
        pack: &RulePack,
        catalog: &Catalog,
        config: CorrelatorConfig,
        timing: WatermarkConfig,
    ) -> Result<Operator> {
        Ok(Operator {
            compiled: CompiledRules::compile(pack)?,
            correlator: Correlator::new(pack.rules(), catalog, config),
            timing,
            clocks: WatermarkTracker::default(),
        })
    }

    /// The correlator (state sizes, snapshots).
    pub fn correlator(&self) -> &Correlator {
        &self.correlator
    }

    /// The correlator, to restore a snapshot into.
    pub fn correlator_mut(&mut self) -> &mut Correlator {
        &mut self.correlator
    }

    /// Evaluates a batch, pushes its rows and advances the watermark as the clocks
    /// allow at `now`. Returns each row's outcome.
    pub fn push_batch(
        &mut self,
        batch: &RecordBatch,
        now: ProcessingTime,
        out: &mut Output,
    ) -> Result<Vec<PushOutcome>> {
        let view = BatchView::new(batch)?;
        let evaluated = self.compiled.evaluate(batch)?;
        let mut outcomes = vec![None; view.len()];
        push_rows(
            &mut self.correlator,
            &mut self.clocks,
            &self.timing,
            &view,
            &evaluated,
            (0..view.len()).map(|i| (i, i as u64)),
            now,
            out,
            &mut outcomes,
        );
        self.advance_to_clocks(now, out);
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(PushOutcome::Duplicate))
            .collect())
    }

    /// Replays a batch in arrival order: rows grouped by `ingested_at` are pushed
    /// together with processing time set to it, the watermark advanced from the
    /// clocks before and after each group, as the live engine would have. Returns
    /// the last arrival time.
    pub fn push_arrivals(
        &mut self,
        batch: &RecordBatch,
        out: &mut Output,
    ) -> Result<Option<ProcessingTime>> {
        let view = BatchView::new(batch)?;
        let evaluated = self.compiled.evaluate(batch)?;
        let arrivals = crate::replay::ingested_at(batch)?;
        let mut outcomes = vec![None; view.len()];
        let mut start = 0;
        let mut last = None;
        while start < view.len() {
            let now = crate::replay::arrival(arrivals, start);
            let mut end = start + 1;
            while end < view.len() && crate::replay::arrival(arrivals, end) == now {
                end += 1;
            }
            // Time passed since the previous request: idle sources release the
            // watermark before these events are seen.
            self.advance_to_clocks(now, out);
            push_rows(
                &mut self.correlator,
                &mut self.clocks,
                &self.timing,
                &view,
                &evaluated,
                (start..end).map(|i| (i, i as u64)),
                now,
                out,
                &mut outcomes,
            );
            self.advance_to_clocks(now, out);
            last = Some(now);
            start = end;
        }
        Ok(last)
    }

    /// Lets processing time reach `now` with nothing arriving.
    pub fn tick(&mut self, now: ProcessingTime, out: &mut Output) {
        self.advance_to_clocks(now, out);
    }

    /// Moves the watermark all the way to what the clocks allow at `now` (one
    /// step: the operator's caller holds the whole output anyway).
    fn advance_to_clocks(&mut self, now: ProcessingTime, out: &mut Output) {
        advance_from_clocks(
            &mut self.correlator,
            &self.clocks,
            &self.timing,
            now,
            usize::MAX,
            out,
        );
    }

    /// Moves the watermark to `w` (never back).
    pub fn advance(&mut self, w: EventTime, out: &mut Output) {
        self.correlator.advance(w, out);
    }

    /// End of input: releases every buffered event and lets every deadline up to
    /// `until` fire (open incidents stay open if their deadlines lie beyond it).
    pub fn finish(&mut self, until: EventTime, out: &mut Output) {
        self.correlator.advance(until, out);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use causeway_rules::{Catalog, Event};

    use super::*;

    const SEC: i64 = 1_000_000;

    fn event(source: &str, kind: EventKind, sid: &str, status: &str, secs: i64) -> Event {
        Event {
            id: Event::derive_id(source, sid, status),
            source: source.into(),
            source_event_id: sid.into(),
            kind,
            time: EventTime::from_micros(secs * SEC),
            ingested_at: ProcessingTime::from_micros(0),
            scope: "cluster-a".into(),
            entity: "checkout".into(),
            severity: Severity::Warning,
            status: status.into(),
            summary: format!("{source} {sid}"),
            attributes: BTreeMap::new(),
            raw: "{}".into(),
        }
    }

    fn alert(sid: &str, secs: i64) -> Event {
        event("alertmanager", EventKind::Alert, sid, "firing", secs)
    }

    fn push(op: &mut Operator, events: &[Event], now_ms: i64) -> Vec<PushOutcome> {
        let batch = crate::schema::events_batch(events).expect("a valid batch");
        let mut out = Output::default();
        op.push_batch(&batch, ProcessingTime::from_micros(now_ms * 1000), &mut out)
            .expect("pushed")
    }

    #[test]
    fn a_resent_event_does_not_keep_its_source_holding_the_watermark() {
        let pack = RulePack::builtin().expect("the built-in pack");
        let mut op = Operator::new(
            &pack,
            &Catalog::default(),
            CorrelatorConfig::default(),
            WatermarkConfig::default(),
        )
        .expect("the operator");
        // GitHub (30 s out-of-orderness) speaks once; Alertmanager (5 s) keeps on.
        let deploy = event("github", EventKind::Deploy, "run-1", "success", 100);
        push(&mut op, &[deploy.clone(), alert("a", 100)], 0);
        assert_eq!(
            op.correlator().watermark(),
            Some(EventTime::from_micros(70 * SEC))
        );
        // The deploy again, 1.5 s later: a re-send, no progress of GitHub's.
        let outcomes = push(&mut op, &[deploy, alert("b", 101)], 1500);
        assert_eq!(outcomes[0], PushOutcome::Duplicate);
        // 2.5 s after GitHub last said something new it is idle (2 s timeout):
        // only Alertmanager holds the watermark. Counting the re-send as activity
        // would have kept it at 70 s.
        push(&mut op, &[alert("c", 102)], 2500);
        assert_eq!(
            op.correlator().watermark(),
            Some(EventTime::from_micros(97 * SEC))
        );
    }
}
