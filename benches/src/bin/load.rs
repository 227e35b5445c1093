//! `causeway-load`: the end-to-end load harness. It drives the real `causeway`
//! binary (a child process, configured in a temporary directory) with the seeded
//! workload in its wire formats and reports what a user would see: sustained
//! events/s, requests/s, ingest → incident latency, peak RSS and CPU of the
//! process. It refuses to print a figure when events were lost (the history must
//! hold every distinct event sent) or a request failed.
//!
//! Modes: `import` (file import, with the DuckDB and DataFusion interval-join
//! baselines over the same events in the same run), `http` (Alertmanager webhooks
//! from many connections), `kafka` (a pre-produced events topic consumed by the
//! engine), `latency` (a paced live stream over Kafka; incidents read back from
//! the incidents topic), `buffer` (peak RSS with the watermark held back so every
//! event stays buffered). `all` runs each at its defaults.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use causeway_benches::wire::{self, AlertmanagerEncoder};
use causeway_benches::{Workload, catalog, generate, generate_with_truth};
use causeway_connectors::client::HttpPoster;
use causeway_connectors::kafka::{KafkaSettings, TopicTail, Topics};
use causeway_rules::{Event, EventTime};
use clap::{Parser, Subcommand};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[derive(Debug, Parser)]
#[command(about = "End-to-end load harness for the causeway binary")]
struct Cli {
    /// The binary under test (build it with `cargo build --release`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/causeway"))]
    bin: PathBuf,
    /// Append the report (markdown) to this file as well as printing it.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Workload seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Clone, Subcommand)]
enum Mode {
    /// `causeway import events` of a generated file; baselines beside it.
    Import {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Repetitions of each baseline query (median reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Alertmanager webhooks from many concurrent connections (embedded mode).
    Http {
        #[arg(long, default_value_t = 200_000)]
        requests: usize,
        #[arg(long, default_value_t = 1)]
        alerts_per_request: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// A pre-produced events topic consumed by a fresh engine.
    Kafka {
        #[arg(long, default_value_t = 500_000)]
        events: usize,
        /// Bootstrap servers; by default a fresh in-memory tansu of the harness's own.
        #[arg(long)]
        brokers: Option<String>,
    },
    /// A live stream paced at `rate` events/s over Kafka; ingest → incident latency.
    Latency {
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Bootstrap servers; by default a fresh in-memory tansu of the harness's own.
        #[arg(long)]
        brokers: Option<String>,
    },
    /// Peak RSS with every event held in the reorder buffer.
    Buffer {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// Every mode at its defaults.
    All {
        /// Bootstrap servers; by default a fresh in-memory tansu of the harness's own.
        #[arg(long)]
        brokers: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ensure!(
        cli.bin.is_file(),
        "{} does not exist: build it with `cargo build --release` (or pass --bin)",
        cli.bin.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let h = Harness {
        bin: cli.bin.clone(),
        seed: cli.seed,
    };
    let modes = match cli.mode.clone() {
        Mode::All { brokers } => vec![
            Mode::Import {
                events: 1_000_000,
                runs: 3,
            },
            Mode::Http {
                requests: 200_000,
                alerts_per_request: 1,
                concurrency: 64,
            },
            Mode::Kafka {
                events: 500_000,
                brokers: brokers.clone(),
            },
            Mode::Latency {
                rate: 10_000.0,
                seconds: 120,
                brokers,
            },
            Mode::Buffer { events: 1_000_000 },
        ],
        m => vec![m],
    };
    let mut report = format!(
        "\n## {} — causeway-load\n\n- Machine: {}\n- Binary: `{}`\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine(),
        cli.bin.display()
    );
    for mode in modes {
        let section = runtime.block_on(h.run(mode))?;
        print!("{section}");
        report.push_str(&section);
    }
    if let Some(path) = cli.report {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        f.write_all(report.as_bytes())?;
    }
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({cpu}); harness and binary share them")
}

struct Harness {
    bin: PathBuf,
    seed: u64,
}

impl Harness {
    async fn run(&self, mode: Mode) -> anyhow::Result<String> {
        match mode {
            Mode::Import { events, runs } => self.import(events, runs).await,
            Mode::Http {
                requests,
                alerts_per_request,
                concurrency,
            } => self.http(requests, alerts_per_request, concurrency).await,
            Mode::Kafka { events, brokers } => self.kafka(events, brokers).await,
            Mode::Latency {
                rate,
                seconds,
                brokers,
            } => self.latency(rate, seconds, brokers).await,
            Mode::Buffer { events } => self.buffer(events).await,
            Mode::All { .. } => bail!("nested all"),
        }
    }

    fn workload(&self, events: usize) -> Workload {
        Workload {
            seed: self.seed,
            events,
            ..Workload::default()
        }
    }

    /// `causeway import events`: sustained events/s from a file, then the same
    /// events' deploy → alert join in DataFusion and DuckDB.
    async fn import(&self, n: usize, runs: usize) -> anyhow::Result<String> {
        let dir = scratch()?;
        let w = self.workload(n);
        let generated = generate_with_truth(&w);
        let expected = distinct_ids(&generated.events);
        let config = write_config(dir.path(), &w, 0, "", "")?;
        eprintln!("import: {n} events ({expected} distinct) …");
        let (elapsed, usage) = self.import_file(dir.path(), &generated.events, &config)?;
        let stored = self.sql_local(&config, ACCOUNTED)?;
        refuse_if_lost(expected, stored)?;
        let found = if generated.scenarios.is_empty() {
            0
        } else {
            self.sql_local(
            &config,
            &format!(
                "SELECT count(DISTINCT root_cause_event_id) AS n FROM incidents WHERE root_cause_event_id IN ({})",
                generated
                    .scenarios
                    .iter()
                    .map(|(_, id)| format!("'{id}'"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        )?
        };
        let incidents = self.sql_local(
            &config,
            "SELECT count(DISTINCT incident_id) AS n FROM incidents",
        )?;
        let late = self.sql_local(
            &config,
            "SELECT count(DISTINCT event_id) AS n FROM late_events",
        )?;
        let rate = n as f64 / elapsed.as_secs_f64();

        // Baselines over the Parquet files this import wrote.
        let events_dir = dir.path().join("data/history/events");
        let sql_file = dir.path().join("join.sql");
        std::fs::write(&sql_file, DEPLOY_ALERT_JOIN)?;
        let (df_pairs, df_secs) = datafusion_join(&events_dir, runs).await?;
        let duck = Command::new("python3")
            .arg(format!("{ROOT}/benches/load/duckdb_join.py"))
            .arg("--events")
            .arg(&events_dir)
            .arg("--sql-file")
            .arg(&sql_file)
            .args(["--runs", &runs.to_string()])
            .output()
            .context("run benches/load/duckdb_join.py (pip install duckdb)")?;
        ensure!(
            duck.status.success(),
            "the DuckDB baseline failed: {}",
            String::from_utf8_lossy(&duck.stderr)
        );
        let duck: Value = serde_json::from_slice(&duck.stdout)?;
        let duck_pairs = duck["pairs"].as_u64().unwrap_or(u64::MAX);
        ensure!(
            duck_pairs == df_pairs,
            "the baselines disagree: DuckDB {duck_pairs} pairs, DataFusion {df_pairs}"
        );
        let duck_secs: Vec<f64> = duck["seconds"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let df_med = median(&df_secs);
        let duck_med = median(&duck_secs);
        let df_rate = n as f64 / df_med;
        let duck_rate = n as f64 / duck_med;
        Ok(format!(
            "\n### import (file → correlated history)\n\n\
             - Command: `cargo run --release -p causeway-benches --bin causeway-load -- import --events {n}`\n\
             - Workload: seed {seed}, {n} events ({expected} distinct ids; the rest are Alertmanager-style re-sends), {scen} injected problems\n\n\
             | figure | value |\n|---|---|\n\
             | wall time (process start → correlated, committed, exited) | {secs:.2} s |\n\
             | sustained throughput | **{rate:.0} events/s** |\n\
             | CPU (user+sys) of the process | {cpu:.2} s ({cores:.2} cores busy) |\n\
             | peak RSS | {rss:.0} MiB |\n\
             | events accounted for (stored + too late) / distinct sent | {stored} / {expected} |\n\
             | of which refused as too late (kept in `late_events`) | {late} |\n\
             | injected problems found as root causes | {found} / {scen} |\n\
             | incidents | {incidents} |\n\n\
             Baselines, same events, same run: the deploy → alert correlation (same scope and entity, alert within 30 min after the deploy) as one batch interval join over the `events` Parquet files above ({pairs} pairs; both engines agree). Median of {runs} runs.\n\n\
             | engine | query time | events/s scanned | causeway import ÷ baseline |\n|---|---|---|---|\n\
             | DataFusion {dfv} (SQL, in process) | {df_ms:.0} ms | {df_rate:.0} | {r1:.3} |\n\
             | DuckDB {duckv} (PyPI) | {duck_ms:.0} ms | {duck_rate:.0} | {r2:.3} |\n",
            seed = self.seed,
            scen = generated.scenarios.len(),
            secs = elapsed.as_secs_f64(),
            cpu = usage.cpu_seconds,
            cores = usage.cpu_seconds / elapsed.as_secs_f64(),
            rss = usage.peak_rss_mib(),
            pairs = df_pairs,
            dfv = datafusion::DATAFUSION_VERSION,
            duckv = duck["version"].as_str().unwrap_or("?"),
            df_ms = df_med * 1e3,
            duck_ms = duck_med * 1e3,
            r1 = rate / df_rate,
            r2 = rate / duck_rate,
        ))
    }

    /// Alertmanager webhooks from `concurrency` connections into `causeway run`.
    async fn http(
        &self,
        requests: usize,
        per_request: usize,
        concurrency: usize,
    ) -> anyhow::Result<String> {
        let dir = scratch()?;
        let wanted = requests * per_request;
        // Alerts are most of the mix; generate until there are enough.
        let mut w = self.workload(wanted * 2);
        let alerts = loop {
            let events = generate(&w);
            let alerts: Vec<Event> = events
                .into_iter()
                .filter(AlertmanagerEncoder::is_alert)
                .take(wanted)
                .collect();
            if alerts.len() == wanted {
                break alerts;
            }
            w.events *= 2;
        };
        let expected = distinct_ids(&alerts);
        let mut enc = AlertmanagerEncoder::default();
        let refs: Vec<&Event> = alerts.iter().collect();
        let bodies: Arc<Vec<Bytes>> = Arc::new(
            refs.chunks(per_request)
                .map(|c| Bytes::from(enc.webhook(c)))
                .collect(),
        );
        let port = free_port()?;
        let config = write_config(dir.path(), &w, port, "", "")?;
        let instance = Instance::start(&self.bin, &config, port).await?;
        eprintln!("http: {requests} webhooks from {concurrency} connections …");
        let next = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
        let mut connections = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            connections.push(Connection::open(&instance.base).await?);
        }
        let start = Instant::now();
        let cpu_before = instance.cpu_seconds();
        let own_before = own_cpu_seconds();
        let mut tasks = tokio::task::JoinSet::new();
        for mut connection in connections {
            let (bodies, next, failed, first_failure) = (
                bodies.clone(),
                next.clone(),
                failed.clone(),
                first_failure.clone(),
            );
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    let result = connection
                        .post_json("/ingest/alertmanager", body.clone())
                        .await;
                    let problem = match result {
                        Ok((200, _)) => None,
                        Ok((status, body)) => {
                            Some(format!("{status}: {}", String::from_utf8_lossy(&body)))
                        }
                        Err(e) => Some(format!("{e:#}")),
                    };
                    if let Some(p) = problem {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = first_failure.lock() {
                            f.get_or_insert(p);
                        }
                    }
                }
                connection.close().await;
            });
        }
        while tasks.join_next().await.is_some() {}
        let elapsed = start.elapsed();
        let cpu = instance.cpu_seconds() - cpu_before;
        let client_cpu = own_cpu_seconds() - own_before;
        let failed = failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = first_failure.lock().ok().and_then(|f| f.clone());
            instance.stop().await?;
            bail!("{failed} requests failed (first: {first:?}); no figure reported");
        }
        let stored = wait_for_count(&instance.base, expected, Duration::from_secs(300)).await?;
        let drained = start.elapsed();
        let (batch, group) = batching(&instance.base).await?;
        let usage = instance.stop().await?;
        refuse_if_lost(expected, stored)?;
        let rps = requests as f64 / elapsed.as_secs_f64();
        Ok(format!(
            "\n### http (Alertmanager receiver, embedded mode)\n\n\
             - Command: `cargo run --release -p causeway-benches --bin causeway-load -- http --requests {requests} --alerts-per-request {per_request} --concurrency {concurrency}`\n\
             - {requests} webhooks (version 4, {per_request} alert(s) each: {wanted} alerts, {expected} distinct after re-sends) from {concurrency} concurrent keep-alive connections; the client shares the 2 cores\n\n\
             | figure | value |\n|---|---|\n\
             | requests acknowledged (200) | {requests} in {secs:.2} s |\n\
             | sustained request rate | **{rps:.0} requests/s** ({eps:.0} alerts/s) |\n\
             | all events correlated and queryable after | {drained:.2} s |\n\
             | CPU of the process while posting | {cpu:.2} s ({cores:.2} cores busy) |\n\
             | CPU of the client (this harness) | {client_cpu:.2} s ({client_cores:.2} cores busy) |\n\
             | peak RSS | {rss:.0} MiB |\n\
             | events per engine batch (mean) | {batch:.1} |\n\
             | records per event-log group commit (mean) | {group:.1} |\n\
             | events accounted for (stored + too late) / distinct sent | {stored} / {expected} |\n",
            secs = elapsed.as_secs_f64(),
            eps = wanted as f64 / elapsed.as_secs_f64(),
            drained = drained.as_secs_f64(),
            cores = cpu / elapsed.as_secs_f64(),
            client_cores = client_cpu / elapsed.as_secs_f64(),
            rss = usage.peak_rss_mib(),
        ))
    }

    /// A topic filled before the engine starts; the engine drains it.
    async fn kafka(&self, n: usize, brokers: Option<String>) -> anyhow::Result<String> {
        let broker = Broker::start(brokers)?;
        let brokers = broker.address.clone();
        let dir = scratch()?;
        let w = self.workload(n);
        let events = generate(&w);
        let expected = distinct_ids(&events);
        let file = dir.path().join("events.jsonl");
        std::fs::write(&file, wire::cloudevents_jsonl(&events))?;
        let prefix = unique("load-kafka");
        let port = free_port()?;
        let config = write_config(dir.path(), &w, port, &kafka_yaml(&brokers, &prefix), "")?;
        eprintln!("kafka: producing {n} events to {prefix}.events …");
        let produce = Instant::now();
        let out = Command::new(&self.bin)
            .args(["import", "events"])
            .arg(&file)
            .arg("--config")
            .arg(&config)
            .output()
            .context("causeway import (produce)")?;
        ensure!(
            out.status.success(),
            "producing failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let produced = produce.elapsed();
        let start = Instant::now();
        let instance = Instance::start(&self.bin, &config, port).await?;
        let ready = start.elapsed();
        let mut first_seen = None;
        let deadline = Instant::now() + Duration::from_secs(900);
        let stored = loop {
            let got = count_distinct(&instance.base).await.unwrap_or(0);
            if got > 0 && first_seen.is_none() {
                first_seen = Some(start.elapsed());
            }
            if got >= expected || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let done = start.elapsed();
        let usage = instance.stop().await?;
        refuse_if_lost(expected, stored)?;
        let first = first_seen.unwrap_or(done);
        Ok(format!(
            "\n### kafka (pre-produced topic → engine)\n\n\
             - Command: `cargo run --release -p causeway-benches --bin causeway-load -- kafka --events {n}`\n\
             - Broker: tansu (`deploy/dev/kafka.sh`, memory storage, started fresh for the run) on loopback, 4 partitions; the topic holds {n} CloudEvents produced by `causeway import events` before the engine starts\n\n\
             | figure | value |\n|---|---|\n\
             | produce (import, acks=all, idempotent) | {produced:.2} s ({prate:.0} events/s) |\n\
             | engine start → ready | {ready:.2} s |\n\
             | start → every event correlated and queryable | {done:.2} s |\n\
             | sustained consume + correlate (first event queryable → last) | **{rate:.0} events/s** |\n\
             | CPU (user+sys) of the process | {cpu:.2} s |\n\
             | peak RSS | {rss:.0} MiB |\n\
             | events accounted for (stored + too late) / distinct produced | {stored} / {expected} |\n",
            produced = produced.as_secs_f64(),
            prate = n as f64 / produced.as_secs_f64(),
            ready = ready.as_secs_f64(),
            done = done.as_secs_f64(),
            rate = n as f64 / (done - first).as_secs_f64().max(1e-3),
            cpu = usage.cpu_seconds,
            rss = usage.peak_rss_mib(),
        ))
    }

    /// A live stream paced at `rate` events/s through `/ingest/events` into Kafka;
    /// incident versions read back from the incidents topic as they are written.
    async fn latency(
        &self,
        rate: f64,
        seconds: u64,
        brokers: Option<String>,
    ) -> anyhow::Result<String> {
        let broker = Broker::start(brokers)?;
        let brokers = broker.address.clone();
        let dir = scratch()?;
        let n = (rate * seconds as f64) as usize;
        // Live density: `rate` events per second of event time, with problems and
        // deploys often enough to see many incidents in a short run.
        let w = Workload {
            rate,
            scenarios_per_hour: 3_600.0,
            deploys_per_hour: 7_200.0,
            ..self.workload(n)
        };
        // The generator writes a scenario's later steps ahead of time; keep the
        // part of the stream that is dense at `rate` (its first `seconds`).
        let mut events = generate(&w);
        let begin = events.first().map_or(0, |e| e.ingested_at.as_micros());
        events.retain(|e| e.ingested_at.as_micros() < begin + seconds as i64 * 1_000_000);
        let n = events.len();
        let prefix = unique("load-latency");
        let port = free_port()?;
        let config = write_config(dir.path(), &w, port, &kafka_yaml(&brokers, &prefix), "")?;
        let instance = Instance::start(&self.bin, &config, port).await?;
        let settings = KafkaSettings {
            brokers: brokers.clone(),
            properties: BTreeMap::new(),
            topics: topics(&prefix),
            group_id: format!("{prefix}-tail"),
            partitions: 4,
            replication_factor: 1,
            delivery_timeout: Duration::from_secs(10),
        };
        wait_assigned(&instance.base, settings.partitions).await?;
        let tail = TopicTail::new(&settings, &settings.topics.incidents, true)?;
        let stop_tail = Arc::new(AtomicBool::new(false));
        // The engine keeps one watermark per partition of the events topic (keyed
        // by scope): the window-close model needs each scope's partition.
        // It stops reading once it has seen every scope: a reader of the whole
        // stream would take the broker's and the machine's time from the run.
        let events_tail = TopicTail::new(&settings, &settings.topics.events, true)?;
        let scopes = events
            .iter()
            .map(|e| e.scope.as_str())
            .collect::<HashSet<_>>()
            .len();
        let partitions_task = {
            let stop = stop_tail.clone();
            std::thread::spawn(move || -> anyhow::Result<HashMap<String, u32>> {
                let mut partitions = HashMap::new();
                while !stop.load(Ordering::Relaxed) && partitions.len() < scopes {
                    if let Some(m) = events_tail.poll(Duration::from_millis(50))? {
                        let scope = String::from_utf8_lossy(&m.key).into_owned();
                        partitions.insert(scope, m.partition);
                    }
                }
                Ok(partitions)
            })
        };
        let tail_task = {
            let stop = stop_tail.clone();
            std::thread::spawn(move || -> anyhow::Result<Vec<(f64, Option<f64>, Value)>> {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(m) = tail.poll(Duration::from_millis(50))? {
                        let at = wall();
                        let produced = m.timestamp_ms.map(|t| t as f64 / 1e3);
                        seen.push((at, produced, serde_json::from_slice(&m.payload)?));
                    }
                }
                Ok(seen)
            })
        };

        // Re-time the stream to now: event time and arrival keep their spacing.
        let t0 = wall() + 1.0;
        let first = events.first().map_or(0, |e| e.ingested_at.as_micros());
        let shift = (t0 * 1e6) as i64 - first;
        for e in &mut events {
            e.time = EventTime::from_micros(e.time.as_micros() + shift);
            e.ingested_at =
                causeway_rules::ProcessingTime::from_micros(e.ingested_at.as_micros() + shift);
        }
        let expected = distinct_ids(&events);
        eprintln!("latency: {n} events at {rate} events/s for {seconds} s …");
        let client = HttpPoster::new(&instance.base)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<(f64, String)>(256);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let failed = Arc::new(AtomicU64::new(0));
        let mut senders = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (client, rx, failed) = (client.clone(), rx.clone(), failed.clone());
            senders.spawn(async move {
                // Queued → answered, per request.
                let mut round_trips = Vec::new();
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some((queued, body)) = next else { break };
                    match client.post_json("/ingest/events", &[], body).await {
                        Ok(r) if r.status == 200 => round_trips.push(wall() - queued),
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                round_trips
            });
        }
        // (scope, source, wall seconds, event time) of each first send.
        let mut sent: Vec<(&str, &str, f64, i64)> = Vec::with_capacity(events.len());
        let mut first_sends = HashSet::new();
        let cpu_before = instance.cpu_seconds();
        let start = Instant::now();
        let mut i = 0;
        let mut behind = 0.0f64;
        while i < events.len() {
            let now = wall();
            let mut j = i;
            while j < events.len() && events[j].ingested_at.as_micros() as f64 / 1e6 <= now {
                j += 1;
            }
            if j > i {
                let batch = &events[i..j];
                let due = batch[0].ingested_at.as_micros() as f64 / 1e6;
                behind = behind.max(now - due);
                for e in batch {
                    // A re-send is no progress of its source (the engine ignores
                    // it for idleness too).
                    if first_sends.insert(e.id.as_str()) {
                        sent.push((&e.scope, &e.source, now, e.time.as_micros()));
                    }
                }
                tx.send((now, wire::cloudevents_batch(batch))).await?;
                i = j;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        drop(tx);
        let mut round_trips = Vec::new();
        while let Some(sent) = senders.join_next().await {
            round_trips.extend(sent?);
        }
        round_trips.sort_by(f64::total_cmp);
        let elapsed = start.elapsed();
        let cpu = instance.cpu_seconds() - cpu_before;
        // Idle sources release the watermark after `idle_timeout`; then wait for
        // stragglers of the incident stream.
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop_tail.store(true, Ordering::Relaxed);
        let seen = tail_task
            .join()
            .map_err(|_| anyhow::anyhow!("tail thread panicked"))??;
        let partitions = partitions_task
            .join()
            .map_err(|_| anyhow::anyhow!("events tail thread panicked"))??;
        let mut sends = SendLog::default();
        for (scope, source, at, time) in sent {
            let Some(&partition) = partitions.get(scope) else {
                anyhow::bail!("no event of scope {scope} was read back from the events topic");
            };
            sends.record(partition, source, at, time);
        }
        let failed = failed.load(Ordering::Relaxed);
        let stored = wait_for_count(&instance.base, expected, Duration::from_secs(60)).await?;
        let usage = instance.stop().await?;
        ensure!(failed == 0, "{failed} requests failed; no figure reported");
        refuse_if_lost(expected, stored)?;

        let timing = LatencyModel::read(&dir.path().join("data"))?;
        let mut past_close = Vec::new();
        // Those whose window closed after the first hold of the watermark: the
        // longest delay of a source that spoke, plus the idle timeout, from the
        // start. The first hold ends in one release of everything behind it.
        let warm_up = t0 + sends.longest_delay(&timing) + timing.config.idle_timeout.as_secs_f64();
        let mut past_close_steady = Vec::new();
        // The same figure split at the version's message timestamp (CreateTime:
        // when the engine produced it): the engine's part, and the harness's own
        // read-back through the broker (it shares the two cores).
        let mut produced_past_close = Vec::new();
        let mut read_back = Vec::new();
        let mut total = Vec::new();
        let mut by_rule: BTreeMap<String, usize> = BTreeMap::new();
        let mut excluded = 0usize;
        let mut firsts = HashSet::new();
        // CAUSEWAY_LOAD_DUMP=FILE: one line per measured incident, to look into.
        let mut dump = std::env::var_os("CAUSEWAY_LOAD_DUMP")
            .map(std::fs::File::create)
            .transpose()?;
        if let Some(path) = std::env::var_os("CAUSEWAY_LOAD_DUMP") {
            // Beside it, what was sent: partition, source, wall time, event time.
            let mut path = path;
            path.push(".sends");
            let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
            for ((partition, source), sends) in &sends.sources {
                for (at, time) in sends {
                    writeln!(f, "{partition} {source} {at:.3} {:.3}", *time as f64 / 1e6)?;
                }
            }
        }
        for (at, produced, v) in &seen {
            let rule = v["rule_id"].as_str().unwrap_or("?").to_owned();
            let first_version = v["version"].as_u64() == Some(1);
            if !first_version || !firsts.insert(v["incident_id"].to_string()) {
                continue;
            }
            if WINDOW_RULES.contains(&rule.as_str()) {
                excluded += 1;
                continue;
            }
            let Some(updated) = v["updated_at"]
                .as_str()
                .and_then(|s| EventTime::parse_rfc3339(s).ok())
            else {
                continue;
            };
            // The incident's partition is its scope's: event times are not unique
            // across scopes (the workload sends many alerts at one instant).
            let Some(&partition) = v["scope"].as_str().and_then(|s| partitions.get(s)) else {
                excluded += 1;
                continue;
            };
            let Some(sent) = sends.sent_at(partition, updated.as_micros()) else {
                excluded += 1;
                continue;
            };
            let close = sends.close(&timing, partition, updated.as_micros(), sent);
            if let Some(dump) = dump.as_mut() {
                writeln!(
                    dump,
                    "{at:.3} {sent:.3} {close:.3} {rule} {} {} {:.3} {partition}",
                    v["updated_at"],
                    v["incident_id"],
                    produced.unwrap_or(f64::NAN)
                )?;
            }
            past_close.push(at - close);
            if let Some(produced) = *produced {
                produced_past_close.push(produced - close);
                read_back.push(at - produced);
            }
            if close > warm_up {
                past_close_steady.push(at - close);
            }
            total.push(at - sent);
            *by_rule.entry(rule).or_default() += 1;
        }
        ensure!(
            !past_close.is_empty(),
            "no incident was opened during the run; no latency to report"
        );
        past_close.sort_by(f64::total_cmp);
        past_close_steady.sort_by(f64::total_cmp);
        produced_past_close.sort_by(f64::total_cmp);
        read_back.sort_by(f64::total_cmp);
        total.sort_by(f64::total_cmp);
        let ms = |v: &[f64], q: f64| percentile(v, q) * 1e3;
        let three = |v: &[f64]| {
            if v.is_empty() {
                "none (no message timestamps)".to_owned()
            } else {
                format!(
                    "{:.1} / {:.1} / {:.1} ms",
                    ms(v, 0.5),
                    ms(v, 0.99),
                    ms(v, 1.0)
                )
            }
        };
        Ok(format!(
            "\n### latency (paced live stream over Kafka)\n\n\
             - Command: `cargo run --release -p causeway-benches --bin causeway-load -- latency --rate {rate} --seconds {seconds}`\n\
             - {n} events at {rate} events/s of event time = wall time, posted as CloudEvents batches to `/ingest/events` (each answered after the broker's acks=all), engine in the consumer group, incident versions read from `{prefix}.incidents` by a group-less reader; watermark: the built-in defaults ({watermark})\n\
             - *Window close* of an incident's first version = the moment the watermark can pass its newest event, computed from what the harness sent: every source that holds the watermark has sent an event at least its delay later, or has been silent for the idle timeout. Rules whose window is an absence or a day of cost (`{window_rules}`) are not counted ({excluded} incidents).\n\n\
             | figure | value |\n|---|---|\n\
             | sustained ingest | **{eps:.0} events/s** over {secs:.1} s (sender at most {behind:.0} ms behind schedule) |\n\
             | a batch queued by the harness → answered (acknowledged by the broker): p50 / p99 / max | {r50:.1} / {r99:.1} / {rmax:.1} ms |\n\
             | incidents opened and measured | {count} ({rules}) |\n\
             | past window close: p50 / p99 / max | **{p50:.1} / {p99:.1} / {max:.1} ms** |\n\
             | of which closed after the watermark's first hold (the first {warm:.0} s): count, p50 / p99 / max | {steady} |\n\
             | split at the message timestamp: produced by the engine − window close, p50 / p99 / max | {split} |\n\
             | split at the message timestamp: read back by the harness − produced, p50 / p99 / max | {back} |\n\
             | ingest → incident (newest event's arrival → version on the topic): p50 / p99 / max | {t50:.0} / {t99:.0} / {tmax:.0} ms |\n\
             | CPU of the process while streaming | {cpu:.1} s ({cores:.2} cores busy) |\n\
             | peak RSS | {rss:.0} MiB |\n\
             | events accounted for (stored + too late) / distinct sent | {stored} / {expected} |\n",
            window_rules = WINDOW_RULES.join("`, `"),
            watermark = timing.describe(),
            eps = n as f64 / elapsed.as_secs_f64(),
            secs = elapsed.as_secs_f64(),
            behind = behind * 1e3,
            count = past_close.len(),
            rules = by_rule
                .iter()
                .map(|(r, c)| format!("{r} {c}"))
                .collect::<Vec<_>>()
                .join(", "),
            p50 = ms(&past_close, 0.5),
            p99 = ms(&past_close, 0.99),
            max = ms(&past_close, 1.0),
            warm = warm_up - t0,
            steady = if past_close_steady.is_empty() {
                "none".to_owned()
            } else {
                format!(
                    "{} incidents, {:.1} / {:.1} / {:.1} ms",
                    past_close_steady.len(),
                    ms(&past_close_steady, 0.5),
                    ms(&past_close_steady, 0.99),
                    ms(&past_close_steady, 1.0)
                )
            },
            split = three(&produced_past_close),
            back = three(&read_back),
            r50 = ms(&round_trips, 0.5),
            r99 = ms(&round_trips, 0.99),
            rmax = ms(&round_trips, 1.0),
            t50 = ms(&total, 0.5),
            t99 = ms(&total, 0.99),
            tmax = ms(&total, 1.0),
            cores = cpu / elapsed.as_secs_f64(),
            rss = usage.peak_rss_mib(),
        ))
    }

    /// Peak RSS of `causeway import` with one source's delay so long that the
    /// watermark stays behind every event until the import ends.
    async fn buffer(&self, n: usize) -> anyhow::Result<String> {
        let dir = scratch()?;
        let w = self.workload(n);
        let events = generate(&w);
        let expected = distinct_ids(&events);
        let config = write_config(dir.path(), &w, 0, "", HOLD_WATERMARK)?;
        eprintln!("buffer: {n} events with the watermark held back …");
        let (elapsed, usage) = self.import_file(dir.path(), &events, &config)?;
        let stored = self.sql_local(&config, ACCOUNTED)?;
        refuse_if_lost(expected, stored)?;
        Ok(format!(
            "\n### buffer (peak RSS with every event buffered)\n\n\
             - Command: `cargo run --release -p causeway-benches --bin causeway-load -- buffer --events {n}`\n\
             - `causeway import events` of {n} events with Alertmanager's out-of-orderness set to 1000 h: the watermark stays behind every event, so each waits in the reorder buffer until the import ends and the sources go idle\n\n\
             | figure | value |\n|---|---|\n\
             | peak RSS | **{rss:.0} MiB** ({per:.0} B per event) |\n\
             | wall time | {secs:.2} s |\n\
             | events accounted for (stored + too late) / distinct sent | {stored} / {expected} |\n",
            rss = usage.peak_rss_mib(),
            per = usage.peak_rss_kib as f64 * 1024.0 / n as f64,
            secs = elapsed.as_secs_f64(),
        ))
    }

    /// Writes `events` as a CloudEvents file under `dir` and runs `causeway import
    /// events` on it to the end: wall time and the process's usage.
    fn import_file(
        &self,
        dir: &Path,
        events: &[Event],
        config: &Path,
    ) -> anyhow::Result<(Duration, Usage)> {
        let file = dir.join("events.jsonl");
        std::fs::write(&file, wire::cloudevents_jsonl(events))?;
        // On disk before the clock starts: an import reads a file that exists, and
        // the kernel writing back the harness's own 400 MB meanwhile cost the
        // import a quarter more CPU.
        std::fs::File::open(&file)?.sync_all()?;
        let start = Instant::now();
        let child = Command::new(&self.bin)
            .args(["import", "events"])
            .arg(&file)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start causeway import")?;
        let (output, usage) = Monitor::wait(child)?;
        let elapsed = start.elapsed();
        ensure!(
            output.status.success(),
            "causeway import failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok((elapsed, usage))
    }

    /// One number from `causeway sql` over the data dir beside `config`.
    fn sql_local(&self, config: &Path, query: &str) -> anyhow::Result<u64> {
        let data_dir = config.with_file_name("data");
        let out = Command::new(&self.bin)
            .args(["sql", "--format", "json", "--data-dir"])
            .arg(data_dir)
            .arg(query)
            .output()
            .context("causeway sql")?;
        ensure!(
            out.status.success(),
            "causeway sql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        first_number(&serde_json::from_slice(&out.stdout)?)
    }
}

/// Every distinct event sent that the history accounts for: correlated
/// (`events`) or refused as too late (`late_events`, counted and kept, never
/// dropped). Causeway's own events (a runbook kernel's self-alert) are not ours.
const ACCOUNTED: &str = "SELECT count(DISTINCT event_id) AS n FROM \
(SELECT event_id, source FROM events UNION ALL SELECT event_id, source FROM late_events) \
WHERE source <> 'causeway'";

/// The deploy → alert correlation of the workload as one batch interval join.
const DEPLOY_ALERT_JOIN: &str = "SELECT count(*) AS pairs \
FROM events d JOIN events a ON a.scope = d.scope AND a.entity = d.entity \
AND a.time >= d.time AND a.time <= d.time + INTERVAL '30 minutes' \
WHERE d.kind = 'deploy' AND d.status = 'success' AND a.kind = 'alert' AND a.status = 'firing'";

async fn datafusion_join(events_dir: &Path, runs: usize) -> anyhow::Result<(u64, Vec<f64>)> {
    let ctx = SessionContext::new();
    let path = format!("{}/", events_dir.display());
    ctx.register_parquet("events", &path, ParquetReadOptions::default())
        .await?;
    let mut secs = Vec::new();
    let mut pairs = None;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let batches = ctx.sql(DEPLOY_ALERT_JOIN).await?.collect().await?;
        secs.push(start.elapsed().as_secs_f64());
        let got = batches
            .first()
            .and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .map(|a| a.value(0))
            })
            .context("the join returned no count")? as u64;
        ensure!(
            pairs.is_none_or(|p| p == got),
            "DataFusion gave different counts"
        );
        pairs = Some(got);
    }
    Ok((pairs.unwrap_or(0), secs))
}

/// Rules whose first version waits for a window (an absence, a day of cost)
/// rather than for the event that completes it.
const WINDOW_RULES: &[&str] = &[
    "deploy-not-rolled-back",
    "failed-deploy-not-recovered",
    "scaling-cost-increase",
    "incident-cost",
];

const HOLD_WATERMARK: &str = "  watermark:
    idle_timeout: 2s
    default: {delay: 10s, allowed_lateness: 10m}
    sources:
      alertmanager: {delay: 1000h, allowed_lateness: 2000h}
      cost: {delay: 0s, allowed_lateness: 72h, drives_watermark: false}
";

/// The watermark settings the engine runs with (read back from the settings it
/// saved at start, so the model cannot drift from the binary's defaults).
struct LatencyModel {
    config: causeway_engine::WatermarkConfig,
}

impl LatencyModel {
    fn read(data_dir: &Path) -> anyhow::Result<LatencyModel> {
        let path = data_dir.join("engine/settings.yaml");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let settings: Value = serde_yaml::from_str(&text)?;
        let config = serde_json::from_value(settings["engine"]["watermark"].clone())
            .context("engine.watermark in the saved settings")?;
        Ok(LatencyModel { config })
    }

    fn describe(&self) -> String {
        let c = &self.config;
        let mut parts = vec![format!(
            "idle after {}, others {} out-of-orderness",
            humantime::format_duration(c.idle_timeout),
            humantime::format_duration(c.default.delay)
        )];
        for (source, t) in &c.sources {
            parts.push(if t.drives_watermark {
                format!("{source} {}", humantime::format_duration(t.delay))
            } else {
                format!("{source} never holds it")
            });
        }
        parts.join(", ")
    }
}

/// What the harness sent, per partition of the events topic and source:
/// (wall seconds, event time µs) of each first send, in send order.
#[derive(Default)]
struct SendLog {
    sources: BTreeMap<(u32, String), Vec<(f64, i64)>>,
    /// The first send of an event with this event time in this partition.
    by_time: HashMap<(u32, i64), f64>,
}

impl SendLog {
    fn record(&mut self, partition: u32, source: &str, at: f64, time: i64) {
        self.sources
            .entry((partition, source.to_owned()))
            .or_default()
            .push((at, time));
        // A re-send keeps its alert's time; the first send is what opened things.
        self.by_time.entry((partition, time)).or_insert(at);
    }

    /// The longest delay of a source that was sent and holds the watermark (s).
    fn longest_delay(&self, m: &LatencyModel) -> f64 {
        self.sources
            .keys()
            .map(|(_, source)| m.config.timing(source))
            .filter(|t| t.drives_watermark)
            .map(|t| t.delay.as_secs_f64())
            .fold(0.0, f64::max)
    }

    fn sent_at(&self, partition: u32, time: i64) -> Option<f64> {
        self.by_time.get(&(partition, time)).copied()
    }

    /// The earliest wall time at which `partition`'s watermark can pass `t` (µs),
    /// given the event at `t` arrived at `from`: the first moment at which every
    /// driving source heard from in that partition has, at once, either sent an
    /// event at or past `t` + its delay or been silent for the idle timeout. (A
    /// source that went idle and speaks again holds the watermark again, so the
    /// sources' conditions must hold at the same moment.)
    fn close(&self, m: &LatencyModel, partition: u32, t: i64, from: f64) -> f64 {
        let idle = m.config.idle_timeout.as_secs_f64();
        let mut p = from;
        loop {
            let mut next = p;
            let here = self
                .sources
                .range((partition, String::new())..)
                .take_while(|((part, _), _)| *part == partition);
            for ((_, source), sends) in here {
                let timing = m.config.timing(source);
                let heard = sends.partition_point(|s| s.0 <= p);
                if !timing.drives_watermark || heard == 0 {
                    continue;
                }
                let need = t + timing.delay.as_micros() as i64;
                // Sends are in wall order; event times nearly so: look from a
                // margin before `from` for arrival jitter.
                let begin = sends.partition_point(|s| s.0 < from - 120.0);
                let last = sends[heard - 1].0;
                if sends[begin.min(heard)..heard].iter().any(|s| s.1 >= need) || last <= p - idle {
                    continue;
                }
                // Holding: until it reaches `need` or falls silent.
                let reached = sends[heard..]
                    .iter()
                    .find(|s| s.1 >= need)
                    .map_or(f64::INFINITY, |s| s.0);
                next = next.max(reached.min(last + idle));
            }
            if next <= p {
                return p;
            }
            p = next;
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 0.5)
}

fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn distinct_ids(events: &[Event]) -> u64 {
    events.iter().map(|e| &e.id).collect::<HashSet<_>>().len() as u64
}

fn refuse_if_lost(expected: u64, stored: u64) -> anyhow::Result<()> {
    ensure!(
        stored == expected,
        "events lost: the history accounts for {stored} distinct events (stored or too late) of {expected} sent; no figure reported"
    );
    Ok(())
}

fn first_number(rows: &Value) -> anyhow::Result<u64> {
    rows.as_array()
        .and_then(|r| r.first())
        .and_then(Value::as_object)
        .and_then(|o| o.values().next())
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .with_context(|| format!("expected one number, got {rows}"))
}

async fn count_distinct(base: &str) -> anyhow::Result<u64> {
    let client = HttpPoster::new(base)?;
    let r = client
        .post_json(
            "/api/v1/sql",
            &[],
            json!({ "query": ACCOUNTED }).to_string(),
        )
        .await?;
    ensure!(r.status == 200, "SQL answered {}: {}", r.status, r.text());
    first_number(&serde_json::from_slice(&r.body)?)
}

/// One keep-alive HTTP/1.1 connection on hyper's connection-level client: no pool,
/// no URL parsing or timers per request. The client shares the two cores with the
/// server, and reqwest spent about as much CPU per request as the server did.
struct Connection {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
    authority: String,
}

impl Connection {
    async fn open(base: &str) -> anyhow::Result<Connection> {
        let authority = base
            .strip_prefix("http://")
            .with_context(|| format!("{base} is not an http:// address"))?
            .trim_end_matches('/')
            .to_owned();
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .with_context(|| format!("connecting to {authority}"))?;
        stream.set_nodelay(true)?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        let driver = tokio::spawn(async move {
            if let Err(error) = conn.await {
                eprintln!("http connection ended: {error}");
            }
        });
        Ok(Connection {
            send,
            driver,
            authority,
        })
    }

    /// POSTs a JSON body; the response's status and body.
    async fn post_json(&mut self, path: &str, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        self.send.ready().await?;
        let response = self.send.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Closes the connection and waits for its driver.
    async fn close(self) {
        drop(self.send);
        let _ = self.driver.await;
    }
}

/// This process's user + system CPU so far.
fn own_cpu_seconds() -> f64 {
    let (peak, cpu) = (AtomicU64::new(0), AtomicU64::new(0));
    sample(std::process::id(), &peak, &cpu);
    cpu.load(Ordering::Relaxed) as f64 / CLOCK_TICKS_PER_SECOND
}

/// The values of every series of metric `name` in a Prometheus text exposition.
fn metric_values<'a>(metrics: &'a str, name: &'a str) -> impl Iterator<Item = f64> + 'a {
    metrics
        .lines()
        .filter(move |l| l.starts_with(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
}

/// From `/metrics`: events the engine correlated per batch
/// (`causeway_engine_batch_events`) and records per group commit of the embedded log.
async fn batching(base: &str) -> anyhow::Result<(f64, f64)> {
    let metrics = HttpPoster::new(base)?.get("/metrics").await?.text();
    let value = |name: &str| {
        metric_values(&metrics, name)
            .next()
            .with_context(|| format!("/metrics has no {name}"))
    };
    let per = |sum: &str, count: &str| -> anyhow::Result<f64> {
        Ok(value(sum)? / value(count)?.max(1.0))
    };
    Ok((
        per(
            "causeway_engine_batch_events_sum",
            "causeway_engine_batch_events_count",
        )?,
        per(
            "causeway_eventlog_appended_records_total",
            "causeway_eventlog_sync_duration_seconds_count",
        )?,
    ))
}

/// Waits until the engine owns every partition of the events topic (the group
/// has settled), so the first seconds of a stream do not measure the join.
async fn wait_assigned(base: &str, partitions: u32) -> anyhow::Result<()> {
    let client = HttpPoster::new(base)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let metrics = client.get("/metrics").await?.text();
        let assigned: f64 = metric_values(&metrics, "causeway_kafka_assigned_partitions").sum();
        if assigned >= f64::from(partitions) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the engine was assigned {assigned} of {partitions} partitions after 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the history until it holds `expected` distinct events, or returns what
/// it holds when `limit` passes without progress.
async fn wait_for_count(base: &str, expected: u64, limit: Duration) -> anyhow::Result<u64> {
    let mut last = 0;
    let mut last_change = Instant::now();
    loop {
        let got = count_distinct(base).await?;
        if got >= expected {
            return Ok(got);
        }
        if got != last {
            last = got;
            last_change = Instant::now();
        } else if last_change.elapsed() > limit {
            return Ok(got);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A scratch directory, removed afterwards unless `CAUSEWAY_LOAD_KEEP` is set.
struct Scratch {
    path: PathBuf,
    _removed_on_drop: Option<tempfile::TempDir>,
}

impl Scratch {
    fn path(&self) -> &Path {
        &self.path
    }
}

fn scratch() -> anyhow::Result<Scratch> {
    let dir = tempfile::Builder::new()
        .prefix("causeway-load-")
        .tempdir()?;
    if std::env::var_os("CAUSEWAY_LOAD_KEEP").is_some() {
        eprintln!("keeping {}", dir.path().display());
        return Ok(Scratch {
            path: dir.keep(),
            _removed_on_drop: None,
        });
    }
    Ok(Scratch {
        path: dir.path().to_owned(),
        _removed_on_drop: Some(dir),
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{name}-{}-{nanos}", std::process::id())
}

fn topics(prefix: &str) -> Topics {
    Topics {
        events: format!("{prefix}.events"),
        incidents: format!("{prefix}.incidents"),
        late: format!("{prefix}.late"),
        actions: format!("{prefix}.actions"),
        state: format!("{prefix}.state"),
    }
}

fn kafka_yaml(brokers: &str, prefix: &str) -> String {
    format!(
        "kafka:
  brokers: {brokers}
  group_id: {prefix}-engines
  partitions: 4
  delivery_timeout: 10s
  topics:
    events: {prefix}.events
    incidents: {prefix}.incidents
    late: {prefix}.late
    actions: {prefix}.actions
    state: {prefix}.state
"
    )
}

/// Where the harness's own broker listens (the tests' broker is on 19092).
const OWN_BROKER_PORT: &str = "19094";

/// The broker a Kafka mode runs against: the one given, or a fresh tansu of the
/// harness's own with in-memory storage (`deploy/dev/kafka.sh`,
/// `CAUSEWAY_KAFKA_STORAGE=memory`), stopped when the mode ends. In memory because
/// tansu 0.6's SQLite storage panics under the 10 k events/s stream, and fresh
/// because memory storage keeps every message of every run (GBs of state saves).
struct Broker {
    address: String,
    own: bool,
}

impl Broker {
    fn start(given: Option<String>) -> anyhow::Result<Broker> {
        if let Some(address) = given {
            return Ok(Broker {
                address,
                own: false,
            });
        }
        // A broker left over by an interrupted run holds its old messages.
        own_broker("reset")?;
        let out = own_broker("up")?;
        Ok(Broker {
            address: String::from_utf8_lossy(&out).trim().to_owned(),
            own: true,
        })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.own
            && let Err(e) = own_broker("down")
        {
            eprintln!("stopping the harness's broker: {e:#}");
        }
    }
}

/// Runs `deploy/dev/kafka.sh <command>` for the harness's own broker; its stdout.
fn own_broker(command: &str) -> anyhow::Result<Vec<u8>> {
    let out = Command::new(format!("{ROOT}/deploy/dev/kafka.sh"))
        .arg(command)
        .env("CAUSEWAY_KAFKA_PORT", OWN_BROKER_PORT)
        .env("CAUSEWAY_KAFKA_STORAGE", "memory")
        .output()
        .with_context(|| format!("run deploy/dev/kafka.sh {command}"))?;
    ensure!(
        out.status.success(),
        "deploy/dev/kafka.sh {command} failed (is tansu installed? deploy/dev/kafka.sh install): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// Writes `causeway.yaml` under `dir`: the workload's catalog (JSON is YAML),
/// data under `dir/data`, HTTP on `port` (0: import only).
fn write_config(
    dir: &Path,
    w: &Workload,
    port: u16,
    kafka: &str,
    watermark: &str,
) -> anyhow::Result<PathBuf> {
    let path = dir.join("causeway.yaml");
    let listen = if port == 0 {
        String::new()
    } else {
        format!("server:\n  listen: 127.0.0.1:{port}\n")
    };
    let text = format!(
        "version: 1\ndata_dir: {data}\n{listen}receivers:\n  max_concurrent_requests: 1024\nengine:\n  commit_interval: 1s\n{watermark}{kafka}catalog: {catalog}\n",
        data = dir.join("data").display(),
        catalog = serde_json::to_string(&catalog(w))?,
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A running `causeway run`.
struct Instance {
    /// Taken by `stop`; a dropped instance (an error on the way) is killed.
    child: Option<Child>,
    base: String,
    monitor: Option<Monitor>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Instance {
    async fn start(bin: &Path, config: &Path, port: u16) -> anyhow::Result<Instance> {
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(config)
            // CAUSEWAY_LOAD_LOG: the engine's log filter, to look into a run.
            .env(
                "CAUSEWAY_LOG",
                std::env::var("CAUSEWAY_LOAD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start causeway run")?;
        let monitor = Monitor::start(child.id());
        let base = format!("http://127.0.0.1:{port}");
        let mut instance = Instance {
            child: Some(child),
            base: base.clone(),
            monitor: Some(monitor),
        };
        let client = HttpPoster::new(&base)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get("/readyz").await
                && r.status == 200
            {
                break;
            }
            ensure!(Instant::now() < deadline, "causeway run never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        instance.base = base;
        Ok(instance)
    }

    fn cpu_seconds(&self) -> f64 {
        self.monitor.as_ref().map_or(0.0, Monitor::cpu_seconds)
    }

    /// SIGTERM, then the process's totals.
    async fn stop(mut self) -> anyhow::Result<Usage> {
        let (Some(child), Some(monitor)) = (self.child.take(), self.monitor.take()) else {
            bail!("instance already stopped");
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let (out, usage) = tokio::task::spawn_blocking(move || monitor.finish(child)).await??;
        ensure!(
            out.status.success(),
            "causeway run exited with {}",
            out.status
        );
        Ok(usage)
    }
}

/// CPU and peak RSS of a child process, sampled from `/proc`.
struct Monitor {
    pid: u32,
    peak_kib: Arc<AtomicU64>,
    cpu_ticks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    cpu_seconds: f64,
    peak_rss_kib: u64,
}

impl Usage {
    fn peak_rss_mib(&self) -> f64 {
        self.peak_rss_kib as f64 / 1024.0
    }
}

const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

impl Monitor {
    fn start(pid: u32) -> Monitor {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let cpu_ticks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, cpu, stop) = (peak_kib.clone(), cpu_ticks.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if !sample(pid, &peak, &cpu) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Monitor {
            pid,
            peak_kib,
            cpu_ticks,
            stop,
            thread: Some(thread),
        }
    }

    fn cpu_seconds(&self) -> f64 {
        self.cpu_ticks.load(Ordering::Relaxed) as f64 / CLOCK_TICKS_PER_SECOND
    }

    /// Runs a child to its end under a monitor.
    fn wait(child: Child) -> anyhow::Result<(std::process::Output, Usage)> {
        let m = Monitor::start(child.id());
        m.finish(child)
    }

    /// Waits for the child to exit, reading its last CPU figure while it is a
    /// zombie (before it is reaped), then reaps it.
    fn finish(mut self, child: Child) -> anyhow::Result<(std::process::Output, Usage)> {
        loop {
            let state = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
                .ok()
                .and_then(|s| s.rsplit(')').next().map(|r| r.trim().starts_with('Z')));
            match state {
                Some(true) | None => break,
                Some(false) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        sample(self.pid, &self.peak_kib, &self.cpu_ticks);
        let out = child.wait_with_output()?;
        Ok((
            out,
            Usage {
                cpu_seconds: self.cpu_seconds(),
                peak_rss_kib: self.peak_kib.load(Ordering::Relaxed),
            },
        ))
    }
}

/// Reads `/proc/<pid>`: peak RSS (`VmHWM`, gone once the process exits) and
/// user + system CPU ticks. False when the process is gone.
fn sample(pid: u32, peak: &AtomicU64, cpu: &AtomicU64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Fields after the parenthesised command: state is 3rd, utime 14th, stime 15th.
    if let Some(rest) = stat.rsplit(')').next() {
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 13 {
            let ticks = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
            cpu.fetch_max(ticks, Ordering::Relaxed);
        }
    }
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
        && let Some(kib) = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    {
        peak.fetch_max(kib, Ordering::Relaxed);
    }
    true
}

#[cfg(test)]
mod tests {
    use causeway_engine::{SourceTiming, WatermarkConfig};

    use super::*;

    fn model() -> LatencyModel {
        let timing = SourceTiming {
            delay: Duration::from_secs(1),
            allowed_lateness: Duration::from_secs(600),
            drives_watermark: true,
        };
        LatencyModel {
            config: WatermarkConfig {
                idle_timeout: Duration::from_secs(2),
                default: timing,
                sources: [(
                    "cost".to_owned(),
                    SourceTiming {
                        drives_watermark: false,
                        ..timing
                    },
                )]
                .into(),
            },
        }
    }

    fn us(s: f64) -> i64 {
        (s * 1e6) as i64
    }

    /// Alertmanager sends every 100 ms from 0 to 30 s, event time = wall time.
    fn busy() -> SendLog {
        let mut log = SendLog::default();
        for i in 0..300 {
            let t = f64::from(i) / 10.0;
            log.record(0, "alertmanager", t, us(t));
        }
        log
    }

    #[test]
    fn a_busy_source_closes_the_window_one_delay_later() {
        let log = busy();
        let close = log.close(&model(), 0, us(10.0), 10.0);
        assert!((close - 11.0).abs() < 1e-6, "{close}");
    }

    #[test]
    fn a_quiet_source_holds_the_window_until_it_is_idle() {
        let mut log = busy();
        log.record(0, "github", 9.5, us(9.5));
        // GitHub never reaches 11 s of event time: it stops holding at 9.5 + 2 s.
        let close = log.close(&model(), 0, us(10.0), 10.0);
        assert!((close - 11.5).abs() < 1e-6, "{close}");
        // Another GitHub event at 11.2 s of event time reaches it sooner.
        log.record(0, "github", 10.4, us(11.2));
        let close = log.close(&model(), 0, us(10.0), 10.0);
        assert!((close - 11.0).abs() < 1e-6, "{close}");
    }

    #[test]
    fn late_feeds_and_sources_not_yet_heard_from_do_not_hold_it() {
        let mut log = busy();
        log.record(0, "cost", 1.0, us(-86_400.0));
        log.record(0, "cloudtrail", 20.0, us(20.0));
        let close = log.close(&model(), 0, us(10.0), 10.0);
        assert!((close - 11.0).abs() < 1e-6, "{close}");
    }

    #[test]
    fn a_source_that_speaks_again_holds_the_window_again() {
        let mut log = busy();
        // Kubernetes events reach 10 s + 1 s of event time at 13 s and stay
        // active until then. GitHub (event time well behind) is idle from 11 s to
        // 12 s, but at 13 s it holds again (it spoke at 12 s) until 14 s.
        log.record(0, "k8s_event", 9.0, us(9.0));
        log.record(0, "k8s_event", 10.9, us(9.5));
        log.record(0, "k8s_event", 12.5, us(10.0));
        log.record(0, "k8s_event", 13.0, us(11.0));
        log.record(0, "github", 9.0, us(1.0));
        log.record(0, "github", 12.0, us(2.0));
        let close = log.close(&model(), 0, us(10.0), 10.0);
        assert!((close - 14.0).abs() < 1e-6, "{close}");
    }

    #[test]
    fn an_event_time_shared_by_partitions_is_sent_once_in_each() {
        // The workload sends alerts of different scopes at the same microsecond:
        // each partition keeps its own first send of that time.
        let mut log = SendLog::default();
        log.record(3, "alertmanager", 0.5, us(0.2));
        log.record(1, "alertmanager", 0.7, us(0.2));
        log.record(1, "alertmanager", 0.9, us(0.2));
        assert_eq!(log.sent_at(3, us(0.2)), Some(0.5));
        assert_eq!(log.sent_at(1, us(0.2)), Some(0.7));
        assert_eq!(log.sent_at(0, us(0.2)), None);
    }

    #[test]
    fn other_partitions_do_not_hold_it() {
        let mut log = busy();
        log.record(1, "github", 9.5, us(1.0));
        let close = log.close(&model(), 0, us(10.0), 10.0);
        assert!((close - 11.0).abs() < 1e-6, "{close}");
    }

    #[test]
    fn the_first_hold_lasts_the_longest_delay_of_a_source_that_holds() {
        let mut m = model();
        m.config.sources.insert(
            "github".to_owned(),
            SourceTiming {
                delay: Duration::from_secs(30),
                ..m.config.default
            },
        );
        let mut log = busy();
        assert!((log.longest_delay(&m) - 1.0).abs() < 1e-9);
        // Cost never holds the watermark, whatever its delay.
        m.config.sources.get_mut("cost").expect("cost").delay = Duration::from_secs(99);
        log.record(1, "cost", 5.0, us(5.0));
        assert!((log.longest_delay(&m) - 1.0).abs() < 1e-9);
        log.record(1, "github", 9.5, us(1.0));
        assert!((log.longest_delay(&m) - 30.0).abs() < 1e-9);
    }
}
