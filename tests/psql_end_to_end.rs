//! The Postgres wire listener, driven by the real `psql` client and by
//! `tokio-postgres` against the real binary: the same answers as
//! `POST /api/v1/sql`, and the same refusals.
//!
//! `psql` comes from Debian's `postgresql-client` (`deploy/dev/test.sh` installs
//! it); without it these tests fail, they never skip.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Instance, eventually, free_port, post, sql, start_with};
use serde_json::json;

/// Starts the binary with the Postgres listener on a free port; returns it and
/// that port.
async fn start(dir: &Path, sql_section: &str) -> (Instance, u16) {
    let port = free_port();
    let pg_port = free_port();
    let config = format!(
        "version: 1\ndata_dir: {}\nserver:\n  listen: 127.0.0.1:{port}\nengine:\n  commit_interval: 200ms\n  watermark:\n    idle_timeout: 500ms\n    default: {{delay: 5s, allowed_lateness: 10m}}\nsql:\n  pg_listen: 127.0.0.1:{pg_port}\n{sql_section}",
        dir.join("data").display()
    );
    (start_with(dir, port, &config).await, pg_port)
}

/// Runs `psql -At -c QUERY` against the listener.
fn psql(pg_port: u16, password: Option<&str>, query: &str) -> Output {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &pg_port.to_string(),
        "-U",
        "causeway",
        "-d",
        "causeway",
        "-X",
        "-w",
        "-v",
        "VERBOSITY=verbose",
        "-At",
        "-c",
        query,
    ])
    .env_remove("PGPASSWORD")
    .env_remove("PGSERVICE")
    .env("PGCONNECT_TIMEOUT", "10");
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "psql is missing: install Debian's postgresql-client \
             (`apt-get install postgresql-client`, or run deploy/dev/test.sh, which does)"
        ),
        Err(e) => panic!("cannot run psql: {e}"),
    }
}

/// [`psql`], again while the previous client's connection slot is being released.
async fn psql_free(pg_port: u16, password: Option<&str>, query: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = psql(pg_port, password, query);
        if !stderr(&out).contains("too many connections") || Instant::now() > deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A deploy then an alert on the same service: one `deploy-regression` incident.
async fn ingest_a_regression(base: &str) {
    let ce = |id: &str, ty: &str, t: &str, status: &str| {
        json!({"specversion": "1.0", "id": id, "source": "ci", "type": ty, "time": t,
               "subject": "checkout", "scope": "prod", "status": status,
               "data": {"summary": id, "attributes": {"alertname": "HighErrorRate"}}})
    };
    let batch = json!([
        ce(
            "d1",
            "dev.causeway.deploy",
            "2024-05-01T10:00:00Z",
            "success"
        ),
        ce("a1", "dev.causeway.alert", "2024-05-01T10:05:00Z", "firing"),
    ]);
    assert_eq!(
        post(base, "/ingest/events", &[], batch.to_string()).await,
        200
    );
    eventually(
        base,
        "SELECT count(*) AS n FROM incidents_latest WHERE rule_id = 'deploy-regression'",
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_reads_the_history_like_the_http_api_and_cannot_change_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (inst, pg_port) = start(dir.path(), "").await;
    ingest_a_regression(&inst.base).await;

    let query =
        "SELECT rule_id, count(*) AS n FROM incidents_latest GROUP BY rule_id ORDER BY rule_id";
    let out = psql(pg_port, None, query);
    assert!(out.status.success(), "{}", stderr(&out));
    let http: Vec<String> = sql(&inst.base, query)
        .await
        .iter()
        .map(|r| format!("{}|{}", r["rule_id"].as_str().expect("rule_id"), r["n"]))
        .collect();
    assert_eq!(stdout(&out), http.join("\n"));
    assert!(
        stdout(&out).contains("deploy-regression|1"),
        "{}",
        stdout(&out)
    );

    // Types survive: timestamps as timestamptz, counts as numbers.
    let out = psql(
        pg_port,
        None,
        "SELECT opened_at, event_count FROM incidents_latest WHERE rule_id = 'deploy-regression'",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("2024-05-01 10:0"),
        "{}",
        stdout(&out)
    );

    // What clients send on connect, and several statements in one message.
    let out = psql(
        pg_port,
        None,
        "SET extra_float_digits = 3; SET application_name = 'grafana'; SHOW application_name; SELECT 1 + 1",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "SET\nSET\ngrafana\n2");

    // Refusals: an error, a non-zero exit, nothing changed.
    for (query, sqlstate) in [
        ("DROP TABLE events", "25006"),
        ("CREATE TABLE x AS SELECT 1", "25006"),
        ("COPY events TO '/tmp/causeway-events.csv'", "25006"),
        ("COPY events TO STDOUT", "25006"),
        ("INSERT INTO events SELECT * FROM events", "25006"),
        ("SET datafusion.execution.target_partitions = 64", "42601"),
        ("SELECT * FROM '/etc/passwd'", "42P01"),
        ("SELECT * FROM 'file:///etc/passwd'", "42P01"),
        ("SELEC 1", "42601"),
    ] {
        let out = psql(pg_port, None, query);
        assert!(!out.status.success(), "{query} was not refused");
        assert!(
            stderr(&out).contains(&format!("ERROR:  {sqlstate}")),
            "{query}: {}",
            stderr(&out)
        );
        assert!(!stdout(&out).contains("root:"), "{query} read a file");
    }
    let out = psql(pg_port, None, "SELECT count(*) FROM events");
    assert_eq!(stdout(&out), "2", "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn prepared_statements_bind_parameters_as_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (inst, pg_port) = start(dir.path(), "").await;
    ingest_a_regression(&inst.base).await;

    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={pg_port} user=causeway dbname=causeway"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    let driver = tokio::spawn(connection);

    let statement = client
        .prepare(
            "SELECT incident_id, event_count, opened_at FROM incidents_latest WHERE rule_id = $1",
        )
        .await
        .expect("prepare");
    assert_eq!(statement.params(), &[tokio_postgres::types::Type::TEXT]);
    let rows = client
        .query(&statement, &[&"deploy-regression"])
        .await
        .expect("query");
    assert_eq!(rows.len(), 1);
    let event_count: i64 = rows[0].get("event_count");
    assert_eq!(event_count, 2);
    let id: String = rows[0].get("incident_id");
    let http = sql(
        &inst.base,
        "SELECT incident_id FROM incidents_latest WHERE rule_id = 'deploy-regression'",
    )
    .await;
    assert_eq!(http[0]["incident_id"], json!(id));

    // A parameter is a value, never SQL.
    let rows = client
        .query(&statement, &[&"x' OR '1' = '1"])
        .await
        .expect("query");
    assert!(rows.is_empty());
    // Typed parameters: a timestamptz and an integer, sent in binary.
    let since = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_714_557_660); // 2024-05-01T10:01:00Z
    let n: i64 = client
        .query_one("SELECT count(*) FROM events WHERE time >= $1", &[&since])
        .await
        .expect("timestamptz parameter")
        .get(0);
    assert_eq!(n, 1, "only the alert is after 10:01");
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM incidents_latest WHERE event_count = $1",
            &[&2i64],
        )
        .await
        .expect("integer parameter")
        .get(0);
    assert_eq!(n, 1);

    // Refusals keep the connection usable.
    let err = client
        .execute("DROP TABLE events", &[])
        .await
        .expect_err("refused");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
    );
    let n: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .expect("still usable")
        .get(0);
    assert_eq!(n, 2);
    drop(client);
    let _ = driver.await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_is_asked_when_set_and_extra_connections_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_inst, pg_port) = start(
        dir.path(),
        "  pg_password: s3cret\n  pg_max_connections: 1\n",
    )
    .await;

    let out = psql_free(pg_port, None, "SELECT 1").await;
    assert!(!out.status.success());
    let out = psql_free(pg_port, Some("wrong"), "SELECT 1").await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("password authentication failed"),
        "{}",
        stderr(&out)
    );
    let out = psql_free(pg_port, Some("s3cret"), "SELECT 1").await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1");

    // The one connection allowed is held by this client; psql is refused.
    // (The last psql's slot may take a moment to be released.)
    let config = format!("host=127.0.0.1 port={pg_port} user=causeway password=s3cret");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (client, connection) = loop {
        match tokio_postgres::connect(&config, tokio_postgres::NoTls).await {
            Ok(connected) => break connected,
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("connect: {e}"),
        }
    };
    let driver = tokio::spawn(connection);
    let out = psql(pg_port, Some("s3cret"), "SELECT 1");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("too many connections"),
        "{}",
        stderr(&out)
    );
    let one: i32 = client
        .query_one("SELECT 1::int", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(one, 1);
    drop(client);
    let _ = driver.await;
    // Its slot is free again once it has gone.
    let out = psql_free(pg_port, Some("s3cret"), "SELECT 2").await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "2");
}

#[test]
fn validate_config_checks_the_postgres_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let password_file = dir.path().join("pg-password");
    std::fs::write(&password_file, "s3cret\n").expect("write");
    let pw = password_file.display();
    for (yaml, refused_key) in [
        (
            format!("version: 1\nsql:\n  pg_listen: 127.0.0.1:5433\n  pg_password_file: {pw}\n"),
            None,
        ),
        (
            format!("version: 1\nsql:\n  pg_password: a\n  pg_password_file: {pw}\n"),
            Some("sql.pg_password"),
        ),
        (
            "version: 1\nsql:\n  pg_password_file: /nonexistent/pg-password\n".to_owned(),
            Some("sql.pg_password_file"),
        ),
        (
            "version: 1\nsql:\n  pg_max_connections: 0\n".to_owned(),
            Some("sql.pg_max_connections"),
        ),
        (
            "version: 1\nsql:\n  pg_listen: nowhere\n".to_owned(),
            Some("pg_listen"),
        ),
    ] {
        let path = dir.path().join("causeway.yaml");
        std::fs::write(&path, &yaml).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_causeway"))
            .arg("validate-config")
            .arg(&path)
            .output()
            .expect("run");
        match refused_key {
            None => assert!(out.status.success(), "{yaml}: {}", stderr(&out)),
            Some(key) => {
                assert!(!out.status.success(), "{yaml} was accepted");
                assert!(stderr(&out).contains(key), "{yaml}: {}", stderr(&out));
            }
        }
    }
}
