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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_ahead_keep_offset_order_through_smaller_polls_seeks_and_new_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, writer) = EmbeddedLog::open(dir.path()).expect("open");
    let handle = tokio::task::spawn_blocking(move || writer.run());
    log.append((0..1000).map(event).collect())
        .await
        .expect("append");
    let mut consumer = log.consumer();
    let offsets = |records: &[LogRecord]| records.iter().map(|r| r.offset).collect::<Vec<_>>();
    let wait = Duration::from_millis(10);
    // Full reads: each poll starts the next read ahead.
    let first = consumer.poll(300, wait).await.expect("poll");
    assert_eq!(offsets(&first), (0..300).collect::<Vec<_>>());
    // A smaller poll than the read ahead: the rest comes next, in order.
    let second = consumer.poll(100, wait).await.expect("poll");
    assert_eq!(offsets(&second), (300..400).collect::<Vec<_>>());
    let third = consumer.poll(300, wait).await.expect("poll");
    assert_eq!(offsets(&third), (400..700).collect::<Vec<_>>());
    assert_eq!(third[0].event, event(400));
    // A seek drops what was read ahead.
    consumer.seek(&[(0, 50)].into()).expect("seek");
    let again = consumer.poll(10, wait).await.expect("poll");
    assert_eq!(offsets(&again), (50..60).collect::<Vec<_>>());
    // A read not cut at its limit reached the end of the log as of the poll,
    // including what was appended after the read ahead began.
    let rest = consumer.poll(2000, wait).await.expect("poll");
    assert_eq!(offsets(&rest), (60..1000).collect::<Vec<_>>());
    log.append((1000..1005).map(event).collect())
        .await
        .expect("append");
    let new = consumer.poll(2000, wait).await.expect("poll");
    assert_eq!(offsets(&new), (1000..1005).collect::<Vec<_>>());
    assert_eq!(new[4].event, event(1004));
    let none = consumer.poll(2000, wait).await.expect("poll");
    assert!(none.is_empty());
    drop(log);
    drop(consumer);
    handle.await.expect("writer");
}

#[test]
fn a_second_writer_on_the_same_log_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, _writer) = EmbeddedLog::open(dir.path()).expect("first");
    let err = EmbeddedLog::open(dir.path()).expect_err("second");
    assert!(err.to_string().contains("in use"), "{err}");
}

/// The bytes of one record, pinned: if this changes, `Event`'s encoding changed
/// and logs written by an earlier release would be misread — give the new
/// encoding its own format byte and keep decoding the old one.
#[test]
fn the_record_encoding_is_pinned() {
    let mut e = event(7);
    e.attributes
        .insert("alertname".into(), "HighErrorRate".into());
    e.raw = "{\"a\":1}".into();
    let bytes = encode_record(&e).expect("encode");
    assert_eq!(hex::encode(&bytes), GOLDEN, "{}", hex::encode(&bytes));
    assert_eq!(
        decode_record(&bytes, ProcessingTime::from_micros(1)).expect("decode"),
        e
    );
}

const GOLDEN: &str = "01246576745f346638383731636539636131366333616535386534353762626235666333626304746573740137000e00017301650206666972696e67076576656e7420370109616c6572746e616d650d486967684572726f7252617465077b2261223a317d";

#[test]
fn garbage_records_are_named_not_decoded() {
    let now = ProcessingTime::from_micros(0);
    assert!(
        decode_record(&[], now)
            .expect_err("empty")
            .contains("empty")
    );
    assert!(
        decode_record(&[9, 1, 2], now)
            .expect_err("unknown")
            .contains("format 9")
    );
    assert!(decode_record(&[FORMAT_POSTCARD_V1, 0xff], now).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_as_cloudevents_json_is_still_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, writer) = EmbeddedLog::open(dir.path()).expect("open");
    let handle = tokio::task::spawn_blocking(move || writer.run());
    // What an earlier release appended: CloudEvents JSON payloads.
    let (ack, rx) = oneshot::channel();
    log.tx
        .send(AppendRequest {
            payloads: vec![event(0).to_cloudevent_json().into_bytes()],
            ack,
        })
        .await
        .expect("send");
    rx.await.expect("ack").expect("append");
    log.append(vec![event(1)]).await.expect("append");
    let mut consumer = log.consumer();
    let got = consumer
        .poll(100, Duration::from_millis(10))
        .await
        .expect("poll");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].event, event(0));
    assert_eq!(got[1].event, event(1));
    drop(log);
    drop(consumer);
    handle.await.expect("writer");
}
