//! Rule examples and final incidents: what `causeway rules test` runs, and how a
//! run's output is read back as "the incidents, each with its members".
//!
//! An example's events go through the same compiled predicates and correlator as
//! live traffic, in one batch, with time then let pass until every absence rule's
//! deadline has fired. Its expectation lists every incident the whole pack gives
//! (merged incidents count as part of the one they were merged into).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use causeway_rules::{
    Catalog, CorrelatorConfig, Event, EventId, ExpectedIncident, IncidentEdge, IncidentVersion,
    Output, ProcessingTime, RulePack,
};

use crate::Result;
use crate::operator::Operator;
use crate::schema::events_batch;
use crate::watermark::WatermarkConfig;

/// An incident at the end of a run: its latest version and every member.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalIncident {
    pub latest: IncidentVersion,
    /// Members with their edges, including those of incidents merged into it.
    pub edges: Vec<IncidentEdge>,
}

impl FinalIncident {
    /// Every member event.
    pub fn members(&self) -> BTreeSet<EventId> {
        self.edges.iter().map(|e| e.event_id).collect()
    }
}

/// The incidents an output ends with, merged ones folded into their survivor,
/// ordered by `(opened_at, incident_id)`.
pub fn final_incidents(out: &Output) -> Vec<FinalIncident> {
    let mut latest: BTreeMap<Arc<str>, IncidentVersion> = BTreeMap::new();
    for v in &out.incidents {
        let keep = latest
            .get(&v.incident_id)
            .is_none_or(|old| old.version < v.version);
        if keep {
            latest.insert(v.incident_id.clone(), v.clone());
        }
    }
    let survivor = |id: &Arc<str>| -> Arc<str> {
        let mut id = id.clone();
        for _ in 0..64 {
            match latest.get(&id).and_then(|v| v.merged_into.clone()) {
                Some(next) => id = next,
                None => break,
            }
        }
        id
    };
    let mut edges: BTreeMap<Arc<str>, Vec<IncidentEdge>> = BTreeMap::new();
    for e in &out.edges {
        edges
            .entry(survivor(&e.incident_id))
            .or_default()
            .push(e.clone());
    }
    let mut result: Vec<FinalIncident> = latest
        .values()
        .filter(|v| v.merged_into.is_none())
        .map(|v| FinalIncident {
            latest: v.clone(),
            edges: edges.remove(&v.incident_id).unwrap_or_default(),
        })
        .collect();
    result.sort_by(|a, b| {
        (a.latest.opened_at, &a.latest.incident_id)
            .cmp(&(b.latest.opened_at, &b.latest.incident_id))
    });
    result
}

/// The outcome of one example.
#[derive(Debug, Clone)]
pub struct ExampleReport {
    pub rule_id: String,
    pub file: String,
    pub example: String,
    /// Empty when it passed; else what differed.
    pub failures: Vec<String>,
}

impl ExampleReport {
    /// Whether the example gave what it expects.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every example of every rule of the pack; `catalog` is used by examples
/// that bring none.
pub fn run_examples(pack: &RulePack, catalog: &Catalog) -> Result<Vec<ExampleReport>> {
    // Enough time passes after the last event for every absence to fire.
    let absence_window = pack
        .rules()
        .iter()
        .filter(|r| r.is_absence())
        .map(|r| r.within)
        .max()
        .unwrap_or_default();
    let mut reports = Vec::new();
    for (i, rule) in pack.rules().iter().enumerate() {
        for example in &rule.examples {
            let events = example.to_events();
            let catalog = example.catalog.as_ref().unwrap_or(catalog);
            let out = run_events(pack, catalog, &events, absence_window)?;
            let got = final_incidents(&out);
            reports.push(ExampleReport {
                rule_id: rule.id.clone(),
                file: pack.file_of(i).to_owned(),
                example: example.name.clone(),
                failures: compare(&events, &example.expect, &got),
            });
        }
    }
    Ok(reports)
}

/// Runs events (in the order given) through a fresh operator, then lets `linger`
/// pass after the last one.
pub fn run_events(
    pack: &RulePack,
    catalog: &Catalog,
    events: &[Event],
    linger: Duration,
) -> Result<Output> {
    let mut op = Operator::new(
        pack,
        catalog,
        CorrelatorConfig::default(),
        WatermarkConfig::default(),
    )?;
    let mut out = Output::default();
    if events.is_empty() {
        return Ok(out);
    }
    let batch = events_batch(events)?;
    let last = events
        .iter()
        .map(|e| e.time)
        .max()
        .unwrap_or(causeway_rules::EventTime::MIN);
    op.push_batch(
        &batch,
        ProcessingTime::from_micros(last.as_micros()),
        &mut out,
    )?;
    op.finish(last.plus(linger).plus(Duration::from_secs(1)), &mut out);
    Ok(out)
}

fn describe(rule: &str, root: Option<usize>, events: &BTreeSet<usize>, state: &str) -> String {
    let root = root.map_or("none".to_owned(), |r| r.to_string());
    format!("{{rule: {rule}, root: {root}, events: {events:?}, state: {state}}}")
}

fn compare(events: &[Event], expect: &[ExpectedIncident], got: &[FinalIncident]) -> Vec<String> {
    let position: BTreeMap<EventId, usize> = events
        .iter()
        .enumerate()
        .rev()
        .filter_map(|(i, e)| EventId::parse(&e.id).map(|id| (id, i)))
        .collect();
    let got: Vec<(String, Option<usize>, BTreeSet<usize>, String)> = got
        .iter()
        .map(|f| {
            (
                f.latest.rule_id.to_string(),
                f.latest
                    .root_cause_event_id
                    .and_then(|r| position.get(&r).copied()),
                f.members()
                    .iter()
                    .filter_map(|m| position.get(m).copied())
                    .collect(),
                f.latest.state.as_str().to_owned(),
            )
        })
        .collect();
    let mut unmatched: Vec<usize> = (0..got.len()).collect();
    let mut failures = Vec::new();
    for e in expect {
        let found = unmatched.iter().position(|&g| {
            let (rule, root, members, state) = &got[g];
            *rule == e.rule
                && *root == e.root
                && *members == e.events
                && e.state.as_ref().is_none_or(|s| s == state)
        });
        match found {
            Some(at) => {
                unmatched.remove(at);
            }
            None => failures.push(format!(
                "expected {} but it was not produced",
                describe(
                    &e.rule,
                    e.root,
                    &e.events,
                    e.state.as_deref().unwrap_or("any")
                )
            )),
        }
    }
    for g in unmatched {
        let (rule, root, members, state) = &got[g];
        failures.push(format!(
            "produced {} which is not expected",
            describe(rule, *root, members, state)
        ));
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_of_the_builtin_pack_passes() {
        let pack = RulePack::builtin().expect("pack");
        let reports = run_examples(&pack, &Catalog::default()).expect("run");
        assert!(reports.len() >= pack.rules().len());
        let failed: Vec<String> = reports
            .iter()
            .filter(|r| !r.passed())
            .map(|r| format!("{} / {}: {}", r.rule_id, r.example, r.failures.join("; ")))
            .collect();
        assert!(failed.is_empty(), "{}", failed.join("\n"));
    }

    #[test]
    fn a_wrong_expectation_is_reported_with_what_was_produced() {
        let text = r#"
version: 1
rules:
  - id: regress
    title: "{entity}"
    cause: {where: "kind = 'deploy'"}
    effect: {where: "kind = 'alert'"}
    within: 10m
    examples:
      - name: wrong root
        events:
          - {at: 0s, source: github, kind: deploy, entity: a, status: success}
          - {at: 1m, source: alertmanager, kind: alert, entity: a, status: firing, attributes: {alertname: X}}
        expect:
          - {rule: regress, root: 1, events: [0, 1]}
"#;
        let pack = RulePack::from_files(&[("t.yaml", text)]).expect("valid");
        let reports = run_examples(&pack, &Catalog::default()).expect("run");
        assert_eq!(reports.len(), 1);
        assert!(!reports[0].passed());
        let all = reports[0].failures.join("\n");
        assert!(all.contains("root: 1"), "{all}");
        assert!(all.contains("produced {rule: regress, root: 0"), "{all}");
    }
}
