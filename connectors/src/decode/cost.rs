//! Cost decoders: FOCUS rows (CSV with a header, or a JSON array of row objects)
//! and OpenCost `/allocation` responses.
//!
//! A FOCUS row is a `cost` event at `ChargePeriodStart`, in the scope of its
//! (sub-)account, about the service its tags or resource map to. Rows have no
//! native id, so the id is a hash of the whole row: an exact re-delivery is a
//! duplicate, a restatement (any changed figure) is a new event, as FOCUS
//! corrections are meant to be read. An OpenCost allocation is a `cost` event at
//! its window start, in its cluster, about its workload.

use std::collections::BTreeMap;

use causeway_rules::{Event, EventKind, EventTime, Severity, id};
use serde_json::{Map, Value};

use super::DecodeContext;
use crate::{Error, Result};

const SOURCE: &str = "cost";

fn malformed(reason: impl Into<String>) -> Error {
    Error::Malformed {
        source_name: SOURCE,
        reason: reason.into(),
    }
}

/// Parses the timestamps billing exports use: RFC 3339, or `YYYY-MM-DD HH:MM:SS`
/// (UTC), with or without a `T` and fractional seconds.
pub fn parse_billing_time(value: &str) -> Result<EventTime> {
    let v = value.trim();
    if let Ok(t) = EventTime::parse_rfc3339(v) {
        return Ok(t);
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d",
        // Spreadsheet exports: US month/day order, two-digit years first so that
        // `4/1/25` is 2025 and not the year 25.
        "%m/%d/%y %H:%M:%S",
        "%m/%d/%y %H:%M",
        "%m/%d/%y",
        "%m/%d/%Y %H:%M:%S",
        "%m/%d/%Y %H:%M",
        "%m/%d/%Y",
    ] {
        if let Ok(dt) = chrono::NaiveDateTime::parse_from_str(v, fmt) {
            return Ok(EventTime::from_datetime(dt.and_utc()));
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(v, fmt)
            && let Some(dt) = d.and_hms_opt(0, 0, 0)
        {
            return Ok(EventTime::from_datetime(dt.and_utc()));
        }
    }
    Err(malformed(format!("unparseable time {value:?}")))
}

/// FOCUS rows from CSV.
pub fn decode_focus_csv(body: &[u8], cx: &DecodeContext<'_>) -> Result<Vec<Event>> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(body);
    let headers = reader
        .headers()
        .map_err(|e| malformed(format!("CSV header: {e}")))?
        .clone();
    if !headers.iter().any(|h| h == "ChargePeriodStart") {
        return Err(Error::Unsupported {
            source_name: SOURCE,
            reason: "CSV has no ChargePeriodStart column (not FOCUS)".into(),
        });
    }
    let mut events = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| malformed(format!("row {}: {e}", i + 2)))?;
        let mut row = Map::new();
        for (h, v) in headers.iter().zip(record.iter()) {
            let value = if v.is_empty() || v == "NULL" {
                Value::Null
            } else {
                Value::String(v.to_owned())
            };
            row.insert(h.to_owned(), value);
        }
        events.push(focus_event(row, cx).map_err(|e| e.at(&format!("row {}", i + 2)))?);
    }
    Ok(events)
}

/// FOCUS rows from a JSON array, or an OpenCost `/allocation` response.
pub fn decode_json(body: &[u8], cx: &DecodeContext<'_>) -> Result<Vec<Event>> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| malformed(format!("not JSON: {e}")))?;
    match value {
        Value::Array(rows) => rows
            .into_iter()
            .enumerate()
            .map(|(i, row)| match row {
                Value::Object(map) => focus_event(map, cx).map_err(|e| e.at(&format!("[{i}]"))),
                _ => Err(malformed(format!("[{i}]: a FOCUS row must be an object"))),
            })
            .collect(),
        Value::Object(obj) if obj.contains_key("data") => opencost(obj, cx),
        _ => Err(Error::Unsupported {
            source_name: SOURCE,
            reason: "expected a FOCUS row array or an OpenCost allocation response".into(),
        }),
    }
}

fn text(row: &Map<String, Value>, key: &str) -> Option<String> {
    match row.get(key)? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn tags_of(row: &Map<String, Value>) -> BTreeMap<String, String> {
    let parsed = match row.get("Tags") {
        Some(Value::Object(o)) => Some(o.clone()),
        Some(Value::String(s)) => serde_json::from_str::<Map<String, Value>>(s).ok(),
        _ => None,
    };
    parsed
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect()
}

/// The service named by cost tags (`service`, `app`, Kubernetes labels).
fn service_from_tags(tags: &BTreeMap<String, String>) -> Option<&str> {
    [
        "service",
        "app",
        "app.kubernetes.io/name",
        "kubernetes.io/service-name",
        "kubernetes_io_service_name",
        "application",
    ]
    .iter()
    .find_map(|k| tags.get(*k).map(String::as_str).filter(|v| !v.is_empty()))
}

fn focus_event(row: Map<String, Value>, cx: &DecodeContext<'_>) -> Result<Event> {
    let start =
        text(&row, "ChargePeriodStart").ok_or_else(|| malformed("ChargePeriodStart is missing"))?;
    let time = parse_billing_time(&start)?;
    let raw = Value::Object(row.clone()).to_string();
    let tags = tags_of(&row);
    let resource = text(&row, "ResourceId");
    let service_name = text(&row, "ServiceName").unwrap_or_else(|| "unknown".into());
    let entity = match (
        cx.catalog.service_for_cost_tags(&tags),
        service_from_tags(&tags),
        &resource,
    ) {
        (Some(s), _, _) => s,
        (None, Some(s), _) => cx.catalog.service_for_workload(None, s),
        (None, None, Some(r)) => cx.catalog.service_for_resource(r),
        (None, None, None) => service_name.clone(),
    };
    let scope = text(&row, "SubAccountId")
        .or_else(|| text(&row, "BillingAccountId"))
        .map(|account| cx.catalog.scope_for_account(&account))
        .unwrap_or_else(|| cx.catalog.default_cluster.clone());
    let effective = text(&row, "EffectiveCost").or_else(|| text(&row, "BilledCost"));
    let effective_num = effective
        .as_deref()
        .map(|v| {
            v.parse::<f64>()
                .map_err(|_| malformed(format!("EffectiveCost {v:?} is not a number")))
        })
        .transpose()?;
    let currency = text(&row, "BillingCurrency").unwrap_or_default();
    let mut attributes = BTreeMap::new();
    for (key, attr) in [
        ("BilledCost", "billed_cost"),
        ("EffectiveCost", "effective_cost"),
        ("ListCost", "list_cost"),
        ("ContractedCost", "contracted_cost"),
        ("BillingCurrency", "currency"),
        ("ChargeCategory", "charge_category"),
        ("ChargeClass", "charge_class"),
        ("ChargePeriodEnd", "charge_period_end"),
        ("ServiceName", "service_name"),
        ("ServiceCategory", "service_category"),
        ("ResourceId", "resource_id"),
        ("ResourceName", "resource_name"),
        ("RegionId", "region"),
        ("SkuId", "sku_id"),
        ("ConsumedQuantity", "consumed_quantity"),
        ("ConsumedUnit", "consumed_unit"),
        ("BillingAccountId", "billing_account_id"),
        ("SubAccountId", "sub_account_id"),
        ("ProviderName", "provider"),
    ] {
        if let Some(v) = text(&row, key) {
            attributes.insert(attr.to_owned(), v);
        }
    }
    for (k, v) in &tags {
        attributes.insert(format!("tag.{k}"), v.clone());
    }
    let source_event_id = id::derive("focus", &[&raw]);
    let status = text(&row, "ChargeCategory").unwrap_or_else(|| "Usage".into());
    let on = resource.as_deref().unwrap_or(&service_name);
    Ok(Event {
        id: Event::derive_id(SOURCE, &source_event_id, ""),
        source: SOURCE.into(),
        source_event_id,
        kind: EventKind::Cost,
        time,
        ingested_at: cx.received_at,
        scope,
        entity,
        severity: Severity::None,
        status,
        summary: format!(
            "{service_name} {} {currency} for {on}",
            effective_num
                .map(|c| format!("{c:.4}"))
                .unwrap_or_else(|| "?".into())
        ),
        attributes,
        raw,
    })
}

fn opencost(obj: Map<String, Value>, cx: &DecodeContext<'_>) -> Result<Vec<Event>> {
    let sets = match obj.get("data") {
        Some(Value::Array(sets)) => sets.clone(),
        _ => {
            return Err(Error::Unsupported {
                source_name: SOURCE,
                reason: "an OpenCost response whose data is not a list of allocation sets \
                         (only /allocation is supported)"
                    .into(),
            });
        }
    };
    let mut events = Vec::new();
    for (si, set) in sets.iter().enumerate() {
        let Value::Object(allocations) = set else {
            return Err(malformed(format!("data[{si}] must be an object")));
        };
        for (name, alloc) in allocations {
            let place = format!("data[{si}].{name}");
            let start = alloc["start"]
                .as_str()
                .or(alloc["window"]["start"].as_str())
                .ok_or_else(|| malformed(format!("{place}: start is missing")))?;
            let end = alloc["end"]
                .as_str()
                .or(alloc["window"]["end"].as_str())
                .unwrap_or("");
            let time = EventTime::parse_rfc3339(start)
                .map_err(|e| malformed(format!("{place}: start: {e}")))?;
            let props = &alloc["properties"];
            let labels: BTreeMap<String, String> = props["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                        .collect()
                })
                .unwrap_or_default();
            let namespace = props["namespace"].as_str();
            let workload = service_from_tags(&labels)
                .map(str::to_owned)
                .or(props["controller"].as_str().map(str::to_owned))
                .or(props["namespace"].as_str().map(str::to_owned))
                .unwrap_or_else(|| name.clone());
            let entity = cx.catalog.service_for_workload(namespace, &workload);
            let total = alloc["totalCost"].as_f64().unwrap_or(0.0);
            let scope = props["cluster"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| cx.cluster());
            let source_event_id = format!("opencost:{scope}:{name}@{start}/{end}");
            let mut attributes = BTreeMap::new();
            attributes.insert("allocation".into(), name.clone());
            attributes.insert("total_cost".into(), total.to_string());
            attributes.insert("window_end".into(), end.to_owned());
            for key in [
                "cpuCost",
                "ramCost",
                "gpuCost",
                "pvCost",
                "networkCost",
                "loadBalancerCost",
            ] {
                if let Some(v) = alloc[key].as_f64() {
                    attributes.insert(key.to_owned(), v.to_string());
                }
            }
            if let Some(ns) = namespace {
                attributes.insert("namespace".into(), ns.to_owned());
            }
            for (k, v) in &labels {
                attributes.insert(format!("tag.{k}"), v.clone());
            }
            events.push(Event {
                id: Event::derive_id(SOURCE, &source_event_id, ""),
                source: SOURCE.into(),
                source_event_id,
                kind: EventKind::Cost,
                time,
                ingested_at: cx.received_at,
                scope,
                entity,
                severity: Severity::None,
                status: "Allocation".into(),
                summary: format!("{name} cost {total:.4} from {start} to {end}"),
                attributes,
                raw: alloc.to_string(),
            });
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use causeway_rules::{IndexedCatalog, ProcessingTime};

    use super::*;

    fn cx(c: &IndexedCatalog) -> DecodeContext<'_> {
        DecodeContext {
            catalog: c,
            cluster_hint: None,
            received_at: ProcessingTime::from_micros(0),
        }
    }

    const CSV: &str = "BilledCost,BillingAccountId,BillingCurrency,ChargeCategory,ChargePeriodEnd,ChargePeriodStart,EffectiveCost,ResourceId,ServiceName,SubAccountId,Tags\n\
1.5,999,USD,Usage,2024-09-18 23:00:00,2024-09-18 22:00:00,1.25,arn:aws:rds:eu:1:db:payments,Amazon RDS,111,\"{\"\"app\"\": \"\"payments\"\"}\"\n\
0.2,999,USD,Usage,2024-09-18 23:00:00,2024-09-18 22:00:00,0.2,i-0abc,Amazon EC2,111,NULL\n";

    #[test]
    fn focus_csv_rows_become_cost_events_on_tagged_services() {
        let c = IndexedCatalog::default();
        let events = decode_focus_csv(CSV.as_bytes(), &cx(&c)).expect("decodes");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].entity, "payments");
        assert_eq!(events[0].scope, "111");
        assert_eq!(events[0].time.to_rfc3339(), "2024-09-18T22:00:00Z");
        assert_eq!(events[0].attr("effective_cost"), Some("1.25"));
        assert_eq!(events[1].entity, "i-0abc");
        assert_ne!(events[0].id, events[1].id);
        // The same rows again are the same events.
        let again = decode_focus_csv(CSV.as_bytes(), &cx(&c)).expect("decodes");
        assert_eq!(again[0].id, events[0].id);
    }

    #[test]
    fn focus_json_and_opencost_decode() {
        let c = IndexedCatalog::default();
        let rows = r#"[{"ChargePeriodStart":"2024-09-18T22:00:00Z","EffectiveCost":3,"ServiceName":"S3","BillingAccountId":"9","Tags":{"service":"search"}}]"#;
        let e = &decode_json(rows.as_bytes(), &cx(&c)).expect("rows")[0];
        assert_eq!(e.entity, "search");
        assert_eq!(e.scope, "9");
        let oc = r#"{"code":200,"data":[{"shop/checkout":{"name":"shop/checkout","properties":{"cluster":"prod","namespace":"shop","controller":"checkout"},
                     "window":{"start":"2024-05-01T00:00:00Z","end":"2024-05-02T00:00:00Z"},"start":"2024-05-01T00:00:00Z","end":"2024-05-02T00:00:00Z","totalCost":12.5}}]}"#;
        let e = &decode_json(oc.as_bytes(), &cx(&c)).expect("opencost")[0];
        assert_eq!(e.entity, "checkout");
        assert_eq!(e.scope, "prod");
        assert_eq!(e.attr("total_cost"), Some("12.5"));
    }

    #[test]
    fn non_focus_input_is_refused() {
        let c = IndexedCatalog::default();
        assert!(decode_focus_csv(b"a,b\n1,2\n", &cx(&c)).is_err());
        assert!(
            decode_focus_csv(b"ChargePeriodStart,EffectiveCost\nyesterday,1\n", &cx(&c)).is_err()
        );
        assert!(
            decode_focus_csv(
                b"ChargePeriodStart,EffectiveCost\n2024-01-01,abc\n",
                &cx(&c)
            )
            .is_err()
        );
        assert!(decode_json(b"{\"x\":1}", &cx(&c)).is_err());
        assert!(decode_json(b"[1]", &cx(&c)).is_err());
        assert_eq!(
            parse_billing_time("4/1/25").expect("US date").to_rfc3339(),
            "2025-04-01T00:00:00Z"
        );
    }
}
