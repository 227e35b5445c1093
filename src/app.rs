//! Wiring of `causeway run`: event log, engine, receivers, API, and their
//! shutdown.
//!
//! Tasks, all owned by one `JoinSet` and stopped by one `CancellationToken`:
//! - the HTTP server (receivers and API), which drains in-flight requests;
//! - the Postgres wire listener when `sql.pg_listen` is set (`pgwire.rs`);
//! - the engine loop: read the log from the checkpointed offsets, correlate,
//!   commit history and checkpoint every `commit_interval`, and once more on exit;
//! - the log writer (a blocking thread), which ends after the last handle to the
//!   log is dropped, having made every acknowledged append durable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use causeway_connectors::eventlog::embedded::{EmbeddedConsumer, EmbeddedLog};
use causeway_connectors::kafka::{self, KafkaEventLog};
use causeway_connectors::{EventLog, LogConsumer, ReceiverConfig, ReceiverState, receiver};
use causeway_engine::{
    Engine, EngineOptions, EngineStatus, HistoryReader, LogPosition, PartitionStateMode,
};
use causeway_rules::{IndexedCatalog, ProcessingTime};
use futures::FutureExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::actions::{self, Actions};
use crate::api;
use crate::config::Loaded;
use crate::enrich::{ChangeIndex, IncidentEnricher, SimilarIndex};
use crate::kafka_engine::KafkaEngine;

/// What the rest of the binary sees of a running instance.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) reader: HistoryReader,
    pub(crate) status: watch::Receiver<EngineStatus>,
    /// The embedded log, when it is the event log (for its end offset).
    embedded: Option<EmbeddedLog>,
    /// The event log's write side; dropped at shutdown so the writer can finish.
    log: Option<Arc<dyn EventLog>>,
    cancel: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
    /// Set by [`Running::end_input`].
    input_ended: Arc<AtomicBool>,
    /// Set by [`Running::batch_input`].
    batch_input: Arc<AtomicBool>,
}

/// Shared by the API handlers.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) reader: HistoryReader,
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) engine_healthy: Arc<AtomicBool>,
    pub(crate) draining: CancellationToken,
    pub(crate) limits: causeway_engine::QueryLimits,
    pub(crate) actions: Actions,
}

/// Starts everything; returns once the HTTP listener is bound.
pub(crate) async fn start(loaded: &Loaded, listen: SocketAddr) -> anyhow::Result<Running> {
    let config = &loaded.config;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    crate::config::StoredSettings::save(loaded)?;
    let kafka = config.kafka.settings()?;
    let engine = Engine::open(EngineOptions {
        data_dir: config.data_dir.clone(),
        rules: loaded.rules.clone(),
        catalog: config.catalog.clone(),
        correlator: config.correlator(),
        watermark: config.engine.watermark.clone(),
        partition_state: if kafka.is_some() {
            PartitionStateMode::External
        } else {
            PartitionStateMode::Local
        },
        history: config
            .history
            .spec()
            .map(crate::config::connect_history)
            .transpose()?,
    })
    .context("cannot open the engine")?;
    let reader = HistoryReader::live(engine.history())
        .with_max_concurrent_queries(config.sql.max_concurrent_queries);
    let cancel = CancellationToken::new();
    crate::metrics::init();
    // Enrichment answers from memory: recent changes, alert links and owners, and
    // similar past incidents loaded once from the history.
    let changes = ChangeIndex::new(100_000, Duration::from_secs(7 * 24 * 3600));
    let similar = SimilarIndex::new(100_000);
    match similar
        .load(&reader, Duration::from_secs(30 * 24 * 3600), 50_000)
        .await
    {
        Ok(n) => tracing::info!(incidents = n, "similar-incident index loaded"),
        Err(error) => tracing::warn!(
            error = %format!("{error:#}"),
            "similar-incident index not loaded; incidents will name none from before this start"
        ),
    }
    // Receivers, source topics and the enricher share one indexed catalog.
    let decode_catalog = Arc::new(IndexedCatalog::new(config.catalog.clone()));
    let enricher = IncidentEnricher::new(decode_catalog.clone(), changes.clone(), similar);
    let mut engine = engine;
    engine.set_enricher(Arc::new(enricher.clone()));
    let (actions, exec_queue) = Actions::new(
        &loaded.rules,
        &config.catalog,
        &engine,
        config.runbooks.kill_switch,
        kafka
            .is_none()
            .then(|| config.data_dir.join("actions").join("stream.jsonl")),
        changes,
    )?;
    // The kernel's own events (a runbook out of budget) go through the event log
    // like any other, so the storm is correlated.
    let (own_events, own_events_rx) = tokio::sync::mpsc::unbounded_channel();
    let engine_healthy = Arc::new(AtomicBool::new(true));
    let input_ended = Arc::new(AtomicBool::new(false));
    let batch_input = Arc::new(AtomicBool::new(false));
    let (status_tx, status) = watch::channel(engine.status());
    let mut tasks = JoinSet::new();

    let (log_dyn, embedded): (Arc<dyn EventLog>, Option<EmbeddedLog>) = match &kafka {
        None => {
            let (log, writer) = EmbeddedLog::open(&config.data_dir.join("log"))
                .context("cannot open the embedded event log")?;
            tasks.spawn_blocking(move || {
                writer.run();
                Ok(())
            });
            let mut consumer = log.consumer();
            consumer.seek(&engine.next_offsets())?;
            tasks.spawn(engine_loop(
                engine,
                consumer,
                EngineLoop {
                    commit_interval: config.engine.commit_interval,
                    idle_timeout: config.engine.watermark.idle_timeout,
                    input_ended: input_ended.clone(),
                    batch_input: batch_input.clone(),
                    retention: config.engine.history_retention,
                    cancel: cancel.clone(),
                    status: status_tx,
                    healthy: engine_healthy.clone(),
                    actions: actions.clone(),
                    enricher: enricher.clone(),
                    own_events: own_events.clone(),
                },
            ));
            (Arc::new(log.clone()), Some(log))
        }
        Some(settings) => {
            kafka::ensure_topics(settings)
                .await
                .context("cannot prepare the Kafka topics")?;
            let log = KafkaEventLog::new(settings)?;
            let sources = config.kafka.source_topics()?;
            for source in sources {
                tasks.spawn(
                    kafka::run_source(
                        settings.clone(),
                        source,
                        log.clone(),
                        decode_catalog.clone(),
                        cancel.clone(),
                    )
                    .map(|r| r.context("kafka source")),
                );
            }
            let group = KafkaEngine::new(
                settings,
                engine,
                status_tx,
                actions.clone(),
                enricher.clone(),
                own_events.clone(),
            )?;
            let commit_interval = config.engine.commit_interval;
            let (stop, healthy) = (cancel.clone(), engine_healthy.clone());
            let retention = config.engine.history_retention;
            tasks.spawn_blocking(move || group.run(commit_interval, retention, stop, healthy));
            let flush_log = log.clone();
            let flush_on = cancel.clone();
            tasks.spawn(async move {
                flush_on.cancelled().await;
                tokio::task::spawn_blocking(move || flush_log.flush(Duration::from_secs(10)))
                    .await?
                    .context("flushing the events producer")
            });
            (Arc::new(log), None)
        }
    };

    let receivers = receiver::router(ReceiverState {
        log: log_dyn.clone(),
        catalog: decode_catalog,
        config: Arc::new(ReceiverConfig {
            max_body_bytes: config.receivers.max_body_bytes,
            github_secret: loaded.github_secret.clone(),
            auth: loaded.auth.clone(),
            max_concurrent_requests: config.receivers.max_concurrent_requests,
            max_requests_per_second: config.receivers.max_requests_per_second,
        }),
    });
    let log_dyn_handle = log_dyn.clone();
    tasks.spawn(actions::deliver(
        actions.clone(),
        exec_queue,
        config.runbooks.retry_policy(),
        config.runbooks.concurrency,
        cancel.clone(),
    ));
    tasks.spawn(append_own_events(
        own_events_rx,
        log_dyn.clone(),
        cancel.clone(),
    ));
    drop(own_events);
    let shared = Shared {
        reader: reader.clone(),
        log: log_dyn,
        engine_healthy,
        draining: cancel.clone(),
        limits: config.query_limits(),
        actions,
    };
    let app = receivers.merge(api::router(shared));
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let shutdown = cancel.clone();
    tasks.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("http server failed")
    });
    if let Some(pg_listen) = config.sql.pg_listen {
        let settings = crate::pgwire::Settings {
            max_connections: config.sql.pg_max_connections,
            password: loaded.pg_password.clone(),
            limits: config.query_limits(),
        };
        let pg = crate::pgwire::Listener::bind(pg_listen, reader.clone(), settings).await?;
        let pg_addr = pg.local_addr()?;
        tasks.spawn(pg.serve(cancel.clone()));
        tracing::info!(addr = %pg_addr, "postgres wire listener is running");
    }
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "causeway is running");
    Ok(Running {
        addr,
        reader,
        status,
        embedded,
        log: Some(log_dyn_handle),
        cancel,
        tasks,
        input_ended,
        batch_input,
    })
}

impl Running {
    /// The token that stops everything.
    pub(crate) fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The end of the embedded event log (0 with Kafka).
    pub(crate) fn log_end(&self) -> u64 {
        self.embedded
            .as_ref()
            .and_then(|l| l.end_offsets().get(&0).copied())
            .unwrap_or(0)
    }

    /// Says that everything this process will be given is in the log (a file
    /// import has appended its files): once the embedded engine has read it all,
    /// every source is idle at once rather than after the idle timeout, and the
    /// engine commits without waiting for the commit interval. What it releases
    /// is what the idle timeout would have released, only sooner.
    pub(crate) fn end_input(&self) {
        self.input_ended.store(true, Ordering::SeqCst);
    }

    /// Says that the log is being filled by a batch job (a file import), not by
    /// live senders: the engine reads it as it comes, without [`LINGER`].
    pub(crate) fn batch_input(&self) {
        self.batch_input.store(true, Ordering::SeqCst);
    }

    /// The event log's write side, to append to it directly (file import).
    pub(crate) fn event_log(&self) -> anyhow::Result<Arc<dyn EventLog>> {
        self.log.clone().context("the event log is already closed")
    }

    /// Waits until the engine has read the whole log, released every buffered
    /// event and committed, or until `timeout`.
    pub(crate) async fn wait_quiescent(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let end = self.log_end();
            let s = self.status.borrow_and_update().clone();
            if s.next_offsets.get(&0).copied().unwrap_or(0) >= end
                && s.pending_events == 0
                && !s.dirty
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), self.status.changed()).await;
        }
    }

    /// Stops everything and waits for the tasks; the first task error is returned.
    pub(crate) async fn shutdown(mut self) -> anyhow::Result<()> {
        self.cancel.cancel();
        self.log = None;
        self.embedded = None;
        self.wait().await
    }

    /// Waits for the tasks to end (after a signal has cancelled them).
    pub(crate) async fn wait(&mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            let result = joined.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(e) = result {
                // One failing task stops the others.
                self.cancel.cancel();
                self.log = None;
                self.embedded = None;
                tracing::error!(error = %format!("{e:#}"), "task failed");
                first_error.get_or_insert(e);
            }
            if self.cancel.is_cancelled() {
                self.log = None;
                self.embedded = None;
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// What the embedded engine loop needs besides the engine and the log.
struct EngineLoop {
    commit_interval: Duration,
    idle_timeout: Duration,
    input_ended: Arc<AtomicBool>,
    batch_input: Arc<AtomicBool>,
    retention: Option<Duration>,
    cancel: CancellationToken,
    status: watch::Sender<EngineStatus>,
    healthy: Arc<AtomicBool>,
    actions: Actions,
    enricher: IncidentEnricher,
    own_events: tokio::sync::mpsc::UnboundedSender<Vec<causeway_rules::Event>>,
}

async fn engine_loop(
    mut engine: Engine,
    mut consumer: EmbeddedConsumer,
    l: EngineLoop,
) -> anyhow::Result<()> {
    let mut last_commit = Instant::now();
    let mut last_maintenance = Instant::now();
    let mut clock = causeway_engine::LogClock::default();
    let mut more = false;
    loop {
        if last_maintenance.elapsed() >= MAINTENANCE_EVERY {
            tokio::task::block_in_place(|| maintain_history(&engine, l.retention));
            last_maintenance = Instant::now();
        }
        // Read before the poll: everything was appended before it was set, so a
        // read that is not cut at its limit has reached the end of the input.
        let input_ended = l.input_ended.load(Ordering::SeqCst);
        let mut records = tokio::select! {
            _ = l.cancel.cancelled() => break,
            r = consumer.poll(POLL_MAX, poll_wait(more)) => r.context("reading the event log")?,
        };
        let live = !l.batch_input.load(Ordering::Relaxed);
        if lingers(records.len(), more, live) {
            // A few records just arrived while others are on their way: gather them
            // into one batch, as a producer's `linger.ms` does.
            tokio::select! {
                _ = l.cancel.cancelled() => {}
                _ = tokio::time::sleep(LINGER) => {}
            }
            let rest = consumer
                .poll(POLL_MAX - records.len(), Duration::ZERO)
                .await
                .context("reading the event log")?;
            records.extend(rest);
        }
        let now = ProcessingTime::now();
        let records = positioned(records);
        let behind = records.len() >= POLL_MAX;
        let log_now = clock.now(records.iter().map(|(_, e)| e.ingested_at), behind, now);
        let input_done = input_ended && !behind;
        l.enricher.observe(records.iter().map(|(_, e)| e));
        let out = tokio::task::block_in_place(|| {
            let mut out = engine.process(records, log_now)?;
            if input_done {
                // Nothing more will come: every source is idle now rather than
                // an idle timeout after it was last seen. The sources of this last
                // read were seen at `log_now`, so only a clock that far ahead
                // finds them idle (seen at that time, they would hold the
                // watermark for the whole timeout).
                out.extend(engine.tick(log_now.plus(l.idle_timeout))?);
            }
            Ok::<_, causeway_engine::Error>(out)
        })
        .context("correlating events")?;
        more = out.more;
        l.actions.on_output(&out, now);
        let (_, own) = l.actions.flush(&mut engine)?;
        if !own.is_empty() {
            // The receiver lives as long as the log; a closed one means shutdown.
            let _ = l.own_events.send(own);
        }
        // A commit written in the background reports here once it has finished.
        match engine.poll_commit() {
            Ok(true) => l.healthy.store(true, Ordering::Relaxed),
            Ok(false) => {}
            Err(error) => commit_failed(&l, &error),
        }
        // A failed commit is retried at the interval, not at every turn.
        let settled =
            input_done && !more && l.healthy.load(Ordering::Relaxed) && engine.status().dirty;
        if settled || engine.commit_due(last_commit.elapsed(), l.commit_interval) {
            // Settled input is committed and waited for (an import ends on it);
            // otherwise the commit is written beside the correlation that goes on.
            let committed = if settled {
                tokio::task::block_in_place(|| engine.commit())
            } else {
                tokio::task::block_in_place(|| engine.start_commit())
            };
            match committed {
                Ok(()) if settled => l.healthy.store(true, Ordering::Relaxed),
                Ok(()) => {}
                Err(error) => commit_failed(&l, &error),
            }
            last_commit = Instant::now();
        }
        l.status.send_replace(engine.status());
    }
    l.actions.flush(&mut engine)?;
    tokio::task::block_in_place(|| engine.commit()).context("final history commit")?;
    l.status.send_replace(engine.status());
    tracing::info!("engine stopped after a final commit");
    Ok(())
}

/// A failed commit keeps its rows pending; the next interval tries again.
fn commit_failed(l: &EngineLoop, error: &causeway_engine::Error) {
    l.healthy.store(false, Ordering::Relaxed);
    tracing::error!(%error, "history commit failed; will retry");
}

/// Most records one read of the log returns; a full read means more is waiting.
pub(crate) const POLL_MAX: usize = 4096;

/// How long the engine waits for more records after a small read of a live log.
/// Each engine batch has a fixed cost (predicates over the rule pack, a watermark
/// step, enrichment and history rows per batch), so a receiver answering one alert
/// per request would otherwise be correlated a few dozen events at a time. Five
/// milliseconds is librdkafka's default `linger.ms`; it is far below the watermark
/// delays that hold incidents back anyway.
const LINGER: Duration = Duration::from_millis(5);

/// A read this small gathers more for [`LINGER`] first.
const LINGER_BELOW: usize = 512;

/// Whether a read of `n` records waits [`LINGER`] for more: only a small,
/// non-empty read of a `live` log (not a file import's), and not while the
/// watermark is releasing what it holds.
fn lingers(n: usize, more: bool, live: bool) -> bool {
    n > 0 && n < LINGER_BELOW && !more && live
}

/// How long a read of the log waits for records: not at all while the engine's
/// watermark still has buffered events to release (see `Engine::tick`).
pub(crate) fn poll_wait(more: bool) -> Duration {
    if more {
        Duration::ZERO
    } else {
        Duration::from_millis(250)
    }
}

/// How often history maintenance (compaction, retention) runs.
pub(crate) const MAINTENANCE_EVERY: Duration = Duration::from_secs(300);

/// A table day with this many files is compacted into one.
const COMPACT_MIN_FILES: usize = 16;

/// Compacts small history files and drops days past the retention; a failure is
/// logged and retried at the next run (files stay listed until removed).
pub(crate) fn maintain_history(engine: &Engine, retention: Option<Duration>) {
    match engine.compact_history(COMPACT_MIN_FILES) {
        Ok(0) => {}
        Ok(n) => tracing::info!(files = n, "history compaction merged small files"),
        Err(error) => tracing::error!(%error, "history compaction failed; will retry"),
    }
    let Some(retention) = retention else {
        return;
    };
    match engine.apply_retention(ProcessingTime::now(), retention) {
        Ok(0) => {}
        Ok(n) => tracing::info!(files = n, "history retention removed old days"),
        Err(error) => tracing::error!(%error, "history retention failed; will retry"),
    }
}

/// Appends the runbook kernel's own events to the event log until shutdown.
async fn append_own_events(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<causeway_rules::Event>>,
    log: Arc<dyn EventLog>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let events = tokio::select! {
            () = cancel.cancelled() => break,
            e = rx.recv() => match e { Some(e) => e, None => break },
        };
        let n = events.len();
        if let Err(error) = log.append(events).await {
            tracing::error!(%error, n, "could not append the runbook kernel's events");
        }
    }
    Ok(())
}

/// Log records as the engine takes them: (position, event).
pub(crate) fn positioned(
    records: Vec<causeway_connectors::LogRecord>,
) -> Vec<(LogPosition, causeway_rules::Event)> {
    records
        .into_iter()
        .map(|r| {
            (
                LogPosition {
                    partition: r.partition,
                    offset: r.offset,
                },
                r.event,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_small_read_of_a_live_log_lingers() {
        assert!(lingers(1, false, true));
        assert!(lingers(LINGER_BELOW - 1, false, true));
        // Nothing arrived: the next poll waits for the first record anyway.
        assert!(!lingers(0, false, true));
        // Enough for a batch, or the log is behind.
        assert!(!lingers(LINGER_BELOW, false, true));
        assert!(!lingers(POLL_MAX, false, true));
        // The watermark is releasing buffered events: keep going without waiting.
        assert!(!lingers(1, true, true));
        // A file import reads its log as it is appended.
        assert!(!lingers(1, false, false));
    }
}
