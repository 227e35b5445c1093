use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::correlate::{IncidentState, IncidentVersion};
use crate::event::{Event, EventKind, Severity};
use crate::id::EventId;
use crate::rule::RulePack;
use crate::time::{EventTime, ProcessingTime};
use crate::{Error, id};

const BASE: i64 = 1_700_000_000_000_000;

fn now(secs: i64) -> ProcessingTime {
    ProcessingTime::from_micros(BASE + secs * 1_000_000)
}

fn et(secs: i64) -> EventTime {
    EventTime::from_micros(BASE + secs * 1_000_000)
}

const RULES: &str = r#"
version: 1
rules:
  - id: deploy-regression
    title: "Deploy regression on {entity}"
    cause: {where: "kind = 'deploy'"}
    effect: {where: "kind = 'alert'"}
    within: 30m
    runbook: rollback-deploy
  - id: exec-in-pod
    title: "Exec in {entity}"
    cause: {where: "kind = 'audit'"}
    effect: {where: "kind = 'alert'"}
    within: 5m
    runbook: isolate-pod
"#;

const RUNBOOKS: &str = r#"
version: 1
runbooks:
  - name: rollback-deploy
    description: Roll the service back to the revision before the root-cause deploy
    class: rollback
    mode: live
    target:
      webhook: {url: "https://deployer.example/rollback", secret_env: CAUSEWAY_RUNBOOK_SECRET}
    params:
      service: "{service}"
      namespace: "{namespace}"
      revision: "{previous_revision}"
      incident: "{incident_id}"
    budget: {max_actions: 3, per: 10m, scope: service}
    validation: {within: 15m}
    compensate: notify-owner
  - name: notify-owner
    class: notify
    mode: live
    target: {kafka: {}}
    params: {text: "rollback of {service} did not help: {title}"}
  - name: isolate-pod
    class: isolate
    mode: live
    target: {webhook: {url: "http://isolator.local/isolate"}}
    approval: {timeout: 30m}
    params: {pod: "{label.pod}"}
  - name: isolate-dry
    class: isolate
    target: {webhook: {url: "http://isolator.local/isolate"}}
  - name: restart-dry
    class: restart
    target: {kafka: {topic: ops.actions}}
    budget: {max_actions: 2, per: 1h}
    params: {workload: "{entity}"}
"#;

fn pack() -> RulePack {
    RulePack::from_files(&[("rules.yaml", RULES), ("runbooks.yaml", RUNBOOKS)]).expect("valid")
}

fn kernel() -> Kernel {
    Kernel::new(pack().runbooks())
}

fn incident(n: u32, version: u32, state: IncidentState) -> IncidentVersion {
    let opened = i64::from(n) * 60;
    IncidentVersion {
        incident_id: id::incident(&["deploy-regression", &n.to_string()]).into(),
        version,
        state,
        title: "Deploy regression on checkout".into(),
        severity: Severity::Critical,
        rule_id: "deploy-regression".into(),
        rule_version: 1,
        scope: "prod".into(),
        entity: "checkout".into(),
        root_cause_event_id: EventId::parse(&Event::derive_id("github", "sha1", "success")),
        opened_at: et(opened),
        updated_at: et(opened + i64::from(version) * 10),
        resolved_at: (state == IncidentState::Resolved).then(|| et(opened + 300)),
        event_count: 2,
        merged_into: None,
    }
}

fn ctx(n: u32, version: u32, state: IncidentState) -> ActionContext {
    ActionContext::new(incident(n, version, state), Some("rollback-deploy".into()))
        .with_var("service", "checkout")
        .with_var("namespace", "shop")
        .with_var("previous_revision", "4f1c2ab")
}

fn ctx_for(runbook: &str, n: u32) -> ActionContext {
    ActionContext::new(incident(n, 1, IncidentState::Open), Some(runbook.into()))
        .with_var("service", "checkout")
        .with_var("label.pod", "checkout-7d9f-abc")
}

fn kinds(out: &KernelOutput) -> Vec<DecisionKind> {
    out.decisions.iter().map(|d| d.decision).collect()
}

fn load_err(files: &[(&str, &str)]) -> String {
    RulePack::from_files(files)
        .expect_err("must not load")
        .to_string()
}

fn one_runbook(body: &str) -> String {
    format!("version: 1\nrunbooks:\n  - name: rb\n{body}")
}

// ---------------------------------------------------------------- classes

#[test]
fn action_classes_follow_the_architecture_table() {
    let approval: Vec<&str> = ActionClass::ALL
        .into_iter()
        .filter(|c| c.needs_approval())
        .map(ActionClass::as_str)
        .collect();
    assert_eq!(
        approval,
        [
            "scale_down",
            "reclaim",
            "delete_data",
            "rotate_credentials",
            "revoke_identity",
            "failover",
            "isolate"
        ]
    );
    for c in ActionClass::ALL {
        assert_eq!(ActionClass::parse(c.as_str()), Some(c));
        let json = serde_json::to_string(&c).expect("json");
        assert_eq!(json, format!("\"{}\"", c.as_str()));
        // Everything automatic is reversible; nothing irreversible is automatic.
        if !c.reversible() {
            assert!(c.needs_approval(), "{c}");
        }
    }
    assert!(ActionClass::Restart.reversible());
    assert!(!ActionClass::DeleteData.reversible());
    assert!(!ActionClass::ScaleDown.reversible());
}

// ---------------------------------------------------------------- loading

#[test]
fn runbooks_load_with_their_defaults() {
    let pack = pack();
    let rb = pack.runbook("rollback-deploy").expect("declared");
    assert_eq!(rb.class, ActionClass::Rollback);
    assert_eq!(rb.mode, Mode::Live);
    assert_eq!(
        rb.target,
        Target::Webhook {
            url: "https://deployer.example/rollback".into(),
            secret_env: Some("CAUSEWAY_RUNBOOK_SECRET".into()),
        }
    );
    assert_eq!(rb.budget.max_actions, 3);
    assert_eq!(rb.budget.per, Duration::from_secs(600));
    assert_eq!(rb.budget.scope, BudgetScope::Service);
    assert!(!rb.approval_required());
    assert_eq!(rb.compensate.as_deref(), Some("notify-owner"));

    let notify = pack.runbook("notify-owner").expect("declared");
    assert_eq!(
        notify.target,
        Target::Kafka {
            topic: DEFAULT_ACTIONS_TOPIC.into()
        }
    );
    assert_eq!(notify.budget, Budget::default());
    assert_eq!(notify.budget.max_actions, 5);
    assert_eq!(notify.budget.per, Duration::from_secs(3600));

    let dry = pack.runbook("restart-dry").expect("declared");
    assert_eq!(dry.mode, Mode::DryRun, "dry run is the default");
    assert_eq!(dry.budget.scope, BudgetScope::Runbook);
    assert!(
        pack.runbook("isolate-pod")
            .expect("declared")
            .approval_required()
    );
    assert_eq!(
        pack.runbook_of_rule("exec-in-pod").map(|r| r.name.as_str()),
        Some("isolate-pod")
    );
    assert!(pack.unresolved_runbooks().is_empty());
    assert_eq!(pack.runbook_file_of(0), "runbooks.yaml");

    // A spec survives a YAML round trip.
    let text = serde_yaml::to_string(rb).expect("yaml");
    let back: RunbookSpec = serde_yaml::from_str(&text).expect("parse");
    assert_eq!(&back, rb);
}

#[test]
fn packs_without_runbooks_load_as_before() {
    // The built-in pack loads whether or not it declares its runbooks yet.
    let builtin = RulePack::builtin().expect("builtin pack");
    if !builtin.runbooks().is_empty() {
        assert!(builtin.unresolved_runbooks().is_empty());
    }
    // Rules naming runbooks nobody declares still load; the names are reported.
    let only_rules = RulePack::from_files(&[("rules.yaml", RULES)]).expect("no runbooks");
    assert!(only_rules.runbooks().is_empty());
    assert_eq!(
        only_rules.unresolved_runbooks(),
        [
            ("deploy-regression", "rollback-deploy"),
            ("exec-in-pod", "isolate-pod")
        ]
    );
    let err = only_rules
        .check_runbook_references()
        .expect_err("strict check")
        .to_string();
    assert!(err.starts_with("rules.yaml: rules[0].runbook:"), "{err}");
    assert!(err.contains("declared: none"), "{err}");
}

#[test]
fn a_rule_naming_an_undeclared_runbook_is_refused_once_runbooks_are_declared() {
    let runbooks = "version: 1\nrunbooks:\n  - name: rollback-deploy\n    class: rollback\n    target: {kafka: {}}\n";
    let err = load_err(&[("rules.yaml", RULES), ("runbooks.yaml", runbooks)]);
    assert!(err.starts_with("rules.yaml: rules[1].runbook:"), "{err}");
    assert!(err.contains("\"isolate-pod\""), "{err}");
    assert!(err.contains("declared: rollback-deploy"), "{err}");
}

#[test]
fn load_errors_name_the_runbook_and_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "    class: rollback\n    target: {webhook: {url: \"ftp://x\"}}\n",
            "runbooks[0].target.webhook.url",
            "http:// or https://",
        ),
        (
            "    class: rollback\n    target: {webhook: {url: \"\"}}\n",
            "runbooks[0].target.webhook.url",
            "must not be empty",
        ),
        (
            "    class: rollback\n    target: {webhook: {url: \"https://\"}}\n",
            "runbooks[0].target.webhook.url",
            "no host",
        ),
        (
            "    class: rollback\n    target: {webhook: {url: \"https://x\", secret_env: \"my secret\"}}\n",
            "runbooks[0].target.webhook.secret_env",
            "environment variable",
        ),
        (
            "    class: rollback\n    target: {kafka: {topic: \"bad topic\"}}\n",
            "runbooks[0].target.kafka.topic",
            "Kafka topic",
        ),
        (
            "    class: rollback\n    target: {kafka: {}}\n    params: {a: \"{servce}\"}\n",
            "runbooks[0].params.a",
            "unknown variable {servce}",
        ),
        (
            "    class: rollback\n    target: {kafka: {}}\n    params: {a: \"{service\"}\n",
            "runbooks[0].params.a",
            "unclosed",
        ),
        (
            "    class: rollback\n    target: {kafka: {}}\n    params: {a: \"x}\"}\n",
            "runbooks[0].params.a",
            "unmatched",
        ),
        (
            "    class: rollback\n    target: {kafka: {}}\n    params: {a: \"{label.}\"}\n",
            "runbooks[0].params.a",
            "unknown variable",
        ),
        (
            "    class: isolate\n    target: {kafka: {}}\n    approval: {required: false}\n",
            "runbooks[0].approval.required",
            "always needs approval",
        ),
        (
            "    class: rollback\n    target: {kafka: {}}\n    budget: {max_actions: 0}\n",
            "runbooks[0].budget.max_actions",
            "at least 1",
        ),
        (
            "    class: rollback\n    target: {kafka: {}}\n    budget: {per: 0s}\n",
            "runbooks[0].budget.per",
            "longer than zero",
        ),
        (
            "    class: rollback\n    target: {kafka: {}}\n    validation: {within: 0s}\n",
            "runbooks[0].validation.within",
            "longer than zero",
        ),
        (
            "    class: rollback\n    target: {kafka: {}}\n    compensate: rb\n",
            "runbooks[0].compensate",
            "itself",
        ),
        (
            "    class: rollback\n    target: {kafka: {}}\n    compensate: nowhere\n",
            "runbooks[0].compensate",
            "no runbook named \"nowhere\"",
        ),
        (
            "    class: delete_data\n    target: {kafka: {}}\n",
            "runbooks[0].owner",
            "named owner",
        ),
    ];
    for (body, field, reason) in cases {
        let text = one_runbook(body);
        let err = load_err(&[("rb.yaml", &text)]);
        assert!(
            err.starts_with(&format!("rb.yaml: {field}:")),
            "{body}: {err}"
        );
        assert!(err.contains(reason), "{body}: {err}");
        assert!(err.contains("runbook \"rb\""), "{body}: {err}");
    }
}

#[test]
fn malformed_runbook_documents_are_reported_with_the_file() {
    for body in [
        // Unknown field.
        "    class: rollback\n    target: {kafka: {}}\n    retries: 3\n",
        // Unknown class.
        "    class: reboot\n    target: {kafka: {}}\n",
        // Both targets.
        "    class: rollback\n    target: {kafka: {}, webhook: {url: \"https://x\"}}\n",
        // No target.
        "    class: rollback\n    target: {}\n",
        // Bad duration.
        "    class: rollback\n    target: {kafka: {}}\n    budget: {per: soon}\n",
        // Bad mode.
        "    class: rollback\n    target: {kafka: {}}\n    mode: yolo\n",
    ] {
        let text = one_runbook(body);
        let err = load_err(&[("rb.yaml", &text)]);
        assert!(err.starts_with("rb.yaml: "), "{body}: {err}");
    }
    let bad_name = "version: 1\nrunbooks:\n  - name: Roll Back\n    class: rollback\n    target: {kafka: {}}\n";
    let err = load_err(&[("rb.yaml", bad_name)]);
    assert!(err.starts_with("rb.yaml: runbooks[0].name:"), "{err}");
}

#[test]
fn runbook_names_are_unique_across_the_pack() {
    let a = "version: 1\nrunbooks:\n  - name: x\n    class: restart\n    target: {kafka: {}}\n";
    let b = "version: 1\nrunbooks:\n  - name: y\n    class: restart\n    target: {kafka: {}}\n  - name: x\n    class: notify\n    target: {kafka: {}}\n";
    let err = load_err(&[("a.yaml", a), ("b.yaml", b)]);
    assert!(err.starts_with("b.yaml: runbooks[1].name:"), "{err}");
    assert!(err.contains("duplicate runbook name \"x\""), "{err}");
    assert!(err.contains("a.yaml"), "{err}");
}

#[test]
fn compensation_cycles_are_refused() {
    let text = "version: 1\nrunbooks:\n  - name: a\n    class: restart\n    target: {kafka: {}}\n    compensate: b\n  - name: b\n    class: notify\n    target: {kafka: {}}\n    compensate: a\n";
    let err = load_err(&[("c.yaml", text)]);
    assert!(err.starts_with("c.yaml: runbooks[0].compensate:"), "{err}");
    assert!(err.contains("a -> b -> a"), "{err}");
}

// ---------------------------------------------------------------- templates

#[test]
fn templates_render_variables_and_escaped_braces() {
    let vars: BTreeMap<String, String> = [("service", "checkout"), ("label.team", "payments")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(
        render(
            "{{\"svc\": \"{service}\", \"team\": \"{label.team}\"}}",
            &vars
        )
        .expect("ok"),
        "{\"svc\": \"checkout\", \"team\": \"payments\"}"
    );
    assert_eq!(render("plain", &vars).expect("ok"), "plain");
    assert_eq!(render("", &vars).expect("ok"), "");
    let err = render("to {revision}", &vars).expect_err("missing");
    assert!(
        err.to_string().contains("missing variable {revision}"),
        "{err}"
    );
    let empty: BTreeMap<String, String> = [("revision".to_owned(), String::new())].into();
    assert!(
        render("{revision}", &empty).is_err(),
        "empty counts as missing"
    );
    assert!(render("{}", &vars).is_err());
    assert!(render("{a b}", &vars).is_err());
}

#[test]
fn built_in_variables_come_from_the_incident_and_win() {
    let c = ctx(1, 2, IncidentState::Updated).with_var("incident_id", "spoofed");
    let vars = c.variables();
    assert_eq!(vars["incident_id"], *c.incident.incident_id);
    assert_eq!(vars["incident_version"], "2");
    assert_eq!(vars["severity"], "critical");
    assert_eq!(vars["scope"], "prod");
    assert!(vars["root_cause_event_id"].starts_with("evt_"));
    assert_eq!(vars["service"], "checkout");
}

// ---------------------------------------------------------------- decisions

#[test]
fn a_live_runbook_triggers_once_with_rendered_params() {
    let mut k = kernel();
    let c = ctx(1, 1, IncidentState::Open);
    let out = k.on_incident(&c, now(0));
    assert_eq!(kinds(&out), [DecisionKind::Triggered]);
    let d = &out.decisions[0];
    assert_eq!(
        d.action_id,
        Kernel::action_id(&c.incident.incident_id, "rollback-deploy")
    );
    assert!(d.action_id.starts_with("act_"));
    assert_eq!(d.idempotency_key, d.action_id);
    assert_eq!(d.target, "webhook:https://deployer.example/rollback");
    assert_eq!(d.class, ActionClass::Rollback);
    assert_eq!(d.incident_version, 1);
    assert_eq!(d.params["revision"], "4f1c2ab");
    assert_eq!(d.params["incident"], *c.incident.incident_id);
    assert_eq!(out.execute.len(), 1);
    assert_eq!(out.execute[0].decision, *d);
    assert_eq!(out.execute[0].params, d.params);
    assert!(matches!(out.execute[0].target, Target::Webhook { .. }));
    assert!(out.events.is_empty());

    let json = serde_json::to_value(d).expect("json");
    assert_eq!(json["decision"], "triggered");
    assert_eq!(json["action_class"], "rollback");

    // Later, re-sent and earlier versions never trigger again.
    for v in [2, 3, 1, 2] {
        let again = k.on_incident(&ctx(1, v, IncidentState::Updated), now(i64::from(v)));
        assert!(again.decisions.is_empty(), "version {v}");
        assert!(again.execute.is_empty());
    }
}

#[test]
fn dry_run_is_recorded_and_delivers_nothing() {
    let mut k = kernel();
    let out = k.on_incident(&ctx_for("restart-dry", 1), now(0));
    assert_eq!(kinds(&out), [DecisionKind::DryRun]);
    assert!(out.execute.is_empty());
    let d = &out.decisions[0];
    assert!(
        d.reason.starts_with("dry run: no call made"),
        "{}",
        d.reason
    );
    assert_eq!(d.target, "kafka:ops.actions");
    assert_eq!(d.params["workload"], "checkout");
}

#[test]
fn incidents_without_a_runbook_resolved_or_merged_or_undeclared_get_nothing() {
    let mut k = kernel();
    let mut none = ctx(1, 1, IncidentState::Open);
    none.runbook = None;
    assert!(k.on_incident(&none, now(0)).is_empty());
    assert!(
        k.on_incident(&ctx(2, 1, IncidentState::Resolved), now(0))
            .is_empty()
    );
    let mut merged = ctx(3, 1, IncidentState::Updated);
    merged.incident.merged_into = Some("inc_other".into());
    assert!(k.on_incident(&merged, now(0)).is_empty());
    assert!(
        k.on_incident(&ctx_for("no-such-runbook", 4), now(0))
            .is_empty()
    );
    assert_eq!(k.stats().remembered_actions, 0);
}

#[test]
fn a_missing_variable_denies_and_names_it_without_spending_budget() {
    let mut k = kernel();
    let c = ActionContext::new(
        incident(1, 1, IncidentState::Open),
        Some("rollback-deploy".into()),
    )
    .with_var("service", "checkout")
    .with_var("namespace", "shop");
    let out = k.on_incident(&c, now(0));
    assert_eq!(kinds(&out), [DecisionKind::Denied]);
    assert!(
        out.decisions[0].reason.contains("{previous_revision}"),
        "{}",
        out.decisions[0].reason
    );
    assert!(out.execute.is_empty());
    // Decided: a later version with the variable does not retry.
    assert!(
        k.on_incident(&ctx(1, 2, IncidentState::Updated), now(1))
            .is_empty()
    );
    // Denials do not spend budget: three more incidents all trigger.
    for n in 2..5 {
        let out = k.on_incident(&ctx(n, 1, IncidentState::Open), now(2));
        assert_eq!(kinds(&out), [DecisionKind::Triggered], "incident {n}");
    }
}

// ---------------------------------------------------------------- budgets

#[test]
fn a_flapping_storm_spends_the_budget_then_halts_with_one_self_alert() {
    let mut k = kernel();
    let mut all = KernelOutput::default();
    for n in 0..40u32 {
        let t = i64::from(n) * 5;
        // Each flap: an incident opens, is updated, re-sent, resolves.
        all.extend(k.on_incident(&ctx(n, 1, IncidentState::Open), now(t)));
        all.extend(k.on_incident(&ctx(n, 2, IncidentState::Updated), now(t + 1)));
        all.extend(k.on_incident(&ctx(n, 2, IncidentState::Updated), now(t + 2)));
        all.extend(k.on_incident(&ctx(n, 3, IncidentState::Resolved), now(t + 3)));
    }
    assert_eq!(all.decisions.len(), 40, "one decision per incident");
    let triggered = all
        .decisions
        .iter()
        .filter(|d| d.decision == DecisionKind::Triggered)
        .count();
    assert_eq!(triggered, 3, "max_actions");
    assert_eq!(all.execute.len(), 3);
    assert!(
        all.decisions[3..]
            .iter()
            .all(|d| d.decision == DecisionKind::BudgetExhausted)
    );
    assert!(
        all.decisions[3]
            .reason
            .contains("runbook halted until resumed")
    );
    assert!(all.decisions[4].reason.contains("resume needed"));
    assert!(k.is_halted("rollback-deploy"));

    assert_eq!(all.events.len(), 1, "one self-alert per halt");
    let e = &all.events[0];
    assert_eq!(e.source, KERNEL_SOURCE);
    assert_eq!(e.kind, EventKind::Alert);
    assert_eq!(e.status, "firing");
    assert_eq!(e.attr("alertname"), Some(BUDGET_ALERT_NAME));
    assert_eq!(e.attr("runbook"), Some("rollback-deploy"));
    assert_eq!(e.attr("count"), Some("3"));
    assert_eq!(e.entity, "checkout", "service scope: the service");
    assert_eq!(e.scope, "prod");
    assert_eq!(e.time, incident(3, 1, IncidentState::Open).updated_at);
    assert!(e.summary.contains("rollback-deploy"), "{}", e.summary);
    assert!(e.summary.contains("3 actions per 10m"), "{}", e.summary);
    assert!(EventId::is_canonical(&e.id));
    assert_eq!(
        e.id,
        Event::derive_id(&e.source, &e.source_event_id, "firing")
    );

    // The same storm on a fresh kernel gives the same event (deterministic).
    let mut again = kernel();
    let mut events = Vec::new();
    for n in 0..5u32 {
        events.extend(
            again
                .on_incident(&ctx(n, 1, IncidentState::Open), now(i64::from(n) * 5))
                .events,
        );
    }
    assert_eq!(events, all.events);
}

#[test]
fn dry_run_and_awaiting_approval_spend_budget_too() {
    let mut k = kernel();
    let mut kinds_seen = Vec::new();
    for n in 0..4 {
        kinds_seen.extend(kinds(&k.on_incident(&ctx_for("restart-dry", n), now(0))));
    }
    assert_eq!(
        kinds_seen,
        [
            DecisionKind::DryRun,
            DecisionKind::DryRun,
            DecisionKind::BudgetExhausted,
            DecisionKind::BudgetExhausted
        ]
    );
    let mut kinds_seen = Vec::new();
    for n in 0..7 {
        kinds_seen.extend(kinds(&k.on_incident(&ctx_for("isolate-pod", n), now(0))));
    }
    assert_eq!(
        kinds_seen
            .iter()
            .filter(|k| **k == DecisionKind::AwaitingApproval)
            .count(),
        5,
        "default budget: 5 per hour"
    );
    assert_eq!(kinds_seen[5], DecisionKind::BudgetExhausted);
}

#[test]
fn resume_clears_the_halt_and_resolves_the_self_alert() {
    let mut k = kernel();
    let mut fired = Vec::new();
    for n in 0..5 {
        fired.extend(
            k.on_incident(&ctx(n, 1, IncidentState::Open), now(i64::from(n)))
                .events,
        );
    }
    assert!(k.is_halted("rollback-deploy"));
    assert_eq!(k.halted().count(), 1);
    // Resumed a day of processing time later: the resolution stays in event time.
    let out = k
        .resume("rollback-deploy", now(100 + 86_400))
        .expect("resume");
    assert!(!k.is_halted("rollback-deploy"));
    assert_eq!(out.events.len(), 1);
    let resolved = &out.events[0];
    assert_eq!(resolved.status, "resolved");
    assert_eq!(resolved.source_event_id, fired[0].source_event_id);
    assert_ne!(resolved.id, fired[0].id);
    assert!(resolved.time > fired[0].time);
    assert!(
        resolved.time <= fired[0].time.plus(Duration::from_secs(60)),
        "not the wall clock: {} after {}",
        resolved.time.to_rfc3339(),
        fired[0].time.to_rfc3339()
    );

    // Within the same window, a new incident triggers again.
    let out = k.on_incident(&ctx(10, 1, IncidentState::Open), now(101));
    assert_eq!(kinds(&out), [DecisionKind::Triggered]);
    // Incidents refused while halted stay decided.
    assert!(
        k.on_incident(&ctx(4, 2, IncidentState::Updated), now(102))
            .is_empty()
    );

    // Resuming again is a no-op; an unknown runbook is an error.
    assert!(
        k.resume("rollback-deploy", now(103))
            .expect("no-op")
            .is_empty()
    );
    assert!(matches!(
        k.resume("nope", now(103)),
        Err(Error::UnknownRunbook { .. })
    ));
}

#[test]
fn budget_windows_slide() {
    let mut k = kernel();
    for n in 0..3 {
        let out = k.on_incident(&ctx(n, 1, IncidentState::Open), now(i64::from(n) * 60));
        assert_eq!(kinds(&out), [DecisionKind::Triggered]);
    }
    // Ten minutes after the first, it has left the window.
    let out = k.on_incident(&ctx(3, 1, IncidentState::Open), now(601));
    assert_eq!(kinds(&out), [DecisionKind::Triggered]);
    assert!(!k.is_halted("rollback-deploy"));
}

#[test]
fn budget_scopes_count_separately() {
    // Service scope: each service has its own three.
    let mut k = kernel();
    for n in 0..6u32 {
        let service = if n % 2 == 0 { "checkout" } else { "search" };
        let out = k.on_incident(
            &ctx(n, 1, IncidentState::Open).with_var("service", service),
            now(0),
        );
        assert_eq!(
            kinds(&out),
            [DecisionKind::Triggered],
            "incident {n} ({service})"
        );
    }
    let out = k.on_incident(
        &ctx(6, 1, IncidentState::Open).with_var("service", "search"),
        now(0),
    );
    assert_eq!(kinds(&out), [DecisionKind::BudgetExhausted]);
    assert_eq!(out.events[0].entity, "search");
    assert_eq!(out.events[0].attr("budget_key"), Some("service:search"));

    // Runbook scope: the same six incidents share one budget of three.
    let mut spec = pack().runbook("rollback-deploy").expect("declared").clone();
    spec.budget.scope = BudgetScope::Runbook;
    let mut k = Kernel::new(&[spec.clone()]);
    let mut seen = Vec::new();
    for n in 0..6u32 {
        let service = if n % 2 == 0 { "checkout" } else { "search" };
        seen.extend(kinds(&k.on_incident(
            &ctx(n, 1, IncidentState::Open).with_var("service", service),
            now(0),
        )));
    }
    assert_eq!(
        seen.iter()
            .filter(|k| **k == DecisionKind::Triggered)
            .count(),
        3
    );
    assert_eq!(seen[3], DecisionKind::BudgetExhausted);

    // Entity scope: keyed by the incident's scope and entity.
    spec.budget.scope = BudgetScope::Entity;
    spec.budget.max_actions = 1;
    let mut k = Kernel::new(&[spec]);
    let mut a = ctx(0, 1, IncidentState::Open);
    a.incident.entity = "cart".into();
    assert_eq!(kinds(&k.on_incident(&a, now(0))), [DecisionKind::Triggered]);
    assert_eq!(
        kinds(&k.on_incident(&ctx(1, 1, IncidentState::Open), now(0))),
        [DecisionKind::Triggered]
    );
    let out = k.on_incident(&ctx(2, 1, IncidentState::Open), now(0));
    assert_eq!(kinds(&out), [DecisionKind::BudgetExhausted]);
    assert_eq!(
        out.events[0].attr("budget_key"),
        Some("entity:prod/checkout")
    );
}

// ---------------------------------------------------------------- approvals

#[test]
fn approval_runs_the_action_once() {
    let mut k = kernel();
    let out = k.on_incident(&ctx_for("isolate-pod", 1), now(0));
    assert_eq!(kinds(&out), [DecisionKind::AwaitingApproval]);
    assert!(out.execute.is_empty());
    let waiting = &out.decisions[0];
    assert_eq!(waiting.expires_at, Some(now(1800)));
    assert_eq!(waiting.params["pod"], "checkout-7d9f-abc");
    assert_eq!(k.pending_approvals().count(), 1);
    assert_eq!(k.next_deadline(), Some(now(1800)));

    let id = waiting.action_id.clone();
    let out = k.approve(&id, "alice", now(60)).expect("approve");
    assert_eq!(kinds(&out), [DecisionKind::Approved]);
    let d = &out.decisions[0];
    assert_eq!(d.action_id, id, "same action, another row");
    assert_eq!(d.approver.as_deref(), Some("alice"));
    assert_eq!(d.decided_at, now(60));
    assert_eq!(out.execute.len(), 1);
    assert_eq!(out.execute[0].decision.idempotency_key, id);
    assert_eq!(k.pending_approvals().count(), 0);

    // Idempotent, and denying it now is a conflict.
    assert!(k.approve(&id, "bob", now(61)).expect("again").is_empty());
    let err = k.deny(&id, "bob", now(62)).expect_err("conflict");
    assert!(matches!(err, Error::ActionConflict { .. }), "{err}");
    assert!(
        err.to_string().contains("already approved by alice"),
        "{err}"
    );
    // Nothing expires later.
    assert!(k.tick(now(4000)).decisions.is_empty());
}

#[test]
fn denial_is_final_and_idempotent() {
    let mut k = kernel();
    let id = k.on_incident(&ctx_for("isolate-pod", 1), now(0)).decisions[0]
        .action_id
        .clone();
    let out = k.deny(&id, "alice", now(10)).expect("deny");
    assert_eq!(kinds(&out), [DecisionKind::Denied]);
    assert!(out.decisions[0].reason.contains("denied by alice"));
    assert!(out.execute.is_empty());
    assert!(k.deny(&id, "alice", now(11)).expect("again").is_empty());
    let err = k.approve(&id, "bob", now(12)).expect_err("denied");
    assert!(matches!(err, Error::ActionConflict { .. }), "{err}");
    assert!(err.to_string().contains("denied by alice"), "{err}");
}

#[test]
fn approvals_expire_and_fail_closed() {
    let mut k = kernel();
    let id = k.on_incident(&ctx_for("isolate-pod", 1), now(0)).decisions[0]
        .action_id
        .clone();
    assert!(k.tick(now(1799)).decisions.is_empty());
    // Past the deadline but before a tick: refused, and left for the tick.
    let err = k.approve(&id, "alice", now(1801)).expect_err("too late");
    assert!(err.to_string().contains("expired"), "{err}");
    let out = k.tick(now(1802));
    assert_eq!(kinds(&out), [DecisionKind::Expired]);
    assert!(
        out.decisions[0].reason.contains("30m"),
        "{}",
        out.decisions[0].reason
    );
    assert!(out.execute.is_empty());
    let err = k.approve(&id, "alice", now(1803)).expect_err("expired");
    assert!(matches!(err, Error::ActionConflict { .. }), "{err}");
    assert!(k.deny(&id, "alice", now(1804)).expect("no-op").is_empty());
    assert!(k.tick(now(1900)).decisions.is_empty());
}

#[test]
fn approval_errors_are_classified() {
    let mut k = kernel();
    assert!(matches!(
        k.approve("act_nope", "alice", now(0)),
        Err(Error::ActionNotFound { .. })
    ));
    assert!(matches!(
        k.deny("act_nope", "alice", now(0)),
        Err(Error::ActionNotFound { .. })
    ));
    let id = k.on_incident(&ctx_for("isolate-pod", 1), now(0)).decisions[0]
        .action_id
        .clone();
    assert!(matches!(
        k.approve(&id, "  ", now(1)),
        Err(Error::InvalidApprover { .. })
    ));
    // An action that never waited for approval.
    let triggered = k
        .on_incident(&ctx(2, 1, IncidentState::Open), now(2))
        .decisions[0]
        .action_id
        .clone();
    let err = k
        .approve(&triggered, "alice", now(3))
        .expect_err("not waiting");
    assert!(
        err.to_string().contains("did not wait for approval"),
        "{err}"
    );
}

#[test]
fn approving_a_dry_run_action_records_it_and_calls_nothing() {
    let mut k = kernel();
    let id = k.on_incident(&ctx_for("isolate-dry", 1), now(0)).decisions[0]
        .action_id
        .clone();
    let out = k.approve(&id, "alice", now(5)).expect("approve");
    assert_eq!(kinds(&out), [DecisionKind::Approved]);
    assert!(out.decisions[0].reason.contains("dry run: no call made"));
    assert!(out.execute.is_empty());
}

#[test]
fn approving_a_halted_runbook_waits_for_resume() {
    let mut k = kernel();
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.extend(
            k.on_incident(&ctx_for("isolate-pod", n), now(0))
                .decisions
                .into_iter()
                .filter(|d| d.decision == DecisionKind::AwaitingApproval)
                .map(|d| d.action_id),
        );
    }
    assert!(k.is_halted("isolate-pod"));
    let err = k.approve(&ids[0], "alice", now(1)).expect_err("halted");
    assert!(err.to_string().contains("resume it"), "{err}");
    k.resume("isolate-pod", now(2)).expect("resume");
    let out = k.approve(&ids[0], "alice", now(3)).expect("approve");
    assert_eq!(out.execute.len(), 1);
}

// ---------------------------------------------------------------- kill switch

#[test]
fn the_kill_switch_denies_new_actions_and_pending_approvals() {
    let mut k = kernel();
    let waiting = k.on_incident(&ctx_for("isolate-pod", 1), now(0)).decisions[0]
        .action_id
        .clone();
    k.set_kill_switch(true);
    assert!(k.kill_switch());
    let out = k.on_incident(&ctx(2, 1, IncidentState::Open), now(1));
    assert_eq!(kinds(&out), [DecisionKind::Denied]);
    assert!(out.decisions[0].reason.contains("kill switch"));
    assert!(out.execute.is_empty());

    let out = k.approve(&waiting, "alice", now(2)).expect("decided");
    assert_eq!(kinds(&out), [DecisionKind::Denied]);
    assert!(out.decisions[0].reason.contains("kill switch"));
    assert_eq!(out.decisions[0].approver.as_deref(), Some("alice"));
    assert!(out.execute.is_empty());
    assert!(k.approve(&waiting, "alice", now(3)).is_err());

    // Turning it off does not revisit what was denied, and survives a restart.
    let snap = k.snapshot().expect("snapshot");
    let mut restored = kernel();
    restored.restore(&snap).expect("restore");
    assert!(restored.kill_switch());
    k.set_kill_switch(false);
    assert!(
        k.on_incident(&ctx(2, 2, IncidentState::Updated), now(4))
            .is_empty()
    );
    assert_eq!(
        kinds(&k.on_incident(&ctx(3, 1, IncidentState::Open), now(5))),
        [DecisionKind::Triggered]
    );
}

// ---------------------------------------------------------------- validation

#[test]
fn a_failed_validation_runs_the_compensating_runbook() {
    let mut k = kernel();
    let c = ctx(1, 1, IncidentState::Open);
    let first = k.on_incident(&c, now(0)).decisions[0].clone();
    assert_eq!(k.stats().pending_validations, 1);
    // An update that does not resolve keeps the validation waiting.
    assert!(
        k.on_incident(&ctx(1, 2, IncidentState::Updated), now(300))
            .is_empty()
    );
    assert!(k.tick(now(899)).is_empty());

    let out = k.tick(now(901));
    assert_eq!(
        kinds(&out),
        [DecisionKind::ValidationFailed, DecisionKind::Triggered]
    );
    let failed = &out.decisions[0];
    assert_eq!(failed.action_id, first.action_id);
    assert!(failed.reason.contains("within 15m"), "{}", failed.reason);
    assert!(failed.reason.contains("notify-owner"), "{}", failed.reason);
    let comp = &out.decisions[1];
    assert_eq!(comp.runbook, "notify-owner");
    assert_eq!(
        comp.incident_id, first.incident_id,
        "bound to the same incident"
    );
    assert_ne!(comp.action_id, first.action_id);
    assert_eq!(
        comp.action_id,
        Kernel::compensation_id(&first.incident_id, "notify-owner", &first.action_id)
    );
    assert!(
        comp.reason
            .starts_with(&format!("compensates {}", first.action_id))
    );
    assert_eq!(comp.incident_version, 2, "rendered from the latest version");
    assert_eq!(
        comp.params["text"],
        "rollback of checkout did not help: Deploy regression on checkout"
    );
    assert_eq!(out.execute.len(), 1);
    assert_eq!(out.execute[0].decision.action_id, comp.action_id);
    assert_eq!(
        out.execute[0].target,
        Target::Kafka {
            topic: DEFAULT_ACTIONS_TOPIC.into()
        }
    );

    // Once only.
    assert!(k.tick(now(2000)).decisions.is_empty());
    assert_eq!(k.stats().pending_validations, 0);
}

#[test]
fn resolution_or_merge_within_the_window_passes_validation() {
    let mut k = kernel();
    let a = k
        .on_incident(&ctx(1, 1, IncidentState::Open), now(0))
        .decisions[0]
        .clone();
    assert!(
        k.validating(&a.incident_id),
        "its versions are news to the kernel"
    );
    assert!(!k.validating("inc_other"));
    let out = k.on_incident(&ctx(1, 2, IncidentState::Resolved), now(600));
    assert!(out.decisions.is_empty());
    assert_eq!(out.validated, [a.action_id]);
    assert!(!k.validating(&a.incident_id), "validated: nothing waits");

    let b = k
        .on_incident(&ctx(2, 1, IncidentState::Open), now(0))
        .decisions[0]
        .clone();
    let mut merged = ctx(2, 2, IncidentState::Updated);
    merged.incident.merged_into = Some("inc_other".into());
    assert_eq!(k.on_incident(&merged, now(700)).validated, [b.action_id]);

    assert!(k.tick(now(5000)).decisions.is_empty(), "nothing failed");
}

#[test]
fn dry_run_actions_are_not_validated() {
    let mut spec = pack().runbook("rollback-deploy").expect("declared").clone();
    spec.mode = Mode::DryRun;
    let mut k = Kernel::new(&[
        spec,
        pack().runbook("notify-owner").expect("declared").clone(),
    ]);
    assert_eq!(
        kinds(&k.on_incident(&ctx(1, 1, IncidentState::Open), now(0))),
        [DecisionKind::DryRun]
    );
    assert!(k.tick(now(5000)).decisions.is_empty());
}

#[test]
fn a_delivery_failure_is_recorded_once_and_cancels_validation() {
    let mut k = kernel();
    let id = k
        .on_incident(&ctx(1, 1, IncidentState::Open), now(0))
        .decisions[0]
        .action_id
        .clone();
    let out = k.delivery_failed(&id, "HTTP 400 from deployer", now(30));
    assert_eq!(kinds(&out), [DecisionKind::Failed]);
    assert!(out.decisions[0].reason.contains("HTTP 400"));
    assert_eq!(out.decisions[0].params["revision"], "4f1c2ab");
    assert!(k.delivery_failed(&id, "again", now(31)).is_empty());
    assert!(k.delivery_failed("act_unknown", "x", now(31)).is_empty());
    assert!(
        k.tick(now(5000)).decisions.is_empty(),
        "no validation after a failure"
    );
    // Dry-run actions were never delivered.
    let dry = k.on_incident(&ctx_for("restart-dry", 2), now(40)).decisions[0]
        .action_id
        .clone();
    assert!(k.delivery_failed(&dry, "x", now(41)).is_empty());
}

// ---------------------------------------------------------------- restarts

#[test]
fn a_restored_kernel_does_not_decide_again() {
    let mut k = kernel();
    let c = ctx(1, 1, IncidentState::Open);
    assert_eq!(kinds(&k.on_incident(&c, now(0))), [DecisionKind::Triggered]);
    let waiting = k.on_incident(&ctx_for("isolate-pod", 2), now(1)).decisions[0]
        .action_id
        .clone();
    for n in 10..15 {
        k.on_incident(&ctx_for("restart-dry", n), now(2));
    }
    assert!(k.is_halted("restart-dry"));

    let snap = k.snapshot().expect("snapshot");
    let mut restored = kernel();
    restored.restore(&snap).expect("restore");
    assert_eq!(restored.state(), k.state());

    // The same version, re-read from the log after the restart: nothing.
    assert!(restored.on_incident(&c, now(100)).is_empty());
    assert!(
        restored
            .on_incident(&ctx(1, 2, IncidentState::Updated), now(101))
            .is_empty()
    );
    // Halts, pending approvals and validations survived.
    assert!(restored.is_halted("restart-dry"));
    assert_eq!(
        restored
            .approve(&waiting, "alice", now(102))
            .expect("approve")
            .execute
            .len(),
        1
    );
    assert_eq!(
        kinds(&restored.tick(now(1000))),
        [DecisionKind::ValidationFailed, DecisionKind::Triggered]
    );

    // JSON works too, for callers that keep state as text.
    let json = serde_json::to_string(k.state()).expect("json");
    let state: KernelState = serde_json::from_str(&json).expect("parse");
    let from_json = Kernel::from_state(pack().runbooks(), KernelConfig::default(), state);
    assert_eq!(from_json.state(), k.state());

    assert!(matches!(
        restored.restore(b"garbage"),
        Err(Error::InvalidState { .. })
    ));
}

#[test]
fn a_reload_keeps_state() {
    let mut k = kernel();
    for n in 0..5 {
        k.on_incident(&ctx(n, 1, IncidentState::Open), now(0));
    }
    assert!(k.is_halted("rollback-deploy"));
    let mut specs = pack().runbooks().to_vec();
    for s in &mut specs {
        s.description = "reloaded".into();
    }
    k.update_runbooks(&specs);
    assert!(k.is_halted("rollback-deploy"));
    assert!(
        k.on_incident(&ctx(0, 2, IncidentState::Updated), now(1))
            .is_empty()
    );
    assert_eq!(
        k.runbook("rollback-deploy").map(|r| r.description.as_str()),
        Some("reloaded")
    );

    // An approval whose runbook is gone is denied, not run.
    let id = k.on_incident(&ctx_for("isolate-pod", 9), now(2)).decisions[0]
        .action_id
        .clone();
    k.update_runbooks(&[]);
    let out = k.approve(&id, "alice", now(3)).expect("decided");
    assert_eq!(kinds(&out), [DecisionKind::Denied]);
    assert!(out.execute.is_empty());
}

#[test]
fn state_is_pruned_after_the_horizon() {
    let mut k = Kernel::with_config(
        pack().runbooks(),
        KernelConfig {
            decided_horizon: Duration::from_secs(3600),
        },
    );
    for n in 0..3 {
        k.on_incident(&ctx(n, 1, IncidentState::Open), now(0));
    }
    let waiting = k.on_incident(&ctx_for("isolate-pod", 7), now(0)).decisions[0]
        .action_id
        .clone();
    assert_eq!(k.stats().remembered_actions, 4);
    assert_eq!(k.stats().budget_windows, 2);
    // Validations fail at 15m (three compensations), the approval expires at 30m.
    k.tick(now(1000));
    k.tick(now(2000));
    assert!(k.approve(&waiting, "alice", now(2001)).is_err());
    let stats = k.stats();
    assert_eq!(stats.pending_approvals, 0);
    assert_eq!(stats.pending_validations, 0);
    k.tick(now(2000 + 3601));
    let stats = k.stats();
    assert_eq!(stats.remembered_actions, 0, "{stats:?}");
    assert_eq!(stats.budget_windows, 0, "{stats:?}");
    assert!(matches!(
        k.approve(&waiting, "alice", now(6000)),
        Err(Error::ActionNotFound { .. })
    ));
}

#[test]
fn pending_work_is_never_pruned() {
    let mut k = Kernel::with_config(
        pack().runbooks(),
        KernelConfig {
            decided_horizon: Duration::from_secs(1),
        },
    );
    let c = ctx(1, 1, IncidentState::Open);
    k.on_incident(&c, now(0));
    k.tick(now(60));
    assert_eq!(k.stats().remembered_actions, 1, "validation still pending");
    assert!(k.on_incident(&c, now(61)).is_empty());
}
