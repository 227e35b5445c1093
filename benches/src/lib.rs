//! A seeded workload generator shared by benchmarks, the load harness and tests: a
//! realistic mix over many services and clusters — background alert noise that
//! fires, is re-sent Alertmanager-style and resolves; healthy deploys; Kubernetes
//! event noise; daily cost rows — with causal scenarios woven in at a chosen
//! density: deploy regressions, GitOps drift (kubectl edit → OutOfSync → alerts),
//! resource-limit changes → OOMKilled/BackOff, CloudTrail changes → alerts on
//! dependent services, config map changes → alerts, exec into a pod → Falco.
//!
//! The same seed gives the same events. Events come in event-time order with a
//! small arrival jitter; each scenario knows the incident it should produce, so
//! tests can check correlation against ground truth.

use std::collections::BTreeMap;

pub mod wire;

use causeway_engine::{Operator, WatermarkConfig};
use causeway_rules::{
    Catalog, CorrelatorConfig, Event, EventKind, EventTime, ProcessingTime, RulePack, ServiceEntry,
    Severity,
};

/// Shape of a generated workload.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub seed: u64,
    /// Events to generate (re-sends included).
    pub events: usize,
    pub services: usize,
    pub clusters: usize,
    /// Events per second of event time (how dense the stream is).
    pub rate: f64,
    /// Causal scenarios started per hour of event time.
    pub scenarios_per_hour: f64,
    /// Healthy deploys per hour of event time.
    pub deploys_per_hour: f64,
    /// Fraction of events that are re-sends (or resolutions) of alerts.
    pub resend_ratio: f64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            seed: 42,
            events: 100_000,
            services: 200,
            clusters: 3,
            rate: 200.0,
            scenarios_per_hour: 60.0,
            deploys_per_hour: 120.0,
            resend_ratio: 0.3,
        }
    }
}

/// A small, fast, seeded PRNG (xorshift64*): benchmark inputs must not depend on
/// a library's algorithm changes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// Exponentially distributed with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        let u = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        -mean * u.ln()
    }
}

/// Alert names of the background noise.
pub const NOISE_ALERTS: [&str; 8] = [
    "HighLatencyP99",
    "SaturationHigh",
    "QueueBacklog",
    "CertificateExpiringSoon",
    "KubeHpaMaxedOut",
    "TargetDown",
    "HighErrorRate",
    "DiskAlmostFull",
];

const SYMPTOMS: [&str; 4] = [
    "HighErrorRate",
    "HighLatencyP99",
    "KubePodCrashLooping",
    "PaymentAuthFailures",
];

/// Service `i`'s name; every tenth service is a database others depend on.
pub fn service_name(i: usize) -> String {
    if i % 10 == 9 {
        format!("db-{i:04}")
    } else {
        format!("svc-{i:04}")
    }
}

/// The catalog of a workload: each application service depends on the database
/// of its group of ten.
pub fn catalog(w: &Workload) -> Catalog {
    let services = (0..w.services)
        .map(|i| {
            let name = service_name(i);
            let db = (i / 10) * 10 + 9;
            let is_db = i % 10 == 9;
            ServiceEntry {
                name: name.clone(),
                namespace: Some("prod".into()),
                resources: if is_db {
                    vec![format!("arn:aws:rds:eu-west-1:111122223333:db:{name}")]
                } else {
                    vec![]
                },
                depends_on: if !is_db && db < w.services {
                    vec![service_name(db)]
                } else {
                    vec![]
                },
                ..ServiceEntry::default()
            }
        })
        .collect();
    Catalog {
        default_cluster: "cluster-0".into(),
        services,
        ..Catalog::default()
    }
}

/// The scenarios the generator weaves in, and the rule that should explain each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    DeployRegression,
    GitopsDrift,
    LimitsCrashloop,
    CloudChange,
    ConfigChange,
    ExecRuntime,
}

impl Scenario {
    /// The rule of the built-in pack whose incident this scenario is.
    pub fn rule(self) -> &'static str {
        match self {
            Scenario::DeployRegression => "deploy-regression",
            Scenario::GitopsDrift => "gitops-manual-change",
            Scenario::LimitsCrashloop => "limits-change-crashloop",
            Scenario::CloudChange => "cloud-change-dependents",
            Scenario::ConfigChange => "config-change-alerts",
            Scenario::ExecRuntime => "exec-runtime-alert",
        }
    }
}

/// A generated stream and its ground truth.
#[derive(Debug, Clone)]
pub struct Generated {
    /// In arrival order.
    pub events: Vec<Event>,
    /// Each scenario injected: its kind and the id of its root cause event.
    pub scenarios: Vec<(Scenario, String)>,
}

struct Gen<'a> {
    w: &'a Workload,
    rng: Rng,
    out: Vec<Event>,
    /// Firing alerts: (event index, resolve at).
    firing: Vec<(usize, i64)>,
    /// The same, by end time: each is resolved one `group_interval` after its end
    /// at the latest, as Alertmanager does.
    due: std::collections::BTreeSet<(i64, usize)>,
    /// Entities that carry a scenario until this time: noise stays off them, so
    /// ground truth is unambiguous.
    busy: BTreeMap<(usize, usize), i64>,
    scenarios: Vec<(Scenario, String)>,
    seq: u64,
}

const START: i64 = 1_714_557_600_000_000;
const SEC: i64 = 1_000_000;
/// Alertmanager's default `group_interval`: a resolution goes out at the next one
/// after the alert ends.
const GROUP_INTERVAL: i64 = 300 * SEC;

impl Gen<'_> {
    fn next_id(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        source: &str,
        kind: EventKind,
        t: i64,
        cluster: usize,
        entity: &str,
        status: &str,
        severity: Severity,
        summary: String,
        attributes: &[(&str, &str)],
    ) -> usize {
        let sid = format!("{source}-{}", self.next_id());
        self.event_with_id(
            source, &sid, kind, t, cluster, entity, status, severity, summary, attributes,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn event_with_id(
        &mut self,
        source: &str,
        sid: &str,
        kind: EventKind,
        t: i64,
        cluster: usize,
        entity: &str,
        status: &str,
        severity: Severity,
        summary: String,
        attributes: &[(&str, &str)],
    ) -> usize {
        self.out.push(Event {
            id: Event::derive_id(source, sid, status),
            source: source.into(),
            source_event_id: sid.into(),
            kind,
            time: EventTime::from_micros(t),
            ingested_at: ProcessingTime::from_micros(t),
            scope: format!("cluster-{cluster}"),
            entity: entity.into(),
            severity,
            status: status.into(),
            summary,
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            raw: "{}".into(),
        });
        self.out.len() - 1
    }

    fn alert(&mut self, t: i64, cluster: usize, entity: &str, name: &str, sev: Severity) -> usize {
        self.event(
            "alertmanager",
            EventKind::Alert,
            t,
            cluster,
            entity,
            "firing",
            sev,
            format!("{name} on {entity}"),
            &[("alertname", name)],
        )
    }

    /// A (cluster, service) no scenario or healthy deploy holds at `t`.
    fn free_service(&mut self, t: i64) -> Option<(usize, usize)> {
        for _ in 0..64 {
            let c = self.rng.below(self.w.clusters as u64) as usize;
            let s = self.rng.below(self.w.services as u64) as usize;
            if self.busy.get(&(c, s)).is_none_or(|until| *until < t) {
                return Some((c, s));
            }
        }
        None
    }

    fn scenario(&mut self, t: i64) {
        let Some((c, s)) = self.free_service(t) else {
            return;
        };
        let name = service_name(s);
        let kinds = [
            Scenario::DeployRegression,
            Scenario::DeployRegression,
            Scenario::GitopsDrift,
            Scenario::LimitsCrashloop,
            Scenario::CloudChange,
            Scenario::ConfigChange,
            Scenario::ExecRuntime,
        ];
        let kind = kinds[self.rng.below(kinds.len() as u64) as usize];
        let min = 60 * SEC;
        self.busy.insert((c, s), t + 45 * min);
        let root = match kind {
            Scenario::DeployRegression => {
                let sha = format!("{:07x}", self.rng.below(1 << 28));
                let root = self.event(
                    "github",
                    EventKind::Deploy,
                    t,
                    c,
                    &name,
                    "success",
                    Severity::None,
                    format!("deploy {name} {sha}"),
                    &[("sha", &sha)],
                );
                for k in 0..2 + self.rng.below(3) as i64 {
                    let at = t + (k + 1) * min + self.rng.below(60) as i64 * SEC;
                    let sym = SYMPTOMS[self.rng.below(3) as usize];
                    let i = self.alert(at, c, &name, sym, Severity::Critical);
                    self.fire(i, at + 20 * min);
                }
                root
            }
            Scenario::GitopsDrift => {
                let root = self.event(
                    "k8s_audit",
                    EventKind::Change,
                    t,
                    c,
                    &name,
                    "succeeded",
                    Severity::Info,
                    format!("oncall (human) patch deployments prod/{name}"),
                    &[("actor_type", "human"), ("resource", "deployments")],
                );
                self.event(
                    "argocd",
                    EventKind::Change,
                    t + 30 * SEC,
                    c,
                    &name,
                    "out_of_sync",
                    Severity::Warning,
                    format!("Argo CD application {name} is OutOfSync with Git"),
                    &[("app", &name)],
                );
                let i = self.alert(t + 3 * min, c, &name, "HighErrorRate", Severity::Critical);
                self.fire(i, t + 25 * min);
                root
            }
            Scenario::LimitsCrashloop => {
                let root = self.event(
                    "k8s_audit",
                    EventKind::Change,
                    t,
                    c,
                    &name,
                    "succeeded",
                    Severity::Info,
                    format!("deployer (service_account) patch deployments prod/{name}"),
                    &[
                        ("actor_type", "service_account"),
                        ("resource", "deployments"),
                        ("change.memory_limit", "128Mi"),
                    ],
                );
                for (k, reason) in ["OOMKilling", "BackOff", "BackOff"].iter().enumerate() {
                    self.event(
                        "k8s_event",
                        EventKind::K8sEvent,
                        t + (2 + k as i64) * min,
                        c,
                        &name,
                        reason,
                        Severity::Error,
                        format!("{reason}: container of {name}"),
                        &[("reason", reason)],
                    );
                }
                root
            }
            Scenario::CloudChange => {
                // A database of the group, and a service that depends on it. Its
                // whole group is kept quiet: any alert on a dependent would be the
                // change's too.
                let group = (s / 10) * 10;
                let members: Vec<usize> = (group..(group + 10).min(self.w.services)).collect();
                if members
                    .iter()
                    .any(|m| self.busy.get(&(c, *m)).is_some_and(|until| *until >= t))
                {
                    return;
                }
                for m in &members {
                    self.busy.insert((c, *m), t + 45 * min);
                }
                let db_name = service_name(group + 9);
                if group + 9 >= self.w.services {
                    return;
                }
                let root = self.event(
                    "cloudtrail",
                    EventKind::Change,
                    t,
                    c,
                    &db_name,
                    "succeeded",
                    Severity::Info,
                    format!("ops ModifyDBInstance on {db_name}"),
                    &[("event_name", "ModifyDBInstance")],
                );
                let dependent = service_name(group + (s % 9));
                let i = self.alert(
                    t + 2 * min,
                    c,
                    &dependent,
                    "PaymentAuthFailures",
                    Severity::Critical,
                );
                self.fire(i, t + 15 * min);
                root
            }
            Scenario::ConfigChange => {
                let root = self.event(
                    "k8s_audit",
                    EventKind::Change,
                    t,
                    c,
                    &name,
                    "succeeded",
                    Severity::Info,
                    format!("ci (service_account) update configmaps prod/{name}-config"),
                    &[
                        ("actor_type", "service_account"),
                        ("resource", "configmaps"),
                        ("change.keys", "FEATURE_FLAG"),
                    ],
                );
                let i = self.alert(t + 2 * min, c, &name, "HighErrorRate", Severity::Critical);
                self.fire(i, t + 12 * min);
                root
            }
            Scenario::ExecRuntime => {
                let root = self.event(
                    "k8s_audit",
                    EventKind::Audit,
                    t,
                    c,
                    &name,
                    "succeeded",
                    Severity::Warning,
                    format!("someone (human) exec pods prod/{name}-5f4b9c7d8-bcdfg"),
                    &[("actor_type", "human"), ("subresource", "exec")],
                );
                let i = self.event(
                    "alertmanager",
                    EventKind::Alert,
                    t + 20 * SEC,
                    c,
                    &name,
                    "firing",
                    Severity::Critical,
                    format!("Terminal shell in container {name}"),
                    &[("alertname", "FalcoAlert"), ("source", "falco")],
                );
                self.fire(i, t + 10 * min);
                root
            }
        };
        let id = self.out[root].id.clone();
        self.scenarios.push((kind, id));
    }

    fn healthy_deploy(&mut self, t: i64) {
        let Some((c, s)) = self.free_service(t) else {
            return;
        };
        let name = service_name(s);
        let sha = format!("{:07x}", self.rng.below(1 << 28));
        let source = if self.rng.chance(0.5) {
            "github"
        } else {
            "argocd"
        };
        self.event(
            source,
            EventKind::Deploy,
            t,
            c,
            &name,
            "success",
            Severity::None,
            format!("deploy {name} {sha}"),
            &[("sha", &sha)],
        );
        // A healthy deploy: nothing may fire on it for its window.
        self.busy.insert((c, s), t + 31 * 60 * SEC);
    }

    fn noise(&mut self, t: i64) {
        let Some((c, s)) = self.free_service(t) else {
            return;
        };
        let name = service_name(s);
        if self.rng.chance(0.05) {
            self.event(
                "k8s_event",
                EventKind::K8sEvent,
                t,
                c,
                &name,
                "Unhealthy",
                Severity::Warning,
                format!("Unhealthy: readiness probe of {name} failed"),
                &[("reason", "Unhealthy")],
            );
        } else {
            let alert = NOISE_ALERTS[self.rng.below(NOISE_ALERTS.len() as u64) as usize];
            let sev = if self.rng.chance(0.2) {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let i = self.alert(t, c, &name, alert, sev);
            let lasts = self.rng.exp(600.0) as i64 * SEC;
            self.fire(i, t + lasts);
        }
    }

    fn fire(&mut self, i: usize, until: i64) {
        self.firing.push((i, until));
        self.due.insert((until, i));
    }

    /// Resolves the alert that ended longest ago if a `group_interval` has passed
    /// since its end; whether it did.
    fn resolve_due(&mut self, t: i64) -> bool {
        let Some(&(until, i)) = self.due.first() else {
            return false;
        };
        if until + GROUP_INTERVAL > t {
            return false;
        }
        match self.firing.iter().position(|(j, _)| *j == i) {
            Some(k) => {
                self.resolve(k, t);
                true
            }
            None => {
                self.due.remove(&(until, i));
                false
            }
        }
    }

    fn resolve(&mut self, k: usize, t: i64) {
        let (i, until) = self.firing.swap_remove(k);
        self.due.remove(&(until, i));
        // Resolution: same identity, status resolved, at its end.
        let mut e = self.out[i].clone();
        e.status = "resolved".into();
        e.id = Event::derive_id(&e.source, &e.source_event_id, "resolved");
        e.time = EventTime::from_micros(until.max(e.time.as_micros()));
        e.ingested_at = ProcessingTime::from_micros(t);
        self.out.push(e);
    }

    fn resend_or_resolve(&mut self, t: i64) -> bool {
        if self.firing.is_empty() {
            return false;
        }
        let k = self.rng.below(self.firing.len() as u64) as usize;
        let (i, until) = self.firing[k];
        if until <= t {
            self.resolve(k, t);
        } else {
            // A re-send keeps the first delivery's identity.
            let mut e = self.out[i].clone();
            e.ingested_at = ProcessingTime::from_micros(t);
            self.out.push(e);
        }
        true
    }
}

/// Generates a workload with its ground truth.
pub fn generate_with_truth(w: &Workload) -> Generated {
    let mut g = Gen {
        w,
        rng: Rng::new(w.seed),
        out: Vec::with_capacity(w.events + 16),
        firing: Vec::new(),
        due: std::collections::BTreeSet::new(),
        busy: BTreeMap::new(),
        scenarios: Vec::new(),
        seq: 0,
    };
    let mean_gap = 1e6 / w.rate.max(1e-3);
    let mut t = START;
    while g.out.len() < w.events {
        t += g.rng.exp(mean_gap) as i64;
        // Resolutions that are due come out in time: at a re-send that finds the
        // alert ended, or one group interval after its end at the latest.
        if g.resolve_due(t) || (g.rng.chance(w.resend_ratio) && g.resend_or_resolve(t)) {
            continue;
        }
        let per_moment = 1.0 / 3600.0 / w.rate.max(1e-3);
        if g.rng.chance(w.scenarios_per_hour * per_moment) {
            g.scenario(t);
        } else if g.rng.chance(w.deploys_per_hour * per_moment) {
            g.healthy_deploy(t);
        } else {
            g.noise(t);
        }
    }
    let mut events = g.out;
    events.truncate(w.events);
    // Arrival order: by ingestion time, a little jitter; scenario events were
    // generated ahead of their time and take their place.
    let mut keyed: Vec<(i64, usize, Event)> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| (e.ingested_at.as_micros().max(e.time.as_micros()), i, e))
        .collect();
    keyed.sort_by_key(|(at, i, _)| (*at, *i));
    let events = keyed
        .into_iter()
        .map(|(at, _, mut e)| {
            e.ingested_at = ProcessingTime::from_micros(at);
            e
        })
        .collect();
    let scenarios = g.scenarios;
    Generated { events, scenarios }
}

/// Generates a workload's events, in arrival order.
pub fn generate(w: &Workload) -> Vec<Event> {
    generate_with_truth(w).events
}

/// The correlation operator as the engine runs it on one partition: the built-in
/// pack, the workload's catalog, default correlator and watermark settings.
pub fn operator_for(w: &Workload) -> Operator {
    let pack = RulePack::builtin().expect("the built-in pack is valid");
    Operator::new(
        &pack,
        &catalog(w),
        CorrelatorConfig::default(),
        WatermarkConfig::default(),
    )
    .expect("the built-in pack compiles")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let w = Workload {
            events: 3000,
            rate: 2.0,
            ..Workload::default()
        };
        assert_eq!(generate(&w), generate(&w));
        let other = generate(&Workload { seed: 7, ..w });
        assert_ne!(generate(&w), other);
        let events = generate(&w);
        assert_eq!(events.len(), 3000);
        for kind in [
            EventKind::Deploy,
            EventKind::Alert,
            EventKind::Change,
            EventKind::K8sEvent,
        ] {
            assert!(events.iter().any(|e| e.kind == kind), "{kind:?}");
        }
        assert!(events.iter().any(|e| e.status == "resolved"));
        // Arrival order is ingestion order.
        assert!(
            events
                .windows(2)
                .all(|p| p[0].ingested_at <= p[1].ingested_at)
        );
    }

    #[test]
    fn the_default_pack_finds_every_injected_problem_and_nothing_else() {
        use causeway_engine::examples::final_incidents;
        use causeway_engine::schema::events_batch;
        use causeway_rules::Output;

        let w = Workload {
            events: 20_000,
            services: 400,
            rate: 5.0,
            scenarios_per_hour: 400.0,
            ..Workload::default()
        };
        let truth = generate_with_truth(&w);
        let mut op = operator_for(&w);
        let mut out = Output::default();
        for chunk in truth.events.chunks(512) {
            let batch = events_batch(chunk).expect("batch");
            let now = chunk.last().map_or(ProcessingTime::MIN, |e| e.ingested_at);
            op.push_batch(&batch, now, &mut out).expect("push");
        }
        let end = truth.events.iter().map(|e| e.time).max().expect("events");
        op.finish(end.plus(std::time::Duration::from_secs(3600)), &mut out);
        let incidents = final_incidents(&out);
        let roots: BTreeMap<String, Scenario> = truth
            .scenarios
            .iter()
            .map(|(k, id)| (id.clone(), *k))
            .collect();
        // The tail of the stream may cut a scenario short: judge those that had
        // their whole story inside it.
        let cut = end.minus(std::time::Duration::from_secs(2400));
        let mut found = 0;
        for (kind, root) in &truth.scenarios {
            let Some(root_event) = truth.events.iter().find(|e| &e.id == root) else {
                continue;
            };
            if root_event.time > cut {
                continue;
            }
            let hit = incidents.iter().find(|f| {
                f.latest
                    .root_cause_event_id
                    .map(|r| r.to_string())
                    .as_deref()
                    == Some(root)
            });
            let hit = hit.unwrap_or_else(|| {
                let holder = incidents
                    .iter()
                    .find(|f| f.members().iter().any(|m| &m.to_string() == root))
                    .map(|f| {
                        format!(
                            "{:?} rooted at {:?}",
                            f.latest.title, f.latest.root_cause_event_id
                        )
                    });
                panic!("no incident for {kind:?} rooted at {root}; it is in {holder:?}")
            });
            assert_eq!(&*hit.latest.rule_id, kind.rule(), "{kind:?} {root}");
            found += 1;
        }
        assert!(found >= 30, "only {found} scenarios judged");
        for f in &incidents {
            let members: Vec<String> = f.members().iter().map(|m| m.to_string()).collect();
            let scenario_roots = members.iter().filter(|m| roots.contains_key(*m)).count();
            assert!(
                scenario_roots <= 1,
                "{} merges unrelated problems: {members:?}",
                f.latest.incident_id
            );
            if &*f.latest.rule_id != "alert-group" {
                let root = f.latest.root_cause_event_id.map(|r| r.to_string());
                assert!(
                    root.as_ref().is_some_and(|r| roots.contains_key(r)),
                    "{} ({}) is rooted outside any injected problem",
                    f.latest.incident_id,
                    f.latest.title
                );
            }
        }
    }
}
