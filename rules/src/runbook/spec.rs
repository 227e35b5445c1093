//! Runbook declarations (`runbooks:` in rule files) and their validation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::template::Template;
use crate::{Error, Result};

/// What a runbook does to production, which decides its default posture.
///
/// | class | reversible at machine speed | default posture |
/// |---|---|---|
/// | restart, reschedule | yes | automatic, within budget |
/// | rollback | if artifacts and schema allow | automatic behind health gates |
/// | traffic_shift | yes, rate-limited | automatic with gradual ramps |
/// | scale_down, reclaim | partially | needs approval |
/// | delete_data, rotate_credentials, revoke_identity | no | needs approval, named owner |
/// | failover | no | needs approval |
/// | isolate | no | needs approval |
/// | notify, open_ticket, open_pull_request | yes | automatic |
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionClass {
    Restart,
    Reschedule,
    Rollback,
    TrafficShift,
    ScaleDown,
    Reclaim,
    DeleteData,
    RotateCredentials,
    RevokeIdentity,
    Failover,
    Isolate,
    Notify,
    OpenTicket,
    OpenPullRequest,
}

impl ActionClass {
    /// All classes, in a stable order.
    pub const ALL: [ActionClass; 14] = [
        ActionClass::Restart,
        ActionClass::Reschedule,
        ActionClass::Rollback,
        ActionClass::TrafficShift,
        ActionClass::ScaleDown,
        ActionClass::Reclaim,
        ActionClass::DeleteData,
        ActionClass::RotateCredentials,
        ActionClass::RevokeIdentity,
        ActionClass::Failover,
        ActionClass::Isolate,
        ActionClass::Notify,
        ActionClass::OpenTicket,
        ActionClass::OpenPullRequest,
    ];

    /// The YAML and column value (`action_class` in the `actions` table).
    pub fn as_str(self) -> &'static str {
        match self {
            ActionClass::Restart => "restart",
            ActionClass::Reschedule => "reschedule",
            ActionClass::Rollback => "rollback",
            ActionClass::TrafficShift => "traffic_shift",
            ActionClass::ScaleDown => "scale_down",
            ActionClass::Reclaim => "reclaim",
            ActionClass::DeleteData => "delete_data",
            ActionClass::RotateCredentials => "rotate_credentials",
            ActionClass::RevokeIdentity => "revoke_identity",
            ActionClass::Failover => "failover",
            ActionClass::Isolate => "isolate",
            ActionClass::Notify => "notify",
            ActionClass::OpenTicket => "open_ticket",
            ActionClass::OpenPullRequest => "open_pull_request",
        }
    }

    /// The class a value names.
    pub fn parse(s: &str) -> Option<ActionClass> {
        ActionClass::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether the action can be undone at machine speed. Scale-down and reclaim
    /// are only partially reversible (capacity comes back, warm state does not),
    /// so they count as not reversible; a rollback counts as reversible (rolling
    /// forward again is another deploy).
    pub fn reversible(self) -> bool {
        matches!(
            self,
            ActionClass::Restart
                | ActionClass::Reschedule
                | ActionClass::Rollback
                | ActionClass::TrafficShift
                | ActionClass::Notify
                | ActionClass::OpenTicket
                | ActionClass::OpenPullRequest
        )
    }

    /// Whether every action of this class waits for a human; a runbook cannot
    /// turn this off.
    pub fn needs_approval(self) -> bool {
        matches!(
            self,
            ActionClass::ScaleDown
                | ActionClass::Reclaim
                | ActionClass::DeleteData
                | ActionClass::RotateCredentials
                | ActionClass::RevokeIdentity
                | ActionClass::Failover
                | ActionClass::Isolate
        )
    }

    /// Whether a runbook of this class must name an `owner` (irreversible actions
    /// on data and identity).
    pub fn needs_owner(self) -> bool {
        matches!(
            self,
            ActionClass::DeleteData | ActionClass::RotateCredentials | ActionClass::RevokeIdentity
        )
    }
}

impl fmt::Display for ActionClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a runbook calls its target or only records what it would have done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every decision is made and recorded, nothing is called. The default for
    /// every new runbook.
    #[default]
    DryRun,
    /// Triggered and approved actions are handed to the caller to deliver.
    Live,
}

impl Mode {
    /// The YAML value.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::DryRun => "dry_run",
            Mode::Live => "live",
        }
    }
}

/// The default Kafka topic of runbook triggers.
pub const DEFAULT_ACTIONS_TOPIC: &str = "causeway.actions";

/// Where a triggered action is delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TargetRepr", into = "TargetRepr")]
pub enum Target {
    /// An HTTP POST of the decision, with an `Idempotency-Key` header and, when
    /// `secret_env` is set, a signature keyed by that environment variable's value
    /// (read by the caller: this crate reads no environment).
    Webhook {
        url: String,
        secret_env: Option<String>,
    },
    /// A message on a Kafka topic, keyed by action id.
    Kafka { topic: String },
}

impl Target {
    /// `webhook:<url>` or `kafka:<topic>`: the `target` column.
    pub fn describe(&self) -> String {
        match self {
            Target::Webhook { url, .. } => format!("webhook:{url}"),
            Target::Kafka { topic } => format!("kafka:{topic}"),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// `target: {webhook: {...}}` or `target: {kafka: {...}}`: exactly one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetRepr {
    #[serde(default)]
    webhook: Option<WebhookRepr>,
    #[serde(default)]
    kafka: Option<KafkaRepr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookRepr {
    url: String,
    #[serde(default)]
    secret_env: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaRepr {
    #[serde(default = "default_topic")]
    topic: String,
}

fn default_topic() -> String {
    DEFAULT_ACTIONS_TOPIC.to_owned()
}

impl TryFrom<TargetRepr> for Target {
    type Error = String;

    fn try_from(r: TargetRepr) -> std::result::Result<Target, String> {
        match (r.webhook, r.kafka) {
            (Some(w), None) => Ok(Target::Webhook {
                url: w.url,
                secret_env: w.secret_env,
            }),
            (None, Some(k)) => Ok(Target::Kafka { topic: k.topic }),
            _ => Err(
                "a target is exactly one of {webhook: {url: URL, secret_env: VAR}} \
                 or {kafka: {topic: TOPIC}}"
                    .into(),
            ),
        }
    }
}

impl From<Target> for TargetRepr {
    fn from(t: Target) -> TargetRepr {
        match t {
            Target::Webhook { url, secret_env } => TargetRepr {
                webhook: Some(WebhookRepr { url, secret_env }),
                kafka: None,
            },
            Target::Kafka { topic } => TargetRepr {
                webhook: None,
                kafka: Some(KafkaRepr { topic }),
            },
        }
    }
}

/// What one budget counts actions per.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    /// All actions of the runbook.
    #[default]
    Runbook,
    /// Actions per service (the `service` variable, else the incident's entity).
    Service,
    /// Actions per incident entity (within its scope).
    Entity,
}

impl BudgetScope {
    /// The YAML value.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetScope::Runbook => "runbook",
            BudgetScope::Service => "service",
            BudgetScope::Entity => "entity",
        }
    }
}

/// At most `max_actions` actions per `per` (sliding window) for each `scope` key.
/// Triggered, dry-run and awaiting-approval decisions all count, so a storm is
/// caught in dry run too. Exceeding it halts the runbook until resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    pub max_actions: u32,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    pub scope: BudgetScope,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_actions: 5,
            per: Duration::from_secs(3600),
            scope: BudgetScope::Runbook,
        }
    }
}

/// Whether actions wait for a human, and for how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Approval {
    /// Defaults to the class's [`ActionClass::needs_approval`]; cannot be `false`
    /// for a class that needs approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// An action not approved within this is `expired` (fails closed).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for Approval {
    fn default() -> Self {
        Approval {
            required: None,
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// After an action, the incident must resolve within `within`, or the action is
/// `validation_failed` and the runbook's `compensate` runbook runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    #[serde(with = "humantime_serde")]
    pub within: Duration,
}

/// One runbook, as declared under `runbooks:` in a rule file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunbookSpec {
    /// Unique in the pack; rules name it in `runbook:`.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub class: ActionClass,
    #[serde(default)]
    pub mode: Mode,
    pub target: Target,
    /// Parameters sent with the action: templates over the incident context
    /// (`{service}`, `{previous_revision}`, `{label.team}`, `{{` for a brace).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub budget: Budget,
    #[serde(default)]
    pub approval: Approval,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
    /// Another runbook run when validation fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<String>,
    /// Who answers for this runbook; required for delete_data,
    /// rotate_credentials and revoke_identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl RunbookSpec {
    /// Whether its actions wait for approval: always for a class that needs it.
    pub fn approval_required(&self) -> bool {
        self.class.needs_approval() || self.approval.required.unwrap_or(false)
    }
}

/// Variables a parameter template may name, besides `label.<key>`.
pub const TEMPLATE_VARIABLES: &[&str] = &[
    "incident_id",
    "incident_version",
    "rule_id",
    "title",
    "severity",
    "scope",
    "entity",
    "service",
    "namespace",
    "revision",
    "previous_revision",
    "root_cause_event_id",
    "root_cause_summary",
    "actor",
    "evidence_url",
    "runbook",
    "action_id",
    "team",
    "oncall",
    "previous_image",
    "image",
];

/// Whether a template may name this variable.
pub fn is_known_variable(name: &str) -> bool {
    TEMPLATE_VARIABLES.contains(&name)
        || name
            .strip_prefix("label.")
            .is_some_and(|key| !key.is_empty())
}

/// Lowercase letters, digits, '.', '_' or '-', starting with a letter or digit,
/// at most 63 characters: the same shape as rule ids.
pub(crate) fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= 63
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Checks one runbook on its own: `i` is its position in the file's `runbooks`.
pub(crate) fn validate(file: &str, i: usize, rb: &RunbookSpec) -> Result<()> {
    let err = |field: &str, reason: String| Error::InvalidRule {
        file: file.to_owned(),
        field: format!("runbooks[{i}].{field}"),
        reason: format!("runbook {:?}: {reason}", rb.name),
    };
    if !is_valid_name(&rb.name) {
        return Err(err(
            "name",
            "must be 1 to 63 lowercase letters, digits, '.', '_' or '-'".into(),
        ));
    }
    match &rb.target {
        Target::Webhook { url, secret_env } => {
            if url.trim().is_empty() {
                return Err(err("target.webhook.url", "must not be empty".into()));
            }
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            match rest {
                None => {
                    return Err(err(
                        "target.webhook.url",
                        format!("{url:?} must start with http:// or https://"),
                    ));
                }
                Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                    return Err(err("target.webhook.url", format!("{url:?} has no host")));
                }
                Some(_) if url.chars().any(char::is_whitespace) => {
                    return Err(err(
                        "target.webhook.url",
                        format!("{url:?} must not contain whitespace"),
                    ));
                }
                Some(_) => {}
            }
            if let Some(var) = secret_env
                && !is_env_name(var)
            {
                return Err(err(
                    "target.webhook.secret_env",
                    format!("{var:?} is not an environment variable name"),
                ));
            }
        }
        Target::Kafka { topic } => {
            if !is_topic_name(topic) {
                return Err(err(
                    "target.kafka.topic",
                    format!(
                        "{topic:?} is not a Kafka topic name \
                         (letters, digits, '.', '_' or '-', at most 249)"
                    ),
                ));
            }
        }
    }
    for (key, text) in &rb.params {
        if key.trim().is_empty() {
            return Err(err("params", "parameter names must not be empty".into()));
        }
        let field = format!("params.{key}");
        let template = Template::parse(text).map_err(|reason| err(&field, reason))?;
        if let Some(unknown) = template.variables().find(|v| !is_known_variable(v)) {
            return Err(err(
                &field,
                format!(
                    "unknown variable {{{unknown}}} (known: {}, label.<key>)",
                    TEMPLATE_VARIABLES.join(", ")
                ),
            ));
        }
    }
    if rb.budget.max_actions == 0 {
        return Err(err("budget.max_actions", "must be at least 1".into()));
    }
    if rb.budget.per.is_zero() {
        return Err(err("budget.per", "must be longer than zero".into()));
    }
    if rb.approval.required == Some(false) && rb.class.needs_approval() {
        return Err(err(
            "approval.required",
            format!(
                "class {} always needs approval; it cannot be turned off",
                rb.class
            ),
        ));
    }
    if rb.approval.timeout.is_zero() {
        return Err(err("approval.timeout", "must be longer than zero".into()));
    }
    if let Some(v) = &rb.validation
        && v.within.is_zero()
    {
        return Err(err("validation.within", "must be longer than zero".into()));
    }
    if let Some(c) = &rb.compensate
        && c == &rb.name
    {
        return Err(err(
            "compensate",
            "a runbook cannot compensate for itself".into(),
        ));
    }
    if rb.class.needs_owner() && rb.owner.as_deref().is_none_or(|o| o.trim().is_empty()) {
        return Err(err(
            "owner",
            format!("class {} needs a named owner", rb.class),
        ));
    }
    Ok(())
}

/// A runbook with where it was declared, for pack-wide checks.
pub(crate) struct Declared<'a> {
    pub(crate) file: &'a str,
    pub(crate) index: usize,
    pub(crate) spec: &'a RunbookSpec,
}

/// Checks what spans the pack: unique names and `compensate` references (which
/// must exist and must not form a cycle).
pub(crate) fn validate_pack(runbooks: &[Declared<'_>]) -> Result<()> {
    let mut names = BTreeMap::new();
    for d in runbooks {
        if let Some(first) = names.insert(d.spec.name.as_str(), d) {
            return Err(Error::InvalidRule {
                file: d.file.to_owned(),
                field: format!("runbooks[{}].name", d.index),
                reason: format!(
                    "duplicate runbook name {:?} (first declared in {} at runbooks[{}])",
                    d.spec.name, first.file, first.index
                ),
            });
        }
    }
    for d in runbooks {
        let Some(target) = &d.spec.compensate else {
            continue;
        };
        let err = |reason: String| Error::InvalidRule {
            file: d.file.to_owned(),
            field: format!("runbooks[{}].compensate", d.index),
            reason: format!("runbook {:?}: {reason}", d.spec.name),
        };
        if !names.contains_key(target.as_str()) {
            return Err(err(format!("no runbook named {target:?} in the pack")));
        }
        // Follow the chain: it must end, or a failing compensation would run
        // the runbook it compensates again.
        let mut seen = BTreeSet::from([d.spec.name.as_str()]);
        let mut path = vec![d.spec.name.as_str()];
        let mut next = Some(target.as_str());
        while let Some(name) = next {
            path.push(name);
            if !seen.insert(name) {
                return Err(err(format!("compensation cycle: {}", path.join(" -> "))));
            }
            next = names.get(name).and_then(|n| n.spec.compensate.as_deref());
        }
    }
    Ok(())
}
