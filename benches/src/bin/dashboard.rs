//! Issue 6 item 7: how fast Causeway's SQL answers a dashboard's questions over a
//! large history, next to DuckDB reading the same Parquet files in the same run.
//!
//! Why this exists: the history is plain Parquet, so anyone can point DuckDB at it.
//! If our SQL surface (DataFusion behind `HistoryReader`, with its
//! `incidents_latest` view, snapshot listing and limits) is much slower on the
//! queries a dashboard runs, we want to know which query and why, with figures
//! taken side by side on one machine.
//!
//! What it does: generates, from a seed, N events over several days and M
//! incidents, each with versions (open → updated → resolved) and edges to real
//! events, written by the engine's own writer (`History`, one commit per chunk of
//! events) so the layout is exactly what the engine writes:
//! `<dir>/<table>/dt=YYYY-MM-DD/part-<seq>.parquet`. Then it times four dashboard
//! queries through `HistoryReader::query`, runs `benches/load/duckdb_dashboard.py`
//! on the same directory, and prints both medians and their ratio — only when both
//! engines returned the same rows.
//!
//! ```text
//! cargo run --release -p causeway-benches --bin causeway-dashboard-bench -- \
//!     --events 10000000 --incidents 1000000 --dir /tmp/dashboard-history --runs 5
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use causeway_benches::{Rng, service_name};
use causeway_engine::schema::{edges_batch, events_batch, incidents_batch};
use causeway_engine::{History, HistoryReader, QueryLimits};
use causeway_rules::{
    EdgeRole, Event, EventId, EventKind, EventTime, IncidentEdge, IncidentState, IncidentVersion,
    ProcessingTime, Severity,
};
use clap::{Parser, ValueEnum};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use serde_json::{Value, json};

/// 2024-05-01T00:00:00Z: the history starts on a day boundary.
const START_US: i64 = 1_714_521_600_000_000;
const SEC: i64 = 1_000_000;
const DAY: i64 = 86_400 * SEC;
const SERVICES: usize = 200;
const CLUSTERS: usize = 3;
/// Written last into a generated directory: a directory without it is an
/// interrupted generation and is never reused.
const MARKER: &str = "causeway-dashboard-bench.json";
/// Bumped whenever the generator changes what it writes, so old directories are
/// not reused as if they were the same history.
const GENERATOR: u32 = 1;
const TABLES: [&str; 3] = ["events", "incidents", "incident_events"];

#[derive(Debug, Parser)]
#[command(
    name = "causeway-dashboard-bench",
    about = "Dashboard queries over a generated history: Causeway's SQL (DataFusion) next to DuckDB on the same Parquet files"
)]
struct Args {
    /// Events to generate.
    #[arg(long, default_value_t = 10_000_000)]
    events: usize,
    /// Incidents to generate (each has several versions and edges).
    #[arg(long, default_value_t = 1_000_000)]
    incidents: usize,
    /// Days of event time the history covers (at least 7: the dashboard looks at
    /// the last 7).
    #[arg(long, default_value_t = 8)]
    days: u32,
    /// Events per commit: bounds memory while generating, and sets how many files
    /// each day has.
    #[arg(long, default_value_t = 500_000)]
    chunk: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// History directory: reused when its marker records the same parameters,
    /// generated when absent or empty. Default: a temporary directory, removed at
    /// the end.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Timed runs of each query (the median is reported), after `--warmup`
    /// untimed ones.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Memory limit of each Causeway query, in GiB.
    #[arg(long, default_value_t = 8)]
    memory_gib: usize,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Also print DataFusion's EXPLAIN ANALYZE of each query.
    #[arg(long)]
    explain: bool,
    /// A DataFusion setting (`key=value`, repeatable) for a what-if column: the
    /// same queries on a session built like Causeway's (same files, schemas,
    /// `incidents_latest`, two partitions, memory limit) with these settings on
    /// top, e.g. `datafusion.execution.parquet.pushdown_filters=true`.
    #[arg(long = "what-if", value_name = "KEY=VALUE")]
    what_if: Vec<String>,
    /// Generate (or check) the history and stop.
    #[arg(long)]
    generate_only: bool,
    #[arg(long, default_value = "python3")]
    python: String,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/load/duckdb_dashboard.py"))]
    duckdb_script: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Markdown,
}

/// What decides the generated history: equal shapes give identical files.
#[derive(Debug, Clone, Copy)]
struct Shape {
    seed: u64,
    events: usize,
    incidents: usize,
    days: u32,
    chunk: usize,
}

impl Shape {
    fn to_json(self) -> Value {
        json!({
            "generator": GENERATOR,
            "seed": self.seed,
            "events": self.events,
            "incidents": self.incidents,
            "days": self.days,
            "chunk": self.chunk,
        })
    }

    fn until_us(self) -> i64 {
        START_US + i64::from(self.days) * DAY
    }

    /// The dashboard's window: the last seven days of the history.
    fn since_us(self) -> i64 {
        self.until_us() - 7 * DAY
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.days >= 7, "--days must be at least 7");
    ensure!(
        args.events > 0 && args.chunk > 0,
        "--events and --chunk must be positive"
    );
    ensure!(
        args.incidents <= args.events,
        "--incidents must not exceed --events"
    );
    let shape = Shape {
        seed: args.seed,
        events: args.events,
        incidents: args.incidents,
        days: args.days,
        chunk: args.chunk,
    };
    let (dir, _temp) = match &args.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("causeway-dashboard-")
                .tempdir()
                .context("create a temporary directory")?;
            (t.path().to_owned(), Some(t))
        }
    };
    let (marker, reused) = prepare(&dir, shape)?;
    let sizes = table_sizes(&dir)?;
    if args.generate_only {
        print_header(&args, &dir, &marker, reused, &sizes);
        return Ok(());
    }

    let since = marker
        .get("since_us")
        .and_then(Value::as_i64)
        .context("marker has no since_us")?;
    let incident = marker
        .get("chain_incident")
        .and_then(Value::as_str)
        .context("marker has no chain_incident: the history has no incident with a chain")?;
    let queries = dashboard_queries(since, incident)?;

    let limits = QueryLimits {
        timeout: Duration::from_secs(3600),
        memory_bytes: args.memory_gib << 30,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    eprintln!("running the dashboard queries through Causeway's SQL surface …");
    let (causeway, fixed_ms) = runtime.block_on(run_causeway(&dir, &queries, &args, limits))?;

    let what_if = if args.what_if.is_empty() {
        None
    } else {
        eprintln!(
            "running the queries again with {} …",
            args.what_if.join(" ")
        );
        Some(runtime.block_on(run_what_if(&dir, &queries, &args, limits))?)
    };

    eprintln!("running the same queries in DuckDB …");
    let duck = run_duckdb(&args, &dir)?;

    print_header(&args, &dir, &marker, reused, &sizes);
    let disagreements = print_results(&args, &queries, &causeway, what_if.as_deref(), &duck)?;
    println!(
        "\nFixed cost of one query through Causeway's SQL surface (`SELECT 1`: session, \
         directory listing, table and view registration): {fixed_ms:.1} ms median."
    );
    if args.explain {
        runtime.block_on(explain(&dir, &queries, limits))?;
    }
    if !disagreements.is_empty() {
        bail!(
            "the engines disagree on {}: no ratio printed for them",
            disagreements.join(", ")
        );
    }
    Ok(())
}

/// Reuses `dir` if its marker records `shape`, generates into it if it is absent
/// or empty, refuses anything else.
fn prepare(dir: &Path, shape: Shape) -> Result<(Value, bool)> {
    let marker_path = dir.join(MARKER);
    if marker_path.exists() {
        let text = std::fs::read_to_string(&marker_path)
            .with_context(|| format!("read {}", marker_path.display()))?;
        let marker: Value = serde_json::from_str(&text)
            .with_context(|| format!("parse {}", marker_path.display()))?;
        if marker.get("params") == Some(&shape.to_json()) {
            eprintln!("reusing the history in {}", dir.display());
            return Ok((marker, true));
        }
        bail!(
            "{} holds a history generated with other parameters ({}); remove it or choose another --dir",
            dir.display(),
            marker.get("params").cloned().unwrap_or(Value::Null)
        );
    }
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty and has no {MARKER} (an interrupted generation?); remove it or choose another --dir",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let marker = generate(dir, shape)?;
    let text = serde_json::to_string_pretty(&marker).context("serialize the marker")?;
    std::fs::write(&marker_path, text)
        .with_context(|| format!("write {}", marker_path.display()))?;
    Ok((marker, false))
}

// ---------------------------------------------------------------------------
// Generation

/// One commit's worth of rows.
struct Chunk {
    seq: u64,
    events: RecordBatch,
    incidents: RecordBatch,
    edges: RecordBatch,
    /// An incident fit to show as "the chain of one incident", if this chunk
    /// holds the first one.
    chain: Option<String>,
}

/// What role an event can play when incidents are built over a chunk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// A deploy, change or exec: a possible root cause.
    Change,
    /// A firing alert or a Kubernetes warning: a possible effect.
    Symptom,
    Other,
}

use causeway_benches::NOISE_ALERTS;

/// Rules of the built-in pack, with how often each explains an incident (per
/// hundred): most incidents are plain alert groups.
const RULES: [(&str, u64); 7] = [
    ("alert-group", 40),
    ("deploy-regression", 20),
    ("config-change-alerts", 10),
    ("gitops-manual-change", 8),
    ("limits-change-crashloop", 8),
    ("cloud-change-dependents", 8),
    ("exec-runtime-alert", 6),
];

/// An effect is linked to its cause only within this long.
const LINK_WINDOW: i64 = 2 * 3600 * SEC;

struct Generator {
    shape: Shape,
    rng: Rng,
    chain_found: bool,
}

impl Generator {
    /// Event time of event `i`: evenly spread over the days with jitter inside each
    /// event's slot, so times ascend.
    fn time_of(&mut self, i: usize) -> i64 {
        let span = i128::from(self.shape.days) * i128::from(DAY);
        let n = self.shape.events as i128;
        let at = |k: usize| (k as i128 * span / n) as i64;
        let (a, b) = (at(i), at(i + 1));
        START_US + a + self.rng.below((b - a).max(1) as u64) as i64
    }

    /// A service, skewed so that some services carry most of the trouble.
    fn service(&mut self) -> usize {
        (self.rng.exp(45.0) as usize) % SERVICES
    }

    fn event(&mut self, i: usize, t: i64, cluster: usize, service: usize) -> (Event, Class) {
        let entity = service_name(service);
        let scope = format!("cluster-{cluster}");
        let roll = self.rng.below(100);
        let mut attributes = BTreeMap::new();
        let (source, kind, status, severity, summary, class) = match roll {
            0..=71 => {
                let name = NOISE_ALERTS[self.rng.below(NOISE_ALERTS.len() as u64) as usize];
                let severity = if self.rng.chance(0.25) {
                    Severity::Critical
                } else {
                    Severity::Warning
                };
                attributes.insert("alertname".to_owned(), name.to_owned());
                attributes.insert("service".to_owned(), entity.clone());
                let firing = roll < 60;
                (
                    "alertmanager",
                    EventKind::Alert,
                    if firing { "firing" } else { "resolved" },
                    severity,
                    format!("{name} on {entity}"),
                    if firing { Class::Symptom } else { Class::Other },
                )
            }
            72..=79 => {
                let (reason, severity) = match self.rng.below(10) {
                    0..=4 => ("BackOff", Severity::Error),
                    5..=6 => ("OOMKilling", Severity::Error),
                    _ => ("Unhealthy", Severity::Warning),
                };
                attributes.insert("reason".to_owned(), reason.to_owned());
                (
                    "k8s_event",
                    EventKind::K8sEvent,
                    reason,
                    severity,
                    format!("{reason}: container of {entity}"),
                    Class::Symptom,
                )
            }
            80..=85 => {
                let sha = format!("{:07x}", self.rng.below(1 << 28));
                let source = if self.rng.chance(0.5) {
                    "github"
                } else {
                    "argocd"
                };
                let summary = format!("deploy {entity} {sha}");
                attributes.insert("sha".to_owned(), sha);
                (
                    source,
                    EventKind::Deploy,
                    "success",
                    Severity::None,
                    summary,
                    Class::Change,
                )
            }
            86..=92 => {
                if self.rng.chance(0.3) {
                    attributes.insert("event_name".to_owned(), "ModifyDBInstance".to_owned());
                    (
                        "cloudtrail",
                        EventKind::Change,
                        "succeeded",
                        Severity::Info,
                        format!("ops ModifyDBInstance on {entity}"),
                        Class::Change,
                    )
                } else {
                    attributes.insert("actor_type".to_owned(), "human".to_owned());
                    attributes.insert("resource".to_owned(), "deployments".to_owned());
                    (
                        "k8s_audit",
                        EventKind::Change,
                        "succeeded",
                        Severity::Info,
                        format!("oncall (human) patch deployments prod/{entity}"),
                        Class::Change,
                    )
                }
            }
            93..=95 => {
                attributes.insert("actor_type".to_owned(), "human".to_owned());
                attributes.insert("subresource".to_owned(), "exec".to_owned());
                (
                    "k8s_audit",
                    EventKind::Audit,
                    "succeeded",
                    Severity::Warning,
                    format!("someone (human) exec pods prod/{entity}-5f4b9c7d8-bcdfg"),
                    Class::Change,
                )
            }
            _ => {
                let cents = 100 + self.rng.below(100_000);
                attributes.insert(
                    "cost_usd".to_owned(),
                    format!("{}.{:02}", cents / 100, cents % 100),
                );
                (
                    "opencost",
                    EventKind::Cost,
                    "billed",
                    Severity::None,
                    format!("daily cost of {entity}"),
                    Class::Other,
                )
            }
        };
        let sid = format!("{source}-{i:010}");
        let raw = format!(
            r#"{{"source":"{source}","id":"{sid}","subject":"{entity}","cluster":"{scope}","status":"{status}"}}"#
        );
        let event = Event {
            id: Event::derive_id(source, &sid, status),
            source: source.to_owned(),
            source_event_id: sid,
            kind,
            time: EventTime::from_micros(t),
            ingested_at: ProcessingTime::from_micros(t + self.rng.below(5 * SEC as u64) as i64),
            scope,
            entity,
            severity,
            status: status.to_owned(),
            summary,
            attributes,
            raw,
        };
        (event, class)
    }

    fn rule(&mut self) -> &'static str {
        let mut roll = self.rng.below(100);
        for (rule, weight) in RULES {
            if roll < weight {
                return rule;
            }
            roll -= weight;
        }
        "alert-group"
    }

    /// Events `lo..hi` and the incidents whose ordinals fall in the same share of
    /// `0..incidents`, built over those events.
    fn chunk(&mut self, seq: u64, lo: usize, hi: usize) -> Result<Chunk> {
        let mut events = Vec::with_capacity(hi - lo);
        let mut subject = Vec::with_capacity(hi - lo);
        let mut changes = Vec::new();
        let mut symptoms = Vec::new();
        let mut by_subject: Vec<Vec<usize>> = vec![Vec::new(); SERVICES * CLUSTERS];
        for i in lo..hi {
            let t = self.time_of(i);
            let cluster = self.rng.below(CLUSTERS as u64) as usize;
            let service = self.service();
            let (event, class) = self.event(i, t, cluster, service);
            let k = events.len();
            let s = cluster * SERVICES + service;
            match class {
                Class::Change => changes.push(k),
                Class::Symptom => {
                    symptoms.push(k);
                    by_subject[s].push(k);
                }
                Class::Other => {}
            }
            subject.push(s);
            events.push(event);
        }
        let ids = events
            .iter()
            .map(|e| EventId::parse(&e.id).with_context(|| format!("{} is not an event id", e.id)))
            .collect::<Result<Vec<_>>>()?;
        let share = |k: usize| {
            (k as u128 * self.shape.incidents as u128 / self.shape.events as u128) as usize
        };
        let (first, last) = (share(lo), share(hi));
        let idx = ChunkIndex {
            events: &events,
            ids: &ids,
            subject: &subject,
            changes: &changes,
            symptoms: &symptoms,
            by_subject: &by_subject,
        };
        let mut versions = Vec::with_capacity((last - first) * 4);
        let mut edges = Vec::with_capacity((last - first) * 4);
        let mut chain = None;
        for ordinal in first..last {
            if let Some(id) = self.incident(ordinal, &idx, &mut versions, &mut edges) {
                chain = Some(id);
            }
        }
        Ok(Chunk {
            seq,
            events: events_batch(&events).context("events batch")?,
            incidents: incidents_batch(&versions).context("incidents batch")?,
            edges: edges_batch(&edges).context("edges batch")?,
            chain,
        })
    }

    /// Effects of a cause at chunk index `root`: the next symptoms on its subject
    /// within the link window.
    fn effects_after(&mut self, idx: &ChunkIndex<'_>, root: usize, inclusive: bool) -> Vec<usize> {
        let bucket = &idx.by_subject[idx.subject[root]];
        let mut p = bucket.partition_point(|&x| if inclusive { x < root } else { x <= root });
        let want = 1 + self.rng.below(4) as usize;
        let t0 = idx.events[root].time.as_micros();
        let mut effects = Vec::with_capacity(want);
        while effects.len() < want && p < bucket.len() {
            let x = bucket[p];
            if idx.events[x].time.as_micros() - t0 > LINK_WINDOW {
                break;
            }
            effects.push(x);
            p += 1 + self.rng.below(2) as usize;
        }
        effects
    }

    /// Incident `ordinal`: its versions and edges. Returns its id when it is the
    /// one whose chain the dashboard shows.
    fn incident(
        &mut self,
        ordinal: usize,
        idx: &ChunkIndex<'_>,
        versions: &mut Vec<IncidentVersion>,
        edges: &mut Vec<IncidentEdge>,
    ) -> Option<String> {
        let mut rule = self.rule();
        let mut found = None;
        if rule != "alert-group" && !idx.changes.is_empty() {
            for _ in 0..8 {
                let root = idx.changes[self.rng.below(idx.changes.len() as u64) as usize];
                let effects = self.effects_after(idx, root, false);
                if !effects.is_empty() {
                    found = Some((Some(root), effects));
                    break;
                }
            }
        }
        let (root, effects) = match found {
            Some(f) => f,
            None => {
                // No change with symptoms after it: an alert group instead.
                rule = "alert-group";
                if idx.symptoms.is_empty() {
                    return None;
                }
                let first = idx.symptoms[self.rng.below(idx.symptoms.len() as u64) as usize];
                (None, self.effects_after(idx, first, true))
            }
        };
        let anchor = root.unwrap_or(effects[0]);
        let anchor_event = &idx.events[anchor];
        let id: Arc<str> =
            causeway_rules::id::incident(&[rule, &anchor_event.id, &ordinal.to_string()]).into();
        let rule_id: Arc<str> = rule.into();
        let scope: Arc<str> = anchor_event.scope.as_str().into();
        let entity: Arc<str> = anchor_event.entity.as_str().into();
        let title: Arc<str> = format!("{rule} on {}", anchor_event.entity).into();
        let severity = effects
            .iter()
            .map(|&e| idx.events[e].severity)
            .max()
            .unwrap_or(Severity::Warning);
        let time = |k: usize| idx.events[k].time.as_micros();
        let opened = time(effects[0]);
        let root_id = root.map(|r| idx.ids[r]);
        let mut count = u32::from(root.is_some());
        let version = |state, updated_at: i64, resolved_at: Option<i64>, count: u32, v: u32| {
            IncidentVersion {
                incident_id: id.clone(),
                version: v,
                state,
                title: title.clone(),
                severity,
                rule_id: rule_id.clone(),
                rule_version: 1,
                scope: scope.clone(),
                entity: entity.clone(),
                root_cause_event_id: root_id,
                opened_at: EventTime::from_micros(opened),
                updated_at: EventTime::from_micros(updated_at),
                resolved_at: resolved_at.map(EventTime::from_micros),
                event_count: count,
                merged_into: None,
            }
        };
        for (k, &e) in effects.iter().enumerate() {
            count += 1;
            let state = if k == 0 {
                IncidentState::Open
            } else {
                IncidentState::Updated
            };
            versions.push(version(state, time(e), None, count, k as u32 + 1));
        }
        if self.rng.chance(0.85) {
            let mean = match severity {
                Severity::Critical => 1_200.0,
                Severity::Error => 2_700.0,
                _ => 5_400.0,
            };
            let last = effects.last().map_or(opened, |&e| time(e));
            let resolved = last + 60 * SEC + (self.rng.exp(mean) * SEC as f64) as i64;
            versions.push(version(
                IncidentState::Resolved,
                resolved,
                Some(resolved),
                count,
                effects.len() as u32 + 1,
            ));
        }
        let join_key: Arc<str> = format!("{scope}/{entity}").into();
        let edge = |k: usize, role, cause: Option<EventId>, lag_from: i64| IncidentEdge {
            incident_id: id.clone(),
            event_id: idx.ids[k],
            role,
            linked_by: rule_id.clone(),
            rule_version: 1,
            cause_event_id: cause,
            lag_seconds: (time(k) - lag_from) as f64 / SEC as f64,
            join_key: join_key.clone(),
            time: idx.events[k].time,
        };
        match root {
            Some(r) => {
                edges.push(edge(r, EdgeRole::Cause, None, time(r)));
                for &e in &effects {
                    edges.push(edge(e, EdgeRole::Effect, root_id, time(r)));
                }
            }
            None => {
                for &e in &effects {
                    edges.push(edge(e, EdgeRole::Effect, None, opened));
                }
            }
        }
        let pick = !self.chain_found
            && ordinal >= self.shape.incidents / 2
            && root.is_some()
            && effects.len() >= 3;
        if pick {
            self.chain_found = true;
            return Some(id.to_string());
        }
        None
    }
}

/// A chunk's events, and which of them can be causes and effects.
struct ChunkIndex<'a> {
    events: &'a [Event],
    ids: &'a [EventId],
    /// Each event's (cluster, service) slot.
    subject: &'a [usize],
    changes: &'a [usize],
    symptoms: &'a [usize],
    /// Symptoms per (cluster, service), in time order.
    by_subject: &'a [Vec<usize>],
}

/// Generates the history into `dir` through the engine's writer and returns the
/// marker describing it. One thread generates the next chunk while the other
/// writes the last one.
fn generate(dir: &Path, shape: Shape) -> Result<Value> {
    let started = Instant::now();
    eprintln!(
        "generating {} events and {} incidents over {} days into {} …",
        thousands(shape.events),
        thousands(shape.incidents),
        shape.days,
        dir.display()
    );
    let history = History::open(dir, 0).context("open the history")?;
    let chunks = shape.events.div_ceil(shape.chunk);
    let (tx, rx) = mpsc::sync_channel::<Result<Chunk>>(1);
    let mut rows = [0usize; 3];
    let mut chain = None;
    std::thread::scope(|s| -> Result<()> {
        s.spawn(move || {
            let mut g = Generator {
                shape,
                rng: Rng::new(shape.seed),
                chain_found: false,
            };
            for k in 0..chunks {
                let lo = k * shape.chunk;
                let hi = (lo + shape.chunk).min(shape.events);
                let chunk = g.chunk(k as u64 + 1, lo, hi);
                let failed = chunk.is_err();
                if tx.send(chunk).is_err() || failed {
                    break;
                }
            }
        });
        for chunk in rx {
            let chunk = chunk?;
            rows[0] += chunk.events.num_rows();
            rows[1] += chunk.incidents.num_rows();
            rows[2] += chunk.edges.num_rows();
            if chain.is_none() {
                chain = chunk.chain;
            }
            history.append("events", chunk.events);
            history.append("incidents", chunk.incidents);
            history.append("incident_events", chunk.edges);
            let written = history
                .write_pending(chunk.seq)
                .with_context(|| format!("write commit {}", chunk.seq))?;
            history.publish(written);
            eprintln!(
                "  commit {}/{chunks}: {} events, {:.1} s",
                chunk.seq,
                thousands(rows[0]),
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    })?;
    ensure!(
        rows[0] == shape.events,
        "generation stopped after {} events",
        rows[0]
    );
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({
        "params": shape.to_json(),
        "since_us": shape.since_us(),
        "until_us": shape.until_us(),
        "chain_incident": chain,
        "generation_seconds": seconds,
        "rows": {"events": rows[0], "incidents": rows[1], "incident_events": rows[2]},
    }))
}

/// Files and bytes of each table on disk.
fn table_sizes(dir: &Path) -> Result<BTreeMap<&'static str, (usize, u64)>> {
    let mut out = BTreeMap::new();
    for table in TABLES {
        let (mut files, mut bytes) = (0, 0);
        let tdir = dir.join(table);
        if tdir.exists() {
            for day in
                std::fs::read_dir(&tdir).with_context(|| format!("list {}", tdir.display()))?
            {
                let day = day
                    .with_context(|| format!("list {}", tdir.display()))?
                    .path();
                for f in
                    std::fs::read_dir(&day).with_context(|| format!("list {}", day.display()))?
                {
                    let f = f.with_context(|| format!("list {}", day.display()))?;
                    if f.path().extension().is_some_and(|e| e == "parquet") {
                        files += 1;
                        bytes += f.metadata().context("file metadata")?.len();
                    }
                }
            }
        }
        out.insert(table, (files, bytes));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Queries

struct Query {
    name: &'static str,
    sql: String,
}

/// The dashboard's queries, as a dashboard would write them against Causeway's
/// tables. DuckDB's spellings are in benches/load/duckdb_dashboard.py.
fn dashboard_queries(since_us: i64, incident: &str) -> Result<Vec<Query>> {
    let since = arrow::temporal_conversions::timestamp_us_to_datetime(since_us)
        .context("window start out of range")?
        .format("%Y-%m-%dT%H:%M:%SZ");
    let since = format!("TIMESTAMP '{since}'");
    let incident = incident.replace('\'', "''");
    Ok(vec![
        Query {
            name: "incidents_per_rule_per_day",
            sql: format!(
                "SELECT rule_id, date_trunc('day', opened_at) AS day, count(*) AS incidents
                 FROM incidents_latest
                 WHERE opened_at >= {since}
                 GROUP BY rule_id, date_trunc('day', opened_at)
                 ORDER BY day, rule_id"
            ),
        },
        Query {
            name: "top_root_cause_services",
            sql: format!(
                "SELECT e.entity AS service, count(*) AS incidents
                 FROM incidents_latest i
                 JOIN events e ON e.event_id = i.root_cause_event_id
                 WHERE i.opened_at >= {since}
                 GROUP BY e.entity
                 ORDER BY incidents DESC, service
                 LIMIT 10"
            ),
        },
        Query {
            name: "mean_time_to_resolve_by_severity",
            sql: format!(
                "SELECT severity, count(*) AS resolved,
                        avg(date_part('epoch', resolved_at) - date_part('epoch', opened_at)) AS mean_seconds
                 FROM incidents_latest
                 WHERE state = 'resolved' AND opened_at >= {since}
                 GROUP BY severity
                 ORDER BY severity"
            ),
        },
        Query {
            name: "incident_chain",
            sql: format!(
                "SELECT e.time, e.event_id, ie.role, ie.linked_by, ie.lag_seconds,
                        e.source, e.kind, e.entity, e.summary
                 FROM incident_events ie
                 JOIN events e ON e.event_id = ie.event_id
                 WHERE ie.incident_id = '{incident}'
                 ORDER BY e.time, e.event_id"
            ),
        },
    ])
}

/// One engine's figures for one query.
struct Measured {
    times_ms: Vec<f64>,
    rows: Vec<Vec<Value>>,
}

impl Measured {
    fn median(&self) -> f64 {
        median(&self.times_ms)
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

async fn run_causeway(
    dir: &Path,
    queries: &[Query],
    args: &Args,
    limits: QueryLimits,
) -> Result<(Vec<Measured>, f64)> {
    let reader = HistoryReader::from_history_dir(dir).context("open the history for SQL")?;
    // What every query pays before it reads a row: a fresh session over a
    // listing of the directory, each table and the `incidents_latest` view.
    let mut fixed = Vec::with_capacity(args.runs);
    for _ in 0..args.runs.max(1) + args.warmup {
        let started = Instant::now();
        reader.query("SELECT 1", limits).await.context("SELECT 1")?;
        fixed.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let fixed_ms = median(&fixed[args.warmup..]);
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        for _ in 0..args.warmup {
            reader
                .query(&q.sql, limits)
                .await
                .with_context(|| format!("{} (warm-up)", q.name))?;
        }
        let mut times_ms = Vec::with_capacity(args.runs);
        let mut rows = Vec::new();
        for _ in 0..args.runs.max(1) {
            let started = Instant::now();
            let result = reader
                .query(&q.sql, limits)
                .await
                .with_context(|| format!("query {}", q.name))?;
            times_ms.push(started.elapsed().as_secs_f64() * 1e3);
            rows =
                canonical_rows(&result.batches).with_context(|| format!("rows of {}", q.name))?;
        }
        eprintln!("  {}: median {:.1} ms", q.name, median(&times_ms));
        out.push(Measured { times_ms, rows });
    }
    Ok((out, fixed_ms))
}

/// Times the queries on a plain DataFusion session built like
/// `HistoryReader`'s (engine/src/sql.rs) with the `--what-if` settings on top:
/// a fresh session for every run, as Causeway does.
async fn run_what_if(
    dir: &Path,
    queries: &[Query],
    args: &Args,
    limits: QueryLimits,
) -> Result<Vec<Measured>> {
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        let mut times_ms = Vec::with_capacity(args.runs);
        let mut rows = Vec::new();
        for run in 0..args.warmup + args.runs.max(1) {
            let started = Instant::now();
            let ctx = what_if_session(dir, &args.what_if, limits).await?;
            let batches = ctx
                .sql(&q.sql)
                .await
                .with_context(|| format!("plan {}", q.name))?
                .collect()
                .await
                .with_context(|| format!("run {}", q.name))?;
            if run >= args.warmup {
                times_ms.push(started.elapsed().as_secs_f64() * 1e3);
            }
            rows = canonical_rows(&batches).with_context(|| format!("rows of {}", q.name))?;
        }
        eprintln!("  {}: median {:.1} ms", q.name, median(&times_ms));
        out.push(Measured { times_ms, rows });
    }
    Ok(out)
}

async fn what_if_session(
    dir: &Path,
    settings: &[String],
    limits: QueryLimits,
) -> Result<SessionContext> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(limits.memory_bytes, 1.0)
        .build_arc()
        .context("runtime environment")?;
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_target_partitions(2);
    for setting in settings {
        let (key, value) = setting
            .split_once('=')
            .with_context(|| format!("--what-if {setting}: expected key=value"))?;
        config
            .options_mut()
            .set(key.trim(), value.trim())
            .with_context(|| format!("--what-if {setting}"))?;
    }
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    for table in causeway_engine::history::TABLES {
        if !TABLES.contains(&table.name) {
            continue;
        }
        let mut urls = Vec::new();
        let tdir = dir.join(table.name);
        for day in std::fs::read_dir(&tdir).with_context(|| format!("list {}", tdir.display()))? {
            let day = day
                .with_context(|| format!("list {}", tdir.display()))?
                .path();
            for f in std::fs::read_dir(&day).with_context(|| format!("list {}", day.display()))? {
                let path = f.with_context(|| format!("list {}", day.display()))?.path();
                if path.extension().is_some_and(|e| e == "parquet") {
                    urls.push(ListingTableUrl::parse(path.to_string_lossy())?);
                }
            }
        }
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema((*table.schema).clone());
        ctx.register_table(table.name, Arc::new(ListingTable::try_new(config)?))?;
    }
    ctx.sql(causeway_engine::sql::INCIDENTS_LATEST_VIEW).await?;
    Ok(ctx)
}

fn run_duckdb(args: &Args, dir: &Path) -> Result<BTreeMap<String, Measured>> {
    let output = Command::new(&args.python)
        .arg(&args.duckdb_script)
        .arg("--dir")
        .arg(dir)
        .arg("--runs")
        .arg(args.runs.max(1).to_string())
        .arg("--warmup")
        .arg(args.warmup.to_string())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("run {} {}", args.python, args.duckdb_script.display()))?;
    ensure!(
        output.status.success(),
        "{} failed: {}",
        args.duckdb_script.display(),
        output.status
    );
    let doc: Value =
        serde_json::from_slice(&output.stdout).context("parse the DuckDB script's JSON")?;
    let queries = doc
        .get("queries")
        .and_then(Value::as_object)
        .context("the DuckDB script printed no queries")?;
    let mut out = BTreeMap::new();
    for (name, q) in queries {
        let times_ms = q
            .get("times_ms")
            .and_then(Value::as_array)
            .context("no times_ms")?
            .iter()
            .map(|t| t.as_f64().context("a time is not a number"))
            .collect::<Result<Vec<_>>>()?;
        let rows = q
            .get("rows")
            .and_then(Value::as_array)
            .context("no rows")?
            .iter()
            .map(|r| r.as_array().cloned().context("a row is not an array"))
            .collect::<Result<Vec<_>>>()?;
        out.insert(name.clone(), Measured { times_ms, rows });
    }
    let version = doc.get("duckdb_version").cloned().unwrap_or(Value::Null);
    let threads = doc.get("threads").cloned().unwrap_or(Value::Null);
    eprintln!("  DuckDB {version}, threads {threads}");
    Ok(out)
}

/// A column as the comparison sees it: timestamps as microseconds since the
/// epoch, every integer as i64, every float as f64, text as text.
enum Column {
    Int(Int64Array),
    Float(Float64Array),
    Text(StringArray),
}

impl Column {
    fn of(array: &ArrayRef) -> Result<Column> {
        fn to<T: Clone + 'static>(a: &ArrayRef, t: &DataType) -> Result<T> {
            let c = cast(a, t).with_context(|| format!("cast {} to {t}", a.data_type()))?;
            c.as_any()
                .downcast_ref::<T>()
                .cloned()
                .with_context(|| format!("downcast to {t}"))
        }
        Ok(match array.data_type() {
            DataType::Timestamp(..) => {
                let micros = cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None))
                    .context("cast a timestamp to microseconds")?;
                Column::Int(to(&micros, &DataType::Int64)?)
            }
            t if t.is_integer() => Column::Int(to(array, &DataType::Int64)?),
            t if t.is_floating() => Column::Float(to(array, &DataType::Float64)?),
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Dictionary(..) => Column::Text(to(array, &DataType::Utf8)?),
            other => bail!("no comparison for result columns of type {other}"),
        })
    }

    fn value(&self, i: usize) -> Value {
        match self {
            Column::Int(a) if a.is_valid(i) => Value::from(a.value(i)),
            Column::Float(a) if a.is_valid(i) => {
                serde_json::Number::from_f64(a.value(i)).map_or(Value::Null, Value::Number)
            }
            Column::Text(a) if a.is_valid(i) => Value::from(a.value(i)),
            _ => Value::Null,
        }
    }
}

fn canonical_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<Value>>> {
    let mut rows = Vec::new();
    for b in batches {
        let columns = b
            .columns()
            .iter()
            .map(Column::of)
            .collect::<Result<Vec<_>>>()?;
        for i in 0..b.num_rows() {
            rows.push(columns.iter().map(|c| c.value(i)).collect());
        }
    }
    Ok(rows)
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-9_f64.max(1e-9 * x.abs().max(y.abs())),
                _ => false,
            },
        },
        _ => a == b,
    }
}

/// `None` when both engines returned the same rows in the same order, otherwise
/// the first difference.
fn difference(ours: &[Vec<Value>], theirs: &[Vec<Value>]) -> Option<String> {
    if ours.len() != theirs.len() {
        return Some(format!(
            "{} rows from Causeway, {} from DuckDB",
            ours.len(),
            theirs.len()
        ));
    }
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| !same_value(x, y)) {
            return Some(format!(
                "row {i}: Causeway {}, DuckDB {}",
                Value::from(a.clone()),
                Value::from(b.clone())
            ));
        }
    }
    None
}

async fn explain(dir: &Path, queries: &[Query], limits: QueryLimits) -> Result<()> {
    let reader = HistoryReader::from_history_dir(dir).context("open the history for SQL")?;
    for q in queries {
        let result = reader
            .query(&format!("EXPLAIN ANALYZE {}", q.sql), limits)
            .await
            .with_context(|| format!("explain {}", q.name))?;
        println!("\n### EXPLAIN ANALYZE {}\n", q.name);
        for b in &result.batches {
            let Some(plan) = b.column_by_name("plan") else {
                continue;
            };
            let plan = cast(plan, &DataType::Utf8).context("plan text")?;
            let Some(plan) = plan.as_any().downcast_ref::<StringArray>() else {
                continue;
            };
            for i in 0..plan.len() {
                println!("{}", plan.value(i));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Report

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn print_header(
    args: &Args,
    dir: &Path,
    marker: &Value,
    reused: bool,
    sizes: &BTreeMap<&'static str, (usize, u64)>,
) {
    let rows = |t: &str| {
        marker
            .pointer(&format!("/rows/{t}"))
            .and_then(Value::as_u64)
            .map_or_else(|| "?".to_owned(), |n| thousands(n as usize))
    };
    let generated = marker
        .get("generation_seconds")
        .and_then(Value::as_f64)
        .map_or_else(|| "?".to_owned(), |s| format!("{s:.1} s"));
    let mut out = String::new();
    let md = args.format == Format::Markdown;
    let _ = writeln!(
        out,
        "{}Dashboard queries over a generated history (seed {}, {} days, commits of {} events) in {}",
        if md { "### " } else { "" },
        args.seed,
        args.days,
        thousands(args.chunk),
        dir.display()
    );
    let _ = writeln!(out);
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let _ = writeln!(
        out,
        "- generation: {generated}{}",
        if reused {
            " (by an earlier run; this directory was reused)".to_owned()
        } else {
            format!(" ({build} build, writer and generator on two threads)")
        }
    );
    let total: u64 = sizes.values().map(|s| s.1).sum();
    for (table, (files, bytes)) in sizes {
        let _ = writeln!(
            out,
            "- {}{table}{}: {} rows, {files} files, {}",
            if md { "`" } else { "" },
            if md { "`" } else { "" },
            rows(table),
            mib(*bytes)
        );
    }
    let _ = writeln!(out, "- on disk in total: {}", mib(total));
    if let Some(id) = marker.get("chain_incident").and_then(Value::as_str) {
        let _ = writeln!(out, "- chain of incident {id}");
    }
    print!("{out}");
}

/// Prints the comparison table; returns the queries whose results differ.
fn print_results(
    args: &Args,
    queries: &[Query],
    causeway: &[Measured],
    what_if: Option<&[Measured]>,
    duck: &BTreeMap<String, Measured>,
) -> Result<Vec<&'static str>> {
    fn spread(m: &Measured) -> String {
        format!(
            "{:.1} ({:.1}–{:.1})",
            m.median(),
            m.times_ms.iter().copied().fold(f64::INFINITY, f64::min),
            m.times_ms.iter().copied().fold(0.0, f64::max)
        )
    }
    let mut disagreements = Vec::new();
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut notes = Vec::new();
    for (k, (q, ours)) in queries.iter().zip(causeway).enumerate() {
        let theirs = duck
            .get(q.name)
            .with_context(|| format!("DuckDB did not run {}", q.name))?;
        let ratio = match difference(&ours.rows, &theirs.rows) {
            None => format!("{:.2}×", ours.median() / theirs.median()),
            Some(d) => {
                disagreements.push(q.name);
                notes.push(format!("{}: {d}", q.name));
                "results differ".to_owned()
            }
        };
        let mut line = vec![q.name.to_owned(), ours.rows.len().to_string(), spread(ours)];
        if let Some(w) = what_if.and_then(|w| w.get(k)) {
            match difference(&ours.rows, &w.rows) {
                None => line.push(spread(w)),
                Some(d) => {
                    notes.push(format!("{} (what-if): {d}", q.name));
                    line.push("results differ".to_owned());
                }
            }
        }
        line.push(spread(theirs));
        line.push(ratio);
        lines.push(line);
    }
    let mut header = vec![
        "query".to_owned(),
        "rows".to_owned(),
        "Causeway/DataFusion ms median (min–max)".to_owned(),
    ];
    if what_if.is_some() {
        header.push("what-if ms".to_owned());
    }
    header.push("DuckDB ms median (min–max)".to_owned());
    header.push("Causeway / DuckDB".to_owned());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} timed runs per query after {} warm-up; both engines' results compared row by row",
        args.runs.max(1),
        args.warmup
    );
    if what_if.is_some() {
        let _ = writeln!(
            out,
            "what-if: a session built like Causeway's with {}",
            args.what_if.join(" ")
        );
    }
    let _ = writeln!(out);
    match args.format {
        Format::Markdown => {
            let _ = writeln!(out, "| {} |", header.join(" | "));
            let _ = writeln!(out, "|---|{}", "---:|".repeat(header.len() - 1));
            for l in &lines {
                let _ = writeln!(out, "| `{}` | {} |", l[0], l[1..].join(" | "));
            }
        }
        Format::Text => {
            let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
            for l in &lines {
                for (w, c) in widths.iter_mut().zip(l) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let row = |cells: &[String]| {
                let mut s = String::new();
                for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                    let pad = w.saturating_sub(c.chars().count());
                    if i == 0 {
                        let _ = write!(s, "{c}{}  ", " ".repeat(pad));
                    } else {
                        let _ = write!(s, "{}{c}  ", " ".repeat(pad));
                    }
                }
                s.trim_end().to_owned()
            };
            let _ = writeln!(out, "{}", row(&header));
            for l in &lines {
                let _ = writeln!(out, "{}", row(l));
            }
        }
    }
    for n in notes {
        let _ = writeln!(out, "\nDIFFERENCE {n}");
    }
    print!("{out}");
    Ok(disagreements)
}
