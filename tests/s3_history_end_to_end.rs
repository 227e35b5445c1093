//! The real binary with its history in an S3-compatible object store: moto's S3
//! server on loopback, started through `deploy/dev/s3.sh` (the test fails if it
//! cannot start it). Webhooks in; the Parquet files land in the bucket, not in the
//! data dir; `causeway sql` and `causeway replay` on the data dir read them back;
//! a restart resumes; a data dir is never pointed at another history.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{
    alert, alertmanager, checkout_config, deployment_status, eventually, free_port, post, sql,
    start_with_env,
};
use futures::TryStreamExt;
use serde_json::Value;

const CREDENTIALS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "causeway-test"),
    ("AWS_SECRET_ACCESS_KEY", "causeway-test"),
];

fn s3(args: &[&str]) -> String {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/dev/s3.sh"))
        .args(args)
        .output()
        .expect("run deploy/dev/s3.sh");
    assert!(
        out.status.success(),
        "deploy/dev/s3.sh {args:?} failed (install moto with `deploy/dev/s3.sh install`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn causeway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(args)
        .env("CAUSEWAY_LOG", "warn")
        .envs(CREDENTIALS)
        .output()
        .expect("run causeway")
}

fn alerts(name: &str, starts: &str) -> String {
    alertmanager(vec![alert(name, "checkout-7d9f8b6c5d-x2k4q", starts)]).to_string()
}

/// Stops the instance with SIGTERM (its final commit) and waits for it.
fn terminate(mut instance: common::Instance) {
    let pid = instance.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = instance.child.try_wait().expect("wait") {
            assert!(status.success(), "causeway exited with {status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "causeway did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn parquet_files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                parquet_files_under(&p)
            } else {
                usize::from(p.extension().is_some_and(|x| x == "parquet"))
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_in_an_s3_bucket_is_written_queried_replayed_and_resumed() {
    s3(&["install"]);
    let endpoint = s3(&["up"]);
    let port = free_port();
    let bucket = format!("causeway-e2e-{port}");
    s3(&["bucket", &bucket]);
    let url = format!("s3://{bucket}/prod");
    let history = format!(
        "history:\n  url: {url}\n  options: {{endpoint: \"{endpoint}\", allow_http: \"true\", region: us-east-1}}\n"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let inst = start_with_env(
        dir.path(),
        port,
        &checkout_config(&data, port, &history),
        &CREDENTIALS,
    )
    .await;
    let base = inst.base.clone();
    let gh = [
        ("x-github-event", "deployment_status"),
        ("x-github-delivery", "s3-1"),
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
    assert_eq!(
        post(
            &base,
            "/ingest/alertmanager",
            &[],
            alerts("HighErrorRate", "2024-05-01T10:03:00Z")
        )
        .await,
        200
    );
    eventually(
        &base,
        "SELECT count(*) AS n FROM incidents_latest WHERE rule_id = 'deploy-regression'",
        1,
    )
    .await;
    let over_http = sql(
        &base,
        "SELECT incident_id, version, rule_id, root_cause_event_id FROM incidents ORDER BY incident_id, version",
    )
    .await;
    terminate(inst);

    // The files are in the bucket under the prefix, none in the data dir.
    assert_eq!(parquet_files_under(&data), 0, "no Parquet file locally");
    let mut options = std::collections::BTreeMap::new();
    options.insert("endpoint".to_owned(), endpoint.clone());
    options.insert("allow_http".to_owned(), "true".to_owned());
    options.insert("region".to_owned(), "us-east-1".to_owned());
    for (k, v) in CREDENTIALS {
        options.insert(k.to_ascii_lowercase(), v.to_owned());
    }
    let store = causeway_connectors::object_store::s3_store(&url, &options).expect("client");
    let prefix = object_store::path::Path::from("prod");
    let objects: Vec<String> = store
        .list(Some(&prefix))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list the bucket");
    for table in ["events", "incidents", "incident_events"] {
        assert!(
            objects.iter().any(
                |o| o.starts_with(&format!("prod/{table}/dt=2024-05-01/part-"))
                    && o.ends_with(".parquet")
            ),
            "{table} in the bucket: {objects:?}"
        );
    }

    // `causeway sql` on the data dir finds the history in the bucket and gives
    // the answer the running instance gave.
    let data_arg = data.to_str().expect("utf-8 path");
    let out = causeway(&[
        "sql",
        "--data-dir",
        data_arg,
        "--format",
        "json",
        "SELECT incident_id, version, rule_id, root_cause_event_id FROM incidents ORDER BY incident_id, version",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_cli: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json rows");
    assert_eq!(from_cli, over_http);

    // Replay reads the stored events from the bucket and reproduces the incidents.
    let out = causeway(&["replay", "--data-dir", data_arg, "--diff", "--fail-on-diff"]);
    assert!(
        out.status.success(),
        "replay differs or failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The same data dir without history.url is refused, naming the bucket.
    let port2 = free_port();
    std::fs::write(
        dir.path().join("local.yaml"),
        checkout_config(&data, port2, ""),
    )
    .expect("config");
    let local_yaml = dir.path().join("local.yaml");
    let out = causeway(&["run", "--config", local_yaml.to_str().expect("utf-8")]);
    assert!(!out.status.success(), "a data dir cannot lose its history");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&url) && stderr.contains("history.url"),
        "{stderr}"
    );

    // A restart with the bucket resumes: the incident is there and grows.
    let port3 = free_port();
    let inst = start_with_env(
        dir.path(),
        port3,
        &checkout_config(&data, port3, &history),
        &CREDENTIALS,
    )
    .await;
    let base = inst.base.clone();
    eventually(&base, "SELECT count(*) AS n FROM incidents_latest", 1).await;
    assert_eq!(
        post(
            &base,
            "/ingest/alertmanager",
            &[],
            alerts("HighLatency", "2024-05-01T10:04:00Z")
        )
        .await,
        200
    );
    eventually(
        &base,
        "SELECT count(*) AS n FROM incidents_latest WHERE rule_id = 'deploy-regression' AND event_count = 3",
        1,
    )
    .await;
    terminate(inst);
    let out = causeway(&[
        "sql",
        "--data-dir",
        data_arg,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM events",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "n\n3");
}
