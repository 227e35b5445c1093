//! The Parquet history on the seeded 100 000-event workload, as rows per second:
//! - `history/parquet_write`: one engine commit of the whole workload — open a
//!   history in a fresh directory, append the events as the engine does (one batch
//!   of 4 096 per push), `write_pending` (concatenate, split by day, zstd Parquet,
//!   fsync, rename) and `publish`. Elements: events written.
//! - `history_sql/*`: read-only SQL through `HistoryReader` (a fresh DataFusion
//!   session per query, as every SQL surface runs it) over a history built once the
//!   way the engine builds it: the correlation operator over the workload, events
//!   it accepted in `events`, the ones too late in `late_events`, its incident
//!   versions and edges in `incidents` and `incident_events`. Elements: the rows of
//!   the tables each query reads.
//!   - `events_by_source`: a count over `events` by source (reads `events`);
//!   - `incidents_per_rule_per_day`: the dashboard's incidents per rule per day
//!     (reads `incidents`, through the `incidents_latest` view);
//!   - `incident_chain`: `causeway incident show`'s chain query for the incident
//!     with the most edges, an `incident_events` ⋈ `events` join (reads
//!     `incident_events`, `events` and `incidents`).
//!
//! The temporary directories are wherever `TMPDIR` points: the write benchmark's
//! fsyncs cost what that file system makes them cost.
//!
//! Run: `cargo bench --profile release -p causeway -p causeway-benches --bench history`

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::Int64Type;
use causeway_benches::{Workload, generate, operator_for};
use causeway_engine::schema::{edges_batch, events_batch, incidents_batch};
use causeway_engine::{History, HistoryReader, QueryLimits};
use causeway_rules::{Event, Output, PushOutcome};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// The binary's allocator, so the history is measured as it runs in `causeway`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tempfile::TempDir;

/// Events per appended batch, as in `benches/correlation.rs`.
const BATCH: usize = 4096;

fn bench(c: &mut Criterion) {
    let w = Workload {
        events: 100_000,
        ..Workload::default()
    };
    let events = generate(&w);
    let batches: Vec<RecordBatch> = events
        .chunks(BATCH)
        .map(|c| events_batch(c).expect("batch"))
        .collect();

    parquet_write(c, &events, &batches);

    let built = build_history(&w, &events, &batches);
    sql(c, &built);
}

fn parquet_write(c: &mut Criterion, events: &[Event], batches: &[RecordBatch]) {
    let write = |dir: TempDir| {
        let history = History::open(dir.path(), 0).expect("open history");
        for batch in batches {
            history.append("events", batch.clone());
        }
        let written = history.write_pending(1).expect("write parquet");
        let rows: usize = written.files.iter().map(|(_, _, n)| n).sum();
        history.publish(written);
        (dir, rows)
    };
    // Once outside the timing: every event reaches a file.
    let (_, rows) = write(tempfile::tempdir().expect("tempdir"));
    assert_eq!(rows, events.len(), "rows written");

    let mut g = c.benchmark_group("history");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("parquet_write", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            // The directory is returned so that removing it is not timed.
            write,
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// A committed history of the workload, as the engine would have written it.
struct Built {
    dir: TempDir,
    /// Rows of `events`, `incidents` and `incident_events`.
    events: usize,
    incidents: usize,
    edges: usize,
    /// The incident with the most edges, and the edges its chain shows (its own
    /// and those of incidents merged into it).
    chain_incident: String,
    chain_rows: usize,
    /// Incidents not merged into another, by their latest version.
    open_or_resolved: usize,
}

fn build_history(w: &Workload, events: &[Event], batches: &[RecordBatch]) -> Built {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = History::open(dir.path(), 0).expect("open history");
    let mut op = operator_for(w);
    let mut out = Output::default();
    let mut stored = 0;
    for (chunk, batch) in events.chunks(BATCH).zip(batches) {
        let now = chunk.last().expect("non-empty chunk").ingested_at;
        let outcomes = op.push_batch(batch, now, &mut out).expect("push");
        assert_eq!(outcomes.len(), batch.num_rows(), "one outcome per event");
        // As the engine's driver: duplicates are counted, not stored; events
        // too late to correlate go to `late_events`.
        let accepted: BooleanArray = outcomes
            .iter()
            .map(|o| {
                Some(matches!(
                    o,
                    PushOutcome::Buffered | PushOutcome::AppliedLate
                ))
            })
            .collect();
        let late: BooleanArray = outcomes
            .iter()
            .map(|o| Some(*o == PushOutcome::TooLate))
            .collect();
        stored += accepted.true_count();
        history.append(
            "events",
            filter_record_batch(batch, &accepted).expect("filter"),
        );
        history.append(
            "late_events",
            filter_record_batch(batch, &late).expect("filter"),
        );
    }
    let end = events.iter().map(|e| e.time).max().expect("events");
    op.finish(end.plus(Duration::from_secs(3600)), &mut out);
    assert!(!out.incidents.is_empty(), "the workload opens incidents");
    history.append(
        "incidents",
        incidents_batch(&out.incidents).expect("incidents batch"),
    );
    history.append(
        "incident_events",
        edges_batch(&out.edges).expect("edges batch"),
    );
    let written = history.write_pending(1).expect("write parquet");
    history.publish(written);

    let mut edges_per_incident: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &out.edges {
        *edges_per_incident.entry(&e.incident_id).or_default() += 1;
    }
    let (chain_incident, _) = edges_per_incident
        .iter()
        .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
        .expect("edges");
    let merged: BTreeSet<&str> = out
        .incidents
        .iter()
        .filter(|v| v.merged_into.as_deref() == Some(*chain_incident))
        .map(|v| &*v.incident_id)
        .collect();
    let chain_rows = out
        .edges
        .iter()
        .filter(|e| &*e.incident_id == *chain_incident || merged.contains(&*e.incident_id))
        .count();
    let mut latest: BTreeMap<&str, (u32, bool)> = BTreeMap::new();
    for v in &out.incidents {
        let entry = latest.entry(&v.incident_id).or_insert((0, false));
        if v.version >= entry.0 {
            *entry = (v.version, v.merged_into.is_none());
        }
    }
    Built {
        events: stored,
        incidents: out.incidents.len(),
        edges: out.edges.len(),
        chain_incident: (*chain_incident).to_owned(),
        chain_rows,
        open_or_resolved: latest.values().filter(|(_, kept)| *kept).count(),
        dir,
    }
}

fn sql(c: &mut Criterion, built: &Built) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let reader = HistoryReader::from_history_dir(built.dir.path()).expect("reader");
    let run = |sql: &str| -> Vec<RecordBatch> {
        rt.block_on(reader.query(sql, QueryLimits::default()))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .batches
    };
    // The sum of an Int64 column over a result.
    let total = |batches: &[RecordBatch], column: usize| -> i64 {
        batches
            .iter()
            .flat_map(|b| b.column(column).as_primitive::<Int64Type>().iter())
            .map(|v| v.unwrap_or(0))
            .sum()
    };

    let by_source = "SELECT source, count(*) AS events FROM events GROUP BY source ORDER BY source";
    let per_rule_per_day = "\
        SELECT rule_id, date_trunc('day', opened_at) AS day, count(*) AS incidents \
        FROM incidents_latest WHERE merged_into IS NULL \
        GROUP BY rule_id, date_trunc('day', opened_at) ORDER BY day, rule_id";
    // The query behind `causeway incident show` (src/format.rs, `chain_query`).
    let id = &built.chain_incident;
    let chain = format!(
        "SELECT ie.incident_id AS via, ie.role, ie.lag_seconds, ie.linked_by, ie.rule_version, \
                ie.cause_event_id, ie.join_key, \
                e.event_id, e.source, e.kind, e.time, e.status, e.severity, e.summary \
         FROM incident_events ie JOIN events e ON e.event_id = ie.event_id \
         WHERE ie.incident_id = '{id}' \
            OR ie.incident_id IN (SELECT incident_id FROM incidents WHERE merged_into = '{id}') \
         ORDER BY e.time, ie.role, e.event_id, ie.linked_by"
    );

    // Once outside the timing: each query answers what the history holds.
    assert_eq!(
        total(&run(by_source), 1),
        built.events as i64,
        "events by source"
    );
    assert_eq!(
        total(&run(per_rule_per_day), 2),
        built.open_or_resolved as i64,
        "incidents per rule per day"
    );
    let chain_rows: usize = run(&chain).iter().map(RecordBatch::num_rows).sum();
    assert!(built.chain_rows > 1, "the busiest incident has a chain");
    assert_eq!(chain_rows, built.chain_rows, "chain rows of {id}");

    let mut g = c.benchmark_group("history_sql");
    g.sample_size(20);
    for (name, sql, rows) in [
        ("events_by_source", by_source, built.events),
        (
            "incidents_per_rule_per_day",
            per_rule_per_day,
            built.incidents,
        ),
        (
            "incident_chain",
            chain.as_str(),
            built.edges + built.events + built.incidents,
        ),
    ] {
        g.throughput(Throughput::Elements(rows as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(reader.query(sql, QueryLimits::default()))
                    .expect("query")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
