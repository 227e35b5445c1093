//! `causeway demo`: the embedded default, a realistic scenario posted through the
//! real HTTP receivers, and the incidents printed as causal trees.
//!
//! The scenario, in cluster `prod-eu` over about twenty-five minutes, every payload
//! in its source's real wire format:
//! - checkout is deployed (GitHub) and starts failing, and nobody rolls it back
//!   (deploy regression, escalated after 15 minutes);
//! - payments is deployed, crash-loops, and is rolled back: its alerts resolve;
//! - someone `kubectl edit`s cart, which Argo CD manages: OutOfSync, Degraded, errors
//!   (GitOps drift);
//! - a CI job lowers the memory limit of four workloads: their pods back off, and
//!   the revert runbook runs into its budget (a storm of its own, raised as an alert);
//! - an operator modifies the ledger database (CloudTrail, delivered minutes late):
//!   ledger, which depends on it, fails to write;
//! - someone opens a shell in an orders pod and Falco fires;
//! - frontend's config map changes and its 5xx alert follows;
//! - billing data arrives last: checkout's cost row for the hour of its regression
//!   joins that incident with its cost against the hours before;
//! - a healthy search deploy, a node's full disk and an expiring certificate are
//!   noise; Alertmanager re-sends what still fires.
//!
//! Times are relative to now.

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
    println!(
        "  causeway sql{dd} \"SELECT runbook, decision, reason, params FROM actions ORDER BY decided_at\""
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
        if !empty {
            // A second run adds to the first: its incidents find the earlier,
            // identical ones as similar past incidents.
            println!(
                "Adding to the earlier demo's history in {} (remove it for a fresh start).",
                dir.display()
            );
            return Ok(());
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "written by `causeway demo`; later demos add to this history\n",
    )
    .with_context(|| format!("cannot write {}", dir.display()))?;
    Ok(())
}

fn demo_catalog() -> Catalog {
    let svc = |name: &str, ns: &str| {
        let team = match ns {
            "finance" => "ledger-team",
            "edge" => "web-platform",
            _ => "shop-team",
        };
        ServiceEntry {
            name: name.into(),
            namespace: Some(ns.into()),
            team: Some(team.into()),
            oncall: Some(format!("#oncall-{team}")),
            runbook_url: Some(format!("https://runbooks.acme.example/{name}")),
            ..ServiceEntry::default()
        }
    };
    Catalog {
        default_cluster: CLUSTER.into(),
        environments: [("production".to_owned(), CLUSTER.to_owned())].into(),
        accounts: [(ACCOUNT.to_owned(), CLUSTER.to_owned())].into(),
        services: vec![
            ServiceEntry {
                workloads: vec!["payments-api".into()],
                repos: vec!["acme/payments-service".into()],
                ..svc("payments", "shop")
            },
            ServiceEntry {
                repos: vec!["acme/checkout".into()],
                ..svc("checkout", "shop")
            },
            ServiceEntry {
                argo_apps: vec!["cart-prod".into()],
                ..svc("cart", "shop")
            },
            ServiceEntry {
                repos: vec!["acme/search".into()],
                ..svc("search", "shop")
            },
            ServiceEntry {
                depends_on: vec!["ledger-db".into()],
                ..svc("ledger", "finance")
            },
            ServiceEntry {
                resources: vec![LEDGER_DB_ARN.into()],
                ..svc("ledger-db", "finance")
            },
            svc("orders", "shop"),
            svc("inventory", "shop"),
            ServiceEntry {
                configs: vec!["frontend-config".into()],
                ..svc("frontend", "edge")
            },
        ],
    }
}

const ACCOUNT: &str = "111122223333";
const LEDGER_DB_ARN: &str = "arn:aws:rds:eu-west-1:111122223333:db:ledger-db";

/// One HTTP request of the scenario.
struct Step {
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Value,
    what: String,
}

async fn drive(running: &mut app::Running, base: &str) -> anyhow::Result<()> {
    let client = HttpPoster::new(base)?;
    // The story ends now, unless an earlier demo's history already reaches past
    // that: then it is placed after it, so none of it arrives too late.
    let now = ProcessingTime::now();
    let watermark = running.status.borrow().watermark;
    let anchor = match watermark {
        Some(w) if w.as_micros() + 31 * 60_000_000 > now.as_micros() => {
            ProcessingTime::from_micros(w.as_micros() + 31 * 60_000_000)
        }
        _ => now,
    };
    let mut steps = scenario(anchor);
    // Incidents of earlier runs are not this run's to print.
    let earlier: std::collections::BTreeSet<String> =
        query_rows(running, "SELECT incident_id FROM incidents_latest")
            .await?
            .iter()
            .map(|r| format::s(r, "incident_id").to_owned())
            .collect();
    if !earlier.is_empty() {
        // A new run is new activity: its deployments, audit records and Events
        // have ids of their own (the same ids would be re-deliveries, counted once).
        let salt = u64::try_from(anchor.as_micros() / 60_000_000).unwrap_or(0);
        for step in &mut steps {
            salt_native_ids(step, salt);
        }
    }
    if anchor != now {
        println!(
            "This history already reaches past now: the story is placed after it ({}).",
            anchor.to_rfc3339()
        );
    }
    let mut by_source: BTreeMap<&str, usize> = BTreeMap::new();
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
        let source = step.path.trim_start_matches("/ingest/");
        let source = source.split('?').next().unwrap_or(source);
        *by_source.entry(source).or_default() += 1;
    }
    let sources: Vec<String> = by_source.iter().map(|(s, n)| format!("{n} {s}")).collect();
    println!(
        "Posted {} webhooks through the receivers ({}), re-sends included.",
        steps.len(),
        sources.join(", ")
    );
    if !running.wait_quiescent(Duration::from_secs(60)).await {
        bail!("the engine did not finish correlating within 60s");
    }
    // An irreversible runbook waits for a human: the demo's on-call approves it
    // through the API, as an operator would.
    let waiting = query_rows(
        running,
        "SELECT action_id, runbook FROM actions WHERE decision = 'awaiting_approval' ORDER BY action_id",
    )
    .await?;
    for w in &waiting {
        let id = format::s(w, "action_id");
        let resp = client
            .post_json(
                &format!("/api/v1/actions/{id}/approve"),
                &[],
                json!({"approver": "oncall@acme.example"}).to_string(),
            )
            .await?;
        if resp.status != 200 {
            bail!(
                "approving {id} was refused with {}: {}",
                resp.status,
                resp.text()
            );
        }
        println!(
            "Approved {} action {id} as oncall@acme.example (POST /api/v1/actions/{id}/approve).",
            format::s(w, "runbook")
        );
    }
    // The approval is recorded on the engine's next turn.
    tokio::time::sleep(Duration::from_millis(600)).await;
    if !running.wait_quiescent(Duration::from_secs(60)).await {
        bail!("the engine did not record the approvals within 60s");
    }
    print_incidents(running, &earlier, now).await
}

/// Gives a step's native ids (GitHub deployment and status ids, audit ids, Event
/// uids, CloudTrail event ids) a run-specific suffix.
fn salt_native_ids(step: &mut Step, salt: u64) {
    let suffix = |v: &mut Value| {
        if let Some(text) = v.as_str() {
            *v = Value::String(format!("{text}-run{salt}"));
        }
    };
    let renumber = |v: &mut Value| {
        if let Some(n) = v.as_u64() {
            *v = json!(n + salt * 100_000);
        }
    };
    let body = &mut step.body;
    match step.path.split('?').next().unwrap_or_default() {
        "/ingest/github" => {
            renumber(&mut body["deployment_status"]["id"]);
            renumber(&mut body["deployment"]["id"]);
            for (k, v) in &mut step.headers {
                if *k == "x-github-delivery" {
                    v.push_str(&format!("-run{salt}"));
                }
            }
        }
        "/ingest/k8s-audit" => {
            if let Some(items) = body["items"].as_array_mut() {
                items.iter_mut().for_each(|i| suffix(&mut i["auditID"]));
            } else {
                suffix(&mut body["auditID"]);
            }
        }
        "/ingest/k8s-events" => suffix(&mut body["metadata"]["uid"]),
        "/ingest/cloudtrail" => {
            if let Some(records) = body["Records"].as_array_mut() {
                records.iter_mut().for_each(|r| suffix(&mut r["eventID"]));
            }
        }
        _ => {}
    }
}

/// The scenario's clock: minutes and seconds after its start.
struct Clock(i64);

impl Clock {
    fn at(&self, min: i64, sec: i64) -> EventTime {
        EventTime::from_micros(self.0 + (min * 60 + sec) * 1_000_000)
    }
}

fn scenario(now: ProcessingTime) -> Vec<Step> {
    // Start 30 minutes ago, on a whole minute, so the story reads well.
    let c = Clock((now.as_micros() / 60_000_000 - 30) * 60_000_000);
    let mut steps = Vec::new();

    // Half an hour before the story, the revisions that ran healthily so far are
    // rolled out: what a rollback would return to.
    steps.push(github_status(
        "acme/checkout",
        "3e9d1f07a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1",
        "success",
        c.at(-30, 0),
        991,
    ));
    steps.push(github_status(
        "acme/payments-service",
        "7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f",
        "success",
        c.at(-29, 0),
        992,
    ));

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
        c.at(0, 30),
        None,
    );
    steps.push(am_webhook(vec![disk.clone()], "NodeDiskPressure"));

    // 02:00 checkout 4f1c2ab rolls out; 04:10 it fails. Nobody rolls it back.
    let checkout_sha = "4f1c2ab9e0d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3";
    steps.push(github_status(
        "acme/checkout",
        checkout_sha,
        "in_progress",
        c.at(1, 40),
        1001,
    ));
    steps.push(github_status(
        "acme/checkout",
        checkout_sha,
        "success",
        c.at(2, 0),
        1001,
    ));
    let checkout_errors = alert(
        "HighErrorRate",
        &[
            ("namespace", "shop"),
            ("pod", "checkout-7d9f8b6c5d-x2k4q"),
            ("severity", "critical"),
        ],
        "5xx ratio above 5% on checkout",
        c.at(4, 10),
        None,
    );
    steps.push(am_webhook(
        vec![checkout_errors.clone()],
        "checkout HighErrorRate",
    ));
    let checkout_latency = alert(
        "HighLatencyP99",
        &[
            ("namespace", "shop"),
            ("service", "checkout"),
            ("severity", "warning"),
        ],
        "p99 latency above 800ms on checkout",
        c.at(5, 0),
        None,
    );
    steps.push(am_webhook(
        vec![checkout_errors.clone(), checkout_latency.clone()],
        "checkout re-send + HighLatencyP99",
    ));

    // 06:00 payments 9c8b7a6 rolls out; 07:30 it crash-loops; 12:00 rolled back.
    steps.push(github_status(
        "acme/payments-service",
        "9c8b7a6f5e4d3c2b1a09f8e7d6c5b4a392817160",
        "success",
        c.at(6, 0),
        1002,
    ));
    let crash = alert(
        "KubePodCrashLooping",
        &[
            ("namespace", "shop"),
            ("pod", "payments-api-5f4b9c7d8-bcdfg"),
            ("container", "api"),
            ("severity", "critical"),
        ],
        "payments-api is restarting repeatedly",
        c.at(7, 30),
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
        c.at(8, 15),
        None,
    );
    steps.push(am_webhook(
        vec![crash.clone(), auth.clone()],
        "payments alerts",
    ));

    // 08:00 alice edits cart by hand; Argo CD manages it.
    steps.push(audit(
        "a8c0e2d4-cart-edit",
        c.at(8, 0),
        "alice@acme.example",
        "patch",
        "deployments",
        "shop",
        "cart",
        None,
        Some(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "cart", "image": "ghcr.io/acme/cart:debug-alice"}]}}}})),
    ));
    steps.push(argocd(
        "out-of-sync",
        "cart-prod",
        "OutOfSync",
        "Healthy",
        c.at(8, 40),
    ));
    steps.push(argocd(
        "degraded",
        "cart-prod",
        "OutOfSync",
        "Degraded",
        c.at(10, 0),
    ));
    let cart_errors = alert(
        "HighErrorRate",
        &[
            ("namespace", "shop"),
            ("service", "cart"),
            ("severity", "critical"),
        ],
        "5xx ratio above 5% on cart",
        c.at(10, 30),
        None,
    );
    steps.push(am_webhook(vec![cart_errors.clone()], "cart HighErrorRate"));

    // 09:00 search deploys and stays healthy.
    steps.push(github_status(
        "acme/search",
        "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d",
        "success",
        c.at(9, 0),
        1003,
    ));

    // 11:00 noise: a certificate nears expiry on the frontend.
    let cert = alert(
        "CertificateExpiringSoon",
        &[
            ("namespace", "edge"),
            ("service", "frontend"),
            ("severity", "warning"),
        ],
        "TLS certificate for shop.example expires in 7 days",
        c.at(11, 0),
        None,
    );
    steps.push(am_webhook(vec![cert.clone()], "certificate"));

    // 11:30 a CI job lowers inventory's memory limit; its pods back off.
    steps.push(audit(
        "b17f3a90-inventory-limits",
        c.at(11, 30),
        "system:serviceaccount:ci:deployer",
        "patch",
        "deployments",
        "shop",
        "inventory",
        None,
        Some(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "inventory", "resources": {"limits": {"memory": "128Mi"}}}]}}}})),
    ));
    steps.push(k8s_event(
        "inventory-7c9d8f6b5-k2x9q",
        "BackOff",
        1,
        c.at(13, 0),
    ));
    steps.push(k8s_event(
        "inventory-7c9d8f6b5-k2x9q",
        "BackOff",
        2,
        c.at(13, 40),
    ));

    // 11:31–11:33 the same CI job does it to three more workloads: the revert
    // runbook acts on three, then its budget halts it and Causeway raises an
    // alert about its own remediator.
    for (i, (workload, pod)) in [
        ("reports", "reports-6d9f7c8b5-r7t2m"),
        ("mailer", "mailer-5c8b9d6f7-m4n8p"),
        ("thumbnailer", "thumbnailer-8f6d5c9b7-t9v4w"),
    ]
    .into_iter()
    .enumerate()
    {
        let i = i64::try_from(i).unwrap_or(0);
        steps.push(audit(
            &format!("b17f3a9{i}-{workload}-limits"),
            c.at(11, 40 + i * 5),
            "system:serviceaccount:ci:deployer",
            "patch",
            "deployments",
            "shop",
            workload,
            None,
            Some(json!({"spec": {"template": {"spec": {"containers": [
                {"name": workload, "resources": {"limits": {"memory": "128Mi"}}}]}}}})),
        ));
        steps.push(k8s_event(pod, "BackOff", 1, c.at(13, 10 + i * 5)));
        steps.push(k8s_event(pod, "BackOff", 2, c.at(13, 50 + i * 3)));
    }

    // 12:00 payments is rolled back; its alerts resolve by 14:30.
    steps.push(github_status(
        "acme/payments-service",
        "51e0d2c7b6a5f4e3d2c1b0a9f8e7d6c5b4a39281",
        "success",
        c.at(12, 0),
        1004,
    ));
    steps.push(am_webhook(
        vec![resolve(&crash, c.at(14, 0)), resolve(&auth, c.at(14, 30))],
        "payments resolved",
    ));

    // 16:30 ledger fails to write; the RDS change at 15:00 arrives with CloudTrail's
    // delivery delay, after the alert.
    let ledger = alert(
        "LedgerWriteErrors",
        &[
            ("namespace", "finance"),
            ("deployment", "ledger"),
            ("severity", "critical"),
        ],
        "ledger writes failing: connection reset by database",
        c.at(16, 30),
        None,
    );
    steps.push(am_webhook(vec![ledger.clone()], "ledger LedgerWriteErrors"));

    // 18:00 mallory opens a shell in an orders pod; Falco fires.
    steps.push(audit(
        "c29e5b71-orders-exec",
        c.at(18, 0),
        "mallory@acme.example",
        "create",
        "pods",
        "shop",
        "orders-6d8f9c7b5-q4w7z",
        Some("exec"),
        None,
    ));
    let falco = alert(
        "FalcoAlert",
        &[
            ("source", "falco"),
            ("rule", "Terminal shell in container"),
            ("priority", "Warning"),
            ("k8s_ns_name", "shop"),
            ("k8s_pod_name", "orders-6d8f9c7b5-q4w7z"),
            ("namespace", "shop"),
            ("severity", "critical"),
        ],
        "A shell was spawned in a container with an attached terminal (user=root orders-6d8f9c7b5-q4w7z)",
        c.at(18, 20),
        None,
    );
    steps.push(am_webhook(vec![falco.clone()], "Falco"));

    // 20:00 CI updates frontend's config map; 21:00 frontend 5xx.
    steps.push(audit(
        "d3a4b5c6-frontend-config",
        c.at(20, 0),
        "system:serviceaccount:ci:deployer",
        "update",
        "configmaps",
        "edge",
        "frontend-config",
        None,
        Some(json!({"data": {"FEATURE_NEW_CHECKOUT": "true", "CDN_ORIGIN": "origin-v2.shop.example"}})),
    ));
    let frontend_5xx = alert(
        "HighErrorRate",
        &[
            ("namespace", "edge"),
            ("service", "frontend"),
            ("severity", "critical"),
        ],
        "5xx ratio above 5% on frontend",
        c.at(21, 0),
        None,
    );
    steps.push(am_webhook(
        vec![frontend_5xx.clone()],
        "frontend HighErrorRate",
    ));

    // CloudTrail delivers the 15:00 RDS change now.
    steps.push(cloudtrail(
        "ModifyDBInstance",
        c.at(15, 0),
        json!({"dBInstanceIdentifier": "ledger-db", "dBParameterGroupName": "ledger-pg-tuned", "applyImmediately": true}),
    ));

    // 22:00 Alertmanager re-sends everything still firing.
    steps.push(am_webhook(
        vec![
            checkout_errors,
            checkout_latency,
            cart_errors,
            cert,
            disk,
            ledger,
            falco,
            frontend_5xx,
        ],
        "re-sends",
    ));
    // Billing catches up: hourly FOCUS rows for checkout, the hours before the bad
    // deploy and the one after it. The later row joins the regression as a new
    // version with its cost against the usual spend.
    steps.push(focus_rows(&[
        ("checkout", c.at(-120, 0), "11.80"),
        ("checkout", c.at(-60, 0), "12.20"),
        ("checkout", c.at(2, 0), "19.40"),
    ]));

    steps
}

/// FOCUS 1.0 cost rows as a JSON array: (service tag, charge period start, cost).
fn focus_rows(rows: &[(&str, EventTime, &str)]) -> Step {
    let rows: Vec<Value> = rows
        .iter()
        .map(|(service, t, cost)| {
            let end = EventTime::from_micros(t.as_micros() + 3_600_000_000);
            json!({
                "BillingAccountId": ACCOUNT, "SubAccountId": ACCOUNT,
                "ChargePeriodStart": t.to_rfc3339(), "ChargePeriodEnd": end.to_rfc3339(),
                "BilledCost": cost, "EffectiveCost": cost, "ListCost": cost, "BillingCurrency": "USD",
                "ChargeCategory": "Usage", "ChargeClass": null, "ProviderName": "AWS",
                "ServiceName": "Amazon Elastic Kubernetes Service", "ServiceCategory": "Compute",
                "ResourceId": format!("arn:aws:eks:eu-west-1:{ACCOUNT}:pod/{service}"),
                "RegionId": "eu-west-1",
                "Tags": {"app": service},
            })
        })
        .collect();
    Step {
        path: "/ingest/cost",
        headers: vec![],
        body: Value::Array(rows),
        what: "FOCUS cost rows".to_owned(),
    }
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

/// The same alert, resolved at `ends`.
fn resolve(alert: &Value, ends: EventTime) -> Value {
    let mut a = alert.clone();
    a["status"] = "resolved".into();
    a["endsAt"] = ends.to_rfc3339().into();
    a
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
        what: format!("Alertmanager webhook ({what})"),
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
                "payload": {"image": format!("ghcr.io/{repo}:{}", &sha[..7])},
            },
            "repository": {"full_name": repo, "name": repo.rsplit('/').next().unwrap_or(repo), "html_url": html},
            "sender": {"login": "deploy-bot"},
        }),
        what: format!("GitHub deployment_status {state} of {repo}"),
    }
}

/// A Kubernetes audit record (`ResponseComplete`) as the API server's webhook
/// backend sends it.
#[allow(clippy::too_many_arguments)]
fn audit(
    audit_id: &str,
    t: EventTime,
    user: &str,
    verb: &str,
    resource: &str,
    namespace: &str,
    name: &str,
    subresource: Option<&str>,
    request_object: Option<Value>,
) -> Step {
    let group = if resource == "deployments" {
        "apps"
    } else {
        ""
    };
    let mut object_ref = json!({
        "resource": resource, "namespace": namespace, "name": name,
        "apiGroup": group, "apiVersion": "v1",
    });
    let mut uri = format!("/api/v1/namespaces/{namespace}/{resource}/{name}");
    if let Some(sub) = subresource {
        object_ref["subresource"] = sub.into();
        uri.push_str(&format!("/{sub}?command=sh&stdin=true&tty=true"));
    }
    let groups = if user.starts_with("system:serviceaccount:") {
        json!(["system:serviceaccounts", "system:authenticated"])
    } else {
        json!(["sre", "system:authenticated"])
    };
    let mut item = json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
        "auditID": audit_id, "stage": if subresource.is_some() { "ResponseStarted" } else { "ResponseComplete" },
        "requestURI": uri, "verb": verb,
        "user": {"username": user, "groups": groups},
        "sourceIPs": ["10.20.0.17"], "userAgent": "kubectl/v1.30.2 (linux/amd64)",
        "objectRef": object_ref,
        "responseStatus": {"metadata": {}, "code": if subresource.is_some() { 101 } else { 200 }},
        "requestReceivedTimestamp": t.to_rfc3339(), "stageTimestamp": t.to_rfc3339(),
    });
    if let Some(body) = request_object {
        item["requestObject"] = body;
    }
    Step {
        path: "/ingest/k8s-audit?cluster=prod-eu",
        headers: vec![],
        body: json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": [item]}),
        what: format!("Kubernetes audit ({user} {verb} {resource}/{name})"),
    }
}

/// A notification of the Argo CD template shipped in `deploy/argocd/`.
fn argocd(notification: &str, app: &str, sync: &str, health: &str, t: EventTime) -> Step {
    Step {
        path: "/ingest/argocd",
        headers: vec![],
        body: json!({
            "schema": "causeway.argocd/v1",
            "notification": notification,
            "event_id": format!("7f9e-{app}/{notification}/1c2d3e4/Succeeded/{health}/{sync}/{}", t.to_rfc3339()),
            "app": app, "project": "shop", "namespace": "shop",
            "destination_name": CLUSTER, "destination_server": "https://prod-eu.k8s.example",
            "repo_url": "https://github.example/acme/deploy", "revision": "1c2d3e4f5a6b7c8d9e0f",
            "phase": "Succeeded", "started_at": "", "finished_at": "",
            "sync_status": sync, "health": health, "reconciled_at": t.to_rfc3339(),
            "initiated_by": "", "images": ["ghcr.io/acme/cart:2.3.1"],
            "app_url": format!("https://argocd.example/applications/{app}"),
        }),
        what: format!("Argo CD notification ({notification} {app})"),
    }
}

/// A core/v1 Kubernetes Event about a pod.
fn k8s_event(pod: &str, reason: &str, count: u32, t: EventTime) -> Step {
    let container = pod.split('-').next().unwrap_or(pod);
    Step {
        path: "/ingest/k8s-events?cluster=prod-eu",
        headers: vec![],
        body: json!({
            "kind": "Event", "apiVersion": "v1",
            "metadata": {"name": format!("{pod}.17c4f2a9b3"), "namespace": "shop", "uid": format!("ev-{pod}-{reason}"),
                         "creationTimestamp": t.to_rfc3339()},
            "involvedObject": {"kind": "Pod", "namespace": "shop", "name": pod, "fieldPath": format!("spec.containers{{{container}}}")},
            "reason": reason,
            "message": format!("Back-off restarting failed container {container} in pod {pod}"),
            "source": {"component": "kubelet", "host": "node-2"},
            "firstTimestamp": t.to_rfc3339(), "lastTimestamp": t.to_rfc3339(), "count": count, "type": "Warning",
        }),
        what: format!("Kubernetes Event ({reason} {pod})"),
    }
}

/// One CloudTrail record, as an S3 delivery's `{"Records": [...]}`.
fn cloudtrail(event_name: &str, t: EventTime, params: Value) -> Step {
    Step {
        path: "/ingest/cloudtrail",
        headers: vec![],
        body: json!({"Records": [{
            "eventVersion": "1.09",
            "userIdentity": {"type": "AssumedRole", "principalId": "AROAEXAMPLE:ops-admin",
                "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/ops-admin/jane"), "accountId": ACCOUNT,
                "sessionContext": {"sessionIssuer": {"type": "Role", "userName": "ops-admin"}}},
            "eventTime": t.to_rfc3339(), "eventSource": "rds.amazonaws.com", "eventName": event_name,
            "awsRegion": "eu-west-1", "sourceIPAddress": "203.0.113.7", "userAgent": "aws-cli/2.15.0",
            "requestParameters": params, "responseElements": null,
            "eventID": "5d9f6c0e-8a1b-4c2d-9e3f-7a6b5c4d3e2f", "readOnly": false, "eventType": "AwsApiCall",
            "recipientAccountId": ACCOUNT, "resources": [{"ARN": LEDGER_DB_ARN, "type": "AWS::RDS::DBInstance"}],
        }]}),
        what: format!("CloudTrail ({event_name})"),
    }
}

async fn query_rows(running: &app::Running, sql: &str) -> anyhow::Result<Vec<Value>> {
    let result = running.reader.query(sql, Default::default()).await?;
    let bytes = format::json_rows(&result.batches)?;
    Ok(serde_json::from_slice(&bytes)?)
}

async fn print_incidents(
    running: &app::Running,
    earlier: &std::collections::BTreeSet<String>,
    started: ProcessingTime,
) -> anyhow::Result<()> {
    let incidents: Vec<Value> = query_rows(
        running,
        "SELECT * FROM incidents_latest WHERE merged_into IS NULL ORDER BY opened_at, incident_id",
    )
    .await?
    .into_iter()
    .filter(|r| !earlier.contains(format::s(r, "incident_id")))
    .collect();
    let since = format!("to_timestamp_micros({})", started.as_micros());
    let version_rows = query_rows(running, "SELECT incident_id FROM incidents")
        .await?
        .iter()
        .filter(|r| !earlier.contains(format::s(r, "incident_id")))
        .count();
    let events = query_rows(
        running,
        &format!("SELECT count(*) AS n FROM events WHERE ingested_at >= {since}"),
    )
    .await?;
    let event_rows = events.first().and_then(|v| v["n"].as_i64()).unwrap_or(0);
    println!(
        "Correlated {event_rows} distinct events into {} incidents, stored as {version_rows} incident versions\n\
         (the incidents table keeps one row per version; incidents_latest the latest).\n",
        incidents.len(),
    );
    for inc in &incidents {
        let id = format::s(inc, "incident_id");
        let chain = query_rows(running, &format::chain_query(id)).await?;
        print!("{}", format::incident_tree(inc, &chain));
        let actions = query_rows(
            running,
            &format!(
                "SELECT runbook, action_class, decision, reason FROM actions \
                 WHERE incident_id = '{id}' ORDER BY decided_at, decision"
            ),
        )
        .await?;
        for a in &actions {
            println!(
                "  ⚙ runbook {} ({}): {} — {}",
                format::s(a, "runbook"),
                format::s(a, "action_class"),
                format::s(a, "decision"),
                format::s(a, "reason")
            );
        }
        println!();
    }
    Ok(())
}
