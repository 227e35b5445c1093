//! The engine as a member of the consumer group on `causeway.events`.
//!
//! One blocking thread owns the consumer. The engine, the output sink and the state
//! store sit behind one mutex shared with the rebalance callbacks, which run on that
//! same thread inside `poll` (so the lock is never contended, only shared).
//!
//! Commit order, every `commit_interval`, on revoke and at shutdown:
//! 1. wait for every queued incident version / late event to be acknowledged;
//! 2. write the history (Parquet) and the local checkpoint;
//! 3. save each partition's state, with its next offset, to the state topic
//!    (in the loop, only every so often once the states are large:
//!    `Core::states_due`; a crash reads again from the last saved state);
//! 4. commit the group offsets once those saves are acknowledged.
//!
//! In the running loop the engine waits for neither step 2 nor step 3. The
//! states are taken at step 1 with the history rows up to that point; the commit
//! writer thread writes those rows while correlation goes on (a Parquet commit
//! took 50–250 ms of the engine thread's every second at 10 k events/s), and the
//! states are queued when a later turn of the loop finds them durable. Nor does
//! it wait for the broker to acknowledge a state: a partition's state grows with
//! its buffered events (megabytes while a watermark holds tens of seconds of
//! them). The offsets are committed when a later turn finds the saves
//! acknowledged; a failed write or save stops the engine as before. Revokes and
//! shutdown wait for all of it.
//!
//! A crash anywhere in between replays from the last saved state and emits the same
//! incident ids and versions again (at least once; consumers de-duplicate on
//! `incident_id` + `version`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use causeway_connectors::kafka::{
    GroupConsumer, KafkaSettings, KafkaSink, PartitionOwner, StateStore,
};
use causeway_engine::EngineOutput;
use causeway_engine::{Engine, EngineStatus};
use causeway_rules::{IncidentEdge, IncidentVersion, ProcessingTime};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the loop and the rebalance callbacks share.
struct Core {
    engine: Engine,
    sink: KafkaSink,
    state: StateStore,
    incidents_topic: String,
    late_topic: String,
    actions_topic: String,
    actions: crate::actions::Actions,
    enricher: crate::enrich::IncidentEnricher,
    own_events: tokio::sync::mpsc::UnboundedSender<Vec<causeway_rules::Event>>,
    status: watch::Sender<EngineStatus>,
    /// A hash of the state last saved per partition: unchanged state is not
    /// written again.
    saved: HashMap<u32, u64>,
    /// The checkpoint whose history is being written (step 2 in flight).
    writing: Option<WrittenCheckpoint>,
    /// Offsets whose states are queued but not yet acknowledged (step 3 in
    /// flight); committed once they are.
    unconfirmed: Option<BTreeMap<u32, u64>>,
    /// When the states were last taken, and how long taking them took.
    states_taken: Instant,
    states_cost: Duration,
}

/// The engine thread's time that taking the states may use: they are taken at
/// a checkpoint only once `STATE_COST_SHARE` times their last cost has passed.
const STATE_COST_SHARE: u32 = 100;

/// The longest time between two saves of the states, whatever they cost (Kafka
/// Streams' default commit interval): what a crash may have to read again.
const STATE_INTERVAL_MAX: Duration = Duration::from_secs(30);

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").finish_non_exhaustive()
    }
}

/// One incident version as published on `causeway.incidents`. Written as a
/// struct, not built as a `serde_json::Value` (whose map and strings cost more
/// than the rest of the message did at thousands of versions a second); the
/// fields are in alphabetical order, the order a `Value` writes them in.
#[derive(Debug, Serialize)]
pub(crate) struct IncidentMessage<'a> {
    /// The enricher's JSON text, written as it is (`null` without one).
    enrichment: Option<&'a RawValue>,
    entity: &'a str,
    event_count: u32,
    evidence: Vec<EvidenceMessage<'a>>,
    incident_id: &'a str,
    merged_into: Option<&'a str>,
    opened_at: String,
    resolved_at: Option<String>,
    root_cause_event_id: Option<String>,
    rule_id: &'a str,
    rule_version: u32,
    scope: &'a str,
    severity: &'static str,
    state: &'static str,
    title: &'a str,
    updated_at: String,
    version: u32,
}

/// One edge of an [`IncidentMessage`]'s evidence, fields in alphabetical order.
#[derive(Debug, Serialize)]
struct EvidenceMessage<'a> {
    cause_event_id: Option<String>,
    event_id: String,
    join_key: &'a str,
    lag_seconds: f64,
    linked_by: &'a str,
    role: &'static str,
    rule_version: u32,
    time: String,
}

/// The message of one incident version with the evidence it added and its
/// enrichment (JSON text; text that is not JSON is left out as `null`).
pub(crate) fn incident_message<'a>(
    v: &'a IncidentVersion,
    evidence: &[&'a IncidentEdge],
    enrichment: Option<&'a str>,
) -> IncidentMessage<'a> {
    IncidentMessage {
        enrichment: enrichment.and_then(|e| serde_json::from_str::<&RawValue>(e).ok()),
        entity: &v.entity,
        event_count: v.event_count,
        evidence: evidence
            .iter()
            .map(|e| EvidenceMessage {
                cause_event_id: e.cause_event_id.map(|id| id.to_string()),
                event_id: e.event_id.to_string(),
                join_key: &e.join_key,
                lag_seconds: e.lag_seconds,
                linked_by: &e.linked_by,
                role: e.role.as_str(),
                rule_version: e.rule_version,
                time: e.time.to_rfc3339(),
            })
            .collect(),
        incident_id: &v.incident_id,
        merged_into: v.merged_into.as_deref(),
        opened_at: v.opened_at.to_rfc3339(),
        resolved_at: v.resolved_at.map(|t| t.to_rfc3339()),
        root_cause_event_id: v.root_cause_event_id.map(|id| id.to_string()),
        rule_id: &v.rule_id,
        rule_version: v.rule_version,
        scope: &v.scope,
        severity: v.severity.as_str(),
        state: v.state.as_str(),
        title: &v.title,
        updated_at: v.updated_at.to_rfc3339(),
        version: v.version,
    }
}

impl Core {
    /// Queues the output's incident versions and late events.
    fn emit(&mut self, out: &EngineOutput) -> anyhow::Result<()> {
        // Each version carries the evidence it added, not that of later versions
        // cut in the same output: a re-emitted version must equal the original.
        for (i, (v, edges)) in out.incidents.iter().zip(out.edges_by_version()).enumerate() {
            let enrichment = out.enrichment.get(i).and_then(|e| e.as_deref());
            let body = serde_json::to_vec(&incident_message(v, &edges, enrichment))?;
            self.sink
                .send("incidents", &self.incidents_topic, &v.incident_id, &body)?;
        }
        if out.too_late.is_empty() {
            return Ok(());
        }
        let watermark = self.engine.status().watermark.map(|w| w.to_rfc3339());
        for event in &out.too_late {
            let body = json!({
                "reason": "too_late",
                "detail": "event time is behind the watermark by more than the source's allowed lateness",
                "watermark": watermark,
                "event": serde_json::from_str::<Value>(&event.to_cloudevent_json())?,
            });
            self.sink.send(
                "late",
                &self.late_topic,
                &event.source,
                &serde_json::to_vec(&body)?,
            )?;
        }
        Ok(())
    }

    /// Decides on the output's incidents and publishes the decisions on
    /// `causeway.actions`, keyed by action id.
    fn emit_actions(&mut self, out: &EngineOutput, now: ProcessingTime) -> anyhow::Result<()> {
        self.actions.on_output(out, now);
        let (decisions, own) = self.actions.flush(&mut self.engine)?;
        for d in &decisions {
            let body = serde_json::to_vec(&crate::actions::decision_json(d))?;
            self.sink
                .send("actions", &self.actions_topic, &d.action_id, &body)?;
        }
        if !own.is_empty() {
            let _ = self.own_events.send(own);
        }
        Ok(())
    }

    /// Step 1 and the start of step 2 for `partitions`: waits for the queued
    /// output to be acknowledged, takes each partition's state at this point
    /// (unless `with_states` is false), and hands the history rows up to it to
    /// the commit writer. The states wait in [`Core::writing`] until that
    /// history is durable.
    fn begin_checkpoint(&mut self, partitions: &[u32], with_states: bool) -> anyhow::Result<()> {
        // A checkpoint still being written goes first: states land in order.
        self.queue_written(true)?;
        let t0 = Instant::now();
        self.sink.flush().context("emitting incidents")?;
        let t1 = Instant::now();
        let mut states = Vec::new();
        let mut offsets = BTreeMap::new();
        let next = self.engine.next_offsets();
        for p in partitions.iter().filter(|_| with_states) {
            if let Some(bytes) = self.engine.partition_checkpoint(*p)? {
                states.push((*p, bytes));
            }
            if let Some(o) = next.get(p) {
                offsets.insert(*p, *o);
            }
        }
        let t2 = Instant::now();
        if with_states {
            self.states_taken = t2;
            self.states_cost = t2 - t1;
        }
        self.engine.start_commit().context("committing history")?;
        tracing::trace!(
            flush = ?(t1 - t0),
            state = ?(t2 - t1),
            history_start = ?t2.elapsed(),
            state_bytes = states.iter().map(|(_, b)| b.len()).sum::<usize>(),
            "checkpoint"
        );
        self.writing = Some(WrittenCheckpoint { states, offsets });
        Ok(())
    }

    /// Whether a checkpoint in the loop takes the states: every
    /// `commit_interval` while they are cheap; as they grow (a reorder buffer
    /// holding tens of seconds of a busy stream is tens of megabytes, and the
    /// engine correlates nothing while they are encoded) no more than a
    /// hundredth of the engine's time, and at least every
    /// [`STATE_INTERVAL_MAX`]. History is committed at every checkpoint anyway.
    fn states_due(&self, commit_interval: Duration) -> bool {
        let interval = (self.states_cost * STATE_COST_SHARE)
            .clamp(commit_interval, STATE_INTERVAL_MAX.max(commit_interval));
        self.states_taken.elapsed() >= interval
    }

    /// Step 3 once the history is durable (waiting for it with `wait`): queues
    /// the states of the checkpoint being written (unchanged ones are not written
    /// again); its offsets then wait in [`Core::unconfirmed`] for the acks.
    fn queue_written(&mut self, wait: bool) -> anyhow::Result<()> {
        if self.writing.is_none() {
            return Ok(());
        }
        if wait {
            self.engine.finish_commit().context("committing history")?;
        } else {
            self.engine.poll_commit().context("committing history")?;
            if self.engine.commit_in_flight() {
                return Ok(());
            }
        }
        let Some(written) = self.writing.take() else {
            return Ok(());
        };
        for (p, bytes) in &written.states {
            let digest = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                h.finish()
            };
            if self.saved.get(p) != Some(&digest) {
                self.state
                    .queue(*p, bytes)
                    .with_context(|| format!("saving partition {p} state"))?;
                self.saved.insert(*p, digest);
            }
        }
        // A checkpoint without states has no offsets to commit.
        if !written.offsets.is_empty() {
            self.unconfirmed
                .get_or_insert_with(BTreeMap::new)
                .extend(written.offsets);
        }
        Ok(())
    }

    /// Step 4's precondition: the offsets whose states are all acknowledged
    /// (waiting for the acks with `wait`), for partitions still owned.
    fn confirmed_offsets(&mut self, wait: bool) -> anyhow::Result<Option<BTreeMap<u32, u64>>> {
        self.queue_written(wait)?;
        if self.unconfirmed.is_none()
            || !self.state.settle(wait).context("saving partition state")?
        {
            return Ok(None);
        }
        let owned = self.engine.owned_partitions();
        Ok(self
            .unconfirmed
            .take()
            .map(|o| o.into_iter().filter(|(p, _)| owned.contains(p)).collect()))
    }

    /// Steps 1–3 for `partitions`, waited for; returns their offsets (others
    /// acknowledged meanwhile stay for the loop to commit).
    fn checkpoint_now(&mut self, partitions: &[u32]) -> anyhow::Result<BTreeMap<u32, u64>> {
        self.begin_checkpoint(partitions, true)?;
        self.queue_written(true)?;
        self.state.settle(true).context("saving partition state")?;
        let mut offsets = BTreeMap::new();
        if let Some(unconfirmed) = self.unconfirmed.as_mut() {
            for p in partitions {
                if let Some(o) = unconfirmed.remove(p) {
                    offsets.insert(*p, o);
                }
            }
        }
        self.status.send_replace(self.engine.status());
        Ok(offsets)
    }
}

/// A checkpoint whose history rows the commit writer is writing: the states and
/// offsets taken with them, saved once those rows are durable.
struct WrittenCheckpoint {
    states: Vec<(u32, Vec<u8>)>,
    offsets: BTreeMap<u32, u64>,
}

#[derive(Debug, Clone)]
struct Owner(Arc<Mutex<Core>>);

impl Owner {
    fn lock(&self) -> causeway_connectors::Result<MutexGuard<'_, Core>> {
        self.0
            .lock()
            .map_err(|_| causeway_connectors::Error::Kafka {
                operation: "rebalance",
                reason: "engine state poisoned by an earlier panic".into(),
            })
    }
}

fn owner_error(operation: &'static str, e: anyhow::Error) -> causeway_connectors::Error {
    causeway_connectors::Error::Kafka {
        operation,
        reason: format!("{e:#}"),
    }
}

impl PartitionOwner for Owner {
    fn assigned(&self, partitions: &[u32]) -> causeway_connectors::Result<BTreeMap<u32, u64>> {
        let mut core = self.lock()?;
        let mut starts = BTreeMap::new();
        for p in partitions {
            let saved = core.state.load(*p)?;
            let restored = saved.is_some();
            core.engine
                .assign(*p, saved.as_deref())
                .map_err(|e| owner_error("restore partition", e.into()))?;
            if restored && let Some(o) = core.engine.next_offsets().get(p) {
                starts.insert(*p, *o);
            }
            tracing::info!(partition = p, restored, "partition restored");
        }
        core.status.send_replace(core.engine.status());
        Ok(starts)
    }

    fn revoked(&self, partitions: &[u32]) -> causeway_connectors::Result<BTreeMap<u32, u64>> {
        let mut core = self.lock()?;
        let held = core.engine.owned_partitions();
        let owned: Vec<u32> = partitions
            .iter()
            .copied()
            .filter(|p| held.contains(p))
            .collect();
        let offsets = core
            .checkpoint_now(&owned)
            .map_err(|e| owner_error("save revoked partitions", e))?;
        for p in &owned {
            core.engine.revoke(*p);
            core.saved.remove(p);
        }
        core.status.send_replace(core.engine.status());
        Ok(offsets)
    }
}

/// Everything the loop needs.
#[derive(Debug)]
pub(crate) struct KafkaEngine {
    core: Arc<Mutex<Core>>,
    consumer: GroupConsumer,
}

impl KafkaEngine {
    /// Joins the group (partitions arrive at the first polls).
    pub(crate) fn new(
        settings: &KafkaSettings,
        engine: Engine,
        status: watch::Sender<EngineStatus>,
        actions: crate::actions::Actions,
        enricher: crate::enrich::IncidentEnricher,
        own_events: tokio::sync::mpsc::UnboundedSender<Vec<causeway_rules::Event>>,
    ) -> anyhow::Result<KafkaEngine> {
        let core = Arc::new(Mutex::new(Core {
            engine,
            sink: KafkaSink::new(settings)?,
            state: StateStore::new(settings)?,
            incidents_topic: settings.topics.incidents.clone(),
            late_topic: settings.topics.late.clone(),
            actions_topic: settings.topics.actions.clone(),
            actions,
            enricher,
            own_events,
            status,
            saved: HashMap::new(),
            writing: None,
            unconfirmed: None,
            states_taken: Instant::now(),
            states_cost: Duration::ZERO,
        }));
        let consumer = GroupConsumer::subscribe(settings, Arc::new(Owner(core.clone())))?;
        Ok(KafkaEngine { core, consumer })
    }

    fn lock(&self) -> anyhow::Result<MutexGuard<'_, Core>> {
        self.core
            .lock()
            .map_err(|_| anyhow::anyhow!("engine state poisoned by an earlier panic"))
    }

    /// Runs until cancelled; then gives up every partition with a final commit.
    pub(crate) fn run(
        self,
        commit_interval: Duration,
        retention: Option<Duration>,
        cancel: CancellationToken,
        healthy: Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
        let mut last_commit = Instant::now();
        let mut last_maintenance = Instant::now();
        let mut clock = causeway_engine::LogClock::default();
        let mut more = false;
        while !cancel.is_cancelled() {
            if last_maintenance.elapsed() >= crate::app::MAINTENANCE_EVERY {
                crate::app::maintain_history(&self.lock()?.engine, retention);
                last_maintenance = Instant::now();
            }
            let records = self
                .consumer
                .poll(crate::app::POLL_MAX, crate::app::poll_wait(more))
                .context("reading causeway.events")?;
            let now = ProcessingTime::now();
            let records = crate::app::positioned(records);
            if tracing::enabled!(tracing::Level::TRACE) {
                let oldest = records.iter().map(|(_, e)| e.ingested_at).min();
                tracing::trace!(
                    records = records.len(),
                    behind_seconds = oldest.map(|o| (now.as_micros() - o.as_micros()) as f64 / 1e6),
                    "read"
                );
            }
            let behind = records.len() >= crate::app::POLL_MAX;
            let log_now = clock.now(records.iter().map(|(_, e)| e.ingested_at), behind, now);
            let mut core = self.lock()?;
            core.enricher.observe(records.iter().map(|(_, e)| e));
            let out = core
                .engine
                .process(records, log_now)
                .context("correlating events")?;
            more = out.more;
            core.emit(&out)?;
            core.emit_actions(&out, now)?;
            if core
                .engine
                .commit_due(last_commit.elapsed(), commit_interval)
            {
                let owned = core.engine.owned_partitions();
                let with_states = core.states_due(commit_interval);
                // A failure here stops the engine: the offsets behind unacknowledged
                // output must not be committed, and a restart replays from the last
                // saved state.
                core.begin_checkpoint(&owned, with_states)?;
                last_commit = Instant::now();
            }
            let commit = core.confirmed_offsets(false)?;
            core.status.send_replace(core.engine.status());
            drop(core);
            if let Some(offsets) = commit {
                match self.consumer.commit(&offsets) {
                    Ok(()) => healthy.store(true, Ordering::Relaxed),
                    Err(error) => {
                        // The saved state holds the offsets; this is for lag
                        // monitoring and a restart without state.
                        healthy.store(false, Ordering::Relaxed);
                        tracing::warn!(%error, "group offset commit failed");
                    }
                }
            }
        }
        // Leaving the group revokes every partition: the owner commits them.
        let KafkaEngine { core, consumer } = self;
        consumer.close().context("leaving the consumer group")?;
        let mut core = core
            .lock()
            .map_err(|_| anyhow::anyhow!("engine state poisoned by an earlier panic"))?;
        core.sink.close().context("flushing output streams")?;
        core.engine.commit().context("final history commit")?;
        core.status.send_replace(core.engine.status());
        tracing::info!("engine left the group after a final commit");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_rules::{EdgeRole, EventId, EventTime, IncidentState, Severity};

    fn version() -> IncidentVersion {
        IncidentVersion {
            incident_id: "inc_1".into(),
            version: 2,
            state: IncidentState::Updated,
            title: "checkout: \"errors\" after deploy".into(),
            severity: Severity::Critical,
            rule_id: "deploy-regression".into(),
            rule_version: 3,
            scope: "prod".into(),
            entity: "checkout".into(),
            root_cause_event_id: Some(EventId::foreign_id("github", "d1")),
            opened_at: EventTime::from_micros(1_000_000),
            updated_at: EventTime::from_micros(61_000_000),
            resolved_at: None,
            event_count: 2,
            merged_into: Some("inc_0".into()),
        }
    }

    fn edge() -> IncidentEdge {
        IncidentEdge {
            incident_id: "inc_1".into(),
            event_id: EventId::foreign_id("alertmanager", "a1"),
            role: EdgeRole::Effect,
            linked_by: "deploy-regression".into(),
            rule_version: 3,
            cause_event_id: Some(EventId::foreign_id("github", "d1")),
            lag_seconds: 60.0,
            join_key: "prod/checkout".into(),
            time: EventTime::from_micros(61_000_000),
        }
    }

    #[test]
    fn the_message_is_written_as_a_json_value_would_write_it() {
        let (v, e) = (version(), edge());
        let message = incident_message(&v, &[&e], Some(r#"{"deploy":{"sha":"abc"}}"#));
        let text = serde_json::to_string(&message).expect("encodes");
        let value: Value = serde_json::from_str(&text).expect("decodes");
        // Keys in a `Value`'s (sorted) order, so the text equals its encoding
        // (the enricher's compact text is copied as it is).
        assert_eq!(text, value.to_string());
        assert_eq!(value["enrichment"]["deploy"]["sha"], "abc");
        assert_eq!(value["evidence"][0]["join_key"], "prod/checkout");
        assert_eq!(
            value["evidence"][0]["cause_event_id"],
            value["root_cause_event_id"]
        );
        assert_eq!(value["merged_into"], "inc_0");
        assert_eq!(value["resolved_at"], Value::Null);
        assert_eq!(value["updated_at"], "1970-01-01T00:01:01Z");
        assert_eq!(value["state"], "updated");
    }

    #[test]
    fn enrichment_that_is_not_json_is_left_out() {
        let v = version();
        for text in [None, Some("not json"), Some("{\"open\": ")] {
            let value = serde_json::to_value(incident_message(&v, &[], text)).expect("encodes");
            assert_eq!(value["enrichment"], Value::Null, "{text:?}");
            assert_eq!(value["evidence"], json!([]));
        }
    }
}
