//! `causeway replay`: stored events through the correlation engine again, to print
//! or write the incidents they give, and (`--diff`) what a rule change would have
//! done differently from what is stored — a backtest a CI job can fail on.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use causeway_engine::examples::{FinalIncident, final_incidents};
use causeway_engine::replay::{self, IncidentDiff, ReplayOptions};
use causeway_engine::schema::events_batch;
use causeway_engine::{HistoryReader, QueryLimits};
use causeway_rules::{Event, EventTime, ProcessingTime};
use serde_json::{Value, json};

use crate::config::{Config, StoredSettings, load_rule_files};
use crate::enrich::{ChangeIndex, IncidentEnricher, SimilarIndex};
use crate::format;

/// What `causeway replay` was asked.
#[derive(Debug)]
pub(crate) struct ReplayArgs {
    pub(crate) events: Option<PathBuf>,
    pub(crate) data_dir: PathBuf,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) rules: Option<PathBuf>,
    pub(crate) config: Option<PathBuf>,
    pub(crate) diff: bool,
    pub(crate) fail_on_diff: bool,
    pub(crate) json: bool,
    pub(crate) output: Option<PathBuf>,
}

/// Replays, prints, and fails (with `--fail-on-diff`) on differences.
pub(crate) async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let loaded = Config::load(args.config.as_deref())?;
    // Without --config, replay with what the history was written with: the same
    // catalog, windows and (without --rules) the same rules.
    let stored = match args.config {
        Some(_) => None,
        None => StoredSettings::load(&args.data_dir)?,
    };
    let (catalog, correlator, watermark, default_rules) = match &stored {
        Some(s) => {
            eprintln!(
                "using the settings {} was last run with (--config to override)",
                args.data_dir.display()
            );
            (
                s.catalog.clone(),
                s.correlator(),
                s.engine.watermark.clone(),
                s.rule_pack()?,
            )
        }
        None => (
            loaded.config.catalog.clone(),
            loaded.config.correlator(),
            loaded.config.engine.watermark.clone(),
            loaded.rules.clone(),
        ),
    };
    let rules = match &args.rules {
        Some(dir) => load_rule_files(dir)?,
        None => default_rules,
    };
    let options = ReplayOptions {
        rules,
        catalog,
        correlator,
        watermark,
    };
    let range = TimeRange::parse(args.from.as_deref(), args.to.as_deref())?;
    // Replays read whole histories: far wider limits than interactive SQL.
    let limits = QueryLimits {
        timeout: Duration::from_secs(24 * 3600),
        memory_bytes: loaded.config.sql.memory_limit_bytes.max(4 << 30),
    };
    let source = args.events.clone().unwrap_or_else(|| args.data_dir.clone());
    let events = read_events(&source, &range, limits).await?;
    let rows: usize = events.iter().map(RecordBatch::num_rows).sum();
    let out = tokio::task::block_in_place(|| replay::replay(&events, &options))?;
    let replayed: Vec<FinalIncident> = final_incidents(&out)
        .into_iter()
        .filter(|f| range.contains(f.latest.opened_at))
        .collect();
    eprintln!(
        "replayed {rows} events from {}: {} incidents, {} incident versions",
        source.display(),
        replayed.len(),
        out.incidents.len()
    );
    if let Some(path) = &args.output {
        write_versions(path, &out)?;
        eprintln!("wrote every incident version to {}", path.display());
    }
    if args.diff {
        let stored = read_stored(&args.data_dir, &range, limits).await?;
        let d = replay::diff(&stored, &replayed);
        print_diff(&d, args.json);
        if args.fail_on_diff && !d.is_empty() {
            bail!(
                "replay differs from the stored incidents: {} added, {} removed, {} changed",
                d.added.len(),
                d.removed.len(),
                d.changed.len()
            );
        }
        return Ok(());
    }
    if args.json {
        for f in &replayed {
            println!("{}", incident_json(f)?);
        }
    } else {
        let details = event_details(&events);
        let enricher = replay_enricher(&options.catalog, &details, &args.data_dir).await;
        for f in &replayed {
            let edges: Vec<&causeway_rules::IncidentEdge> = f.edges.iter().collect();
            let enrichment = enricher.enrichment(&f.latest, &edges);
            print!("{}", tree(f, &details, &enrichment));
            println!();
        }
    }
    Ok(())
}

/// An enricher fed with the replayed events in arrival order, and with the
/// history's incidents as similar past ones (when the data dir has a history).
async fn replay_enricher(
    catalog: &causeway_rules::Catalog,
    details: &BTreeMap<String, Value>,
    data_dir: &Path,
) -> IncidentEnricher {
    let similar = SimilarIndex::new(100_000);
    if data_dir.exists()
        && let Ok(reader) = crate::config::data_dir_reader(data_dir)
        && let Err(error) = similar
            .load(&reader, Duration::from_secs(30 * 24 * 3600), 50_000)
            .await
    {
        eprintln!("similar incidents not loaded: {error:#}");
    }
    let enricher = IncidentEnricher::new(
        std::sync::Arc::new(causeway_rules::IndexedCatalog::new(catalog.clone())),
        ChangeIndex::new(100_000, Duration::from_secs(365 * 24 * 3600)),
        similar,
    );
    let mut events: Vec<Event> = details.values().filter_map(event_from_row).collect();
    events.sort_by(|a, b| (a.ingested_at, a.time, &a.id).cmp(&(b.ingested_at, b.time, &b.id)));
    enricher.observe(&events);
    enricher
}

/// An event back from its `events` row (as JSON): what enrichment reads.
fn event_from_row(r: &Value) -> Option<Event> {
    let text = |k: &str| r[k].as_str().map(str::to_owned);
    let attributes: BTreeMap<String, String> = match &r["attributes"] {
        Value::Object(m) => m
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
            .collect(),
        Value::Array(entries) => entries
            .iter()
            .filter_map(|e| {
                Some((
                    e["keys"].as_str()?.to_owned(),
                    e["values"].as_str()?.to_owned(),
                ))
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    Some(Event {
        id: text("event_id")?,
        source: text("source")?,
        source_event_id: text("source_event_id").unwrap_or_default(),
        kind: text("kind")?.parse().ok()?,
        time: EventTime::parse_rfc3339(&text("time")?).ok()?,
        ingested_at: ProcessingTime::parse_rfc3339(&text("ingested_at")?).ok()?,
        scope: text("scope").unwrap_or_default(),
        entity: text("entity").unwrap_or_default(),
        severity: causeway_rules::Severity::None,
        status: text("status").unwrap_or_default(),
        summary: text("summary").unwrap_or_default(),
        attributes,
        raw: String::new(),
    })
}

/// An optional `[from, to)` range of event time.
#[derive(Debug, Clone, Copy)]
struct TimeRange {
    from: Option<EventTime>,
    to: Option<EventTime>,
}

impl TimeRange {
    fn parse(from: Option<&str>, to: Option<&str>) -> anyhow::Result<TimeRange> {
        let parse = |flag: &str, v: Option<&str>| -> anyhow::Result<Option<EventTime>> {
            v.map(|t| {
                EventTime::parse_rfc3339(t).with_context(|| {
                    format!("--{flag}: expected an RFC 3339 time like 2024-05-01T10:00:00Z")
                })
            })
            .transpose()
        };
        let range = TimeRange {
            from: parse("from", from)?,
            to: parse("to", to)?,
        };
        if let (Some(a), Some(b)) = (range.from, range.to)
            && a >= b
        {
            bail!("--from must be before --to");
        }
        Ok(range)
    }

    fn contains(&self, t: EventTime) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|e| t < e)
    }

    fn sql(&self, column: &str) -> String {
        let mut c = Vec::new();
        if let Some(f) = self.from {
            c.push(format!("{column} >= TIMESTAMP '{}'", f.to_rfc3339()));
        }
        if let Some(t) = self.to {
            c.push(format!("{column} < TIMESTAMP '{}'", t.to_rfc3339()));
        }
        if c.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", c.join(" AND "))
        }
    }
}

/// Events from a data dir's Parquet history, or from CloudEvents JSON lines, in
/// arrival order.
async fn read_events(
    source: &Path,
    range: &TimeRange,
    limits: QueryLimits,
) -> anyhow::Result<Vec<RecordBatch>> {
    if source.is_dir() {
        let reader = history_reader(source)?;
        let result = reader
            .query(
                &format!(
                    "SELECT * FROM events {} ORDER BY ingested_at, event_id",
                    range.sql("time")
                ),
                limits,
            )
            .await?;
        return Ok(result.batches);
    }
    let file =
        std::fs::File::open(source).with_context(|| format!("cannot open {}", source.display()))?;
    let reader: Box<dyn BufRead> = if source.extension().is_some_and(|e| e == "gz") {
        Box::new(std::io::BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let mut events = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", source.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let e = Event::from_cloudevent_json(&line, ProcessingTime::from_micros(0))
            .with_context(|| format!("{}: line {}", source.display(), n + 1))?;
        if range.contains(e.time) {
            events.push(e);
        }
    }
    // Arrival order: as received (stable for one request's events).
    events.sort_by_key(|e| e.ingested_at);
    Ok(events
        .chunks(8192)
        .map(events_batch)
        .collect::<Result<Vec<_>, _>>()?)
}

/// A reader over a data dir (committed history) or a bare history directory.
fn history_reader(dir: &Path) -> anyhow::Result<HistoryReader> {
    if dir.join("history").is_dir()
        || causeway_engine::driver::stored_history_location(dir)?.is_some()
    {
        return crate::config::data_dir_reader(dir);
    }
    if dir.join("events").is_dir() {
        return Ok(HistoryReader::from_history_dir(dir)?);
    }
    bail!(
        "{} holds no history (expected a data dir with history/, or a history dir with events/)",
        dir.display()
    )
}

async fn read_stored(
    data_dir: &Path,
    range: &TimeRange,
    limits: QueryLimits,
) -> anyhow::Result<Vec<FinalIncident>> {
    let reader = history_reader(data_dir)?;
    let incidents = reader.query("SELECT * FROM incidents", limits).await?;
    let edges = reader
        .query("SELECT * FROM incident_events", limits)
        .await?;
    Ok(replay::stored_final(&incidents.batches, &edges.batches)?
        .into_iter()
        .filter(|f| range.contains(f.latest.opened_at))
        .collect())
}

/// A replayed incident as JSON: the `causeway.incidents` message of its latest
/// version, with its member events.
fn incident_json(f: &FinalIncident) -> anyhow::Result<Value> {
    let edges: Vec<&causeway_rules::IncidentEdge> = f.edges.iter().collect();
    let mut v = serde_json::to_value(crate::kafka_engine::incident_message(
        &f.latest, &edges, None,
    ))?;
    v["members"] = json!(
        f.members()
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
    );
    Ok(v)
}

fn write_versions(path: &Path, out: &causeway_rules::Output) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?,
        );
        for v in &out.incidents {
            serde_json::to_writer(&mut w, &crate::kafka_engine::incident_message(v, &[], None))?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn print_diff(d: &IncidentDiff, json: bool) {
    if json {
        let side = |c: &replay::Compared| {
            json!({"incident_id": c.latest.incident_id, "rule_id": c.latest.rule_id, "title": c.latest.title,
                   "version": c.latest.version, "state": c.latest.state.as_str(),
                   "root_cause_event_id": c.latest.root_cause_event_id.map(|id| id.to_string()),
                   "event_count": c.latest.event_count})
        };
        println!(
            "{}",
            json!({
                "added": d.added.iter().map(side).collect::<Vec<_>>(),
                "removed": d.removed.iter().map(side).collect::<Vec<_>>(),
                "changed": d.changed.iter().map(|(o, n, f)| json!({"stored": side(o), "replayed": side(n), "fields": f})).collect::<Vec<_>>(),
                "unchanged": d.unchanged,
            })
        );
        return;
    }
    println!(
        "{} unchanged, {} added, {} removed, {} changed",
        d.unchanged,
        d.added.len(),
        d.removed.len(),
        d.changed.len()
    );
    for a in &d.added {
        println!(
            "+ {} [{}] {}",
            a.latest.incident_id, a.latest.rule_id, a.latest.title
        );
    }
    for r in &d.removed {
        println!(
            "- {} [{}] {}",
            r.latest.incident_id, r.latest.rule_id, r.latest.title
        );
    }
    for (o, n, fields) in &d.changed {
        println!(
            "~ {} [{}] {}",
            n.latest.incident_id, n.latest.rule_id, n.latest.title
        );
        for f in fields {
            let (a, b) = match *f {
                "version" => (o.latest.version.to_string(), n.latest.version.to_string()),
                "state" => (
                    o.latest.state.as_str().into(),
                    n.latest.state.as_str().into(),
                ),
                "title" => (o.latest.title.to_string(), n.latest.title.to_string()),
                "severity" => (o.latest.severity.to_string(), n.latest.severity.to_string()),
                "rule_id" => (o.latest.rule_id.to_string(), n.latest.rule_id.to_string()),
                "event_count" => (
                    o.latest.event_count.to_string(),
                    n.latest.event_count.to_string(),
                ),
                "members" => (
                    format!("{} events", o.members.len()),
                    format!("{} events", n.members.len()),
                ),
                _ => (String::new(), String::new()),
            };
            if a.is_empty() {
                println!("    {f} differs");
            } else {
                println!("    {f}: {a} → {b}");
            }
        }
    }
}

/// Event details for trees, by id.
fn event_details(batches: &[RecordBatch]) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    for b in batches {
        let Ok(rows) = format::json_rows(std::slice::from_ref(b)) else {
            continue;
        };
        let Ok(Value::Array(rows)) = serde_json::from_slice::<Value>(&rows) else {
            continue;
        };
        for r in rows {
            if let Some(id) = r["event_id"].as_str() {
                m.insert(id.to_owned(), r);
            }
        }
    }
    m
}

fn tree(f: &FinalIncident, details: &BTreeMap<String, Value>, enrichment: &Value) -> String {
    let v = &f.latest;
    let incident = json!({
        "enrichment": enrichment.to_string(),
        "incident_id": v.incident_id, "severity": v.severity.as_str(), "title": v.title,
        "rule_id": v.rule_id, "rule_version": v.rule_version, "scope": v.scope, "entity": v.entity,
        "state": v.state.as_str(), "version": v.version, "event_count": v.event_count,
        "opened_at": v.opened_at.to_rfc3339(), "resolved_at": v.resolved_at.map(|t| t.to_rfc3339()),
        "root_cause_event_id": v.root_cause_event_id.map(|id| id.to_string()),
    });
    let chain: Vec<Value> = f
        .edges
        .iter()
        .map(|e| {
            let id = e.event_id.to_string();
            let d = details.get(&id).cloned().unwrap_or(Value::Null);
            json!({
                "role": e.role.as_str(), "lag_seconds": e.lag_seconds, "linked_by": e.linked_by,
                "cause_event_id": e.cause_event_id.map(|c| c.to_string()), "event_id": id,
                "time": d["time"], "kind": d["kind"], "source": d["source"],
                "status": d["status"], "summary": d["summary"],
            })
        })
        .collect();
    format::incident_tree(&incident, &chain)
}
