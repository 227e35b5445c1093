use causeway_rules::{Catalog, IndexedCatalog, ProcessingTime};

use super::*;

fn cx(c: &IndexedCatalog) -> DecodeContext<'_> {
    DecodeContext {
        catalog: c,
        cluster_hint: Some("prod-eu"),
        received_at: ProcessingTime::from_micros(0),
    }
}

fn item(
    stage: &str,
    verb: &str,
    resource: &str,
    name: &str,
    sub: Option<&str>,
    user: &str,
    id: &str,
) -> String {
    let sub = sub
        .map(|s| format!(r#","subresource":"{s}""#))
        .unwrap_or_default();
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"{stage}","requestURI":"/apis/apps/v1/namespaces/shop/{resource}/{name}","verb":"{verb}","user":{{"username":"{user}","groups":["system:authenticated"]}},"sourceIPs":["10.0.0.7"],"userAgent":"kubectl/v1.30.0","objectRef":{{"resource":"{resource}","namespace":"shop","name":"{name}","apiGroup":"apps","apiVersion":"v1"{sub}}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"2024-05-01T10:00:00.000000Z","stageTimestamp":"2024-05-01T10:00:00.050000Z"}}"#
    )
}

#[test]
fn a_human_patching_a_deployment_is_a_change_on_its_workload_counted_once() {
    let c = IndexedCatalog::default();
    let list = format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{},{}]}}"#,
        item(
            "RequestReceived",
            "patch",
            "deployments",
            "checkout",
            None,
            "alice",
            "a1"
        ),
        item(
            "ResponseComplete",
            "patch",
            "deployments",
            "checkout",
            None,
            "alice",
            "a1"
        ),
    );
    let d = decode(list.as_bytes(), &cx(&c)).expect("decodes");
    assert_eq!(d.events.len(), 1);
    assert_eq!(d.skipped, vec![Skipped::Stage]);
    let e = &d.events[0];
    assert_eq!(e.kind, EventKind::Change);
    assert_eq!(e.entity, "checkout");
    assert_eq!(e.scope, "prod-eu");
    assert_eq!(e.source_event_id, "a1");
    assert_eq!(e.attr("actor_type"), Some("human"));
    assert_eq!(e.time.to_rfc3339(), "2024-05-01T10:00:00Z");
}

#[test]
fn exec_counts_at_response_started_and_both_stages_share_one_id() {
    let c = IndexedCatalog::default();
    let started = item(
        "ResponseStarted",
        "create",
        "pods",
        "checkout-7d9f8b6c5d-x2k4q",
        Some("exec"),
        "bob",
        "x1",
    );
    let done = item(
        "ResponseComplete",
        "create",
        "pods",
        "checkout-7d9f8b6c5d-x2k4q",
        Some("exec"),
        "bob",
        "x1",
    );
    let a = decode(started.as_bytes(), &cx(&c)).expect("ok").events;
    let b = decode(done.as_bytes(), &cx(&c)).expect("ok").events;
    assert_eq!(a[0].kind, EventKind::Audit);
    assert_eq!(a[0].entity, "checkout");
    assert_eq!(a[0].attr("subresource"), Some("exec"));
    assert_eq!(a[0].id, b[0].id);
}

#[test]
fn controller_reads_are_skipped_and_service_accounts_recognised() {
    let c = IndexedCatalog::default();
    let read = item(
        "ResponseComplete",
        "list",
        "deployments",
        "",
        None,
        "system:serviceaccount:kube-system:deployment-controller",
        "r1",
    );
    let d = decode(read.as_bytes(), &cx(&c)).expect("ok");
    assert!(d.events.is_empty());
    assert_eq!(d.skipped, vec![Skipped::Read]);
    let secret = item(
        "ResponseComplete",
        "get",
        "secrets",
        "db-password",
        None,
        "system:serviceaccount:shop:api",
        "s1",
    );
    let d = decode(secret.as_bytes(), &cx(&c)).expect("ok");
    assert_eq!(d.events[0].kind, EventKind::Audit);
    assert_eq!(d.events[0].attr("actor_type"), Some("service_account"));
}

#[test]
fn malformed_and_foreign_documents_are_rejected() {
    let c = IndexedCatalog::default();
    assert!(
        decode(br#"{"kind": 0}"#, &cx(&c))
            .expect_err("bad")
            .to_string()
            .starts_with("malformed")
    );
    assert!(
        decode(br#"{"kind":"Pod","apiVersion":"v1"}"#, &cx(&c))
            .expect_err("pod")
            .to_string()
            .starts_with("unsupported")
    );
    let bad_item =
        r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"kind":"Event"}]}"#;
    assert!(decode(bad_item.as_bytes(), &cx(&c)).is_err());
}

#[test]
fn patches_say_what_they_changed_without_copying_secret_values() {
    let c = IndexedCatalog::default();
    let patch = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"p1","stage":"ResponseComplete","verb":"patch",
      "user":{"username":"alice"},"objectRef":{"resource":"deployments","namespace":"shop","name":"checkout","apiGroup":"apps"},
      "requestObject":{"spec":{"replicas":5,"template":{"spec":{"containers":[{"name":"app","image":"ghcr.io/acme/checkout:1.4.3",
        "resources":{"limits":{"memory":"256Mi","cpu":"500m"}}}]}}}},
      "requestReceivedTimestamp":"2024-05-01T10:00:00Z"}"#;
    let e = &decode(patch.as_bytes(), &cx(&c)).expect("ok").events[0];
    assert_eq!(
        e.attr("change.image"),
        Some("app=ghcr.io/acme/checkout:1.4.3")
    );
    assert_eq!(e.attr("change.replicas"), Some("5"));
    assert_eq!(e.attr("change.memory_limit"), Some("256Mi"));
    assert_eq!(e.attr("change.fields"), Some("image,limits,replicas"));
    let secret = r#"{"kind":"Event","auditID":"s2","stage":"ResponseComplete","verb":"update","user":{"username":"bob"},
      "objectRef":{"resource":"secrets","namespace":"shop","name":"db"},"requestObject":{"data":{"password":"c2VjcmV0"}},
      "requestReceivedTimestamp":"2024-05-01T10:00:00Z"}"#;
    let e = &decode(secret.as_bytes(), &cx(&c)).expect("ok").events[0];
    assert_eq!(e.attr("change.keys"), Some("password"));
    assert!(!e.attributes.values().any(|v| v.contains("c2VjcmV0")));
    assert!(!e.raw.contains("c2VjcmV0"), "{}", e.raw);
}

#[test]
fn a_config_map_change_is_a_change_of_the_service_that_reads_it() {
    use causeway_rules::ServiceEntry;
    let c = IndexedCatalog::new(Catalog {
        services: vec![ServiceEntry {
            name: "payments".into(),
            namespace: Some("shop".into()),
            configs: vec!["pay-flags".into()],
            ..ServiceEntry::default()
        }],
        ..Catalog::default()
    });
    let body = |name: &str, id: &str| {
        item(
            "ResponseComplete",
            "update",
            "configmaps",
            name,
            None,
            "system:serviceaccount:ci:deployer",
            id,
        )
    };
    let listed = decode(body("pay-flags", "c1").as_bytes(), &cx(&c)).expect("decodes");
    assert_eq!(listed.events[0].entity, "payments");
    let by_name = decode(body("checkout-config", "c2").as_bytes(), &cx(&c)).expect("decodes");
    assert_eq!(by_name.events[0].entity, "checkout");
    assert_eq!(by_name.events[0].attr("name"), Some("checkout-config"));
}
