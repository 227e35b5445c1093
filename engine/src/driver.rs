//! The engine driver: one owner of correlation state, fed records from the event
//! log, committing history and its checkpoint together.
//!
//! Checkpoint semantics: `<data_dir>/engine/checkpoint.json` holds, in one atomically
//! replaced file, the next log offset per partition, the watermark clocks, the
//! correlator state and the history commit sequence. After a crash the engine
//! resumes from that checkpoint and re-reads the log from its offsets, so events
//! acknowledged by a receiver are never lost, and since correlation is
//! deterministic the rows it writes again are the same rows, with the same ids.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::array::BooleanArray;
use arrow::compute::filter_record_batch;
use causeway_rules::{
    Correlator, CorrelatorConfig, Event, EventTime, Output, ProcessingTime, PushOutcome, RulePack,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::history::{History, sync_dir};
use crate::predicate::CompiledRules;
use crate::watermark::{WatermarkConfig, WatermarkTracker};
use crate::{Error, Result, metrics, schema};

/// Where a record sits in the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPosition {
    pub partition: u32,
    pub offset: u64,
}

/// How to build an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub data_dir: PathBuf,
    pub rules: RulePack,
    pub correlator: CorrelatorConfig,
    pub watermark: WatermarkConfig,
}

/// What the engine reports about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStatus {
    /// Next offset to read, per partition.
    pub next_offsets: BTreeMap<u32, u64>,
    pub watermark: Option<EventTime>,
    pub pending_events: usize,
    /// Whether uncommitted rows exist.
    pub dirty: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint<'a> {
    version: u32,
    history_seq: u64,
    next_offsets: BTreeMap<u32, u64>,
    clocks: WatermarkTracker,
    #[serde(borrow)]
    correlator: &'a RawValue,
}

#[derive(Debug, Deserialize)]
struct CheckpointHeader {
    history_seq: u64,
}

/// The correlation engine of one process.
#[derive(Debug)]
pub struct Engine {
    data_dir: PathBuf,
    compiled: CompiledRules,
    correlator: Correlator,
    watermark: WatermarkConfig,
    clocks: WatermarkTracker,
    history: History,
    history_seq: u64,
    next_offsets: BTreeMap<u32, u64>,
    dirty: bool,
}

fn checkpoint_path(data_dir: &Path) -> PathBuf {
    data_dir.join("engine").join("checkpoint.json")
}

/// The last committed history sequence recorded under a data directory (0 if none).
pub(crate) fn committed_history_seq(data_dir: &Path) -> Result<u64> {
    let path = checkpoint_path(data_dir);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<CheckpointHeader>(&bytes)
            .map(|h| h.history_seq)
            .map_err(|e| Error::Checkpoint {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io("read", path)(e)),
    }
}

impl Engine {
    /// Opens the engine under `data_dir`, resuming from its checkpoint if present.
    pub fn open(options: EngineOptions) -> Result<Engine> {
        let compiled = CompiledRules::compile(&options.rules)?;
        let mut correlator_config = options.correlator.clone();
        correlator_config.max_lateness = correlator_config
            .max_lateness
            .max(options.watermark.max_lateness());
        let mut correlator = Correlator::new(options.rules.rules(), correlator_config);
        let path = checkpoint_path(&options.data_dir);
        let mut clocks = WatermarkTracker::default();
        let mut next_offsets = BTreeMap::new();
        let mut history_seq = 0;
        match fs::read(&path) {
            Ok(bytes) => {
                let cp: Checkpoint<'_> =
                    serde_json::from_slice(&bytes).map_err(|e| Error::Checkpoint {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                correlator.restore(cp.correlator.get().as_bytes())?;
                clocks = cp.clocks;
                next_offsets = cp.next_offsets;
                history_seq = cp.history_seq;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("read", path)(e)),
        }
        let history = History::open(&options.data_dir.join("history"), history_seq)?;
        Ok(Engine {
            data_dir: options.data_dir,
            compiled,
            correlator,
            watermark: options.watermark,
            clocks,
            history,
            history_seq,
            next_offsets,
            dirty: false,
        })
    }

    /// The history this engine writes (for live SQL).
    pub fn history(&self) -> History {
        self.history.clone()
    }

    /// Next offset to read per partition, from the checkpoint and what was processed.
    pub fn next_offsets(&self) -> &BTreeMap<u32, u64> {
        &self.next_offsets
    }

    /// A status snapshot.
    pub fn status(&self) -> EngineStatus {
        EngineStatus {
            next_offsets: self.next_offsets.clone(),
            watermark: self.correlator.watermark(),
            pending_events: self.correlator.pending_len(),
            dirty: self.dirty,
        }
    }

    /// Processes records read from the log, then advances the watermark.
    pub fn process(
        &mut self,
        records: Vec<(LogPosition, Event)>,
        now: ProcessingTime,
    ) -> Result<Output> {
        let mut out = Output::default();
        if records.is_empty() {
            return self.tick(now);
        }
        let (positions, events): (Vec<LogPosition>, Vec<Event>) = records.into_iter().unzip();
        // One batch serves both the predicates and the history rows: the events the
        // correlator keeps (or finds too late) are selected from it by mask.
        let batch = schema::events_batch(&events)?;
        let matches = self.compiled.evaluate(&batch)?;
        let mut accepted = Vec::with_capacity(events.len());
        let mut late = Vec::with_capacity(events.len());
        for ((pos, event), m) in positions.into_iter().zip(events).zip(matches) {
            let next = self.next_offsets.entry(pos.partition).or_insert(0);
            if pos.offset < *next {
                // Already processed before the checkpoint we resumed from.
                accepted.push(false);
                late.push(false);
                continue;
            }
            *next = pos.offset + 1;
            let timing = self.watermark.timing(&event.source);
            self.clocks.observe(&event.source, event.time, now);
            let source = event.source.clone();
            let outcome = self
                .correlator
                .push(event, m, timing.allowed_lateness, &mut out);
            let label = match outcome {
                PushOutcome::Buffered => "buffered",
                PushOutcome::AppliedLate => "applied_late",
                PushOutcome::Duplicate => "duplicate",
                PushOutcome::TooLate => "too_late",
            };
            metrics::EVENTS.with_label_values(&[&source, label]).inc();
            accepted.push(matches!(
                outcome,
                PushOutcome::Buffered | PushOutcome::AppliedLate
            ));
            late.push(outcome == PushOutcome::TooLate);
            self.dirty = true;
        }
        let accepted = BooleanArray::from(accepted);
        if accepted.true_count() > 0 {
            self.history
                .append("events", filter_record_batch(&batch, &accepted)?);
        }
        let late = BooleanArray::from(late);
        if late.true_count() > 0 {
            tracing::warn!(
                count = late.true_count(),
                "events arrived too late to correlate"
            );
            self.history
                .append("late_events", filter_record_batch(&batch, &late)?);
        }
        out.too_late.clear();
        self.record(&out)?;
        // `tick` records what it releases itself.
        out.extend(self.tick(now)?);
        Ok(out)
    }

    /// Advances the watermark from the clocks (idleness included) and applies what
    /// it releases.
    pub fn tick(&mut self, now: ProcessingTime) -> Result<Output> {
        let mut out = Output::default();
        if let Some(w) = self.clocks.watermark(&self.watermark, now)
            && self.correlator.watermark().is_none_or(|cur| w > cur)
        {
            self.correlator.advance(w, &mut out);
            self.dirty = true;
            metrics::WATERMARK.set(w.as_micros() / 1_000_000);
        }
        metrics::PENDING_EVENTS.set(self.correlator.pending_len() as i64);
        metrics::OPEN_INCIDENTS.set(self.correlator.incidents_len() as i64);
        metrics::BUFFERED_CAUSES.set(self.correlator.buffered_causes_len() as i64);
        self.record(&out)?;
        Ok(out)
    }

    fn record(&mut self, out: &Output) -> Result<()> {
        if !out.incidents.is_empty() {
            metrics::INCIDENT_VERSIONS.inc_by(out.incidents.len() as u64);
            self.history
                .append("incidents", schema::incidents_batch(&out.incidents)?);
        }
        if !out.edges.is_empty() {
            self.history
                .append("incident_events", schema::edges_batch(&out.edges)?);
        }
        Ok(())
    }

    /// Whether there is anything to commit.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Commits pending history and the checkpoint, in that order.
    pub fn commit(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let started = Instant::now();
        let seq = self.history_seq + 1;
        let written = if self.history.has_pending() {
            self.history.write_pending(seq)?
        } else {
            Vec::new()
        };
        let state = self.correlator.snapshot()?;
        let state = String::from_utf8(state).map_err(|e| Error::Internal(e.to_string()))?;
        let raw = RawValue::from_string(state).map_err(|e| Error::Internal(e.to_string()))?;
        let cp = Checkpoint {
            version: 1,
            history_seq: seq,
            next_offsets: self.next_offsets.clone(),
            clocks: self.clocks.clone(),
            correlator: &raw,
        };
        let bytes = serde_json::to_vec(&cp).map_err(|e| Error::Internal(e.to_string()))?;
        let path = checkpoint_path(&self.data_dir);
        let dir = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| self.data_dir.clone());
        fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
            f.write_all(&bytes).map_err(Error::io("write", &tmp))?;
            f.sync_all().map_err(Error::io("sync", &tmp))?;
        }
        fs::rename(&tmp, &path).map_err(Error::io("rename", &path))?;
        sync_dir(&dir)?;
        self.history.publish(written);
        self.history_seq = seq;
        self.dirty = false;
        metrics::COMMIT_SECONDS.observe(started.elapsed().as_secs_f64());
        Ok(())
    }
}
