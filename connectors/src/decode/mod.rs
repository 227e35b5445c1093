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

use causeway_rules::{Catalog, ProcessingTime};

/// What a receiver knows besides the body.
#[derive(Debug, Clone, Copy)]
pub struct DecodeContext<'a> {
    pub catalog: &'a Catalog,
    /// `?cluster=` on the receiver URL, if given.
    pub cluster_hint: Option<&'a str>,
    pub received_at: ProcessingTime,
}

#[cfg(test)]
mod fuzz_tests;

/// Serde lets a struct deserialize from a JSON array (its fields in order); our
/// formats are objects, so anything else is refused before it reaches serde.
pub(crate) fn expect_object(
    source_name: &'static str,
    what: &str,
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
