//! Runbook triggers through the real binary, against a real HTTP receiver on
//! loopback: signed and idempotent webhooks retried past a failure, a storm held
//! to its budget and raising its own incident, approval, denial, dry run, the kill
//! switch, and no second trigger after a restart.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post as post_route;
use causeway_connectors::webhook;
use common::{Instance, count, eventually, free_port, post, sql, start_with_env};
use serde_json::{Value, json};

const SECRET: &str = "runbook-test-secret";

/// What the receiver saw: every attempt, and the actions it applied (once per
/// idempotency key, as a receiver that honours the key does).
#[derive(Default)]
struct Seen {
    attempts: Vec<(String, bool)>,
    /// The runbook of every attempt.
    runbooks: Vec<String>,
    applied: BTreeMap<String, Value>,
}

async fn hook(State(seen): State<Arc<Mutex<Seen>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let key = h("idempotency-key");
    let ts: i64 = h("x-causeway-timestamp").parse().unwrap_or(0);
    let signed = webhook::verify(
        SECRET.as_bytes(),
        ts,
        &body,
        &h("x-causeway-signature"),
        chrono::Utc::now().timestamp(),
        Duration::from_secs(300),
    );
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut seen = seen.lock().expect("lock");
    seen.runbooks.push(
        v["action"]["runbook"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    let first = !seen.attempts.iter().any(|(k, _)| *k == key);
    seen.attempts.push((key.clone(), signed));
    if !signed {
        return StatusCode::UNAUTHORIZED;
    }
    // Every action fails once: the retry must carry the same key.
    if first {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    seen.applied.entry(key).or_insert(v);
    StatusCode::OK
}

fn rules(receiver: &str) -> String {
    format!(
        r#"version: 1
rules:
  - id: bad-deploy
    version: 1
    title: "Bad deploy on {{entity}}"
    severity: critical
    runbook: rollback
    cause: {{where: "kind = 'deploy' AND status = 'success'"}}
    effect: {{where: "kind = 'alert' AND status = 'firing' AND attributes['alertname'] = 'HighErrorRate'"}}
    join: entity
    within: 30m
  - id: shell-opened
    version: 1
    title: "Shell opened on {{entity}}"
    severity: critical
    runbook: quarantine
    cause: {{where: "kind = 'audit'"}}
    effect: {{where: "kind = 'alert' AND status = 'firing' AND attributes['alertname'] = 'ShellSpawned'"}}
    join: entity
    within: 30m
  - id: config-noise
    version: 1
    title: "Config change then errors on {{entity}}"
    severity: warning
    runbook: revert-config
    cause: {{where: "kind = 'change'"}}
    effect: {{where: "kind = 'alert' AND status = 'firing' AND attributes['alertname'] = 'ConfigErrors'"}}
    join: entity
    within: 30m
runbooks:
  - name: rollback
    class: rollback
    mode: live
    target: {{webhook: {{url: "{receiver}", secret_env: CAUSEWAY_TEST_SECRET}}}}
    params: {{service: "{{service}}", incident: "{{incident_id}}", revision: "{{revision}}"}}
    budget: {{max_actions: 2, per: 1h, scope: runbook}}
  - name: quarantine
    class: isolate
    mode: live
    target: {{webhook: {{url: "{receiver}", secret_env: CAUSEWAY_TEST_SECRET}}}}
    params: {{service: "{{service}}", incident: "{{incident_id}}"}}
  - name: revert-config
    class: rollback
    target: {{webhook: {{url: "{receiver}", secret_env: CAUSEWAY_TEST_SECRET}}}}
    params: {{service: "{{service}}"}}
"#
    )
}

fn config(dir: &Path, port: u16) -> String {
    format!(
        "version: 1\ndata_dir: {}\nserver:\n  listen: 127.0.0.1:{port}\nengine:\n  rules_dir: {}\n  commit_interval: 200ms\n  watermark:\n    idle_timeout: 500ms\n    default: {{delay: 5s, allowed_lateness: 10m}}\ncatalog:\n  default_cluster: prod\nrunbooks:\n  initial_backoff: 50ms\n  max_backoff: 200ms\n",
        dir.join("data").display(),
        dir.join("rules").display(),
    )
}

fn event(id: &str, kind: &str, entity: &str, minute: u32, status: &str, alertname: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "test", "type": format!("dev.causeway.{kind}"),
           "time": format!("2024-05-01T10:{minute:02}:00Z"), "subject": entity, "scope": "prod",
           "status": status,
           "data": {"summary": format!("{kind} {id}"),
                    "attributes": {"alertname": alertname, "sha": format!("sha-{id}")}}})
}

async fn send(base: &str, events: Vec<Value>) {
    assert_eq!(
        post(
            base,
            "/ingest/events",
            &[],
            Value::Array(events).to_string()
        )
        .await,
        200
    );
}

async fn decisions(base: &str) -> Vec<Value> {
    sql(
        base,
        "SELECT action_id, runbook, decision, reason, approver FROM actions ORDER BY decided_at, decision",
    )
    .await
}

async fn api(base: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .expect("post");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbooks_trigger_within_budget_wait_for_approval_and_never_twice() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let receiver = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/hook", post_route(hook))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("rules")).expect("mkdir");
    std::fs::write(dir.path().join("rules/pack.yaml"), rules(&receiver)).expect("rules");
    let port = free_port();
    let env = [("CAUSEWAY_TEST_SECRET", SECRET)];
    let inst: Instance = start_with_env(dir.path(), port, &config(dir.path(), port), &env).await;
    let base = inst.base.clone();

    // A storm: four bad deploys on four services. The budget (2 per hour) lets two
    // rollbacks through, then the runbook halts.
    for (i, svc) in ["s1", "s2", "s3", "s4"].iter().enumerate() {
        let m = u32::try_from(i).expect("small") * 2;
        send(
            &base,
            vec![
                event(&format!("d-{svc}"), "deploy", svc, m, "success", ""),
                event(
                    &format!("a-{svc}"),
                    "alert",
                    svc,
                    m + 1,
                    "firing",
                    "HighErrorRate",
                ),
            ],
        )
        .await;
    }
    eventually(
        &base,
        "SELECT count(*) AS n FROM actions WHERE runbook = 'rollback'",
        4,
    )
    .await;
    let rows = decisions(&base).await;
    let kinds: Vec<&str> = rows
        .iter()
        .map(|r| r["decision"].as_str().expect("decision"))
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "triggered").count(),
        2,
        "{rows:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "budget_exhausted").count(),
        2,
        "{rows:?}"
    );
    // The remediator's storm is an incident of its own.
    eventually(
        &base,
        "SELECT count(*) AS n FROM events WHERE source = 'causeway'",
        1,
    )
    .await;
    eventually(
        &base,
        "SELECT count(*) AS n FROM incidents_latest WHERE title LIKE '%CausewayRunbookBudgetExhausted%'",
        1,
    )
    .await;
    // Each triggered action reached the receiver: refused once, retried with the
    // same key and a valid signature, applied once.
    wait_for("two applied rollbacks", || {
        seen.lock().expect("lock").applied.len() == 2
    })
    .await;
    {
        let s = seen.lock().expect("lock");
        assert!(s.attempts.iter().all(|(_, signed)| *signed));
        for key in s.applied.keys() {
            let tries = s.attempts.iter().filter(|(k, _)| k == key).count();
            assert_eq!(tries, 2, "one refusal, one retry with the same key");
            assert!(key.starts_with("act_"));
        }
        let body = s.applied.values().next().expect("one");
        assert_eq!(body["action"]["runbook"], "rollback");
        assert!(
            body["params"]["revision"]
                .as_str()
                .expect("revision")
                .starts_with("sha-d-s"),
            "{body}"
        );
    }

    // An irreversible class waits for a human.
    send(
        &base,
        vec![
            event("x-s9", "audit", "s9", 20, "succeeded", ""),
            event("a-s9", "alert", "s9", 21, "firing", "ShellSpawned"),
        ],
    )
    .await;
    eventually(
        &base,
        "SELECT count(*) AS n FROM actions WHERE decision = 'awaiting_approval'",
        1,
    )
    .await;
    let waiting = sql(
        &base,
        "SELECT action_id FROM actions WHERE decision = 'awaiting_approval'",
    )
    .await;
    let id = waiting[0]["action_id"].as_str().expect("id").to_owned();
    assert!(
        !seen.lock().expect("lock").applied.contains_key(&id),
        "nothing runs before approval"
    );
    let (status, _) = api(&base, &format!("/api/v1/actions/{id}/approve"), json!({})).await;
    assert_eq!(status, 400, "an approval names its approver");
    let (status, body) = api(
        &base,
        &format!("/api/v1/actions/{id}/approve"),
        json!({"approver": "alice@example.com"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decisions"][0]["decision"], "approved");
    let (status, body) = api(
        &base,
        &format!("/api/v1/actions/{id}/approve"),
        json!({"approver": "alice@example.com"}),
    )
    .await;
    assert_eq!(status, 200, "approving twice is a no-op");
    assert_eq!(body["decisions"], json!([]));
    let (status, _) = api(
        &base,
        &format!("/api/v1/actions/{id}/deny"),
        json!({"approver": "bob@example.com"}),
    )
    .await;
    assert_eq!(status, 409, "an approved action cannot be denied");
    let (status, _) = api(
        &base,
        "/api/v1/actions/act_unknown/approve",
        json!({"approver": "bob@example.com"}),
    )
    .await;
    assert_eq!(status, 404);
    wait_for("the approved quarantine", || {
        seen.lock().expect("lock").applied.contains_key(&id)
    })
    .await;

    // A new runbook without `mode` is a dry run: decided, recorded, never called.
    send(
        &base,
        vec![
            event("c-s7", "change", "s7", 24, "succeeded", ""),
            event("a-s7", "alert", "s7", 25, "firing", "ConfigErrors"),
        ],
    )
    .await;
    eventually(
        &base,
        "SELECT count(*) AS n FROM actions WHERE decision = 'dry_run' AND runbook = 'revert-config'",
        1,
    )
    .await;

    // The kill switch: the halted runbook is resumed, yet nothing triggers.
    let (status, _) = api(&base, "/api/v1/kill-switch", json!({"on": true})).await;
    assert_eq!(status, 200);
    let (status, _) = api(&base, "/api/v1/runbooks/rollback/resume", json!({})).await;
    assert_eq!(status, 200);
    send(
        &base,
        vec![
            event("d-s5", "deploy", "s5", 30, "success", ""),
            event("a-s5", "alert", "s5", 31, "firing", "HighErrorRate"),
        ],
    )
    .await;
    eventually(
        &base,
        "SELECT count(*) AS n FROM actions WHERE decision = 'denied' AND reason LIKE '%kill switch%'",
        1,
    )
    .await;
    let applied_before = seen.lock().expect("lock").applied.len();
    let attempts_before = seen.lock().expect("lock").attempts.len();
    let rows_before = count(&base, "SELECT count(*) AS n FROM actions").await;
    assert_eq!(applied_before, 3);
    assert!(
        !seen.lock().expect("lock").dry_run_seen(),
        "the dry run called nothing"
    );

    // Let the history and the kernel state commit, then kill -9 and restart: the
    // same incidents come back from the log and none is decided again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(inst);
    let inst = start_with_env(dir.path(), port, &config(dir.path(), port), &env).await;
    let base = inst.base.clone();
    let (status, body) = reqwest::Client::new()
        .get(format!("{base}/api/v1/kill-switch"))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .expect("get");
    assert_eq!(status, 200);
    let body: Value = body.json().await.expect("json");
    assert_eq!(body["on"], true, "the kill switch survives a restart");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        count(&base, "SELECT count(*) AS n FROM actions").await,
        rows_before
    );
    assert_eq!(seen.lock().expect("lock").attempts.len(), attempts_before);
}

impl Seen {
    /// Whether any request carried a dry-run runbook's action.
    fn dry_run_seen(&self) -> bool {
        self.runbooks.iter().any(|r| r == "revert-config")
    }
}
