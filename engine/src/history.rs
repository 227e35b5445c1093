//! The Parquet history: `events`, `incidents`, `incident_events` (and, as later
//! stages write them, `late_events` and `actions`) under `<data_dir>/history` or
//! in an object store ([`crate::store`]).
//!
//! Rows produced by the engine are held as pending Arrow batches and committed in
//! one step: each table's rows are written to `<table>/dt=YYYY-MM-DD/
//! part-<seq>.parquet` (whole or not at all: a renamed temporary in a directory, a
//! single PUT in an object store), and then the engine checkpoint records `seq` as
//! committed. A file whose `seq` is above the
//! checkpoint's belongs to a commit that never finished; it is removed at open and
//! never read, so no half-written commit is ever visible. Readers see committed
//! files plus pending rows, taken together under one lock.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use arrow::array::{Array, BooleanArray, RecordBatch, TimestampMicrosecondArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use chrono::DateTime;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::metrics;
use crate::schema;
use crate::store::HistoryLocation;
use crate::{Error, Result};

/// A history table: its name, schema, the time column it is partitioned by, and
/// the id columns looked up one value at a time (they get Parquet bloom filters:
/// ids are hashes, so row-group min/max never prune them).
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub schema: &'static std::sync::LazyLock<SchemaRef>,
    pub time_column: &'static str,
    pub lookup_columns: &'static [&'static str],
    /// Long text columns whose values repeat row after row (an incident's
    /// enrichment is the same JSON over most of its versions): they keep their
    /// Parquet dictionary however large it grows, instead of falling back to
    /// plain pages that zstd must then squeeze back (25 MB per 43 k incident
    /// versions).
    pub repeated_text_columns: &'static [&'static str],
}

/// Every history table.
pub const TABLES: [Table; 5] = [
    Table {
        name: "events",
        schema: &schema::EVENTS,
        time_column: "time",
        lookup_columns: &["event_id"],
        repeated_text_columns: &[],
    },
    Table {
        name: "incidents",
        schema: &schema::INCIDENTS,
        time_column: "updated_at",
        lookup_columns: &["incident_id", "root_cause_event_id"],
        repeated_text_columns: &["enrichment"],
    },
    Table {
        name: "incident_events",
        schema: &schema::INCIDENT_EVENTS,
        time_column: "time",
        lookup_columns: &["incident_id", "event_id"],
        repeated_text_columns: &[],
    },
    Table {
        name: "late_events",
        schema: &schema::EVENTS,
        time_column: "time",
        lookup_columns: &["event_id"],
        repeated_text_columns: &[],
    },
    Table {
        name: "actions",
        schema: &schema::ACTIONS,
        time_column: "decided_at",
        lookup_columns: &["action_id", "incident_id"],
        repeated_text_columns: &[],
    },
];

/// What a reader sees of one table at one instant: committed files (keys under
/// the history's location) and rows not yet flushed.
#[derive(Debug, Clone, Default)]
pub struct TableSnapshot {
    pub files: Vec<String>,
    pub pending: Vec<RecordBatch>,
}

#[derive(Debug, Default)]
struct Inner {
    files: BTreeMap<&'static str, Vec<String>>,
    pending: BTreeMap<&'static str, Vec<RecordBatch>>,
    /// Arrow bytes of `pending`, kept as rows are added (asked on every engine step).
    pending_bytes: usize,
}

/// A file written for a commit, not yet visible to readers: (table, key, rows).
pub type WrittenFile = (&'static str, String, usize);

/// The pending rows one commit takes: every batch pending when it was sealed.
/// Rows appended after the seal stay pending for the next commit, so a commit
/// can be written while the engine goes on appending.
#[derive(Debug, Default)]
pub struct Sealed {
    batches: BTreeMap<&'static str, Vec<RecordBatch>>,
    bytes: usize,
}

impl Sealed {
    /// Whether the seal holds no rows.
    pub fn is_empty(&self) -> bool {
        self.batches.values().all(|b| b.is_empty())
    }

    /// Arrow bytes of the sealed rows.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A commit's files, written but not yet visible to readers, and the pending
/// rows they hold.
#[derive(Debug, Default)]
pub struct Written {
    pub files: Vec<WrittenFile>,
    sealed: BTreeMap<&'static str, usize>,
    bytes: usize,
}

/// The history of one engine: committed Parquet files and pending rows.
#[derive(Debug, Clone)]
pub struct History {
    location: HistoryLocation,
    inner: Arc<RwLock<Inner>>,
}

impl History {
    /// Opens the history under `dir`, removing files of commits above `committed_seq`.
    pub fn open(dir: &Path, committed_seq: u64) -> Result<History> {
        History::open_at(HistoryLocation::Dir(dir.to_owned()), committed_seq)
    }

    /// Opens the history at `location`, removing files of commits above
    /// `committed_seq`.
    pub fn open_at(location: HistoryLocation, committed_seq: u64) -> Result<History> {
        let files = scan(&location, Some(committed_seq), true)?;
        Ok(History {
            location,
            inner: Arc::new(RwLock::new(Inner {
                files,
                pending: BTreeMap::new(),
                pending_bytes: 0,
            })),
        })
    }

    /// Where the files are.
    pub fn location(&self) -> &HistoryLocation {
        &self.location
    }

    /// Adds rows to a table's pending set.
    pub fn append(&self, table: &'static str, batch: RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.pending_bytes += batch.get_array_memory_size();
        inner.pending.entry(table).or_default().push(batch);
    }

    /// Whether any rows wait to be committed.
    pub fn has_pending(&self) -> bool {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.pending.values().any(|v| !v.is_empty())
    }

    /// Memory held by the pending rows (Arrow buffers).
    pub fn pending_bytes(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .pending_bytes
    }

    /// Takes every pending row for one commit; they stay pending (and visible
    /// to readers) until [`History::publish`] swaps them for their files.
    pub fn seal(&self) -> Sealed {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        Sealed {
            batches: inner.pending.clone(),
            bytes: inner.pending_bytes,
        }
    }

    /// Writes every pending row as Parquet files of commit `seq`: [`History::seal`]
    /// then [`History::write_sealed`].
    pub fn write_pending(&self, seq: u64) -> Result<Written> {
        self.write_sealed(seq, self.seal())
    }

    /// Writes sealed rows as Parquet files of commit `seq`, one per table and
    /// day. The caller makes the commit durable (checkpoint) and then calls
    /// [`History::publish`]. Touches nothing readers see, so it may run on
    /// another thread while rows go on being appended.
    pub fn write_sealed(&self, seq: u64, sealed: Sealed) -> Result<Written> {
        let mut written = Written {
            bytes: sealed.bytes,
            ..Written::default()
        };
        for table in TABLES {
            let Some(batches) = sealed.batches.get(table.name).filter(|b| !b.is_empty()) else {
                continue;
            };
            written.sealed.insert(table.name, batches.len());
            let mut by_day: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
            for batch in batches {
                for (day, rows) in split_by_day(batch, table.time_column)? {
                    by_day.entry(day).or_default().push(rows);
                }
            }
            for (day, rows) in by_day {
                let key = format!("{}/dt={day}/part-{seq:020}.parquet", table.name);
                let n = rows.iter().map(RecordBatch::num_rows).sum();
                self.location.put(&key, parquet_bytes(&table, &rows)?)?;
                written.files.push((table.name, key, n));
            }
        }
        Ok(written)
    }

    /// Makes files written by [`History::write_sealed`] visible to readers and
    /// drops the pending rows they hold, in one step; rows appended after the
    /// seal stay pending.
    pub fn publish(&self, written: Written) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        for (table, key, rows) in written.files {
            metrics::HISTORY_ROWS
                .with_label_values(&[table])
                .inc_by(rows as u64);
            inner.files.entry(table).or_default().push(key);
        }
        for (table, n) in written.sealed {
            if let Some(pending) = inner.pending.get_mut(table) {
                pending.drain(..n.min(pending.len()));
            }
        }
        inner.pending.retain(|_, batches| !batches.is_empty());
        inner.pending_bytes = inner.pending_bytes.saturating_sub(written.bytes);
    }

    /// Retention: removes every committed file of a day before `cutoff` (event time,
    /// by the table's partition day), from the readers' view first and then from
    /// storage. Returns how many files went. A crash midway leaves old files that
    /// the next call removes; nothing newer is touched.
    pub fn drop_days_before(&self, cutoff_micros: i64) -> Result<usize> {
        let cutoff = format!("dt={}", day_name(cutoff_micros));
        let old = |key: &String| day_of(key).is_some_and(|day| day < cutoff.as_str());
        let dropped: Vec<String> = {
            let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
            let mut dropped = Vec::new();
            for files in inner.files.values_mut() {
                let (gone, kept): (Vec<String>, Vec<String>) = files.drain(..).partition(old);
                *files = kept;
                dropped.extend(gone);
            }
            dropped
        };
        self.location.delete(&dropped)?;
        if !dropped.is_empty() {
            metrics::HISTORY_FILES_DROPPED.inc_by(dropped.len() as u64);
        }
        Ok(dropped.len())
    }

    /// Compaction: every day of a table with at least `min_files` committed files
    /// becomes one file `part-{first}-{last}.parquet` holding the same rows. The new
    /// file is stored whole before readers switch to it and the inputs are
    /// deleted; a crash in between leaves inputs the compacted file supersedes,
    /// which the next open removes. Returns how many files were merged away.
    pub fn compact(&self, min_files: usize) -> Result<usize> {
        let groups: Vec<(&'static str, String, Vec<String>)> = {
            let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
            let mut groups = Vec::new();
            for (table, files) in &inner.files {
                let mut by_day: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for f in files {
                    if let Some(day) = day_of(f) {
                        by_day.entry(day.to_owned()).or_default().push(f.clone());
                    }
                }
                for (day, inputs) in by_day {
                    if inputs.len() >= min_files.max(2) {
                        groups.push((*table, day, inputs));
                    }
                }
            }
            groups
        };
        let mut merged = 0;
        for (table, day, inputs) in groups {
            let Some(spec) = TABLES.iter().find(|t| t.name == table) else {
                continue;
            };
            let ranges: Vec<(u64, u64)> = inputs
                .iter()
                .filter_map(|k| file_seqs(file_name(k)))
                .collect();
            if ranges.len() != inputs.len() {
                continue;
            }
            let first = ranges.iter().map(|r| r.0).min().unwrap_or(0);
            let last = ranges.iter().map(|r| r.1).max().unwrap_or(0);
            let mut batches = Vec::new();
            for key in &inputs {
                let bytes = self.location.get(key)?;
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?
                        .build()?;
                for batch in reader {
                    batches.push(batch?);
                }
            }
            // Files of another schema (an older release) are left as they are.
            if batches.iter().any(|b| b.schema() != **spec.schema) {
                continue;
            }
            let out = format!("{table}/{day}/part-{first:020}-{last:020}.parquet");
            self.location.put(&out, parquet_bytes(spec, &batches)?)?;
            {
                let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
                if let Some(files) = inner.files.get_mut(table) {
                    files.retain(|f| !inputs.contains(f));
                    files.push(out.clone());
                    files.sort();
                }
            }
            self.location.delete(&inputs)?;
            merged += inputs.len();
        }
        if merged > 0 {
            metrics::HISTORY_FILES_COMPACTED.inc_by(merged as u64);
        }
        Ok(merged)
    }

    /// A consistent view of one table.
    pub fn snapshot(&self, table: &str) -> TableSnapshot {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        TableSnapshot {
            files: inner.files.get(table).cloned().unwrap_or_default(),
            pending: inner.pending.get(table).cloned().unwrap_or_default(),
        }
    }
}

/// The partition directory of a file key (`dt=YYYY-MM-DD`).
fn day_of(key: &str) -> Option<&str> {
    let mut parts = key.split('/');
    let (_table, day, _name) = (parts.next()?, parts.next()?, parts.next()?);
    day.starts_with("dt=").then_some(day)
}

/// The file name of a key.
fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Lists committed files per table; with `cleanup`, removes temporaries and files
/// above `committed_seq`, otherwise just skips them.
pub(crate) fn scan(
    location: &HistoryLocation,
    committed_seq: Option<u64>,
    cleanup: bool,
) -> Result<BTreeMap<&'static str, Vec<String>>> {
    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    // (table, day) → the day's files with the commits each holds.
    type Day = (&'static str, String);
    type Files = Vec<(String, (u64, u64))>;
    let mut by_day: BTreeMap<Day, Files> = BTreeMap::new();
    let mut garbage = Vec::new();
    for key in location.list(&names)? {
        let Some(table) = TABLES
            .iter()
            .find(|t| key.starts_with(&format!("{}/", t.name)))
        else {
            continue;
        };
        let Some(day) = day_of(&key).map(str::to_owned) else {
            continue;
        };
        let seqs = file_seqs(file_name(&key));
        let keep = match (seqs, committed_seq) {
            (Some((_, last)), Some(c)) => last <= c,
            (Some(_), None) => true,
            (None, _) => false,
        };
        match seqs {
            Some(range) if keep => by_day
                .entry((table.name, day))
                .or_default()
                .push((key, range)),
            _ => garbage.push(key),
        }
    }
    let mut out: BTreeMap<&'static str, Vec<String>> =
        TABLES.iter().map(|t| (t.name, Vec::new())).collect();
    for ((table, _day), day_files) in by_day {
        // A compaction that finished storing its output but not its deletes leaves
        // its inputs behind: the compacted file covers their commits, so they go.
        let ranges: Vec<(u64, u64)> = day_files.iter().map(|(_, r)| *r).collect();
        for (key, (a, b)) in day_files {
            let superseded = ranges
                .iter()
                .any(|(x, y)| (*x, *y) != (a, b) && *x <= a && b <= *y);
            if superseded {
                garbage.push(key);
            } else {
                out.entry(table).or_default().push(key);
            }
        }
    }
    if cleanup {
        location.delete(&garbage)?;
    }
    for files in out.values_mut() {
        files.sort();
    }
    Ok(out)
}

/// The commits a file holds: `part-{seq}.parquet` one, `part-{first}-{last}.parquet`
/// (a compaction of that range) all from `first` to `last`.
fn file_seqs(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    match stem.split_once('-') {
        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
        None => {
            let seq = stem.parse().ok()?;
            Some((seq, seq))
        }
    }
}

fn split_by_day(batch: &RecordBatch, column: &str) -> Result<Vec<(String, RecordBatch)>> {
    let times = batch
        .column_by_name(column)
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .ok_or_else(|| Error::Internal(format!("no timestamp column {column}")))?;
    const DAY: i64 = 86_400_000_000;
    let days: Vec<i64> = (0..times.len())
        .map(|i| times.value(i).div_euclid(DAY))
        .collect();
    let mut distinct = days.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() == 1 {
        return Ok(vec![(day_name(distinct[0] * DAY), batch.clone())]);
    }
    let mut out = Vec::with_capacity(distinct.len());
    for d in distinct {
        let mask = BooleanArray::from(days.iter().map(|x| *x == d).collect::<Vec<_>>());
        out.push((day_name(d * DAY), filter_record_batch(batch, &mask)?));
    }
    Ok(out)
}

fn day_name(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}

/// Rows per Parquet row group: the unit a point lookup can skip (by bloom filter)
/// or must decode.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// False-positive rate of the id bloom filters (~1.2 bytes per distinct id).
const BLOOM_FPP: f64 = 0.01;

/// Dictionary page limit of [`Table::repeated_text_columns`] (per row group):
/// ~50 k distinct enrichments of ~600 bytes.
const REPEATED_TEXT_DICTIONARY_BYTES: usize = 32 << 20;

/// One zstd-compressed Parquet file of `table` holding `batches` in order
/// (written one after another: they are never concatenated first).
fn parquet_bytes(table: &Table, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    // Sized for the rows at hand: a one-second commit of a few rows must not carry
    // a filter sized for a million.
    let ndv = u64::try_from(rows.clamp(1, ROW_GROUP_ROWS)).unwrap_or(1);
    for column in table.lookup_columns {
        let path = ColumnPath::from(*column);
        props = props
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_fpp(path.clone(), BLOOM_FPP)
            .set_column_bloom_filter_max_ndv(path, ndv);
    }
    for column in table.repeated_text_columns {
        props = props.set_column_dictionary_page_size_limit(
            ColumnPath::from(*column),
            REPEATED_TEXT_DICTIONARY_BYTES,
        );
    }
    let props = props.build();
    let mut writer = ArrowWriter::try_new(Vec::new(), SchemaRef::clone(table.schema), Some(props))?;
    for batch in batches {
        writer.write(batch)?;
    }
    Ok(writer.into_inner()?)
}
