//! Helpers shared by the tests that drive the real binary.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A running `causeway run`, killed (like `kill -9`) when dropped.
pub(crate) struct Instance {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Writes `config` to `<dir>/causeway.yaml`, starts the binary on it and waits
/// until `/readyz` answers 200.
pub(crate) async fn start_with(dir: &Path, port: u16, config: &str) -> Instance {
    start_with_env(dir, port, config, &[]).await
}

/// [`start_with`], with extra environment variables for the binary.
pub(crate) async fn start_with_env(
    dir: &Path,
    port: u16,
    config: &str,
    env: &[(&str, &str)],
) -> Instance {
    let path = dir.join("causeway.yaml");
    std::fs::write(&path, config).expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(["run", "--config"])
        .arg(&path)
        .env("CAUSEWAY_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn causeway");
    let instance = Instance {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{}/readyz", instance.base)).send().await
            && r.status() == 200
        {
            return instance;
        }
        assert!(Instant::now() < deadline, "causeway did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn post(base: &str, path: &str, headers: &[(&str, &str)], body: String) -> u16 {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("post").status().as_u16()
}

pub(crate) async fn sql(base: &str, query: &str) -> Vec<Value> {
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/v1/sql"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("sql");
    assert_eq!(resp.status(), 200, "{query}");
    resp.json().await.expect("json rows")
}

pub(crate) async fn count(base: &str, query: &str) -> i64 {
    sql(base, query).await[0]["n"].as_i64().expect("n")
}

pub(crate) async fn eventually(base: &str, query: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = count(base, query).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{query}: got {got}, want {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A config for `causeway run` in `data_dir` on `port`: quick commits and
/// watermarks, a `checkout` service in `shop` deployed from
/// `acme/checkout-service`; `extra` (whole YAML sections) goes before `catalog:`.
pub(crate) fn checkout_config(data_dir: &Path, port: u16, extra: &str) -> String {
    format!(
        "version: 1\ndata_dir: {}\nserver:\n  listen: 127.0.0.1:{port}\nengine:\n  commit_interval: 200ms\n  watermark:\n    idle_timeout: 500ms\n    default: {{delay: 5s, allowed_lateness: 10m}}\n{extra}catalog:\n  default_cluster: prod\n  environments: {{production: prod}}\n  services:\n    - name: checkout\n      namespace: shop\n      repos: [acme/checkout-service]\n",
        data_dir.display()
    )
}

/// A GitHub `deployment_status` webhook: checkout deployed to production at `t`.
pub(crate) fn deployment_status(t: &str) -> Value {
    json!({
        "action": "created",
        "deployment_status": {"id": 501, "state": "success", "environment": "production",
            "creator": {"login": "bot"}, "created_at": t, "target_url": ""},
        "deployment": {"id": 50, "sha": "0123456789abcdef0123456789abcdef01234567", "ref": "main",
            "environment": "production", "creator": {"login": "alice"}, "created_at": t},
        "repository": {"full_name": "acme/checkout-service", "html_url": "https://github.example/acme/checkout-service"}
    })
}

/// An Alertmanager v4 webhook carrying `alerts`.
pub(crate) fn alertmanager(alerts: Vec<Value>) -> Value {
    json!({"version": "4", "status": "firing", "receiver": "causeway", "groupKey": "{}:{}",
           "externalURL": "http://am:9093", "groupLabels": {}, "commonLabels": {},
           "commonAnnotations": {}, "truncatedAlerts": 0, "alerts": alerts})
}

/// A firing critical alert `name` on a checkout pod since `starts`.
pub(crate) fn alert(name: &str, pod: &str, starts: &str) -> Value {
    json!({"status": "firing",
           "labels": {"alertname": name, "namespace": "shop", "pod": pod, "severity": "critical"},
           "annotations": {"summary": format!("{name} on checkout")},
           "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph"})
}
