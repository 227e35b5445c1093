//! No decoder panics, whatever the bytes: arbitrary input, and JSON that is almost
//! the right shape, always give events or an error.

use causeway_rules::{IndexedCatalog, ProcessingTime};
use proptest::prelude::*;

use super::*;

fn all(body: &[u8]) {
    let catalog = IndexedCatalog::default();
    let cx = DecodeContext {
        catalog: &catalog,
        cluster_hint: Some("c"),
        received_at: ProcessingTime::from_micros(0),
    };
    let _ = alertmanager::decode(body, &cx);
    let _ = alertmanager::decode_api_v2(body, &cx);
    let _ = argocd::decode(body, &cx);
    let _ = cloudevents::decode(body, &cx);
    let _ = cloudtrail::decode(body, &cx);
    let _ = cost::decode_focus_csv(body, &cx);
    let _ = cost::decode_json(body, &cx);
    for event in ["deployment", "deployment_status", "ping", "push"] {
        let _ = github::decode(event, Some("d"), body, &cx);
    }
    let _ = k8s_audit::decode(body, &cx);
    let _ = k8s_events::decode(body, &cx);
}

/// JSON values built from the field names the decoders look for.
fn near_json() -> impl Strategy<Value = serde_json::Value> {
    let keys = prop::sample::select(vec![
        "version",
        "alerts",
        "status",
        "labels",
        "startsAt",
        "endsAt",
        "fingerprint",
        "kind",
        "items",
        "apiVersion",
        "auditID",
        "stage",
        "verb",
        "objectRef",
        "Records",
        "eventVersion",
        "eventTime",
        "eventID",
        "eventName",
        "eventSource",
        "data",
        "ChargePeriodStart",
        "deployment",
        "deployment_status",
        "repository",
        "schema",
        "app",
        "event_id",
        "specversion",
        "type",
        "time",
        "source",
        "id",
        "metadata",
        "involvedObject",
        "alertname",
    ]);
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "4",
            "firing",
            "resolved",
            "2024-05-01T10:00:00Z",
            "EventList",
            "Event",
            "ResponseComplete",
            "1.08",
            "dev.causeway.alert",
            "1.0",
            "causeway.argocd/v1",
            "",
            "9999-99-99",
            "0001-01-01T00:00:00Z",
        ])
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..8).prop_map(|m| {
                serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_decoder_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        all(&body);
    }

    #[test]
    fn no_decoder_panics_on_almost_right_json(value in near_json()) {
        all(value.to_string().as_bytes());
    }
}

/// A valid CloudEvent with some fields replaced by other values (a field set to
/// `None` is removed): every way a document can fail the decode, and many in
/// which it passes.
fn near_cloudevent() -> impl Strategy<Value = String> {
    let text = prop::sample::select(vec![
        "1.0",
        "0.3",
        "dev.causeway.alert",
        "dev.causeway.nope",
        "com.other",
        "2024-05-01T10:00:00Z",
        "2024-05-01 10:00",
        "",
        "ci",
        "evt_0123456789abcdef0123456789abcdef",
        "warning",
        "sometimes",
        "esc\"aped\\u00e9",
    ])
    .prop_map(serde_json::Value::from);
    let leaf = prop_oneof![
        4 => text,
        1 => Just(serde_json::Value::Null),
        1 => Just(serde_json::json!(7)),
        1 => Just(serde_json::json!(true)),
        1 => Just(serde_json::json!(["x"])),
    ];
    let object = |keys: Vec<&'static str>, value: BoxedStrategy<serde_json::Value>| {
        prop::collection::btree_map(prop::sample::select(keys), value, 0..4).prop_map(|m| {
            serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        })
    };
    let attributes = object(vec!["alertname", "team", "x"], leaf.clone().boxed());
    let data = object(
        vec!["summary", "attributes", "raw", "other"],
        prop_oneof![leaf.clone(), attributes].boxed(),
    );
    let value = prop_oneof![3 => leaf, 1 => data];
    let field = prop::sample::select(vec![
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "subject",
        "datacontenttype",
        "sourceeventid",
        "scope",
        "severity",
        "status",
        "ingestedat",
        "data",
        "extension",
    ]);
    prop::collection::vec((field, prop::option::of(value)), 0..4).prop_map(|changes| {
        let mut doc = serde_json::json!({
            "specversion": "1.0", "id": "e1", "source": "alertmanager",
            "type": "dev.causeway.alert", "time": "2024-05-01T10:00:00Z",
            "subject": "checkout", "scope": "prod", "severity": "critical",
            "status": "firing", "ingestedat": "2024-05-01T10:00:01Z",
            "data": {"summary": "s", "attributes": {"alertname": "A"}, "raw": {"k": [1]}}
        });
        for (field, value) in changes {
            match value {
                Some(v) => doc[field] = v,
                None => {
                    doc.as_object_mut().map(|o| o.remove(field));
                }
            }
        }
        doc.to_string()
    })
}

/// The import's check of a CloudEvents line against its decode: the same
/// documents pass, with the same count, and the same errors refuse the rest.
fn check_agrees_with_decode(body: &str) -> std::result::Result<(), TestCaseError> {
    let catalog = IndexedCatalog::default();
    let cx = DecodeContext {
        catalog: &catalog,
        cluster_hint: None,
        received_at: ProcessingTime::from_micros(0),
    };
    let decoded = cloudevents::decode(body.as_bytes(), &cx)
        .map(|events| events.len())
        .map_err(|e| e.to_string());
    let checked = cloudevents::check(body.as_bytes(), &cx).map_err(|e| e.to_string());
    prop_assert_eq!(checked, decoded, "{}", body);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn the_cloudevents_check_refuses_what_the_decode_refuses(doc in near_cloudevent()) {
        check_agrees_with_decode(&doc)?;
        check_agrees_with_decode(&format!("[{doc},{doc}]"))?;
    }
}
