use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::catalog::{Catalog, ServiceEntry};
use crate::event::Event;
use crate::rule::{Absence, Join, Rise, RuleSpec, Selector, Threshold};
use crate::time::ProcessingTime;

fn t(secs: i64) -> EventTime {
    EventTime::from_micros(1_700_000_000_000_000 + secs * 1_000_000)
}

const LATE: Duration = Duration::from_secs(600);

fn event(
    source: &str,
    sid: &str,
    kind: EventKind,
    secs: i64,
    entity: &str,
    status: &str,
    attrs: &[(&str, &str)],
) -> Event {
    Event {
        id: Event::derive_id(source, sid, status),
        source: source.into(),
        source_event_id: sid.into(),
        kind,
        time: t(secs),
        ingested_at: ProcessingTime::from_micros(0),
        scope: "prod".into(),
        entity: entity.into(),
        severity: if kind == EventKind::Alert {
            Severity::Critical
        } else {
            Severity::None
        },
        status: status.into(),
        summary: format!("{kind} {entity} {sid}"),
        attributes: attrs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        raw: "{}".into(),
    }
}

fn deploy(secs: i64, entity: &str, sha: &str) -> Event {
    event(
        "github",
        sha,
        EventKind::Deploy,
        secs,
        entity,
        "success",
        &[],
    )
}

fn alert(secs: i64, entity: &str, name: &str, status: &str, starts: i64) -> Event {
    let sid = format!("{name}-{entity}@{starts}");
    event(
        "alertmanager",
        &sid,
        EventKind::Alert,
        secs,
        entity,
        status,
        &[("alertname", name)],
    )
}

fn rule(id: &str, within: u64) -> RuleSpec {
    RuleSpec {
        id: id.into(),
        version: 1,
        description: String::new(),
        title: format!("{id} on {{entity}}: {{alerts}} after {{cause}}"),
        severity: Severity::Warning,
        priority: 100,
        cause: Selector {
            predicate: "cause".into(),
            rises: None,
        },
        effect: Some(Selector {
            predicate: "effect".into(),
            rises: None,
        }),
        join: Join::Entity,
        within: Duration::from_secs(within),
        not_followed_by: None,
        threshold: None,
        resolve_after: None,
        runbook: None,
        attach_only: false,
        examples: Vec::new(),
    }
}

/// Matches by hand: the predicate text says which side a kind plays.
type Classify = fn(&Event) -> Matches;

/// Rule 0 = deploy → firing alert.
fn deploy_regression(e: &Event) -> Matches {
    Matches {
        cause: u64::from(e.kind == EventKind::Deploy && e.status == "success"),
        effect: u64::from(e.kind == EventKind::Alert && e.status == "firing"),
        follow: 0,
    }
}

struct Harness {
    c: Correlator,
    classify: Classify,
    out: Output,
}

impl Harness {
    fn new(rules: Vec<RuleSpec>, catalog: Catalog, classify: Classify) -> Harness {
        Harness {
            c: Correlator::new(&rules, &catalog, CorrelatorConfig::default()),
            classify,
            out: Output::default(),
        }
    }

    fn deploys() -> Harness {
        Harness::new(
            vec![rule("deploy-regression", 1800)],
            Catalog::default(),
            deploy_regression,
        )
    }

    fn push(&mut self, e: &Event) -> PushOutcome {
        let m = (self.classify)(e);
        let row = EventRow::from_event(e, m, LATE, &NoValues).expect("canonical id");
        self.c.push(&row, &mut self.out)
    }

    fn push_all(&mut self, events: &[Event]) {
        for e in events {
            self.push(e);
        }
    }

    fn advance(&mut self, secs: i64) {
        self.c.advance(t(secs), &mut self.out);
    }

    /// Latest version of every incident.
    fn latest(&self) -> BTreeMap<Arc<str>, IncidentVersion> {
        let mut m = BTreeMap::new();
        for v in &self.out.incidents {
            m.insert(v.incident_id.clone(), v.clone());
        }
        m
    }

    /// Live (not merged) incidents' latest versions.
    fn live(&self) -> Vec<IncidentVersion> {
        self.latest()
            .into_values()
            .filter(|v| v.merged_into.is_none())
            .collect()
    }

    fn members(&self, incident: &str) -> Vec<EventId> {
        let mut v: Vec<EventId> = self
            .out
            .edges
            .iter()
            .filter(|e| &*e.incident_id == incident)
            .map(|e| e.event_id)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

fn eid(e: &Event) -> EventId {
    EventId::parse(&e.id).expect("canonical")
}

#[test]
fn deploy_then_alerts_within_window_open_one_incident_rooted_at_the_deploy() {
    let mut h = Harness::deploys();
    let d = deploy(0, "checkout", "abc");
    let a1 = alert(60, "checkout", "HighErrorRate", "firing", 60);
    let a2 = alert(120, "checkout", "HighLatency", "firing", 120);
    h.push_all(&[d.clone(), a1.clone(), a2.clone()]);
    h.advance(200);
    let live = h.live();
    assert_eq!(live.len(), 1, "{live:#?}");
    let inc = &live[0];
    assert_eq!(&*inc.rule_id, "deploy-regression");
    assert_eq!(inc.root_cause_event_id, Some(eid(&d)));
    assert_eq!(inc.event_count, 3);
    assert_eq!(
        &*inc.title,
        "deploy-regression on checkout: HighErrorRate, HighLatency after deploy checkout abc"
    );
    let lag: Vec<f64> = h
        .out
        .edges
        .iter()
        .filter(|e| e.role == EdgeRole::Effect)
        .map(|e| e.lag_seconds)
        .collect();
    assert_eq!(lag, [60.0, 120.0]);
    assert!(
        h.out
            .edges
            .iter()
            .filter(|e| e.role == EdgeRole::Effect)
            .all(|e| e.cause_event_id == Some(eid(&d)))
    );
    assert_eq!(&*h.out.edges[0].join_key, "prod/checkout");
}

#[test]
fn alerts_outside_the_window_or_on_other_entities_are_grouped_on_their_own() {
    let mut h = Harness::deploys();
    h.push_all(&[
        deploy(0, "checkout", "abc"),
        alert(3600, "checkout", "HighErrorRate", "firing", 3600),
        alert(60, "search", "HighErrorRate", "firing", 60),
    ]);
    h.advance(4000);
    let live = h.live();
    assert_eq!(live.len(), 2);
    assert!(live.iter().all(|v| &*v.rule_id == ALERT_GROUP_RULE));
    assert!(live.iter().all(|v| v.root_cause_event_id.is_none()));
}

#[test]
fn a_cause_that_arrives_after_its_effect_within_the_watermark_links_as_in_order() {
    let mut a = Harness::deploys();
    let d = deploy(0, "checkout", "abc");
    let x = alert(60, "checkout", "HighErrorRate", "firing", 60);
    a.push_all(&[x.clone(), d.clone()]);
    a.advance(100);
    let mut b = Harness::deploys();
    b.push_all(&[d, x]);
    b.advance(100);
    assert_eq!(a.out, b.out);
    assert_eq!(a.live().len(), 1);
}

#[test]
fn an_inhibiting_cause_that_arrives_late_absorbs_the_alert_group_it_explains() {
    let mut h = Harness::deploys();
    let d = deploy(0, "checkout", "abc");
    let x = alert(60, "checkout", "HighErrorRate", "firing", 60);
    h.push(&x);
    h.advance(100);
    let group = h.live();
    assert_eq!(group.len(), 1);
    assert_eq!(&*group[0].rule_id, ALERT_GROUP_RULE);
    // The deploy arrives behind the watermark, within its lateness.
    assert_eq!(h.push(&d), PushOutcome::AppliedLate);
    let live = h.live();
    assert_eq!(live.len(), 1, "{live:#?}");
    let inc = &live[0];
    assert_eq!(
        inc.incident_id, group[0].incident_id,
        "the page already sent is updated"
    );
    assert_eq!(&*inc.rule_id, "deploy-regression");
    assert_eq!(inc.root_cause_event_id, Some(eid(&d)));
    assert_eq!(inc.version, 2);
    assert_eq!(inc.opened_at, t(0));
    assert_eq!(inc.event_count, 2);
    let edge = h
        .out
        .edges
        .iter()
        .find(|e| e.cause_event_id == Some(eid(&d)))
        .expect("the late link has its evidence");
    assert_eq!(edge.event_id, eid(&x));
    assert_eq!(edge.lag_seconds, 60.0);
}

#[test]
fn resends_count_once_and_resolution_closes_the_incident() {
    let mut h = Harness::deploys();
    let d = deploy(0, "checkout", "abc");
    let a = alert(60, "checkout", "HighErrorRate", "firing", 60);
    h.push_all(&[d, a.clone(), a.clone()]);
    h.advance(100);
    // Re-sent long after, beyond the id horizon: still the same firing alert.
    let mut again = a.clone();
    again.ingested_at = ProcessingTime::from_micros(99);
    assert_eq!(h.push(&again), PushOutcome::Duplicate);
    h.push(&alert(300, "checkout", "HighErrorRate", "resolved", 60));
    h.advance(400);
    let live = h.live();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].state, IncidentState::Resolved);
    assert_eq!(live[0].resolved_at, Some(t(300)));
    assert_eq!(live[0].event_count, 3);
}

#[test]
fn a_resolved_incident_does_not_absorb_new_alerts() {
    let mut h = Harness::deploys();
    h.push_all(&[
        deploy(0, "checkout", "abc"),
        alert(60, "checkout", "HighErrorRate", "firing", 60),
        alert(120, "checkout", "HighErrorRate", "resolved", 60),
        alert(180, "checkout", "HighErrorRate", "firing", 180),
    ]);
    h.advance(300);
    let live = h.live();
    assert_eq!(live.len(), 2, "{live:#?}");
    let resolved = live
        .iter()
        .filter(|v| v.state == IncidentState::Resolved)
        .count();
    assert_eq!(resolved, 1);
    // Both are the deploy's: a new generation, a new id.
    assert!(live.iter().all(|v| &*v.rule_id == "deploy-regression"));
}

#[test]
fn too_late_events_are_reported_not_dropped() {
    let mut h = Harness::deploys();
    h.push(&alert(5000, "checkout", "X", "firing", 5000));
    h.advance(5000);
    assert_eq!(
        h.push(&alert(100, "checkout", "Y", "firing", 100)),
        PushOutcome::TooLate
    );
}

#[test]
fn a_late_straggler_does_not_extend_a_closed_burst() {
    let mut h = Harness::deploys();
    let cfg = CorrelatorConfig {
        max_duration: Duration::from_secs(600),
        ..CorrelatorConfig::default()
    };
    h.c = Correlator::new(&[rule("deploy-regression", 1800)], &Catalog::default(), cfg);
    h.push_all(&[
        alert(0, "checkout", "HighErrorRate", "firing", 0),
        alert(240, "checkout", "HighErrorRate", "firing", 240),
        alert(480, "checkout", "HighErrorRate", "firing", 480),
        // Within the group interval of the last, but past the maximum duration.
        alert(700, "checkout", "HighErrorRate", "firing", 700),
    ]);
    h.advance(800);
    let live = h.live();
    assert_eq!(live.len(), 2, "{live:#?}");
    let first = live
        .iter()
        .find(|v| v.opened_at == t(0))
        .expect("first burst");
    assert_eq!(first.event_count, 3);
    assert_eq!(first.state, IncidentState::Resolved);
    assert_eq!(first.resolved_at, Some(t(600)));
}

fn gitops_classify(e: &Event) -> Matches {
    let human_change = e.kind == EventKind::Change
        && e.source == "k8s_audit"
        && e.attr("actor_type") == Some("human");
    let out_of_sync = e.source == "argocd" && e.status == "out_of_sync";
    let firing = e.kind == EventKind::Alert && e.status == "firing";
    Matches {
        // rule 0: human change → out of sync; rule 1: out of sync → alerts
        cause: u64::from(human_change) | (u64::from(out_of_sync) << 1),
        effect: u64::from(out_of_sync) | (u64::from(firing) << 1),
        follow: 0,
    }
}

#[test]
fn a_chain_of_links_is_one_incident_rooted_at_its_first_change() {
    let mut drift = rule("gitops-drift", 900);
    drift.priority = 150;
    let symptoms = rule("drift-symptoms", 1800);
    let mut h = Harness::new(vec![drift, symptoms], Catalog::default(), gitops_classify);
    let edit = event(
        "k8s_audit",
        "audit-1",
        EventKind::Change,
        0,
        "checkout",
        "succeeded",
        &[("actor_type", "human")],
    );
    let oos = event(
        "argocd",
        "sync-1",
        EventKind::Change,
        30,
        "checkout",
        "out_of_sync",
        &[],
    );
    let err = alert(120, "checkout", "HighErrorRate", "firing", 120);
    h.push_all(&[err.clone(), oos.clone(), edit.clone()]);
    h.advance(300);
    let live = h.live();
    assert_eq!(live.len(), 1, "{live:#?}");
    assert_eq!(live[0].root_cause_event_id, Some(eid(&edit)));
    assert_eq!(&*live[0].rule_id, "gitops-drift");
    assert_eq!(live[0].event_count, 3);
    let err_edge = h
        .out
        .edges
        .iter()
        .find(|e| e.event_id == eid(&err))
        .expect("edge");
    assert_eq!(
        err_edge.cause_event_id,
        Some(eid(&oos)),
        "the alert's cause is the drift"
    );
}

fn cloud_classify(e: &Event) -> Matches {
    Matches {
        cause: u64::from(e.source == "cloudtrail" && e.kind == EventKind::Change),
        effect: u64::from(e.kind == EventKind::Alert && e.status == "firing"),
        follow: 0,
    }
}

fn dependency_catalog() -> Catalog {
    Catalog {
        services: vec![
            ServiceEntry {
                name: "payments".into(),
                workloads: vec!["payments-api".into()],
                depends_on: vec!["payments-db".into()],
                ..ServiceEntry::default()
            },
            ServiceEntry {
                name: "payments-db".into(),
                resources: vec!["arn:aws:rds:eu-west-1:1:db:pay".into()],
                ..ServiceEntry::default()
            },
        ],
        ..Catalog::default()
    }
}

#[test]
fn a_cloud_change_links_symptoms_of_the_services_that_depend_on_it() {
    let mut r = rule("cloud-change", 1800);
    r.join = Join::DependsOn;
    let mut h = Harness::new(vec![r], dependency_catalog(), cloud_classify);
    let change = event(
        "cloudtrail",
        "ct-1",
        EventKind::Change,
        0,
        "payments-db",
        "succeeded",
        &[],
    );
    let symptom = alert(90, "payments-api", "PaymentAuthFailures", "firing", 90);
    let unrelated = alert(95, "search", "HighErrorRate", "firing", 95);
    h.push_all(&[change.clone(), symptom.clone(), unrelated]);
    h.advance(200);
    let chains: Vec<_> = h
        .live()
        .into_iter()
        .filter(|v| &*v.rule_id == "cloud-change")
        .collect();
    assert_eq!(chains.len(), 1);
    assert_eq!(chains[0].root_cause_event_id, Some(eid(&change)));
    let members = h.members(&chains[0].incident_id);
    assert_eq!(members.len(), 2);
    let edge = h
        .out
        .edges
        .iter()
        .find(|e| e.event_id == eid(&symptom))
        .expect("edge");
    assert_eq!(&*edge.join_key, "prod/payments-db");
    // Late: the CloudTrail record arrives after the symptom was grouped.
    let mut r = rule("cloud-change", 1800);
    r.join = Join::DependsOn;
    let mut h = Harness::new(vec![r], dependency_catalog(), cloud_classify);
    h.push(&symptom);
    h.advance(150);
    assert_eq!(h.push(&change), PushOutcome::AppliedLate);
    let live = h.live();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].root_cause_event_id, Some(eid(&change)));
}

fn absence_classify(e: &Event) -> Matches {
    Matches {
        cause: u64::from(e.kind == EventKind::Deploy && e.status == "failure"),
        effect: 0,
        follow: u64::from(e.kind == EventKind::Deploy && e.status == "success"),
    }
}

fn absence_rule(require_incident: bool) -> RuleSpec {
    let mut r = rule("failed-deploy-not-recovered", 900);
    r.effect = None;
    r.not_followed_by = Some(Absence {
        predicate: "follow".into(),
        require_incident,
    });
    r.title = "Failed deploy of {entity} not recovered: {cause}".into();
    r
}

#[test]
fn a_cause_not_followed_within_the_window_opens_an_incident_and_a_follow_up_cancels_it() {
    let mut h = Harness::new(
        vec![absence_rule(false)],
        Catalog::default(),
        absence_classify,
    );
    let failed = event(
        "github",
        "d1",
        EventKind::Deploy,
        0,
        "checkout",
        "failure",
        &[],
    );
    h.push(&failed);
    h.advance(800);
    assert!(h.live().is_empty(), "not before the deadline");
    h.advance(901);
    let live = h.live();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].root_cause_event_id, Some(eid(&failed)));
    assert_eq!(
        &*live[0].title,
        "Failed deploy of checkout not recovered: deploy checkout d1"
    );

    let mut h = Harness::new(
        vec![absence_rule(false)],
        Catalog::default(),
        absence_classify,
    );
    h.push_all(&[
        failed,
        event(
            "github",
            "d2",
            EventKind::Deploy,
            600,
            "checkout",
            "success",
            &[],
        ),
    ]);
    h.advance(2000);
    assert!(h.live().is_empty(), "{:#?}", h.live());
}

fn regression_and_rollback(e: &Event) -> Matches {
    let success = e.kind == EventKind::Deploy && e.status == "success";
    Matches {
        cause: u64::from(success) | (u64::from(success) << 1),
        effect: u64::from(e.kind == EventKind::Alert && e.status == "firing"),
        follow: u64::from(e.kind == EventKind::Deploy) << 1,
    }
}

#[test]
fn a_regression_not_rolled_back_escalates_its_incident_and_deploys_without_symptoms_do_nothing() {
    let mut absent = absence_rule(true);
    absent.id = "regression-not-rolled-back".into();
    absent.severity = Severity::Critical;
    absent.title = "Deploy regression on {entity} not rolled back: {alerts}".into();
    let rules = vec![rule("deploy-regression", 1800), absent];
    let mut h = Harness::new(rules.clone(), Catalog::default(), regression_and_rollback);
    h.push_all(&[
        deploy(0, "checkout", "abc"),
        alert(60, "checkout", "HighErrorRate", "firing", 60),
        deploy(0, "search", "def"),
    ]);
    h.advance(2000);
    let live = h.live();
    assert_eq!(live.len(), 1, "{live:#?}");
    assert_eq!(live[0].severity, Severity::Critical);
    assert_eq!(
        &*live[0].title,
        "Deploy regression on checkout not rolled back: HighErrorRate"
    );
    assert_eq!(&*live[0].rule_id, "deploy-regression");
    // Rolled back in time: no escalation.
    let mut h = Harness::new(rules, Catalog::default(), regression_and_rollback);
    h.push_all(&[
        deploy(0, "checkout", "abc"),
        alert(60, "checkout", "HighErrorRate", "firing", 60),
        deploy(300, "checkout", "rollback"),
    ]);
    h.advance(2000);
    assert!(h.live().iter().all(|v| v.severity == Severity::Critical) && h.live().len() == 1);
    let title = &h.live()[0].title;
    assert!(!title.contains("not rolled back"), "{title}");
}

fn restarts_classify(e: &Event) -> Matches {
    Matches {
        cause: u64::from(e.kind == EventKind::Change),
        effect: u64::from(e.kind == EventKind::K8sEvent),
        follow: 0,
    }
}

#[test]
fn a_threshold_rule_links_only_once_enough_effects_fall_in_its_window() {
    let mut r = rule("limits-crashloop", 1800);
    r.threshold = Some(Threshold {
        count: 2,
        within: Duration::from_secs(600),
    });
    let change = event(
        "k8s_audit",
        "a1",
        EventKind::Change,
        0,
        "checkout",
        "succeeded",
        &[],
    );
    let backoff = |secs: i64, n: &str| {
        event(
            "k8s_event",
            n,
            EventKind::K8sEvent,
            secs,
            "checkout",
            "BackOff",
            &[],
        )
    };
    let mut h = Harness::new(vec![r.clone()], Catalog::default(), restarts_classify);
    h.push_all(&[change.clone(), backoff(60, "b1")]);
    h.advance(300);
    assert!(h.live().is_empty(), "one restart is not enough");
    h.push(&backoff(400, "b2"));
    h.advance(800);
    let live = h.live();
    assert_eq!(live.len(), 1, "{live:#?}");
    assert_eq!(live[0].event_count, 3);
    assert_eq!(live[0].root_cause_event_id, Some(eid(&change)));
    // Two restarts further apart than the window do not count.
    let mut h = Harness::new(vec![r], Catalog::default(), restarts_classify);
    h.push_all(&[change, backoff(60, "b1"), backoff(1000, "b2")]);
    h.advance(1200);
    assert!(h.live().is_empty());
}

struct CostValues(f64);

impl RuleValues for CostValues {
    fn join_key(&self, _row: usize, _rule: usize, _side: Side) -> Option<&str> {
        None
    }

    fn rise(&self, _row: usize, _rule: usize) -> Option<(f64, Option<&str>)> {
        Some((self.0, Some("i-1")))
    }
}

#[test]
fn a_rises_rule_links_only_values_above_their_baseline() {
    let mut r = rule("scaling-cost", 3 * 86_400);
    r.effect = Some(Selector {
        predicate: "effect".into(),
        rises: Some(Rise {
            value: "v".into(),
            series: Some("s".into()),
            percent: 20.0,
            baseline: 3,
        }),
    });
    let mut c = Correlator::new(&[r], &Catalog::default(), CorrelatorConfig::default());
    let mut out = Output::default();
    let cost = |day: i64, v: f64| {
        let e = event(
            "cost",
            &format!("row-{day}"),
            EventKind::Cost,
            day * 86_400,
            "checkout",
            "Usage",
            &[],
        );
        (e, v)
    };
    let scale = event(
        "k8s_audit",
        "scale",
        EventKind::Change,
        3 * 86_400 + 10,
        "checkout",
        "succeeded",
        &[],
    );
    let rows = [
        cost(0, 10.0),
        cost(1, 10.5),
        cost(2, 9.5),
        cost(4, 11.0),
        cost(5, 30.0),
    ];
    let m_cost = Matches {
        cause: 0,
        effect: 1,
        follow: 0,
    };
    let m_scale = Matches {
        cause: 1,
        effect: 0,
        follow: 0,
    };
    for (e, v) in &rows[..3] {
        let vals = CostValues(*v);
        c.push(
            &EventRow::from_event(e, m_cost, LATE, &vals).expect("row"),
            &mut out,
        );
    }
    c.push(
        &EventRow::from_event(&scale, m_scale, LATE, &NoValues).expect("row"),
        &mut out,
    );
    for (e, v) in &rows[3..] {
        let vals = CostValues(*v);
        c.push(
            &EventRow::from_event(e, m_cost, LATE, &vals).expect("row"),
            &mut out,
        );
    }
    c.advance(t(6 * 86_400), &mut out);
    let linked: Vec<EventId> = out
        .edges
        .iter()
        .filter(|e| e.role == EdgeRole::Effect)
        .map(|e| e.event_id)
        .collect();
    // 11.0 is within 20% of the 10.0 baseline; 30.0 is not.
    assert_eq!(linked, [eid(&rows[4].0)]);
}

#[test]
fn two_causes_of_one_effect_in_different_incidents_merge_into_the_first() {
    let mut cfg = rule("config-change", 1800);
    cfg.priority = 90;
    let rules = vec![rule("deploy-regression", 1800), cfg];
    fn classify(e: &Event) -> Matches {
        let firing = e.kind == EventKind::Alert && e.status == "firing";
        Matches {
            cause: u64::from(e.kind == EventKind::Deploy)
                | (u64::from(e.kind == EventKind::Change) << 1),
            effect: u64::from(firing) | (u64::from(firing) << 1),
            follow: 0,
        }
    }
    let mut h = Harness::new(rules, Catalog::default(), classify);
    let d = deploy(0, "checkout", "abc");
    let cm = event(
        "k8s_audit",
        "cm",
        EventKind::Change,
        100,
        "checkout",
        "succeeded",
        &[],
    );
    h.push_all(&[
        d.clone(),
        alert(50, "checkout", "A", "firing", 50),
        cm,
        alert(150, "checkout", "B", "firing", 150),
    ]);
    h.advance(300);
    let live = h.live();
    assert_eq!(live.len(), 1, "{live:#?}");
    // The deploy's rule has the higher priority: it is the root.
    assert_eq!(live[0].root_cause_event_id, Some(eid(&d)));
    assert_eq!(live[0].event_count, 4);
}

#[test]
fn quiet_incidents_without_alerts_resolve_after_their_window() {
    let mut r = rule("limits-crashloop", 1800);
    r.resolve_after = Some(Duration::from_secs(600));
    let mut h = Harness::new(vec![r], Catalog::default(), restarts_classify);
    h.push_all(&[
        event(
            "k8s_audit",
            "a1",
            EventKind::Change,
            0,
            "checkout",
            "succeeded",
            &[],
        ),
        event(
            "k8s_event",
            "b1",
            EventKind::K8sEvent,
            60,
            "checkout",
            "BackOff",
            &[],
        ),
    ]);
    h.advance(600);
    assert_eq!(h.live()[0].state, IncidentState::Open);
    h.advance(700);
    let live = h.live();
    assert_eq!(live[0].state, IncidentState::Resolved);
    assert_eq!(live[0].resolved_at, Some(t(660)));
}

#[test]
fn snapshot_and_restore_resume_with_identical_output() {
    let events = [
        deploy(0, "checkout", "abc"),
        alert(60, "checkout", "HighErrorRate", "firing", 60),
        alert(90, "search", "Disk", "firing", 90),
        alert(200, "checkout", "HighErrorRate", "resolved", 60),
        alert(300, "checkout", "Latency", "firing", 300),
    ];
    let mut whole = Harness::deploys();
    whole.push_all(&events[..2]);
    whole.advance(70);
    whole.push_all(&events[2..]);
    whole.advance(5000);

    let mut first = Harness::deploys();
    first.push_all(&events[..2]);
    first.advance(70);
    let snap = first.c.snapshot().expect("snapshot");
    let mut second = Harness::deploys();
    second.c.restore(&snap).expect("restore");
    second.push_all(&events[2..]);
    second.advance(5000);
    let mut joined = first.out.clone();
    joined.extend(second.out.clone());
    assert_eq!(joined, whole.out);
}

#[test]
fn a_snapshot_is_written_as_the_struct_it_is_read_back_as() {
    let mut h = Harness::deploys();
    assert_eq!(
        h.c.snapshot().expect("snapshot"),
        h.c.snapshot_encoded_whole()
    );
    // A state whose encoding is longer than a one-byte length.
    h.push_all(&[
        deploy(0, "checkout", "d1"),
        alert(60, "checkout", "HighErrorRate", "firing", 60),
        alert(90, "search", "Disk", "firing", 90),
    ]);
    let snap = h.c.snapshot().expect("snapshot");
    assert!(snap.len() > 300, "{}", snap.len());
    assert_eq!(snap, h.c.snapshot_encoded_whole());
    Harness::deploys().c.restore(&snap).expect("restore");
}

#[test]
fn a_snapshot_of_other_rules_is_refused() {
    let h = Harness::deploys();
    let snap = h.c.snapshot().expect("snapshot");
    let mut other = Correlator::new(
        &[rule("something-else", 60)],
        &Catalog::default(),
        CorrelatorConfig::default(),
    );
    let err = other.restore(&snap).expect_err("other rules");
    assert!(err.to_string().contains("deploy-regression@1"), "{err}");
}

#[test]
fn the_hard_cap_evicts_the_oldest_effects_and_counts_them() {
    let cfg = CorrelatorConfig {
        max_buffered: 50,
        ..CorrelatorConfig::default()
    };
    let mut c = Correlator::new(&[rule("deploy-regression", 1800)], &Catalog::default(), cfg);
    let mut out = Output::default();
    for i in 0..200 {
        let e = alert(i, &format!("svc-{}", i % 7), "X", "firing", i);
        let row = EventRow::from_event(&e, deploy_regression(&e), LATE, &NoValues).expect("row");
        c.push(&row, &mut out);
        c.advance(t(i), &mut out);
    }
    let stats = c.stats();
    assert!(stats.buffered() <= 50, "{stats:?}");
    assert!(stats.evicted_cap > 0, "{stats:?}");
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn arb_event() -> impl Strategy<Value = Event> {
        (0u8..4, 0i64..3000, 0usize..3, 0usize..3).prop_map(|(k, secs, ent, name)| {
            let entity = ["checkout", "payments", "search"][ent];
            let alertname = ["HighErrorRate", "HighLatency", "Crash"][name];
            match k {
                0 => deploy(secs, entity, &format!("sha{secs}{entity}")),
                1 => alert(
                    secs,
                    entity,
                    alertname,
                    "resolved",
                    secs.saturating_sub(120).max(0),
                ),
                _ => alert(secs, entity, alertname, "firing", secs),
            }
        })
    }

    /// Runs events in batches, advancing the watermark after each batch to a
    /// point that keeps every later event ahead of it (so none is late).
    fn run(batches: &[Vec<Event>], bound: &dyn Fn(usize) -> i64) -> Vec<IncidentVersion> {
        let mut h = Harness::deploys();
        for (i, batch) in batches.iter().enumerate() {
            h.push_all(batch);
            h.advance(bound(i));
        }
        h.advance(100_000);
        let mut v = h.out.incidents.clone();
        v.sort_by(|a, b| (&a.incident_id, a.version).cmp(&(&b.incident_id, b.version)));
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Shuffling within the watermark, re-batching and duplicating events
        /// gives byte-identical incident versions.
        #[test]
        fn arrival_order_batching_and_duplicates_do_not_change_incidents(
            events in proptest::collection::vec(arb_event(), 1..60),
            seed in any::<u64>(),
            cuts in proptest::collection::vec(0usize..60, 0..6),
            dups in proptest::collection::vec(0usize..60, 0..10),
        ) {
            let mut sorted = events.clone();
            sorted.sort_by_key(|e| e.time);
            let baseline = run(&[sorted.clone()], &|_| 0);

            // Cut the event-time line at `cuts`; within each segment, shuffle and
            // duplicate; the watermark after a segment stays below the next one.
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (sorted.len() + 1)).collect();
            bounds.push(sorted.len());
            bounds.sort_unstable();
            bounds.dedup();
            let mut batches = Vec::new();
            let mut start = 0;
            let mut rng = seed;
            for &end in &bounds {
                let mut seg: Vec<Event> = sorted[start..end].to_vec();
                for d in &dups {
                    if !seg.is_empty() {
                        let copy = seg[d % seg.len()].clone();
                        seg.push(copy);
                    }
                }
                for i in (1..seg.len()).rev() {
                    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
                    seg.swap(i, (rng % (i as u64 + 1)) as usize);
                }
                batches.push(seg);
                start = end;
            }
            let next_min: Vec<i64> = (0..batches.len())
                .map(|i| {
                    batches[i + 1..]
                        .iter()
                        .flatten()
                        .map(|e| (e.time.as_micros() - t(0).as_micros()) / 1_000_000)
                        .min()
                        .map_or(0, |m| m - 1)
                })
                .collect();
            let shuffled = run(&batches, &|i| next_min[i]);
            prop_assert_eq!(shuffled, baseline);
        }

        /// Releasing a large buffer in bounded steps ([`Correlator::release_bound`])
        /// gives exactly the output of one jump, in the same order.
        #[test]
        fn releasing_in_bounded_steps_equals_one_jump(
            events in proptest::collection::vec(arb_event(), 1..60),
            step in 1usize..8,
        ) {
            let mut whole = Harness::deploys();
            whole.push_all(&events);
            whole.advance(100_000);

            let mut stepped = Harness::deploys();
            stepped.push_all(&events);
            let target = t(100_000);
            let mut steps = 0;
            loop {
                let w = stepped.c.release_bound(target, step);
                prop_assert!(stepped.c.watermark().is_none_or(|cur| w > cur));
                stepped.c.advance(w, &mut stepped.out);
                steps += 1;
                if w == target {
                    break;
                }
            }
            prop_assert_eq!(stepped.c.pending_len(), 0);
            // More distinct event times than `step` cannot go in one step.
            let times: std::collections::BTreeSet<_> = events.iter().map(|e| e.time).collect();
            prop_assert!(times.len() <= step || steps > 1);
            prop_assert_eq!(stepped.out, whole.out);
        }

        /// A snapshot and restore at any point gives the same output as an
        /// uninterrupted run.
        #[test]
        fn snapshot_and_restore_anywhere_is_invisible(
            events in proptest::collection::vec(arb_event(), 1..40),
            at in 0usize..40,
        ) {
            let mut sorted = events;
            sorted.sort_by_key(|e| e.time);
            let cut = at % (sorted.len() + 1);
            let mid = sorted.get(cut).map_or(100_000, |e| (e.time.as_micros() - t(0).as_micros()) / 1_000_000 - 1);
            let mut whole = Harness::deploys();
            whole.push_all(&sorted[..cut]);
            whole.advance(mid);
            whole.push_all(&sorted[cut..]);
            whole.advance(100_000);

            let mut a = Harness::deploys();
            a.push_all(&sorted[..cut]);
            a.advance(mid);
            let snap = a.c.snapshot().expect("snapshot");
            let mut b = Harness::deploys();
            b.c.restore(&snap).expect("restore");
            b.push_all(&sorted[cut..]);
            b.advance(100_000);
            let mut joined = a.out.clone();
            joined.extend(b.out);
            prop_assert_eq!(joined, whole.out);
        }
    }
}

#[test]
fn release_bound_stops_at_the_nth_buffered_event() {
    let mut h = Harness::deploys();
    let events: Vec<Event> = (0..10)
        .map(|i| {
            alert(
                100 + i * 10,
                "checkout",
                "HighErrorRate",
                "firing",
                100 + i * 10,
            )
        })
        .collect();
    // Pushed out of order: the bound is over event time, not arrival.
    h.push_all(&events[5..]);
    h.push_all(&events[..5]);
    assert_eq!(h.c.release_bound(t(10_000), 3), t(120));
    assert_eq!(
        h.c.release_bound(t(115), 3),
        t(115),
        "the target when nearer"
    );
    assert_eq!(
        h.c.release_bound(t(10_000), 10),
        t(10_000),
        "all fit in one step"
    );
    h.advance(120);
    assert_eq!(h.c.pending_len(), 7);
    assert_eq!(h.c.release_bound(t(10_000), 3), t(150));
}

#[test]
fn each_version_carries_only_the_evidence_it_added() {
    let version = |id: &str, v: u32| IncidentVersion {
        incident_id: id.into(),
        version: v,
        state: IncidentState::Open,
        title: "t".into(),
        severity: Severity::Warning,
        rule_id: "r".into(),
        rule_version: 1,
        scope: "s".into(),
        entity: "e".into(),
        root_cause_event_id: None,
        opened_at: EventTime::from_micros(0),
        updated_at: EventTime::from_micros(0),
        resolved_at: None,
        event_count: 1,
        merged_into: None,
    };
    let edge = |id: &str, n: u64| IncidentEdge {
        incident_id: id.into(),
        event_id: EventId::parse(&format!("evt_{n:032x}")).expect("id"),
        role: EdgeRole::Effect,
        linked_by: "r".into(),
        rule_version: 1,
        cause_event_id: None,
        lag_seconds: 0.0,
        join_key: "s/e".into(),
        time: EventTime::from_micros(0),
    };
    // a: edges 1, 2 → v1; b: edge 3 → v1; a: edge 4 → v2; a: edge 5 after its last version.
    let mut out = Output::default();
    out.edges.extend([edge("a", 1), edge("a", 2), edge("b", 3)]);
    out.edge_marks.extend([3, 3]);
    out.incidents.extend([version("a", 1), version("b", 1)]);
    out.edges.push(edge("a", 4));
    out.edge_marks.push(4);
    out.incidents.push(version("a", 2));
    out.edges.push(edge("a", 5));
    // Appending keeps the marks pointing at the same edges.
    let mut all = Output::default();
    all.edges.push(edge("c", 9));
    all.extend(out);
    let ids: Vec<Vec<String>> = all
        .edges_by_version()
        .iter()
        .map(|es| es.iter().map(|e| e.event_id.to_string()).collect())
        .collect();
    let id = |n: u64| format!("evt_{n:032x}");
    assert_eq!(
        ids,
        vec![vec![id(1), id(2)], vec![id(3)], vec![id(4), id(5)]]
    );
}
