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
    each_document(body, |doc| Event::from_cloudevent_json(doc, cx.received_at))
}

/// How many events [`decode`] would give `body`, or its error, without building
/// them (a file import checks every line before appending any).
pub fn check(body: &[u8], _cx: &DecodeContext<'_>) -> Result<usize> {
    each_document(body, Event::check_cloudevent_json).map(|docs| docs.len())
}

/// `read` applied to one document or to each of a batch's; all or nothing.
fn each_document<T>(
    body: &[u8],
    read: impl Fn(&str) -> causeway_rules::Result<T>,
) -> Result<Vec<T>> {
    let text = std::str::from_utf8(body).map_err(|_| Error::Malformed {
        source_name: SOURCE,
        reason: "body is not UTF-8".into(),
    })?;
    if !text.trim_start().starts_with('[') {
        // One document is parsed once, by `read`; only a failure is parsed
        // again, to tell a body that is not JSON (400) from JSON that is not a
        // CloudEvent (422). Every JSON-lines import line comes through here.
        return match read(text) {
            Ok(doc) => Ok(vec![doc]),
            Err(e) => Err(match serde_json::from_str::<&RawValue>(text) {
                Err(json) => Error::Malformed {
                    source_name: SOURCE,
                    reason: format!("not JSON: {json}"),
                },
                Ok(_) => unsupported(0, &e),
            }),
        };
    }
    let docs: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| Error::Malformed {
        source_name: SOURCE,
        reason: format!("not a CloudEvents batch: {e}"),
    })?;
    docs.iter()
        .enumerate()
        .map(|(i, doc)| read(doc.get()).map_err(|e| unsupported(i, &e)))
        .collect()
}

/// The error of a batch's `i`-th document that is JSON but not a CloudEvent.
fn unsupported(i: usize, e: &causeway_rules::Error) -> Error {
    Error::Unsupported {
        source_name: SOURCE,
        reason: format!("[{i}]: {e}"),
    }
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
        // One document: not JSON is malformed, JSON that is not a CloudEvent is
        // unsupported, as in a batch.
        for body in ["{\"specversion\":", "not json", ""] {
            let err = decode(body.as_bytes(), &cx).expect_err(body);
            assert!(matches!(err, Error::Malformed { .. }), "{body}: {err}");
            assert!(err.to_string().contains("not JSON"), "{err}");
        }
        for body in [
            one.replace("dev.causeway.deploy", "com.other"),
            "{}".into(),
            "7".into(),
        ] {
            let err = decode(body.as_bytes(), &cx).expect_err(&body);
            assert!(matches!(err, Error::Unsupported { .. }), "{body}: {err}");
            assert!(err.to_string().contains("[0]: "), "{err}");
        }
        let spaced = format!("  {one}\n");
        assert_eq!(
            decode(spaced.as_bytes(), &cx).expect("spaced")[0].id,
            events[0].id
        );
    }
}
