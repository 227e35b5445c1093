//! Where the history's Parquet files live: a local directory (the default,
//! `<data_dir>/history`) or an S3-compatible object store (`s3://bucket/prefix`).
//!
//! The commit protocol of [`crate::history`] needs only four things of a location:
//! put a file whole (never half-visible), list, read back and delete. A directory
//! gets them from a temporary name, `fsync` and `rename`; an object store from a
//! single PUT, which S3 makes visible whole or not at all. Files are named by a
//! key relative to the history root, `<table>/dt=YYYY-MM-DD/part-….parquet`, the
//! same in both.
//!
//! The engine never builds an HTTP client: the binary hands it the store (built by
//! `causeway-connectors`) and the engine only speaks the `ObjectStore` trait, which
//! is also what DataFusion reads the files through.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::{Error, Result};

/// Where an object-store history is and how to reach it: its URL and the
/// client options the store builder takes (`endpoint`, `region`, `allow_http`,
/// …). Credentials are not part of it: they come from the standard `AWS_*`
/// environment variables, so this can be saved in the data dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreSpec {
    /// `s3://bucket/prefix` (`s3a://` is taken as `s3://`).
    pub url: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Option names (without their optional `aws_` prefix) that carry secrets:
/// refused in [`ObjectStoreSpec`], which is written to the data dir in clear.
const SECRET_OPTIONS: [&str; 5] = [
    "access_key_id",
    "secret_access_key",
    "session_token",
    "token",
    "sse_customer_key_base64",
];

impl ObjectStoreSpec {
    /// Checks the URL and options; returns the bucket URL (`s3://bucket/`) and the
    /// prefix inside it.
    pub fn parse(&self) -> Result<(Url, ObjectPath)> {
        let bad = |reason: String| Error::Location {
            location: self.url.clone(),
            reason,
        };
        let url = Url::parse(&self.url).map_err(|e| bad(format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "s3" | "s3a") {
            return Err(bad(format!(
                "scheme {:?} is not supported; use s3://bucket/prefix for an S3-compatible \
                 store, or leave history.url unset for <data_dir>/history",
                url.scheme()
            )));
        }
        let bucket = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no bucket: expected s3://bucket/prefix".into()))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad(
                "a query or fragment is not allowed; give client settings as options".into(),
            ));
        }
        for key in self.options.keys() {
            let lower = key.to_ascii_lowercase();
            let bare = lower.strip_prefix("aws_").unwrap_or(&lower);
            if SECRET_OPTIONS.contains(&bare) {
                return Err(bad(format!(
                    "option {key:?} is a credential: set it in the environment \
                     (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) instead, \
                     since these options are saved in the data dir"
                )));
            }
        }
        let base = Url::parse(&format!("s3://{bucket}/"))
            .map_err(|e| bad(format!("bucket {bucket:?}: {e}")))?;
        let prefix =
            ObjectPath::parse(url.path().trim_matches('/')).map_err(|e| bad(e.to_string()))?;
        Ok((base, prefix))
    }
}

/// An object-store history: the store, the bucket URL DataFusion resolves file
/// URLs against, and the prefix the tables live under.
#[derive(Clone)]
pub struct ObjectHistory {
    spec: ObjectStoreSpec,
    base: Url,
    prefix: ObjectPath,
    store: Arc<dyn ObjectStore>,
}

impl fmt::Debug for ObjectHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectHistory")
            .field("url", &self.spec.url)
            .finish_non_exhaustive()
    }
}

impl ObjectHistory {
    /// The history at `spec`, reached through `store` (built for that URL).
    pub fn new(spec: ObjectStoreSpec, store: Arc<dyn ObjectStore>) -> Result<ObjectHistory> {
        let (base, prefix) = spec.parse()?;
        Ok(ObjectHistory {
            spec,
            base,
            prefix,
            store,
        })
    }

    /// Where it is.
    pub fn spec(&self) -> &ObjectStoreSpec {
        &self.spec
    }

    fn path(&self, key: &str) -> Result<ObjectPath> {
        let full = if self.prefix.as_ref().is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix.as_ref())
        };
        ObjectPath::parse(&full).map_err(|e| self.error("name", key, e))
    }

    fn error(&self, action: &'static str, key: &str, e: impl fmt::Display) -> Error {
        Error::ObjectStore {
            action,
            location: format!("{}/{key}", self.spec.url.trim_end_matches('/')),
            reason: e.to_string(),
        }
    }
}

/// Where a history's files live.
#[derive(Debug, Clone)]
pub enum HistoryLocation {
    /// A local directory.
    Dir(PathBuf),
    /// An S3-compatible object store.
    Object(ObjectHistory),
}

impl fmt::Display for HistoryLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryLocation::Dir(d) => write!(f, "{}", d.display()),
            HistoryLocation::Object(o) => f.write_str(&o.spec.url),
        }
    }
}

impl HistoryLocation {
    /// Every file key under the tables `tables` (`<table>/<day>/<name>`),
    /// temporaries included (the caller decides what they are).
    pub(crate) fn list(&self, tables: &[&str]) -> Result<Vec<String>> {
        match self {
            HistoryLocation::Dir(dir) => list_dir(dir, tables),
            HistoryLocation::Object(o) => {
                let store = o.store.clone();
                let prefix = o.prefix.clone();
                let found = block_on_io(async move {
                    store
                        .list(Some(&prefix))
                        .map_ok(|meta| meta.location.to_string())
                        .try_collect::<Vec<String>>()
                        .await
                })?
                .map_err(|e| o.error("list", "", e))?;
                let root = o.prefix.as_ref();
                Ok(found
                    .into_iter()
                    .filter_map(|full| {
                        let key = if root.is_empty() {
                            full
                        } else {
                            full.strip_prefix(root)?.strip_prefix('/')?.to_owned()
                        };
                        let table = key.split('/').next()?;
                        (tables.contains(&table) && key.split('/').count() == 3).then_some(key)
                    })
                    .collect())
            }
        }
    }

    /// Stores `bytes` as `key`, whole or not at all, durably.
    pub(crate) fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        match self {
            HistoryLocation::Dir(dir) => {
                let path = dir.join(key);
                let parent = path
                    .parent()
                    .map(Path::to_owned)
                    .unwrap_or_else(|| dir.clone());
                fs::create_dir_all(&parent).map_err(Error::io("create", &parent))?;
                let tmp = path.with_extension("parquet.tmp");
                {
                    let mut file = fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
                    file.write_all(&bytes).map_err(Error::io("write", &tmp))?;
                    file.sync_all().map_err(Error::io("sync", &tmp))?;
                }
                fs::rename(&tmp, &path).map_err(Error::io("rename", &path))?;
                sync_dir(&parent)
            }
            HistoryLocation::Object(o) => {
                let store = o.store.clone();
                let path = o.path(key)?;
                block_on_io(async move { store.put(&path, PutPayload::from(bytes)).await })?
                    .map_err(|e| o.error("put", key, e))?;
                Ok(())
            }
        }
    }

    /// The bytes of `key`.
    pub(crate) fn get(&self, key: &str) -> Result<Bytes> {
        match self {
            HistoryLocation::Dir(dir) => {
                let path = dir.join(key);
                fs::read(&path)
                    .map(Bytes::from)
                    .map_err(Error::io("read", &path))
            }
            HistoryLocation::Object(o) => {
                let store = o.store.clone();
                let path = o.path(key)?;
                block_on_io(async move { store.get(&path).await?.bytes().await })?
                    .map_err(|e| o.error("get", key, e))
            }
        }
    }

    /// Deletes the files `keys` (one already gone is not an error); in a
    /// directory, day directories left empty go too.
    pub(crate) fn delete(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        match self {
            HistoryLocation::Dir(dir) => {
                let mut days = std::collections::BTreeSet::new();
                for key in keys {
                    let path = dir.join(key);
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io("remove", &path)(e)),
                    }
                    if let Some(day) = path.parent() {
                        days.insert(day.to_owned());
                    }
                }
                for day in days {
                    // Only an empty day directory goes; one still holding files stays.
                    let _ = fs::remove_dir(&day);
                    let sync = if day.exists() {
                        Some(&*day)
                    } else {
                        day.parent()
                    };
                    if let Some(d) = sync {
                        sync_dir(d)?;
                    }
                }
                Ok(())
            }
            HistoryLocation::Object(o) => {
                for key in keys {
                    let store = o.store.clone();
                    let path = o.path(key)?;
                    match block_on_io(async move { store.delete(&path).await })? {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(o.error("delete", key, e)),
                    }
                }
                Ok(())
            }
        }
    }

    /// The URL DataFusion reads `key` from.
    pub(crate) fn file_url(&self, key: &str) -> String {
        match self {
            HistoryLocation::Dir(dir) => dir.join(key).to_string_lossy().into_owned(),
            HistoryLocation::Object(o) => {
                let root = o.prefix.as_ref();
                if root.is_empty() {
                    format!("{}{key}", o.base)
                } else {
                    format!("{}{root}/{key}", o.base)
                }
            }
        }
    }

    /// Lets `ctx` read this location's files.
    pub(crate) fn register(&self, ctx: &SessionContext) {
        if let HistoryLocation::Object(o) = self {
            ctx.register_object_store(&o.base, o.store.clone());
        }
    }
}

fn list_dir(dir: &Path, tables: &[&str]) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for table in tables {
        let tdir = dir.join(table);
        if !tdir.exists() {
            continue;
        }
        for day in fs::read_dir(&tdir).map_err(Error::io("list", &tdir))? {
            let day = day.map_err(Error::io("list", &tdir))?.path();
            if !day.is_dir() {
                continue;
            }
            let Some(day_name) = day.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            for f in fs::read_dir(&day).map_err(Error::io("list", &day))? {
                let path = f.map_err(Error::io("list", &day))?.path();
                if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                    keys.push(format!("{table}/{day_name}/{name}"));
                }
            }
        }
    }
    Ok(keys)
}

/// Makes a rename or create in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync", dir))
}

/// Runs object-store I/O to completion from synchronous code (the engine's commit
/// path, which may run on a runtime worker under `block_in_place`, on a plain
/// thread, or in a test without a runtime). The future runs on a small runtime of
/// its own that lives as long as the process, so a connection it opens never
/// outlives the reactor that drives it.
fn block_on_io<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> Result<T> {
    static IO: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    let runtime = IO
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("causeway-history-io")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Internal(format!("history I/O runtime: {e}")))?;
    futures::executor::block_on(runtime.spawn(fut))
        .map_err(|e| Error::Internal(format!("history I/O task: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> ObjectStoreSpec {
        ObjectStoreSpec {
            url: url.into(),
            options: BTreeMap::new(),
        }
    }

    #[test]
    fn an_s3_url_gives_bucket_and_prefix() {
        let (base, prefix) = spec("s3://ops-history/causeway/prod/")
            .parse()
            .expect("parse");
        assert_eq!(base.as_str(), "s3://ops-history/");
        assert_eq!(prefix.as_ref(), "causeway/prod");
        let (base, prefix) = spec("s3a://ops-history").parse().expect("parse");
        assert_eq!(base.as_str(), "s3://ops-history/");
        assert_eq!(prefix.as_ref(), "");
    }

    #[test]
    fn other_schemes_and_credentials_in_options_are_refused() {
        for url in ["gs://b/p", "file:///tmp/h", "s3:///nobucket", "not a url"] {
            let err = spec(url).parse().expect_err(url).to_string();
            assert!(err.contains(url), "{err}");
        }
        let mut with_secret = spec("s3://b/p");
        with_secret
            .options
            .insert("aws_secret_access_key".into(), "x".into());
        let err = with_secret.parse().expect_err("secret").to_string();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
        let mut fine = spec("s3://b/p");
        fine.options
            .insert("endpoint".into(), "http://127.0.0.1:9000".into());
        fine.options.insert("allow_http".into(), "true".into());
        fine.parse().expect("endpoint and allow_http are fine");
    }

    #[test]
    fn object_keys_and_urls_sit_under_the_prefix() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let o = ObjectHistory::new(spec("s3://b/hist"), store).expect("new");
        let loc = HistoryLocation::Object(o);
        loc.put("events/dt=2026-11-30/part-1.parquet", b"one".to_vec())
            .expect("put");
        loc.put("incidents/dt=2026-11-30/part-1.parquet", b"two".to_vec())
            .expect("put");
        let mut keys = loc.list(&["events", "incidents"]).expect("list");
        keys.sort();
        assert_eq!(
            keys,
            [
                "events/dt=2026-11-30/part-1.parquet",
                "incidents/dt=2026-11-30/part-1.parquet"
            ]
        );
        assert_eq!(loc.list(&["events"]).expect("list").len(), 1);
        assert_eq!(
            &loc.get("events/dt=2026-11-30/part-1.parquet").expect("get")[..],
            b"one"
        );
        assert_eq!(
            loc.file_url("events/dt=2026-11-30/part-1.parquet"),
            "s3://b/hist/events/dt=2026-11-30/part-1.parquet"
        );
        loc.delete(&[
            "events/dt=2026-11-30/part-1.parquet".into(),
            "events/dt=2026-11-30/part-9.parquet".into(),
        ])
        .expect("deleting a missing key is fine");
        assert_eq!(loc.list(&["events", "incidents"]).expect("list").len(), 1);
    }
}
