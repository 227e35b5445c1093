//! A real Alertmanager in front of the real binary: alerts posted to
//! Alertmanager's own API reach `causeway run` through its webhook receiver
//! (`/ingest/alertmanager`), join the deploy that caused them, and resolve when
//! Alertmanager sends their resolution; its repeated notifications count once.
//!
//! Alertmanager comes from Debian's `prometheus-alertmanager` (`deploy/dev/test.sh`
//! installs it); without it this test fails, it never skips.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{checkout_config, count, deployment_status, eventually, free_port, post, sql};
use serde_json::{Value, json};

/// A running Alertmanager, killed when dropped.
struct Alertmanager {
    child: Child,
    base: String,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Alertmanager with one webhook receiver, `causeway`, that groups by
/// alertname and notifies within a second (`webhook_extra`: more keys of the
/// webhook config, indented for it); waits until it is ready.
async fn alertmanager(dir: &Path, webhook: &str, webhook_extra: &str) -> Alertmanager {
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: causeway\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: causeway\n    webhook_configs:\n      - url: {webhook}\n        send_resolved: true\n{webhook_extra}"
        ),
    )
    .expect("alertmanager config");
    let port = free_port();
    // Debian installs the binary as prometheus-alertmanager; upstream's name is
    // alertmanager.
    let spawn = |bin: &str| {
        Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // No gossip: one instance, no cluster port to collide with.
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    let child = match spawn("prometheus-alertmanager").or_else(|_| spawn("alertmanager")) {
        Ok(child) => child,
        Err(e) => panic!(
            "Alertmanager is missing ({e}): install Debian's prometheus-alertmanager \
             (`apt-get install prometheus-alertmanager`, or run deploy/dev/test.sh, which does)"
        ),
    };
    let am = Alertmanager {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{}/-/ready", am.base)).send().await
            && r.status() == 200
        {
            return am;
        }
        assert!(
            Instant::now() < deadline,
            "Alertmanager did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of `metric` summed over its lines that carry `label`.
async fn metric_sum(base: &str, metric: &str, label: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    // Labelled counters appear once incremented.
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Posts alerts to Alertmanager's v2 API.
async fn post_alerts(am: &Alertmanager, alerts: Value) {
    let status = reqwest::Client::new()
        .post(format!("{}/api/v2/alerts", am.base))
        .json(&alerts)
        .send()
        .await
        .expect("post to Alertmanager")
        .status();
    assert_eq!(status, 200, "Alertmanager refused the alerts");
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn checkout_alert(name: &str, starts: &str, ends: Option<&str>) -> Value {
    let mut alert = json!({
        "labels": {"alertname": name, "namespace": "shop", "pod": "checkout-7d9f8b6c5d-x2k4q",
                   "severity": "critical"},
        "annotations": {"summary": format!("{name} on checkout")},
        "startsAt": starts,
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up",
    });
    if let Some(ends) = ends {
        alert["endsAt"] = json!(ends);
    }
    alert
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_through_a_real_alertmanager_join_their_deploy_and_resolve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let inst = common::start_with(
        dir.path(),
        port,
        &checkout_config(&dir.path().join("data"), port, ""),
    )
    .await;
    let am = alertmanager(
        dir.path(),
        &format!("http://127.0.0.1:{port}/ingest/alertmanager"),
        "",
    )
    .await;

    // A deploy five minutes ago, then two alerts a minute after it, through
    // Alertmanager (which keeps them firing and notifies their group).
    let now = chrono::Utc::now();
    let deployed = rfc3339(now - chrono::Duration::minutes(5));
    let fired = rfc3339(now - chrono::Duration::minutes(4));
    assert_eq!(
        post(
            &inst.base,
            "/ingest/github",
            &[("x-github-event", "deployment_status")],
            deployment_status(&deployed).to_string(),
        )
        .await,
        200
    );
    post_alerts(
        &am,
        json!([
            checkout_alert("HighErrorRate", &fired, None),
            checkout_alert("HighLatency", &fired, None),
        ]),
    )
    .await;
    eventually(
        &inst.base,
        "SELECT count(*) AS n FROM incidents_latest WHERE rule_id = 'deploy-regression' AND event_count = 3",
        1,
    )
    .await;
    let incident = &sql(
        &inst.base,
        "SELECT * FROM incidents_latest WHERE rule_id = 'deploy-regression'",
    )
    .await[0];
    assert_eq!(incident["entity"], "checkout");
    assert_eq!(incident["state"], "open");
    let root = sql(
        &inst.base,
        &format!(
            "SELECT kind FROM events WHERE event_id = '{}'",
            incident["root_cause_event_id"]
                .as_str()
                .expect("root cause")
        ),
    )
    .await;
    assert_eq!(root[0]["kind"], "deploy");

    // Alertmanager resolves both (an endsAt in the past) and sends the resolution.
    let ended = rfc3339(now - chrono::Duration::minutes(1));
    post_alerts(
        &am,
        json!([
            checkout_alert("HighErrorRate", &fired, Some(&ended)),
            checkout_alert("HighLatency", &fired, Some(&ended)),
        ]),
    )
    .await;
    eventually(
        &inst.base,
        "SELECT count(*) AS n FROM incidents_latest WHERE rule_id = 'deploy-regression' AND state = 'resolved'",
        1,
    )
    .await;
    assert_eq!(
        count(
            &inst.base,
            "SELECT count(*) AS n FROM events WHERE source = 'alertmanager' AND status = 'resolved'"
        )
        .await,
        2
    );
    // Each alert was stored once firing and once resolved, whatever Alertmanager
    // repeated; every notification it sent was accepted.
    assert_eq!(
        count(
            &inst.base,
            "SELECT count(*) AS n FROM events WHERE source = 'alertmanager'"
        )
        .await,
        4
    );
    assert_eq!(
        metric_sum(
            &inst.base,
            "causeway_receiver_rejected_requests_total",
            "source=\"alertmanager\""
        )
        .await,
        0.0,
        "a notification from Alertmanager was refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alertmanager_with_the_wrong_token_is_refused_counted_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let inst = common::start_with(
        dir.path(),
        port,
        &checkout_config(
            &dir.path().join("data"),
            port,
            "receivers:\n  auth:\n    alertmanager: {type: bearer, token: the-right-token}\n",
        ),
    )
    .await;
    let am = alertmanager(
        dir.path(),
        &format!("http://127.0.0.1:{port}/ingest/alertmanager"),
        "        http_config:\n          authorization:\n            credentials: a-wrong-token\n",
    )
    .await;
    let fired = rfc3339(chrono::Utc::now() - chrono::Duration::minutes(1));
    post_alerts(&am, json!([checkout_alert("HighErrorRate", &fired, None)])).await;

    // Alertmanager notifies (and retries); each attempt is a counted 401.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric_sum(
        &inst.base,
        "causeway_receiver_rejected_requests_total",
        "reason=\"credentials\"",
    )
    .await
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "no refusal counted for Alertmanager's wrong token"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric_sum(
            &inst.base,
            "causeway_receiver_accepted_events_total",
            "source=\"alertmanager\""
        )
        .await,
        0.0
    );
    assert_eq!(
        count(&inst.base, "SELECT count(*) AS n FROM events").await,
        0
    );
}
