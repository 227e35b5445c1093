//! File import: the same decoders as the receivers, over files.
//!
//! A file is checked whole before anything is appended (decoded, or for CloudEvents
//! checked without building its events), so a bad line refuses the file with its
//! line number and appends nothing. `.gz` files are decompressed.
//! [`decode_chunks`] decodes a chunk at a time, so an importer can check every
//! line first and then append without holding every decoded event at once;
//! [`decode_file_chunks`] does so reading the file as it goes.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use causeway_rules::Event;

use crate::decode::{DecodeContext, cloudevents, cloudtrail, cost, k8s_audit};
use crate::{Error, Result};

/// The formats `causeway import` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// A CloudTrail `{"Records": [...]}` file (`.json` or `.json.gz`).
    Cloudtrail,
    /// FOCUS rows as CSV.
    Focus,
    /// Kubernetes audit log, one `Event` (or `EventList`) per line.
    K8sAudit,
    /// CloudEvents, one per line.
    Events,
}

impl ImportFormat {
    /// The receiver path that takes the same format, and its content type.
    pub fn receiver(self) -> (&'static str, &'static str) {
        match self {
            ImportFormat::Cloudtrail => ("/ingest/cloudtrail", "application/json"),
            ImportFormat::Focus => ("/ingest/cost", "text/csv"),
            ImportFormat::K8sAudit => ("/ingest/k8s-audit", "application/json"),
            ImportFormat::Events => ("/ingest/events", "application/json"),
        }
    }
}

/// Reads a file, decompressing `.gz`.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(Error::io("read", path))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .read_to_end(&mut out)
            .map_err(Error::io("decompress", path))?;
        return Ok(out);
    }
    Ok(bytes)
}

/// Decodes a whole file's bytes; all or nothing.
pub fn decode(format: ImportFormat, bytes: &[u8], cx: &DecodeContext<'_>) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    for chunk in decode_chunks(format, bytes, cx, usize::MAX) {
        out.extend(chunk?);
    }
    Ok(out)
}

/// A line decoder of a JSON-lines format.
type LineDecode = fn(&[u8], &DecodeContext<'_>) -> Result<Vec<Event>>;

/// A line checker of a JSON-lines format: how many events its decoder would
/// give the line, or the decoder's error.
type LineCheck = fn(&[u8], &DecodeContext<'_>) -> Result<usize>;

/// The line checker of a JSON-lines format; `None` for whole documents.
/// CloudEvents have a check that builds no event; others are decoded.
fn line_checker(format: ImportFormat) -> Option<LineCheck> {
    match format {
        ImportFormat::Cloudtrail | ImportFormat::Focus => None,
        ImportFormat::K8sAudit => {
            Some(|line, cx| k8s_audit::decode(line, cx).map(|d| d.events.len()))
        }
        ImportFormat::Events => Some(cloudevents::check),
    }
}

/// The line decoder of a JSON-lines format; `None` for whole documents.
fn line_decoder(format: ImportFormat) -> Option<LineDecode> {
    match format {
        ImportFormat::Cloudtrail | ImportFormat::Focus => None,
        ImportFormat::K8sAudit => Some(|line, cx| k8s_audit::decode(line, cx).map(|d| d.events)),
        ImportFormat::Events => Some(cloudevents::decode),
    }
}

/// A whole document (CloudTrail, FOCUS) decoded at once.
fn decode_document(
    format: ImportFormat,
    bytes: &[u8],
    cx: &DecodeContext<'_>,
) -> Result<Vec<Event>> {
    match format {
        ImportFormat::Cloudtrail => cloudtrail::decode(bytes, cx),
        _ => cost::decode_focus_csv(bytes, cx),
    }
}

/// A file's events, decoded as the iterator advances: JSON-lines formats in
/// chunks of at least `chunk` events (a line's events are never split), CloudTrail
/// and FOCUS documents in one. The first bad line ends the iteration with its
/// error, naming the line.
pub fn decode_chunks<'a>(
    format: ImportFormat,
    bytes: &'a [u8],
    cx: &'a DecodeContext<'a>,
    chunk: usize,
) -> Box<dyn Iterator<Item = Result<Vec<Event>>> + 'a> {
    match line_decoder(format) {
        None => Box::new(std::iter::once(decode_document(format, bytes, cx))),
        Some(decode_line) => Box::new(line_chunks(
            decode_line,
            bytes.split(|b| *b == b'\n').map(Ok),
            cx,
            chunk,
        )),
    }
}

/// [`decode_chunks`] over a file read as the iterator advances: a JSON-lines
/// file (`.gz` too) is never held whole, so importing a large one takes memory
/// for a chunk, not for the file. Documents are read whole.
pub fn decode_file_chunks<'a>(
    format: ImportFormat,
    path: &'a Path,
    cx: &'a DecodeContext<'a>,
    chunk: usize,
) -> Result<Box<dyn Iterator<Item = Result<Vec<Event>>> + 'a>> {
    let Some(decode_line) = line_decoder(format) else {
        let bytes = read_file(path)?;
        return Ok(Box::new(std::iter::once(decode_document(
            format, &bytes, cx,
        ))));
    };
    let lines = file_lines(path)?;
    Ok(Box::new(line_chunks(decode_line, lines, cx, chunk)))
}

/// A JSON-lines file's lines, read (and decompressed, `.gz`) as they are taken.
fn file_lines(path: &Path) -> Result<impl Iterator<Item = Result<Vec<u8>>> + Send + '_> {
    let file = std::fs::File::open(path).map_err(Error::io("open", path))?;
    let reader: Box<dyn BufRead + Send> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, file))
    };
    Ok(reader
        .split(b'\n')
        .map(move |l| l.map_err(Error::io("read", path))))
}

/// Lines a worker of [`check_file`] takes at a time.
const CHECK_LINES: usize = 1024;

/// Checks every record of a file without keeping its events, on `workers`
/// threads (parsing, not reading, is the cost of a check); returns how many
/// events the file holds, or the error of its first bad line by line number:
/// the error [`decode_file_chunks`] would stop at.
pub fn check_file(
    format: ImportFormat,
    path: &Path,
    cx: &DecodeContext<'_>,
    workers: usize,
) -> Result<usize> {
    let Some(check_line) = line_checker(format) else {
        let bytes = read_file(path)?;
        return decode_document(format, &bytes, cx).map(|events| events.len());
    };
    let lines = std::sync::Mutex::new(file_lines(path)?.enumerate());
    // The bad line with the lowest number found so far.
    let first_bad: std::sync::Mutex<Option<(usize, Error)>> = std::sync::Mutex::new(None);
    let events = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let worker = || {
        loop {
            // Lines are taken in order, so once a bad line is known every line
            // before it is already taken; later ones need no decoding.
            if failed.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let batch: Vec<(usize, Result<Vec<u8>>)> = {
                let mut lines = lines.lock().unwrap_or_else(|p| p.into_inner());
                lines.by_ref().take(CHECK_LINES).collect()
            };
            if batch.is_empty() {
                return;
            }
            let mut n = 0;
            for (i, line) in batch {
                let decoded = line.and_then(|line| {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        return Ok(0);
                    }
                    check_line(&line, cx).map_err(|e| e.at(&format!("line {}", i + 1)))
                });
                match decoded {
                    Ok(events) => n += events,
                    Err(e) => {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        let mut bad = first_bad.lock().unwrap_or_else(|p| p.into_inner());
                        if bad.as_ref().is_none_or(|(at, _)| i < *at) {
                            *bad = Some((i, e));
                        }
                        return;
                    }
                }
            }
            events.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..workers.max(1) {
            s.spawn(worker);
        }
        worker();
    });
    match first_bad.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some((_, e)) => Err(e),
        None => Ok(events.into_inner()),
    }
}

/// Decodes lines into chunks of at least `chunk` events, stopping at the first
/// bad line (named by its number) or read error.
fn line_chunks<'a, L: AsRef<[u8]>>(
    decode_line: LineDecode,
    lines: impl Iterator<Item = Result<L>> + 'a,
    cx: &'a DecodeContext<'a>,
    chunk: usize,
) -> impl Iterator<Item = Result<Vec<Event>>> + 'a {
    let mut lines = lines.enumerate();
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let mut out = Vec::new();
        for (i, line) in lines.by_ref() {
            let decoded = line.and_then(|line| {
                let line = line.as_ref();
                if line.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Vec::new());
                }
                decode_line(line, cx).map_err(|e| e.at(&format!("line {}", i + 1)))
            });
            match decoded {
                Ok(events) => out.extend(events),
                Err(e) => {
                    failed = true;
                    return Some(Err(e));
                }
            }
            if out.len() >= chunk {
                return Some(Ok(out));
            }
        }
        (!out.is_empty()).then_some(Ok(out))
    })
}

/// Request bodies for sending a file's content to a receiver in chunks of at most
/// `chunk` records (JSON lines are grouped as an `EventList` or a batch array).
pub fn bodies(format: ImportFormat, bytes: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>> {
    let text = || {
        std::str::from_utf8(bytes).map_err(|_| Error::Malformed {
            source_name: "import",
            reason: "file is not UTF-8".into(),
        })
    };
    let non_empty = |t: &str| -> Vec<String> {
        t.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    Ok(match format {
        ImportFormat::Cloudtrail | ImportFormat::Focus => vec![bytes.to_vec()],
        ImportFormat::K8sAudit => non_empty(text()?)
            .chunks(chunk.max(1))
            .map(|c| {
                format!(
                    r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{}]}}"#,
                    c.join(",")
                )
                .into_bytes()
            })
            .collect(),
        ImportFormat::Events => non_empty(text()?)
            .chunks(chunk.max(1))
            .map(|c| format!("[{}]", c.join(",")).into_bytes())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use causeway_rules::{IndexedCatalog, ProcessingTime};

    use super::*;

    #[test]
    fn gzipped_cloudtrail_and_jsonl_audit_files_decode_and_bad_lines_name_their_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let trail = r#"{"Records":[{"eventVersion":"1.08","eventID":"e1","eventTime":"2024-05-01T10:00:00Z","eventSource":"ec2.amazonaws.com","eventName":"StopInstances","requestParameters":{"instanceId":"i-1"},"recipientAccountId":"1"}]}"#;
        let path = dir.path().join("trail.json.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(trail.as_bytes()).expect("gz");
        std::fs::write(&path, gz.finish().expect("gz")).expect("write");
        let catalog = IndexedCatalog::default();
        let cx = DecodeContext {
            catalog: &catalog,
            cluster_hint: None,
            received_at: ProcessingTime::from_micros(0),
        };
        let events = decode(
            ImportFormat::Cloudtrail,
            &read_file(&path).expect("read"),
            &cx,
        )
        .expect("decodes");
        assert_eq!(events[0].entity, "i-1");

        let audit = "{\"kind\":\"Event\",\"auditID\":\"a\",\"stage\":\"ResponseComplete\",\"verb\":\"delete\",\"objectRef\":{\"resource\":\"configmaps\",\"namespace\":\"shop\",\"name\":\"cfg\"},\"requestReceivedTimestamp\":\"2024-05-01T10:00:00Z\"}\n\n{\"kind\": 0}\n";
        let err = decode(ImportFormat::K8sAudit, audit.as_bytes(), &cx).expect_err("line 3");
        assert!(err.to_string().contains("line 3"), "{err}");
        let good = audit.lines().next().expect("line");
        assert_eq!(
            decode(ImportFormat::K8sAudit, good.as_bytes(), &cx)
                .expect("ok")
                .len(),
            1
        );
        assert_eq!(
            bodies(ImportFormat::K8sAudit, audit.as_bytes(), 1)
                .expect("bodies")
                .len(),
            2
        );
    }

    #[test]
    fn chunks_hold_whole_lines_and_stop_at_the_first_bad_one() {
        let catalog = IndexedCatalog::default();
        let cx = DecodeContext {
            catalog: &catalog,
            cluster_hint: None,
            received_at: ProcessingTime::from_micros(0),
        };
        let line = |i: usize| {
            let e = causeway_rules::Event {
                id: causeway_rules::Event::derive_id("test", &i.to_string(), "firing"),
                source: "test".into(),
                source_event_id: i.to_string(),
                kind: causeway_rules::EventKind::Alert,
                time: causeway_rules::EventTime::from_micros(i64::try_from(i).expect("small")),
                ingested_at: ProcessingTime::from_micros(0),
                scope: "prod".into(),
                entity: "checkout".into(),
                severity: causeway_rules::Severity::Warning,
                status: "firing".into(),
                summary: format!("event {i}"),
                attributes: Default::default(),
                raw: "{}".into(),
            };
            e.to_cloudevent_json()
        };
        let file: String = (0..7).map(|i| line(i) + "\n").collect();
        let sizes: Vec<usize> = decode_chunks(ImportFormat::Events, file.as_bytes(), &cx, 3)
            .map(|c| c.expect("chunk").len())
            .collect();
        assert_eq!(sizes, [3, 3, 1]);
        let whole = decode(ImportFormat::Events, file.as_bytes(), &cx).expect("whole");
        let chunked: Vec<causeway_rules::Event> =
            decode_chunks(ImportFormat::Events, file.as_bytes(), &cx, 2)
                .flat_map(|c| c.expect("chunk"))
                .collect();
        assert_eq!(chunked, whole);

        // Read from a file as it goes, plain and gzipped: the same chunks.
        let dir = tempfile::tempdir().expect("tempdir");
        // `name` plain and `name.gz`.
        let write_both = |name: &str, text: &str| {
            let plain = dir.path().join(name);
            std::fs::write(&plain, text).expect("write");
            let gzipped = dir.path().join(format!("{name}.gz"));
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(text.as_bytes()).expect("gz");
            std::fs::write(&gzipped, gz.finish().expect("gz")).expect("write");
            (plain, gzipped)
        };
        let (plain, gzipped) = write_both("events.jsonl", &file);
        for path in [&plain, &gzipped] {
            let from_file: Vec<Vec<causeway_rules::Event>> =
                decode_file_chunks(ImportFormat::Events, path, &cx, 3)
                    .expect("open")
                    .map(|c| c.expect("chunk"))
                    .collect();
            assert_eq!(
                from_file.iter().map(Vec::len).collect::<Vec<_>>(),
                [3, 3, 1]
            );
            assert_eq!(from_file.concat(), whole);
        }

        let bad = format!("{}{}\nnot json\n{}\n", line(0), "", line(1));
        let bad_path = dir.path().join("bad.jsonl");
        std::fs::write(&bad_path, &bad).expect("write");
        let err = decode_file_chunks(ImportFormat::Events, &bad_path, &cx, 100)
            .expect("open")
            .find_map(Result::err)
            .expect("bad line");
        assert!(err.to_string().contains("line 2"), "{err}");
        let results: Vec<Result<Vec<causeway_rules::Event>>> =
            decode_chunks(ImportFormat::Events, bad.as_bytes(), &cx, 100).collect();
        assert_eq!(results.len(), 1, "nothing after the bad line");
        let err = results[0].as_ref().expect_err("bad line");
        assert!(err.to_string().contains("line 2"), "{err}");

        // The check on several threads: every event counted, and of several bad
        // lines (in different batches) the first one named, however many workers.
        let many: String = (0..5000).map(|i| line(i) + "\n").collect();
        let (many_path, many_gz) = write_both("many.jsonl", &many);
        for path in [&many_path, &many_gz] {
            for workers in [1, 2, 4] {
                let n = check_file(ImportFormat::Events, path, &cx, workers).expect("check");
                assert_eq!(n, 5000, "{workers} workers");
            }
        }
        let mut lines: Vec<String> = (0..5000).map(line).collect();
        lines[2499] = "not json".into();
        lines[4199] = "{}".into();
        let two_bad = dir.path().join("two-bad.jsonl");
        std::fs::write(&two_bad, lines.join("\n")).expect("write");
        for workers in [1, 2, 4] {
            let err = check_file(ImportFormat::Events, &two_bad, &cx, workers)
                .expect_err("two bad lines");
            assert!(
                err.to_string().contains("line 2500"),
                "{workers} workers: {err}"
            );
        }
    }
}
