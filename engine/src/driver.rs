//! The engine driver: one owner of correlation state, fed records from the event
//! log, committing history and its checkpoint together.
//!
//! State is kept per log partition. Events are keyed by correlation scope, so every
//! join a rule can make lies inside one partition, and a partition's state (its
//! correlator, watermark clocks and next offset) can move between engines on its own.
//!
//! Where partition state lives is [`PartitionStateMode`]:
//! - `Local` (embedded log): `<data_dir>/engine/checkpoint.bin` holds, in one
//!   atomically replaced file, every partition's state and the history commit
//!   sequence. After a crash the engine resumes from it and re-reads the log from its
//!   offsets, so events acknowledged by a receiver are never lost, and since
//!   correlation is deterministic the rows it writes again are the same rows, with
//!   the same ids.
//! - `External` (Kafka consumer group): partitions are [`Engine::assign`]ed and
//!   [`Engine::revoke`]d by the group; their state is saved by the caller from
//!   [`Engine::partition_checkpoint`] (to a state topic) and the local file only
//!   records the history sequence. Records of partitions this engine does not own
//!   are skipped: their owner reads them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::BooleanArray;
use arrow::compute::filter_record_batch;
use causeway_rules::{
    Catalog, Correlator, CorrelatorConfig, Event, EventTime, IncidentEdge, IncidentVersion, Output,
    OutputSize, ProcessingTime, PushOutcome, RulePack, StateStats,
};
use serde::{Deserialize, Serialize};

use crate::history::{History, Sealed, Written};
use crate::operator::{BatchView, advance_from_clocks, push_rows};
use crate::predicate::CompiledRules;
use crate::store::{HistoryLocation, ObjectStoreSpec, sync_dir};
use crate::watermark::{WatermarkConfig, WatermarkTracker};
use crate::{Error, Result, metrics, schema};

/// Where a record sits in the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPosition {
    pub partition: u32,
    pub offset: u64,
}

/// Who keeps partition state across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartitionStateMode {
    /// The engine's own checkpoint file; every partition seen is owned.
    #[default]
    Local,
    /// The caller, partition by partition; only assigned partitions are owned.
    External,
}

/// How to build an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub data_dir: PathBuf,
    pub rules: RulePack,
    pub catalog: Catalog,
    pub correlator: CorrelatorConfig,
    pub watermark: WatermarkConfig,
    pub partition_state: PartitionStateMode,
    /// Where the history's Parquet files go: `<data_dir>/history` when `None`.
    pub history: Option<HistoryLocation>,
}

/// What processing produced: incident versions and their evidence (already in the
/// history), and the events that arrived too late to correlate (kept in
/// `late_events`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EngineOutput {
    pub incidents: Vec<IncidentVersion>,
    pub edges: Vec<IncidentEdge>,
    pub too_late: Vec<Event>,
    /// The enrichment of `incidents[i]`, as recorded (JSON), when an enricher is set.
    pub enrichment: Vec<Option<Arc<str>>>,
    /// Where each version was cut in `edges` (see `causeway_rules::Output`).
    pub edge_marks: Vec<usize>,
    /// The watermark may release more than this output: tick again now.
    pub more: bool,
}

/// Adds what a responder needs to an incident version before it is recorded and
/// emitted: owners, the change behind it, links, similar past incidents. Called on
/// the correlation path, so it must answer from memory (caches), never block.
pub trait Enricher: Send + Sync + std::fmt::Debug {
    /// The JSON enrichment of `incident`; `edges` are its evidence rows new in this
    /// output (earlier ones were given with earlier versions).
    fn enrich(&self, incident: &IncidentVersion, edges: &[&IncidentEdge]) -> Option<Arc<str>>;
}

impl EngineOutput {
    fn absorb(&mut self, out: Output, enrichment: Vec<Option<Arc<str>>>) {
        let offset = self.edges.len();
        self.incidents.extend(out.incidents);
        self.edges.extend(out.edges);
        self.edge_marks
            .extend(out.edge_marks.into_iter().map(|m| m + offset));
        self.enrichment.extend(enrichment);
    }

    /// The evidence new in each of `incidents`, in order.
    pub fn edges_by_version(&self) -> Vec<Vec<&IncidentEdge>> {
        causeway_rules::edges_per_version(&self.incidents, &self.edges, &self.edge_marks)
    }

    /// Appends another output.
    pub fn extend(&mut self, other: EngineOutput) {
        let offset = self.edges.len();
        self.incidents.extend(other.incidents);
        self.edges.extend(other.edges);
        self.edge_marks
            .extend(other.edge_marks.into_iter().map(|m| m + offset));
        self.too_late.extend(other.too_late);
        self.enrichment.extend(other.enrichment);
        self.more |= other.more;
    }
}

/// What the engine reports about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStatus {
    /// Next offset to read, per owned partition.
    pub next_offsets: BTreeMap<u32, u64>,
    /// The lowest watermark over owned partitions.
    pub watermark: Option<EventTime>,
    pub pending_events: usize,
    /// Whether uncommitted rows exist (or a commit is still being written).
    pub dirty: bool,
}

/// One partition's state as saved: what restoring it needs.
#[derive(Debug, Serialize, Deserialize)]
struct PartitionCheckpoint {
    version: u32,
    next_offset: u64,
    /// The offset of the oldest event still in the correlator's reorder buffer:
    /// where a fresh correlator (after a rule change) reads again from.
    replay_from: u64,
    clocks: WatermarkTracker,
    #[serde(with = "serde_bytes")]
    correlator: Vec<u8>,
}

/// The checkpoint file: binary (postcard), version and history sequence first so
/// readers of the history can take them alone.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    history_seq: u64,
    partitions: BTreeMap<u32, PartitionCheckpoint>,
    /// State the binary keeps beside correlation and commits with it (the runbook
    /// kernel's decisions), so a restart neither loses nor repeats them.
    #[serde(with = "serde_bytes")]
    sidecar: Vec<u8>,
}

/// 5: the correlator snapshot inside it moved to version 2 (compact pending events).
/// 6: byte fields and event ids written as bytes (snapshot version 3).
const CHECKPOINT_VERSION: u32 = 6;

/// Most buffered events one partition releases per [`Engine::tick`]. A step's
/// output (versions, evidence, enrichment, their Arrow rows) is a few hundred
/// bytes per event: this keeps it to tens of MiB.
pub const RELEASE_STEP: usize = 32_768;

/// Pending history rows (Arrow bytes) that make a commit due before its interval.
pub const COMMIT_BYTES: usize = 64 << 20;

#[derive(Debug)]
struct PartitionState {
    correlator: Correlator,
    clocks: WatermarkTracker,
    next_offset: u64,
    /// Events below this offset are already in the history (re-read after a rule
    /// change): correlated again, not appended again.
    history_from: u64,
    /// Eviction counters already added to the metrics.
    reported: StateStats,
}

/// The correlation engine of one process.
#[derive(Debug)]
pub struct Engine {
    data_dir: PathBuf,
    compiled: CompiledRules,
    rules: RulePack,
    catalog: Catalog,
    correlator_config: CorrelatorConfig,
    mode: PartitionStateMode,
    partitions: BTreeMap<u32, PartitionState>,
    watermark: WatermarkConfig,
    history: History,
    history_seq: u64,
    dirty: bool,
    sidecar: Vec<u8>,
    enricher: Option<Arc<dyn Enricher>>,
    /// The commit being written by the writer thread ([`Engine::start_commit`]).
    in_flight: Option<InFlightCommit>,
    /// Started by the first commit.
    writer: Option<CommitWriter>,
    /// What the last tick released: the next one's output is sized like it.
    last_tick: OutputSize,
}

fn checkpoint_path(data_dir: &Path) -> PathBuf {
    data_dir.join("engine").join("checkpoint.bin")
}

/// The file in a data dir naming the object store its history is in (absent for
/// a history under `<data_dir>/history`).
fn location_path(data_dir: &Path) -> PathBuf {
    data_dir.join("engine").join("history-location.json")
}

/// The object store a data dir's history is in, as the engine that wrote it
/// recorded; `None` for a history under `<data_dir>/history`.
pub fn stored_history_location(data_dir: &Path) -> Result<Option<ObjectStoreSpec>> {
    let path = location_path(data_dir);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Checkpoint {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path)(e)),
    }
}

/// Checks that `wanted` is where this data dir's history already is, and records
/// an object-store location before anything is committed there. A data dir's
/// checkpoint counts commits of one history: pointing it elsewhere would lose
/// that history from view (or remove its files as uncommitted), so it is refused.
fn settle_history_location(
    data_dir: &Path,
    wanted: Option<&HistoryLocation>,
    history_seq: u64,
) -> Result<HistoryLocation> {
    let local = data_dir.join("history");
    let stored = stored_history_location(data_dir)?;
    match (stored, wanted) {
        (None, None | Some(HistoryLocation::Dir(_))) => Ok(match wanted {
            Some(dir) => dir.clone(),
            None => HistoryLocation::Dir(local),
        }),
        (Some(spec), None | Some(HistoryLocation::Dir(_))) => Err(Error::Location {
            location: spec.url,
            reason: format!(
                "data dir {} keeps its history there; set history.url to it, or start \
                 with an empty data dir",
                data_dir.display()
            ),
        }),
        (Some(spec), Some(HistoryLocation::Object(o))) if spec.url != o.spec().url => {
            Err(Error::Location {
                location: o.spec().url.clone(),
                reason: format!(
                    "data dir {} keeps its history at {}; a data dir's history cannot move",
                    data_dir.display(),
                    spec.url
                ),
            })
        }
        (None, Some(HistoryLocation::Object(o))) if history_seq > 0 => Err(Error::Location {
            location: o.spec().url.clone(),
            reason: format!(
                "data dir {} already has a history under {}; start with an empty data dir \
                 to keep history in an object store",
                data_dir.display(),
                local.display()
            ),
        }),
        (_, Some(object @ HistoryLocation::Object(o))) => {
            let path = location_path(data_dir);
            let dir = path
                .parent()
                .map(Path::to_owned)
                .unwrap_or_else(|| data_dir.to_owned());
            fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
            let bytes =
                serde_json::to_vec_pretty(o.spec()).map_err(|e| Error::Internal(e.to_string()))?;
            let tmp = path.with_extension("json.tmp");
            {
                use std::io::Write;
                let mut f = fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
                f.write_all(&bytes).map_err(Error::io("write", &tmp))?;
                f.sync_all().map_err(Error::io("sync", &tmp))?;
            }
            fs::rename(&tmp, &path).map_err(Error::io("rename", &path))?;
            sync_dir(&dir)?;
            Ok(object.clone())
        }
    }
}

/// The last committed history sequence recorded under a data directory (0 if none).
pub(crate) fn committed_history_seq(data_dir: &Path) -> Result<u64> {
    let path = checkpoint_path(data_dir);
    match fs::read(&path) {
        Ok(bytes) => postcard::take_from_bytes::<(u32, u64)>(&bytes)
            .map(|((_, seq), _)| seq)
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
        let path = checkpoint_path(&options.data_dir);
        if options
            .data_dir
            .join("engine")
            .join("checkpoint.json")
            .exists()
        {
            return Err(Error::Checkpoint {
                path: options.data_dir.join("engine").join("checkpoint.json"),
                reason: "this data dir was written by an earlier release (JSON checkpoint); \
                         start with an empty data dir"
                    .into(),
            });
        }
        let checkpoint = match fs::read(&path) {
            Ok(bytes) => {
                let version = postcard::take_from_bytes::<u32>(&bytes)
                    .map(|(v, _)| v)
                    .map_err(|e| Error::Checkpoint {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if version != CHECKPOINT_VERSION {
                    return Err(Error::Checkpoint {
                        path,
                        reason: format!(
                            "version {version} is not {CHECKPOINT_VERSION}; this data dir was \
                             written by another release"
                        ),
                    });
                }
                Some(
                    postcard::from_bytes::<Checkpoint>(&bytes).map_err(|e| Error::Checkpoint {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?,
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("read", path)(e)),
        };
        let history_seq = checkpoint.as_ref().map_or(0, |cp| cp.history_seq);
        let sidecar = checkpoint
            .as_ref()
            .map(|cp| cp.sidecar.clone())
            .unwrap_or_default();
        // Opening the history removes files of a commit that did not finish, judged
        // against the sequence the checkpoint records.
        let location =
            settle_history_location(&options.data_dir, options.history.as_ref(), history_seq)?;
        let history = History::open_at(location, history_seq)?;
        let mut engine = Engine {
            data_dir: options.data_dir,
            compiled,
            rules: options.rules,
            catalog: options.catalog,
            correlator_config,
            mode: options.partition_state,
            partitions: BTreeMap::new(),
            watermark: options.watermark,
            history,
            history_seq,
            dirty: false,
            sidecar,
            enricher: None,
            in_flight: None,
            writer: None,
            last_tick: OutputSize::default(),
        };
        if let Some(cp) = checkpoint
            && engine.mode == PartitionStateMode::Local
        {
            for (partition, state) in cp.partitions {
                let restored = engine.restore_partition(partition, state)?;
                engine.partitions.insert(partition, restored);
            }
        }
        Ok(engine)
    }

    fn fresh_partition(&self) -> PartitionState {
        PartitionState {
            correlator: Correlator::new(
                self.rules.rules(),
                &self.catalog,
                self.correlator_config.clone(),
            ),
            clocks: WatermarkTracker::default(),
            next_offset: 0,
            history_from: 0,
            reported: StateStats::default(),
        }
    }

    fn restore_partition(&self, partition: u32, cp: PartitionCheckpoint) -> Result<PartitionState> {
        let mut state = self.fresh_partition();
        state.clocks = cp.clocks;
        match state.correlator.restore(&cp.correlator) {
            Ok(()) => {
                state.next_offset = cp.next_offset;
                state.history_from = cp.next_offset;
            }
            Err(causeway_rules::Error::RulesChanged { saved }) => {
                // New rules apply from here on: a fresh correlator reads again the
                // events the old one had not applied yet, so none is lost; incidents
                // opened under the old rules are not updated any more.
                tracing::warn!(
                    partition,
                    saved,
                    replay_from = cp.replay_from,
                    "rules changed since the checkpoint; correlation state starts afresh"
                );
                metrics::STATE_RESETS.inc();
                state.next_offset = cp.replay_from;
                state.history_from = cp.next_offset;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(state)
    }

    fn partition_checkpoint_value(&self, state: &PartitionState) -> Result<PartitionCheckpoint> {
        Ok(PartitionCheckpoint {
            version: CHECKPOINT_VERSION,
            next_offset: state.next_offset,
            replay_from: state
                .correlator
                .oldest_pending_tag()
                .unwrap_or(state.next_offset)
                .min(state.next_offset),
            clocks: state.clocks.clone(),
            correlator: state.correlator.snapshot()?,
        })
    }

    /// Takes ownership of a partition, from its saved state (`None`: from the start
    /// of the partition, with empty state).
    pub fn assign(&mut self, partition: u32, saved: Option<&[u8]>) -> Result<()> {
        let state = match saved {
            Some(bytes) => {
                let cp: PartitionCheckpoint =
                    postcard::from_bytes(bytes).map_err(|e| Error::Checkpoint {
                        path: PathBuf::from(format!("<partition {partition} state>")),
                        reason: e.to_string(),
                    })?;
                if cp.version != CHECKPOINT_VERSION {
                    return Err(Error::Checkpoint {
                        path: PathBuf::from(format!("<partition {partition} state>")),
                        reason: format!("version {} is not {CHECKPOINT_VERSION}", cp.version),
                    });
                }
                self.restore_partition(partition, cp)?
            }
            None => self.fresh_partition(),
        };
        self.partitions.insert(partition, state);
        Ok(())
    }

    /// Gives a partition up (its state should have been saved first).
    pub fn revoke(&mut self, partition: u32) {
        self.partitions.remove(&partition);
    }

    /// The partitions this engine holds state for.
    pub fn owned_partitions(&self) -> Vec<u32> {
        self.partitions.keys().copied().collect()
    }

    /// A partition's state, serialized for [`Engine::assign`]; `None` if not owned.
    pub fn partition_checkpoint(&self, partition: u32) -> Result<Option<Vec<u8>>> {
        let Some(state) = self.partitions.get(&partition) else {
            return Ok(None);
        };
        let cp = self.partition_checkpoint_value(state)?;
        postcard::to_stdvec(&cp)
            .map(Some)
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// The history this engine writes (for live SQL).
    pub fn history(&self) -> History {
        self.history.clone()
    }

    /// Next offset to read per owned partition.
    pub fn next_offsets(&self) -> BTreeMap<u32, u64> {
        self.partitions
            .iter()
            .map(|(p, s)| (*p, s.next_offset))
            .collect()
    }

    /// A status snapshot.
    pub fn status(&self) -> EngineStatus {
        EngineStatus {
            next_offsets: self.next_offsets(),
            watermark: self.watermark(),
            pending_events: self.pending_events(),
            dirty: self.dirty || self.in_flight.is_some(),
        }
    }

    /// The lowest watermark over owned partitions.
    fn watermark(&self) -> Option<EventTime> {
        self.partitions
            .values()
            .filter_map(|s| s.correlator.watermark())
            .min()
    }

    fn pending_events(&self) -> usize {
        self.partitions
            .values()
            .map(|s| s.correlator.pending_len())
            .sum()
    }

    /// Processes records read from the log, then advances the watermarks.
    /// The output carries incident versions and edges (already appended to the
    /// history) and the events that were too late (kept in `late_events`).
    pub fn process(
        &mut self,
        records: Vec<(LogPosition, Event)>,
        now: ProcessingTime,
    ) -> Result<EngineOutput> {
        if records.is_empty() {
            return self.tick(now);
        }
        let (positions, events): (Vec<LogPosition>, Vec<Event>) = records.into_iter().unzip();
        metrics::BATCH_EVENTS.observe(events.len() as f64);
        // One batch serves the predicates, the correlator's rows and the history
        // rows: the events the correlator keeps (or finds too late) are selected
        // from it by mask.
        let batch = schema::events_batch(&events)?;
        let view = BatchView::new(&batch)?;
        let evaluated = self.compiled.evaluate(&batch)?;
        let mut outcomes: Vec<Option<PushOutcome>> = vec![None; events.len()];
        let mut history_rows = vec![true; events.len()];
        let mut out = Output::default();
        // Rows by partition, in log order.
        let mut by_partition: BTreeMap<u32, Vec<(usize, u64)>> = BTreeMap::new();
        for (i, pos) in positions.iter().enumerate() {
            if !self.partitions.contains_key(&pos.partition)
                && self.mode == PartitionStateMode::Local
            {
                let fresh = self.fresh_partition();
                self.partitions.insert(pos.partition, fresh);
            }
            let Some(state) = self.partitions.get_mut(&pos.partition) else {
                // Not ours (revoked while the batch was being read): its owner reads it.
                continue;
            };
            if pos.offset < state.next_offset {
                // Already processed before the checkpoint we resumed from.
                continue;
            }
            state.next_offset = pos.offset + 1;
            history_rows[i] = pos.offset >= state.history_from;
            by_partition
                .entry(pos.partition)
                .or_default()
                .push((i, pos.offset));
        }
        for (partition, rows) in by_partition {
            let Some(state) = self.partitions.get_mut(&partition) else {
                continue;
            };
            push_rows(
                &mut state.correlator,
                &mut state.clocks,
                &self.watermark,
                &view,
                &evaluated,
                rows.into_iter(),
                now,
                &mut out,
                &mut outcomes,
            );
            self.dirty = true;
        }
        let mut accepted = Vec::with_capacity(events.len());
        let mut late = Vec::with_capacity(events.len());
        let mut too_late = Vec::new();
        let mut counts: BTreeMap<(&str, &'static str), u64> = BTreeMap::new();
        for (i, outcome) in outcomes.iter().enumerate() {
            let Some(outcome) = outcome else {
                accepted.push(false);
                late.push(false);
                continue;
            };
            let label = match outcome {
                PushOutcome::Buffered => "buffered",
                PushOutcome::AppliedLate => "applied_late",
                PushOutcome::Duplicate => "duplicate",
                PushOutcome::TooLate => "too_late",
            };
            *counts.entry((view.source(i), label)).or_default() += 1;
            accepted.push(
                history_rows[i]
                    && matches!(outcome, PushOutcome::Buffered | PushOutcome::AppliedLate),
            );
            let is_late = *outcome == PushOutcome::TooLate;
            late.push(is_late && history_rows[i]);
            if is_late {
                too_late.push(events[i].clone());
            }
        }
        for ((source, label), n) in counts {
            metrics::EVENTS
                .with_label_values(&[source, label])
                .inc_by(n);
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
        let mut result = EngineOutput {
            too_late,
            ..EngineOutput::default()
        };
        let enrichment = self.record(&out)?;
        result.absorb(out, enrichment);
        // `tick` records what it releases itself.
        result.extend(self.tick(now)?);
        Ok(result)
    }

    /// Advances each partition's watermark from its clocks (idleness included) and
    /// applies what it releases: at most [`RELEASE_STEP`] events per partition, so
    /// a watermark that jumps over a large buffer (an idle source timing out after
    /// a backfill) is released over several calls, each output handed on and
    /// recorded before the next instead of all of it held at once. `more` in the
    /// output says to call again without waiting.
    pub fn tick(&mut self, now: ProcessingTime) -> Result<EngineOutput> {
        let mut out = Output::sized_like(&self.last_tick);
        let mut totals = StateStats::default();
        let mut more = false;
        for (p, state) in self.partitions.iter_mut() {
            if tracing::enabled!(tracing::Level::TRACE) {
                let holder = state.clocks.holder(&self.watermark, now);
                tracing::trace!(partition = p, ?holder, lag = ?holder.map(|(_, w)| (now.as_micros() - w.as_micros()) as f64 / 1e6), "watermark holder");
            }
            let step = advance_from_clocks(
                &mut state.correlator,
                &state.clocks,
                &self.watermark,
                now,
                RELEASE_STEP,
                &mut out,
            );
            self.dirty |= step.moved;
            more |= step.more;
            let s = state.correlator.stats();
            metrics::EVICTIONS.with_label_values(&["expired"]).inc_by(
                s.evicted_expired
                    .saturating_sub(state.reported.evicted_expired),
            );
            metrics::EVICTIONS
                .with_label_values(&["cap"])
                .inc_by(s.evicted_cap.saturating_sub(state.reported.evicted_cap));
            metrics::FORCED.inc_by(s.forced.saturating_sub(state.reported.forced));
            state.reported = s;
            totals.pending += s.pending;
            totals.open_keys += s.open_keys;
            totals.causes += s.causes;
            totals.effects += s.effects;
            totals.remembered_ids += s.remembered_ids;
            totals.incidents += s.incidents;
        }
        if let Some(w) = self.watermark() {
            metrics::WATERMARK.set(w.as_micros() as f64 / 1e6);
        }
        metrics::PENDING_EVENTS.set(totals.pending as i64);
        metrics::OPEN_INCIDENTS.set(totals.incidents as i64);
        metrics::BUFFERED_CAUSES.set(totals.causes as i64);
        metrics::BUFFERED_EFFECTS.set(totals.effects as i64);
        metrics::OPEN_KEYS.set(totals.open_keys as i64);
        metrics::REMEMBERED_IDS.set(totals.remembered_ids as i64);
        self.last_tick = out.size();
        let enrichment = self.record(&out)?;
        let mut result = EngineOutput {
            more,
            ..EngineOutput::default()
        };
        result.absorb(out, enrichment);
        Ok(result)
    }

    fn record(&mut self, out: &Output) -> Result<Vec<Option<Arc<str>>>> {
        let mut enrichment = Vec::new();
        if !out.incidents.is_empty() {
            metrics::INCIDENT_VERSIONS.inc_by(out.incidents.len() as u64);
            if let Some(enricher) = &self.enricher {
                enrichment = out
                    .incidents
                    .iter()
                    .zip(out.edges_by_version())
                    .map(|(v, edges)| enricher.enrich(v, &edges))
                    .collect();
            }
            self.history.append(
                "incidents",
                schema::incidents_batch_enriched(&out.incidents, &enrichment)?,
            );
        }
        if !out.edges.is_empty() {
            self.history
                .append("incident_events", schema::edges_batch(&out.edges)?);
        }
        Ok(enrichment)
    }

    /// Applies history retention: drops every day of history older than
    /// `retention` before `now`. Returns the files removed.
    pub fn apply_retention(
        &self,
        now: ProcessingTime,
        retention: std::time::Duration,
    ) -> Result<usize> {
        let keep = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
        self.history
            .drop_days_before(now.as_micros().saturating_sub(keep))
    }

    /// Merges small history files: every table day with at least `min_files`
    /// committed files becomes one. Returns the files merged away.
    pub fn compact_history(&self, min_files: usize) -> Result<usize> {
        self.history.compact(min_files)
    }

    /// Sets the enricher every recorded incident version goes through.
    pub fn set_enricher(&mut self, enricher: Arc<dyn Enricher>) {
        self.enricher = Some(enricher);
    }

    /// The sidecar state restored from the checkpoint (empty if none).
    pub fn sidecar(&self) -> &[u8] {
        &self.sidecar
    }

    /// Replaces the sidecar state; the next commit saves it with the history rows
    /// recorded so far.
    pub fn set_sidecar(&mut self, bytes: Vec<u8>) {
        if bytes != self.sidecar {
            self.sidecar = bytes;
            self.dirty = true;
        }
    }

    /// Appends runbook decisions to the `actions` history table.
    pub fn record_actions(
        &mut self,
        decisions: &[causeway_rules::runbook::Decision],
    ) -> Result<()> {
        if decisions.is_empty() {
            return Ok(());
        }
        self.history
            .append("actions", schema::actions_batch(decisions)?);
        self.dirty = true;
        Ok(())
    }

    /// Whether there is anything to commit.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Whether to commit now: something is dirty and either `interval` has passed
    /// since the last commit or the pending history rows reached [`COMMIT_BYTES`]
    /// (a backlog or a large release must not pile up in memory for a whole
    /// interval). While a commit is being written only the second counts (rows
    /// it holds do not): the engine then waits for it rather than piling up more.
    pub fn commit_due(
        &self,
        since_last: std::time::Duration,
        interval: std::time::Duration,
    ) -> bool {
        let sealed = self.in_flight.as_ref().map_or(0, |c| c.bytes);
        let unsealed = self.history.pending_bytes().saturating_sub(sealed);
        let full = unsealed >= COMMIT_BYTES;
        self.dirty && (full || (self.in_flight.is_none() && since_last >= interval))
    }

    /// Commits pending history and the checkpoint, in that order, and waits for
    /// both to be durable.
    pub fn commit(&mut self) -> Result<()> {
        self.start_commit()?;
        self.finish_commit()
    }

    /// Starts a commit of everything pending and returns without waiting for it:
    /// its Parquet files and checkpoint are written on the writer thread
    /// while the engine goes on correlating (rows appended meanwhile belong to
    /// the next commit). A commit still in flight is waited for first, and its
    /// failure is what this returns (its rows stay pending, so the next commit
    /// retries them).
    pub fn start_commit(&mut self) -> Result<()> {
        self.finish_commit()?;
        if !self.dirty {
            return Ok(());
        }
        let started = Instant::now();
        let seq = self.history_seq + 1;
        let mut partitions = BTreeMap::new();
        if self.mode == PartitionStateMode::Local {
            for (p, state) in &self.partitions {
                partitions.insert(*p, self.partition_checkpoint_value(state)?);
            }
        }
        let sealed = self.history.seal();
        let bytes = sealed.bytes();
        let snapshot = started.elapsed();
        let job = CommitJob {
            history: self.history.clone(),
            sealed,
            checkpoint: Checkpoint {
                version: CHECKPOINT_VERSION,
                history_seq: seq,
                partitions,
                sidecar: self.sidecar.clone(),
            },
            path: checkpoint_path(&self.data_dir),
        };
        if self.writer.is_none() {
            self.writer = Some(CommitWriter::start()?);
        }
        if let Some(writer) = &self.writer {
            writer.submit(job)?;
        }
        tracing::debug!(seq, bytes, ?snapshot, "commit started");
        self.in_flight = Some(InFlightCommit {
            seq,
            started,
            bytes,
        });
        self.dirty = false;
        Ok(())
    }

    /// Waits for the commit in flight, if any. On failure the engine is dirty
    /// again and the rows stay pending for the next commit.
    pub fn finish_commit(&mut self) -> Result<()> {
        if self.in_flight.is_none() {
            return Ok(());
        }
        let outcome = match &self.writer {
            Some(writer) => writer.wait(),
            None => Err(CommitWriter::stopped()),
        };
        self.settle_commit(outcome)
    }

    /// Collects the commit in flight if it has finished, without waiting;
    /// `Ok(true)` when one finished.
    pub fn poll_commit(&mut self) -> Result<bool> {
        if self.in_flight.is_none() {
            return Ok(false);
        }
        let outcome = match &self.writer {
            Some(writer) => writer.try_wait(),
            None => Some(Err(CommitWriter::stopped())),
        };
        match outcome {
            Some(outcome) => self.settle_commit(outcome).map(|()| true),
            None => Ok(false),
        }
    }

    fn settle_commit(&mut self, outcome: Result<()>) -> Result<()> {
        let Some(commit) = self.in_flight.take() else {
            return Ok(());
        };
        match outcome {
            Ok(()) => {
                self.history_seq = commit.seq;
                let took = commit.started.elapsed();
                tracing::debug!(seq = commit.seq, ?took, "commit durable");
                metrics::COMMIT_SECONDS.observe(took.as_secs_f64());
                Ok(())
            }
            Err(e) => {
                self.dirty = true;
                Err(e)
            }
        }
    }

    /// Whether a commit is being written.
    pub fn commit_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }
}

impl Drop for Engine {
    /// A commit in flight is finished, not abandoned half-way (which would be
    /// safe, only wasteful); then the writer thread ends and is joined.
    fn drop(&mut self) {
        if let Err(error) = self.finish_commit() {
            tracing::error!(%error, "the last history commit failed as the engine closed");
        }
    }
}

/// A commit being written by the [`CommitWriter`].
#[derive(Debug)]
struct InFlightCommit {
    seq: u64,
    started: Instant,
    /// Pending bytes it seals (still counted by the history until published).
    bytes: usize,
}

/// The engine's commit writer: one long-lived thread taking one commit at a
/// time. Long-lived so its allocator's pages stay warm from commit to commit (a
/// thread per commit had the kernel fault in and zero fresh pages each time).
#[derive(Debug)]
struct CommitWriter {
    jobs: Option<std::sync::mpsc::Sender<CommitJob>>,
    done: std::sync::mpsc::Receiver<Result<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CommitWriter {
    fn start() -> Result<CommitWriter> {
        let (jobs, queued) = std::sync::mpsc::channel::<CommitJob>();
        let (finished, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("causeway-commit".into())
            .spawn(move || {
                for job in queued {
                    if finished.send(job.run()).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("could not start the commit writer: {e}")))?;
        Ok(CommitWriter {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }

    fn stopped() -> Error {
        Error::Internal("the commit writer stopped".into())
    }

    fn submit(&self, job: CommitJob) -> Result<()> {
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(CommitWriter::stopped)
    }

    fn wait(&self) -> Result<()> {
        self.done
            .recv()
            .unwrap_or_else(|_| Err(CommitWriter::stopped()))
    }

    fn try_wait(&self) -> Option<Result<()>> {
        match self.done.try_recv() {
            Ok(outcome) => Some(outcome),
            Err(std::sync::mpsc::TryRecvError::Empty) => None,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Some(Err(CommitWriter::stopped())),
        }
    }
}

impl Drop for CommitWriter {
    /// Closes the queue and joins the thread (it has nothing left to write: the
    /// engine waits for its commit first).
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What one commit writes: the sealed rows as Parquet, then the checkpoint
/// naming their sequence, then (both durable) the swap readers see.
struct CommitJob {
    history: History,
    sealed: Sealed,
    checkpoint: Checkpoint,
    path: PathBuf,
}

impl CommitJob {
    fn run(self) -> Result<()> {
        let written = if self.sealed.is_empty() {
            Written::default()
        } else {
            self.history
                .write_sealed(self.checkpoint.history_seq, self.sealed)?
        };
        write_checkpoint(&self.path, &self.checkpoint)?;
        self.history.publish(written);
        Ok(())
    }
}

/// Replaces the checkpoint file atomically: streamed to a temporary, synced,
/// renamed over the old one, and the directory synced.
fn write_checkpoint(path: &Path, cp: &Checkpoint) -> Result<()> {
    let dir = path
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."));
    fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
    let tmp = path.with_extension("bin.tmp");
    {
        use std::io::Write;
        // Streamed to the file: the partitions' snapshots are not copied again
        // into one buffer.
        let f = fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
        let mut w =
            postcard::to_io(cp, std::io::BufWriter::with_capacity(1 << 20, f)).map_err(|e| {
                Error::Checkpoint {
                    path: tmp.clone(),
                    reason: e.to_string(),
                }
            })?;
        w.flush().map_err(Error::io("write", &tmp))?;
        let f = w
            .into_inner()
            .map_err(|e| Error::io("write", &tmp)(e.into_error()))?;
        f.sync_all().map_err(Error::io("sync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(Error::io("rename", path))?;
    sync_dir(&dir)
}
