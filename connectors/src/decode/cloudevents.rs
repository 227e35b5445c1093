//! Already-normalized events: CloudEvents 1.0 JSON, one document or a batch array
//! (`application/cloudevents+json`, `application/cloudevents-batch+json`, or plain
//! JSON). Types are `dev.causeway.<kind>`; Causeway's fields are extension
//! attributes (see [`causeway_rules::Event::to_cloudevent_json`]).

use causeway_rules::Event;
use serde_json::value::RawValue;

use super::DecodeContext;
use crate::{Error, Result};

const SOURCE: &str = "events";

/// Decodes one CloudEvent or an array of them; all or nothing.
pub fn decode(body: &[u8], cx: &DecodeContext<'_>) -> Result<Vec<Event>> {
    let text = std::str::from_utf8(body).map_err(|_| Error::Malformed {
        source_name: SOURCE,
        reason: "body is not UTF-8".into(),
    })?;
    let docs: Vec<&RawValue> = if text.trim_start().starts_with('[') {
        serde_json::from_str(text).map_err(|e| Error::Malformed {
            source_name: SOURCE,
            reason: format!("not a CloudEvents batch: {e}"),
        })?
    } else {
        vec![serde_json::from_str(text).map_err(|e| Error::Malformed {
            source_name: SOURCE,
            reason: format!("not JSON: {e}"),
        })?]
    };
    docs.iter()
        .enumerate()
        .map(|(i, doc)| {
            Event::from_cloudevent_json(doc.get(), cx.received_at).map_err(|e| Error::Unsupported {
                source_name: SOURCE,
                reason: format!("[{i}]: {e}"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use causeway_rules::{EventKind, IndexedCatalog, ProcessingTime};

    use super::*;

    #[test]
    fn single_and_batch_documents_decode_all_or_nothing() {
        let catalog = IndexedCatalog::default();
        let cx = DecodeContext {
            catalog: &catalog,
            cluster_hint: None,
            received_at: ProcessingTime::from_micros(0),
        };
        let one = r#"{"specversion":"1.0","id":"x1","source":"ci","type":"dev.causeway.deploy","time":"2024-05-01T10:00:00Z","subject":"checkout","scope":"prod","status":"success","data":{"summary":"deploy"}}"#;
        let events = decode(one.as_bytes(), &cx).expect("single");
        assert_eq!(events[0].kind, EventKind::Deploy);
        assert_eq!(events[0].entity, "checkout");
        let batch = format!("[{one},{}]", one.replace("x1", "x2"));
        assert_eq!(decode(batch.as_bytes(), &cx).expect("batch").len(), 2);
        let bad = format!(
            "[{one},{}]",
            one.replace("dev.causeway.deploy", "com.other")
        );
        assert!(decode(bad.as_bytes(), &cx).is_err());
        assert!(decode(b"[1]", &cx).is_err());
    }
}
