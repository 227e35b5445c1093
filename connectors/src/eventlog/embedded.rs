//! The embedded event log: an append-only segmented file log in the data dir.
//!
//! Records are `[len: u32 LE][crc32: u32 LE][payload]` in segment files named by
//! the offset of their first record (`00000000000000000000.log`). One writer thread
//! takes every append request waiting at that moment, writes them in one go and
//! calls `fsync` once (group commit), then answers all of them: an acknowledged
//! append has reached the disk and survives `kill -9`. On open, a torn tail left by
//! a crash mid-write is detected by length or checksum and truncated; it was never
//! acknowledged. Readers see only records up to the last fsync.
//!
//! A payload is one format byte and the event in postcard ([`encode_record`]).
//! Logs written before that hold CloudEvents JSON (first byte `{`) and are still
//! read: encoding and decoding JSON, with each event's raw payload escaped inside
//! it, was a seventh of an import's time.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use causeway_rules::{Event, ProcessingTime};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};

use super::{EventLog, LogConsumer, LogRecord};
use crate::{Error, Result, metrics};

/// The payload format byte of a postcard-encoded [`Event`]. Postcard follows the
/// struct's field order, so a change to `Event` needs a new byte (the golden
/// test in `tests.rs` fails until it gets one) and a decoder for the old one.
const FORMAT_POSTCARD_V1: u8 = 1;

/// A log record's payload for `event`.
pub(crate) fn encode_record(event: &Event) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256 + event.raw.len());
    out.push(FORMAT_POSTCARD_V1);
    postcard::to_extend(event, out).map_err(|e| Error::Malformed {
        source_name: "event",
        reason: format!("cannot encode for the event log: {e}"),
    })
}

/// The event in a record's payload: postcard, or CloudEvents JSON from an older
/// log (whose records may lack `ingested_at`, then `now`).
pub(crate) fn decode_record(payload: &[u8], now: ProcessingTime) -> Result<Event, String> {
    match payload.first() {
        Some(&FORMAT_POSTCARD_V1) => postcard::from_bytes(&payload[1..]).map_err(|e| e.to_string()),
        Some(b'{') => Event::from_cloudevent_json(&String::from_utf8_lossy(payload), now)
            .map_err(|e| e.to_string()),
        Some(other) => Err(format!("unknown record format {other}")),
        None => Err("empty record".into()),
    }
}

const HEADER: usize = 8;
/// Segments roll past this size.
const SEGMENT_BYTES: u64 = 128 << 20;
/// A record larger than this is corrupt by definition.
const MAX_RECORD: u32 = 64 << 20;

struct AppendRequest {
    payloads: Vec<Vec<u8>>,
    ack: oneshot::Sender<Result<()>>,
}

/// The write handle: cheap to clone, shared by receivers.
#[derive(Clone)]
pub struct EmbeddedLog {
    tx: mpsc::Sender<AppendRequest>,
    committed: watch::Receiver<u64>,
    healthy: Arc<AtomicBool>,
    dir: PathBuf,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("dir", &self.dir)
            .field("committed", &*self.committed.borrow())
            .finish()
    }
}

/// The writer, to be run on a blocking thread owned by the caller; it returns when
/// every [`EmbeddedLog`] handle is dropped and the last appends are durable.
#[derive(Debug)]
pub struct EmbeddedLogWriter {
    dir: PathBuf,
    /// Held (locked) for as long as the writer lives.
    _lock: File,
    file: File,
    base: u64,
    segment_len: u64,
    next: u64,
    rx: mpsc::Receiver<AppendRequest>,
    committed: watch::Sender<u64>,
    healthy: Arc<AtomicBool>,
}

impl std::fmt::Debug for AppendRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendRequest")
            .field("records", &self.payloads.len())
            .finish()
    }
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.log")
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let entry = entry.map_err(Error::io("list", dir))?;
        let name = entry.file_name();
        if let Some(base) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Reads one record; `Ok(None)` at a clean end or a torn/corrupt tail.
fn read_record(reader: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; HEADER];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD {
        return Ok(None);
    }
    let mut payload = vec![0u8; len as usize];
    match reader.read_exact(&mut payload) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if crc32fast::hash(&payload) != crc {
        return Ok(None);
    }
    Ok(Some(payload))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync", dir))
}

impl EmbeddedLog {
    /// Opens (or creates) the log under `dir`, recovering from a torn tail.
    pub fn open(dir: &Path) -> Result<(EmbeddedLog, EmbeddedLogWriter)> {
        fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        // One writer per log: a second process appending would interleave records.
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io("open", &lock_path))?;
        lock.try_lock().map_err(|_| Error::LogUnavailable {
            reason: format!(
                "{} is in use by another causeway process (stop it, or send to it with --server)",
                dir.display()
            ),
        })?;
        let mut bases = list_segments(dir)?;
        if bases.is_empty() {
            File::create(dir.join(segment_name(0))).map_err(Error::io("create", dir))?;
            sync_dir(dir)?;
            bases.push(0);
        }
        let last = *bases.last().unwrap_or(&0);
        let path = dir.join(segment_name(last));
        let mut count = 0u64;
        let mut valid_len = 0u64;
        {
            let f = File::open(&path).map_err(Error::io("open", &path))?;
            let mut reader = BufReader::new(f);
            while let Some(payload) = read_record(&mut reader).map_err(Error::io("read", &path))? {
                count += 1;
                valid_len += (HEADER + payload.len()) as u64;
            }
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(Error::io("open", &path))?;
        let actual = file.metadata().map_err(Error::io("stat", &path))?.len();
        if actual != valid_len {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = actual - valid_len,
                "truncating unacknowledged torn tail of the event log"
            );
            file.set_len(valid_len)
                .map_err(Error::io("truncate", &path))?;
            file.sync_all().map_err(Error::io("sync", &path))?;
        }
        let next = last + count;
        let (tx, rx) = mpsc::channel(4096);
        let (committed_tx, committed) = watch::channel(next);
        let healthy = Arc::new(AtomicBool::new(true));
        Ok((
            EmbeddedLog {
                tx,
                committed,
                healthy: healthy.clone(),
                dir: dir.to_owned(),
            },
            EmbeddedLogWriter {
                dir: dir.to_owned(),
                _lock: lock,
                file,
                base: last,
                segment_len: valid_len,
                next,
                rx,
                committed: committed_tx,
                healthy,
            },
        ))
    }

    /// A consumer reading this log from offset 0 (call `seek` to move).
    pub fn consumer(&self) -> EmbeddedConsumer {
        EmbeddedConsumer {
            dir: self.dir.clone(),
            committed: self.committed.clone(),
            cursor: Some(Cursor {
                dir: self.dir.clone(),
                next: 0,
                reader: None,
            }),
            ahead: None,
            leftover: Vec::new(),
        }
    }
}

impl EventLog for EmbeddedLog {
    fn append(&self, events: Vec<Event>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(());
            }
            let payloads = events
                .iter()
                .map(encode_record)
                .collect::<Result<Vec<_>>>()?;
            let (ack, rx) = oneshot::channel();
            self.tx
                .send(AppendRequest { payloads, ack })
                .await
                .map_err(|_| Error::LogUnavailable {
                    reason: "the log writer has stopped".into(),
                })?;
            rx.await.map_err(|_| Error::LogUnavailable {
                reason: "the log writer stopped before answering".into(),
            })?
        })
    }

    fn is_available(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.tx.is_closed()
    }

    fn end_offsets(&self) -> BTreeMap<u32, u64> {
        [(0, *self.committed.borrow())].into()
    }
}

impl EmbeddedLogWriter {
    /// Runs the group-commit loop until every handle is dropped.
    pub fn run(mut self) {
        while let Some(first) = self.rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < 1024 {
                match self.rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let result = self.write_batch(&batch);
            if let Err(error) = &result {
                tracing::error!(%error, "event log write failed; appends answer 503 until it recovers");
            }
            for req in batch {
                let answer = match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(Error::LogUnavailable {
                        reason: e.to_string(),
                    }),
                };
                let _ = req.ack.send(answer);
            }
        }
    }

    fn write_batch(&mut self, batch: &[AppendRequest]) -> Result<()> {
        let started = Instant::now();
        if self.segment_len >= SEGMENT_BYTES {
            self.roll()?;
        }
        let mut buf = Vec::new();
        let mut n = 0u64;
        for req in batch {
            for p in &req.payloads {
                let len = u32::try_from(p.len())
                    .ok()
                    .filter(|l| *l <= MAX_RECORD)
                    .ok_or_else(|| Error::LogUnavailable {
                        reason: format!("record of {} bytes is too large", p.len()),
                    })?;
                buf.extend_from_slice(&len.to_le_bytes());
                buf.extend_from_slice(&crc32fast::hash(p).to_le_bytes());
                buf.extend_from_slice(p);
                n += 1;
            }
        }
        let path = self.dir.join(segment_name(self.segment_base()));
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            self.healthy.store(false, Ordering::Relaxed);
            // Cut back anything partly written so the next append starts clean.
            let _ = self.file.set_len(self.segment_len);
            return Err(Error::io("append to", path)(e));
        }
        self.healthy.store(true, Ordering::Relaxed);
        self.segment_len += buf.len() as u64;
        self.next += n;
        self.committed.send_replace(self.next);
        metrics::LOG_APPENDED
            .with_label_values(&["embedded"])
            .inc_by(n);
        metrics::LOG_SYNC_SECONDS.observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn segment_base(&self) -> u64 {
        self.base
    }

    fn roll(&mut self) -> Result<()> {
        let path = self.dir.join(segment_name(self.next));
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(Error::io("create", &path))?;
        sync_dir(&self.dir)?;
        self.base = self.next;
        self.segment_len = 0;
        Ok(())
    }
}

/// Reads the embedded log in offset order.
///
/// While the records it returned are being correlated, the next ones already in
/// the log are read and decoded on a blocking thread (one batch ahead): decoding
/// was a seventh of the engine thread in a file import, whose log is always
/// ahead of the engine.
#[derive(Debug)]
pub struct EmbeddedConsumer {
    dir: PathBuf,
    committed: watch::Receiver<u64>,
    /// Where the next read starts; `None` while a read-ahead holds it.
    cursor: Option<Cursor>,
    /// The read-ahead in flight (and the offset it started at): it hands the
    /// cursor back with its records.
    ahead: Option<(u64, ReadAhead)>,
    /// Records read ahead beyond what a smaller poll asked for.
    leftover: Vec<LogRecord>,
}

/// A read on a blocking thread, handing its cursor back with what it read.
type ReadAhead = tokio::task::JoinHandle<(Cursor, Result<Vec<LogRecord>>)>;

/// A position in the log, with the segment reader open there.
#[derive(Debug)]
struct Cursor {
    dir: PathBuf,
    next: u64,
    /// Open segment reader positioned at `next`.
    reader: Option<BufReader<File>>,
}

impl Cursor {
    fn open_at(&mut self, offset: u64) -> Result<()> {
        let bases = list_segments(&self.dir)?;
        let base = bases
            .iter()
            .copied()
            .filter(|b| *b <= offset)
            .max()
            .ok_or_else(|| Error::CorruptRecord {
                offset,
                reason: "no segment holds this offset".into(),
            })?;
        let path = self.dir.join(segment_name(base));
        let file = File::open(&path).map_err(Error::io("open", &path))?;
        let mut reader = BufReader::new(file);
        for skipped in base..offset {
            if read_record(&mut reader)
                .map_err(Error::io("read", &path))?
                .is_none()
            {
                return Err(Error::CorruptRecord {
                    offset: skipped,
                    reason: "segment ends before the requested offset".into(),
                });
            }
        }
        self.reader = Some(reader);
        Ok(())
    }

    /// Up to `max` records below `end` (the last durable offset).
    fn read(&mut self, end: u64, max: usize) -> Result<Vec<LogRecord>> {
        let mut out = Vec::new();
        let now = ProcessingTime::now();
        while self.next < end && out.len() < max {
            if self.reader.is_none() {
                self.open_at(self.next)?;
            }
            let Some(reader) = self.reader.as_mut() else {
                break;
            };
            match read_record(reader).map_err(Error::io("read", &self.dir))? {
                Some(payload) => {
                    let offset = self.next;
                    self.next += 1;
                    match decode_record(&payload, now) {
                        Ok(event) => out.push(LogRecord {
                            partition: 0,
                            offset,
                            event,
                        }),
                        // A record we wrote ourselves should always parse; skip it
                        // loudly rather than stall the engine forever.
                        Err(error) => {
                            tracing::error!(offset, %error, "skipping undecodable event log record")
                        }
                    }
                }
                None => {
                    // End of this segment: the next record starts a new one.
                    self.reader = None;
                    let path = self.dir.join(segment_name(self.next));
                    if !path.exists() {
                        // Not yet visible on disk; try again on the next poll.
                        break;
                    }
                }
            }
        }
        Ok(out)
    }
}

impl EmbeddedConsumer {
    /// Starts reading the next `max` records on a blocking thread if the log
    /// already holds some (a live log that has none is waited on instead).
    fn read_ahead(&mut self, max: usize) {
        let end = *self.committed.borrow();
        let Some(mut cursor) = self.cursor.take_if(|c| c.next < end) else {
            return;
        };
        let from = cursor.next;
        let handle = tokio::task::spawn_blocking(move || {
            let records = cursor.read(end, max);
            (cursor, records)
        });
        self.ahead = Some((from, handle));
    }

    /// Takes back the cursor from a read-ahead, with what it read. Cancel-safe:
    /// the read-ahead stays in `self` until it has finished.
    async fn join_ahead(&mut self) -> Result<Vec<LogRecord>> {
        let Some((from, handle)) = self.ahead.as_mut() else {
            return Ok(Vec::new());
        };
        let from = *from;
        let joined = handle.await;
        self.ahead = None;
        match joined {
            Ok((cursor, records)) => {
                self.cursor = Some(cursor);
                records
            }
            Err(e) => {
                // The thread is gone with the cursor: read again from where it
                // started.
                self.cursor = Some(Cursor {
                    dir: self.dir.clone(),
                    next: from,
                    reader: None,
                });
                Err(Error::LogUnavailable {
                    reason: format!("reading the log ahead failed: {e}"),
                })
            }
        }
    }
}

impl LogConsumer for EmbeddedConsumer {
    fn seek(&mut self, next_offsets: &BTreeMap<u32, u64>) -> Result<()> {
        // A read-ahead in flight is left to finish on its own; what it read is
        // dropped with it.
        self.ahead = None;
        self.leftover.clear();
        self.cursor = Some(Cursor {
            dir: self.dir.clone(),
            next: next_offsets.get(&0).copied().unwrap_or(0),
            reader: None,
        });
        Ok(())
    }

    fn poll(&mut self, max: usize, wait: Duration) -> BoxFuture<'_, Result<Vec<LogRecord>>> {
        Box::pin(async move {
            let read_ahead = self.join_ahead().await?;
            let mut records = std::mem::take(&mut self.leftover);
            records.extend(read_ahead);
            let next = self.cursor.as_ref().map_or(0, |c| c.next);
            if records.is_empty() && *self.committed.borrow_and_update() <= next {
                let _ = tokio::time::timeout(wait, self.committed.changed()).await;
            }
            if records.len() > max {
                self.leftover = records.split_off(max);
                return Ok(records);
            }
            let Some(cursor) = self.cursor.as_mut() else {
                return Err(Error::LogUnavailable {
                    reason: "the log consumer lost its position".into(),
                });
            };
            // Topped up with what is in the log now: a read that is not cut at
            // `max` has reached the end of the log as of this poll (the import
            // tells the end of its input that way).
            let end = *self.committed.borrow();
            records.extend(cursor.read(end, max - records.len())?);
            self.read_ahead(max);
            Ok(records)
        })
    }
}

#[cfg(test)]
mod tests;
