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
