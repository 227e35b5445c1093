//! Golden correlation scenarios: `tests/scenarios/<case>/{rules.yaml, input.jsonl,
//! expected_incidents.json}` (and optionally `scenario.yaml`), run by this one
//! data-driven test through the real operator: compiled predicates, watermarks
//! from per-source clocks, the correlator, snapshot and restore.
//!
//! `input.jsonl` holds one JSON object a line, in arrival order:
//! - an event: `{"name", "at", "source", "kind", "entity", …}` with `at` its event
//!   time and `arrive` its processing time (both offsets like `4m10s` from the
//!   scenario's start; `arrive` defaults to `at`); `source_event_id` defaults to
//!   `name` (give an alert's resolution the name of its firing to resolve it);
//! - `{"idle": "30s"}`: processing time passes with nothing arriving;
//! - `{"restart": true}`: the correlator is snapshotted and a new one restored
//!   from it, as after a process restart.
//!
//! `expected_incidents.json` lists the incidents at the end (merged ones folded
//! into their survivor), members by name. Run with `UPDATE_GOLDEN=1` to rewrite
//! the files after reviewing the difference; the test also checks that no
//! incident version is ever emitted twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use causeway_engine::examples::final_incidents;
use causeway_engine::schema::events_batch;
use causeway_engine::{Operator, WatermarkConfig};
use causeway_rules::{
    Catalog, CorrelatorConfig, Event, EventId, EventKind, EventTime, Output, ProcessingTime,
    PushOutcome, RulePack, Severity,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// Scenarios start here: 2024-05-01T10:00:00Z.
const START: i64 = 1_714_557_600_000_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioConfig {
    #[serde(default)]
    catalog: Option<Catalog>,
    #[serde(default, with = "humantime_serde::option")]
    max_duration: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    group_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    resolve_after: Option<Duration>,
    /// How long time runs on after the last line (default: the longest absence).
    #[serde(default, with = "humantime_serde::option")]
    linger: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Line {
    Idle {
        #[serde(with = "humantime_serde")]
        idle: Duration,
    },
    Restart {
        restart: bool,
    },
    Event(Box<InputEvent>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputEvent {
    name: String,
    #[serde(with = "humantime_serde")]
    at: Duration,
    #[serde(default, with = "humantime_serde::option")]
    arrive: Option<Duration>,
    source: String,
    kind: EventKind,
    entity: String,
    #[serde(default = "scope")]
    scope: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    severity: Severity,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    source_event_id: Option<String>,
}

fn scope() -> String {
    "prod".into()
}

fn at(d: Duration) -> i64 {
    START + i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn offset(t: EventTime) -> String {
    let secs = (t.as_micros() - START) / 1_000_000;
    humantime::format_duration(Duration::from_secs(secs.max(0) as u64)).to_string()
}

struct Run {
    out: Output,
    names: BTreeMap<EventId, String>,
    /// Events refused as too late, by name.
    too_late: Vec<String>,
}

/// How the input is fed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Feed {
    /// Line by line, each event at its arrival time.
    AsWritten,
    /// Every event in one batch, last line first, before time moves at all.
    AllAtOnceReversed,
}

fn run(dir: &Path) -> Run {
    run_fed(dir, Feed::AsWritten)
}

fn run_fed(dir: &Path, feed: Feed) -> Run {
    let rules_text = std::fs::read_to_string(dir.join("rules.yaml")).expect("rules.yaml");
    let pack = RulePack::from_files(&[("rules.yaml", &rules_text)]).expect("valid rules");
    let config: ScenarioConfig = match std::fs::read_to_string(dir.join("scenario.yaml")) {
        Ok(text) => serde_yaml::from_str(&text).expect("valid scenario.yaml"),
        Err(_) => ScenarioConfig::default(),
    };
    let defaults = CorrelatorConfig::default();
    let correlator = CorrelatorConfig {
        max_duration: config.max_duration.unwrap_or(defaults.max_duration),
        group_interval: config.group_interval.unwrap_or(defaults.group_interval),
        resolve_after: config.resolve_after.unwrap_or(defaults.resolve_after),
        max_lateness: WatermarkConfig::default().max_lateness(),
        ..defaults
    };
    let catalog = config.catalog.clone().unwrap_or_default();
    let new_operator = || {
        Operator::new(
            &pack,
            &catalog,
            correlator.clone(),
            WatermarkConfig::default(),
        )
        .expect("operator")
    };
    let mut op = new_operator();
    let mut out = Output::default();
    let mut names = BTreeMap::new();
    let mut now = START;
    let mut last_time = START;
    let input = std::fs::read_to_string(dir.join("input.jsonl")).expect("input.jsonl");
    let mut held: Vec<Event> = Vec::new();
    let mut too_late = Vec::new();
    for (n, text) in input.lines().enumerate() {
        if text.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("{}: line {}: {e}", dir.display(), n + 1));
        match line {
            Line::Idle { idle } => {
                now += i64::try_from(idle.as_micros()).unwrap_or(0);
                // Nothing arrives: an empty batch only moves the clocks' judgement.
                let empty = events_batch(&[]).expect("batch");
                op.push_batch(&empty, ProcessingTime::from_micros(now), &mut out)
                    .expect("tick");
            }
            Line::Restart { restart } => {
                assert!(restart, "restart: true");
                let snap = op.correlator().snapshot().expect("snapshot");
                op = new_operator();
                op.correlator_mut().restore(&snap).expect("restore");
            }
            Line::Event(e) => {
                let sid = e.source_event_id.clone().unwrap_or_else(|| e.name.clone());
                let time = EventTime::from_micros(at(e.at));
                now = now.max(at(e.arrive.unwrap_or(e.at)));
                last_time = last_time.max(time.as_micros());
                let event = Event {
                    id: Event::derive_id(&e.source, &sid, &e.status),
                    source: e.source,
                    source_event_id: sid,
                    kind: e.kind,
                    time,
                    ingested_at: ProcessingTime::from_micros(now),
                    scope: e.scope,
                    entity: e.entity,
                    severity: e.severity,
                    status: e.status,
                    summary: if e.summary.is_empty() {
                        e.name.clone()
                    } else {
                        e.summary
                    },
                    attributes: e.attributes,
                    raw: "{}".into(),
                };
                names
                    .entry(EventId::parse(&event.id).expect("canonical"))
                    .or_insert(e.name.clone());
                if feed == Feed::AllAtOnceReversed {
                    held.push(event);
                    continue;
                }
                let batch = events_batch(&[event]).expect("batch");
                let outcomes = op
                    .push_batch(&batch, ProcessingTime::from_micros(now), &mut out)
                    .expect("push");
                if outcomes.first() == Some(&PushOutcome::TooLate) {
                    too_late.push(e.name.clone());
                }
            }
        }
    }
    if feed == Feed::AllAtOnceReversed {
        held.reverse();
        let batch = events_batch(&held).expect("batch");
        op.push_batch(&batch, ProcessingTime::from_micros(START), &mut out)
            .expect("push");
    }
    let linger = config.linger.unwrap_or_else(|| {
        pack.rules()
            .iter()
            .filter(|r| r.is_absence())
            .map(|r| r.within)
            .max()
            .unwrap_or_default()
    });
    op.finish(
        EventTime::from_micros(last_time)
            .plus(linger)
            .plus(Duration::from_secs(1)),
        &mut out,
    );
    Run {
        out,
        names,
        too_late,
    }
}

fn render(run: &Run) -> Value {
    let name = |id: &EventId| run.names.get(id).cloned().unwrap_or_else(|| id.to_string());
    let incidents: Vec<Value> = final_incidents(&run.out)
        .iter()
        .map(|f| {
            let v = &f.latest;
            let mut roles: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
            let mut causes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for e in &f.edges {
                roles
                    .entry(name(&e.event_id))
                    .or_default()
                    .insert(e.role.as_str());
                if let Some(c) = &e.cause_event_id {
                    causes.entry(name(&e.event_id)).or_default().insert(format!(
                        "{} ({})",
                        name(c),
                        e.linked_by
                    ));
                }
            }
            let merged: BTreeSet<&str> = run
                .out
                .incidents
                .iter()
                .filter(|m| m.merged_into.as_deref() == Some(&*v.incident_id))
                .map(|m| &*m.incident_id)
                .collect();
            json!({
                "incident_id": v.incident_id,
                "version": v.version,
                "state": v.state.as_str(),
                "rule_id": v.rule_id,
                "severity": v.severity.as_str(),
                "title": v.title,
                "scope": v.scope,
                "entity": v.entity,
                "root_cause": v.root_cause_event_id.as_ref().map(name),
                "opened_at": offset(v.opened_at),
                "resolved_at": v.resolved_at.map(offset),
                "event_count": v.event_count,
                "members": roles,
                "caused_by": causes,
                "absorbed": merged,
            })
        })
        .collect();
    json!({"incidents": incidents, "too_late": run.too_late})
}

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/scenarios")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

#[test]
fn golden_scenarios_give_their_expected_incidents() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let cases = cases();
    assert!(
        cases.len() >= 10,
        "expected the scenario set, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let run = run(case);
        // A version is emitted once: never re-announced (restarts included).
        let mut seen = BTreeSet::new();
        for v in &run.out.incidents {
            assert!(
                seen.insert((v.incident_id.clone(), v.version)),
                "{}: {} version {} emitted twice",
                case.display(),
                v.incident_id,
                v.version
            );
        }
        let got = render(&run);
        let path = case.join("expected_incidents.json");
        if update {
            let text = serde_json::to_string_pretty(&got).expect("json") + "\n";
            std::fs::write(&path, text).expect("write expected");
            continue;
        }
        let want: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|_| {
                panic!("{} is missing (UPDATE_GOLDEN=1 writes it)", path.display())
            }))
            .expect("expected_incidents.json is JSON");
        if got != want {
            failures.push(format!(
                "{}:\n--- expected\n{}\n--- got\n{}",
                case.display(),
                serde_json::to_string_pretty(&want).unwrap_or_default(),
                serde_json::to_string_pretty(&got).unwrap_or_default()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn scenario_inputs_in_any_order_within_the_watermark_give_the_same_incidents() {
    // Every scenario whose events all arrive on time, fed at once in reverse order
    // before the watermark moves: the same incidents as fed in time order.
    for case in cases() {
        let input = std::fs::read_to_string(case.join("input.jsonl")).expect("input");
        let timed = ["\"idle\"", "\"restart\"", "\"arrive\""];
        if input.lines().any(|l| timed.iter().any(|t| l.contains(t))) {
            continue;
        }
        let forward = render(&run(&case));
        let backward = render(&run_fed(&case, Feed::AllAtOnceReversed));
        assert_eq!(
            forward,
            backward,
            "{}: arrival order changed the incidents",
            case.display()
        );
    }
}
