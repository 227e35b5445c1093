//! The real `causeway` binary on a free loopback port: webhooks in, incidents out
//! through `POST /api/v1/sql`, refusals counted, and acknowledged events surviving
//! `kill -9`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    Instance, alert, alertmanager, checkout_config, count, deployment_status, eventually,
    free_port, post, sql, start_with,
};
use serde_json::{Value, json};

async fn start(dir: &Path, port: u16) -> Instance {
    start_with(dir, port, &checkout_config(&dir.join("data"), port, "")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_become_a_deploy_regression_queryable_over_http_and_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let inst = start(dir.path(), port).await;
    let base = inst.base.clone();

    let gh = [
        ("x-github-event", "deployment_status"),
        ("x-github-delivery", "d-1"),
    ];
    assert_eq!(
        post(
            &base,
            "/ingest/github",
            &gh,
            deployment_status("2024-05-01T10:00:00Z").to_string()
        )
        .await,
        200
    );
    let alerts = alertmanager(vec![
        alert(
            "HighErrorRate",
            "checkout-7d9f8b6c5d-x2k4q",
            "2024-05-01T10:03:00Z",
        ),
        alert(
            "HighLatency",
            "checkout-7d9f8b6c5d-x2k4q",
            "2024-05-01T10:04:00Z",
        ),
    ])
    .to_string();
    assert_eq!(
        post(&base, "/ingest/alertmanager", &[], alerts.clone()).await,
        200
    );
    // A re-send of the same alerts counts once.
    assert_eq!(post(&base, "/ingest/alertmanager", &[], alerts).await, 200);
    // Malformed and unsupported bodies are refused and add nothing.
    assert_eq!(
        post(
            &base,
            "/ingest/alertmanager",
            &[],
            "{\"version\": \"4\", \"alerts\": [".into()
        )
        .await,
        400
    );
    assert_eq!(
        post(
            &base,
            "/ingest/alertmanager",
            &[],
            alertmanager(vec![]).to_string().replace("\"4\"", "\"2\"")
        )
        .await,
        422
    );

    // Wait for the version holding both alerts: the deploy and the first alert can
    // be released (and committed) while the second still waits for the alert
    // source to go idle, when the requests are far apart on a loaded machine.
    eventually(
        &base,
        "SELECT count(*) AS n FROM incidents_latest WHERE rule_id = 'deploy-regression' AND event_count = 3",
        1,
    )
    .await;
    assert_eq!(
        count(
            &base,
            "SELECT count(*) AS n FROM incidents_latest WHERE rule_id = 'deploy-regression'"
        )
        .await,
        1
    );
    let incident = &sql(
        &base,
        "SELECT * FROM incidents_latest WHERE rule_id = 'deploy-regression'",
    )
    .await[0];
    assert_eq!(incident["entity"], "checkout");
    assert_eq!(incident["scope"], "prod");
    assert_eq!(incident["event_count"], 3);
    let root = sql(
        &base,
        &format!(
            "SELECT source, kind FROM events WHERE event_id = '{}'",
            incident["root_cause_event_id"]
                .as_str()
                .expect("root cause")
        ),
    )
    .await;
    assert_eq!(root[0]["kind"], "deploy");
    assert_eq!(count(&base, "SELECT count(*) AS n FROM events").await, 3);

    // The incidents API: the list, a filter, one incident with versions and chain.
    let client = reqwest::Client::new();
    let list: Vec<Value> = client
        .get(format!("{base}/api/v1/incidents?state=open"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list.len(), 1);
    let id = list[0]["incident_id"].as_str().expect("id").to_owned();
    let one: Value = client
        .get(format!("{base}/api/v1/incidents/{id}"))
        .send()
        .await
        .expect("one")
        .json()
        .await
        .expect("json");
    assert_eq!(one["incident"]["incident_id"], id.as_str());
    assert_eq!(one["versions"].as_array().map(Vec::len), Some(2));
    let roles: Vec<&str> = one["chain"]
        .as_array()
        .expect("chain")
        .iter()
        .filter_map(|e| e["role"].as_str())
        .collect();
    assert_eq!(roles, ["cause", "effect", "effect"]);
    assert_eq!(one["enrichment"]["service"], "checkout", "{one}");
    assert_eq!(
        one["enrichment"]["owner"]["repository"],
        "acme/checkout-service"
    );
    assert_eq!(
        one["actions"][0]["runbook"], "rollback-deploy",
        "the default pack's dry-run rollback decision: {one}"
    );
    for bad in [
        "inc_nope",
        "inc_00000000000000000000000000000000",
        "x' OR '1'='1",
    ] {
        let r = client
            .get(format!("{base}/api/v1/incidents/{bad}"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 404, "{bad}");
    }
    assert_eq!(
        client
            .get(format!("{base}/api/v1/incidents?state=weird"))
            .send()
            .await
            .expect("get")
            .status(),
        400
    );

    // SQL as CSV and as an Arrow IPC stream; DDL refused with 400.
    let csv = client
        .post(format!("{base}/api/v1/sql"))
        .header("accept", "text/csv")
        .json(
            &json!({"query": "SELECT kind, count(*) AS n FROM events GROUP BY kind ORDER BY kind"}),
        )
        .send()
        .await
        .expect("csv")
        .text()
        .await
        .expect("text");
    assert_eq!(csv, "kind,n\nalert,2\ndeploy,1\n");
    let ipc = client
        .post(format!("{base}/api/v1/sql"))
        .header("accept", "application/vnd.apache.arrow.stream")
        .json(&json!({"query": "SELECT count(*) AS n FROM events"}))
        .send()
        .await
        .expect("ipc");
    assert_eq!(
        ipc.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = ipc.bytes().await.expect("bytes");
    assert!(
        bytes.len() > 8 && bytes[..4] == [0xff, 0xff, 0xff, 0xff],
        "an IPC stream"
    );
    let ddl = client
        .post(format!("{base}/api/v1/sql"))
        .json(&json!({"query": "DROP TABLE events"}))
        .send()
        .await
        .expect("ddl");
    assert_eq!(ddl.status(), 400);

    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("causeway_receiver_rejected_requests_total{reason=\"malformed\",source=\"alertmanager\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("causeway_receiver_rejected_requests_total{reason=\"unsupported\",source=\"alertmanager\"} 1"));

    // Acknowledged, then killed before any commit could happen: still there after restart.
    let late = alertmanager(vec![alert(
        "PodRestarts",
        "checkout-7d9f8b6c5d-x2k4q",
        "2024-05-01T10:05:00Z",
    )]);
    assert_eq!(
        post(&base, "/ingest/alertmanager", &[], late.to_string()).await,
        200
    );
    drop(inst); // SIGKILL

    let inst = start(dir.path(), port).await;
    eventually(&inst.base, "SELECT count(*) AS n FROM events", 4).await;
    eventually(
        &inst.base,
        "SELECT count(*) AS n FROM incidents_latest WHERE rule_id = 'deploy-regression' AND event_count = 4",
        1,
    )
    .await;

    // SIGTERM drains and exits cleanly.
    let mut inst = inst;
    let pid = inst.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(code) = inst.child.try_wait().expect("wait") {
            assert!(code.success(), "exit status {code}");
            break;
        }
        assert!(Instant::now() < deadline, "did not exit on SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The history is readable offline by `causeway sql` after the process is gone.
    assert_eq!(offline_event_count(&dir.path().join("data")), 4);
}

/// `SELECT count(*) FROM events` by `causeway sql` over a data dir no process holds.
fn offline_event_count(data_dir: &Path) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(["sql", "--format", "json", "--data-dir"])
        .arg(data_dir)
        .arg("SELECT count(*) AS n FROM events")
        .output()
        .expect("causeway sql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    rows[0]["n"].as_u64().expect("a count")
}

#[test]
fn validate_config_reports_bad_files_with_a_non_zero_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "version: 1\nserver:\n  listen: not-an-address\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(["validate-config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen"), "{err}");

    // A history URL of an unsupported scheme, or a credential in the saved
    // options, names the key and what to do instead.
    for (history, want) in [
        ("{url: gs://bucket/p}", "history.url"),
        (
            "{url: s3://bucket/p, options: {secret_access_key: x}}",
            "AWS_SECRET_ACCESS_KEY",
        ),
        ("{url: s3://bucket/p, options: {colour: blue}}", "colour"),
    ] {
        std::fs::write(&bad, format!("version: 1\nhistory: {history}\n")).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_causeway"))
            .args(["validate-config"])
            .arg(&bad)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{history}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{history}: {err}");
    }

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "version: 1\nengine:\n  group_interval: 10m\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(["validate-config"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_receiver_accepts_its_format_through_the_binary_and_refuses_garbage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inst = start(dir.path(), free_port()).await;
    let base = inst.base.clone();

    // Prometheus posting straight to us (Alertmanager API v2).
    let prom = json!([{"labels": {"alertname": "TargetDown", "job": "api", "cluster": "prod"},
                       "annotations": {}, "startsAt": "2024-05-01T10:00:00Z",
                       "endsAt": "2999-01-01T00:00:00Z", "generatorURL": "http://prom"}]);
    assert_eq!(
        post(&base, "/api/v2/alerts", &[], prom.to_string()).await,
        200
    );

    // Kubernetes audit: a human patching a deployment; the earlier stage is skipped.
    let audit = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [
        {"kind": "Event", "auditID": "aud-1", "stage": "RequestReceived", "verb": "patch",
         "user": {"username": "alice"}, "objectRef": {"resource": "deployments", "namespace": "shop", "name": "checkout"},
         "requestReceivedTimestamp": "2024-05-01T10:01:00Z"},
        {"kind": "Event", "auditID": "aud-1", "stage": "ResponseComplete", "verb": "patch",
         "user": {"username": "alice"}, "objectRef": {"resource": "deployments", "namespace": "shop", "name": "checkout"},
         "responseStatus": {"code": 200}, "requestReceivedTimestamp": "2024-05-01T10:01:00Z"}]});
    assert_eq!(
        post(
            &base,
            "/ingest/k8s-audit?cluster=prod",
            &[],
            audit.to_string()
        )
        .await,
        200
    );

    // Already-normalized CloudEvents, as a batch.
    let ce = json!([{"specversion": "1.0", "id": "ce-1", "source": "ci", "type": "dev.causeway.deploy",
                     "time": "2024-05-01T10:02:00Z", "subject": "search", "scope": "prod", "status": "success"}]);
    assert_eq!(
        post(&base, "/ingest/events", &[], ce.to_string()).await,
        200
    );

    // Argo CD, from the template we ship.
    let argo = json!({"schema": "causeway.argocd/v1", "event_id": "uid-9/abc/Succeeded", "app": "checkout",
        "project": "default", "namespace": "shop", "destination_name": "prod", "destination_server": "",
        "repo_url": "", "revision": "abc1234", "phase": "Succeeded", "started_at": "2024-05-01T10:02:30Z",
        "finished_at": "2024-05-01T10:03:00Z", "sync_status": "Synced", "health": "Healthy",
        "reconciled_at": "", "initiated_by": "", "images": ["ghcr.io/acme/checkout:2"], "app_url": ""});
    assert_eq!(
        post(&base, "/ingest/argocd", &[], argo.to_string()).await,
        200
    );
    // A Kubernetes Event.
    let kev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "x", "namespace": "shop", "uid": "k-1"},
        "involvedObject": {"kind": "Pod", "name": "checkout-7d9f8b6c5d-x2k4q", "namespace": "shop"},
        "reason": "BackOff", "message": "Back-off restarting failed container", "type": "Warning",
        "count": 1, "lastTimestamp": "2024-05-01T10:04:00Z"});
    assert_eq!(
        post(
            &base,
            "/ingest/k8s-events?cluster=prod",
            &[],
            kev.to_string()
        )
        .await,
        200
    );
    // CloudTrail.
    let trail = json!({"Records": [{"eventVersion": "1.08", "eventID": "ct-1", "eventTime": "2024-05-01T10:05:00Z",
        "eventSource": "rds.amazonaws.com", "eventName": "ModifyDBInstance", "recipientAccountId": "prod",
        "requestParameters": {"dBInstanceIdentifier": "payments-db"}}]});
    assert_eq!(
        post(&base, "/ingest/cloudtrail", &[], trail.to_string()).await,
        200
    );
    // FOCUS as CSV.
    let focus = "ChargePeriodStart,ChargePeriodEnd,EffectiveCost,BilledCost,BillingCurrency,BillingAccountId,ResourceId,ServiceName,Tags\n\
                 2024-05-01 10:00:00,2024-05-01 11:00:00,1.5,1.5,USD,prod,i-1,Amazon EC2,\"{\"\"app\"\": \"\"search\"\"}\"\n";
    let r = reqwest::Client::new()
        .post(format!("{base}/ingest/cost"))
        .header("content-type", "text/csv")
        .body(focus)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let events_before = 7;

    let refused = battery(&base).await;
    assert!(refused >= 300, "the battery sent {refused} requests");

    eventually(&base, "SELECT count(*) AS n FROM events", events_before).await;
    let rows = sql(
        &base,
        "SELECT source, kind, entity, scope FROM events ORDER BY time, source",
    )
    .await;
    let got: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| {
            let f = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (f("source"), f("kind"), f("entity"), f("scope"))
        })
        .collect();
    let want =
        |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned(), "prod".to_owned());
    assert_eq!(
        got,
        vec![
            want("alertmanager", "alert", "api"),
            want("cost", "cost", "search"),
            want("k8s_audit", "change", "checkout"),
            want("ci", "deploy", "search"),
            want("argocd", "deploy", "checkout"),
            want("k8s_event", "k8s_event", "checkout"),
            want("cloudtrail", "change", "payments-db"),
        ]
    );
}

#[test]
fn import_decodes_whole_files_correlates_them_and_refuses_bad_ones_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let ce = |id: &str, ty: &str, t: &str, status: &str| {
        json!({"specversion": "1.0", "id": id, "source": "ci", "type": ty, "time": t,
               "subject": "checkout", "scope": "prod", "status": status,
               "data": {"summary": id, "attributes": {"alertname": "HighErrorRate"}}})
        .to_string()
    };
    let good = dir.path().join("good.jsonl");
    std::fs::write(
        &good,
        [
            ce(
                "d1",
                "dev.causeway.deploy",
                "2024-05-01T10:00:00Z",
                "success",
            ),
            ce("a1", "dev.causeway.alert", "2024-05-01T10:05:00Z", "firing"),
        ]
        .join("\n"),
    )
    .expect("write");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{}\nnot json\n",
            ce("a2", "dev.causeway.alert", "2024-05-01T10:06:00Z", "firing")
        ),
    )
    .expect("write");

    let causeway = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_causeway"))
            .args(args)
            .env("CAUSEWAY__DATA_DIR", &data)
            .env("CAUSEWAY_DATA_DIR", &data)
            .env("CAUSEWAY_LOG", "warn")
            .output()
            .expect("run causeway")
    };
    let out = causeway(&["import", "events", good.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = causeway(&["import", "events", bad.to_str().expect("path")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));

    let out = causeway(&[
        "sql",
        "--format",
        "json",
        "SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM incidents_latest WHERE rule_id = 'deploy-regression') AS incidents",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows[0]["events"], 2, "the refused file added nothing");
    assert_eq!(rows[0]["incidents"], 1);
}

/// The end of an import's input releases what the watermark holds at once: it
/// must not wait for the sources of its last read to time out as idle (here an
/// hour, so a wait shows as a refused deadline, not as a slow test).
#[test]
fn an_import_ends_without_waiting_for_its_sources_to_go_idle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let file = dir.path().join("events.jsonl");
    // More events than one read of the log takes, so the last read comes after
    // the import has said its input ended.
    let lines: Vec<String> = (0..6000)
        .map(|i| {
            let (source, ty) = if i % 3 == 0 {
                ("ci", "dev.causeway.deploy")
            } else {
                ("alertmanager", "dev.causeway.alert")
            };
            json!({"specversion": "1.0", "id": format!("e{i}"), "source": source, "type": ty,
                   "time": format!("2024-05-01T10:{:02}:{:02}Z", i / 600, (i / 10) % 60),
                   "subject": format!("svc-{}", i % 50), "scope": "prod", "status": "firing",
                   "data": {"summary": "s", "attributes": {"alertname": "HighErrorRate"}}})
            .to_string()
        })
        .collect();
    std::fs::write(&file, lines.join("\n")).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(["import", "events", file.to_str().expect("path")])
        .env("CAUSEWAY__DATA_DIR", &data)
        .env("CAUSEWAY__ENGINE__WATERMARK__IDLE_TIMEOUT", "1h")
        .env("CAUSEWAY_LOG", "warn")
        .spawn()
        .expect("run causeway");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the import was still waiting for its sources' idle timeout (1 h)");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit status {status}");
    assert_eq!(offline_event_count(&data), 6000);
}

/// Several hundred malformed, oversized, wrongly typed or badly signed requests to
/// every receiver: each must get a 4xx, never a 5xx. Returns how many were sent.
async fn battery(base: &str) -> usize {
    let paths = [
        "/ingest/alertmanager",
        "/api/v2/alerts",
        "/ingest/github",
        "/ingest/argocd",
        "/ingest/k8s-audit",
        "/ingest/k8s-events",
        "/ingest/cloudtrail",
        "/ingest/cost",
        "/ingest/events",
    ];
    let mut bodies: Vec<String> = [
        "", " ", "nul", "null", "true", "0", "-1", "[]", "{}", "[[]]", "[{}]", "[null]", "\"x\"",
        "{\"kind\": 0}", "[{\"x\": 1}]", "{\"version\":\"4\"}", "{\"version\":\"4\",\"alerts\":[{}]}",
        "{\"version\":\"4\",\"alerts\":[{\"status\":\"firing\",\"labels\":{\"alertname\":\"A\"},\"startsAt\":\"soon\"}]}",
        "{\"Records\":[{}]}", "{\"Records\":{}}", "{\"kind\":\"EventList\",\"items\":[{}]}",
        "{\"kind\":\"Event\",\"apiVersion\":\"v9\"}", "{\"schema\":\"other\"}", "{\"data\":{}}",
        "{\"specversion\":\"0.3\"}", "[{\"specversion\":\"1.0\",\"type\":\"x\"}]", "{\"action\":1}",
        "\u{0}\u{1}\u{2}", "{\"a\":", "\u{feff}{}", "{\"Records\":[{\"eventVersion\":\"2.0\"}]}",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    bodies.push("[".repeat(10_000));
    let mut sent = 0;
    let client = reqwest::Client::new();
    for path in paths {
        for body in &bodies {
            let status = post(
                base,
                path,
                &[("x-github-event", "deployment_status")],
                body.clone(),
            )
            .await;
            // An empty array is a valid, empty batch where batches are arrays.
            let empty_batch = body == "[]"
                && matches!(path, "/api/v2/alerts" | "/ingest/events" | "/ingest/cost");
            let ok = (400..500).contains(&status) || (empty_batch && status == 200);
            assert!(ok, "{path} {body:.40?}: {status}");
            sent += 1;
        }
        // Wrong content type.
        let r = client
            .post(format!("{base}{path}"))
            .header("content-type", "application/xml")
            .body("<a/>")
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 415, "{path}");
        // Over the 10 MiB default body limit.
        let r = client
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(vec![b' '; 11 << 20])
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 413, "{path}");
        sent += 2;
    }
    sent
}

/// The demo's stored events replayed through the same engine give exactly the
/// stored incidents (ids, versions, members); a rule pack without the deploy
/// regression rule gives a diff, and `--fail-on-diff` turns it into an exit code.
#[test]
fn replay_reproduces_the_demo_and_diffs_a_changed_rule_pack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("causeway-data");
    let causeway = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_causeway"))
            .args(args)
            .env("CAUSEWAY_LOG", "warn")
            .env_remove("CAUSEWAY_CONFIG")
            .output()
            .expect("run causeway")
    };
    let data_arg = data.to_str().expect("path");
    let listen = format!("127.0.0.1:{}", free_port());
    let out = causeway(&["demo", "--data-dir", data_arg, "--listen", &listen]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = causeway(&[
        "replay",
        "--data-dir",
        data_arg,
        "--diff",
        "--fail-on-diff",
        "--format",
        "json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let same: Value = serde_json::from_str(stdout.trim()).expect("diff json");
    assert!(
        same["unchanged"].as_u64().expect("unchanged") >= 5,
        "{same}"
    );

    // The replayed incidents, as JSON lines, name the same ids SQL gives.
    let out = causeway(&["replay", "--data-dir", data_arg, "--format", "json"]);
    assert!(out.status.success());
    let mut replayed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("incident json");
            format!(
                "{}@{}",
                v["incident_id"].as_str().expect("id"),
                v["version"]
            )
        })
        .collect();
    let out = causeway(&[
        "sql",
        "--data-dir",
        data_arg,
        "--format",
        "json",
        "SELECT incident_id, version FROM incidents_latest WHERE merged_into IS NULL",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    let mut stored: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{}@{}",
                r["incident_id"].as_str().expect("id"),
                r["version"]
            )
        })
        .collect();
    replayed.sort();
    stored.sort();
    assert_eq!(replayed, stored);

    // Backtest a rule change: without deploy-regression its incidents disappear
    // and the alerts they held fall back to their own groups.
    let pack: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/packs/default.yaml"),
        )
        .expect("default pack"),
    )
    .expect("yaml");
    let mut pack = pack;
    let rules = pack["rules"].as_sequence_mut().expect("rules list");
    let before = rules.len();
    rules.retain(|r| r["id"].as_str() != Some("deploy-regression"));
    assert_eq!(rules.len() + 1, before);
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir(&rules_dir).expect("mkdir");
    std::fs::write(
        rules_dir.join("pack.yaml"),
        serde_yaml::to_string(&pack).expect("yaml"),
    )
    .expect("write");
    let out = causeway(&[
        "replay",
        "--data-dir",
        data_arg,
        "--rules",
        rules_dir.to_str().expect("path"),
        "--diff",
        "--fail-on-diff",
        "--format",
        "json",
    ]);
    assert!(
        !out.status.success(),
        "a changed rule must fail the backtest"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("replay differs"));
    let diff: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("diff json");
    let removed = diff["removed"].as_array().expect("removed");
    assert!(
        removed.iter().any(|r| r["rule_id"] == "deploy-regression"),
        "{diff}"
    );
    assert!(
        !diff["added"].as_array().expect("added").is_empty(),
        "{diff}"
    );
}

/// Two demos on one history: the second run's deploy regression on checkout names
/// its owner, the change that caused it with a link, what it cost, and the first
/// run's identical incident as a similar one.
#[test]
fn a_second_demo_finds_the_first_runs_incident_as_similar() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("causeway-data");
    let data_arg = data.to_str().expect("path");
    let demo = || {
        let listen = format!("127.0.0.1:{}", free_port());
        let out = Command::new(env!("CARGO_BIN_EXE_causeway"))
            .args(["demo", "--data-dir", data_arg, "--listen", &listen])
            .env("CAUSEWAY_LOG", "warn")
            .output()
            .expect("run demo");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let checkout = || {
        let out = Command::new(env!("CARGO_BIN_EXE_causeway"))
            .args([
                "sql",
                "--data-dir",
                data_arg,
                "--format",
                "json",
                "SELECT incident_id, enrichment FROM incidents_latest \
                 WHERE rule_id = 'deploy-regression' AND entity = 'checkout' ORDER BY opened_at",
            ])
            .output()
            .expect("sql");
        assert!(out.status.success());
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("rows");
        rows.iter()
            .map(|r| {
                let e: Value = serde_json::from_str(r["enrichment"].as_str().expect("enrichment"))
                    .expect("json");
                (r["incident_id"].as_str().expect("id").to_owned(), e)
            })
            .collect::<Vec<_>>()
    };
    demo();
    let first = checkout();
    assert_eq!(first.len(), 1);
    let (first_id, e) = &first[0];
    assert_eq!(e["owner"]["team"], "shop-team", "{e}");
    assert_eq!(
        e["change"]["revision"]["to"],
        "4f1c2ab9e0d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3"
    );
    assert_eq!(
        e["change"]["revision"]["from"],
        "3e9d1f07a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1"
    );
    assert!(
        e["links"]["change"]
            .as_str()
            .expect("link")
            .contains("/commit/4f1c2ab")
    );
    assert_eq!(
        e["change"]["image"],
        json!({"from": "ghcr.io/acme/checkout:3e9d1f0", "to": "ghcr.io/acme/checkout:4f1c2ab"}),
        "the image the deployment's payload names, and the one before it"
    );
    assert_eq!(
        e["cost"]["delta"], 7.2,
        "the late cost row gave a new version"
    );
    assert_eq!(e["similar"], json!([]), "nothing came before the first run");

    let printed = demo();
    assert!(printed.contains("similar:"), "{printed}");
    let second = checkout();
    assert_eq!(second.len(), 2);
    let (_, e) = &second[1];
    assert_eq!(e["similar"][0]["incident_id"], json!(first_id), "{e}");
    assert_eq!(e["similar"][0]["rule_id"], "deploy-regression");
}
