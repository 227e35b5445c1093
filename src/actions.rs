//! Runbook triggers: the pure safety kernel (`causeway_rules::runbook`) wired to
//! the engine, the history, the API and the outside world.
//!
//! The engine loop feeds every incident version in and, each turn, drains what
//! the kernel decided: the decisions become `actions` rows and go on the actions
//! stream, the kernel's state rides in the engine checkpoint (so it commits with
//! those rows, and a restart neither loses nor repeats a decision), and the
//! kernel's own alerts (a runbook out of budget) are appended to the event log
//! so the storm is correlated like any other. Actions to run go to a delivery
//! task that signs, retries and reports a permanent failure back. API handlers
//! (approve, deny, resume, kill switch) call into the same kernel under its lock.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use causeway_connectors::webhook::{Delivery, RetryPolicy, WebhookSender};
use causeway_engine::{Engine, EngineOutput};
use causeway_rules::runbook::{ActionContext, Decision, Execute, Kernel, KernelOutput, Target};
use causeway_rules::{Catalog, Event, ProcessingTime, RulePack};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::enrich::ChangeIndex;

/// What rides in the engine checkpoint.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Sidecar {
    kernel: Vec<u8>,
    /// Actions handed to delivery and not yet delivered or failed: sent again (with
    /// the same idempotency key) after a restart.
    inflight: Vec<Execute>,
}

struct Core {
    kernel: Kernel,
    /// rule id → the runbook it names.
    rule_runbooks: HashMap<String, String>,
    catalog: Catalog,
    changes: ChangeIndex,
    /// Decided, not yet recorded in the history.
    queued: Vec<Decision>,
    /// The kernel's own events, not yet appended to the log.
    events: Vec<Event>,
    inflight: BTreeMap<String, Execute>,
    /// Whether the state changed since the last checkpoint value.
    changed: bool,
}

impl Core {
    fn absorb(&mut self, out: KernelOutput, exec: &mpsc::UnboundedSender<Execute>) {
        if out.is_empty() {
            return;
        }
        self.changed = true;
        for d in &out.decisions {
            crate::metrics::ACTION_DECISIONS
                .with_label_values(&[d.decision.as_str()])
                .inc();
        }
        self.queued.extend(out.decisions);
        self.events.extend(out.events);
        for e in out.execute {
            self.inflight
                .insert(e.decision.action_id.clone(), e.clone());
            // The receiver ends only at shutdown; what it misses stays in flight.
            let _ = exec.send(e);
        }
    }
}

/// The runbook side of one running instance.
#[derive(Clone)]
pub(crate) struct Actions {
    core: Arc<Mutex<Core>>,
    kill: Arc<AtomicBool>,
    exec: mpsc::UnboundedSender<Execute>,
    stream: Option<PathBuf>,
}

impl std::fmt::Debug for Actions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actions")
            .field("kill_switch", &self.kill.load(Ordering::Relaxed))
            .finish()
    }
}

/// An API-facing failure of an action command.
#[derive(Debug)]
pub(crate) enum CommandError {
    NotFound(String),
    Conflict(String),
    Invalid(String),
}

impl From<causeway_rules::Error> for CommandError {
    fn from(e: causeway_rules::Error) -> Self {
        use causeway_rules::Error as E;
        match e {
            E::ActionNotFound { .. } | E::UnknownRunbook { .. } => {
                CommandError::NotFound(e.to_string())
            }
            E::ActionConflict { .. } => CommandError::Conflict(e.to_string()),
            other => CommandError::Invalid(other.to_string()),
        }
    }
}

impl Actions {
    /// Builds the kernel from the pack's runbooks and the engine's saved state.
    /// Returns the handle and the receiving end of the delivery queue; actions
    /// still in flight at the last checkpoint are queued again.
    pub(crate) fn new(
        rules: &RulePack,
        catalog: &Catalog,
        engine: &Engine,
        kill_switch: bool,
        stream: Option<PathBuf>,
        changes: ChangeIndex,
    ) -> anyhow::Result<(Actions, mpsc::UnboundedReceiver<Execute>)> {
        let mut kernel = Kernel::new(rules.runbooks());
        let saved: Sidecar = if engine.sidecar().is_empty() {
            Sidecar::default()
        } else {
            postcard::from_bytes(engine.sidecar()).context("reading the runbook state")?
        };
        if !saved.kernel.is_empty() {
            kernel
                .restore(&saved.kernel)
                .context("restoring the runbook state")?;
        }
        if kill_switch {
            kernel.set_kill_switch(true);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inflight = BTreeMap::new();
        for e in saved.inflight {
            let _ = tx.send(e.clone());
            inflight.insert(e.decision.action_id.clone(), e);
        }
        let kill = Arc::new(AtomicBool::new(kernel.kill_switch()));
        let rule_runbooks = rules
            .rules()
            .iter()
            .filter_map(|r| r.runbook.clone().map(|rb| (r.id.clone(), rb)))
            .collect();
        let core = Core {
            kernel,
            rule_runbooks,
            catalog: catalog.clone(),
            changes,
            queued: Vec::new(),
            events: Vec::new(),
            inflight,
            changed: kill_switch,
        };
        Ok((
            Actions {
                core: Arc::new(Mutex::new(core)),
                kill,
                exec: tx,
                stream,
            },
            rx,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock leaves consistent state: every method
        // mutates through whole kernel calls.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides on what the engine produced, and advances the kernel's clock.
    pub(crate) fn on_output(&self, out: &EngineOutput, now: ProcessingTime) {
        let mut core = self.lock();
        for v in &out.incidents {
            let runbook = core.rule_runbooks.get(&*v.rule_id).cloned();
            // Most versions (alert groups) have no runbook and nothing waiting
            // on them: the kernel would decide nothing, so skip building the
            // context (its variables cost a catalog walk and cache lookups).
            if runbook.is_none() && !core.kernel.validating(&v.incident_id) {
                continue;
            }
            let vars = core.changes.variables(&core.catalog, v);
            let mut ctx = ActionContext::new(v.clone(), runbook);
            ctx.vars = vars;
            let decided = core.kernel.on_incident(&ctx, now);
            core.absorb(decided, &self.exec);
        }
        let ticked = core.kernel.tick(now);
        core.absorb(ticked, &self.exec);
    }

    /// Records what was decided since the last call in the engine's history (and
    /// its checkpoint), publishes it on the actions stream, and returns the
    /// kernel's own events for the event log.
    pub(crate) fn flush(&self, engine: &mut Engine) -> anyhow::Result<(Vec<Decision>, Vec<Event>)> {
        let mut core = self.lock();
        if !core.changed {
            return Ok((Vec::new(), Vec::new()));
        }
        let decisions = std::mem::take(&mut core.queued);
        let mut events = std::mem::take(&mut core.events);
        // The kernel dates its alert at the incident that tripped it; an alert
        // about the remediator is news now, so it must not land behind the
        // watermark and be refused as late.
        if let Some(w) = engine.status().watermark {
            for e in &mut events {
                e.time = e.time.max(w);
            }
        }
        engine
            .record_actions(&decisions)
            .context("recording runbook decisions")?;
        let sidecar = Sidecar {
            kernel: core.kernel.snapshot()?,
            inflight: core.inflight.values().cloned().collect(),
        };
        engine.set_sidecar(postcard::to_stdvec(&sidecar)?);
        core.changed = false;
        drop(core);
        if let Some(path) = &self.stream
            && !decisions.is_empty()
        {
            append_stream(path, &decisions)?;
        }
        Ok((decisions, events))
    }

    /// Approves a waiting action.
    pub(crate) fn approve(
        &self,
        action_id: &str,
        approver: &str,
    ) -> Result<Vec<Decision>, CommandError> {
        self.human_decision(|k| k.approve(action_id, approver, ProcessingTime::now()))
    }

    /// Denies a waiting action.
    pub(crate) fn deny(
        &self,
        action_id: &str,
        approver: &str,
    ) -> Result<Vec<Decision>, CommandError> {
        self.human_decision(|k| k.deny(action_id, approver, ProcessingTime::now()))
    }

    /// Runs a human's decision through the kernel; returns the new decision rows
    /// (none when it repeats one already made).
    fn human_decision(
        &self,
        decide: impl FnOnce(&mut Kernel) -> causeway_rules::Result<KernelOutput>,
    ) -> Result<Vec<Decision>, CommandError> {
        let mut core = self.lock();
        let out = decide(&mut core.kernel)?;
        let decisions = out.decisions.clone();
        core.absorb(out, &self.exec);
        Ok(decisions)
    }

    /// Clears a halted runbook.
    pub(crate) fn resume(&self, runbook: &str) -> Result<(), CommandError> {
        let mut core = self.lock();
        let out = core.kernel.resume(runbook, ProcessingTime::now())?;
        core.changed = true;
        core.absorb(out, &self.exec);
        Ok(())
    }

    /// Turns the kill switch on or off: new decisions are denied at once, and
    /// deliveries in progress stop before their next attempt.
    pub(crate) fn set_kill_switch(&self, on: bool) {
        self.kill.store(on, Ordering::SeqCst);
        let mut core = self.lock();
        core.kernel.set_kill_switch(on);
        core.changed = true;
        tracing::warn!(on, "runbook kill switch");
    }

    /// Whether the kill switch is on.
    pub(crate) fn kill_switch(&self) -> bool {
        self.kill.load(Ordering::SeqCst)
    }

    /// Actions waiting for a human, and halted runbooks.
    pub(crate) fn pending(&self) -> serde_json::Value {
        let core = self.lock();
        let waiting: Vec<&Decision> = core.kernel.pending_approvals().collect();
        let halted: Vec<serde_json::Value> = core
            .kernel
            .halted()
            .map(|(rb, since, reason)| {
                serde_json::json!({"runbook": rb, "since": since.to_rfc3339(), "reason": reason})
            })
            .collect();
        serde_json::json!({
            "kill_switch": core.kernel.kill_switch(),
            "awaiting_approval": waiting.iter().map(|d| decision_json(d)).collect::<Vec<_>>(),
            "halted": halted,
        })
    }

    fn finished(&self, action_id: &str, failure: Option<&str>) {
        let mut core = self.lock();
        core.inflight.remove(action_id);
        core.changed = true;
        if let Some(reason) = failure {
            let out = core
                .kernel
                .delivery_failed(action_id, reason, ProcessingTime::now());
            core.absorb(out, &self.exec);
        }
    }
}

/// A decision as JSON: the `causeway.actions` message and the API's answer.
pub(crate) fn decision_json(d: &Decision) -> serde_json::Value {
    serde_json::json!({
        "action_id": d.action_id,
        "incident_id": d.incident_id,
        "incident_version": d.incident_version,
        "runbook": d.runbook,
        "action_class": d.class.as_str(),
        "decision": d.decision.as_str(),
        "reason": d.reason,
        "decided_at": d.decided_at.to_rfc3339(),
        "target": d.target,
        "params": d.params,
        "approver": d.approver,
        "expires_at": d.expires_at.map(|t| t.to_rfc3339()),
        "idempotency_key": d.idempotency_key,
    })
}

/// The embedded actions stream: one JSON decision per line.
fn append_stream(path: &std::path::Path, decisions: &[Decision]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = Vec::new();
    for d in decisions {
        serde_json::to_writer(&mut buf, &decision_json(d))?;
        buf.push(b'\n');
    }
    f.write_all(&buf)
        .with_context(|| format!("cannot append to {}", path.display()))?;
    Ok(())
}

/// Delivers actions until shutdown: webhooks signed and retried, at most
/// `concurrency` at once; Kafka-target actions are delivered by their decision on
/// the actions stream.
pub(crate) async fn deliver(
    actions: Actions,
    mut queue: mpsc::UnboundedReceiver<Execute>,
    policy: RetryPolicy,
    concurrency: usize,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let sender = WebhookSender::new(policy)?;
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut running = JoinSet::new();
    loop {
        let exec = tokio::select! {
            () = cancel.cancelled() => break,
            e = queue.recv() => match e { Some(e) => e, None => break },
            Some(_) = running.join_next(), if !running.is_empty() => continue,
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let (actions, sender, cancel) = (actions.clone(), sender.clone(), cancel.clone());
        running.spawn(async move {
            let _permit = permit;
            deliver_one(&actions, &sender, exec, &cancel).await;
        });
    }
    // In-flight deliveries stop before their next attempt; they stay owed.
    cancel.cancel();
    while running.join_next().await.is_some() {}
    Ok(())
}

async fn deliver_one(
    actions: &Actions,
    sender: &WebhookSender,
    exec: Execute,
    cancel: &CancellationToken,
) {
    let id = exec.decision.action_id.clone();
    let Target::Webhook { url, secret_env } = &exec.target else {
        // The triggered decision on the actions stream is the delivery.
        actions.finished(&id, None);
        return;
    };
    // The kill switch stops deliveries too, checked before every attempt.
    let stop = CancellationToken::new();
    let watcher = {
        let (stop, cancel, actions) = (stop.clone(), cancel.clone(), actions.clone());
        tokio::spawn(async move {
            loop {
                if actions.kill_switch() {
                    stop.cancel();
                    return;
                }
                tokio::select! {
                    () = cancel.cancelled() => { stop.cancel(); return; }
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        })
    };
    let secret = secret_env
        .as_deref()
        .and_then(|name| std::env::var(name).ok());
    if let Some(name) = secret_env
        && secret.is_none()
    {
        watcher.abort();
        actions.finished(
            &id,
            Some(&format!(
                "the signing secret {name} is not set in the environment"
            )),
        );
        return;
    }
    let body = serde_json::json!({
        "action": decision_json(&exec.decision),
        "params": exec.params,
    })
    .to_string();
    let outcome = sender
        .deliver(
            url,
            secret.as_deref().map(str::as_bytes),
            &exec.decision.idempotency_key,
            body.as_bytes(),
            || chrono::Utc::now().timestamp(),
            &stop,
        )
        .await;
    watcher.abort();
    match outcome {
        Delivery::Delivered { status, attempts } => {
            tracing::info!(action = %id, status, attempts, "runbook action delivered");
            crate::metrics::ACTION_DELIVERIES
                .with_label_values(&["delivered"])
                .inc();
            actions.finished(&id, None);
        }
        Delivery::Failed { reason, attempts } => {
            tracing::error!(action = %id, attempts, %reason, "runbook action failed for good");
            crate::metrics::ACTION_DELIVERIES
                .with_label_values(&["failed"])
                .inc();
            actions.finished(&id, Some(&reason));
        }
        Delivery::Cancelled { .. } if actions.kill_switch() => {
            crate::metrics::ACTION_DELIVERIES
                .with_label_values(&["killed"])
                .inc();
            actions.finished(&id, Some("stopped by the kill switch"));
        }
        Delivery::Cancelled { .. } => {
            // Shutdown: the action stays in flight and is sent again after restart.
        }
    }
}
