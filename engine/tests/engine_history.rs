//! The engine end to end without I/O beyond its data dir: records in, Parquet
//! history out, SQL over it, checkpoint and resume.

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use causeway_engine::{Engine, EngineOptions, HistoryReader, LogPosition, QueryLimits};
use causeway_rules::{
    CorrelatorConfig, Event, EventKind, EventTime, ProcessingTime, RulePack, Severity,
};

fn event(secs: i64, kind: EventKind, entity: &str, status: &str, name: &str) -> Event {
    let sid = format!("{name}@{secs}");
    Event {
        id: Event::derive_id("test", &sid, status),
        source: if kind == EventKind::Deploy {
            "github"
        } else {
            "alertmanager"
        }
        .into(),
        source_event_id: sid,
        kind,
        time: EventTime::from_micros(1_700_000_000_000_000 + secs * 1_000_000),
        ingested_at: ProcessingTime::from_micros(0),
        scope: "prod".into(),
        entity: entity.into(),
        severity: if kind == EventKind::Alert {
            Severity::Critical
        } else {
            Severity::None
        },
        status: status.into(),
        summary: name.into(),
        attributes: [("alertname".to_owned(), name.to_owned())].into(),
        raw: "{}".into(),
    }
}

fn options(dir: &std::path::Path) -> EngineOptions {
    EngineOptions {
        data_dir: dir.to_owned(),
        rules: RulePack::builtin().expect("pack"),
        catalog: Default::default(),
        correlator: CorrelatorConfig::default(),
        watermark: Default::default(),
        partition_state: Default::default(),
        history: None,
    }
}

fn records(events: Vec<Event>, first: u64) -> Vec<(LogPosition, Event)> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            (
                LogPosition {
                    partition: 0,
                    offset: first + i as u64,
                },
                e,
            )
        })
        .collect()
}

async fn count(reader: &HistoryReader, sql: &str) -> i64 {
    let r = reader
        .query(sql, QueryLimits::default())
        .await
        .expect("query");
    r.batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test]
async fn deploy_regression_lands_in_queryable_history_and_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = Engine::open(options(dir.path())).expect("open");
    let input = vec![
        event(0, EventKind::Deploy, "checkout", "success", "deploy-abc"),
        event(60, EventKind::Alert, "checkout", "firing", "HighErrorRate"),
        event(60, EventKind::Alert, "checkout", "firing", "HighErrorRate"),
        event(90, EventKind::Alert, "search", "firing", "DiskFull"),
    ];
    // Idle long after: the watermark releases everything.
    engine
        .process(records(input, 0), ProcessingTime::from_micros(0))
        .expect("process");
    engine
        .tick(ProcessingTime::from_micros(60_000_000))
        .expect("tick");

    let live = HistoryReader::live(engine.history());
    assert_eq!(count(&live, "SELECT count(*) FROM events").await, 3);
    assert_eq!(
        count(&live, "SELECT count(*) FROM incidents_latest").await,
        2,
        "one deploy regression, one alert group"
    );
    assert_eq!(
        count(
            &live,
            "SELECT count(*) FROM events WHERE attributes['alertname'] = 'DiskFull'"
        )
        .await,
        1
    );
    engine.commit().expect("commit");
    drop(engine);

    let cold = HistoryReader::from_data_dir(dir.path()).expect("reader");
    assert_eq!(count(&cold, "SELECT count(*) FROM events").await, 3);
    let r = cold
        .query(
            "SELECT root_cause_event_id FROM incidents_latest WHERE rule_id = 'deploy-regression'",
            QueryLimits::default(),
        )
        .await
        .expect("query");
    assert_eq!(r.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);

    // Resume: re-delivered offsets are skipped, state continues.
    let mut engine = Engine::open(options(dir.path())).expect("reopen");
    assert_eq!(engine.next_offsets().get(&0), Some(&4));
    engine
        .process(
            records(
                vec![event(
                    60,
                    EventKind::Alert,
                    "checkout",
                    "firing",
                    "HighErrorRate",
                )],
                2,
            ),
            ProcessingTime::from_micros(61_000_000),
        )
        .expect("process");
    engine.commit().expect("commit");
    let cold = HistoryReader::from_data_dir(dir.path()).expect("reader");
    assert_eq!(count(&cold, "SELECT count(*) FROM events").await, 3);
}

#[tokio::test]
async fn sql_is_read_only_and_cannot_reach_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reader = HistoryReader::from_data_dir(dir.path()).expect("reader");
    for bad in [
        "CREATE TABLE x AS SELECT 1",
        "INSERT INTO events SELECT * FROM events",
        "SET datafusion.execution.batch_size = 1",
        "SELECT * FROM '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
    ] {
        let err = reader
            .query(bad, QueryLimits::default())
            .await
            .expect_err(bad);
        assert!(
            matches!(err, causeway_engine::Error::Query(_)),
            "{bad}: {err}"
        );
    }
    assert_eq!(count(&reader, "SELECT count(*) FROM incidents").await, 0);
}

#[test]
fn a_predicate_that_is_not_boolean_is_rejected_with_its_rule() {
    let text = "version: 1\nrules:\n  - id: bad\n    title: t\n    cause: {where: \"summary\"}\n    effect: {where: \"true\"}\n    within: 5m\n";
    let mut opts = options(tempfile::tempdir().expect("dir").path());
    opts.rules = RulePack::from_files(&[("x.yaml", text)]).expect("parses");
    let err = Engine::open(opts).expect_err("not boolean");
    assert!(err.to_string().contains("rule bad: cause.where"), "{err}");
}

fn on_partition(records: Vec<(LogPosition, Event)>, partition: u32) -> Vec<(LogPosition, Event)> {
    records
        .into_iter()
        .map(|(p, e)| {
            (
                LogPosition {
                    partition,
                    offset: p.offset,
                },
                e,
            )
        })
        .collect()
}

/// Kafka mode: a partition's state moves between engines through
/// `partition_checkpoint` / `assign`, and the second engine continues exactly where
/// the first stopped; records of partitions an engine does not own are skipped.
#[test]
fn partition_state_moves_between_engines_and_unowned_partitions_are_skipped() {
    let external = |dir: &std::path::Path| EngineOptions {
        partition_state: causeway_engine::PartitionStateMode::External,
        history: None,
        ..options(dir)
    };
    let first_half = vec![
        event(0, EventKind::Deploy, "checkout", "success", "deploy-abc"),
        event(60, EventKind::Alert, "checkout", "firing", "HighErrorRate"),
    ];
    let second_half = vec![
        event(120, EventKind::Alert, "checkout", "firing", "HighLatency"),
        event(900, EventKind::Alert, "search", "firing", "DiskFull"),
    ];
    let idle = ProcessingTime::from_micros(3_600_000_000);

    // Reference: one engine sees everything.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut whole = Engine::open(external(dir.path())).expect("open");
    whole.assign(3, None).expect("assign");
    let mut reference = whole
        .process(
            on_partition(records(first_half.clone(), 0), 3),
            ProcessingTime::from_micros(0),
        )
        .expect("process");
    reference.extend(
        whole
            .process(
                on_partition(records(second_half.clone(), 2), 3),
                ProcessingTime::from_micros(0),
            )
            .expect("process"),
    );
    reference.extend(whole.tick(idle).expect("tick"));

    // Engine A owns partition 3 first, then gives it up.
    let dir_a = tempfile::tempdir().expect("tempdir");
    let mut a = Engine::open(external(dir_a.path())).expect("open");
    a.assign(3, None).expect("assign");
    let mut moved = a
        .process(
            on_partition(records(first_half, 0), 3),
            ProcessingTime::from_micros(0),
        )
        .expect("process");
    let saved = a
        .partition_checkpoint(3)
        .expect("checkpoint")
        .expect("owned");
    a.revoke(3);
    assert!(a.owned_partitions().is_empty());
    assert_eq!(a.partition_checkpoint(3).expect("checkpoint"), None);

    // Engine B restores it; a re-delivered record and another partition's are skipped.
    let dir_b = tempfile::tempdir().expect("tempdir");
    let mut b = Engine::open(external(dir_b.path())).expect("open");
    b.assign(3, Some(&saved)).expect("restore");
    assert_eq!(b.next_offsets().get(&3), Some(&2));
    let mut redelivered = on_partition(records(second_half.clone(), 1), 3);
    redelivered.truncate(1); // offset 1 again: already processed by A
    let foreign = on_partition(
        records(
            vec![event(50, EventKind::Alert, "cart", "firing", "Foreign")],
            0,
        ),
        5,
    );
    let mut batch = redelivered;
    batch.extend(foreign);
    batch.extend(on_partition(records(second_half, 2), 3));
    moved.extend(
        b.process(batch, ProcessingTime::from_micros(0))
            .expect("process"),
    );
    moved.extend(b.tick(idle).expect("tick"));

    assert_eq!(moved.incidents, reference.incidents);
    assert_eq!(moved.edges, reference.edges);
    assert_eq!(b.owned_partitions(), vec![3]);
    assert!(
        b.assign(4, Some(b"{\"version\": 1}")).is_err(),
        "a foreign state is refused"
    );
}

#[tokio::test]
async fn retention_drops_whole_old_days_from_readers_and_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = Engine::open(options(dir.path())).expect("open");
    let day = 86_400;
    let input = vec![
        event(0, EventKind::Alert, "search", "firing", "DiskFull"),
        event(
            3 * day,
            EventKind::Alert,
            "search",
            "firing",
            "HighErrorRate",
        ),
    ];
    engine
        .process(records(input, 0), ProcessingTime::from_micros(0))
        .expect("process");
    engine
        .tick(ProcessingTime::from_micros(60_000_000))
        .expect("tick");
    engine.commit().expect("commit");
    let live = HistoryReader::live(engine.history());
    assert_eq!(count(&live, "SELECT count(*) FROM events").await, 2);

    // Keep two days before "now" = the second event's day: the first day goes.
    let now = ProcessingTime::from_micros(1_700_000_000_000_000 + 3 * day * 1_000_000);
    let removed = engine
        .apply_retention(now, std::time::Duration::from_secs(2 * 86_400))
        .expect("retention");
    assert!(removed >= 1, "the first day's files");
    assert_eq!(count(&live, "SELECT count(*) FROM events").await, 1);
    assert_eq!(
        count(
            &live,
            "SELECT count(*) FROM events WHERE attributes['alertname'] = 'HighErrorRate'"
        )
        .await,
        1,
        "the recent day stays"
    );
    let cold = HistoryReader::from_data_dir(dir.path()).expect("reader");
    assert_eq!(count(&cold, "SELECT count(*) FROM events").await, 1);
    // Running it again finds nothing more to remove.
    assert_eq!(
        engine
            .apply_retention(now, std::time::Duration::from_secs(2 * 86_400))
            .expect("retention"),
        0
    );
}

#[tokio::test]
async fn compaction_merges_a_days_small_files_and_a_crash_midway_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = Engine::open(options(dir.path())).expect("open");
    // Twenty commits of one event each: twenty small files in one day.
    for i in 0..20u64 {
        let e = event(
            i64::try_from(i).expect("small") * 10,
            EventKind::Alert,
            "search",
            "firing",
            &format!("Alert{i}"),
        );
        engine
            .process(
                records(vec![e], i),
                ProcessingTime::from_micros(i64::try_from(i).expect("small")),
            )
            .expect("process");
        engine.commit().expect("commit");
    }
    let events_dir = |d: &std::path::Path| {
        let mut n = 0;
        for day in std::fs::read_dir(d.join("history/events")).expect("events dir") {
            n += std::fs::read_dir(day.expect("day").path())
                .expect("files")
                .count();
        }
        n
    };
    assert_eq!(events_dir(dir.path()), 20);
    let live = HistoryReader::live(engine.history());
    assert_eq!(count(&live, "SELECT count(*) FROM events").await, 20);

    // A crash after the compacted file is in place but before its inputs are
    // deleted: simulated by copying the inputs back after compaction.
    let day_dir = std::fs::read_dir(dir.path().join("history/events"))
        .expect("events dir")
        .next()
        .expect("a day")
        .expect("entry")
        .path();
    let saved = tempfile::tempdir().expect("tempdir");
    for f in std::fs::read_dir(&day_dir).expect("files") {
        let f = f.expect("file").path();
        std::fs::copy(&f, saved.path().join(f.file_name().expect("name"))).expect("copy");
    }
    let merged = engine.compact_history(16).expect("compact");
    assert!(merged >= 20, "the day's event files: {merged}");
    assert_eq!(events_dir(dir.path()), 1);
    assert_eq!(count(&live, "SELECT count(*) FROM events").await, 20);
    drop(engine);
    for f in std::fs::read_dir(saved.path()).expect("saved") {
        let f = f.expect("file").path();
        std::fs::copy(&f, day_dir.join(f.file_name().expect("name"))).expect("restore");
    }
    assert_eq!(events_dir(dir.path()), 21);
    // The next open keeps the compacted file and drops what it supersedes: every
    // event once, none twice.
    let engine = Engine::open(options(dir.path())).expect("reopen");
    assert_eq!(events_dir(dir.path()), 1);
    let live = HistoryReader::live(engine.history());
    assert_eq!(count(&live, "SELECT count(*) FROM events").await, 20);
    assert_eq!(
        count(&live, "SELECT count(DISTINCT event_id) FROM events").await,
        20
    );
}

/// The first Parquet file of the first day of `table`.
fn first_file(
    data_dir: &std::path::Path,
    table: &str,
) -> parquet::file::reader::SerializedFileReader<std::fs::File> {
    let day = std::fs::read_dir(data_dir.join("history").join(table))
        .expect("table dir")
        .next()
        .expect("a day")
        .expect("entry")
        .path();
    let file = std::fs::read_dir(&day)
        .expect("day dir")
        .next()
        .expect("a file")
        .expect("entry")
        .path();
    parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&file).expect("open"))
        .expect("parquet")
}

#[test]
fn id_columns_carry_bloom_filters_and_nothing_else_does() {
    use parquet::file::reader::FileReader;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = Engine::open(options(dir.path())).expect("open");
    let input = vec![
        event(0, EventKind::Deploy, "checkout", "success", "deploy-abc"),
        event(60, EventKind::Alert, "checkout", "firing", "HighErrorRate"),
    ];
    engine
        .process(records(input, 0), ProcessingTime::from_micros(0))
        .expect("process");
    engine
        .tick(ProcessingTime::from_micros(60_000_000))
        .expect("tick");
    engine.commit().expect("commit");
    for (table, lookup) in [
        ("events", vec!["event_id"]),
        ("incidents", vec!["incident_id", "root_cause_event_id"]),
        ("incident_events", vec!["incident_id", "event_id"]),
    ] {
        let reader = first_file(dir.path(), table);
        let row_group = reader.metadata().row_group(0);
        for column in row_group.columns() {
            let name = column.column_path().string();
            assert_eq!(
                column.bloom_filter_offset().is_some(),
                lookup.contains(&name.as_str()),
                "{table}.{name}"
            );
        }
    }
}

/// An enricher whose text is long and the same over an incident's versions, as
/// the binary's is.
#[derive(Debug)]
struct LongText;

impl causeway_engine::Enricher for LongText {
    fn enrich(
        &self,
        incident: &causeway_rules::IncidentVersion,
        _edges: &[&causeway_rules::IncidentEdge],
    ) -> Option<std::sync::Arc<str>> {
        Some(format!("{}{}", incident.incident_id, "x".repeat(700)).into())
    }
}

#[test]
fn repeated_enrichment_stays_dictionary_encoded_past_the_default_page_limit() {
    use parquet::file::reader::FileReader;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = Engine::open(options(dir.path())).expect("open");
    engine.set_enricher(std::sync::Arc::new(LongText));
    // 2 000 alert groups of 3 alerts: 6 000 versions, 2 000 distinct texts of
    // ~740 bytes — 1.5 MB of dictionary, past parquet's 1 MiB default.
    let mut input = Vec::new();
    for at in 0..3 {
        for entity in 0..2000 {
            let mut e = event(
                at * 10,
                EventKind::Alert,
                &format!("svc-{entity}"),
                "firing",
                "HighErrorRate",
            );
            e.id = Event::derive_id("test", &format!("svc-{entity}@{at}"), "firing");
            input.push(e);
        }
    }
    engine
        .process(records(input, 0), ProcessingTime::from_micros(0))
        .expect("process");
    engine
        .tick(ProcessingTime::from_micros(3_600_000_000))
        .expect("tick");
    engine.commit().expect("commit");
    let reader = first_file(dir.path(), "incidents");
    let row_group = reader.metadata().row_group(0);
    assert!(
        row_group.num_rows() >= 6000,
        "{} rows",
        row_group.num_rows()
    );
    let enrichment = row_group
        .columns()
        .iter()
        .find(|c| c.column_path().string() == "enrichment")
        .expect("enrichment column");
    // Plain pages would hold every row's text (≥ 6 000 × 740 bytes).
    let text_bytes = 2000 * 740;
    assert!(
        enrichment.uncompressed_size() < 2 * text_bytes,
        "enrichment column chunk {} bytes uncompressed",
        enrichment.uncompressed_size()
    );
}

/// Processes `events` as log records from offset `first`, at processing time `now`
/// (microseconds).
fn feed(engine: &mut Engine, events: Vec<Event>, first: u64, now: i64) {
    engine
        .process(records(events, first), ProcessingTime::from_micros(now))
        .expect("process");
}

/// Rows the engine appends while a commit is written in the background belong
/// to the next commit; readers see every row throughout, and only committed
/// rows survive a restart.
#[tokio::test]
async fn rows_appended_during_a_background_commit_wait_for_the_next_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = Engine::open(options(dir.path())).expect("open");
    let first = vec![
        event(0, EventKind::Alert, "search", "firing", "DiskFull"),
        event(10, EventKind::Alert, "search", "firing", "HighLatency"),
    ];
    feed(&mut engine, first, 0, 0);
    engine.start_commit().expect("start");
    assert!(engine.commit_in_flight());
    assert!(engine.status().dirty, "a commit in flight is not settled");
    let second = vec![event(
        20,
        EventKind::Alert,
        "checkout",
        "firing",
        "OOMKilled",
    )];
    feed(&mut engine, second, 2, 1);
    let live = HistoryReader::live(engine.history());
    assert_eq!(count(&live, "SELECT count(*) FROM events").await, 3);
    let (long_ago, interval) = (
        std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(1),
    );
    assert!(
        !engine.commit_due(long_ago, interval),
        "the interval does not wait for a commit in flight"
    );
    engine.finish_commit().expect("finish");
    assert!(!engine.commit_in_flight());
    assert!(engine.status().dirty, "the second batch is still pending");
    assert!(engine.commit_due(long_ago, interval));
    assert_eq!(count(&live, "SELECT count(*) FROM events").await, 3);
    assert_eq!(
        count(
            &HistoryReader::from_data_dir(dir.path()).expect("reader"),
            "SELECT count(*) FROM events"
        )
        .await,
        2,
        "only the sealed rows were committed"
    );
    drop(engine);

    // The restart resumes after the first commit: the third event is read again.
    let mut engine = Engine::open(options(dir.path())).expect("reopen");
    assert_eq!(engine.next_offsets().get(&0), Some(&2));
    let again = vec![event(
        20,
        EventKind::Alert,
        "checkout",
        "firing",
        "OOMKilled",
    )];
    feed(&mut engine, again, 2, 1);
    engine.commit().expect("commit");
    let cold = HistoryReader::from_data_dir(dir.path()).expect("reader");
    assert_eq!(count(&cold, "SELECT count(*) FROM events").await, 3);
    assert_eq!(
        count(&cold, "SELECT count(DISTINCT event_id) FROM events").await,
        3
    );
}

/// A background commit that fails (its checkpoint cannot be written) is
/// reported when the engine next waits for it; its rows stay pending, the next
/// commit writes them once, and the half-written files never show.
#[tokio::test]
async fn a_failed_background_commit_keeps_its_rows_for_the_retry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = Engine::open(options(dir.path())).expect("open");
    engine
        .process(
            records(
                vec![event(0, EventKind::Alert, "search", "firing", "DiskFull")],
                0,
            ),
            ProcessingTime::from_micros(0),
        )
        .expect("process");
    engine.commit().expect("first commit");
    engine
        .process(
            records(
                vec![event(
                    10,
                    EventKind::Alert,
                    "search",
                    "firing",
                    "HighLatency",
                )],
                1,
            ),
            ProcessingTime::from_micros(1),
        )
        .expect("process");
    // The checkpoint's directory becomes a file: the Parquet files are written,
    // the checkpoint is not.
    let engine_dir = dir.path().join("engine");
    std::fs::remove_dir_all(&engine_dir).expect("remove engine dir");
    std::fs::write(&engine_dir, b"not a directory").expect("block");
    engine.start_commit().expect("started");
    let failed = engine.finish_commit();
    assert!(failed.is_err(), "the checkpoint could not be written");
    assert!(engine.status().dirty, "its rows are pending again");
    let live = HistoryReader::live(engine.history());
    assert_eq!(count(&live, "SELECT count(*) FROM events").await, 2);
    assert_eq!(
        count(&live, "SELECT count(DISTINCT event_id) FROM events").await,
        2,
        "the failed commit's files are not listed beside its pending rows"
    );

    std::fs::remove_file(&engine_dir).expect("unblock");
    std::fs::create_dir_all(&engine_dir).expect("engine dir");
    engine.commit().expect("retry");
    assert!(!engine.status().dirty);
    assert_eq!(count(&live, "SELECT count(*) FROM events").await, 2);
    drop(engine);
    let cold = HistoryReader::from_data_dir(dir.path()).expect("reader");
    assert_eq!(count(&cold, "SELECT count(*) FROM events").await, 2);
}
