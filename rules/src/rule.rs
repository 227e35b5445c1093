//! Rule files: causal links between events, as versioned YAML.
//!
//! A rule says "an event matching `cause` followed, on the same entity, within
//! `within`, by an event matching `effect` is one problem". Predicates are SQL
//! boolean expressions over event columns; they are kept here as text and compiled
//! by the engine into vectorized expressions. Everything a file can get wrong is
//! reported at load with the file and the field.

use std::collections::BTreeSet;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::event::Severity;
use crate::{Error, Result};

/// The rule pack compiled into the binary, used when no rules directory is given.
pub const BUILTIN_PACK: &str = include_str!("../packs/default.yaml");

/// At most this many rules per pack: rule matches travel as a 64-bit set.
pub const MAX_RULES: usize = 64;

/// A file of rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    version: u32,
    #[serde(default)]
    rules: Vec<RuleSpec>,
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
    /// Incident title; `{entity}`, `{scope}`, `{cause}`, `{alerts}` and `{count}` are
    /// filled from the incident.
    pub title: String,
    /// The least severity of incidents this rule opens.
    #[serde(default)]
    pub severity: Severity,
    /// Higher wins when several rules could link the same effect.
    #[serde(default)]
    pub priority: i32,
    pub cause: Selector,
    pub effect: Selector,
    /// How events are joined.
    #[serde(default)]
    pub join: Join,
    /// Longest lag from cause to effect.
    #[serde(with = "humantime_serde")]
    pub within: Duration,
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
}

/// What a cause and an effect must share to be linked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Join {
    /// Same scope (cluster or account) and same entity.
    #[default]
    Entity,
}

/// A validated set of rules, in a stable order.
#[derive(Debug, Clone, PartialEq)]
pub struct RulePack {
    rules: Vec<RuleSpec>,
}

impl RulePack {
    /// The built-in pack.
    pub fn builtin() -> Result<RulePack> {
        RulePack::from_files(&[("builtin:default.yaml", BUILTIN_PACK)])
    }

    /// Parses and validates rule files given as `(name, text)` pairs.
    pub fn from_files(files: &[(&str, &str)]) -> Result<RulePack> {
        let mut rules = Vec::new();
        let mut ids = BTreeSet::new();
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
            }
        }
        if rules.len() > MAX_RULES {
            return Err(Error::InvalidRule {
                file: files.first().map(|f| f.0).unwrap_or("").to_owned(),
                field: "rules".into(),
                reason: format!("{} rules, at most {MAX_RULES} are supported", rules.len()),
            });
        }
        Ok(RulePack { rules })
    }

    /// The rules, in load order (their index is their bit in [`crate::Matches`]).
    pub fn rules(&self) -> &[RuleSpec] {
        &self.rules
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
    for (field, sel) in [("cause.where", &rule.cause), ("effect.where", &rule.effect)] {
        if sel.predicate.trim().is_empty() {
            return Err(err(field, "must not be empty".into()));
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
}
