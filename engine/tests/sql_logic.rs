//! `tests/sql/*.slt` (sqllogictest) against the Parquet history a real engine wrote
//! for a fixture, through the same `HistoryReader` and limits every SQL surface
//! uses; and the limits themselves: a runaway query is cancelled at its timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use causeway_engine::{Engine, EngineOptions, Error, HistoryReader, LogPosition, QueryLimits};
use causeway_rules::{
    CorrelatorConfig, Event, EventKind, EventTime, ProcessingTime, RulePack, Severity,
};
use sqllogictest::{DBOutput, DefaultColumnType};

fn event(secs: i64, kind: EventKind, entity: &str, status: &str, name: &str) -> Event {
    let sid = format!("{name}@{secs}");
    let alert = kind == EventKind::Alert;
    Event {
        id: Event::derive_id("test", &sid, status),
        source: if alert { "alertmanager" } else { "github" }.into(),
        source_event_id: sid,
        kind,
        time: EventTime::from_micros(1_700_000_000_000_000 + secs * 1_000_000),
        ingested_at: ProcessingTime::from_micros(0),
        scope: "prod".into(),
        entity: entity.into(),
        severity: if alert {
            Severity::Critical
        } else {
            Severity::None
        },
        status: status.into(),
        summary: name.into(),
        attributes: if alert {
            [("alertname".to_owned(), name.to_owned())].into()
        } else {
            Default::default()
        },
        raw: "{}".into(),
    }
}

/// Writes the fixture history under `dir` with the built-in rule pack.
fn fixture(dir: &Path) {
    let mut engine = Engine::open(EngineOptions {
        data_dir: dir.to_owned(),
        rules: RulePack::builtin().expect("pack"),
        catalog: Default::default(),
        correlator: CorrelatorConfig::default(),
        watermark: Default::default(),
        partition_state: Default::default(),
        history: None,
    })
    .expect("open");
    let input = vec![
        event(0, EventKind::Deploy, "checkout", "success", "deploy"),
        event(30, EventKind::Alert, "node-1", "firing", "DiskFull"),
        event(60, EventKind::Alert, "checkout", "firing", "HighErrorRate"),
        event(90, EventKind::Deploy, "search", "success", "deploy search"),
        event(
            120,
            EventKind::Alert,
            "checkout",
            "firing",
            "HighLatencyP99",
        ),
        event(
            300,
            EventKind::Alert,
            "checkout",
            "resolved",
            "HighLatencyP99",
        ),
    ];
    let records = input
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            (
                LogPosition {
                    partition: 0,
                    offset: i as u64,
                },
                e,
            )
        })
        .collect();
    engine
        .process(records, ProcessingTime::from_micros(0))
        .expect("process");
    // Long idle: every source's watermark catches up and everything is released.
    engine
        .tick(ProcessingTime::from_micros(3_600_000_000))
        .expect("tick");
    engine.commit().expect("commit");
}

/// The history as a sqllogictest database.
struct History {
    reader: HistoryReader,
    limits: QueryLimits,
}

#[derive(Debug)]
struct SqlError(String);

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlError {}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for History {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let result = self
            .reader
            .query(sql, self.limits)
            .await
            .map_err(|e| SqlError(e.to_string()))?;
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &result.batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SqlError(e.to_string()))?;
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .map(|f| f.value(row).to_string())
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; result.schema.fields().len()],
            rows,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "causeway"
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/sql")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files_pass_over_a_fixture_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    fixture(dir.path());
    for file in slt_files() {
        let data_dir = dir.path().to_owned();
        let mut runner = sqllogictest::Runner::new(move || {
            let data_dir = data_dir.clone();
            async move {
                Ok(History {
                    reader: HistoryReader::from_data_dir(&data_dir)
                        .map_err(|e| SqlError(e.to_string()))?,
                    limits: QueryLimits::default(),
                })
            }
        });
        if let Err(e) = runner.run_file_async(&file).await {
            panic!("{}: {e}", file.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_query_is_cancelled_at_its_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    fixture(dir.path());
    let reader = HistoryReader::from_data_dir(dir.path()).expect("reader");
    let started = std::time::Instant::now();
    let err = reader
        .query(
            "SELECT sum(value % 7) FROM generate_series(1, 1000000000000)",
            QueryLimits {
                timeout: Duration::from_millis(300),
                memory_bytes: 256 << 20,
            },
        )
        .await
        .expect_err("must not finish");
    assert!(matches!(err, Error::QueryTimeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cancelled promptly, not run to the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_beyond_the_concurrency_cap_are_refused_as_busy() {
    let dir = tempfile::tempdir().expect("tempdir");
    fixture(dir.path());
    let reader = HistoryReader::from_data_dir(dir.path())
        .expect("reader")
        .with_max_concurrent_queries(1);
    let long = {
        let reader = reader.clone();
        tokio::spawn(async move {
            reader
                .query(
                    "SELECT sum(value % 7) FROM generate_series(1, 1000000000000)",
                    QueryLimits {
                        timeout: Duration::from_secs(5),
                        memory_bytes: 256 << 20,
                    },
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = reader
        .query("SELECT count(*) FROM events", QueryLimits::default())
        .await
        .expect_err("the only slot is taken");
    assert!(matches!(err, Error::Busy { limit: 1 }), "{err}");
    let first = long.await.expect("join");
    assert!(matches!(first, Err(Error::QueryTimeout { .. })));
    // The slot is free again.
    reader
        .query("SELECT count(*) FROM events", QueryLimits::default())
        .await
        .expect("runs once the slot is free");
}
