//! Decoding throughput per source, as events per second: realistic payloads through
//! the real decoders of `causeway_connectors::decode`, with the seeded workload's
//! catalog (200 services) so identity lookups do the work they do in production.
//!
//! Each benchmark decodes 1 000 distinct records per iteration, grouped as their
//! senders group them:
//! - `alertmanager`: 50 webhooks (`version: "4"`) of 20 alerts each;
//! - `github_deployment_status`: 1 000 deliveries, each a full GitHub payload;
//! - `argocd`: 1 000 notifications of the template in `deploy/argocd/`;
//! - `k8s_audit_jsonl`: an audit log file, one `Event` per line (`causeway import`);
//! - `k8s_audit_eventlist`: the same records as the API server's audit webhook
//!   sends them, `EventList`s of up to 400;
//! - `k8s_events`: core/v1 `EventList`s of 100;
//! - `cloudtrail`: four `{"Records": [...]}` files of 250;
//! - `focus_csv`: one FOCUS 1.0 CSV export of 1 000 rows;
//! - `cloudevents`: batches of 100 of the workload generator's events.
//!
//! Every audit record is one that is counted (a change, an exec, a secret read), so
//! events and records agree. Before timing, each payload set is decoded once and
//! must give exactly 1 000 events with 1 000 distinct ids.
//!
//! Run: `cargo bench --profile release -p causeway -p causeway-benches --bench decode`

use std::collections::BTreeSet;
use std::hint::black_box;

use causeway_benches::{Rng, Workload, catalog, generate, service_name};
use causeway_connectors::decode::{
    DecodeContext, alertmanager, argocd, cloudevents, cloudtrail, cost, github, k8s_audit,
    k8s_events,
};
use causeway_connectors::import::{self, ImportFormat};
use causeway_rules::{Catalog, Event, EventTime, IndexedCatalog, ProcessingTime};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The binary's allocator, so decoding is measured as it runs in `causeway`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use serde_json::{Map, Value, json};

/// Records (and so events) per payload set.
const RECORDS: usize = 1_000;
const SEED: u64 = 42;
const SERVICES: usize = 200;
const CLUSTERS: usize = 3;
/// 2024-05-01T10:00:00Z, in microseconds: where the workload generator starts.
const T0: i64 = 1_714_557_600_000_000;
const SEC: i64 = 1_000_000;
/// The AWS account the workloads run in; the catalog maps it to `cluster-0`.
const ACCOUNT: &str = "111122223333";

type DecodeFn = fn(&[u8], &DecodeContext<'_>) -> causeway_connectors::Result<Vec<Event>>;

/// One source's payloads and the decoder its receiver calls.
struct Case {
    name: &'static str,
    bodies: Vec<Vec<u8>>,
    decode: DecodeFn,
}

fn bench(c: &mut Criterion) {
    let catalog = IndexedCatalog::new(bench_catalog());
    let cx = DecodeContext {
        catalog: &catalog,
        cluster_hint: None,
        received_at: ProcessingTime::from_micros(T0 + 3_600 * SEC),
    };
    let mut rng = Rng::new(SEED);
    let audit = k8s_audit_records(&mut rng);
    let cases = [
        Case {
            name: "alertmanager",
            bodies: alertmanager_webhooks(&mut rng, 20),
            decode: alertmanager::decode,
        },
        Case {
            name: "github_deployment_status",
            bodies: github_deployment_statuses(&mut rng),
            decode: |body, cx| {
                github::decode(
                    "deployment_status",
                    Some("6b2f5e30-07b7-11ef-8a1c-9f4c2b7d1e55"),
                    body,
                    cx,
                )
            },
        },
        Case {
            name: "argocd",
            bodies: argocd_notifications(&mut rng),
            decode: argocd::decode,
        },
        Case {
            name: "k8s_audit_jsonl",
            bodies: vec![audit.join("\n").into_bytes()],
            decode: |body, cx| import::decode(ImportFormat::K8sAudit, body, cx),
        },
        Case {
            name: "k8s_audit_eventlist",
            bodies: audit
                .chunks(400)
                .map(|items| {
                    format!(
                        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#,
                        items.join(",")
                    )
                    .into_bytes()
                })
                .collect(),
            decode: |body, cx| k8s_audit::decode(body, cx).map(|d| d.events),
        },
        Case {
            name: "k8s_events",
            bodies: k8s_event_lists(&mut rng, 100),
            decode: k8s_events::decode,
        },
        Case {
            name: "cloudtrail",
            bodies: cloudtrail_files(&mut rng, 250),
            decode: cloudtrail::decode,
        },
        Case {
            name: "focus_csv",
            bodies: vec![focus_csv(&mut rng)],
            decode: cost::decode_focus_csv,
        },
        Case {
            name: "cloudevents",
            bodies: cloudevent_batches(100),
            decode: cloudevents::decode,
        },
    ];

    let mut g = c.benchmark_group("decode");
    for case in &cases {
        let events = check(case, &cx);
        g.throughput(Throughput::Elements(events as u64));
        g.bench_function(case.name, |b| {
            b.iter(|| {
                for body in &case.bodies {
                    black_box((case.decode)(black_box(body), &cx).expect("decodes"));
                }
            })
        });
    }
    g.finish();
}

/// Decodes a case once, outside the timing: a payload that does not give exactly
/// `RECORDS` distinct events is a broken builder, not a benchmark.
fn check(case: &Case, cx: &DecodeContext<'_>) -> usize {
    let mut ids = BTreeSet::new();
    let mut events = 0;
    for (i, body) in case.bodies.iter().enumerate() {
        let decoded = (case.decode)(body, cx)
            .unwrap_or_else(|e| panic!("{}: body {i} does not decode: {e}", case.name));
        events += decoded.len();
        ids.extend(decoded.into_iter().map(|e| e.id));
    }
    assert_eq!(events, RECORDS, "{}: events decoded", case.name);
    assert_eq!(ids.len(), RECORDS, "{}: distinct event ids", case.name);
    events
}

/// The workload's catalog (services `svc-NNNN` in namespace `prod`, each group's
/// database owning its RDS instance), with each service's repository, the
/// deployment environments and the account mapped as an operator would.
fn bench_catalog() -> Catalog {
    let w = Workload {
        services: SERVICES,
        clusters: CLUSTERS,
        ..Workload::default()
    };
    let mut c = catalog(&w);
    for s in &mut c.services {
        s.repos.push(format!("acme/{}", s.name));
    }
    c.environments = [("production", "cluster-0"), ("staging", "cluster-1")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    c.accounts = [(ACCOUNT.to_owned(), "cluster-0".to_owned())].into();
    c
}

// ---- small seeded helpers ----

fn below(rng: &mut Rng, n: usize) -> usize {
    rng.below(n as u64) as usize
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[below(rng, items.len())]
}

fn hex(rng: &mut Rng, digits: usize) -> String {
    let mut s = String::with_capacity(digits + 16);
    while s.len() < digits {
        s.push_str(&format!("{:016x}", rng.next_u64()));
    }
    s.truncate(digits);
    s
}

fn uuid(rng: &mut Rng) -> String {
    let h = hex(rng, 32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A pod of a Deployment: `<workload>-<replicaset hash>-<pod hash>`, from the
/// alphabet Kubernetes uses for them.
fn pod_name(rng: &mut Rng, workload: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut part = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(*pick(rng, ALPHABET)))
            .collect::<String>()
    };
    let rs = part(10);
    let pod = part(5);
    format!("{workload}-{rs}-{pod}")
}

fn ip(rng: &mut Rng) -> String {
    format!(
        "10.{}.{}.{}",
        below(rng, 256),
        below(rng, 256),
        1 + below(rng, 254)
    )
}

fn service(rng: &mut Rng) -> String {
    service_name(below(rng, SERVICES))
}

fn cluster(rng: &mut Rng) -> String {
    format!("cluster-{}", below(rng, CLUSTERS))
}

/// An instant within the first `spread` seconds of the day's workload.
fn instant(rng: &mut Rng, spread: i64) -> i64 {
    T0 + rng.below((spread * SEC) as u64) as i64
}

/// RFC 3339, whole seconds: `2024-05-01T10:00:00Z`.
fn rfc3339_s(micros: i64) -> String {
    EventTime::from_micros(micros - micros.rem_euclid(SEC)).to_rfc3339()
}

/// RFC 3339 with microseconds, as Kubernetes writes `MicroTime`.
fn rfc3339_us(micros: i64) -> String {
    let s = rfc3339_s(micros);
    format!("{}.{:06}Z", s.trim_end_matches('Z'), micros.rem_euclid(SEC))
}

/// RFC 3339 with nanoseconds, as Go's `time.Time` marshals.
fn rfc3339_ns(rng: &mut Rng, micros: i64) -> String {
    let s = rfc3339_s(micros);
    format!(
        "{}.{:06}{:03}Z",
        s.trim_end_matches('Z'),
        micros.rem_euclid(SEC),
        below(rng, 1000)
    )
}

// ---- Alertmanager ----

/// (alertname, severity, what the summary says)
const ALERTS: [(&str, &str, &str); 8] = [
    ("HighErrorRate", "critical", "5xx ratio above 5%"),
    ("HighLatencyP99", "warning", "p99 latency above 500ms"),
    ("KubePodCrashLooping", "warning", "pod is crash looping"),
    (
        "KubeContainerWaiting",
        "warning",
        "container waiting for over 1h",
    ),
    ("CPUThrottlingHigh", "info", "CPU throttled over 25%"),
    ("KubeHpaMaxedOut", "warning", "HPA at max replicas for 15m"),
    ("TargetDown", "warning", "targets are down"),
    (
        "PaymentAuthFailures",
        "critical",
        "payment authorisations failing",
    ),
];

/// Webhooks grouped by (alertname, cluster), `per_group` alerts each, about one in
/// five resolved.
fn alertmanager_webhooks(rng: &mut Rng, per_group: usize) -> Vec<Vec<u8>> {
    (0..RECORDS / per_group)
        .map(|_| {
            let (alertname, severity, what) = *pick(rng, &ALERTS);
            let cluster = cluster(rng);
            let alerts: Vec<Value> = (0..per_group)
                .map(|_| {
                    let svc = service(rng);
                    let pod = pod_name(rng, &svc);
                    let starts = instant(rng, 3_600);
                    let firing = !rng.chance(0.2);
                    let ends = if firing {
                        "0001-01-01T00:00:00Z".to_owned()
                    } else {
                        let lasted = 60 + rng.below(1_800) as i64;
                        rfc3339_ns(rng, starts + lasted * SEC)
                    };
                    let starts = rfc3339_ns(rng, starts);
                    let instance = format!("{}:8080", ip(rng));
                    let fingerprint = hex(rng, 16);
                    let description = format!("{svc} in prod on {cluster}: {what} (pod {pod}).");
                    let runbook = format!("https://runbooks.example.com/{alertname}");
                    let generator = format!(
                        "http://prometheus-k8s.monitoring.svc:9090/graph\
                         ?g0.expr=ALERTS%7Balertname%3D%22{alertname}%22%7D&g0.tab=1"
                    );
                    json!({
                        "status": if firing { "firing" } else { "resolved" },
                        "labels": {
                            "alertname": alertname,
                            "cluster": cluster,
                            "container": "app",
                            "endpoint": "http-metrics",
                            "instance": instance,
                            "job": svc,
                            "namespace": "prod",
                            "pod": pod,
                            "prometheus": "monitoring/k8s",
                            "service": svc,
                            "severity": severity,
                        },
                        "annotations": {
                            "summary": format!("{what} on {svc}"),
                            "description": description,
                            "runbook_url": runbook,
                        },
                        "startsAt": starts,
                        "endsAt": ends,
                        "generatorURL": generator,
                        "fingerprint": fingerprint,
                    })
                })
                .collect();
            let status = if alerts.iter().any(|a| a["status"] == "firing") {
                "firing"
            } else {
                "resolved"
            };
            let group_key = format!(
                "{{}}/{{severity=~\"warning|critical|info\"}}:\
                 {{alertname=\"{alertname}\", cluster=\"{cluster}\"}}"
            );
            json!({
                "receiver": "causeway",
                "status": status,
                "alerts": alerts,
                "groupLabels": {"alertname": alertname, "cluster": cluster},
                "commonLabels": {
                    "alertname": alertname,
                    "cluster": cluster,
                    "namespace": "prod",
                    "prometheus": "monitoring/k8s",
                    "severity": severity,
                },
                "commonAnnotations": {},
                "externalURL": "http://alertmanager-main.monitoring.svc:9093",
                "version": "4",
                "groupKey": group_key,
                "truncatedAlerts": 0,
            })
            .to_string()
            .into_bytes()
        })
        .collect()
}

// ---- GitHub ----

/// A GitHub user or organisation object as webhooks embed it.
fn github_user(login: &str, id: u64, kind: &str) -> Value {
    let api = format!("https://api.github.com/users/{login}");
    json!({
        "login": login,
        "id": id,
        "node_id": format!("MDQ6VXNlcj{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "",
        "url": api,
        "html_url": format!("https://github.com/{login}"),
        "followers_url": format!("{api}/followers"),
        "following_url": format!("{api}/following{{/other_user}}"),
        "gists_url": format!("{api}/gists{{/gist_id}}"),
        "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/subscriptions"),
        "organizations_url": format!("{api}/orgs"),
        "repos_url": format!("{api}/repos"),
        "events_url": format!("{api}/events{{/privacy}}"),
        "received_events_url": format!("{api}/received_events"),
        "type": kind,
        "user_view_type": "public",
        "site_admin": false,
    })
}

/// A repository object as webhooks embed it (every `*_url` GitHub sends).
fn github_repo(name: &str, id: u64, owner: &Value) -> Value {
    const URLS: [(&str, &str); 37] = [
        ("forks_url", "/forks"),
        ("keys_url", "/keys{/key_id}"),
        ("collaborators_url", "/collaborators{/collaborator}"),
        ("teams_url", "/teams"),
        ("hooks_url", "/hooks"),
        ("issue_events_url", "/issues/events{/number}"),
        ("events_url", "/events"),
        ("assignees_url", "/assignees{/user}"),
        ("branches_url", "/branches{/branch}"),
        ("tags_url", "/tags"),
        ("blobs_url", "/git/blobs{/sha}"),
        ("git_tags_url", "/git/tags{/sha}"),
        ("git_refs_url", "/git/refs{/sha}"),
        ("trees_url", "/git/trees{/sha}"),
        ("statuses_url", "/statuses/{sha}"),
        ("languages_url", "/languages"),
        ("stargazers_url", "/stargazers"),
        ("contributors_url", "/contributors"),
        ("subscribers_url", "/subscribers"),
        ("subscription_url", "/subscription"),
        ("commits_url", "/commits{/sha}"),
        ("git_commits_url", "/git/commits{/sha}"),
        ("comments_url", "/comments{/number}"),
        ("issue_comment_url", "/issues/comments{/number}"),
        ("contents_url", "/contents/{+path}"),
        ("compare_url", "/compare/{base}...{head}"),
        ("merges_url", "/merges"),
        ("archive_url", "/{archive_format}{/ref}"),
        ("downloads_url", "/downloads"),
        ("issues_url", "/issues{/number}"),
        ("pulls_url", "/pulls{/number}"),
        ("milestones_url", "/milestones{/number}"),
        (
            "notifications_url",
            "/notifications{?since,all,participating}",
        ),
        ("labels_url", "/labels{/name}"),
        ("releases_url", "/releases{/id}"),
        ("deployments_url", "/deployments"),
        ("url", ""),
    ];
    let full = format!("acme/{name}");
    let api = format!("https://api.github.com/repos/{full}");
    let mut m = Map::new();
    m.insert("id".into(), id.into());
    m.insert("node_id".into(), format!("R_kgDO{id:08}").into());
    m.insert("name".into(), name.into());
    m.insert("full_name".into(), full.clone().into());
    m.insert("private".into(), true.into());
    m.insert("owner".into(), owner.clone());
    m.insert(
        "html_url".into(),
        format!("https://github.com/{full}").into(),
    );
    m.insert("description".into(), format!("The {name} service").into());
    m.insert("fork".into(), false.into());
    for (key, path) in URLS {
        m.insert(key.into(), format!("{api}{path}").into());
    }
    for (key, value) in [
        ("created_at", "2021-03-04T09:12:44Z"),
        ("updated_at", "2024-04-30T17:02:11Z"),
        ("pushed_at", "2024-05-01T09:58:40Z"),
        ("language", "Go"),
        ("visibility", "private"),
        ("default_branch", "main"),
    ] {
        m.insert(key.into(), value.into());
    }
    m.insert(
        "git_url".into(),
        format!("git://github.com/{full}.git").into(),
    );
    m.insert(
        "ssh_url".into(),
        format!("git@github.com:{full}.git").into(),
    );
    m.insert(
        "clone_url".into(),
        format!("https://github.com/{full}.git").into(),
    );
    m.insert(
        "svn_url".into(),
        format!("https://github.com/{full}").into(),
    );
    m.insert("homepage".into(), Value::Null);
    m.insert("mirror_url".into(), Value::Null);
    m.insert("license".into(), Value::Null);
    m.insert("topics".into(), json!(["service", "prod"]));
    for key in [
        "has_issues",
        "has_projects",
        "has_downloads",
        "has_wiki",
        "allow_forking",
    ] {
        m.insert(key.into(), true.into());
    }
    for key in [
        "has_pages",
        "has_discussions",
        "archived",
        "disabled",
        "is_template",
        "web_commit_signoff_required",
    ] {
        m.insert(key.into(), false.into());
    }
    for (key, n) in [
        ("size", 18_342),
        ("stargazers_count", 3),
        ("watchers_count", 3),
        ("forks_count", 0),
        ("open_issues_count", 12),
        ("forks", 0),
        ("open_issues", 12),
        ("watchers", 3),
    ] {
        m.insert(key.into(), n.into());
    }
    Value::Object(m)
}

/// `deployment_status` deliveries of CD pipelines, mostly successes.
fn github_deployment_statuses(rng: &mut Rng) -> Vec<Vec<u8>> {
    const STATES: [&str; 8] = [
        "success",
        "success",
        "success",
        "success",
        "failure",
        "error",
        "in_progress",
        "queued",
    ];
    const PEOPLE: [&str; 5] = ["octo-deployer", "alice", "bob", "carol", "release-bot"];
    let org = github_user("acme", 9_919, "Organization");
    (0..RECORDS)
        .map(|i| {
            let svc_index = below(rng, SERVICES);
            let svc = service_name(svc_index);
            let repo_id = 700_000_000 + svc_index as u64;
            let repo = github_repo(&svc, repo_id, &org);
            let login = *pick(rng, &PEOPLE);
            let creator = github_user(login, 1_000 + below(rng, 90_000) as u64, "User");
            let bot = github_user("github-actions[bot]", 41_898_282, "Bot");
            let deployment_id = 1_500_000_000 + i as u64;
            let status_id = 3_000_000_000 + i as u64;
            let state = *pick(rng, &STATES);
            let environment = if rng.chance(0.7) {
                "production"
            } else {
                "staging"
            };
            let sha = hex(rng, 40);
            let created = instant(rng, 3_600);
            let run = 8_000_000_000 + below(rng, 1_000_000) as u64;
            let api = format!("https://api.github.com/repos/acme/{svc}");
            let job = format!("https://github.com/acme/{svc}/actions/runs/{run}/job/{}", run + 7);
            json!({
                "action": "created",
                "deployment_status": {
                    "url": format!("{api}/deployments/{deployment_id}/statuses/{status_id}"),
                    "id": status_id,
                    "node_id": format!("DES_kwDOH{status_id}"),
                    "state": state,
                    "creator": bot,
                    "description": format!("Deployment {state}"),
                    "environment": environment,
                    "target_url": job,
                    "created_at": rfc3339_s(created + 90 * SEC),
                    "updated_at": rfc3339_s(created + 90 * SEC),
                    "deployment_url": format!("{api}/deployments/{deployment_id}"),
                    "repository_url": api,
                    "environment_url": format!("https://{svc}.{environment}.example.com"),
                    "log_url": job,
                    "performed_via_github_app": null,
                },
                "deployment": {
                    "url": format!("{api}/deployments/{deployment_id}"),
                    "id": deployment_id,
                    "node_id": format!("DE_kwDOH{deployment_id}"),
                    "task": "deploy",
                    "original_environment": environment,
                    "environment": environment,
                    "description": null,
                    "created_at": rfc3339_s(created),
                    "updated_at": rfc3339_s(created + 90 * SEC),
                    "statuses_url": format!("{api}/deployments/{deployment_id}/statuses"),
                    "repository_url": api,
                    "creator": creator,
                    "sha": sha,
                    "ref": "main",
                    "payload": {"image": format!("ghcr.io/acme/{svc}:{}", &sha[..7])},
                    "transient_environment": false,
                    "production_environment": environment == "production",
                    "performed_via_github_app": null,
                },
                "repository": repo,
                "organization": {
                    "login": "acme",
                    "id": 9_919,
                    "node_id": "MDEyOk9yZ2FuaXphdGlvbjk5MTk=",
                    "url": "https://api.github.com/orgs/acme",
                    "repos_url": "https://api.github.com/orgs/acme/repos",
                    "events_url": "https://api.github.com/orgs/acme/events",
                    "hooks_url": "https://api.github.com/orgs/acme/hooks",
                    "issues_url": "https://api.github.com/orgs/acme/issues",
                    "members_url": "https://api.github.com/orgs/acme/members{/member}",
                    "public_members_url": "https://api.github.com/orgs/acme/public_members{/member}",
                    "avatar_url": "https://avatars.githubusercontent.com/u/9919?v=4",
                    "description": "",
                },
                "sender": github_user("github-actions[bot]", 41_898_282, "Bot"),
            })
            .to_string()
            .into_bytes()
        })
        .collect()
}

// ---- Argo CD ----

/// Notifications rendered from `deploy/argocd/causeway-notifications.yaml`: finished
/// syncs, degraded and out-of-sync applications.
fn argocd_notifications(rng: &mut Rng) -> Vec<Vec<u8>> {
    const PHASES: [&str; 5] = ["Succeeded", "Succeeded", "Succeeded", "Failed", "Error"];
    (0..RECORDS)
        .map(|_| {
            let app = service(rng);
            let uid = uuid(rng);
            let revision = hex(rng, 40);
            let started = instant(rng, 3_600);
            let finished = started + (5 + rng.below(120) as i64) * SEC;
            let reconciled = finished + rng.below(300) as i64 * SEC;
            let roll = below(rng, 10);
            let (notification, phase, health, sync) = match roll {
                0..=5 => {
                    let phase = *pick(rng, &PHASES);
                    let health = if phase == "Succeeded" {
                        "Healthy"
                    } else {
                        "Degraded"
                    };
                    ("sync-finished", phase, health, "Synced")
                }
                6 | 7 => ("degraded", "Succeeded", "Degraded", "Synced"),
                _ => ("out-of-sync", "Succeeded", "Healthy", "OutOfSync"),
            };
            let in_cluster = rng.chance(0.5);
            let (destination_name, destination_server) = if in_cluster {
                (String::new(), "https://kubernetes.default.svc")
            } else {
                (cluster(rng), "https://10.0.0.1:6443")
            };
            let (started, finished, reconciled) = (
                rfc3339_s(started),
                rfc3339_s(finished),
                rfc3339_s(reconciled),
            );
            // As the template renders it.
            let event_id = format!(
                "{uid}/{notification}/{revision}/{phase}/{health}/{sync}/{finished}/{reconciled}"
            );
            json!({
                "schema": "causeway.argocd/v1",
                "notification": notification,
                "event_id": event_id,
                "app": app,
                "project": "default",
                "namespace": "prod",
                "destination_name": destination_name,
                "destination_server": destination_server,
                "repo_url": "https://github.com/acme/deploy.git",
                "revision": revision,
                "phase": phase,
                "started_at": started,
                "finished_at": finished,
                "sync_status": sync,
                "health": health,
                "reconciled_at": reconciled,
                "initiated_by": if rng.chance(0.3) { "alice" } else { "" },
                "images": [
                    format!("ghcr.io/acme/{app}:{}", &revision[..7]),
                    "docker.io/envoyproxy/envoy:v1.30.1",
                ],
                "app_url": format!("https://argocd.example.com/applications/{app}"),
            })
            .to_string()
            .into_bytes()
        })
        .collect()
}

// ---- Kubernetes audit ----

/// What one audited request did.
struct AuditedRequest {
    user: String,
    groups: Value,
    verb: &'static str,
    resource: &'static str,
    api_group: &'static str,
    name: String,
    subresource: Option<&'static str>,
    /// The request body, logged at level `Request`.
    body: Option<Value>,
}

/// Audit records that are all counted: image and scale changes by people and by
/// Argo CD, config map updates, controllers' lease and endpoint churn, pod
/// deletions, execs into pods, secret reads. One JSON document each.
fn k8s_audit_records(rng: &mut Rng) -> Vec<String> {
    const ARGOCD: &str = "system:serviceaccount:argocd:argocd-application-controller";
    (0..RECORDS)
        .map(|_| {
            let svc = service(rng);
            let human = format!("{}@acme.example.com", pick(rng, &["alice", "bob", "carol"]));
            let people = json!(["system:authenticated", "oidc:sre"]);
            let accounts = json!(["system:serviceaccounts", "system:authenticated"]);
            let r = match below(rng, 10) {
                0 | 1 => {
                    let tag = hex(rng, 7);
                    let memory = *pick(rng, &["256Mi", "512Mi", "1Gi"]);
                    let (user, groups) = if rng.chance(0.5) {
                        (ARGOCD.to_owned(), accounts)
                    } else {
                        (human, people)
                    };
                    AuditedRequest {
                        user,
                        groups,
                        verb: "patch",
                        resource: "deployments",
                        api_group: "apps",
                        name: svc.clone(),
                        subresource: None,
                        body: Some(json!({"spec": {"template": {"spec": {"containers": [{
                            "name": "app",
                            "image": format!("ghcr.io/acme/{svc}:{tag}"),
                            "resources": {
                                "limits": {"memory": memory, "cpu": "1"},
                                "requests": {"memory": memory, "cpu": "250m"},
                            },
                        }]}}}})),
                    }
                }
                2 => AuditedRequest {
                    user: human,
                    groups: people,
                    verb: "update",
                    resource: "configmaps",
                    api_group: "",
                    name: format!("{svc}-config"),
                    subresource: None,
                    body: Some(json!({
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": format!("{svc}-config"), "namespace": "prod"},
                        "data": {
                            "LOG_LEVEL": "debug",
                            "POOL_SIZE": (10 + below(rng, 50)).to_string(),
                            "FEATURE_FLAGS": "checkout-v2,fast-path",
                        },
                    })),
                },
                3 => AuditedRequest {
                    user: human,
                    groups: people,
                    verb: "update",
                    resource: "deployments",
                    api_group: "apps",
                    name: svc.clone(),
                    subresource: Some("scale"),
                    body: Some(json!({
                        "kind": "Scale",
                        "apiVersion": "autoscaling/v1",
                        "spec": {"replicas": 2 + below(rng, 10)},
                    })),
                },
                4 | 5 => AuditedRequest {
                    user: "system:kube-controller-manager".to_owned(),
                    groups: json!(["system:authenticated"]),
                    verb: "update",
                    resource: "leases",
                    api_group: "coordination.k8s.io",
                    name: format!("{svc}-leader"),
                    subresource: None,
                    body: None,
                },
                6 => AuditedRequest {
                    user: "system:serviceaccount:kube-system:endpointslice-controller".to_owned(),
                    groups: accounts,
                    verb: "update",
                    resource: "endpointslices",
                    api_group: "discovery.k8s.io",
                    name: format!("{svc}-{}", hex(rng, 5)),
                    subresource: None,
                    body: None,
                },
                7 => AuditedRequest {
                    user: "system:serviceaccount:kube-system:replicaset-controller".to_owned(),
                    groups: accounts,
                    verb: "delete",
                    resource: "pods",
                    api_group: "",
                    name: pod_name(rng, &svc),
                    subresource: None,
                    body: None,
                },
                8 => AuditedRequest {
                    user: human,
                    groups: people,
                    verb: "create",
                    resource: "pods",
                    api_group: "",
                    name: pod_name(rng, &svc),
                    subresource: Some("exec"),
                    body: None,
                },
                _ => AuditedRequest {
                    user: format!("system:serviceaccount:prod:{svc}"),
                    groups: accounts,
                    verb: "get",
                    resource: "secrets",
                    api_group: "",
                    name: format!("{svc}-db-credentials"),
                    subresource: None,
                    body: None,
                },
            };
            audit_record(rng, r)
        })
        .collect()
}

fn audit_record(rng: &mut Rng, r: AuditedRequest) -> String {
    let exec = r.subresource == Some("exec");
    let path = match r.api_group {
        "" => "/api/v1".to_owned(),
        group => format!("/apis/{group}/v1"),
    };
    let object = format!("{path}/namespaces/prod/{}/{}", r.resource, r.name);
    let request_uri = match r.subresource {
        Some("exec") => {
            format!("{object}/exec?command=sh&container=app&stdin=true&stdout=true&tty=true")
        }
        Some(sub) => format!("{object}/{sub}"),
        None => object,
    };
    let user_agent = if r.user.starts_with("system:") {
        "kube-controller-manager/v1.30.2 (linux/amd64) kubernetes/3968350/leader-election"
    } else {
        "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350"
    };
    let mut object_ref = json!({
        "resource": r.resource,
        "namespace": "prod",
        "name": r.name,
        "apiGroup": r.api_group,
        "apiVersion": "v1",
    });
    if let Some(sub) = r.subresource {
        object_ref["subresource"] = sub.into();
    }
    let received = instant(rng, 3_600);
    let mut record = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": if r.body.is_some() { "Request" } else { "Metadata" },
        "auditID": uuid(rng),
        // An exec is counted when its stream starts.
        "stage": if exec { "ResponseStarted" } else { "ResponseComplete" },
        "requestURI": request_uri,
        "verb": r.verb,
        "user": {"username": r.user, "uid": uuid(rng), "groups": r.groups},
        "sourceIPs": [ip(rng)],
        "userAgent": user_agent,
        "objectRef": object_ref,
        // An exec upgrades the connection.
        "responseStatus": {"metadata": {}, "code": if exec { 101 } else { 200 }},
        "requestReceivedTimestamp": rfc3339_us(received),
        "stageTimestamp": rfc3339_us(received + below(rng, 50_000) as i64),
        "annotations": {
            "authorization.k8s.io/decision": "allow",
            "authorization.k8s.io/reason":
                "RBAC: allowed by ClusterRoleBinding \"sre\" of ClusterRole \"admin\"",
        },
    });
    if let Some(body) = r.body {
        record["requestObject"] = body;
    }
    record.to_string()
}

// ---- Kubernetes Events ----

/// core/v1 Events as an event exporter lists them, `per_list` a list: the steady
/// Normal churn of rollouts with Warnings among them.
fn k8s_event_lists(rng: &mut Rng, per_list: usize) -> Vec<Vec<u8>> {
    // (reason, type, object kind, reporting component, message)
    const REASONS: [(&str, &str, &str, &str, &str); 12] = [
        (
            "Pulled",
            "Normal",
            "Pod",
            "kubelet",
            "Successfully pulled image in 1.2s",
        ),
        (
            "Created",
            "Normal",
            "Pod",
            "kubelet",
            "Created container app",
        ),
        (
            "Started",
            "Normal",
            "Pod",
            "kubelet",
            "Started container app",
        ),
        (
            "Scheduled",
            "Normal",
            "Pod",
            "default-scheduler",
            "Successfully assigned pod",
        ),
        (
            "Killing",
            "Normal",
            "Pod",
            "kubelet",
            "Stopping container app",
        ),
        (
            "ScalingReplicaSet",
            "Normal",
            "Deployment",
            "deployment-controller",
            "Scaled up replica set",
        ),
        (
            "SuccessfulCreate",
            "Normal",
            "ReplicaSet",
            "replicaset-controller",
            "Created pod",
        ),
        (
            "BackOff",
            "Warning",
            "Pod",
            "kubelet",
            "Back-off restarting failed container app",
        ),
        (
            "Unhealthy",
            "Warning",
            "Pod",
            "kubelet",
            "Readiness probe failed: HTTP probe failed with statuscode: 503",
        ),
        (
            "FailedScheduling",
            "Warning",
            "Pod",
            "default-scheduler",
            "0/12 nodes are available: 12 Insufficient memory",
        ),
        (
            "OOMKilling",
            "Warning",
            "Node",
            "kernel-monitor",
            "Memory cgroup out of memory: Killed process 4242 (app)",
        ),
        (
            "FailedGetResourceMetric",
            "Warning",
            "HorizontalPodAutoscaler",
            "horizontal-pod-autoscaler",
            "failed to get cpu utilization",
        ),
    ];
    let items: Vec<Value> = (0..RECORDS)
        .map(|_| {
            let (reason, kind_of_event, object_kind, component, message) = *pick(rng, &REASONS);
            let svc = service(rng);
            let node = format!(
                "ip-10-0-{}-{}.eu-west-1.compute.internal",
                below(rng, 256),
                below(rng, 256)
            );
            let (object_name, api_version, field_path) = match object_kind {
                "Pod" => (pod_name(rng, &svc), "v1", Some("spec.containers{app}")),
                "Deployment" => (svc.clone(), "apps/v1", None),
                "ReplicaSet" => (format!("{svc}-{}", hex(rng, 10)), "apps/v1", None),
                "Node" => (node.clone(), "v1", None),
                _ => (svc.clone(), "autoscaling/v2", None),
            };
            let namespace = if object_kind == "Node" {
                "default"
            } else {
                "prod"
            };
            let first = instant(rng, 3_600);
            let count = if kind_of_event == "Warning" {
                1 + below(rng, 30)
            } else {
                1
            };
            let last = first + (count as i64 - 1) * 30 * SEC;
            let mut involved = json!({
                "apiVersion": api_version,
                "kind": object_kind,
                "name": object_name,
                "namespace": namespace,
                "uid": uuid(rng),
                "resourceVersion": format!("{}", 40_000_000 + below(rng, 9_000_000)),
            });
            if let Some(fp) = field_path {
                involved["fieldPath"] = fp.into();
            }
            let name = format!("{object_name}.{}", hex(rng, 16));
            json!({
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": uuid(rng),
                    "resourceVersion": format!("{}", 50_000_000 + below(rng, 9_000_000)),
                    "creationTimestamp": rfc3339_s(first),
                },
                "involvedObject": involved,
                "reason": reason,
                "message": message,
                "source": {"component": component, "host": node},
                "firstTimestamp": rfc3339_s(first),
                "lastTimestamp": rfc3339_s(last),
                "count": count,
                "type": kind_of_event,
                "eventTime": null,
                "reportingComponent": component,
                "reportingInstance": node,
            })
        })
        .collect();
    items
        .chunks(per_list)
        .map(|chunk| {
            json!({
                "kind": "EventList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": "59000000"},
                "items": chunk,
            })
            .to_string()
            .into_bytes()
        })
        .collect()
}

// ---- CloudTrail ----

/// One AWS API call: where, what, and on which resource.
struct AwsCall {
    source: &'static str,
    name: &'static str,
    read_only: bool,
    params: Value,
    resources: Option<Value>,
}

/// CloudTrail log files of `per_file` records: mostly reads (Describe, List, Get,
/// AssumeRole), with changes to databases, security groups, functions, buckets and
/// scaling groups, some of them denied.
fn cloudtrail_files(rng: &mut Rng, per_file: usize) -> Vec<Vec<u8>> {
    const AGENTS: [&str; 3] = [
        "aws-cli/2.15.40 Python/3.11.8 Linux/6.1 exe/x86_64",
        "Boto3/1.34.90 md/Botocore#1.34.90 ua/2.0 os/linux",
        "APN/1.0 HashiCorp/1.0 Terraform/1.8.2",
    ];
    let records: Vec<Value> = (0..RECORDS)
        .map(|_| {
            let call = aws_call(rng);
            let person = *pick(rng, &["alice", "bob", "terraform", "karpenter"]);
            let source = call.source;
            let mut record = json!({
                "eventVersion": "1.09",
                "userIdentity": aws_identity(rng, person),
                "eventTime": rfc3339_s(instant(rng, 3_600)),
                "eventSource": source,
                "eventName": call.name,
                "awsRegion": "eu-west-1",
                "sourceIPAddress": format!("203.0.113.{}", below(rng, 256)),
                "userAgent": pick(rng, &AGENTS),
                "requestParameters": call.params,
                "responseElements": null,
                "requestID": uuid(rng),
                "eventID": uuid(rng),
                "readOnly": call.read_only,
                "eventType": "AwsApiCall",
                "managementEvent": true,
                "recipientAccountId": ACCOUNT,
                "eventCategory": "Management",
                "tlsDetails": {
                    "tlsVersion": "TLSv1.3",
                    "cipherSuite": "TLS_AES_128_GCM_SHA256",
                    "clientProvidedHostHeader":
                        source.replace(".amazonaws.com", ".eu-west-1.amazonaws.com"),
                },
            });
            if let Some(resources) = call.resources {
                record["resources"] = resources;
            }
            if !call.read_only && rng.chance(0.05) {
                record["errorCode"] = "AccessDenied".into();
                record["errorMessage"] =
                    format!("User is not authorized to perform: {}", call.name).into();
            }
            record
        })
        .collect();
    records
        .chunks(per_file)
        .map(|chunk| json!({"Records": chunk}).to_string().into_bytes())
        .collect()
}

fn aws_call(rng: &mut Rng) -> AwsCall {
    let svc_index = below(rng, SERVICES);
    let svc = service_name(svc_index);
    // The database of the service's group, whose RDS instance the catalog knows.
    let db = service_name((svc_index / 10) * 10 + 9);
    let role = format!("arn:aws:iam::{ACCOUNT}:role/{svc}-irsa");
    let call = |source, name, read_only, params, resources| AwsCall {
        source,
        name,
        read_only,
        params,
        resources,
    };
    match below(rng, 12) {
        0..=2 => call(
            "ec2.amazonaws.com",
            "DescribeInstances",
            true,
            json!({
                "instancesSet": {"items": [{"instanceId": format!("i-0{}", hex(rng, 16))}]},
                "filterSet": {},
            }),
            None,
        ),
        3 => call(
            "rds.amazonaws.com",
            "DescribeDBInstances",
            true,
            json!({"dBInstanceIdentifier": db}),
            None,
        ),
        4 => call(
            "s3.amazonaws.com",
            "ListBuckets",
            true,
            json!({"Host": "s3.eu-west-1.amazonaws.com"}),
            None,
        ),
        5 | 6 => call(
            "sts.amazonaws.com",
            "AssumeRole",
            true,
            json!({
                "roleArn": role,
                "roleSessionName": format!("botocore-session-{}", rng.below(1 << 31)),
                "durationSeconds": 3600,
            }),
            Some(json!([{"accountId": ACCOUNT, "type": "AWS::IAM::Role", "ARN": role}])),
        ),
        7 => call(
            "rds.amazonaws.com",
            "ModifyDBInstance",
            false,
            json!({
                "dBInstanceIdentifier": db,
                "dBInstanceClass": pick(rng, &["db.r6g.large", "db.r6g.xlarge", "db.t3.medium"]),
                "applyImmediately": true,
            }),
            Some(json!([{
                "accountId": ACCOUNT,
                "type": "AWS::RDS::DBInstance",
                "ARN": format!("arn:aws:rds:eu-west-1:{ACCOUNT}:db:{db}"),
            }])),
        ),
        8 => call(
            "ec2.amazonaws.com",
            "AuthorizeSecurityGroupIngress",
            false,
            json!({
                "groupId": format!("sg-0{}", hex(rng, 16)),
                "ipPermissions": {"items": [{
                    "ipProtocol": "tcp",
                    "fromPort": 5432,
                    "toPort": 5432,
                    "ipRanges": {"items": [{"cidrIp": "10.0.0.0/16"}]},
                }]},
            }),
            None,
        ),
        9 => call(
            "lambda.amazonaws.com",
            "UpdateFunctionConfiguration20150331v2",
            false,
            json!({"functionName": format!("{svc}-worker"), "memorySize": 512, "timeout": 30}),
            None,
        ),
        10 => call(
            "s3.amazonaws.com",
            "PutBucketPolicy",
            false,
            json!({
                "bucketName": format!("acme-{svc}-artifacts"),
                "Host": "s3.eu-west-1.amazonaws.com",
                "policy": "",
            }),
            None,
        ),
        _ => call(
            "autoscaling.amazonaws.com",
            "UpdateAutoScalingGroup",
            false,
            json!({
                "autoScalingGroupName": format!("eks-{svc}-ng"),
                "desiredCapacity": 3 + below(rng, 6),
            }),
            None,
        ),
    }
}

/// A person's IAM user, or a tool's assumed role.
fn aws_identity(rng: &mut Rng, person: &str) -> Value {
    let mut id = |prefix: &str| format!("{prefix}{}", hex(rng, 16).to_uppercase());
    if person == "alice" || person == "bob" {
        return json!({
            "type": "IAMUser",
            "principalId": id("AIDA"),
            "arn": format!("arn:aws:iam::{ACCOUNT}:user/{person}"),
            "accountId": ACCOUNT,
            "accessKeyId": id("AKIA"),
            "userName": person,
        });
    }
    let (principal, key, issuer) = (id("AROA"), id("ASIA"), id("AROA"));
    let session = format!("{person}-{}", rng.below(1 << 31));
    json!({
        "type": "AssumedRole",
        "principalId": format!("{principal}:{session}"),
        "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/{person}/{session}"),
        "accountId": ACCOUNT,
        "accessKeyId": key,
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": issuer,
                "arn": format!("arn:aws:iam::{ACCOUNT}:role/{person}"),
                "accountId": ACCOUNT,
                "userName": person,
            },
            "attributes": {"creationDate": rfc3339_s(T0), "mfaAuthenticated": "false"},
        },
    })
}

// ---- FOCUS ----

/// A FOCUS 1.0 export: hourly usage of the services' databases, nodes, buckets,
/// queues and functions, tagged by application.
fn focus_csv(rng: &mut Rng) -> Vec<u8> {
    const HEADER: &str = "AvailabilityZone,BilledCost,BillingAccountId,BillingAccountName,BillingCurrency,BillingPeriodEnd,BillingPeriodStart,ChargeCategory,ChargeClass,ChargeDescription,ChargeFrequency,ChargePeriodEnd,ChargePeriodStart,CommitmentDiscountCategory,CommitmentDiscountId,CommitmentDiscountName,CommitmentDiscountStatus,CommitmentDiscountType,ConsumedQuantity,ConsumedUnit,ContractedCost,ContractedUnitPrice,EffectiveCost,InvoiceIssuerName,ListCost,ListUnitPrice,PricingCategory,PricingQuantity,PricingUnit,ProviderName,PublisherName,RegionId,RegionName,ResourceId,ResourceName,ResourceType,ServiceCategory,Id,ServiceName,SkuId,SkuPriceId,SubAccountId,SubAccountName,Tags";
    // (service name, category, unit, unit price, resource type, ARN service)
    const PRODUCTS: [(&str, &str, &str, f64, &str, &str); 6] = [
        (
            "Amazon Relational Database Service",
            "Databases",
            "Hours",
            0.258,
            "DBInstance",
            "rds",
        ),
        (
            "Amazon Elastic Compute Cloud",
            "Compute",
            "Hours",
            0.0832,
            "Instance",
            "ec2",
        ),
        (
            "Amazon Simple Storage Service",
            "Storage",
            "GB-Mo",
            0.023,
            "Bucket",
            "s3",
        ),
        (
            "Amazon Simple Queue Service",
            "Integration",
            "Requests",
            0.000_000_4,
            "Queue",
            "sqs",
        ),
        (
            "AWS Lambda",
            "Compute",
            "Lambda-GB-Second",
            0.000_016_7,
            "Function",
            "lambda",
        ),
        (
            "Amazon Elastic Kubernetes Service",
            "Compute",
            "Hours",
            0.10,
            "Cluster",
            "eks",
        ),
    ];
    fn quote(s: &str) -> String {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
    let mut out = String::with_capacity(RECORDS * 900);
    out.push_str(HEADER);
    out.push('\n');
    for i in 0..RECORDS {
        let (product, category, unit, price, resource_type, arn_service) = *pick(rng, &PRODUCTS);
        let svc = service(rng);
        let hour = (i / 40) as i64;
        let start = T0 - 24 * 3_600 * SEC + hour * 3_600 * SEC;
        let quantity = match unit {
            "Requests" => (1 + below(rng, 5_000_000)) as f64,
            "Lambda-GB-Second" => (1 + below(rng, 90_000)) as f64 * 0.5,
            _ => 1.0 + below(rng, 100) as f64 / 100.0,
        };
        let list = quantity * price;
        let effective = list * (0.6 + below(rng, 40) as f64 / 100.0);
        let resource_id = format!(
            "arn:aws:{arn_service}:eu-west-1:{ACCOUNT}:{}/{svc}",
            resource_type.to_lowercase()
        );
        let tags = if rng.chance(0.85) {
            quote(&format!(
                r#"{{"app": "{svc}", "team": "team-{}", "environment": "prod"}}"#,
                below(rng, 12)
            ))
        } else {
            "NULL".to_owned()
        };
        let fields = [
            "eu-west-1a".to_owned(),
            format!("{effective:.10}"),
            quote("999988887777"),
            quote("Acme"),
            quote("USD"),
            quote("2024-05-01 00:00:00"),
            quote("2024-04-01 00:00:00"),
            quote("Usage"),
            "NULL".to_owned(),
            quote(&format!("${price} per {unit} of {product} in EU (Ireland)")),
            quote("Usage-Based"),
            quote(&billing_time(start + 3_600 * SEC)),
            quote(&billing_time(start)),
            "NULL".to_owned(),
            "NULL".to_owned(),
            "NULL".to_owned(),
            "NULL".to_owned(),
            "NULL".to_owned(),
            format!("{quantity:.15}"),
            quote(unit),
            format!("{list:.11}"),
            format!("{price:.11}"),
            format!("{effective:.11}"),
            quote("Amazon Web Services EMEA SARL"),
            format!("{list:.11}"),
            quote(&price.to_string()),
            quote("Standard"),
            format!("{quantity:.11}"),
            quote(unit),
            quote("AWS"),
            quote("Amazon Web Services, Inc."),
            quote("eu-west-1"),
            quote("EU (Ireland)"),
            quote(&resource_id),
            quote(&svc),
            quote(resource_type),
            quote(category),
            (10_000 + i).to_string(),
            quote(product),
            quote(&hex(rng, 16).to_uppercase()),
            quote(&format!(
                "{}.JRTCKXETXF.6YS6EN2CT7",
                hex(rng, 16).to_uppercase()
            )),
            quote(ACCOUNT),
            quote("acme-prod"),
            tags,
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out.into_bytes()
}

/// `YYYY-MM-DD HH:MM:SS`, as billing exports write times.
fn billing_time(micros: i64) -> String {
    rfc3339_s(micros).replace('T', " ").replace('Z', "")
}

// ---- CloudEvents ----

/// The workload generator's realistic mix as CloudEvents (what `causeway` itself
/// exports), `per_batch` a batch; each event once (the generator's re-sends share
/// their original's id and are left out).
fn cloudevent_batches(per_batch: usize) -> Vec<Vec<u8>> {
    let w = Workload {
        seed: SEED,
        events: RECORDS * 2,
        services: SERVICES,
        clusters: CLUSTERS,
        ..Workload::default()
    };
    let mut seen = BTreeSet::new();
    let docs: Vec<String> = generate(&w)
        .into_iter()
        .filter(|e| seen.insert(e.id.clone()))
        .take(RECORDS)
        .map(|e| e.to_cloudevent_json())
        .collect();
    assert_eq!(
        docs.len(),
        RECORDS,
        "the workload has too few distinct events"
    );
    docs.chunks(per_batch)
        .map(|c| format!("[{}]", c.join(",")).into_bytes())
        .collect()
}

criterion_group!(benches, bench);
criterion_main!(benches);
