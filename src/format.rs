//! Query results as JSON rows, CSV, Arrow IPC or a terminal table; and the SQL that
//! reproduces an incident's chain.

use anyhow::Context;
use arrow::array::RecordBatch;
use causeway_engine::sql::QueryResult;

/// JSON array of row objects.
pub(crate) fn json_rows(batches: &[RecordBatch]) -> anyhow::Result<Vec<u8>> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs).context("encoding JSON")?;
    writer.finish().context("encoding JSON")?;
    let mut out = writer.into_inner();
    if out.is_empty() {
        out.extend_from_slice(b"[]");
    }
    Ok(out)
}

/// CSV with a header row.
pub(crate) fn csv(batches: &[RecordBatch]) -> anyhow::Result<Vec<u8>> {
    let mut writer = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(Vec::new());
    for b in batches {
        writer.write(b).context("encoding CSV")?;
    }
    Ok(writer.into_inner())
}

/// An Arrow IPC stream.
pub(crate) fn arrow_ipc(result: &QueryResult) -> anyhow::Result<Vec<u8>> {
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &result.schema)
        .context("encoding Arrow IPC")?;
    for b in &result.batches {
        writer.write(b).context("encoding Arrow IPC")?;
    }
    writer.finish().context("encoding Arrow IPC")?;
    writer.into_inner().context("encoding Arrow IPC")
}

/// A terminal table.
pub(crate) fn table(batches: &[RecordBatch]) -> anyhow::Result<String> {
    Ok(arrow::util::pretty::pretty_format_batches(batches)
        .context("formatting table")?
        .to_string())
}

/// The SQL that lists an incident's chain: each linked event with its role, lag
/// and evidence. `id` must already be validated.
pub(crate) fn chain_query(id: &str) -> String {
    format!(
        "SELECT ie.role, ie.lag_seconds, ie.linked_by, ie.rule_version, ie.join_key, \
                e.event_id, e.source, e.kind, e.time, e.status, e.severity, e.summary \
         FROM incident_events ie JOIN events e ON e.event_id = ie.event_id \
         WHERE ie.incident_id = '{id}' ORDER BY e.time, ie.role, e.event_id"
    )
}
