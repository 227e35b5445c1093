//! The real binary against a real Kafka-protocol broker (started by
//! `deploy/dev/kafka.sh`), read and written by an external client
//! (`tests/support/kafka_client.py`, confluent-kafka from PyPI).
//!
//! These tests fail — they do not skip — when the broker or the client is missing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Instance, count, eventually, free_port, post, start_with};
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Starts the project's broker (idempotent) and returns its bootstrap address.
fn broker() -> String {
    broker_on(None, "up")
}

/// Runs `deploy/dev/kafka.sh <command>` for the default broker or one on `port`.
fn broker_on(port: Option<u16>, command: &str) -> String {
    let mut script = Command::new(format!("{ROOT}/deploy/dev/kafka.sh"));
    if let Some(port) = port {
        script.env("CAUSEWAY_KAFKA_PORT", port.to_string());
    }
    let out = script
        .arg(command)
        .output()
        .expect("run deploy/dev/kafka.sh");
    assert!(
        out.status.success(),
        "the Kafka broker did not start (install it with `deploy/dev/kafka.sh install`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Topic names private to one test, so tests share the broker safely.
fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("t{}-{test}-{nanos}", std::process::id())
}

fn config(dir: &Path, port: u16, brokers: &str, prefix: &str, sources: &str) -> String {
    format!(
        "version: 1
data_dir: {data}
server:
  listen: 127.0.0.1:{port}
engine:
  commit_interval: 200ms
  watermark:
    idle_timeout: 500ms
    default: {{delay: 5s, allowed_lateness: 10m}}
kafka:
  brokers: {brokers}
  group_id: {prefix}-engines
  partitions: 4
  delivery_timeout: 5s
  topics:
    events: {prefix}.events
    incidents: {prefix}.incidents
    late: {prefix}.late
    actions: {prefix}.actions
    state: {prefix}.state
{sources}catalog:
  default_cluster: prod
",
        data = dir.join("data").display(),
    )
}

async fn start(dir: &Path, brokers: &str, prefix: &str, sources: &str) -> Instance {
    std::fs::create_dir_all(dir).expect("dir");
    let port = free_port();
    start_with(dir, port, &config(dir, port, brokers, prefix, sources)).await
}

/// A deploy and, three minutes later, an alert on `checkout` in scope `c<i>`:
/// one deploy-regression incident each.
fn scenario(i: usize) -> String {
    let scope = format!("c{i}");
    let deploy_at = format!("2024-05-01T10:{:02}:00Z", i % 50);
    let alert_at = format!("2024-05-01T10:{:02}:00Z", i % 50 + 3);
    json!([
        {"specversion": "1.0", "source": "test-deployer", "type": "dev.causeway.deploy",
         "time": deploy_at, "subject": "checkout", "sourceeventid": format!("deploy-{i}"),
         "scope": scope, "status": "success",
         "data": {"summary": "rolled out checkout", "attributes": {"sha": "abc"}}},
        {"specversion": "1.0", "source": "test-monitor", "type": "dev.causeway.alert",
         "time": alert_at, "subject": "checkout", "sourceeventid": format!("alert-{i}"),
         "scope": scope, "status": "firing", "severity": "critical",
         "data": {"summary": "errors up", "attributes": {"alertname": "HighErrorRate"}}}
    ])
    .to_string()
}

async fn post_scenarios(base: &str, range: std::ops::Range<usize>) {
    for i in range {
        assert_eq!(
            post(base, "/ingest/events", &[], scenario(i)).await,
            200,
            "scenario {i}"
        );
    }
}

/// Every message of `topic`, read by the external client.
fn consume(brokers: &str, topic: &str, min: usize) -> Vec<Value> {
    let out = Command::new("python3")
        .arg(format!("{ROOT}/tests/support/kafka_client.py"))
        .args([
            "consume",
            brokers,
            topic,
            "--min",
            &min.to_string(),
            "--timeout",
            "90",
        ])
        .output()
        .expect("run the external Kafka client (python3)");
    assert!(
        out.status.success(),
        "external client failed (pip install confluent-kafka):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("client line"))
        .collect()
}

fn create_topic(brokers: &str, topic: &str) {
    let status = Command::new("python3")
        .arg(format!("{ROOT}/tests/support/kafka_client.py"))
        .args(["create", brokers, topic])
        .status()
        .expect("run the external Kafka client (python3)");
    assert!(status.success(), "create topic {topic}");
}

fn produce(brokers: &str, topic: &str, lines: &[String]) {
    use std::io::Write;
    let mut child = Command::new("python3")
        .arg(format!("{ROOT}/tests/support/kafka_client.py"))
        .args(["produce", brokers, topic])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run the external Kafka client (python3)");
    let mut stdin = child.stdin.take().expect("stdin");
    for l in lines {
        writeln!(stdin, "{l}").expect("write");
    }
    drop(stdin);
    assert!(child.wait().expect("wait").success(), "produce failed");
}

/// The incidents on the topic: checks that every (id, version) seen more than once
/// is identical in everything correlation decided (enrichment is what Causeway knew
/// when it emitted, and a version emitted again after a crash may know more or
/// less), and returns the latest version of each incident.
fn incidents_by_id(messages: &[Value]) -> BTreeMap<String, Value> {
    let mut versions: BTreeMap<(String, u64), String> = BTreeMap::new();
    let mut latest: BTreeMap<String, Value> = BTreeMap::new();
    for m in messages {
        let text = m["value"].as_str().expect("value");
        let v: Value = serde_json::from_str(text).expect("incident json");
        let id = v["incident_id"].as_str().expect("id").to_owned();
        assert_eq!(
            m["key"].as_str(),
            Some(id.as_str()),
            "key is the incident id"
        );
        let version = v["version"].as_u64().expect("version");
        assert!(
            v["enrichment"].is_object(),
            "every version is enriched: {v}"
        );
        let mut decided = v.clone();
        decided
            .as_object_mut()
            .expect("object")
            .remove("enrichment");
        let decided = decided.to_string();
        if let Some(earlier) = versions.insert((id.clone(), version), decided.clone()) {
            assert_eq!(earlier, decided, "a duplicate of {id} v{version} differs");
        }
        let newer = latest
            .get(&id)
            .is_none_or(|l| l["version"].as_u64() < Some(version));
        if newer {
            latest.insert(id, v);
        }
    }
    latest
}

fn regression_scopes(latest: &BTreeMap<String, Value>) -> BTreeSet<String> {
    latest
        .values()
        .filter(|v| v["rule_id"] == "deploy-regression")
        .map(|v| v["scope"].as_str().expect("scope").to_owned())
        .collect()
}

fn expected_scopes(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("c{i}")).collect()
}

/// The values of every series whose line starts with `name`.
async fn metric_values(base: &str, name: &str) -> Vec<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect()
}

async fn metric(base: &str, name: &str) -> f64 {
    metric_values(base, name).await.iter().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_reach_an_external_client_and_user_topics_feed_the_engine() {
    let brokers = broker();
    let prefix = prefix("flow");
    let dir = tempfile::tempdir().expect("tempdir");
    let sources = format!(
        "  sources:\n    - topic: {prefix}.alertmanager\n      format: alertmanager\n      cluster: prod\n"
    );
    // A user's topic exists before Causeway reads it.
    create_topic(&brokers, &format!("{prefix}.alertmanager"));
    let inst = start(dir.path(), &brokers, &prefix, &sources).await;
    post_scenarios(&inst.base, 0..3).await;

    let messages = consume(&brokers, &format!("{prefix}.incidents"), 3);
    let latest = incidents_by_id(&messages);
    assert_eq!(regression_scopes(&latest), expected_scopes(0..3));
    let one = latest
        .values()
        .find(|v| v["scope"] == "c1")
        .expect("incident of c1");
    assert_eq!(one["entity"], "checkout");
    assert_eq!(one["state"], "open");
    let roles: BTreeSet<&str> = one["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .filter_map(|e| e["role"].as_str())
        .collect();
    assert!(roles.contains("cause") && roles.contains("effect"), "{one}");
    // The same incidents are in the history.
    eventually(
        &inst.base,
        "SELECT count(*) AS n FROM incidents_latest WHERE rule_id = 'deploy-regression'",
        3,
    )
    .await;
    // Each regression's runbook decision is on the actions topic, keyed by action
    // id, and the incident message carries its enrichment.
    assert_eq!(one["enrichment"]["service"], "checkout", "{one}");
    let actions = consume(&brokers, &format!("{prefix}.actions"), 3);
    let decided: BTreeSet<String> = actions
        .iter()
        .map(|m| {
            let v: Value = serde_json::from_str(m["value"].as_str().expect("value")).expect("json");
            assert_eq!(m["key"], v["action_id"], "keyed by action id");
            assert_eq!(v["runbook"], "rollback-deploy");
            v["incident_id"].as_str().expect("incident").to_owned()
        })
        .collect();
    assert_eq!(decided.len(), 3, "one decision per regression: {actions:?}");

    // Normalized events are keyed by scope.
    let events = consume(&brokers, &format!("{prefix}.events"), 6);
    assert_eq!(events.len(), 6);
    for e in &events {
        let value: Value = serde_json::from_str(e["value"].as_str().expect("value")).expect("json");
        assert_eq!(e["key"], value["scope"], "{e}");
        assert_eq!(value["specversion"], "1.0");
    }

    // A user topic in Alertmanager's format goes through the same decoder; a
    // message it cannot decode is counted and skipped.
    let alerts = json!({"version": "4", "status": "firing", "receiver": "causeway",
        "groupKey": "{}:{}", "externalURL": "http://am:9093", "groupLabels": {},
        "commonLabels": {}, "commonAnnotations": {}, "truncatedAlerts": 0,
        "alerts": [{"status": "firing",
            "labels": {"alertname": "DiskFull", "namespace": "shop", "pod": "db-0"},
            "annotations": {}, "startsAt": "2024-05-01T11:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom"}]});
    produce(
        &brokers,
        &format!("{prefix}.alertmanager"),
        &[
            "{\"version\": \"4\", \"alerts\": [".to_owned(),
            alerts.to_string(),
        ],
    );
    eventually(
        &inst.base,
        "SELECT count(*) AS n FROM events WHERE source = 'alertmanager'",
        1,
    )
    .await;
    assert_eq!(
        metric(
            &inst.base,
            "causeway_kafka_rejected_records_total{format=\"alertmanager\",reason=\"malformed\"}"
        )
        .await,
        1.0
    );
    // `causeway import` with Kafka configured produces to the events topic (it does
    // not join the group); the running engine correlates what it imported.
    let file = dir.path().join("events.jsonl");
    // (Later than the user-topic alert above: the partition's watermark has passed
    // 10:xx by more than the allowed lateness.)
    let lines: Vec<String> = serde_json::from_str::<Vec<Value>>(
        &scenario(9).replace("2024-05-01T10:", "2024-05-01T12:"),
    )
    .expect("scenario")
    .iter()
    .map(Value::to_string)
    .collect();
    std::fs::write(&file, lines.join("\n")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(["import", "--config"])
        .arg(dir.path().join("causeway.yaml"))
        .arg("events")
        .arg(&file)
        .output()
        .expect("import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let latest = incidents_by_id(&consume(&brokers, &format!("{prefix}.incidents"), 5));
    assert!(regression_scopes(&latest).contains("c9"), "{latest:?}");

    // An event older than its partition's watermark by more than the allowed
    // lateness (10 min) goes to the late topic, keyed by source, with the reason.
    let stale = json!({"specversion": "1.0", "source": "test-monitor",
        "type": "dev.causeway.alert", "time": "2024-05-01T09:00:00Z", "subject": "db",
        "sourceeventid": "stale-1", "scope": "prod", "status": "firing",
        "data": {"summary": "old news", "attributes": {"alertname": "DiskFull"}}});
    assert_eq!(
        post(&inst.base, "/ingest/events", &[], stale.to_string()).await,
        200
    );
    let late = consume(&brokers, &format!("{prefix}.late"), 1);
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0]["key"], "test-monitor");
    let body: Value =
        serde_json::from_str(late[0]["value"].as_str().expect("value")).expect("json");
    assert_eq!(body["reason"], "too_late");
    assert_eq!(body["event"]["sourceeventid"], "stale-1");
    assert!(body["watermark"].as_str().is_some(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_and_restart_loses_no_incident() {
    let brokers = broker();
    let prefix = prefix("kill9");
    let dir = tempfile::tempdir().expect("tempdir");
    let first = start(dir.path(), &brokers, &prefix, "").await;
    post_scenarios(&first.base, 0..12).await;
    // Some of those are correlated and committed, some not yet.
    tokio::time::sleep(Duration::from_millis(700)).await;
    drop(first); // SIGKILL
    // Let the broker's session for the dead member lapse (session.timeout.ms is 10 s)
    // before the restart joins: tansu 0.6 otherwise may keep the dead member's share
    // of the partitions assigned to it (see README).
    tokio::time::sleep(Duration::from_secs(11)).await;

    let second = start(dir.path(), &brokers, &prefix, "").await;
    post_scenarios(&second.base, 12..20).await;
    let messages = consume(&brokers, &format!("{prefix}.incidents"), 20);
    let latest = incidents_by_id(&messages);
    assert_eq!(regression_scopes(&latest), expected_scopes(0..20));
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_share_the_partitions_and_one_takes_over_when_the_other_stops() {
    let brokers = broker();
    let prefix = prefix("group");
    let dir = tempfile::tempdir().expect("tempdir");
    let a = start(&dir.path().join("a"), &brokers, &prefix, "").await;
    let b = start(&dir.path().join("b"), &brokers, &prefix, "").await;
    // Wait until the group has settled with partitions on both.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (pa, pb) = (
            metric(&a.base, "causeway_kafka_assigned_partitions").await,
            metric(&b.base, "causeway_kafka_assigned_partitions").await,
        );
        if pa > 0.0 && pb > 0.0 && pa + pb == 4.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partitions never split: a={pa} b={pb}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    post_scenarios(&a.base, 0..16).await;
    let latest = incidents_by_id(&consume(&brokers, &format!("{prefix}.incidents"), 16));
    assert_eq!(regression_scopes(&latest), expected_scopes(0..16));
    // Each engine correlated its own share.
    let query = "SELECT count(*) AS n FROM incidents_latest WHERE rule_id = 'deploy-regression'";
    let (na, nb) = (count(&a.base, query).await, count(&b.base, query).await);
    assert!(na > 0 && nb > 0 && na + nb == 16, "a={na} b={nb}");

    // `a` stops (SIGTERM): it saves its partitions' state and leaves the group;
    // `b` restores that state and takes the partitions over. (A member that dies
    // with SIGKILL is the broker's to expire: tansu 0.6 keeps the dead member's
    // assignment, see README; the kill -9 test restarts the engine instead.)
    let mut a = a;
    let status = Command::new("kill")
        .args(["-TERM", &a.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = a.child.wait().expect("wait");
    assert!(exit.success(), "a exited with {exit}");
    post_scenarios(&b.base, 16..32).await;
    let latest = incidents_by_id(&consume(&brokers, &format!("{prefix}.incidents"), 32));
    assert_eq!(regression_scopes(&latest), expected_scopes(0..32));
    assert_eq!(
        metric(&b.base, "causeway_kafka_assigned_partitions").await,
        4.0
    );
    // Consumer lag, from librdkafka's statistics (every 5 s): one series per owned
    // partition, all caught up once b has correlated and committed everything.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lags = metric_values(&b.base, "causeway_kafka_consumer_lag_records{").await;
        if lags.len() == 4 && lags.iter().all(|l| *l == 0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "consumer lag never reported 4 caught-up partitions: {lags:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_answer_503_within_the_delivery_timeout_while_the_broker_is_down() {
    // A broker of this test's own, so stopping it disturbs no other test.
    let port = free_port();
    broker_on(Some(port), "reset");
    let brokers = broker_on(Some(port), "up");
    let prefix = prefix("down");
    let dir = tempfile::tempdir().expect("tempdir");
    let inst = start(dir.path(), &brokers, &prefix, "").await;
    post_scenarios(&inst.base, 0..1).await;

    broker_on(Some(port), "down");
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .post(format!("{}/ingest/events", inst.base))
        .header("content-type", "application/json")
        .body(scenario(1))
        .send()
        .await
        .expect("post");
    let elapsed = started.elapsed();
    assert_eq!(resp.status(), 503);
    let body = resp.text().await.expect("body");
    assert!(body.contains("kafka"), "{body}");
    // delivery_timeout is 5 s; the answer comes within it plus a margin.
    assert!(elapsed < Duration::from_secs(12), "took {elapsed:?}");
    assert!(
        metric(&inst.base, "causeway_receiver_rejected_requests_total{reason=\"log_unavailable\",source=\"events\"}").await >= 1.0
    );

    // Readiness says so, so a load balancer stops sending.
    let ready = reqwest::get(format!("{}/readyz", inst.base))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    assert!(
        ready
            .text()
            .await
            .expect("text")
            .contains("event log unavailable")
    );
    drop(inst);
    broker_on(Some(port), "reset");
}
