//! `causeway demo`: the embedded default, a realistic scenario posted through the
//! real HTTP receivers, and the incidents printed as causal trees.
//!
//! The scenario, in cluster `prod-eu` over about twenty minutes: checkout and
//! payments are deployed and start failing (two deploy regressions); search is
//! deployed and stays healthy; a node's disk fills and a certificate nears expiry
//! (unrelated noise); Alertmanager re-sends alerts that are still firing; one alert
//! resolves. Times are relative to now.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use causeway_connectors::client::HttpPoster;
use causeway_connectors::decode::alertmanager::label_fingerprint;
use causeway_rules::{Catalog, EventTime, ProcessingTime, ServiceEntry};
use serde_json::{Value, json};

use crate::app;
use crate::config::Config;
use crate::format;

const MARKER: &str = ".causeway-demo";
const CLUSTER: &str = "prod-eu";

/// Runs the demo.
pub(crate) async fn run(data_dir: PathBuf, listen: SocketAddr) -> anyhow::Result<()> {
    prepare_data_dir(&data_dir)?;
    let mut config = Config {
        data_dir: data_dir.clone(),
        ..Config::default()
    };
    config.catalog = demo_catalog();
    let loaded = config.validate()?;
    let listen = match std::net::TcpListener::bind(listen) {
        Ok(l) => {
            drop(l);
            listen
        }
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let mut running = app::start(&loaded, listen).await?;
    let base = format!("http://{}", running.addr);
    println!(
        "Causeway demo: receivers on {base}, history in {}\n",
        data_dir.display()
    );

    let result = drive(&mut running, &base).await;
    let shutdown = running.shutdown().await;
    result?;
    shutdown?;
    println!();
    println!("Explore the history (it stays in {}):", data_dir.display());
    let dd = if data_dir == Path::new("./causeway-data") {
        String::new()
    } else {
        format!(" --data-dir {}", data_dir.display())
    };
    println!(
        "  causeway sql{dd} \"SELECT count(*) FROM incidents\"          # one row per incident version"
    );
    println!(
        "  causeway sql{dd} \"SELECT incident_id, state, severity, title FROM incidents_latest ORDER BY opened_at\""
    );
    println!(
        "  causeway sql{dd} \"SELECT role, lag_seconds, event_id FROM incident_events ORDER BY time\""
    );
    println!(
        "  causeway sql{dd} \"SELECT source, kind, entity, status, summary FROM events ORDER BY time\""
    );
    Ok(())
}

fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_none();
        if !empty && !dir.join(MARKER).exists() {
            bail!(
                "{} holds history that is not from a demo; pass --data-dir to use another directory",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot clear the previous demo in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "written by `causeway demo`; the next demo replaces this directory\n",
    )
    .with_context(|| format!("cannot write {}", dir.display()))?;
    Ok(())
}

fn demo_catalog() -> Catalog {
    Catalog {
        default_cluster: CLUSTER.into(),
        environments: [("production".to_owned(), CLUSTER.to_owned())].into(),
        accounts: Default::default(),
        services: vec![
            ServiceEntry {
                name: "payments".into(),
                namespace: Some("shop".into()),
                workloads: vec!["payments-api".into()],
                repos: vec!["acme/payments-service".into()],
                resources: vec![],
                ..ServiceEntry::default()
            },
            ServiceEntry {
                name: "checkout".into(),
                namespace: Some("shop".into()),
                workloads: vec!["checkout".into()],
                repos: vec!["acme/checkout".into()],
                resources: vec![],
                ..ServiceEntry::default()
            },
        ],
    }
}

/// One HTTP request of the scenario.
struct Step {
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Value,
    what: String,
}

async fn drive(running: &mut app::Running, base: &str) -> anyhow::Result<()> {
    let client = HttpPoster::new(base)?;
    let steps = scenario(ProcessingTime::now());
    let mut posted = 0;
    for step in &steps {
        let headers: Vec<(&str, &str)> =
            step.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = client
            .post_json(step.path, &headers, step.body.to_string())
            .await?;
        if resp.status != 200 {
            bail!(
                "{} was refused with {}: {}",
                step.what,
                resp.status,
                resp.text()
            );
        }
        posted += 1;
    }
    println!(
        "Posted {posted} webhooks (Alertmanager and GitHub, re-sends included) through the receivers."
    );
    if !running.wait_quiescent(Duration::from_secs(60)).await {
        bail!("the engine did not finish correlating within 60s");
    }
    print_incidents(running).await
}

fn scenario(now: ProcessingTime) -> Vec<Step> {
    // Start 30 minutes ago, on a whole minute, so the story reads well.
    let start = (now.as_micros() / 60_000_000 - 30) * 60_000_000;
    let at = |min: i64, sec: i64| EventTime::from_micros(start + (min * 60 + sec) * 1_000_000);
    let mut steps = Vec::new();
    let mut deploy_id = 1000u64;
    let mut deploy = |steps: &mut Vec<Step>, repo: &str, sha: &str, state: &str, t: EventTime| {
        deploy_id += 1;
        steps.push(github_status(repo, sha, state, t, deploy_id));
    };

    // 00:30 noise: a node's disk fills up (nothing to do with any deploy).
    let disk = alert(
        "NodeDiskPressure",
        &[
            ("instance", "node-3:9100"),
            ("job", "node"),
            ("node", "node-3"),
            ("severity", "warning"),
        ],
        "Disk on node-3 is 91% full",
        at(0, 30),
        None,
    );
    steps.push(am_webhook(
        vec![disk.clone()],
        "webhook 1 (NodeDiskPressure)",
    ));

    // 02:00 checkout 4f1c2ab rolls out.
    deploy(
        &mut steps,
        "acme/checkout",
        "4f1c2ab9e0d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3",
        "in_progress",
        at(1, 40),
    );
    deploy(
        &mut steps,
        "acme/checkout",
        "4f1c2ab9e0d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3",
        "success",
        at(2, 0),
    );

    // 04:10 checkout starts failing.
    let errors = alert(
        "HighErrorRate",
        &[
            ("namespace", "shop"),
            ("pod", "checkout-7d9f8b6c5d-x2k4q"),
            ("severity", "critical"),
        ],
        "5xx ratio above 5% on checkout",
        at(4, 10),
        None,
    );
    steps.push(am_webhook(
        vec![errors.clone()],
        "webhook 2 (HighErrorRate)",
    ));
    let latency = alert(
        "HighLatencyP99",
        &[
            ("namespace", "shop"),
            ("service", "checkout"),
            ("severity", "warning"),
        ],
        "p99 latency above 800ms on checkout",
        at(5, 0),
        None,
    );
    // Alertmanager re-sends the still-firing group with the new alert added.
    steps.push(am_webhook(
        vec![errors.clone(), latency.clone()],
        "webhook 3 (re-send + HighLatencyP99)",
    ));

    // 06:00 payments rolls out; 07:30 its pods crash-loop.
    deploy(
        &mut steps,
        "acme/payments-service",
        "9c8b7a6f5e4d3c2b1a09f8e7d6c5b4a392817160",
        "success",
        at(6, 0),
    );
    let crash = alert(
        "KubePodCrashLooping",
        &[
            ("namespace", "shop"),
            ("pod", "payments-api-5f4b9c7d8-bcdfg"),
            ("container", "api"),
            ("severity", "critical"),
        ],
        "payments-api is restarting repeatedly",
        at(7, 30),
        None,
    );
    let auth = alert(
        "PaymentAuthFailures",
        &[
            ("namespace", "shop"),
            ("deployment", "payments-api"),
            ("severity", "critical"),
        ],
        "card authorisation failures above 2%",
        at(8, 15),
        None,
    );
    steps.push(am_webhook(
        vec![crash.clone(), auth.clone()],
        "webhook 4 (payments)",
    ));

    // 09:00 search deploys and stays healthy.
    deploy(
        &mut steps,
        "acme/search",
        "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d",
        "success",
        at(9, 0),
    );

    // 11:00 noise: a certificate nears expiry on the frontend.
    let cert = alert(
        "CertificateExpiringSoon",
        &[
            ("namespace", "edge"),
            ("service", "frontend"),
            ("severity", "warning"),
        ],
        "TLS certificate for shop.example expires in 7 days",
        at(11, 0),
        None,
    );
    steps.push(am_webhook(vec![cert.clone()], "webhook 5 (certificate)"));

    // 14:00 re-sends of everything still firing.
    steps.push(am_webhook(
        vec![errors, crash, auth, cert, disk],
        "webhook 6 (re-sends)",
    ));

    // 18:00 checkout latency recovers.
    let latency_resolved = alert(
        "HighLatencyP99",
        &[
            ("namespace", "shop"),
            ("service", "checkout"),
            ("severity", "warning"),
        ],
        "p99 latency above 800ms on checkout",
        at(5, 0),
        Some(at(18, 0)),
    );
    steps.push(am_webhook(
        vec![latency_resolved],
        "webhook 7 (HighLatencyP99 resolved)",
    ));
    steps
}

fn alert(
    name: &str,
    labels: &[(&str, &str)],
    summary: &str,
    starts: EventTime,
    ends: Option<EventTime>,
) -> Value {
    let mut l: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    l.insert("alertname".into(), name.into());
    l.insert("cluster".into(), CLUSTER.into());
    l.insert("prometheus".into(), "monitoring/k8s".into());
    let fingerprint = label_fingerprint(&l);
    json!({
        "status": if ends.is_some() { "resolved" } else { "firing" },
        "labels": l,
        "annotations": {"summary": summary, "runbook_url": format!("https://runbooks.example/{name}")},
        "startsAt": starts.to_rfc3339(),
        "endsAt": ends.map(|e| e.to_rfc3339()).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "generatorURL": format!("http://prometheus.example:9090/graph?g0.expr=ALERTS%7Balertname%3D%22{name}%22%7D"),
        "fingerprint": fingerprint,
    })
}

fn am_webhook(alerts: Vec<Value>, what: &str) -> Step {
    let status = if alerts.iter().any(|a| a["status"] == "firing") {
        "firing"
    } else {
        "resolved"
    };
    Step {
        path: "/ingest/alertmanager",
        headers: vec![("user-agent", "Alertmanager/0.27.0".into())],
        body: json!({
            "version": "4",
            "groupKey": "{}/{}:{cluster=\"prod-eu\"}",
            "truncatedAlerts": 0,
            "status": status,
            "receiver": "causeway",
            "groupLabels": {"cluster": CLUSTER},
            "commonLabels": {"cluster": CLUSTER},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager.example:9093",
            "alerts": alerts,
        }),
        what: what.to_owned(),
    }
}

fn github_status(repo: &str, sha: &str, state: &str, t: EventTime, deployment_id: u64) -> Step {
    let status_id = deployment_id * 10 + u64::from(state == "success");
    let html = format!("https://github.example/{repo}");
    Step {
        path: "/ingest/github",
        headers: vec![
            ("x-github-event", "deployment_status".into()),
            ("x-github-delivery", format!("demo-{status_id}")),
        ],
        body: json!({
            "action": "created",
            "deployment_status": {
                "id": status_id, "state": state, "environment": "production",
                "description": format!("Deployment {state}"), "target_url": format!("{html}/actions/runs/{deployment_id}"),
                "creator": {"login": "deploy-bot"}, "created_at": t.to_rfc3339(), "updated_at": t.to_rfc3339(),
            },
            "deployment": {
                "id": deployment_id, "sha": sha, "ref": "main", "task": "deploy", "environment": "production",
                "description": null, "creator": {"login": "alice"}, "created_at": t.to_rfc3339(),
            },
            "repository": {"full_name": repo, "name": repo.rsplit('/').next().unwrap_or(repo), "html_url": html},
            "sender": {"login": "deploy-bot"},
        }),
        what: format!("deployment_status {state} of {repo}"),
    }
}

async fn query_rows(running: &app::Running, sql: &str) -> anyhow::Result<Vec<Value>> {
    let result = running.reader.query(sql, Default::default()).await?;
    let bytes = format::json_rows(&result.batches)?;
    Ok(serde_json::from_slice(&bytes)?)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

async fn print_incidents(running: &app::Running) -> anyhow::Result<()> {
    let incidents = query_rows(
        running,
        "SELECT * FROM incidents_latest ORDER BY opened_at, incident_id",
    )
    .await?;
    let versions = query_rows(running, "SELECT count(*) AS n FROM incidents").await?;
    let version_rows = versions.first().and_then(|v| v["n"].as_i64()).unwrap_or(0);
    let events = query_rows(running, "SELECT count(*) AS n FROM events").await?;
    let event_rows = events.first().and_then(|v| v["n"].as_i64()).unwrap_or(0);
    println!(
        "Correlated {event_rows} distinct events into {} incidents, stored as {version_rows} incident versions\n\
         (SELECT count(*) FROM incidents = {version_rows}, one row per version; FROM incidents_latest = {}).\n",
        incidents.len(),
        incidents.len()
    );
    for inc in &incidents {
        let id = s(inc, "incident_id");
        let chain = query_rows(running, &format::chain_query(id)).await?;
        println!("● [{}] {}", s(inc, "severity"), s(inc, "title"));
        println!(
            "  {id} · rule {} v{} · {}/{} · {} · version {} · {} events",
            s(inc, "rule_id"),
            inc["rule_version"],
            s(inc, "scope"),
            s(inc, "entity"),
            s(inc, "state"),
            inc["version"],
            inc["event_count"],
        );
        let causes: Vec<&Value> = chain.iter().filter(|c| s(c, "role") == "cause").collect();
        let others: Vec<&Value> = chain.iter().filter(|c| s(c, "role") != "cause").collect();
        let indent = if causes.is_empty() {
            "  "
        } else {
            for c in &causes {
                println!(
                    "  └─ cause   {}  {}",
                    short_time(s(c, "time")),
                    s(c, "summary")
                );
            }
            "     "
        };
        for (i, e) in others.iter().enumerate() {
            let branch = if i + 1 == others.len() {
                "└─"
            } else {
                "├─"
            };
            let lag = e["lag_seconds"].as_f64().unwrap_or(0.0);
            println!(
                "{indent}{branch} {:<7} +{:<7} {} [{}] {}",
                s(e, "role"),
                human_lag(lag),
                short_time(s(e, "time")),
                s(e, "status"),
                s(e, "summary")
            );
        }
        println!();
    }
    Ok(())
}

fn short_time(t: &str) -> &str {
    // 2024-05-01T10:02:00Z → 10:02:00
    t.get(11..19).unwrap_or(t)
}

fn human_lag(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{}m{:02}s", s / 60, s % 60)
}
