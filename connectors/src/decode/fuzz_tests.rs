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
