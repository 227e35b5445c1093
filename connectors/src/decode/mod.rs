//! Decoders: one per source format, from raw bytes to normalized events.
//!
//! A decoder either accepts the whole payload or rejects it with a reason; it never
//! returns part of a payload, so a rejected request leaves no event behind. Decoders
//! are pure functions of (bytes, identity hints, catalog, receive time) and are
//! shared by the HTTP receivers and file import.

pub mod alertmanager;
pub mod argocd;
pub mod cloudevents;
pub mod cloudtrail;
pub mod cost;
pub mod github;
pub mod identity;
pub mod k8s_audit;
pub mod k8s_events;

use causeway_rules::{IndexedCatalog, ProcessingTime};

/// What a receiver knows besides the body.
#[derive(Debug, Clone, Copy)]
pub struct DecodeContext<'a> {
    /// Indexed: decoders ask it for every event.
    pub catalog: &'a IndexedCatalog,
    /// `?cluster=` on the receiver URL, if given.
    pub cluster_hint: Option<&'a str>,
    pub received_at: ProcessingTime,
}

impl DecodeContext<'_> {
    /// The cluster a source that names none speaks of: `?cluster=`, else the
    /// catalog's default.
    pub fn cluster(&self) -> String {
        self.cluster_hint
            .map(str::to_owned)
            .unwrap_or_else(|| self.catalog.default_cluster.clone())
    }
}

#[cfg(test)]
mod fuzz_tests;

/// Serde lets a struct deserialize from a JSON array (its fields in order); our
/// formats are objects, so anything else is refused before it reaches serde.
pub(crate) fn expect_object(
    source_name: &'static str,
    what: impl std::fmt::Display,
    json: &[u8],
) -> crate::Result<()> {
    match json.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(crate::Error::Malformed {
            source_name,
            reason: format!("{what} must be a JSON object"),
        }),
    }
}

/// The items of a Kubernetes `List` of `item_kind`, or the one object itself, as
/// JSON texts; `api_versions` are those accepted on the envelope.
pub(crate) fn kube_items<'a>(
    source_name: &'static str,
    text: &'a str,
    list_kind: &str,
    item_kind: &str,
    api_versions: &[&str],
) -> crate::Result<Vec<&'a str>> {
    use serde::Deserialize;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Envelope<'a> {
        kind: String,
        #[serde(default)]
        api_version: Option<String>,
        #[serde(default, borrow)]
        items: Option<Vec<&'a serde_json::value::RawValue>>,
    }
    let malformed = |reason: String| crate::Error::Malformed {
        source_name,
        reason,
    };
    let unsupported = |reason: String| crate::Error::Unsupported {
        source_name,
        reason,
    };
    expect_object(source_name, "the body", text.as_bytes())?;
    let env: Envelope<'_> = serde_json::from_str(text)
        .map_err(|e| malformed(format!("not an {item_kind} or {list_kind}: {e}")))?;
    if let Some(v) = env.api_version.as_deref()
        && !api_versions.contains(&v)
    {
        return Err(unsupported(format!(
            "apiVersion {v:?} (expected one of {})",
            api_versions.join(", ")
        )));
    }
    let items = if env.kind == list_kind {
        env.items
            .ok_or_else(|| malformed(format!("{list_kind} without items")))?
            .iter()
            .map(|r| r.get())
            .collect()
    } else if env.kind == item_kind {
        vec![text]
    } else {
        return Err(unsupported(format!(
            "kind {:?} (expected {list_kind} or {item_kind})",
            env.kind
        )));
    };
    for (i, item) in items.iter().enumerate() {
        expect_object(source_name, format_args!("items[{i}]"), item.as_bytes())?;
    }
    Ok(items)
}
