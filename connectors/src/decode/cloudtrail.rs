//! CloudTrail decoder: `{"Records": [...]}` as delivered to S3 or forwarded.
//!
//! Mutating calls are `change` events, read-only calls (`readOnly`, else a
//! `Describe`/`Get`/`List`/`Head`/`Lookup` name) are `audit` events. The scope is
//! the cluster the catalog's `accounts` maps the account the call acted on to,
//! else the account itself; the entity is the first resource ARN (or the
//! request's resource identifier) mapped through the catalog. Only `eventVersion`
//! 1.x is accepted. The request parameters are kept, as JSON, for rules and people.

use std::collections::BTreeMap;

use causeway_rules::{Event, EventKind, EventTime, Severity};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::DecodeContext;
use crate::{Error, Result};

const SOURCE: &str = "cloudtrail";

/// Request parameters that name the resource acted on, most specific first.
const RESOURCE_KEYS: [&str; 14] = [
    "dBInstanceIdentifier",
    "dBClusterIdentifier",
    "instanceId",
    "bucketName",
    "functionName",
    "roleName",
    "userName",
    "groupId",
    "loadBalancerName",
    "autoScalingGroupName",
    "clusterName",
    "tableName",
    "queueUrl",
    "keyId",
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope<'a> {
    #[serde(borrow)]
    records: Vec<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    event_version: String,
    #[serde(rename = "eventID")]
    event_id: String,
    event_time: String,
    event_source: String,
    event_name: String,
    #[serde(default)]
    aws_region: Option<String>,
    #[serde(default, rename = "sourceIPAddress")]
    source_ip_address: Option<String>,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    user_identity: Option<Value>,
    #[serde(default)]
    request_parameters: Option<Value>,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    read_only: Option<bool>,
    #[serde(default)]
    recipient_account_id: Option<String>,
    #[serde(default)]
    resources: Option<Vec<Value>>,
    #[serde(default)]
    event_type: Option<String>,
}

fn malformed(reason: impl Into<String>) -> Error {
    Error::Malformed {
        source_name: SOURCE,
        reason: reason.into(),
    }
}

/// Decodes a `Records` envelope; all or nothing.
pub fn decode(body: &[u8], cx: &DecodeContext<'_>) -> Result<Vec<Event>> {
    super::expect_object(SOURCE, "the body", body)?;
    let env: Envelope<'_> = serde_json::from_slice(body).map_err(|e| {
        malformed(format!(
            "not a CloudTrail {{\"Records\": [...]}} document: {e}"
        ))
    })?;
    env.records
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            super::expect_object(SOURCE, format_args!("Records[{i}]"), raw.get().as_bytes())?;
            let rec: Record = serde_json::from_str(raw.get())
                .map_err(|e| malformed(format!("Records[{i}]: {e}")))?;
            record_event(rec, raw.get(), cx).map_err(|e| e.at(&format!("Records[{i}]")))
        })
        .collect()
}

fn is_read_name(name: &str) -> bool {
    [
        "Describe", "Get", "List", "Head", "Lookup", "BatchGet", "Search", "Select",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

fn record_event(rec: Record, raw: &str, cx: &DecodeContext<'_>) -> Result<Event> {
    if rec.event_version.split('.').next() != Some("1") {
        return Err(Error::Unsupported {
            source_name: SOURCE,
            reason: format!(
                "eventVersion {:?} (only 1.x is supported)",
                rec.event_version
            ),
        });
    }
    let time = EventTime::parse_rfc3339(&rec.event_time)
        .map_err(|e| malformed(format!("eventTime: {e}")))?;
    let identity = rec.user_identity.unwrap_or(Value::Null);
    let account = rec
        .recipient_account_id
        .clone()
        .or_else(|| identity["accountId"].as_str().map(str::to_owned))
        .unwrap_or_else(|| cx.catalog.default_cluster.clone());
    let read_only = rec
        .read_only
        .unwrap_or_else(|| is_read_name(&rec.event_name));
    let params = rec.request_parameters.unwrap_or(Value::Null);
    let resource = rec
        .resources
        .as_ref()
        .and_then(|r| r.first())
        .and_then(|r| r["ARN"].as_str().or(r["arn"].as_str()))
        .map(str::to_owned)
        .or_else(|| {
            RESOURCE_KEYS
                .iter()
                .find_map(|k| params[*k].as_str().map(str::to_owned))
        });
    let service_short = rec
        .event_source
        .strip_suffix(".amazonaws.com")
        .unwrap_or(&rec.event_source)
        .to_owned();
    let entity = match &resource {
        Some(r) => cx.catalog.service_for_resource(r),
        None => service_short.clone(),
    };
    let actor = identity["userName"]
        .as_str()
        .or(identity["sessionContext"]["sessionIssuer"]["userName"].as_str())
        .or(identity["invokedBy"].as_str())
        .or(identity["type"].as_str())
        .unwrap_or("unknown")
        .to_owned();
    let status = match &rec.error_code {
        Some(code) if !code.is_empty() => "failed",
        _ => "succeeded",
    };
    let severity = match rec.error_code.as_deref() {
        Some(c) if c.contains("AccessDenied") || c.contains("Unauthorized") => Severity::Warning,
        _ => Severity::Info,
    };
    let mut attributes = BTreeMap::new();
    attributes.insert("account".into(), account.clone());
    attributes.insert("event_name".into(), rec.event_name.clone());
    attributes.insert("event_source".into(), rec.event_source.clone());
    attributes.insert("read_only".into(), read_only.to_string());
    attributes.insert("actor".into(), actor.clone());
    if let Some(t) = identity["type"].as_str() {
        attributes.insert("user_type".into(), t.to_owned());
    }
    if let Some(arn) = identity["arn"].as_str() {
        attributes.insert("user_arn".into(), arn.to_owned());
    }
    if let Some(r) = rec.aws_region {
        attributes.insert("region".into(), r);
    }
    if let Some(ip) = rec.source_ip_address {
        attributes.insert("source_ip".into(), ip);
    }
    if let Some(ua) = rec.user_agent {
        attributes.insert("user_agent".into(), ua);
    }
    if let Some(r) = &resource {
        attributes.insert("resource".into(), r.clone());
    }
    if !params.is_null() {
        attributes.insert("request_parameters".into(), params.to_string());
    }
    if let Some(c) = rec.error_code {
        attributes.insert("error_code".into(), c);
    }
    if let Some(m) = rec.error_message {
        attributes.insert("error_message".into(), m);
    }
    if let Some(t) = rec.event_type {
        attributes.insert("event_type".into(), t);
    }
    let on = resource.as_deref().unwrap_or(&service_short);
    Ok(Event {
        id: Event::derive_id(SOURCE, &rec.event_id, ""),
        source: SOURCE.into(),
        source_event_id: rec.event_id,
        kind: if read_only {
            EventKind::Audit
        } else {
            EventKind::Change
        },
        time,
        ingested_at: cx.received_at,
        // The cluster the catalog maps the account to, so cloud changes join that
        // cluster's alerts; else the account.
        scope: cx.catalog.scope_for_account(&account),
        entity,
        severity,
        status: status.into(),
        summary: format!("{actor} {} on {on}", rec.event_name),
        attributes,
        raw: raw.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use causeway_rules::{Catalog, IndexedCatalog, ProcessingTime, ServiceEntry};

    use super::*;

    fn cx(c: &IndexedCatalog) -> DecodeContext<'_> {
        DecodeContext {
            catalog: c,
            cluster_hint: None,
            received_at: ProcessingTime::from_micros(0),
        }
    }

    const MODIFY: &str = r#"{"Records":[
      {"eventVersion":"1.08","userIdentity":{"type":"IAMUser","userName":"alice","arn":"arn:aws:iam::111122223333:user/alice","accountId":"111122223333"},
       "eventTime":"2024-05-01T10:00:00Z","eventSource":"rds.amazonaws.com","eventName":"ModifyDBInstance","awsRegion":"eu-west-1",
       "sourceIPAddress":"203.0.113.5","userAgent":"aws-cli/2","requestParameters":{"dBInstanceIdentifier":"payments-db","dBInstanceClass":"db.t3.small"},
       "responseElements":null,"eventID":"e-1","readOnly":false,"eventType":"AwsApiCall","recipientAccountId":"111122223333"},
      {"eventVersion":"1.05","userIdentity":{"type":"AssumedRole","accountId":"111122223333","sessionContext":{"sessionIssuer":{"userName":"ops"}}},
       "eventTime":"2024-05-01T10:01:00Z","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","eventID":"e-2"}
    ]}"#;

    #[test]
    fn mutating_calls_are_changes_on_their_catalog_service_and_reads_are_audit() {
        let c = Catalog {
            services: vec![ServiceEntry {
                name: "payments".into(),
                resources: vec!["payments-db".into()],
                ..ServiceEntry::default()
            }],
            ..Catalog::default()
        };
        let events =
            decode(MODIFY.as_bytes(), &cx(&IndexedCatalog::new(c.clone()))).expect("decodes");
        let (m, d) = (&events[0], &events[1]);
        assert_eq!(m.kind, EventKind::Change);
        assert_eq!(m.entity, "payments");
        assert_eq!(m.scope, "111122223333");
        assert_eq!(m.source_event_id, "e-1");
        assert!(
            m.attr("request_parameters")
                .unwrap_or("")
                .contains("db.t3.small")
        );
        assert_eq!(d.kind, EventKind::Audit);
        assert_eq!(d.entity, "ec2");
        assert_eq!(d.attr("actor"), Some("ops"));
        // An account the catalog maps to a cluster is correlated in that cluster.
        let mapped = Catalog {
            accounts: [("111122223333".to_owned(), "prod-eu".to_owned())].into(),
            ..c
        };
        let events = decode(MODIFY.as_bytes(), &cx(&IndexedCatalog::new(mapped))).expect("decodes");
        assert_eq!(events[0].scope, "prod-eu");
        assert_eq!(events[0].attr("account"), Some("111122223333"));
    }

    #[test]
    fn other_event_versions_and_shapes_are_refused() {
        let c = IndexedCatalog::default();
        let v2 = MODIFY.replace("\"1.08\"", "\"2.0\"");
        assert!(
            decode(v2.as_bytes(), &cx(&c))
                .expect_err("v2")
                .to_string()
                .starts_with("unsupported")
        );
        assert!(
            decode(b"[]", &cx(&c))
                .expect_err("shape")
                .to_string()
                .starts_with("malformed")
        );
        assert!(decode(br#"{"Records":[{"eventVersion":"1.0"}]}"#, &cx(&c)).is_err());
    }
}
