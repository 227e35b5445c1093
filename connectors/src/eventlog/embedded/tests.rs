use super::*;
use causeway_rules::{EventKind, EventTime, Severity};

fn event(i: u64) -> Event {
    Event {
        id: Event::derive_id("test", &i.to_string(), "firing"),
        source: "test".into(),
        source_event_id: i.to_string(),
        kind: EventKind::Alert,
        time: EventTime::from_micros(i as i64),
        ingested_at: ProcessingTime::from_micros(0),
        scope: "s".into(),
        entity: "e".into(),
        severity: Severity::Warning,
        status: "firing".into(),
        summary: format!("event {i}"),
        attributes: Default::default(),
        raw: "{}".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_events_are_read_back_in_order_after_reopen_and_torn_tails_are_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (log, writer) = EmbeddedLog::open(dir.path()).expect("open");
        let handle = tokio::task::spawn_blocking(move || writer.run());
        log.append((0..10).map(event).collect())
            .await
            .expect("append");
        log.append(vec![event(10)]).await.expect("append");
        assert_eq!(log.end_offsets().get(&0), Some(&11));
        let mut consumer = log.consumer();
        consumer.seek(&[(0, 4)].into()).expect("seek");
        let got = consumer
            .poll(100, Duration::from_millis(10))
            .await
            .expect("poll");
        assert_eq!(got.len(), 7);
        assert_eq!(got[0].offset, 4);
        assert_eq!(got[0].event, event(4));
        drop(log);
        drop(consumer);
        handle.await.expect("writer");
    }
    // A crash mid-write leaves a partial record behind.
    let seg = dir.path().join(segment_name(0));
    let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
    f.write_all(&[200, 0, 0, 0, 1, 2, 3]).expect("write");
    drop(f);

    let (log, writer) = EmbeddedLog::open(dir.path()).expect("reopen");
    let handle = tokio::task::spawn_blocking(move || writer.run());
    assert_eq!(log.end_offsets().get(&0), Some(&11));
    log.append(vec![event(11)]).await.expect("append");
    let mut consumer = log.consumer();
    let got = consumer
        .poll(100, Duration::from_millis(10))
        .await
        .expect("poll");
    assert_eq!(got.len(), 12);
    assert_eq!(got[11].event, event(11));
    drop(log);
    handle.await.expect("writer");
}

#[test]
fn a_second_writer_on_the_same_log_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, _writer) = EmbeddedLog::open(dir.path()).expect("first");
    let err = EmbeddedLog::open(dir.path()).expect_err("second");
    assert!(err.to_string().contains("in use"), "{err}");
}
