//! The history in an object store: the same commit protocol as a directory
//! (files whole or not at all, uncommitted ones removed at open, compaction and
//! retention), read back by SQL through the store. An in-memory `ObjectStore`
//! stands in for the bucket here; `tests/s3_history_end_to_end.rs` runs the real
//! binary against an S3 server on loopback.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use causeway_engine::{
    Engine, EngineOptions, HistoryLocation, HistoryReader, LogPosition, ObjectHistory,
    ObjectStoreSpec, QueryLimits,
};
use causeway_rules::{
    CorrelatorConfig, Event, EventKind, EventTime, ProcessingTime, RulePack, Severity,
};
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

const DAY: i64 = 86_400;

fn alert(secs: i64, entity: &str, name: &str) -> Event {
    let sid = format!("{name}@{secs}");
    Event {
        id: Event::derive_id("test", &sid, "firing"),
        source: "alertmanager".into(),
        source_event_id: sid,
        kind: EventKind::Alert,
        time: EventTime::from_micros(1_700_000_000_000_000 + secs * 1_000_000),
        ingested_at: ProcessingTime::from_micros(0),
        scope: "prod".into(),
        entity: entity.into(),
        severity: Severity::Critical,
        status: "firing".into(),
        summary: name.into(),
        attributes: [("alertname".to_owned(), name.to_owned())].into(),
        raw: "{}".into(),
    }
}

fn location(store: &Arc<InMemory>, url: &str) -> HistoryLocation {
    let spec = ObjectStoreSpec {
        url: url.into(),
        options: Default::default(),
    };
    let store: Arc<dyn ObjectStore> = store.clone();
    HistoryLocation::Object(ObjectHistory::new(spec, store).expect("location"))
}

fn options(dir: &std::path::Path, history: Option<HistoryLocation>) -> EngineOptions {
    EngineOptions {
        data_dir: dir.to_owned(),
        rules: RulePack::builtin().expect("pack"),
        catalog: Default::default(),
        correlator: CorrelatorConfig::default(),
        watermark: Default::default(),
        partition_state: Default::default(),
        history,
    }
}

fn process(engine: &mut Engine, events: Vec<Event>, first: u64) {
    let records = events
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
        .collect();
    engine
        .process(records, ProcessingTime::from_micros(0))
        .expect("process");
    engine
        .tick(ProcessingTime::from_micros(60_000_000))
        .expect("tick");
}

async fn keys(store: &InMemory, under: &str) -> Vec<String> {
    let prefix = ObjectPath::from(under);
    let mut keys: Vec<String> = store
        .list(Some(&prefix))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list");
    keys.sort();
    keys
}

async fn count(reader: &HistoryReader, sql: &str) -> i64 {
    let r = reader
        .query(sql, QueryLimits::default())
        .await
        .expect("query");
    r.batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_land_in_the_bucket_and_read_back_through_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(InMemory::new());
    let url = "s3://ops-history/causeway/prod";
    let mut engine = Engine::open(options(dir.path(), Some(location(&store, url)))).expect("open");
    process(
        &mut engine,
        vec![
            alert(0, "search", "DiskFull"),
            alert(DAY, "search", "DiskFull"),
        ],
        0,
    );
    // Due at the interval (a few rows are far from the size that makes it due sooner).
    let (hour, now) = (
        std::time::Duration::from_secs(3600),
        std::time::Duration::ZERO,
    );
    assert!(!engine.commit_due(now, hour));
    assert!(engine.commit_due(hour, hour));
    engine.commit().expect("commit");
    assert!(!engine.commit_due(hour, hour), "nothing left to commit");

    let objects = keys(&store, "causeway/prod/events").await;
    assert_eq!(
        objects,
        [
            "causeway/prod/events/dt=2023-11-14/part-00000000000000000001.parquet",
            "causeway/prod/events/dt=2023-11-15/part-00000000000000000001.parquet",
        ],
        "one file per day, under the prefix"
    );
    assert!(
        !dir.path().join("history").exists(),
        "nothing is written to the local history"
    );

    // A cold reader of the data dir goes through the store.
    let cold = HistoryReader::from_data_dir_at(dir.path(), location(&store, url)).expect("reader");
    assert_eq!(count(&cold, "SELECT count(*) FROM events").await, 2);
    assert_eq!(
        count(&cold, "SELECT count(*) FROM incidents_latest").await,
        2
    );
    // The data dir remembers where its history is, and will not be pointed
    // elsewhere: a local reader, an engine without the URL, or another URL.
    let err = HistoryReader::from_data_dir(dir.path())
        .expect_err("local reader")
        .to_string();
    assert!(err.contains(url), "{err}");
    drop(engine);
    let Err(err) = Engine::open(options(dir.path(), None)) else {
        panic!("opened without the URL");
    };
    let err = err.to_string();
    assert!(err.contains(url) && err.contains("history.url"), "{err}");
    let Err(err) = Engine::open(options(
        dir.path(),
        Some(location(&store, "s3://ops-history/elsewhere")),
    )) else {
        panic!("opened at another URL");
    };
    let err = err.to_string();
    assert!(err.contains(url) && err.contains("elsewhere"), "{err}");

    // The same URL resumes.
    let engine = Engine::open(options(dir.path(), Some(location(&store, url)))).expect("reopen");
    let live = HistoryReader::live(engine.history());
    assert_eq!(count(&live, "SELECT count(*) FROM events").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_history_cannot_move_to_a_bucket_silently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = Engine::open(options(dir.path(), None)).expect("open");
    process(&mut engine, vec![alert(0, "search", "DiskFull")], 0);
    engine.commit().expect("commit");
    drop(engine);
    let store = Arc::new(InMemory::new());
    let Err(err) = Engine::open(options(
        dir.path(),
        Some(location(&store, "s3://ops-history/p")),
    )) else {
        panic!("a local history moved to a bucket");
    };
    let err = err.to_string();
    assert!(err.contains("already has a history"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_objects_are_removed_and_compaction_and_retention_work_in_the_bucket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(InMemory::new());
    let url = "s3://ops-history/h";
    let mut engine = Engine::open(options(dir.path(), Some(location(&store, url)))).expect("open");
    // An old day, for retention (commit 1), then twelve small commits of one day.
    process(&mut engine, vec![alert(-3 * DAY, "search", "Old")], 0);
    engine.commit().expect("commit");
    for i in 1..=12u64 {
        let secs = i64::try_from(i).expect("small") * 10;
        process(
            &mut engine,
            vec![alert(secs, "search", &format!("Alert{i}"))],
            i,
        );
        engine.commit().expect("commit");
    }
    drop(engine);

    // A crash between storing a commit's files and its checkpoint leaves objects
    // of a sequence the checkpoint never recorded; one is planted here.
    let stray = ObjectPath::from("h/events/dt=2023-11-14/part-00000000000000000099.parquet");
    let good = ObjectPath::from("h/events/dt=2023-11-14/part-00000000000000000002.parquet");
    let bytes = store
        .get(&good)
        .await
        .expect("committed file")
        .bytes()
        .await
        .expect("bytes");
    store
        .put(&stray, PutPayload::from(bytes))
        .await
        .expect("plant");
    let mut engine =
        Engine::open(options(dir.path(), Some(location(&store, url)))).expect("reopen");
    assert!(
        !keys(&store, "h/events").await.contains(&stray.to_string()),
        "the uncommitted object is removed at open"
    );
    let live = HistoryReader::live(engine.history());
    assert_eq!(count(&live, "SELECT count(*) FROM events").await, 13);

    let merged = engine.compact_history(8).expect("compact");
    assert!(merged >= 12, "the day's small files: {merged}");
    let day: Vec<String> = keys(&store, "h/events/dt=2023-11-14").await;
    assert_eq!(
        day,
        ["h/events/dt=2023-11-14/part-00000000000000000002-00000000000000000013.parquet"]
    );
    assert_eq!(count(&live, "SELECT count(*) FROM events").await, 13);
    assert_eq!(
        count(&live, "SELECT count(DISTINCT event_id) FROM events").await,
        13
    );

    let now = ProcessingTime::from_micros(1_700_000_000_000_000);
    let removed = engine
        .apply_retention(now, std::time::Duration::from_secs(2 * 86_400))
        .expect("retention");
    assert!(removed >= 1, "the old day's files");
    assert!(keys(&store, "h/events/dt=2023-11-11").await.is_empty());
    assert_eq!(count(&live, "SELECT count(*) FROM events").await, 12);
    engine.commit().expect("commit");
    drop(engine);
    let cold = HistoryReader::from_data_dir_at(dir.path(), location(&store, url)).expect("reader");
    assert_eq!(count(&cold, "SELECT count(*) FROM events").await, 12);
}
