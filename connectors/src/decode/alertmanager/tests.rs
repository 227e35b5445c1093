use causeway_rules::{Catalog, IndexedCatalog, ProcessingTime};

use super::*;

fn cx(catalog: &IndexedCatalog) -> DecodeContext<'_> {
    DecodeContext {
        catalog,
        cluster_hint: None,
        received_at: ProcessingTime::from_micros(0),
    }
}

const FIRING: &str = r#"{
  "version": "4", "groupKey": "{}:{alertname=\"HighErrorRate\"}", "status": "firing",
  "receiver": "causeway", "externalURL": "http://am.example:9093",
  "groupLabels": {"alertname": "HighErrorRate"}, "commonLabels": {}, "commonAnnotations": {},
  "truncatedAlerts": 0,
  "alerts": [
    {"status": "firing",
     "labels": {"alertname": "HighErrorRate", "cluster": "prod-eu", "namespace": "shop",
                "pod": "checkout-7d9f8b6c5d-x2k4q", "severity": "critical"},
     "annotations": {"summary": "5xx ratio above 5% on checkout"},
     "startsAt": "2024-05-01T10:02:00.000Z", "endsAt": "0001-01-01T00:00:00Z",
     "generatorURL": "http://prom.example/graph", "fingerprint": "a1b2c3d4e5f60718"},
    {"status": "resolved",
     "labels": {"alertname": "HighLatency", "namespace": "shop", "service": "checkout"},
     "annotations": {},
     "startsAt": "2024-05-01T10:03:00Z", "endsAt": "2024-05-01T10:20:00Z",
     "generatorURL": "", "fingerprint": "0011223344556677"}
  ]
}"#;

#[test]
fn webhook_alerts_become_events_with_native_ids_times_and_entities() {
    let catalog = IndexedCatalog::new(Catalog {
        default_cluster: "prod-us".into(),
        ..Catalog::default()
    });
    let events = decode(FIRING.as_bytes(), &cx(&catalog)).expect("decodes");
    assert_eq!(events.len(), 2);
    let (a, b) = (&events[0], &events[1]);
    assert_eq!(a.source_event_id, "a1b2c3d4e5f60718@2024-05-01T10:02:00Z");
    assert_eq!(a.time.to_rfc3339(), "2024-05-01T10:02:00Z");
    assert_eq!(a.scope, "prod-eu");
    assert_eq!(a.entity, "checkout");
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(a.attr("alertname"), Some("HighErrorRate"));
    assert_eq!(a.attr("external_url"), Some("http://am.example:9093"));
    assert!(a.raw.contains("x2k4q"));
    assert_eq!(b.status, "resolved");
    assert_eq!(
        b.time.to_rfc3339(),
        "2024-05-01T10:20:00Z",
        "resolved at endsAt"
    );
    assert_eq!(b.scope, "prod-us", "default cluster when no label");
    assert_eq!(b.entity, "checkout");
}

#[test]
fn resends_get_the_same_id_and_resolution_another() {
    let catalog = IndexedCatalog::default();
    let first = decode(FIRING.as_bytes(), &cx(&catalog)).expect("decodes");
    let again = decode(FIRING.as_bytes(), &cx(&catalog)).expect("decodes");
    assert_eq!(first[0].id, again[0].id);
    let resolved = FIRING.replacen(
        "\"status\": \"firing\",\n     \"labels\": {\"alertname\": \"HighErrorRate\"",
        "\"status\": \"resolved\",\n     \"labels\": {\"alertname\": \"HighErrorRate\"",
        1,
    );
    let r = decode(resolved.as_bytes(), &cx(&catalog)).expect("decodes");
    assert_eq!(r[0].source_event_id, first[0].source_event_id);
    assert_ne!(r[0].id, first[0].id);
}

#[test]
fn missing_fingerprints_are_computed_like_alertmanager() {
    // Alertmanager's fingerprint of {alertname="test"} is FNV-1a over "alertname\xfftest\xff".
    let labels: BTreeMap<String, String> = [("alertname".to_owned(), "test".to_owned())].into();
    let fp = label_fingerprint(&labels);
    assert_eq!(fp.len(), 16);
    assert_eq!(fp, label_fingerprint(&labels.clone()));
    let body = FIRING.replace(r#", "fingerprint": "a1b2c3d4e5f60718""#, "");
    let events = decode(body.as_bytes(), &cx(&IndexedCatalog::default())).expect("decodes");
    assert!(events[0].source_event_id.ends_with("@2024-05-01T10:02:00Z"));
    assert_ne!(events[0].attr("fingerprint"), Some("a1b2c3d4e5f60718"));
}

#[test]
fn bad_payloads_are_rejected_whole_with_a_reason() {
    let catalog = IndexedCatalog::default();
    let cases: &[(&str, &str)] = &[
        ("{", "malformed"),
        ("[]", "malformed"),
        (r#"{"version":"4"}"#, "malformed"),
        (r#"{"version":"3","alerts":[]}"#, "unsupported"),
        (
            r#"{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"A"},"startsAt":"soon"}]}"#,
            "malformed",
        ),
        (
            r#"{"version":"4","alerts":[{"status":"pending","labels":{"alertname":"A"},"startsAt":"2024-01-01T00:00:00Z"}]}"#,
            "unsupported",
        ),
        (
            r#"{"version":"4","alerts":[{"status":"firing","labels":{},"startsAt":"2024-01-01T00:00:00Z"}]}"#,
            "malformed",
        ),
    ];
    for (body, kind) in cases {
        let err = decode(body.as_bytes(), &cx(&catalog)).expect_err(body);
        assert!(err.to_string().starts_with(kind), "{body}: {err}");
    }
}

#[test]
fn prometheus_api_v2_alerts_take_their_status_from_ends_at() {
    let catalog = IndexedCatalog::default();
    let cx = DecodeContext {
        catalog: &catalog,
        cluster_hint: Some("prod"),
        received_at: ProcessingTime::parse_rfc3339("2024-05-01T10:10:00Z").expect("time"),
    };
    let body = r#"[
      {"labels": {"alertname": "Up", "job": "api"}, "annotations": {},
       "startsAt": "2024-05-01T10:00:00Z", "endsAt": "2024-05-01T10:14:00Z", "generatorURL": "http://p"},
      {"labels": {"alertname": "Up", "job": "db"},
       "startsAt": "2024-05-01T09:00:00Z", "endsAt": "2024-05-01T10:05:00Z"}
    ]"#;
    let events = decode_api_v2(body.as_bytes(), &cx).expect("decodes");
    assert_eq!(events[0].status, "firing");
    assert_eq!(events[0].time.to_rfc3339(), "2024-05-01T10:00:00Z");
    assert_eq!(events[0].attr("ends_at"), None);
    assert_eq!(events[0].scope, "prod");
    assert_eq!(events[1].status, "resolved");
    assert_eq!(events[1].time.to_rfc3339(), "2024-05-01T10:05:00Z");
    // The same alert posted again (Prometheus re-sends) keeps its id.
    let again = decode_api_v2(body.as_bytes(), &cx).expect("decodes");
    assert_eq!(again[0].id, events[0].id);
    assert!(decode_api_v2(b"{}", &cx).is_err());
    assert!(decode_api_v2(br#"[{"labels": {}}]"#, &cx).is_err());
}

#[test]
fn alerts_without_their_own_status_take_the_group_status() {
    let body = r#"{"version":"4","status":"resolved","alerts":[{"labels":{"alertname":"A","job":"x"},"startsAt":"2024-01-01T00:00:00Z","endsAt":"2024-01-01T00:05:00Z"}]}"#;
    let events = decode(body.as_bytes(), &cx(&IndexedCatalog::default())).expect("decodes");
    assert_eq!(events[0].status, "resolved");
    assert_eq!(events[0].time.to_rfc3339(), "2024-01-01T00:05:00Z");
}
