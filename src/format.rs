//! Query results as JSON rows, CSV, Arrow IPC or a terminal table; and the SQL that
//! reproduces an incident's chain.

use anyhow::Context;
use arrow::array::RecordBatch;
use causeway_engine::sql::QueryResult;

/// JSON array of row objects.
pub(crate) fn json_rows(batches: &[RecordBatch]) -> anyhow::Result<Vec<u8>> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs).context("encoding JSON")?;
    writer.finish().context("encoding JSON")?;
    let mut out = writer.into_inner();
    if out.is_empty() {
        out.extend_from_slice(b"[]");
    }
    Ok(out)
}

/// CSV with a header row.
pub(crate) fn csv(batches: &[RecordBatch]) -> anyhow::Result<Vec<u8>> {
    let mut writer = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(Vec::new());
    for b in batches {
        writer.write(b).context("encoding CSV")?;
    }
    Ok(writer.into_inner())
}

/// An Arrow IPC stream.
pub(crate) fn arrow_ipc(result: &QueryResult) -> anyhow::Result<Vec<u8>> {
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &result.schema)
        .context("encoding Arrow IPC")?;
    for b in &result.batches {
        writer.write(b).context("encoding Arrow IPC")?;
    }
    writer.finish().context("encoding Arrow IPC")?;
    writer.into_inner().context("encoding Arrow IPC")
}

/// A terminal table.
pub(crate) fn table(batches: &[RecordBatch]) -> anyhow::Result<String> {
    Ok(arrow::util::pretty::pretty_format_batches(batches)
        .context("formatting table")?
        .to_string())
}

/// The SQL that lists an incident's chain: every edge with its evidence (the rule,
/// the cause it links to, the lag and the join key), and the event it points at,
/// including the edges of incidents merged into it. `id` must already be validated.
pub(crate) fn chain_query(id: &str) -> String {
    format!(
        "SELECT ie.incident_id AS via, ie.role, ie.lag_seconds, ie.linked_by, ie.rule_version, \
                ie.cause_event_id, ie.join_key, \
                e.event_id, e.source, e.kind, e.time, e.status, e.severity, e.summary \
         FROM incident_events ie JOIN events e ON e.event_id = ie.event_id \
         WHERE ie.incident_id = '{id}' \
            OR ie.incident_id IN (SELECT incident_id FROM incidents WHERE merged_into = '{id}') \
         ORDER BY e.time, ie.role, e.event_id, ie.linked_by"
    )
}

/// A string field of a JSON row ("" when missing).
pub(crate) fn s<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn short_time(t: &str) -> &str {
    // 2024-05-01T10:02:00Z → 10:02:00
    t.get(11..19).unwrap_or(t)
}

fn human_lag(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// An incident as a terminal tree: its header, then its causal chain from the
/// root cause down (each event under the cause it was linked to, with the rule
/// and the lag), findings such as an unanswered absence, and resolutions.
/// `chain` is the result of [`chain_query`].
pub(crate) fn incident_tree(incident: &serde_json::Value, chain: &[serde_json::Value]) -> String {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt::Write;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "● [{}] {}",
        s(incident, "severity"),
        s(incident, "title")
    );
    let _ = writeln!(
        out,
        "  {} · rule {} v{} · {}/{} · {} (version {}) · {} events · opened {}{}",
        s(incident, "incident_id"),
        s(incident, "rule_id"),
        incident["rule_version"],
        s(incident, "scope"),
        s(incident, "entity"),
        s(incident, "state"),
        incident["version"],
        incident["event_count"],
        short_time(s(incident, "opened_at")),
        match incident["resolved_at"].as_str() {
            Some(r) => format!(", resolved {}", short_time(r)),
            None => String::new(),
        }
    );
    if let Some(e) = incident["enrichment"]
        .as_str()
        .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok())
    {
        out.push_str(&enrichment_lines(&e));
    }
    let root = s(incident, "root_cause_event_id");
    let mut events: BTreeMap<&str, &serde_json::Value> = BTreeMap::new();
    // Every cause an event was linked to, with the rule and lag.
    let mut causes: BTreeMap<&str, Vec<(&str, &str, f64)>> = BTreeMap::new();
    let mut findings: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut resolutions: Vec<&serde_json::Value> = Vec::new();
    for row in chain {
        let event = s(row, "event_id");
        events.entry(event).or_insert(row);
        let cause = s(row, "cause_event_id");
        match (s(row, "role"), cause) {
            ("effect", c) if !c.is_empty() => causes.entry(event).or_default().push((
                c,
                s(row, "linked_by"),
                row["lag_seconds"].as_f64().unwrap_or(0.0),
            )),
            ("context", _) if s(row, "status") == "resolved" => resolutions.push(row),
            ("context", _) => findings.entry(event).or_default().push(format!(
                "⚠ nothing followed within {} [{}]",
                human_lag(row["lag_seconds"].as_f64().unwrap_or(0.0)),
                s(row, "linked_by")
            )),
            _ => {}
        }
    }
    let time = |e: &str| events.get(e).map_or("", |r| s(r, "time"));
    // Each event hangs under its nearest cause (the latest), so a chain reads
    // A → B → C even when C was also linked to A directly.
    let mut children: BTreeMap<&str, Vec<(&str, &str, f64)>> = BTreeMap::new();
    let mut has_parent: BTreeSet<&str> = BTreeSet::new();
    for (event, links) in &causes {
        let Some(&(cause, rule, lag)) = links
            .iter()
            .filter(|(c, _, _)| events.contains_key(c) && c != event)
            .max_by_key(|(c, _, _)| (time(c), *c))
        else {
            continue;
        };
        has_parent.insert(event);
        children.entry(cause).or_default().push((event, rule, lag));
    }
    for kids in children.values_mut() {
        kids.sort_by_key(|(e, _, _)| (time(e), *e));
    }
    let resolved: BTreeSet<&str> = resolutions.iter().map(|r| s(r, "event_id")).collect();
    // Tops: the root cause first, then other events nothing caused, by time.
    let mut tops: Vec<&str> = events
        .keys()
        .copied()
        .filter(|e| !has_parent.contains(e) && !resolved.contains(e))
        .collect();
    tops.sort_by_key(|e| (*e != root, time(e)));
    let line = |row: &serde_json::Value| {
        format!(
            "{} {:<9} {:<12} {:<10} {}",
            short_time(s(row, "time")),
            s(row, "kind"),
            s(row, "source"),
            s(row, "status"),
            s(row, "summary")
        )
    };
    // Depth-first: (indent, event, the rule and lag it was linked by, whether it
    // is its parent's last child).
    type Visit<'a> = (String, &'a str, Option<(&'a str, f64)>, bool);
    let mut stack: Vec<Visit<'_>> = Vec::new();
    for (i, top) in tops.iter().enumerate().rev() {
        stack.push((String::from("  "), top, None, i + 1 == tops.len()));
    }
    let mut shown: BTreeSet<&str> = BTreeSet::new();
    while let Some((indent, event, link, last)) = stack.pop() {
        if !shown.insert(event) {
            continue;
        }
        let Some(row) = events.get(event) else {
            continue;
        };
        let branch = if last { "└─" } else { "├─" };
        let mark = if event == root {
            "  ← root cause"
        } else if link.is_none() && children.contains_key(event) {
            "  ← also a candidate cause"
        } else {
            ""
        };
        match link {
            Some((rule, lag)) => {
                let _ = writeln!(
                    out,
                    "{indent}{branch} +{:<6} {}  [{rule}]",
                    human_lag(lag),
                    line(row)
                );
            }
            None => {
                let _ = writeln!(out, "{indent}{branch} {}{mark}", line(row));
            }
        }
        let child_indent = format!("{indent}{}", if last { "   " } else { "│  " });
        for f in findings.get(event).into_iter().flatten() {
            let _ = writeln!(out, "{child_indent}{f}");
        }
        let kids = children.get(event).map(Vec::as_slice).unwrap_or(&[]);
        for (j, (child, rule, lag)) in kids.iter().enumerate().rev() {
            stack.push((
                child_indent.clone(),
                child,
                Some((rule, *lag)),
                j + 1 == kids.len(),
            ));
        }
    }
    for r in resolutions {
        let _ = writeln!(
            out,
            "  ✓ {} resolved   {}",
            short_time(s(r, "time")),
            s(r, "summary")
        );
    }
    out
}

/// The enrichment of an incident as a few indented lines: owner, what changed,
/// links, similar past incidents.
pub(crate) fn enrichment_lines(e: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let owner = &e["owner"];
    let mut who = Vec::new();
    if let Some(t) = text(&owner["team"]) {
        who.push(format!("team {t}"));
    }
    if let Some(o) = text(&owner["oncall"]) {
        who.push(format!("on call {o}"));
    }
    if let Some(r) = text(&owner["repository"]) {
        who.push(format!("repo {r}"));
    }
    if let Some(r) = text(&owner["runbook_url"]) {
        who.push(format!("runbook {r}"));
    }
    if !who.is_empty() {
        let _ = writeln!(out, "  owner: {}", who.join(" · "));
    }
    let change = &e["change"];
    if change.is_object() {
        let mut what = Vec::new();
        for field in ["revision", "image"] {
            let c = &change[field];
            if let Some(to) = text(&c["to"]) {
                let short = |v: String| {
                    if field == "revision" && v.len() > 12 {
                        v[..7].to_owned()
                    } else {
                        v
                    }
                };
                match text(&c["from"]) {
                    Some(from) => what.push(format!("{field} {} → {}", short(from), short(to))),
                    None => what.push(format!("{field} → {}", short(to))),
                }
            }
        }
        if let Some(set) = change["set"].as_object() {
            for (k, v) in set {
                if k != "fields" {
                    what.push(format!("{k} = {}", v.as_str().unwrap_or_default()));
                }
            }
        }
        if let Some(params) = change["request_parameters"].as_object() {
            let p: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            what.push(format!("request {}", p.join(" ")));
        }
        if let Some(a) = text(&change["actor"]) {
            what.push(format!("by {a}"));
        }
        if change["drift"].as_bool() == Some(true) {
            what.push("drifted from Git".to_owned());
        }
        if !what.is_empty() {
            let _ = writeln!(out, "  changed: {}", what.join(" · "));
        }
    }
    let cost = &e["cost"];
    if let Some(during) = cost["during"].as_f64() {
        let currency = cost["currency"].as_str().unwrap_or_default();
        let rows = cost["rows"].as_u64().unwrap_or(0);
        let line = match (cost["delta"].as_f64(), cost["baseline"].as_f64()) {
            (Some(delta), Some(baseline)) => format!(
                "{delta:+.2} {currency} ({during:.2} against {baseline:.2} usual, {rows} cost rows{})",
                cost["delta_percent"]
                    .as_f64()
                    .map(|p| format!(", {p:+.0}%"))
                    .unwrap_or_default()
            ),
            _ => format!("{during:.2} {currency} over {rows} cost rows (no baseline yet)"),
        };
        let _ = writeln!(out, "  cost: {line}");
    }
    let links = &e["links"];
    let mut l = Vec::new();
    if let Some(c) = text(&links["change"]) {
        l.push(c);
    }
    if let Some(a) = text(&links["argocd"]) {
        l.push(a);
    }
    if let Some(first) = links["alerts"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|v| v.as_str())
    {
        l.push(first.to_owned());
    }
    if !l.is_empty() {
        let _ = writeln!(out, "  links: {}", l.join(" · "));
    }
    if let Some(similar) = e["similar"].as_array() {
        for p in similar {
            let resolved = match p["time_to_resolve_seconds"].as_i64() {
                Some(secs) => format!("resolved in {}m{:02}s", secs / 60, secs % 60),
                None => "not resolved".to_owned(),
            };
            let actions = p["actions"]
                .as_array()
                .filter(|a| !a.is_empty())
                .map(|a| {
                    let a: Vec<&str> = a.iter().filter_map(|x| x.as_str()).collect();
                    format!(" · {}", a.join(", "))
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  similar: {} opened {} · {}{}",
                p["incident_id"].as_str().unwrap_or_default(),
                short_time(p["opened_at"].as_str().unwrap_or_default()),
                resolved,
                actions
            );
        }
    }
    out
}
