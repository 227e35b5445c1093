//! Rule files: causal links between events, as versioned YAML.
//!
//! A rule says "an event matching `cause` followed within `within` by an event
//! matching `effect` that it is joined to is one problem". Predicates are SQL
//! boolean expressions over event columns; they are kept here as text and compiled
//! by the engine into vectorized expressions. A rule may instead watch for an
//! absence (`not_followed_by`: the cause not followed by an expected event within
//! `within`), require several effects before it links (`threshold`), or require an
//! effect's value to rise over its own baseline (`effect.rises`). Every rule can
//! carry examples that `causeway rules test` runs. Everything a file can get wrong
//! is reported at load with the file and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::event::{Event, EventKind, Severity};
use crate::runbook::{self, RunbookSpec};
use crate::time::{EventTime, ProcessingTime};
use crate::{Error, Result};

/// The rule pack compiled into the binary, used when no rules directory is given.
pub const BUILTIN_PACK: &str = include_str!("../packs/default.yaml");

/// The name the built-in pack's errors and examples are reported under.
pub const BUILTIN_NAME: &str = "builtin:default.yaml";

/// At most this many rules per pack: rule matches travel as 64-bit sets.
pub const MAX_RULES: usize = 63;

/// A file of rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    version: u32,
    /// Free-form values for YAML anchors (`&symptom`) that rules reuse with
    /// aliases (`*symptom`); not read otherwise.
    #[serde(default)]
    #[allow(dead_code)]
    definitions: Option<serde_yaml::Value>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
    /// Runbooks rules of the pack may name (`runbook:`).
    #[serde(default)]
    runbooks: Vec<RunbookSpec>,
}

/// One causal link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Stable id, lowercase: recorded on every incident and edge it makes.
    pub id: String,
    /// Bumped when the rule's meaning changes.
    #[serde(default = "one")]
    pub version: u32,
    /// What the link means, for people.
    #[serde(default)]
    pub description: String,
    /// Incident title; `{entity}`, `{scope}`, `{cause}`, `{alerts}`, `{count}` and
    /// `{rule}` are filled from the incident.
    pub title: String,
    /// The least severity of incidents this rule opens or joins.
    #[serde(default)]
    pub severity: Severity,
    /// Higher wins when several causes could be an incident's root.
    #[serde(default)]
    pub priority: i32,
    pub cause: Selector,
    /// What the cause leads to; absent for `not_followed_by` rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<Selector>,
    /// How a cause and an effect (or its follow-up) are joined.
    #[serde(default)]
    pub join: Join,
    /// Longest lag from cause to effect (or the deadline of an absence).
    #[serde(with = "humantime_serde")]
    pub within: Duration,
    /// Absence: the cause not followed, on the same join key within `within`, by an
    /// event matching this opens an incident (or escalates the cause's incident).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_followed_by: Option<Absence>,
    /// Link only once this many effects of one cause fall within a window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Threshold>,
    /// An incident this rule opened resolves after this long without new events
    /// (the engine's `resolve_after` when unset).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub resolve_after: Option<Duration>,
    /// The runbook incidents of this rule may trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    /// Link effects only into an incident their cause is already part of, never
    /// open one: for context such as cost rows, which belong to an incident when
    /// there is one and are no finding on their own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attach_only: bool,
    /// Worked examples, run by `causeway rules test`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<Example>,
}

fn one() -> u32 {
    1
}

/// A predicate over event columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// SQL boolean expression, e.g. `kind = 'deploy' AND status = 'success'`.
    #[serde(rename = "where")]
    pub predicate: String,
    /// Only effects whose value rose over the baseline of their series count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rises: Option<Rise>,
}

/// "This value rose by at least `percent` over its recent baseline": for cost rows,
/// error counts and other numbers that only mean something against their past.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rise {
    /// SQL numeric expression, e.g. `TRY_CAST(attributes['effective_cost'] AS DOUBLE)`.
    pub value: String,
    /// SQL text expression naming the series a value belongs to (e.g. the cost row's
    /// resource); values are compared with earlier values of the same series on the
    /// same join key. One series per join key when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<String>,
    /// Least rise over the baseline, in percent.
    pub percent: f64,
    /// How many earlier values make a baseline (their mean).
    #[serde(default = "three")]
    pub baseline: u32,
}

fn three() -> u32 {
    3
}

/// The expected follow-up of an absence rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Absence {
    /// SQL boolean expression of the follow-up (a rollback, a retry, a recovery).
    #[serde(rename = "where")]
    pub predicate: String,
    /// Only when the cause is already part of an open incident at the deadline
    /// (a deploy that caused errors and was not rolled back), not for every cause.
    #[serde(default)]
    pub require_incident: bool,
}

/// A count of effects within a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub count: u32,
    #[serde(with = "humantime_serde")]
    pub within: Duration,
}

/// What a cause and an effect must share to be linked. Always within one scope
/// (cluster or account).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "JoinRepr", into = "JoinRepr")]
pub enum Join {
    /// The same entity.
    #[default]
    Entity,
    /// The same catalog service (an entity the catalog maps, else the entity).
    Service,
    /// The effect's service depends on the cause's entity, per the catalog's
    /// `depends_on` (directly or through other services).
    DependsOn,
    /// The same value of a SQL text expression on each side (a shared cloud
    /// resource or tag); events where it is NULL or empty do not join.
    Expr { cause: String, effect: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum JoinRepr {
    Named(String),
    Expr(JoinExpr),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinExpr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    effect: Option<String>,
}

impl TryFrom<JoinRepr> for Join {
    type Error = String;

    fn try_from(r: JoinRepr) -> std::result::Result<Join, String> {
        match r {
            JoinRepr::Named(n) => match n.as_str() {
                "entity" => Ok(Join::Entity),
                "service" => Ok(Join::Service),
                "depends_on" => Ok(Join::DependsOn),
                other => Err(format!(
                    "unknown join {other:?} (expected entity, service, depends_on, \
                     {{on: EXPR}} or {{cause: EXPR, effect: EXPR}})"
                )),
            },
            JoinRepr::Expr(e) => match (e.on, e.cause, e.effect) {
                (Some(on), None, None) => Ok(Join::Expr {
                    cause: on.clone(),
                    effect: on,
                }),
                (None, Some(cause), Some(effect)) => Ok(Join::Expr { cause, effect }),
                _ => Err("a join expression is {on: EXPR} or {cause: EXPR, effect: EXPR}".into()),
            },
        }
    }
}

impl From<Join> for JoinRepr {
    fn from(j: Join) -> JoinRepr {
        match j {
            Join::Entity => JoinRepr::Named("entity".into()),
            Join::Service => JoinRepr::Named("service".into()),
            Join::DependsOn => JoinRepr::Named("depends_on".into()),
            Join::Expr { cause, effect } => JoinRepr::Expr(JoinExpr {
                on: None,
                cause: Some(cause),
                effect: Some(effect),
            }),
        }
    }
}

/// A worked example: events in, incidents expected out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    pub name: String,
    /// A catalog for this example (for `depends_on` and `service` joins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<Catalog>,
    pub events: Vec<ExampleEvent>,
    /// Every incident the events give, with the whole pack loaded; none when empty.
    #[serde(default)]
    pub expect: Vec<ExpectedIncident>,
}

/// An event of an example, at an offset from the example's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleEvent {
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    pub source: String,
    pub kind: EventKind,
    pub entity: String,
    #[serde(default = "default_scope")]
    pub scope: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub severity: Severity,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The source's own id; by default one per event. Give an alert's resolution
    /// the id of its firing to resolve it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_event_id: Option<String>,
}

fn default_scope() -> String {
    "default".into()
}

/// An incident an example expects, by event positions (0-based).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedIncident {
    pub rule: String,
    /// The root cause's position; none for alert groups.
    #[serde(default)]
    pub root: Option<usize>,
    /// Every member's position.
    pub events: BTreeSet<usize>,
    /// `open`, `updated` or `resolved`, when it matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// Examples start here: 2024-01-01T00:00:00Z.
const EXAMPLE_EPOCH_MICROS: i64 = 1_704_067_200_000_000;

impl Example {
    /// The example's events as normalized events, in the order given.
    pub fn to_events(&self) -> Vec<Event> {
        self.events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let time = EventTime::from_micros(EXAMPLE_EPOCH_MICROS).plus(e.at);
                let source_event_id = e
                    .source_event_id
                    .clone()
                    .unwrap_or_else(|| format!("{}#{i}", self.name));
                Event {
                    id: Event::derive_id(&e.source, &source_event_id, &e.status),
                    source: e.source.clone(),
                    source_event_id,
                    kind: e.kind,
                    time,
                    ingested_at: ProcessingTime::from_micros(time.as_micros()),
                    scope: e.scope.clone(),
                    entity: e.entity.clone(),
                    severity: e.severity,
                    status: e.status.clone(),
                    summary: if e.summary.is_empty() {
                        format!("{} {} {}", e.kind, e.entity, e.status)
                    } else {
                        e.summary.clone()
                    },
                    attributes: e.attributes.clone(),
                    raw: "{}".into(),
                }
            })
            .collect()
    }
}

impl RuleSpec {
    /// Whether this is an absence rule.
    pub fn is_absence(&self) -> bool {
        self.not_followed_by.is_some()
    }
}

/// A validated set of rules, in a stable order, with the file each came from,
/// and the runbooks the files declare.
///
/// Runbooks do not change what correlation state a pack is compatible with: a
/// correlation checkpoint records rule ids and versions only.
#[derive(Debug, Clone, PartialEq)]
pub struct RulePack {
    rules: Vec<RuleSpec>,
    files: Vec<String>,
    runbooks: Vec<RunbookSpec>,
    runbook_files: Vec<String>,
}

impl RulePack {
    /// The built-in pack.
    pub fn builtin() -> Result<RulePack> {
        RulePack::from_files(&[(BUILTIN_NAME, BUILTIN_PACK)])
    }

    /// Parses and validates rule files given as `(name, text)` pairs.
    ///
    /// Runbooks are checked on their own and across the pack (unique names,
    /// `compensate` references). When the pack declares any runbook, every rule's
    /// `runbook:` must name one of them; a pack that declares none keeps rule
    /// `runbook:` names as they are (see [`RulePack::unresolved_runbooks`]).
    pub fn from_files(files: &[(&str, &str)]) -> Result<RulePack> {
        let mut rules = Vec::new();
        let mut origin = Vec::new();
        let mut ids = BTreeSet::new();
        let mut runbooks = Vec::new();
        let mut runbook_files = Vec::new();
        let mut runbook_index = Vec::new();
        for (name, text) in files {
            let file: RuleFile = serde_yaml::from_str(text).map_err(|e| Error::InvalidRule {
                file: (*name).to_owned(),
                field: e
                    .location()
                    .map(|l| format!("line {} column {}", l.line(), l.column()))
                    .unwrap_or_else(|| "document".into()),
                reason: e.to_string(),
            })?;
            if file.version != 1 {
                return Err(Error::InvalidRule {
                    file: (*name).to_owned(),
                    field: "version".into(),
                    reason: format!("unsupported version {} (expected 1)", file.version),
                });
            }
            for (i, rule) in file.rules.into_iter().enumerate() {
                validate(name, i, &rule)?;
                if !ids.insert(rule.id.clone()) {
                    return Err(Error::InvalidRule {
                        file: (*name).to_owned(),
                        field: format!("rules[{i}].id"),
                        reason: format!("duplicate rule id {:?}", rule.id),
                    });
                }
                rules.push(rule);
                origin.push((*name).to_owned());
            }
            for (i, rb) in file.runbooks.into_iter().enumerate() {
                runbook::validate(name, i, &rb)?;
                runbooks.push(rb);
                runbook_files.push((*name).to_owned());
                runbook_index.push(i);
            }
        }
        let declared: Vec<runbook::Declared<'_>> = runbooks
            .iter()
            .zip(&runbook_files)
            .zip(&runbook_index)
            .map(|((spec, file), index)| runbook::Declared {
                file,
                index: *index,
                spec,
            })
            .collect();
        runbook::validate_pack(&declared)?;
        if rules.len() > MAX_RULES {
            return Err(Error::InvalidRule {
                file: files.first().map(|f| f.0).unwrap_or("").to_owned(),
                field: "rules".into(),
                reason: format!("{} rules, at most {MAX_RULES} are supported", rules.len()),
            });
        }
        let pack = RulePack {
            rules,
            files: origin,
            runbooks,
            runbook_files,
        };
        if !pack.runbooks.is_empty() {
            pack.check_runbook_references()?;
        }
        Ok(pack)
    }

    /// The rules, in load order (their index is their bit in [`crate::Matches`]).
    pub fn rules(&self) -> &[RuleSpec] {
        &self.rules
    }

    /// The file rule `i` came from.
    pub fn file_of(&self, i: usize) -> &str {
        self.files.get(i).map(String::as_str).unwrap_or("")
    }

    /// The runbooks, in load order.
    pub fn runbooks(&self) -> &[RunbookSpec] {
        &self.runbooks
    }

    /// The runbook with this name.
    pub fn runbook(&self, name: &str) -> Option<&RunbookSpec> {
        self.runbooks.iter().find(|r| r.name == name)
    }

    /// The runbook the rule with this id names, when it is declared.
    pub fn runbook_of_rule(&self, rule_id: &str) -> Option<&RunbookSpec> {
        let rule = self.rules.iter().find(|r| r.id == rule_id)?;
        self.runbook(rule.runbook.as_deref()?)
    }

    /// The file runbook `i` came from.
    pub fn runbook_file_of(&self, i: usize) -> &str {
        self.runbook_files.get(i).map(String::as_str).unwrap_or("")
    }

    /// `(rule id, runbook)` for every rule naming a runbook the pack does not
    /// declare. Empty for a pack that declares runbooks (loading refuses those);
    /// a pack that declares none may name runbooks that nothing runs.
    pub fn unresolved_runbooks(&self) -> Vec<(&str, &str)> {
        self.rules
            .iter()
            .filter_map(|r| {
                let name = r.runbook.as_deref()?;
                self.runbook(name)
                    .is_none()
                    .then_some((r.id.as_str(), name))
            })
            .collect()
    }

    /// Fails on the first rule whose `runbook:` names no declared runbook. Run
    /// at load for every pack that declares runbooks.
    pub fn check_runbook_references(&self) -> Result<()> {
        for (i, rule) in self.rules.iter().enumerate() {
            let Some(name) = rule.runbook.as_deref() else {
                continue;
            };
            if self.runbook(name).is_none() {
                let position = self.rules[..i]
                    .iter()
                    .zip(&self.files)
                    .filter(|(_, f)| *f == self.file_of(i))
                    .count();
                let declared: Vec<&str> = self.runbooks.iter().map(|r| r.name.as_str()).collect();
                return Err(Error::InvalidRule {
                    file: self.file_of(i).to_owned(),
                    field: format!("rules[{position}].runbook"),
                    reason: format!(
                        "rule {:?} names runbook {name:?}, which the pack does not declare \
                         (declared: {})",
                        rule.id,
                        if declared.is_empty() {
                            "none".to_owned()
                        } else {
                            declared.join(", ")
                        }
                    ),
                });
            }
        }
        Ok(())
    }
}

fn validate(file: &str, i: usize, rule: &RuleSpec) -> Result<()> {
    let err = |field: &str, reason: String| Error::InvalidRule {
        file: file.to_owned(),
        field: format!("rules[{i}].{field}"),
        reason,
    };
    // A literal pattern: compiling it cannot fail.
    let id_re = Regex::new(r"^[a-z0-9][a-z0-9_.-]{0,62}$").map_err(|e| err("id", e.to_string()))?;
    if !id_re.is_match(&rule.id) {
        return Err(err(
            "id",
            format!(
                "{:?} must be lowercase letters, digits, '.', '_' or '-'",
                rule.id
            ),
        ));
    }
    if rule.id == crate::correlate::ALERT_GROUP_RULE {
        return Err(err("id", format!("{:?} is reserved", rule.id)));
    }
    if rule.within.is_zero() {
        return Err(err("within", "must be longer than zero".into()));
    }
    if rule.title.trim().is_empty() {
        return Err(err("title", "must not be empty".into()));
    }
    if rule.cause.predicate.trim().is_empty() {
        return Err(err("cause.where", "must not be empty".into()));
    }
    if rule.cause.rises.is_some() {
        return Err(err(
            "cause.rises",
            "only an effect can be required to rise".into(),
        ));
    }
    match (&rule.effect, &rule.not_followed_by) {
        (None, None) => {
            return Err(err(
                "effect",
                "a rule needs an effect, or not_followed_by for an absence".into(),
            ));
        }
        (Some(_), Some(_)) => {
            return Err(err(
                "not_followed_by",
                "an absence rule has no effect: give one or the other".into(),
            ));
        }
        (Some(effect), None) => {
            if effect.predicate.trim().is_empty() {
                return Err(err("effect.where", "must not be empty".into()));
            }
            if let Some(r) = &effect.rises {
                if r.value.trim().is_empty() {
                    return Err(err("effect.rises.value", "must not be empty".into()));
                }
                if !(r.percent.is_finite() && r.percent > 0.0) {
                    return Err(err(
                        "effect.rises.percent",
                        "must be a positive number".into(),
                    ));
                }
                if r.baseline == 0 || r.baseline > 64 {
                    return Err(err(
                        "effect.rises.baseline",
                        "must be between 1 and 64 values".into(),
                    ));
                }
            }
        }
        (None, Some(a)) => {
            if a.predicate.trim().is_empty() {
                return Err(err("not_followed_by.where", "must not be empty".into()));
            }
            if rule.threshold.is_some() {
                return Err(err("threshold", "an absence rule counts no effects".into()));
            }
        }
    }
    if let Some(t) = &rule.threshold {
        if t.count < 2 {
            return Err(err(
                "threshold.count",
                "must be at least 2 (one effect needs no threshold)".into(),
            ));
        }
        if t.within.is_zero() {
            return Err(err("threshold.within", "must be longer than zero".into()));
        }
    }
    if let Join::Expr { cause, effect } = &rule.join
        && (cause.trim().is_empty() || effect.trim().is_empty())
    {
        return Err(err("join", "join expressions must not be empty".into()));
    }
    if rule.resolve_after.is_some_and(|d| d.is_zero()) {
        return Err(err("resolve_after", "must be longer than zero".into()));
    }
    if let Some(r) = &rule.runbook
        && r.trim().is_empty()
    {
        return Err(err("runbook", "must not be empty when given".into()));
    }
    let mut names = BTreeSet::new();
    for (j, ex) in rule.examples.iter().enumerate() {
        let field = |f: &str| format!("examples[{j}].{f}");
        if ex.name.trim().is_empty() {
            return Err(err(&field("name"), "must not be empty".into()));
        }
        if !names.insert(ex.name.as_str()) {
            return Err(err(
                &field("name"),
                format!("duplicate example name {:?}", ex.name),
            ));
        }
        if ex.events.is_empty() {
            return Err(err(&field("events"), "must not be empty".into()));
        }
        for (k, exp) in ex.expect.iter().enumerate() {
            let n = ex.events.len();
            if let Some(r) = exp.root
                && r >= n
            {
                return Err(err(
                    &field(&format!("expect[{k}].root")),
                    format!("event {r} does not exist ({n} events)"),
                ));
            }
            if let Some(bad) = exp.events.iter().find(|e| **e >= n) {
                return Err(err(
                    &field(&format!("expect[{k}].events")),
                    format!("event {bad} does not exist ({n} events)"),
                ));
            }
            if let Some(s) = &exp.state
                && !matches!(s.as_str(), "open" | "updated" | "resolved")
            {
                return Err(err(
                    &field(&format!("expect[{k}].state")),
                    format!("{s:?} is not open, updated or resolved"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_pack_is_valid() {
        let pack = RulePack::builtin().expect("builtin pack");
        assert!(pack.rules().iter().any(|r| r.id == "deploy-regression"));
        assert!(pack.rules().iter().all(|r| !r.examples.is_empty()));
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let text = "version: 1\nrules:\n  - id: Bad Id\n    title: t\n    cause: {where: \"true\"}\n    effect: {where: \"true\"}\n    within: 5m\n";
        let err = RulePack::from_files(&[("rules/a.yaml", text)]).expect_err("bad id");
        assert!(
            err.to_string().starts_with("rules/a.yaml: rules[0].id:"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_and_durations_are_reported() {
        let text = "version: 1\nrules:\n  - id: a\n    title: t\n    cause: {where: \"true\"}\n    effect: {where: \"true\"}\n    within: soon\n";
        let err = RulePack::from_files(&[("a.yaml", text)]).expect_err("bad duration");
        assert!(err.to_string().contains("a.yaml"), "{err}");
        let text = "version: 2\nrules: []\n";
        let err = RulePack::from_files(&[("b.yaml", text)]).expect_err("bad version");
        assert!(err.to_string().contains("b.yaml: version"), "{err}");
    }

    #[test]
    fn joins_parse_by_name_or_expression() {
        let base = "version: 1\nrules:\n  - id: a\n    title: t\n    cause: {where: \"true\"}\n    effect: {where: \"true\"}\n    within: 5m\n";
        for (join, want) in [
            ("entity", Join::Entity),
            ("depends_on", Join::DependsOn),
            (
                "{on: \"attributes['resource']\"}",
                Join::Expr {
                    cause: "attributes['resource']".into(),
                    effect: "attributes['resource']".into(),
                },
            ),
        ] {
            let text = format!("{base}    join: {join}\n");
            let pack = RulePack::from_files(&[("j.yaml", &text)]).expect(&text);
            assert_eq!(pack.rules()[0].join, want);
        }
        let text = format!("{base}    join: nearby\n");
        let err = RulePack::from_files(&[("j.yaml", &text)]).expect_err("unknown join");
        assert!(err.to_string().contains("j.yaml"), "{err}");
    }

    #[test]
    fn absence_and_effect_exclude_each_other() {
        let text = "version: 1\nrules:\n  - id: a\n    title: t\n    cause: {where: \"true\"}\n    within: 5m\n";
        let err = RulePack::from_files(&[("x.yaml", text)]).expect_err("neither");
        assert!(err.to_string().contains("rules[0].effect"), "{err}");
        let text = "version: 1\nrules:\n  - id: a\n    title: t\n    cause: {where: \"true\"}\n    effect: {where: \"true\"}\n    not_followed_by: {where: \"true\"}\n    within: 5m\n";
        let err = RulePack::from_files(&[("x.yaml", text)]).expect_err("both");
        assert!(err.to_string().contains("not_followed_by"), "{err}");
    }

    #[test]
    fn example_positions_must_exist() {
        let text = "version: 1\nrules:\n  - id: a\n    title: t\n    cause: {where: \"true\"}\n    effect: {where: \"true\"}\n    within: 5m\n    examples:\n      - name: e\n        events:\n          - {at: 0s, source: s, kind: deploy, entity: x}\n        expect:\n          - {rule: a, root: 3, events: [0]}\n";
        let err = RulePack::from_files(&[("x.yaml", text)]).expect_err("bad position");
        assert!(
            err.to_string()
                .contains("rules[0].examples[0].expect[0].root"),
            "{err}"
        );
    }
}
