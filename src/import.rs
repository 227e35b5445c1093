//! `causeway import`: files through the receivers' decoders.
//!
//! Locally, events go straight into the data dir's event log and the engine runs
//! until it has correlated them, then stops (the data dir must not be in use by a
//! running instance: the log is locked). With `--server`, the file is posted to the
//! running instance's receiver for that format instead. With `kafka.brokers`
//! configured, the events are produced to `causeway.events` (acknowledged, all
//! `acks`) and the engines of the consumer group correlate them; import itself
//! does not join the group.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use causeway_connectors::EventLog;
use causeway_connectors::client::HttpPoster;
use causeway_connectors::decode::DecodeContext;
use causeway_connectors::import::{self, ImportFormat};
use causeway_rules::{IndexedCatalog, ProcessingTime};

use crate::app;
use crate::config::Config;

/// Imports files; returns after they are durable (and, locally, correlated).
/// Events appended at once.
const CHUNK: usize = 10_000;

pub(crate) async fn run(
    format: ImportFormat,
    paths: &[PathBuf],
    config: Option<PathBuf>,
    server: Option<&str>,
    cluster: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(url) = server {
        return post(format, paths, url, cluster).await;
    }
    let loaded = Config::load(config.as_deref())?;
    let catalog = &IndexedCatalog::new(loaded.config.catalog.clone());
    // Every file is checked once before anything is appended (on every core:
    // nothing else runs yet; CloudEvents without building their events), so a bad
    // record refuses the whole import; then each is read and decoded a chunk at a
    // time as it is appended. Neither pass holds a JSON-lines file or all of its
    // events at once (a 1 M-event file read whole was 400 MB of the peak).
    let mut checked = Vec::new();
    for path in paths {
        let cx = DecodeContext {
            catalog,
            cluster_hint: cluster,
            received_at: ProcessingTime::now(),
        };
        let before = FileStamp::of(path)?;
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        import::check_file(format, path, &cx, workers)
            .with_context(|| format!("{} was not imported", path.display()))?;
        checked.push((path, before));
    }
    // The second pass reads the files again: one changed in between could append
    // part of what was not checked, so that refuses the import before anything goes.
    for (path, before) in &checked {
        if FileStamp::of(path)? != *before {
            bail!(
                "{} changed while it was being checked; nothing was imported",
                path.display()
            );
        }
    }
    if let Some(settings) = loaded.config.kafka.settings()? {
        causeway_connectors::kafka::ensure_topics(&settings).await?;
        let log = causeway_connectors::kafka::KafkaEventLog::new(&settings)?;
        let total = append_files(paths, format, catalog, cluster, &log).await?;
        println!(
            "produced {total} events to {}; the engines of group {} correlate them",
            settings.topics.events, settings.group_id
        );
        return Ok(());
    }
    let mut running = app::start(&loaded, std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    running.batch_input();
    let result = async {
        let log = running.event_log()?;
        let total = append_files(paths, format, catalog, cluster, log.as_ref()).await?;
        running.end_input();
        if !running.wait_quiescent(Duration::from_secs(600)).await {
            bail!("correlation did not finish within 10 minutes; it resumes at the next start");
        }
        Ok(total)
    }
    .await;
    let shutdown = running.shutdown().await;
    let total = result?;
    shutdown?;
    println!(
        "imported {total} events into {}; query them with causeway sql",
        loaded.config.data_dir.display()
    );
    Ok(())
}

/// What tells a file changed between the check and the append passes.
#[derive(Debug, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    fn of(path: &std::path::Path) -> anyhow::Result<FileStamp> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// Decodes each checked file again, a chunk at a time as it is read, and appends
/// it to `log`. Returns the events appended.
async fn append_files(
    files: &[PathBuf],
    format: ImportFormat,
    catalog: &IndexedCatalog,
    cluster: Option<&str>,
    log: &dyn EventLog,
) -> anyhow::Result<usize> {
    let mut total = 0;
    for path in files {
        let cx = DecodeContext {
            catalog,
            cluster_hint: cluster,
            received_at: ProcessingTime::now(),
        };
        let mut n = 0;
        for chunk in import::decode_file_chunks(format, path, &cx, CHUNK)? {
            let events = chunk?;
            n += events.len();
            log.append(events).await?;
        }
        println!("{}: {n} events", path.display());
        total += n;
    }
    Ok(total)
}

async fn post(
    format: ImportFormat,
    paths: &[PathBuf],
    url: &str,
    cluster: Option<&str>,
) -> anyhow::Result<()> {
    let client = HttpPoster::new(url)?;
    let (path, content_type) = format.receiver();
    let target = match cluster {
        Some(c) => format!("{path}?cluster={c}"),
        None => path.to_owned(),
    };
    for file in paths {
        let bytes = import::read_file(file)?;
        let mut accepted = 0u64;
        for body in import::bodies(format, &bytes, 1000)? {
            let resp = client.post_body(&target, content_type, body).await?;
            if resp.status != 200 {
                bail!(
                    "{}: refused with {}: {}",
                    file.display(),
                    resp.status,
                    resp.text()
                );
            }
            let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
            accepted += v["accepted"].as_u64().unwrap_or(0);
        }
        println!("{}: {accepted} events accepted by {url}", file.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_grows_between_the_passes_is_noticed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "{}\n").expect("write");
        let checked = FileStamp::of(&path).expect("stamp");
        assert_eq!(FileStamp::of(&path).expect("stamp"), checked);
        std::fs::write(&path, "{}\n{}\n").expect("rewrite");
        assert_ne!(FileStamp::of(&path).expect("stamp"), checked);
        assert!(FileStamp::of(&dir.path().join("missing")).is_err());
    }
}
